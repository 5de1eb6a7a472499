"""Where frames come from: a video file, an image folder, a dataset sequence, or a webcam.

Files and folders go through ``data.load_sequence`` (so a TUM / ScanNet / synthetic folder brings
its ground truth along); a webcam index (``0``, ``1``, ...) is read live with OpenCV. Every frame
is fitted to the model resolution (``recon.infer.preprocess``) with K adjusted.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data.schema import Frame, Sequence
from recon.errors import InputError
from recon.infer.preprocess import FitPlan, plan_fit
from recon.infer.runner import SourceFrame


def parse_intrinsics(text: str | None) -> np.ndarray | None:
    """``"fx,fy,cx,cy"`` or a file holding 4 numbers or a 3x3 matrix -> K [3, 3] (pixels)."""
    if text is None:
        return None
    path = Path(text)
    if path.is_file():
        try:
            values = np.loadtxt(path, comments="#", dtype=np.float64).reshape(-1)
        except ValueError as e:
            raise InputError(f"{path}: expected 4 numbers (fx fy cx cy) or a 3x3 matrix ({e})") from None
    else:
        try:
            values = np.array([float(v) for v in text.replace(",", " ").split()], dtype=np.float64)
        except ValueError:
            raise InputError(
                f"--intrinsics {text!r}: expected 'fx,fy,cx,cy' or a file with fx fy cx cy / a 3x3 matrix"
            ) from None
    if values.size == 4:
        fx, fy, cx, cy = values
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    elif values.size == 9:
        K = values.reshape(3, 3)
    else:
        raise InputError(
            f"intrinsics {text!r}: expected 4 values (fx fy cx cy) or 9 (3x3), got {values.size}"
        )
    if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0):
        raise InputError(f"intrinsics {text!r}: focal lengths must be finite and > 0")
    return K


class WebcamSequence:
    """Frames of a live camera (no length, no ground truth); stops when the camera stops."""

    def __init__(self, index: int, fps_hint: float = 30.0):
        self.cap = cv2.VideoCapture(index)
        if not self.cap.isOpened():
            raise InputError(f"webcam {index}: cannot be opened (no such camera, or it is busy)")
        self.name = f"webcam{index}"
        self.format = "webcam"
        self.index = index
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or fps_hint

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        while True:
            ok, bgr = self.cap.read()
            if not ok or bgr is None:
                return
            yield Frame(image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), K=None, timestamp=i / self.fps, index=i)
            i += 1


def open_source(
    source: str, format: str | None = None, fov_deg: float | None = None
) -> Sequence | WebcamSequence:
    """A webcam for a bare integer, else ``data.load_sequence(source, format)``.

    ``fov_deg`` sets the guessed intrinsics of a plain video / image folder (used only when the
    run passes the source's intrinsics to the model; otherwise the model predicts them).
    """
    if source.isdigit() and not Path(source).exists():
        return WebcamSequence(int(source))
    from data import detect_format, load_sequence

    fmt = format or detect_format(Path(source))
    if fmt != "video":
        return load_sequence(source, format=fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the guessed-K warning: runs predict K unless told otherwise
        return load_sequence(source, format=fmt, fov_deg=fov_deg)


@dataclass
class FrameStream:
    """Iterates a source's frames with stride and a frame limit, fitted to the model size.

    Attributes:
        source: the opened source.
        out_hw: model resolution (height, width).
        policy: "crop" or "resize".
        stride: keep every ``stride``-th frame.
        max_frames: stop after this many kept frames (None = all).
        known_K: user intrinsics at the source resolution; None = use the source's calibration if
            ``use_source_K`` else let the model predict.
        use_source_K: pass the dataset's calibrated K to the model.
    """

    source: Sequence | WebcamSequence
    out_hw: tuple[int, int]
    policy: str = "crop"
    stride: int = 1
    max_frames: int | None = None
    known_K: np.ndarray | None = None
    use_source_K: bool = False
    plan: FitPlan | None = None

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise InputError(f"--stride: expected >= 1, got {self.stride}")
        if self.max_frames is not None and self.max_frames < 1:
            raise InputError(f"--max-frames: expected >= 1, got {self.max_frames}")

    def __len__(self) -> int:
        if isinstance(self.source, WebcamSequence):
            return self.max_frames or 0
        n = (len(self.source) + self.stride - 1) // self.stride
        return min(n, self.max_frames) if self.max_frames else n

    def source_frames(self) -> Iterator[Frame]:
        """The raw kept frames (with their ground truth, when the source has it)."""
        if isinstance(self.source, WebcamSequence):
            it = (f for f in self.source if f.index % self.stride == 0)
        else:
            it = (self.source[i] for i in range(0, len(self.source), self.stride))
        for count, frame in enumerate(it):
            if self.max_frames is not None and count >= self.max_frames:
                return
            yield frame

    def fit(self, frame: Frame) -> SourceFrame:
        """Fit one raw frame to the model resolution."""
        if self.plan is None:
            self.plan = plan_fit(frame.image.shape[:2], self.out_hw, self.policy)
        K = self.known_K if self.known_K is not None else (frame.K if self.use_source_K else None)
        if self.use_source_K and K is None:
            raise InputError(f"{self.source.name}: the source has no calibrated intrinsics to use")
        return SourceFrame(
            index=frame.index,
            timestamp=float(frame.timestamp),
            image=self.plan.image(frame.image),
            K=None if K is None else self.plan.intrinsics(K),
            gt_depth=None if frame.depth is None else self.plan.depth(frame.depth),
            gt_cam2world=frame.cam2world,
        )

    def __iter__(self) -> Iterator[SourceFrame]:
        return (self.fit(f) for f in self.source_frames())
