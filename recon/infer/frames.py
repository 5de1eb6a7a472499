"""What flows through a streaming run: a fitted source frame in, a per-frame prediction out.

:class:`SourceFrame` leaves a source (``recon.infer.sources.FrameStream``) at model resolution;
:class:`FramePrediction` leaves the stream loop (``recon.infer.stream.StreamSession``) and is what
every consumer reads: the run writers (``RunOutputs.write_frame``), the Rerun logger
(``RerunLogger.log_frame``), the ground-truth scorer and the drift evaluation.
Conventions: OpenCV camera, cam2world, metres (model units), pixels at model resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SourceFrame:
    """A frame as it leaves a source and the frame fit: the model's input.

    Attributes:
        index: frame number in the source (after stride).
        timestamp: seconds.
        image: [H, W, 3] uint8 RGB at model resolution.
        K: [3, 3] known intrinsics at model resolution (pixels), or None to let the model predict.
        gt_depth: optional [H, W] ground-truth depth at model resolution (metres, 0 = invalid).
        gt_cam2world: optional [4, 4] ground-truth pose (dataset world, OpenCV camera).
        gt_problem: why the frame's ground truth could not be read (the frame is kept without it).
        gt_K: optional [3, 3] calibrated intrinsics of the source at model resolution (pixels), for
            scoring ground-truth points; None when the source has none.
    """

    index: int
    timestamp: float
    image: np.ndarray
    K: np.ndarray | None = None
    gt_depth: np.ndarray | None = None
    gt_cam2world: np.ndarray | None = None
    gt_problem: str | None = None
    gt_K: np.ndarray | None = None


@dataclass
class FramePrediction:
    """The model's outputs for one frame (numpy, model resolution), with the frame they belong to.

    Attributes:
        frame: the input frame (image, timestamp, ground truth).
        depth: [H, W] z-depth (model units). conf: [H, W] confidence (>= 1).
        K: [3, 3] intrinsics used (given or predicted), pixels.
        cam2world: [4, 4] pose, world = the first camera, OpenCV camera.
        world_points: [H, W, 3] points in that world.
        latency_ms: wall time of the model step and the copy of its outputs to the host.
        cpu_ms: CPU time of the calling thread over the same span.
        pose_fallbacks: frames so far (this one included) that kept the previous pose because the
            window held no finite relative pose.
        revisit_corrections: frames so far whose pose was corrected against a keyframe of a
            revisited place (``recon.model.revisit``).
    """

    frame: SourceFrame
    depth: np.ndarray
    conf: np.ndarray
    K: np.ndarray
    cam2world: np.ndarray
    world_points: np.ndarray
    latency_ms: float = 0.0
    cpu_ms: float = 0.0
    pose_fallbacks: int = 0
    revisit_corrections: int = 0

    @property
    def index(self) -> int:
        return self.frame.index

    @property
    def timestamp(self) -> float:
        return self.frame.timestamp

    @property
    def image(self) -> np.ndarray:
        return self.frame.image
