"""Procedural indoor scenes: a room (floor, ceiling, four walls), furniture-like primitives on the
floor, posters on the walls, independently moving objects, a point light.

World frame: metres, y up, floor at y = 0, the room is the box [lo, hi]. Surface ids (used for
textures and for the per-pixel id map of the renderer): 0..5 are the room faces
(2 * axis + side: 0 wall x-lo, 1 wall x-hi, 2 floor, 3 ceiling, 4 wall z-lo, 5 wall z-hi),
object ``j`` has surface id ``ROOM_FACES + j``.

Placement is rejection sampling against the camera path given beforehand: no object comes
within ``clearance`` of any camera position (bounding spheres), objects do not overlap each other
(bounding spheres, over all frames for moving ones) and moving objects stay inside the room.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data.synth.dynamics import Motion, axis_angle_to_rotmat, random_motion
from data.synth.textures import BRICKS, CHECKER, NOISE, STRIPES, TextureParams, random_texture

ROOM_FACES = 6


@dataclass
class SceneObject:
    """One object: a canonical primitive (see primitives.py) scaled by ``size`` and moved by ``motion``.

    Attributes:
        kind: "box", "ellipsoid", "cylinder" or "cone".
        size: [3] half extents along the object's local x, y, z axes, metres.
        motion: pose over time (static objects have a "static" motion).
        role: "furniture", "poster" or "mover" (what placed it; informational).
    """

    kind: str
    size: np.ndarray
    motion: Motion
    role: str = "furniture"

    @property
    def radius(self) -> float:
        """Bounding-sphere radius around the centre (the canonical shapes fit in the unit cube)."""
        return float(np.linalg.norm(self.size))


@dataclass
class Scene:
    """Everything the renderer needs, fixed for the whole sequence (objects move by their motion).

    Attributes:
        lo, hi: [3] room corners, metres (lo[1] = 0 is the floor).
        objects: the scene objects.
        textures: one per surface id (ROOM_FACES room faces, then one per object).
        light_position: [3] world position of the point light.
        light_intensity: irradiance scale at 1 m (linear units).
        ambient: ambient light level (linear units).
    """

    lo: np.ndarray
    hi: np.ndarray
    objects: list[SceneObject] = field(default_factory=list)
    textures: list[TextureParams] = field(default_factory=list)
    light_position: np.ndarray = field(default_factory=lambda: np.zeros(3))
    light_intensity: float = 3.0
    ambient: float = 0.25

    @property
    def dynamic_ids(self) -> list[int]:
        """Surface ids of the independently moving objects."""
        return [ROOM_FACES + j for j, o in enumerate(self.objects) if o.motion.is_dynamic]


def random_room(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Room corners: 4-8 m wide and deep, 2.5-3.5 m high, centred on the origin, floor at 0."""
    w, d, h = rng.uniform(4.0, 8.0), rng.uniform(4.0, 8.0), rng.uniform(2.5, 3.5)
    return np.array([-w / 2, 0.0, -d / 2]), np.array([w / 2, h, d / 2])


def _yaw(angle: float) -> np.ndarray:
    return axis_angle_to_rotmat(np.array([0.0, 1.0, 0.0]), np.array([angle]))[0]


def _furniture(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> SceneObject:
    kind = str(rng.choice(["box", "box", "ellipsoid", "cylinder", "cone"]))
    if kind == "box":
        size = np.array([rng.uniform(0.15, 0.6), rng.uniform(0.1, 0.6), rng.uniform(0.15, 0.6)])
    elif kind == "ellipsoid":
        r = rng.uniform(0.15, 0.45)
        size = r * (np.ones(3) if rng.uniform() < 0.5 else rng.uniform(0.6, 1.4, size=3))
    elif kind == "cylinder":
        r = rng.uniform(0.1, 0.35)
        size = np.array([r, rng.uniform(0.15, 0.8), r])
    else:
        r = rng.uniform(0.15, 0.4)
        size = np.array([r, rng.uniform(0.2, 0.6), r])
    xz = rng.uniform(lo[[0, 2]] + np.hypot(size[0], size[2]), hi[[0, 2]] - np.hypot(size[0], size[2]))
    center = np.array([xz[0], size[1], xz[1]])  # resting on the floor
    return SceneObject(kind, size, Motion(center0=center, rotation0=_yaw(rng.uniform(0, 2 * np.pi))))


def _poster(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, index: int) -> SceneObject:
    size = np.array([rng.uniform(0.25, 0.8), rng.uniform(0.2, 0.6), 0.01])
    face = int(rng.integers(0, 4))
    axis, side = (0, 2)[face // 2], face % 2  # wall x-lo, x-hi, z-lo, z-hi
    inset = 0.012 + 0.002 * index  # distinct offsets: overlapping posters never z-fight
    center = np.empty(3)
    center[1] = rng.uniform(0.8, min(2.2, hi[1] - 0.3))
    along = 2 - axis
    center[along] = rng.uniform(lo[along] + size[0] + 0.05, hi[along] - size[0] - 0.05)
    center[axis] = hi[axis] - inset if side else lo[axis] + inset
    rotation = _yaw(np.pi / 2) if axis == 0 else np.eye(3)  # local z along the wall normal
    return SceneObject("box", size, Motion(center0=center, rotation0=rotation), role="poster")


def _mover(
    rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, speed: float, cam2world: np.ndarray
) -> SceneObject:
    kind = str(rng.choice(["ellipsoid", "box", "ellipsoid"]))
    r = rng.uniform(0.12, 0.35)
    size = r * (np.ones(3) if kind == "ellipsoid" else rng.uniform(0.6, 1.3, size=3))
    motion_kind = "bounce" if kind == "ellipsoid" and rng.uniform() < 0.5 else "oscillate"
    # Start 1.2-3.5 m in front of the camera at a random frame, so moving objects are seen.
    pose = cam2world[rng.integers(cam2world.shape[0])]
    anchor = pose[:3, 3] + pose[:3, 2] * rng.uniform(1.2, 3.5) + rng.normal(0.0, 0.3, size=3)
    xz = np.clip(anchor[[0, 2]], lo[[0, 2]] + 0.5, hi[[0, 2]] - 0.5)
    y = size[1] if motion_kind == "bounce" else float(np.clip(anchor[1], 0.4, hi[1] - 0.6))
    rotation = axis_angle_to_rotmat(np.array([0.0, 1.0, 0.0]), np.array([rng.uniform(0, 2 * np.pi)]))[0]
    motion = random_motion(rng, motion_kind, np.array([xz[0], y, xz[1]]), rotation, speed=speed)
    return SceneObject(kind, size, motion, role="mover")


def _fits(
    obj: SceneObject,
    frames: np.ndarray,
    cameras: np.ndarray,
    placed: list[SceneObject],
    lo: np.ndarray,
    hi: np.ndarray,
    clearance: float,
) -> bool:
    """True when ``obj`` stays in the room, clear of every camera position and of placed objects."""
    centers = obj.motion.centers(frames)  # [N, 3]
    r = obj.radius
    if obj.role != "poster":
        if obj.motion.is_dynamic:  # a spinning object sweeps its whole bounding sphere
            extent = np.full(3, r)
            extent[1] = obj.size[1] if obj.motion.kind == "bounce" else r  # a ball rests on the floor
        else:  # static, turned about y only
            reach = float(np.hypot(obj.size[0], obj.size[2]))
            extent = np.array([reach, obj.size[1], reach])
        low, high = centers - extent, centers + extent
        if (low < lo - 1e-9).any() or (high > hi + 1e-9).any():
            return False
    if np.linalg.norm(cameras - centers, axis=-1).min() <= r + clearance:
        return False
    for other in placed:
        gap = np.linalg.norm(other.motion.centers(frames) - centers, axis=-1).min()
        if gap <= r + other.radius:
            return False
    return True


def sample_scene(
    rng: np.random.Generator,
    cam2world: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    num_furniture: int = 8,
    num_posters: int = 4,
    num_dynamic: int = 0,
    clearance: float = 0.35,
    dynamic_speed: float = 0.02,
    max_tries: int = 200,
) -> Scene:
    """Populate a room around a camera path.

    Args:
        rng: numpy generator (the only source of randomness).
        cam2world: [N, 4, 4] camera poses of every frame (OpenCV camera, world metres).
        lo, hi: [3] room corners.
        num_furniture, num_posters, num_dynamic: how many of each to try to place.
        clearance: minimum gap between any camera centre and any object's bounding sphere, metres.
        dynamic_speed: peak speed of moving objects, metres per frame.
        max_tries: placement attempts per object before giving it up (a crowded path).

    Returns:
        The scene. Objects that found no free spot are left out (``len(scene.objects)`` says
        how many were placed).
    """
    cameras = cam2world[:, :3, 3]
    frames = np.arange(cameras.shape[0], dtype=np.float64)
    placed: list[SceneObject] = []
    jobs = [("mover", num_dynamic), ("furniture", num_furniture), ("poster", num_posters)]
    for role, count in jobs:
        for index in range(count):
            for _ in range(max_tries):
                if role == "mover":
                    obj = _mover(rng, lo, hi, dynamic_speed, cam2world)
                elif role == "furniture":
                    obj = _furniture(rng, lo, hi)
                else:
                    obj = _poster(rng, lo, hi, index)
                if _fits(obj, frames, cameras, placed, lo, hi, clearance):
                    placed.append(obj)
                    break
    textures = [
        random_texture(rng, (BRICKS, NOISE, STRIPES), (0.1, 0.4)),  # walls x-lo, x-hi
        random_texture(rng, (BRICKS, NOISE, STRIPES), (0.1, 0.4)),
        random_texture(rng, (CHECKER, BRICKS, NOISE), (0.15, 0.5)),  # floor
        random_texture(rng, (NOISE, CHECKER), (0.3, 0.8)),  # ceiling
        random_texture(rng, (BRICKS, NOISE, STRIPES), (0.1, 0.4)),  # walls z-lo, z-hi
        random_texture(rng, (BRICKS, NOISE, STRIPES), (0.1, 0.4)),
    ]
    for obj in placed:
        scale = (0.03, 0.12) if obj.role == "poster" else (0.05, 0.3)
        textures.append(random_texture(rng, scale_range=scale))
    centre = 0.5 * (lo + hi)
    light = np.array([centre[0] + rng.uniform(-1, 1), hi[1] - 0.25, centre[2] + rng.uniform(-1, 1)])
    return Scene(
        lo=lo,
        hi=hi,
        objects=placed,
        textures=textures,
        light_position=light,
        light_intensity=float(rng.uniform(1.2, 2.2)),
        ambient=float(rng.uniform(0.2, 0.35)),
    )
