"""Where frames come from: a video file, an image folder, a dataset sequence, or a webcam.

Files and folders go through ``data.load_sequence`` (so a TUM / ScanNet / synthetic folder brings
its ground truth along); a webcam index (``0``, ``1``, ...) is read live with OpenCV. Every frame
is fitted to the model resolution (``data.fit.FrameFit``, the fit training uses) with K adjusted.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from data.fit import FrameFit
from data.readers.imageio import collect_ground_truth_problems
from data.schema import Frame, Sequence
from recon.errors import InputError
from recon.infer.frames import SourceFrame


def parse_intrinsics(text: str | None) -> np.ndarray | None:
    """``"fx,fy,cx,cy"`` or a file holding 4 numbers or a 3x3 matrix -> K [3, 3] (pixels).

    A 3x3 matrix must be a pinhole ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (no skew: the model
    takes fx, fy, cx, cy, so anything else would be silently dropped). The principal point is
    checked against the image size later (:func:`check_intrinsics`).
    """
    if text is None:
        return None
    path = Path(text)
    if path.is_file():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an empty file: "expected 4 values, got 0" below
                values = np.loadtxt(path, comments="#", dtype=np.float64, ndmin=1).reshape(-1)
        except (ValueError, UnicodeDecodeError, OSError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"{path}: expected 4 numbers (fx fy cx cy) or a 3x3 matrix ({reason})") from None
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
    if not np.allclose(K[2], [0.0, 0.0, 1.0], rtol=0.0, atol=1e-9):
        raise InputError(
            f"intrinsics {text!r}: the bottom row of the 3x3 matrix is {K[2].tolist()}, expected [0, 0, 1] "
            "(a pinhole matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])"
        )
    if abs(K[0, 1]) > 1e-9 * K[0, 0] or abs(K[1, 0]) > 1e-9 * K[1, 1]:
        raise InputError(
            f"intrinsics {text!r}: off-diagonal entries K[0,1]={K[0, 1]:g}, K[1,0]={K[1, 0]:g}, expected 0 "
            "(skew is not supported: a pinhole matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])"
        )
    K = K.copy()
    K[0, 1] = K[1, 0] = 0.0  # rounding noise below the tolerance: the pinhole it stands for
    K[2] = [0.0, 0.0, 1.0]
    return K


def check_intrinsics(K: np.ndarray, width: int, height: int, what: str) -> None:
    """The principal point of ``K`` (pixels) must lie on the ``width`` x ``height`` image.

    Pixel centres are at integer coordinates, so the image spans [-0.5, W - 0.5] x [-0.5, H - 0.5].

    Raises:
        InputError naming ``what``, the principal point and the image size.
    """
    cx, cy = float(K[0, 2]), float(K[1, 2])
    if not (-0.5 <= cx <= width - 0.5 and -0.5 <= cy <= height - 0.5):
        raise InputError(
            f"{what}: principal point ({cx:g}, {cy:g}) lies outside the {width}x{height} source image "
            f"(expected cx in [-0.5, {width - 0.5:g}] and cy in [-0.5, {height - 0.5:g}], pixels at the "
            "source resolution)"
        )


def check_source_intrinsics(source, use_source_K: bool) -> None:
    """``--intrinsics source`` needs calibrated intrinsics: refuse a webcam or a plain video / image
    folder, whose intrinsics would be the reader's field-of-view guess."""
    if not use_source_K:
        return
    if isinstance(source, WebcamSequence):
        raise InputError(f"--intrinsics source: {source.name} has no calibrated intrinsics; pass "
                         "--intrinsics fx,fy,cx,cy or leave --intrinsics out to let the model predict them")
    if source.meta.get("intrinsics_guessed"):
        raise InputError(
            f"--intrinsics source: {source.root} has no calibrated intrinsics (a plain video or image "
            f"folder; they would be a {source.meta.get('fov_deg', 60):g} degree field-of-view guess); pass "
            "--intrinsics fx,fy,cx,cy, add --fov DEGREES to use a guess knowingly, or leave --intrinsics "
            "out to let the model predict them"
        )


def intrinsics_label(source, text: str | None) -> str:
    """What summary.json records as the intrinsics used: predicted, the user's, or the source's
    (saying when the source's are a field-of-view guess)."""
    if text is None:
        return "predicted"
    if text == "source" and not isinstance(source, WebcamSequence) and source.meta.get("fov_deg") is not None:
        return f"source (a {source.meta['fov_deg']:g} degree field-of-view guess, --fov)"
    return text


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
    # The reconstruction needs only the images: ground truth that cannot be read is left out, and
    # listed in meta["ground_truth_problems"] for the run to warn about.
    with collect_ground_truth_problems() as problems:
        if fmt != "video":
            seq = load_sequence(source, format=fmt)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the guessed-K warning: runs predict K unless told otherwise
                seq = load_sequence(source, format=fmt, fov_deg=fov_deg)
    seq.meta["ground_truth_problems"] = list(problems)
    return seq


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
        lenient_ground_truth: a frame whose ground truth cannot be read is kept without it (its
            ``SourceFrame.gt_problem`` says why) instead of stopping the stream.
    """

    source: Sequence | WebcamSequence
    out_hw: tuple[int, int]
    policy: str = "crop"
    stride: int = 1
    max_frames: int | None = None
    known_K: np.ndarray | None = None
    use_source_K: bool = False
    plan: FrameFit | None = None
    lenient_ground_truth: bool = False
    _gt_problems: dict[int, str] = field(default_factory=dict, init=False, repr=False)

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
            it = (self._load(i) for i in range(0, len(self.source), self.stride))
        for count, frame in enumerate(it):
            if self.max_frames is not None and count >= self.max_frames:
                return
            yield frame

    def _load(self, i: int) -> Frame:
        if not self.lenient_ground_truth:
            return self.source[i]
        with collect_ground_truth_problems() as problems:
            frame = self.source[i]
        if problems:
            self._gt_problems[frame.index] = "; ".join(problems)
        return frame

    def fit(self, frame: Frame) -> SourceFrame:
        """Fit one raw frame to the model resolution."""
        if self.plan is None:
            check_source_intrinsics(self.source, self.use_source_K)
            if self.known_K is not None:
                check_intrinsics(self.known_K, frame.image.shape[1], frame.image.shape[0], "--intrinsics")
            self.plan = FrameFit.plan(frame.image.shape[:2], self.out_hw, self.policy)
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
            gt_problem=self._gt_problems.pop(frame.index, None),
            gt_K=None if frame.K is None else self.plan.intrinsics(frame.K),
        )

    def __iter__(self) -> Iterator[SourceFrame]:
        return (self.fit(f) for f in self.source_frames())
