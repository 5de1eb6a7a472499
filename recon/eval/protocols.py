"""Evaluation protocols: which sequences, which frames, which prefix lengths, which metrics.

A protocol is a YAML file (``configs/eval/<name>.yaml``) read into :class:`Protocol`. Keys are
checked against the dataclasses below: an unknown key, a wrong type or an invalid value raises
:class:`recon.errors.ConfigError` naming the key. Configs are parsed as YAML data, never evaluated.

Two kinds of data:
- ``dataset.format: synthetic``: sequences from ``data.synth`` (no download), one per seed.
- any ``data.load_sequence`` format (``tum``, ``7scenes``, ``scannet``, ``sintel``,
  ``kitti_odometry``, ...): ``sequences[].path`` relative to the data root, which comes from the
  command line (``--data-root``) or ``dataset.root``.

Frame selection per sequence: ``start``, ``stride``, ``max_frames`` (frames kept after the stride),
so "the first 90 frames at stride 3" is ``{start: 0, stride: 3, max_frames: 90}``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data.fit import POLICIES
from data.schema import Sequence
from recon.errors import ConfigError, InputError
from recon.resources import config_dir
from recon.typed import from_dict

PROTOCOL_DIR = config_dir() / "eval"  # configs/eval/ (recon/configs/eval/ in a wheel)
FULL = "full"
POSE_ALIGN_MODES = ("sim3", "se3", "none")
DEPTH_ALIGN_MODES = ("median", "median_sequence", "scale_shift", "none")
INTRINSICS_MODES = ("predicted", "source")


@dataclass
class FrameSelection:
    """Which frames of a sequence are streamed: ``seq[start + i * stride]`` for i < max_frames."""

    start: int = 0
    stride: int = 1
    max_frames: int | None = None


@dataclass
class SequenceSpec:
    """One sequence of a dataset protocol.

    Attributes:
        path: folder relative to the data root (or absolute).
        name: label in the report (default: the path).
        frames: frame selection overriding the protocol's default.
        options: reader options for ``data.load_sequence`` (e.g. ``scene`` for Sintel).
    """

    path: str
    name: str | None = None
    frames: FrameSelection | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetSpec:
    """Where the data comes from.

    Attributes:
        format: ``synthetic`` or a ``data.load_sequence`` format name.
        root: data root (``--data-root`` overrides); unused for synthetic.
        download: how to get the data (shown when the root is missing).
        options: reader options shared by every sequence.
    """

    format: str = "synthetic"
    root: str | None = None
    download: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SyntheticSpec:
    """Synthetic sequences: one per seed, ``data.synth.SynthConfig`` fields in ``config``.

    Attributes:
        seeds: one sequence per seed.
        config: SynthConfig fields (num_frames, trajectory, camera_speed, ...).
        match_model_resolution: render at the model's input size (no resampling).
    """

    seeds: list[int] = field(default_factory=lambda: [0])
    config: dict[str, Any] = field(default_factory=dict)
    match_model_resolution: bool = True


@dataclass
class PoseSettings:
    """Trajectory metrics.

    Attributes:
        enabled: compute ATE / RPE (needs ground-truth poses).
        align: alignment of each prefix before ATE (``sim3``, ``se3``, ``none``); the
            static-camera and constant-velocity baselines are scored with the same one.
        rpe_delta: frame distance of the RPE pairs.
        drift_align_frames: the per-frame drift curves fit their alignment (trajectory Sim(3),
            depth scale) on this many first frames only, so later drift shows.
    """

    enabled: bool = True
    align: str = "sim3"
    rpe_delta: int = 1
    drift_align_frames: int = 30


@dataclass
class DepthSettings:
    """Depth metrics.

    Attributes:
        align: modes evaluated for every prefix (``median`` = per-frame median scale; the
            sequence-level ``median_sequence`` / ``scale_shift`` expose scale drift).
        min_depth, max_depth: valid ground-truth range in metres (max None = no cap).
        samples_per_frame: valid pixels kept per frame for sequence-level alignments (exact when
            a frame has at most this many valid pixels; a fixed-seed uniform sample otherwise).
    """

    align: list[str] = field(default_factory=lambda: ["median", "median_sequence"])
    min_depth: float = 1e-3
    max_depth: float | None = None
    samples_per_frame: int = 512


@dataclass
class CloudSettings:
    """Point-cloud metrics of each prefix (predicted world points moved by the trajectory Sim(3)).

    Attributes:
        enabled: compute accuracy / completeness / normal consistency / Chamfer / F-score.
        points_per_frame: sampled pixels per frame whose predicted and ground-truth points are kept.
        threshold: F-score distance threshold (metres).
        icp_max_distance: refine with open3d point-to-point ICP (this correspondence distance,
            metres) before measuring; null = no ICP.
    """

    enabled: bool = False
    points_per_frame: int = 128
    threshold: float = 0.05
    icp_max_distance: float | None = None


@dataclass
class Protocol:
    """A complete evaluation protocol (see the module docstring).

    Attributes:
        name, description: labels.
        dataset: data source.
        sequences: dataset sequences (empty for synthetic).
        synthetic: synthetic sequences (format ``synthetic`` only).
        frames: default frame selection.
        lengths: prefix lengths in frames; ``"full"`` = the whole selected sequence.
        intrinsics: ``predicted`` (the model estimates K) or ``source`` (calibrated K is given).
        resize: ``crop`` or ``resize`` to fit frames to the model.
        pose, depth, cloud: metric settings.
    """

    name: str
    description: str = ""
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    sequences: list[SequenceSpec] = field(default_factory=list)
    synthetic: SyntheticSpec | None = None
    frames: FrameSelection = field(default_factory=FrameSelection)
    lengths: list[Any] = field(default_factory=lambda: [FULL])
    intrinsics: str = "predicted"
    resize: str = "crop"
    pose: PoseSettings = field(default_factory=PoseSettings)
    depth: DepthSettings = field(default_factory=DepthSettings)
    cloud: CloudSettings = field(default_factory=CloudSettings)

    def frame_selection(self, spec: SequenceSpec | None) -> FrameSelection:
        """The selection of one sequence: its own, else the protocol's."""
        return spec.frames if spec is not None and spec.frames is not None else self.frames

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_selection(sel: FrameSelection, where: str) -> None:
    if sel.start < 0 or sel.stride < 1 or (sel.max_frames is not None and sel.max_frames < 1):
        raise ConfigError(
            f"{where}: expected start >= 0, stride >= 1, max_frames >= 1 or null; got start={sel.start}, "
            f"stride={sel.stride}, max_frames={sel.max_frames}"
        )


def validate_protocol(p: Protocol) -> Protocol:
    """Check values and cross-field rules; returns ``p`` or raises ConfigError naming the key."""
    from data import FORMATS

    fmt = p.dataset.format
    if fmt != "synthetic" and fmt not in FORMATS:
        raise ConfigError(f"protocol {p.name}: dataset.format {fmt!r} unknown; expected synthetic or one of "
                          f"{', '.join(FORMATS)}")
    if fmt == "synthetic":
        if p.synthetic is None or not p.synthetic.seeds:
            raise ConfigError(f"protocol {p.name}: synthetic protocols need synthetic.seeds (one per seed)")
        from data.synth import SynthConfig

        from_dict(SynthConfig, p.synthetic.config, "synthetic.config").validate()
    elif not p.sequences:
        raise ConfigError(f"protocol {p.name}: dataset protocols need a non-empty 'sequences' list")
    _check_selection(p.frames, "frames")
    for i, s in enumerate(p.sequences):
        if s.frames is not None:
            _check_selection(s.frames, f"sequences[{i}].frames")
    if not p.lengths:
        raise ConfigError(f"protocol {p.name}: lengths must list at least one prefix length or 'full'")
    for v in p.lengths:
        if v != FULL and (isinstance(v, bool) or not isinstance(v, int) or v < 3):
            raise ConfigError(f"lengths: expected integers >= 3 or {FULL!r}, got {v!r}")
    checks = (
        ("pose.align", p.pose.align, POSE_ALIGN_MODES),
        ("intrinsics", p.intrinsics, INTRINSICS_MODES),
        ("resize", p.resize, POLICIES),
    )
    for key, value, allowed in checks:
        if value not in allowed:
            raise ConfigError(f"{key}: expected one of {allowed}, got {value!r}")
    for mode in p.depth.align:
        if mode not in DEPTH_ALIGN_MODES:
            raise ConfigError(f"depth.align: expected modes from {DEPTH_ALIGN_MODES}, got {mode!r}")
    if p.pose.rpe_delta < 1 or p.pose.drift_align_frames < 3:
        raise ConfigError(
            f"pose: expected rpe_delta >= 1 and drift_align_frames >= 3, got {p.pose.rpe_delta}, "
            f"{p.pose.drift_align_frames}"
        )
    lo, hi = p.depth.min_depth, p.depth.max_depth
    if not 0 < lo or (hi is not None and hi <= lo):
        raise ConfigError(f"depth: expected 0 < min_depth < max_depth, got {lo}, {hi}")
    if p.depth.samples_per_frame < 1 or p.cloud.points_per_frame < 0 or p.cloud.threshold <= 0:
        raise ConfigError(
            f"expected depth.samples_per_frame >= 1, cloud.points_per_frame >= 0, cloud.threshold > 0; got "
            f"{p.depth.samples_per_frame}, {p.cloud.points_per_frame}, {p.cloud.threshold}"
        )
    if p.cloud.enabled and not 0 < p.cloud.points_per_frame <= p.depth.samples_per_frame:
        raise ConfigError(
            f"cloud.points_per_frame: expected 1..depth.samples_per_frame ({p.depth.samples_per_frame}) "
            f"when cloud metrics are enabled, got {p.cloud.points_per_frame}"
        )
    return p


def load_protocol(source: str | Path | dict) -> Protocol:
    """A validated :class:`Protocol` from a built-in name, a YAML path or a mapping.

    Args:
        source: ``"synthetic_drift"`` (a file in ``configs/eval/``), a path to a YAML file, or a dict.

    Raises:
        ConfigError: missing file, unreadable YAML, unknown key, wrong type or invalid value.
    """
    if isinstance(source, dict):
        data = dict(source)
        data.setdefault("name", "protocol")
        where = "protocol"
    else:
        path = Path(source)
        if not path.suffix and not path.exists():
            path = PROTOCOL_DIR / f"{source}.yaml"
            if not path.is_file():
                raise ConfigError(
                    f"eval protocol {str(source)!r}: no such file or built-in protocol; built-in: "
                    f"{', '.join(builtin_protocols())}"
                )
        if not path.is_file():
            raise ConfigError(f"eval protocol {str(path)!r}: file not found (expected a YAML file)")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"eval protocol {str(path)!r}: not valid YAML ({e})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"eval protocol {str(path)!r}: expected a mapping of protocol keys")
        data.setdefault("name", path.stem)
        where = str(path)
    try:
        protocol = from_dict(Protocol, data, where)
    except TypeError as e:  # a required key is missing in a nested section (e.g. a sequence's path)
        detail = str(e).split(".__init__() ")[-1]
        raise ConfigError(f"{where}: {detail} (see docs/eval.md for the keys)") from e
    return validate_protocol(protocol)


def builtin_protocols() -> list[str]:
    """Names of the protocols shipped in ``configs/eval/``."""
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


def select_frames(seq: Sequence, sel: FrameSelection, max_frames: int | None = None) -> Sequence:
    """A view of ``seq`` holding ``seq[start + i * stride]`` for i < min(max_frames, cap).

    Args:
        seq: the full sequence.
        sel: the protocol's frame selection.
        max_frames: optional further cap (``recon eval --max-frames``).

    Raises:
        InputError: the selection leaves no frame.
    """
    available = max(0, (len(seq) - sel.start + sel.stride - 1) // sel.stride)
    n = min(available, sel.max_frames or available, max_frames or available)
    if n < 1:
        raise InputError(
            f"{seq.name}: frame selection start={sel.start} stride={sel.stride} leaves no frame of its "
            f"{len(seq)} frames"
        )
    base, start, stride = seq.load, sel.start, sel.stride
    meta = {**seq.meta, "selection": {"start": start, "stride": stride, "frames": n, "of": len(seq)}}
    return Sequence(seq.name, seq.format, seq.root, n, lambda i: base(start + i * stride), meta)


def _missing_data(protocol: Protocol, what: str) -> InputError:
    hint = f" To get the data: {protocol.dataset.download.strip()}" if protocol.dataset.download else ""
    return InputError(f"protocol {protocol.name}: {what}.{hint}")


def open_sequences(
    protocol: Protocol,
    data_root: str | Path | None = None,
    model_hw: tuple[int, int] | None = None,
    max_frames: int | None = None,
    render_device: str = "cpu",
) -> list[tuple[str, Sequence]]:
    """Open every sequence of a protocol (frames load lazily), with its frame selection applied.

    Args:
        protocol: the protocol.
        data_root: root of a dataset protocol (overrides ``dataset.root``).
        model_hw: (H, W) to render synthetic sequences at (``match_model_resolution``).
        max_frames: cap on the frames of every sequence (smoke runs).
        render_device: torch device synthetic frames are rendered on.

    Returns:
        (name, sequence) pairs in protocol order.

    Raises:
        InputError: no data root given, or a root / sequence folder missing (the message names the
            path and says how to get the data).
    """
    if protocol.dataset.format == "synthetic":
        from data.synth import SynthConfig, synthetic_sequence

        spec = protocol.synthetic
        config = dict(spec.config)
        if spec.match_model_resolution and model_hw is not None:
            config["height"], config["width"] = int(model_hw[0]), int(model_hw[1])
        synth = from_dict(SynthConfig, config, "synthetic.config")
        out = []
        for seed in spec.seeds:
            seq = synthetic_sequence(synth, int(seed), f"synth_{synth.trajectory}_{seed}", render_device)
            out.append((seq.name, select_frames(seq, protocol.frames, max_frames)))
        return out

    from data import load_sequence

    root = data_root if data_root is not None else protocol.dataset.root
    if root is None:
        raise _missing_data(
            protocol,
            f"no data root: pass --data-root DIR holding the {protocol.dataset.format} sequences "
            "(or set dataset.root in the protocol)",
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _missing_data(protocol, f"data root {root} does not exist (expected a folder holding "
                            f"{', '.join(s.path for s in protocol.sequences[:3])}, ...)")
    missing = [str(root / s.path) for s in protocol.sequences if not (root / s.path).exists()]
    if missing:
        shown = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
        raise _missing_data(
            protocol,
            f"{len(missing)} of {len(protocol.sequences)} sequence folders are missing under {root}: {shown}",
        )
    out = []
    for spec in protocol.sequences:
        options = {**protocol.dataset.options, **spec.options}
        seq = load_sequence(root / spec.path, format=protocol.dataset.format, **options)
        name = spec.name or spec.path
        seq.name = name
        out.append((name, select_frames(seq, protocol.frame_selection(spec), max_frames)))
    return out
