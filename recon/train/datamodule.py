"""LightningDataModule over clip datasets and weighted mixtures, configured from YAML.

Each split (train / val / test) is a list of sources mixed by weight. A source is either

- ``synthetic``: sequences of the built-in 4D generator (``data.synth``), rendered on the fly from
  their seeds (and kept in memory after the first render when ``cache`` is on), or
- ``disk``: sequences read with ``data.load_sequence`` in any supported layout (TUM RGB-D, ScanNet,
  7-Scenes, TartanAir, ...). ``root`` is one sequence or a folder of sequences (every direct
  sub-folder that one reader recognises and that has depth and poses is used).

Clips come from :class:`data.clips.ClipDataset` (clip-consistent crop / resize / colour
augmentation, K updated) and :class:`data.clips.DatasetMixture`; batches follow the clip-batch
schema of :func:`data.clips.collate_clips`. Conventions: OpenCV camera, cam2world in the dataset's
world, depth in metres (0 = invalid), K in pixels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule

from data import detect_format, load_sequence
from data.augment import ClipAugment
from data.clips import ClipDataset, DatasetMixture, make_loader
from data.schema import Frame, Sequence
from data.synth import SynthConfig, synthetic_sequence
from recon.errors import ConfigError, InputError, ReconError

SOURCE_KINDS = ("synthetic", "disk")


@dataclass
class SourceConfig:
    """One data source.

    Attributes:
        kind: ``synthetic`` or ``disk``.
        weight: sampling weight in the split's mixture.
        name: dataset name in batches and logs (default: ``synthetic`` / the reader's format).
        root: ``disk``: a sequence folder (or video), or a folder of sequence folders.
        format: ``disk``: reader format (detected when None).
        num_sequences: ``synthetic``: number of sequences (seeds ``seed .. seed + n - 1``).
        seed: ``synthetic``: first sequence seed. Keep train and val seed ranges apart.
        synth: ``synthetic``: :class:`data.synth.SynthConfig` fields (num_frames, trajectory,
            num_dynamic, ...); width/height default to the model's image size.
        cache: ``synthetic``: keep rendered frames in memory (each frame rendered once per process).
        stride: (min, max) temporal stride between clip frames.
    """

    kind: str = "synthetic"
    weight: float = 1.0
    name: str | None = None
    root: str | None = None
    format: str | None = None
    num_sequences: int = 16
    seed: int = 0
    synth: dict[str, Any] = field(default_factory=dict)
    cache: bool = True
    stride: tuple[int, int] = (1, 1)


@dataclass
class SplitConfig:
    """Clips of one split.

    Attributes:
        sources: the data sources, mixed by their weights.
        clip_length: frames per clip (T).
        sampling: ``random`` (new clips every epoch) or ``fixed`` (evenly spaced, for evaluation).
        epoch_length: clips per epoch (random sampling; default: total frames / clip_length).
        clips_per_sequence: clips per sequence (fixed sampling).
        augment: clip-consistent augmentation (None = centred crop, no colour change).
        batch_size: clips per batch (per process).
    """

    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    clip_length: int = 8
    sampling: str = "random"
    epoch_length: int | None = None
    clips_per_sequence: int = 1
    augment: ClipAugment | None = None
    batch_size: int = 2


class CachedFrames:
    """``load(i) -> Frame`` that keeps every frame it has produced (for re-used synthetic frames)."""

    def __init__(self, load) -> None:
        self.load, self.frames = load, {}

    def __call__(self, i: int) -> Frame:
        if i not in self.frames:
            self.frames[i] = self.load(i)
        return dataclasses.replace(self.frames[i])


def synthetic_sequences(src: SourceConfig, image_size: tuple[int, int]) -> list[Sequence]:
    """The sequences of a ``synthetic`` source (scenes built now, frames rendered on access)."""
    options = {"height": image_size[0], "width": image_size[1], **src.synth}
    try:
        cfg = SynthConfig(**options)
        cfg.validate()
    except (TypeError, ValueError) as e:
        valid = ", ".join(f.name for f in dataclasses.fields(SynthConfig))
        raise ConfigError(f"data source synth options {src.synth}: {e}; valid keys: {valid}") from e
    if src.num_sequences < 1:
        raise ConfigError(f"data source num_sequences: expected >= 1, got {src.num_sequences}")
    out = []
    for seed in range(src.seed, src.seed + src.num_sequences):
        seq = synthetic_sequence(cfg, seed)
        if src.cache:
            seq.load = CachedFrames(seq.load)
        out.append(seq)
    return out


def disk_sequences(src: SourceConfig) -> list[Sequence]:
    """The usable sequences under a ``disk`` source's root (depth and poses present).

    Raises:
        InputError: the root does not exist or holds no usable sequence (the message says why
            each candidate was rejected).
    """
    if not src.root:
        raise ConfigError(
            "data source of kind 'disk' needs a root (a sequence folder or a folder of them)"
        )
    root = Path(src.root).expanduser()
    if not root.exists():
        raise InputError(f"data root {root}: no such file or directory")
    try:
        detect_format(root) if src.format is None else None
        candidates = [root]
    except InputError:
        candidates = sorted(p for p in root.iterdir() if p.is_dir())
    sequences, rejected = [], []
    for path in candidates:
        try:
            seq = load_sequence(path, format=src.format)
            first = seq[0] if len(seq) else None
        except ReconError as e:
            rejected.append(f"{path.name}: {str(e).splitlines()[0]}")
            continue
        if first is None or first.depth is None or first.cam2world is None:
            missing = "frames" if first is None else "depth" if first.depth is None else "poses"
            rejected.append(f"{path.name}: no {missing} ({seq.format})")
            continue
        sequences.append(seq)
    if not sequences:
        why = "; ".join(rejected[:6]) or "it is empty"
        raise InputError(
            f"data root {root}: no usable sequences (training needs frames with depth and camera poses in a "
            f"format data.load_sequence reads); {why}"
        )
    return sequences


class ClipDataModule(LightningDataModule):
    """Train / val / test clip loaders from :class:`SplitConfig` recipes.

    Args:
        train: the training split.
        val: the validation split (None = no validation).
        test: the test split (None = the validation split).
        image_size: (H, W) model resolution (linked to ``model.net.image_size`` by ``recon train``).
        num_workers: DataLoader worker processes per loader.
        seed: base seed of clip sampling and augmentation.
    """

    def __init__(
        self,
        train: SplitConfig = SplitConfig(),
        val: SplitConfig | None = None,
        test: SplitConfig | None = None,
        image_size: tuple[int, int] = (96, 128),
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.splits = {"train": train, "val": val, "test": test or val}
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.num_workers, self.seed = num_workers, seed
        self.datasets: dict[str, Any] = {}
        for name, split in self.splits.items():
            if split is not None:
                self._check_split(name, split)

    @staticmethod
    def _check_split(name: str, split: SplitConfig) -> None:
        if not split.sources:
            raise ConfigError(f"data.{name}.sources: expected at least one source")
        for i, src in enumerate(split.sources):
            if src.kind not in SOURCE_KINDS:
                raise ConfigError(
                    f"data.{name}.sources[{i}].kind: expected one of {SOURCE_KINDS}, got {src.kind!r}"
                )
        if split.batch_size < 1:
            raise ConfigError(f"data.{name}.batch_size: expected >= 1, got {split.batch_size}")

    def build(self, name: str):
        """The dataset of split ``name`` (a ClipDataset, or a DatasetMixture of several sources)."""
        split = self.splits[name]
        parts = []
        for k, src in enumerate(split.sources):
            seqs = (
                synthetic_sequences(src, self.image_size)
                if src.kind == "synthetic"
                else disk_sequences(src)
            )
            parts.append(
                ClipDataset(
                    seqs,
                    split.clip_length,
                    self.image_size,
                    stride=tuple(src.stride),
                    sampling=split.sampling,
                    epoch_length=split.epoch_length,
                    clips_per_sequence=split.clips_per_sequence,
                    augment=split.augment,
                    seed=self.seed + 1000 * k,
                    name=src.name or seqs[0].format,
                )
            )
        if len(parts) == 1:
            return parts[0]
        length = split.epoch_length or sum(len(p) for p in parts)
        return DatasetMixture(parts, [s.weight for s in split.sources], length, seed=self.seed)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage or "fit", ()
        )
        for name in wanted:
            if name not in self.datasets and self.splits.get(name) is not None:
                self.datasets[name] = self.build(name)

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh random clips for ``epoch`` (called by the module at each training epoch)."""
        if "train" in self.datasets:
            self.datasets["train"].set_epoch(epoch)

    def _loader(self, name: str, train: bool):
        if self.splits.get(name) is None:
            raise ConfigError(f"data.{name}: this split is not configured in the recipe")
        if name not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[name])
        split = self.splits[name]
        return make_loader(
            self.datasets[name],
            split.batch_size,
            num_workers=self.num_workers,
            seed=self.seed,
            shuffle=False,
            drop_last=train,
        )

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("val", False) if self.splits["val"] is not None else []

    def test_dataloader(self):
        return self._loader("test", False)
