"""Smooth camera trajectories inside a room: walk, orbit, look-around and loop.

Every trajectory is a closed-form function of the frame index (sums of sinusoids), evaluated for
all frames at once: smooth at any length (tens to 100,000 frames), at a walking speed in metres
per frame that does not depend on the length, and always inside the room's camera box (the room
shrunk by a margin). Objects are placed afterwards, away from the whole path (see scene.py), so
the camera never enters one.

World frame of the synthetic scenes: metres, y up, floor at y = 0. Cameras: OpenCV (x right,
y down, z forward), poses cam2world 4x4.
"""

from __future__ import annotations

import numpy as np

TRAJECTORY_KINDS = ("walk", "orbit", "look-around", "loop")
WORLD_UP = np.array([0.0, 1.0, 0.0])


def look_rotation(forward: np.ndarray, roll: np.ndarray | None = None) -> np.ndarray:
    """OpenCV cam2world rotations looking along ``forward`` with the world's +y up.

    Args:
        forward: [N, 3] viewing directions (any length, not vertical).
        roll: [N] radians about the viewing direction (positive turns the image clockwise).

    Returns:
        [N, 3, 3] rotations whose columns are the camera x (right), y (down), z (forward) axes.
    """
    z = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    x = np.cross(z, WORLD_UP)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)
    if roll is not None:
        c, s = np.cos(roll)[:, None], np.sin(roll)[:, None]
        x, y = c * x + s * y, -s * x + c * y
    return np.stack([x, y, z], axis=-1)


def yaw_pitch_forward(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Viewing direction for a heading ``yaw`` (about +y, 0 = +z) and ``pitch`` (up positive)."""
    cp = np.cos(pitch)
    return np.stack([np.sin(yaw) * cp, np.sin(pitch), np.cos(yaw) * cp], axis=-1)


def _wobble(
    rng: np.random.Generator, t: np.ndarray, amplitude: float, periods: tuple[float, float], terms: int = 2
) -> np.ndarray:
    """Smooth zero-mean signal: ``terms`` sinusoids with random periods, phases, total <= amplitude."""
    out = np.zeros_like(t)
    for _ in range(terms):
        out += amplitude / terms * np.sin(2.0 * np.pi * t / rng.uniform(*periods) + rng.uniform(0, 2 * np.pi))
    return out


def _poses(position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    T = np.tile(np.eye(4), (position.shape[0], 1, 1))
    T[:, :3, :3] = rotation
    T[:, :3, 3] = position
    return T


def camera_trajectory(
    kind: str,
    num_frames: int,
    lo: np.ndarray,
    hi: np.ndarray,
    rng: np.random.Generator,
    speed: float = 0.015,
    margin: float = 0.6,
) -> np.ndarray:
    """Camera poses for every frame of a sequence.

    Args:
        kind: one of ``TRAJECTORY_KINDS``.
        num_frames: N >= 1.
        lo, hi: [3] room corners (world, metres; y up, floor at lo[1] = 0).
        rng: numpy generator (the only source of randomness).
        speed: typical camera speed, metres per frame (0.015 ~ 0.45 m/s at 30 fps).
        margin: minimum distance from the camera to walls, floor and ceiling, metres.

    Returns:
        [N, 4, 4] float64 cam2world (OpenCV camera, world y up, metres).
    """
    if kind not in TRAJECTORY_KINDS:
        raise ValueError(f"trajectory kind: expected one of {TRAJECTORY_KINDS}, got {kind!r}")
    t = np.arange(num_frames, dtype=np.float64)
    box_lo, box_hi = lo + margin, hi - margin
    centre = 0.5 * (box_lo + box_hi)
    half = 0.5 * (box_hi - box_lo)
    eye = np.clip(rng.uniform(1.2, 1.7), box_lo[1], box_hi[1])
    height = np.clip(eye + _wobble(rng, t, 0.08, (60.0, 200.0)), box_lo[1], box_hi[1])
    roll = _wobble(rng, t, 0.04, (80.0, 300.0))

    if kind == "walk":
        pos = np.zeros((num_frames, 3))
        for axis in (0, 2):
            weights = rng.dirichlet(np.ones(3)) * half[axis] * 0.95
            for a in weights:  # peak speed of a sinusoid: 2 pi a / P
                period = 2.0 * np.pi * a * 3.0 / speed * rng.uniform(0.7, 1.3)
                pos[:, axis] += a * np.sin(2.0 * np.pi * t / max(period, 1.0) + rng.uniform(0, 2 * np.pi))
            pos[:, axis] += centre[axis]
        pos[:, 1] = height
        # Heading: a free smooth heading blended with the direction to the room's centre, weighted
        # by the distance to it (|weight| <= 0.5 < 1: the sum never vanishes, turns at most 2x faster):
        # near a wall the walker mostly looks into the room instead of at the wall.
        drift = rng.choice([-1.0, 1.0]) * 2.0 * np.pi / rng.uniform(600.0, 2400.0)
        yaw = rng.uniform(0, 2 * np.pi) + drift * t + _wobble(rng, t, 0.7, (200.0, 600.0))
        free = yaw_pitch_forward(yaw, np.zeros_like(t))
        inward = centre[None, :] - pos
        inward[:, 1] = 0.0
        dist = np.linalg.norm(inward, axis=-1, keepdims=True)
        weight = 0.5 * np.clip(dist / min(half[0], half[2]), 0.0, 1.0)
        heading = free + weight * inward / np.maximum(dist, 1e-9)
        yaw = np.arctan2(heading[:, 0], heading[:, 2])
        pitch = -0.12 + _wobble(rng, t, 0.2, (100.0, 400.0))
        rot = look_rotation(yaw_pitch_forward(yaw, pitch), roll)
    elif kind == "orbit":
        radius = min(half[0], half[2]) * rng.uniform(0.7, 1.0)
        period = 2.0 * np.pi * radius / speed
        theta = rng.uniform(0, 2 * np.pi) + rng.choice([-1.0, 1.0]) * 2.0 * np.pi * t / period
        pos = np.stack([centre[0] + radius * np.cos(theta), height, centre[2] + radius * np.sin(theta)], -1)
        target = np.stack(
            [
                centre[0] + _wobble(rng, t, 0.2, (100.0, 300.0)),
                np.full_like(t, rng.uniform(0.3, 0.9)),
                centre[2] + _wobble(rng, t, 0.2, (100.0, 300.0)),
            ],
            axis=-1,
        )
        rot = look_rotation(target - pos, roll)
    elif kind == "look-around":
        start = centre + rng.uniform(-0.5, 0.5, size=3) * half
        pos = start + np.stack([_wobble(rng, t, 0.06, (80.0, 250.0)) for _ in range(3)], -1)
        pos[:, 1] = np.clip(height, box_lo[1], box_hi[1])
        turn = rng.choice([-1.0, 1.0]) * 2.0 * np.pi / rng.uniform(300.0, 700.0)
        yaw = rng.uniform(0, 2 * np.pi) + turn * t + _wobble(rng, t, 0.3, (100.0, 300.0))
        pitch = _wobble(rng, t, 0.35, (120.0, 400.0))
        rot = look_rotation(yaw_pitch_forward(yaw, pitch), roll)
    else:  # loop: a closed curve traversed repeatedly; the pose is periodic, so places are revisited.
        coef = rng.uniform(-0.08, 0.08, size=2)
        phase = rng.uniform(0, 2 * np.pi, size=4)
        shape = 1.0 + np.abs(coef).sum()
        rx, rz = half[0] * rng.uniform(0.6, 0.95) / shape, half[2] * rng.uniform(0.6, 0.95) / shape
        period = 2.0 * np.pi * 0.5 * (rx + rz) / speed
        direction = rng.choice([-1.0, 1.0])

        def curve(frames: np.ndarray) -> np.ndarray:
            theta = direction * 2.0 * np.pi * frames / period
            r = 1.0 + coef[0] * np.cos(2 * theta + phase[0]) + coef[1] * np.cos(3 * theta + phase[1])
            y = np.clip(eye + 0.1 * np.sin(theta + phase[2]), box_lo[1], box_hi[1])
            return np.stack([centre[0] + rx * r * np.cos(theta), y, centre[2] + rz * r * np.sin(theta)], -1)

        pos = curve(t)
        velocity = curve(t + 0.5) - curve(t - 0.5)
        theta = direction * 2.0 * np.pi * t / period
        yaw = np.arctan2(velocity[:, 0], velocity[:, 2]) + 0.5 * np.sin(theta + phase[3])
        pitch = -0.1 + 0.1 * np.sin(2 * theta + phase[2])
        rot = look_rotation(yaw_pitch_forward(yaw, pitch), 0.03 * np.sin(theta))
    return _poses(pos, rot)
