"""TUM trajectory files: read, write (whole or line by line), timestamp association.

A TUM line is ``timestamp tx ty tz qx qy qz qw``: a cam2world pose (OpenCV camera for our own
outputs; the dataset's camera for ground truth), translation in metres (or model units), the
quaternion scalar-last. ``#`` lines and blank lines are comments. evo reads and writes the same.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from recon.errors import InputError, ShapeError, check_shape
from recon.geometry import check_pose, pose_from_Rt, quat_xyzw_to_rotmat, rotmat_to_quat_xyzw

HEADER = "# timestamp tx ty tz qx qy qz qw (cam2world)"


def read_tum(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory.

    Args:
        path: text file of ``timestamp tx ty tz qx qy qz qw`` lines (commas also accepted).

    Returns:
        timestamps float64 [N] and cam2world float64 [N, 4, 4].

    Raises:
        InputError: the file is missing, empty, or a line is malformed / non-finite / has a zero
            quaternion (the message names the file and the line number).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: trajectory file not found (expected a TUM file)")
    rows = []
    with path.open() as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            fields = text.replace(",", " ").split()
            if len(fields) != 8:
                raise InputError(
                    f"{path}:{lineno}: expected 8 values 'timestamp tx ty tz qx qy qz qw', "
                    f"got {len(fields)}: {text[:80]!r}"
                )
            try:
                values = [float(v) for v in fields]
            except ValueError as err:
                raise InputError(f"{path}:{lineno}: not a number in {text[:80]!r}") from err
            if not all(math.isfinite(v) for v in values):
                raise InputError(f"{path}:{lineno}: non-finite value in {text[:80]!r}")
            if math.hypot(*values[4:8]) < 1e-8:
                raise InputError(f"{path}:{lineno}: zero quaternion in {text[:80]!r}")
            rows.append(values)
    if not rows:
        raise InputError(f"{path}: no poses found (expected lines 'timestamp tx ty tz qx qy qz qw')")
    data = torch.tensor(rows, dtype=torch.float64)
    # TUM stores (qx, qy, qz, qw): scalar-last, which is what quat_xyzw_to_rotmat takes.
    cam2world = pose_from_Rt(quat_xyzw_to_rotmat(data[:, 4:8]), data[:, 1:4])
    return data[:, 0].numpy(), cam2world.numpy()


def _pose_rows(timestamps, cam2world) -> np.ndarray:
    """[N, 8] float64 rows ``t tx ty tz qx qy qz qw`` after checking shapes and rigidity."""
    ts = torch.as_tensor(np.asarray(timestamps, dtype=np.float64)).reshape(-1)
    T = torch.as_tensor(np.asarray(cam2world, dtype=np.float64))
    check_shape(T, "N 4 4", "cam2world")
    if ts.shape[0] != T.shape[0]:
        raise ShapeError(f"timestamps: expected {T.shape[0]} (one per pose), got {ts.shape[0]}")
    if not torch.isfinite(ts).all():
        raise ShapeError("timestamps: expected finite values")
    check_pose(T, "cam2world")
    quat_xyzw = rotmat_to_quat_xyzw(T[:, :3, :3])  # scalar-last, w >= 0, as TUM stores it
    return torch.cat((ts[:, None], T[:, :3, 3], quat_xyzw), dim=1).numpy()


def _format_row(row: np.ndarray) -> str:
    return f"{row[0]:.9f} " + " ".join(f"{v:.12g}" for v in row[1:])


def write_tum(path: str | Path, timestamps, cam2world) -> None:
    """Write a TUM trajectory file (with a ``#`` header line).

    Args:
        path: output file (parent folders must exist).
        timestamps: [N] seconds (numpy or torch).
        cam2world: rigid poses [N, 4, 4] (numpy or torch).

    Raises:
        ShapeError: wrong shapes, non-finite or non-rigid poses.
        InputError: the parent folder does not exist.
    """
    rows = _pose_rows(timestamps, cam2world)
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: parent folder does not exist")
    with path.open("w") as f:
        f.write(HEADER + "\n")
        for row in rows:
            f.write(_format_row(row) + "\n")


class TumWriter:
    """Incremental TUM writer: one line per pose, flushed at once, so a killed run leaves a valid file.

    Example:
        >>> with TumWriter(tmp_path / "traj.txt") as w:  # doctest: +SKIP
        ...     w.write(0.0, np.eye(4))
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise InputError(f"{self.path}: parent folder does not exist")
        self._file: TextIO | None = self.path.open("w")
        self._file.write(HEADER + "\n")
        self._file.flush()
        self.count = 0

    def write(self, timestamp: float, cam2world) -> None:
        """Append one pose (cam2world [4, 4], numpy or torch) and flush."""
        if self._file is None:
            raise InputError(f"{self.path}: writer is closed")
        T = np.asarray(cam2world.detach().cpu() if torch.is_tensor(cam2world) else cam2world)
        check_shape(T, "4 4", "cam2world")
        row = _pose_rows([float(timestamp)], T[None])[0]
        self._file.write(_format_row(row) + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TumWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def associate_timestamps(a, b, max_diff: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Match two timestamp lists one-to-one by nearest time (as TUM's associate.py).

    Candidate pairs with ``|a_i - b_j| < max_diff`` are taken greedily from the closest; each
    timestamp is used at most once.

    Args:
        a: timestamps [N] seconds.
        b: timestamps [M] seconds.
        max_diff: largest accepted difference in seconds.

    Returns:
        (idx_a, idx_b) int64 index arrays of equal length, ordered by ``a``'s time.

    Raises:
        InputError: non-finite timestamps, or no pair within ``max_diff``.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("associate_timestamps: timestamps must be finite")
    order_b = np.argsort(b, kind="stable")
    b_sorted = b[order_b]
    lo = np.searchsorted(b_sorted, a - max_diff, side="left")
    hi = np.searchsorted(b_sorted, a + max_diff, side="right")
    counts = hi - lo
    ia = np.repeat(np.arange(a.size), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    jb = order_b[np.repeat(lo, counts) + offsets]
    diff = np.abs(a[ia] - b[jb])
    keep = diff < max_diff
    ia, jb, diff = ia[keep], jb[keep], diff[keep]
    used_a = np.zeros(a.size, dtype=bool)
    used_b = np.zeros(b.size, dtype=bool)
    pairs = []
    for k in np.lexsort((jb, ia, diff)):  # closest first, ties by index
        i, j = ia[k], jb[k]
        if not used_a[i] and not used_b[j]:
            used_a[i] = used_b[j] = True
            pairs.append((i, j))
    if not pairs:
        raise InputError(
            f"associate_timestamps: no timestamps within {max_diff} s "
            f"(a spans [{a.min() if a.size else 'empty'}, {a.max() if a.size else 'empty'}], "
            f"b spans [{b.min() if b.size else 'empty'}, {b.max() if b.size else 'empty'}])"
        )
    pairs.sort(key=lambda p: (a[p[0]], p[0]))
    idx = np.array(pairs, dtype=np.int64)
    return idx[:, 0], idx[:, 1]
