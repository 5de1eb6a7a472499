"""A synthetic 4D sequence as a streaming ``data.schema.Sequence``: frame i is rendered when asked for.

The scene and the whole camera path (N x 4 x 4 floats: 1.3 MB for 10,000 frames) are made once;
images are rendered on demand by ``seq[i]``, so a 10,000-frame sequence never sits in memory.
Deterministic: the same ``SynthConfig`` and seed give the same frames, in any order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from data.schema import Frame, Sequence
from data.synth.render import Renderer
from data.synth.scene import Scene, random_room, sample_scene
from data.synth.trajectories import TRAJECTORY_KINDS, camera_trajectory
from recon.errors import ConfigError
from recon.geometry import focal_from_fov

SEQUENCE_TRAJECTORIES = (*TRAJECTORY_KINDS, "mixed")


@dataclass
class SynthConfig:
    """Settings of one synthetic sequence (all recorded in the writer's meta.json).

    Attributes:
        num_frames: frames in the sequence.
        width, height: image size, pixels.
        trajectory: "walk", "orbit", "look-around", "loop", or "mixed" (one of those drawn per seed).
        num_dynamic: independently moving objects to place.
        num_furniture: static primitives on the floor to place.
        num_posters: textured panels on the walls.
        fov_range: horizontal field of view range, degrees (drawn per sequence).
        fps: frame rate for timestamps (timestamp = i / fps seconds).
        camera_speed: typical camera speed, metres per frame.
        shadows: cast shadows from the point light.
        supersample: odd s: s x s rays per pixel averaged for the image (anti-aliasing; s^2 cost);
            depth, mask and poses are unchanged.
    """

    num_frames: int = 64
    width: int = 128
    height: int = 96
    trajectory: str = "mixed"
    num_dynamic: int = 0
    num_furniture: int = 8
    num_posters: int = 4
    fov_range: tuple[float, float] = (50.0, 90.0)
    fps: float = 30.0
    camera_speed: float = 0.015
    shadows: bool = True
    supersample: int = 1

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        if self.num_frames < 1:
            raise ConfigError(f"num_frames: expected >= 1, got {self.num_frames}")
        if self.width < 8 or self.height < 8:
            raise ConfigError(f"width x height: expected >= 8 x 8 pixels, got {self.width} x {self.height}")
        if self.trajectory not in SEQUENCE_TRAJECTORIES:
            raise ConfigError(f"trajectory: expected one of {SEQUENCE_TRAJECTORIES}, got {self.trajectory!r}")
        for name in ("num_dynamic", "num_furniture", "num_posters"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: expected >= 0, got {getattr(self, name)}")
        lo, hi = self.fov_range
        if not 1.0 <= lo <= hi < 179.0:
            raise ConfigError(f"fov_range: expected 1 <= low <= high < 179 degrees, got {self.fov_range}")
        if self.supersample < 1 or self.supersample % 2 == 0:
            raise ConfigError(f"supersample: expected an odd integer >= 1, got {self.supersample}")
        if self.fps <= 0 or self.camera_speed <= 0:
            raise ConfigError(f"fps and camera_speed: expected > 0, got {self.fps}, {self.camera_speed}")


def random_intrinsics(
    rng: np.random.Generator, width: int, height: int, fov_range: tuple[float, float]
) -> np.ndarray:
    """Square-pixel pinhole K with a random horizontal fov and the principal point near the centre."""
    fov = torch.tensor(np.deg2rad(rng.uniform(*fov_range)), dtype=torch.float64)
    f = float(focal_from_fov(fov, width))
    cx = (width - 1) / 2.0 + rng.uniform(-0.02, 0.02) * width
    cy = (height - 1) / 2.0 + rng.uniform(-0.02, 0.02) * height
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


@dataclass
class SynthScene:
    """Everything fixed for a sequence: the scene, intrinsics and all camera poses."""

    scene: Scene
    K: np.ndarray  # [3, 3] pixels
    cam2world: np.ndarray  # [N, 4, 4] OpenCV camera, world y up, metres
    trajectory: str


def build_scene(config: SynthConfig, seed: int) -> SynthScene:
    """Room, camera path, objects placed off the path, intrinsics: all from ``seed``."""
    config.validate()
    rng = np.random.default_rng(seed)
    kind = config.trajectory
    if kind == "mixed":
        kind = str(rng.choice(TRAJECTORY_KINDS))
    lo, hi = random_room(rng)
    cam2world = camera_trajectory(kind, config.num_frames, lo, hi, rng, speed=config.camera_speed)
    scene = sample_scene(
        rng,
        cam2world,
        lo,
        hi,
        num_furniture=config.num_furniture,
        num_posters=config.num_posters,
        num_dynamic=config.num_dynamic,
    )
    K = random_intrinsics(rng, config.width, config.height, config.fov_range)
    return SynthScene(scene=scene, K=K, cam2world=cam2world, trajectory=kind)


class SyntheticFrameLoader:
    """``load(i) -> Frame`` of a synthetic sequence (a picklable callable, so DataLoader workers
    started with "spawn" can carry it)."""

    def __init__(self, built: SynthScene, config: SynthConfig, device: str = "cpu") -> None:
        self.built, self.config = built, config
        self.renderer = Renderer(
            built.scene,
            config.width,
            config.height,
            shadows=config.shadows,
            device=device,
            supersample=config.supersample,
        )

    def __call__(self, i: int) -> Frame:
        out = self.renderer.render(self.built.K, self.built.cam2world[i], frame=float(i))
        return Frame(
            image=out["image"].cpu().numpy(),
            K=self.built.K.copy(),
            timestamp=i / self.config.fps,
            depth=out["depth"].cpu().numpy().astype(np.float32),
            cam2world=self.built.cam2world[i].copy(),
            mask=out["mask"].cpu().numpy(),
            index=i,
        )


def synthetic_sequence(
    config: SynthConfig, seed: int, name: str | None = None, device: str = "cpu"
) -> Sequence:
    """A streaming synthetic sequence; ``seq[i]`` renders frame i (image, depth, K, pose, mask).

    Args:
        config: generator settings.
        seed: integer seed; the sequence is a pure function of (config, seed).
        name: sequence name (default ``synth_<seed>``).
        device: torch device to render on.

    Returns:
        ``data.schema.Sequence`` with format "synthetic"; ``seq.load`` is a
        :class:`SyntheticFrameLoader` (its ``built`` holds the scene, K and all poses); ``meta``
        (JSON-serialisable) holds the config, seed, chosen trajectory kind, room corners and the
        count of placed (dynamic) objects.
    """
    built = build_scene(config, seed)
    meta = {
        "generator": "streamrecon data.synth",
        "seed": int(seed),
        "config": dataclasses.asdict(config),
        "trajectory_kind": built.trajectory,
        "room_lo": built.scene.lo.tolist(),
        "room_hi": built.scene.hi.tolist(),
        "num_objects": len(built.scene.objects),
        "num_dynamic_placed": len(built.scene.dynamic_ids),
        "world": "metres, y up, floor at y = 0; cameras OpenCV, cam2world",
    }
    return Sequence(
        name=name or f"synth_{seed}",
        format="synthetic",
        root="",
        num_frames=config.num_frames,
        load=SyntheticFrameLoader(built, config, device),
        meta=meta,
    )
