"""Motions of independently moving objects: closed-form poses as functions of the frame index.

A motion gives an object's centre (world, metres) and rotation at any frame, so frame i can be
rendered without simulating frames 0..i-1 (a 10,000-frame sequence streams). All motions are
smooth except ``bounce``, whose vertical velocity flips at the floor as a ball's does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MOTION_KINDS = ("static", "oscillate", "bounce")


def axis_angle_to_rotmat(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues' formula. axis: [3] unit, angle: [N] radians -> [N, 3, 3]."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    a = np.asarray(angle, dtype=np.float64)[:, None, None]
    return np.eye(3) + np.sin(a) * k + (1.0 - np.cos(a)) * (k @ k)


@dataclass
class Motion:
    """Pose of an object over time.

    ``center(i) = center0 + sum_k amplitude[k] * sin(2 pi i / period[k] + phase[k])`` (vector
    amplitudes), with ``bounce`` replacing the y offset by ``height * |sin(pi i / bounce_period)|``;
    ``rotation(i) = rotation0 @ R(spin_axis, spin_rate * i)`` (object frame spin).

    Attributes:
        kind: "static", "oscillate" or "bounce".
        center0: [3] world centre at frame 0 (for ``bounce``: resting centre on the floor).
        rotation0: [3, 3] world-from-object rotation at frame 0.
        amplitude: [K, 3] metres; period: [K] frames; phase: [K] radians.
        spin_axis: [3] unit; spin_rate: radians per frame.
        bounce_height: metres (``bounce`` only); bounce_period: frames between floor contacts.
    """

    kind: str = "static"
    center0: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rotation0: np.ndarray = field(default_factory=lambda: np.eye(3))
    amplitude: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    period: np.ndarray = field(default_factory=lambda: np.ones(0))
    phase: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spin_axis: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))
    spin_rate: float = 0.0
    bounce_height: float = 0.0
    bounce_period: float = 1.0

    @property
    def is_dynamic(self) -> bool:
        return self.kind != "static"

    def centers(self, frames: np.ndarray) -> np.ndarray:
        """World centres at frames [N] (float, may be fractional) -> [N, 3]."""
        frames = np.atleast_1d(np.asarray(frames, dtype=np.float64))
        c = np.broadcast_to(self.center0, (frames.shape[0], 3)).copy()
        if self.kind == "static":
            return c
        arg = 2.0 * np.pi * frames[:, None] / self.period[None, :] + self.phase[None, :]  # [N, K]
        c += np.sin(arg) @ self.amplitude
        if self.kind == "bounce":
            hop = np.abs(np.sin(np.pi * frames / self.bounce_period))
            c[:, 1] = self.center0[1] + self.bounce_height * hop
        return c

    def rotations(self, frames: np.ndarray) -> np.ndarray:
        """World-from-object rotations at frames [N] -> [N, 3, 3]."""
        frames = np.atleast_1d(np.asarray(frames, dtype=np.float64))
        if self.kind == "static" or self.spin_rate == 0.0:
            return np.broadcast_to(self.rotation0, (frames.shape[0], 3, 3)).copy()
        return self.rotation0[None] @ axis_angle_to_rotmat(self.spin_axis, self.spin_rate * frames)

    def reach(self) -> np.ndarray:
        """[3] the largest displacement of the centre from ``center0`` along each world axis."""
        r = np.abs(self.amplitude).sum(axis=0) if self.amplitude.size else np.zeros(3)
        if self.kind == "bounce":
            r = r.copy()
            r[1] = self.bounce_height
        return r


def random_motion(
    rng: np.random.Generator, kind: str, center0: np.ndarray, rotation0: np.ndarray, speed: float = 0.02
) -> Motion:
    """A random motion of ``kind`` around ``center0`` with a peak speed near ``speed`` m/frame."""
    if kind == "static":
        return Motion(kind="static", center0=center0, rotation0=rotation0)
    if kind not in MOTION_KINDS:
        raise ValueError(f"motion kind: expected one of {MOTION_KINDS}, got {kind!r}")
    k = 2
    period = rng.uniform(80.0, 300.0, size=k)
    direction = rng.normal(size=(k, 3))
    direction[:, 1] *= 0.3 if kind == "oscillate" else 0.0  # mostly horizontal travel
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    # peak speed of a sinusoid is 2 pi A / P: choose A so each term moves at ~speed / k.
    amplitude = direction * (speed / k * period / (2.0 * np.pi))[:, None]
    axis = rng.normal(size=3)
    return Motion(
        kind=kind,
        center0=center0,
        rotation0=rotation0,
        amplitude=amplitude,
        period=period,
        phase=rng.uniform(0.0, 2.0 * np.pi, size=k),
        spin_axis=axis / np.linalg.norm(axis),
        spin_rate=float(rng.uniform(-0.04, 0.04)),
        bounce_height=float(rng.uniform(0.3, 0.9)) if kind == "bounce" else 0.0,
        bounce_period=float(rng.uniform(25.0, 60.0)),
    )
