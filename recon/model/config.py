"""Typed model configuration, YAML presets and validation.

Presets live in ``configs/model/{tiny,small,base,large}.yaml``; :func:`load_model_config` accepts a
preset name or a YAML path. Unknown keys raise :class:`recon.errors.ConfigError` naming the key and
the valid ones; values of the wrong type or out of range raise it too. Configs are plain
dataclasses, so LightningCLI/jsonargparse can read them as typed arguments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from layers.registry import MEMORY_TYPES, MemoryOptions, parse_memory_options
from recon.errors import ConfigError
from recon.resources import config_dir
from recon.typed import from_dict

PRESET_DIR = config_dir() / "model"  # configs/model/ (recon/configs/model/ in a wheel)

# Choice fields are Literal types: recon.typed.from_dict is the one place that checks them.
MemoryType = Literal[tuple(MEMORY_TYPES)]  # the registry's names (layers.registry.MEMORY_TYPES)
AutocastMode = Literal["bf16", "fp16", "none"]
DepthActivation = Literal["exp", "softplus"]

# Version of the network's design. 1: one camera token read as cam2world relative to frame 0, a
# depth-only scale token. 2: pose tokens per window slot + camera trunk (window-relative poses),
# online motion averaging, a metric readout token scaling depth and translation, full memory blocks.
# 3: as 2, with the pair motion encoder on pyramidal Lucas-Kanade flow (grey motion frames in the
# state) instead of a CNN on stacked frame pairs.
# A checkpoint of another version is refused by name (recon.checkpoint), never loaded half-way.
ARCHITECTURE_VERSION = 3
ARCHITECTURES = {
    1: "single camera token (cam2world relative to frame 0), depth-only scale token, residual memory layers",
    2: "window-relative pose tokens + camera trunk, online motion averaging, metric readout token, "
       "full memory blocks",
    3: "architecture 2 with a pair motion encoder on pyramidal Lucas-Kanade flow instead of a CNN on "
       "stacked frame pairs",
}

# The farthest long pose slot: the pose history the readout keeps grows with it (a 4x4 per frame).
MAX_LONG_POSE_OFFSET = 256


@dataclass
class MemoryConfig:
    """Long-range memory layers.

    Attributes:
        type: ``none``, ``gla``, ``elastic``, ``ttt`` or ``causal_attention`` (baseline).
        depths: aggregator block indices (0-based) after which a memory layer is inserted.
        num_heads: heads of the memory layers (default: the model's).
        options: the memory layer's options: a mapping such as ``{chunk_size: 32}`` in YAML,
            parsed into the type's :class:`layers.registry.MemoryOptions` when the config is loaded
            (:func:`validate`; unknown keys and wrong types raise ConfigError naming
            ``model.memory.options.<key>``). A mapping until then, so jsonargparse reads ``{}``.
        layer_scale: initial LayerScale of the memory blocks' two residual branches (mixer, MLP).
    """

    type: MemoryType = "gla"
    depths: list[int] = field(default_factory=lambda: [1, 3])
    num_heads: int | None = None
    options: dict[str, Any] | MemoryOptions = field(default_factory=dict)
    layer_scale: float = 0.01


@dataclass
class RevisitConfig:
    """Keyframe revisits: pose corrections against a fixed-size bank of earlier keyframes
    (:mod:`recon.model.revisit`). No weights: a checkpoint runs with any of these settings.

    Distances are relative to the current frame's median depth ``d`` (metres), so they hold at
    any scene scale.

    Attributes:
        enabled: correct the motion-averaged pose at revisits (off: pure window odometry).
        keyframes: K, keyframes the bank holds (each a grey motion frame, a thumbnail, a pose).
        min_age: frames a keyframe must be older than to correct a pose. Against a recent
            keyframe the measurement (predicted depth + flow) is no better than the window
            odometry it would replace; after a loop the odometry has drifted and it is.
        spacing: a frame becomes a keyframe when no keyframe's camera is within ``spacing * d``
            of it with a viewing-direction change under ``spacing_deg``.
        spacing_deg: the rotation half of that test, degrees.
        search_distance: a keyframe is a candidate when its camera is within ``search_distance *
            d`` of the current pose estimate ...
        search_deg: ... and its rotation within this many degrees.
        min_similarity: the candidate's thumbnail correlation with the current frame, in [-1, 1].
        revisit_similarity: a keyframe this alike is a candidate wherever the pose estimate puts
            it, and its correction is not bounded by ``max_correction`` (a loop closure).
        inlier_px: Cauchy scale and inlier threshold of the reprojection fit, pixels.
        min_inliers: inlier cells the fit needs (of the motion encoder's grid, 192 for tiny).
        min_inlier_fraction: inlier share of the textured cells the fit needs.
        max_correction: largest accepted correction: camera shift ``max_correction * d`` ...
        max_correction_deg: ... and rotation, degrees.
        gain: share of the correction applied at one frame (the next frames inherit it through
            the window, so a revisit converges geometrically; 1 = jump at once).
        measure_every: frames ``n`` with ``n % measure_every == 0`` retrieve and measure; the
            frames between carry the last accepted measurement's remaining correction (held, not
            re-measured), so a revisit converges as fast at a ``1 / measure_every`` share of the
            measurement cost (1 = measure every frame).
    """

    enabled: bool = True
    keyframes: int = 128
    min_age: int = 150
    spacing: float = 0.15
    spacing_deg: float = 10.0
    search_distance: float = 0.6
    search_deg: float = 25.0
    min_similarity: float = 0.6
    revisit_similarity: float = 0.85
    inlier_px: float = 1.5
    min_inliers: int = 30
    min_inlier_fraction: float = 0.5
    max_correction: float = 0.4
    max_correction_deg: float = 12.0
    gain: float = 0.1
    measure_every: int = 3


@dataclass
class RefineConfig:
    """Geometric refinement of the window poses against the pair flow and the predicted depth
    (:mod:`recon.model.window_refine`). No weights: a checkpoint runs with any of these settings.

    Attributes:
        enabled: refine the camera trunk's window poses at inference (training never does).
        inlier_px: Cauchy scale and inlier threshold of the reprojection fit, model pixels.
        iterations: reweighted Gauss-Newton steps of the fit.
        min_inliers: inlier cells a fit needs (of the motion encoder's grid, 192 for tiny).
        min_inlier_fraction: inlier share of the textured cells a fit needs.
        max_shift: largest accepted change of the translation, times the frame's median depth.
        max_turn_deg: largest accepted change of the rotation, degrees.
        calibrate: self-calibrate from the window's flow
            (:func:`recon.model.window_refine.calibration_evidence`, streamed by
            :func:`~recon.model.window_refine.self_calibrate`): the focal length when no
            intrinsics are given (off: the predicted one), and with ``calibrate_contrast`` the
            contrast of the depth the fits use.
        calibrate_contrast: also estimate the contrast of the predicted depth (its log-depth
            spread around the median, raised by ``e^c``; the depth head of a small model
            predicts near and far too alike, and the fits inherit that as a focal-length bias).
            Only the fits use it: the output depth is the predicted one.
        focal_every: frames ``n`` with ``n % focal_every == 0`` measure the calibration evidence (the
            others use the estimate so far): the self-calibration at a ``1 / focal_every`` share
            of its cost.
        focal_memory: frames over which the focal evidence is averaged (forgetting 1 - 1 / it
            per frame).
        focal_prior: information of the predicted focal length in that average (pixels^2 per
            squared log-focal unit, the units of a pair fit's information).
        max_focal_ratio: a pair whose fitted focal length is more than this factor from the
            predicted one is left out of the evidence.
        contrast_prior: information of "the predicted contrast is right" (``c = 0``), same units.
        max_contrast_ratio: likewise, for a pair's fitted contrast factor ``e^c``.
    """

    enabled: bool = True
    inlier_px: float = 1.0
    iterations: int = 6
    min_inliers: int = 40
    min_inlier_fraction: float = 0.5
    max_shift: float = 0.1
    max_turn_deg: float = 5.0
    calibrate: bool = True
    focal_every: int = 4
    focal_memory: int = 1000
    focal_prior: float = 100.0
    max_focal_ratio: float = 2.0
    calibrate_contrast: bool = True
    contrast_prior: float = 100.0
    max_contrast_ratio: float = 4.0


@dataclass
class HeadConfig:
    """Prediction heads.

    Attributes:
        features: channels of the dense (depth/confidence) head.
        levels: aggregator block indices whose outputs feed the dense head (shallow to deep).
        depth_activation: ``exp`` or ``softplus`` (log-depth plus the scale token's log-scale).
        camera_hidden: hidden width of the camera trunk's MLPs.
        pose_slots: S, the number of earlier frames (``t - 1 .. t - S``) whose pose relative to the
            current frame is predicted; ``1 <= S <= window - 1``; None = ``window - 1`` (resolved
            when the config is loaded).
        long_pose_offsets: L further slots beyond the window, the frame offsets ``d > S`` (strictly
            increasing) of earlier frames whose relative pose each frame also predicts; the
            default ``[]`` has none. No pair flow or local-window key reaches back that far (with
            ``d > depth * (window - 1)`` not even through stacked local attention), so what a long
            slot knows of frame ``t - d`` must come through the memory layers; its candidate
            ``A[t - d] @ R[t, d]`` joins the motion averaging. See :func:`slot_offsets`.
        pose_tokens_per_slot: G, pose tokens per slot (a frame carries ``(S + L) * G`` pose tokens).
        camera_trunk_depth: transformer blocks of the camera trunk over a frame's pose tokens.
        scale_ema: floor of the metric scale's streaming average weight: the log-scale is the
            running mean of the per-frame readouts for the first ``1 / scale_ema`` frames, then an
            EMA with this weight (1 = no smoothing).
        motion_width: channels of the pair motion encoder's convolutions over the Lucas-Kanade
            flow map of each (frame t, frame t - j) pair (:mod:`recon.model.motion_encoder`).
        revisit: pose corrections at revisited places (:class:`RevisitConfig`).
        refine: geometric refinement of the window poses (:class:`RefineConfig`).
    """

    features: int = 64
    levels: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    depth_activation: DepthActivation = "exp"
    camera_hidden: int = 256
    pose_slots: int | None = None
    long_pose_offsets: list[int] = field(default_factory=list)
    pose_tokens_per_slot: int = 1
    camera_trunk_depth: int = 2
    scale_ema: float = 0.05
    motion_width: int = 32
    revisit: RevisitConfig = field(default_factory=RevisitConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)


@dataclass
class ModelConfig:
    """Architecture of :class:`recon.model.model.StreamReconModel`.

    Attributes:
        name: preset name (informational).
        image_size: (H, W) of input frames in pixels; multiples of ``patch_size``.
        patch_size: patch side in pixels.
        dim: token width.
        depth: number of aggregator blocks (each = frame block + local spatiotemporal block).
        num_heads: attention heads (``dim / num_heads`` even and >= 6, for RoPE).
        mlp_ratio: MLP hidden width / dim.
        num_register_tokens: register tokens per frame.
        window: W, frames seen by local spatiotemporal attention (the current one included).
        rope_theta_space: RoPE base for rows/columns.
        rope_theta_time: RoPE base for frame offsets.
        rope_time_fraction: share of each head rotated by frame offset.
        absolute_position: add a learned absolute position embedding (sine-cosine initialised) to
            the patch tokens, so attention outputs carry where a matched patch is (RoPE alone only
            shapes the scores); see :mod:`recon.model.embed`.
        autocast: mixed precision on CUDA: ``bf16``, ``fp16`` or ``none`` (CPU always runs fp32).
        memory: long-range memory layers.
        head: prediction heads.
        architecture: design version (:data:`ARCHITECTURE_VERSION`; checkpoints record it).
    """

    name: str = "tiny"
    image_size: tuple[int, int] = (96, 128)
    patch_size: int = 16
    dim: int = 192
    depth: int = 4
    num_heads: int = 3
    mlp_ratio: float = 4.0
    num_register_tokens: int = 2
    window: int = 8
    rope_theta_space: float = 100.0
    rope_theta_time: float = 100.0
    rope_time_fraction: float = 0.25
    absolute_position: bool = True
    autocast: AutocastMode = "bf16"
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    architecture: int = ARCHITECTURE_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON-serialisable)."""
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        # the options that differ from the type's defaults: {} when none is set, as configs write it
        d["memory"]["options"] = parse_memory_options(self.memory.type, self.memory.options).changed()
        return d

    def signature(self) -> str:
        """Short hash of everything that shapes the network or its state (not the name).

        An option added after models were exported is left out of the hash while it is off
        (``head.long_pose_offsets`` empty), so those models keep the signature they were saved with.
        """
        d = self.to_dict()
        d.pop("name")
        if not d["head"]["long_pose_offsets"]:
            d["head"].pop("long_pose_offsets")
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def slot_offsets(head: HeadConfig) -> tuple[int, ...]:
    """The frame offset of every pose slot, in slot order: the window slots ``1 .. S``, then the
    long slots (``head.long_pose_offsets``). Slot ``k`` of ``window_cam2world[t]`` is frame t in the
    camera of frame ``t - slot_offsets(head)[k]``."""
    return (*range(1, head.pose_slots + 1), *head.long_pose_offsets)


def validate(cfg: ModelConfig) -> ModelConfig:
    """Check ranges and cross-field constraints; returns ``cfg`` or raises ConfigError."""
    H, W = cfg.image_size
    if cfg.patch_size <= 0 or H % cfg.patch_size or W % cfg.patch_size:
        raise ConfigError(
            f"model.image_size {list(cfg.image_size)} must be multiples of patch_size {cfg.patch_size}")
    if cfg.dim % cfg.num_heads or (cfg.dim // cfg.num_heads) % 2 or cfg.dim // cfg.num_heads < 6:
        raise ConfigError(
            f"model.dim {cfg.dim} / num_heads {cfg.num_heads} must be an even head width >= 6")
    if cfg.depth < 1 or cfg.window < 1:
        raise ConfigError(f"model.depth ({cfg.depth}) and model.window ({cfg.window}) must be >= 1")
    if not (cfg.mlp_ratio > 0 and cfg.mlp_ratio < float("inf")) or int(cfg.dim * cfg.mlp_ratio) < 1:
        raise ConfigError(f"model.mlp_ratio {cfg.mlp_ratio}: expected a finite ratio > 0 "
                          f"(an MLP of at least 1 channel at dim {cfg.dim})")
    mem = cfg.memory
    bad = [d for d in mem.depths if not 0 <= d < cfg.depth]
    if bad or len(set(mem.depths)) != len(mem.depths):
        raise ConfigError(
            f"model.memory.depths {mem.depths}: expected distinct block indices in [0, {cfg.depth})")
    if not 0.0 < mem.layer_scale <= 1.0:
        raise ConfigError(f"model.memory.layer_scale {mem.layer_scale}: expected a value in (0, 1]")
    mem.options = parse_memory_options(mem.type, mem.options)
    heads = mem.num_heads or cfg.num_heads
    if cfg.dim % heads:
        raise ConfigError(f"model.memory.num_heads {heads} does not divide dim {cfg.dim}")
    if cfg.architecture != ARCHITECTURE_VERSION:
        raise ConfigError(
            f"model.architecture {cfg.architecture}: this streamrecon builds architecture "
            f"{ARCHITECTURE_VERSION} ({ARCHITECTURES[ARCHITECTURE_VERSION]}) only")
    head = cfg.head
    if head.pose_slots is None:
        head.pose_slots = cfg.window - 1
    if not 1 <= head.pose_slots <= cfg.window - 1:
        raise ConfigError(
            f"model.head.pose_slots {head.pose_slots}: expected 1 .. window - 1 = {cfg.window - 1} "
            f"(a slot is an earlier frame of the local window; window >= 2)")
    head.long_pose_offsets = [int(d) for d in head.long_pose_offsets]
    longs = head.long_pose_offsets
    if any(d <= head.pose_slots or d > MAX_LONG_POSE_OFFSET for d in longs) \
            or any(b <= a for a, b in zip(longs, longs[1:], strict=False)):
        raise ConfigError(
            f"model.head.long_pose_offsets {longs}: expected strictly increasing frame offsets in "
            f"pose_slots + 1 = {head.pose_slots + 1} .. {MAX_LONG_POSE_OFFSET} (slots beyond the window)")
    if head.pose_tokens_per_slot < 1 or head.camera_trunk_depth < 0:
        raise ConfigError(
            f"model.head: pose_tokens_per_slot ({head.pose_tokens_per_slot}) must be >= 1 and "
            f"camera_trunk_depth ({head.camera_trunk_depth}) >= 0")
    if head.motion_width < 1:
        raise ConfigError(f"model.head.motion_width {head.motion_width}: expected >= 1")
    _validate_revisit(head.revisit)
    _validate_refine(head.refine)
    if not 0.0 < head.scale_ema <= 1.0:
        raise ConfigError(f"model.head.scale_ema {head.scale_ema}: expected a weight in (0, 1]")
    if not head.levels or any(not 0 <= i < cfg.depth for i in head.levels):
        raise ConfigError(f"model.head.levels {head.levels}: expected block indices in [0, {cfg.depth})")
    return cfg


def _validate_revisit(r: RevisitConfig) -> None:
    """Ranges of the keyframe-revisit settings (ConfigError naming ``model.head.revisit.<key>``)."""
    where = "model.head.revisit"
    if r.min_age < 0:
        raise ConfigError(f"{where}.min_age {r.min_age}: expected frames >= 0")
    if r.measure_every < 1:
        raise ConfigError(f"{where}.measure_every {r.measure_every}: expected frames >= 1")
    if r.keyframes < 1 or r.min_inliers < 6:
        raise ConfigError(f"{where}: keyframes ({r.keyframes}) must be >= 1 and min_inliers "
                          f"({r.min_inliers}) >= 6 (a pose has 6 degrees of freedom)")
    positive = {"spacing": r.spacing, "spacing_deg": r.spacing_deg, "search_distance": r.search_distance,
                "search_deg": r.search_deg, "inlier_px": r.inlier_px, "max_correction": r.max_correction,
                "max_correction_deg": r.max_correction_deg}
    for key, value in positive.items():
        if not 0.0 < value < float("inf"):
            raise ConfigError(f"{where}.{key} {value}: expected a finite value > 0")
    for key, value in (("min_similarity", r.min_similarity), ("revisit_similarity", r.revisit_similarity)):
        if not -1.0 <= value <= 1.0:
            raise ConfigError(f"{where}.{key} {value}: expected a correlation in [-1, 1]")
    for key, value in (("min_inlier_fraction", r.min_inlier_fraction), ("gain", r.gain)):
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"{where}.{key} {value}: expected a value in (0, 1]")


def _validate_refine(r: RefineConfig) -> None:
    """Ranges of the window-refinement settings (ConfigError naming ``model.head.refine.<key>``)."""
    where = "model.head.refine"
    positive = (("inlier_px", r.inlier_px), ("max_shift", r.max_shift), ("max_turn_deg", r.max_turn_deg))
    for key, value in positive:
        if not 0.0 < value < float("inf"):
            raise ConfigError(f"{where}.{key} {value}: expected a finite value > 0")
    if r.focal_every < 1:
        raise ConfigError(f"{where}.focal_every {r.focal_every}: expected >= 1")
    inf = float("inf")
    if r.focal_memory < 1 or not 0.0 < r.focal_prior < inf or not 1.0 < r.max_focal_ratio < inf:
        raise ConfigError(f"{where}: focal_memory ({r.focal_memory}) must be >= 1, focal_prior "
                          f"({r.focal_prior}) finite and > 0, max_focal_ratio ({r.max_focal_ratio}) "
                          f"finite and > 1")
    if not 0.0 < r.contrast_prior < inf or not 1.0 < r.max_contrast_ratio < inf:
        raise ConfigError(f"{where}: contrast_prior ({r.contrast_prior}) must be finite and > 0, "
                          f"max_contrast_ratio ({r.max_contrast_ratio}) finite and > 1")
    if r.iterations < 1 or r.min_inliers < 1:
        raise ConfigError(f"{where}: iterations ({r.iterations}) and min_inliers ({r.min_inliers}) "
                          f"must be >= 1")
    if not 0.0 < r.min_inlier_fraction <= 1.0:
        raise ConfigError(f"{where}.min_inlier_fraction {r.min_inlier_fraction}: expected a value in (0, 1]")


def load_model_config(source: str | Path | dict | ModelConfig, **overrides: Any) -> ModelConfig:
    """A validated ModelConfig from a preset name, a YAML path, a dict or a ModelConfig.

    Args:
        source: ``"tiny"`` / ``"small"`` / ``"base"`` / ``"large"``, a path to a YAML file (whose
            top level is the config, or has it under a ``model:`` key), a dict, or a ModelConfig.
        **overrides: fields to replace, e.g. ``window=2`` or ``memory={"type": "ttt"}`` (a mapping
            is merged into the existing section).

    Raises:
        ConfigError: missing file, unreadable YAML, unknown key, wrong type or invalid value.
    """
    if isinstance(source, ModelConfig):
        data = source.to_dict()
    elif isinstance(source, dict):
        data = dict(source)
    else:
        path = Path(source)
        if not path.suffix and not path.exists():
            path = PRESET_DIR / f"{source}.yaml"
            if not path.exists():
                presets = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
                raise ConfigError(f"model config {str(source)!r}: no such file or preset; presets: {presets}")
        if not path.is_file():
            raise ConfigError(f"model config {str(path)!r}: file not found (expected a YAML file)")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"model config {str(path)!r}: not valid YAML ({e})") from e
        if isinstance(data, dict) and set(data) == {"model"}:
            data = data["model"]
    if not isinstance(data, dict):
        raise ConfigError(f"model config: expected a mapping of fields, got {type(data).__name__}")
    for key, value in overrides.items():  # nested mappings merge one level deep
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return validate(from_dict(ModelConfig, data))
