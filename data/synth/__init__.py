"""Synthetic 4D scene generator: procedural rooms, moving objects, smooth camera paths, ray casting.

Entry points: :func:`synthetic_sequence` (a streaming ``data.schema.Sequence``),
:func:`write_tum_sequence` (TUM RGB-D layout + intrinsics, masks, meta.json, video.mp4).
"""

from data.synth.render import Renderer
from data.synth.scene import ROOM_FACES, Scene, SceneObject, sample_scene
from data.synth.sequence import SEQUENCE_TRAJECTORIES, SynthConfig, build_scene, synthetic_sequence
from data.synth.trajectories import TRAJECTORY_KINDS, camera_trajectory
from data.synth.writer import DEPTH_SCALE, write_tum_sequence

__all__ = [
    "DEPTH_SCALE",
    "ROOM_FACES",
    "Renderer",
    "SEQUENCE_TRAJECTORIES",
    "Scene",
    "SceneObject",
    "SynthConfig",
    "TRAJECTORY_KINDS",
    "build_scene",
    "camera_trajectory",
    "sample_scene",
    "synthetic_sequence",
    "write_tum_sequence",
]
