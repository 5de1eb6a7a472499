"""The sample schema shared by every dataset reader, the synthetic generator and the clip sampler.

Conventions (docs/conventions.md): OpenCV camera (x right, y down, z forward),
``cam2world`` 4x4 camera-to-world in the dataset's own world frame, intrinsics ``K`` 3x3 in pixels
with pixel centres at integer coordinates, depth = z-depth in metres (0 = invalid).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One frame of a sequence.

    Attributes:
        image: [H, W, 3] uint8 RGB.
        K: [3, 3] float64 intrinsics in pixels (OpenCV).
        timestamp: seconds.
        depth: [H, W] float32 metres, 0 = invalid; None when the dataset has no depth.
        cam2world: [4, 4] float64 camera-to-world (OpenCV camera); None when unknown.
        mask: optional [H, W] bool, True on dynamic (independently moving) pixels.
        index: position of the frame in its sequence.
    """

    image: np.ndarray
    K: np.ndarray
    timestamp: float
    depth: np.ndarray | None = None
    cam2world: np.ndarray | None = None
    mask: np.ndarray | None = None
    index: int = 0


@dataclass
class Sequence:
    """A lazily loaded sequence of frames: ``len(seq)``, ``seq[i] -> Frame``, iteration.

    Readers build it from a frame count and a loader, so 10,000-frame sequences are never held
    in memory at once.

    Attributes:
        name: scene / sequence name.
        format: the reader that produced it (``"tum"``, ``"scannet"``, ``"video"``, ...).
        root: path it was read from.
        num_frames: number of frames.
        load: ``load(i) -> Frame`` for 0 <= i < num_frames.
        meta: free-form reader facts (depth scale, original resolution, skipped frames, ...).
    """

    name: str
    format: str
    root: str
    num_frames: int
    load: Callable[[int], Frame]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, i: int) -> Frame:
        if not -self.num_frames <= i < self.num_frames:
            raise IndexError(f"frame {i} out of range for {self.name} ({self.num_frames} frames)")
        i = i % self.num_frames
        frame = self.load(i)
        frame.index = i
        return frame

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.num_frames):
            yield self[i]
