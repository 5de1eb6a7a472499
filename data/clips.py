"""Clips for training: a torch Dataset of fixed-length clips from sequences, weighted mixtures, collate.

A clip is T frames ``i0, i0 + s, ..., i0 + (T - 1) s`` of one sequence (stride s drawn per clip),
cropped/resized to the model resolution with K updated, optionally augmented clip-consistently
(data/augment.py). One item (before collate)::

    video [T, 3, H, W] float in [0, 1]     depth [T, H, W] metres (0 = invalid)
    K [T, 3, 3] pixels                     cam2world [T, 4, 4] (dataset world, OpenCV camera;
    mask [T, H, W] bool (dynamic pixels;      NaN when the dataset has no poses)
      all False when unknown)              frame_ids [T] long, dataset str, scene str

``collate_clips`` stacks items into the "clip batch" schema: the same keys with a leading B,
``dataset`` and ``scene`` as lists of strings.

Determinism: item ``idx`` of epoch ``e`` draws everything (sequence, stride, start, crop,
colour) from ``numpy.random.default_rng([seed, e, idx])``, so a run is reproducible with any
number of DataLoader workers. Call ``set_epoch(e)`` before each epoch for fresh clips (workers
must not be persistent for that: they copy the dataset when an epoch starts).
"""

from __future__ import annotations

import random
from collections.abc import Sequence as SequenceABC

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data.augment import ClipAugment, color_jitter_clip, random_crop_box
from data.fit import FrameFit
from data.schema import Frame, Sequence
from recon.errors import ConfigError, ShapeError

SAMPLING_MODES = ("random", "fixed")


class ClipDataset(Dataset):
    """Fixed-length clips from a list of sequences.

    Args:
        sequences: any ``data.schema.Sequence`` (dataset readers, the synthetic generator).
        clip_length: frames per clip, T >= 1.
        size: (H, W) model resolution of the output frames.
        stride: (min, max) temporal stride, drawn uniformly per clip (random sampling); fixed
            sampling uses ``min``. A sequence shorter than a stride allows is sampled with the
            largest stride that fits.
        sampling: "random" (clips drawn per index and epoch) or "fixed" (``clips_per_sequence``
            evenly spaced clips per sequence, the same every epoch; for validation).
        epoch_length: items per epoch in random mode (default: total frames / clip_length).
        clips_per_sequence: clips per sequence in fixed mode.
        augment: clip-consistent augmentation (random resized crop + colour), or None for a
            centred crop and no colour change.
        seed: base seed.
        name: dataset name reported in batches (default: the first sequence's format).

    Raises:
        ConfigError: invalid settings, or no sequence has ``clip_length`` frames.
    """

    def __init__(
        self,
        sequences: SequenceABC[Sequence],
        clip_length: int,
        size: tuple[int, int],
        stride: tuple[int, int] = (1, 1),
        sampling: str = "random",
        epoch_length: int | None = None,
        clips_per_sequence: int = 1,
        augment: ClipAugment | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        if clip_length < 1:
            raise ConfigError(f"clip_length: expected >= 1, got {clip_length}")
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"size: expected (H, W) with H, W >= 1, got {size}")
        if not 1 <= stride[0] <= stride[1]:
            raise ConfigError(f"stride: expected (min, max) with 1 <= min <= max, got {tuple(stride)}")
        if sampling not in SAMPLING_MODES:
            raise ConfigError(f"sampling: expected one of {SAMPLING_MODES}, got {sampling!r}")
        if clips_per_sequence < 1:
            raise ConfigError(f"clips_per_sequence: expected >= 1, got {clips_per_sequence}")
        if augment is not None:
            augment.validate()
        self.sequences = [s for s in sequences if len(s) >= clip_length]
        self.skipped = [s.name for s in sequences if len(s) < clip_length]
        if not self.sequences:
            raise ConfigError(
                f"clip_length {clip_length}: no sequence is long enough "
                f"({len(sequences)} given, lengths {[len(s) for s in sequences][:8]})"
            )
        self.clip_length, self.size = clip_length, (int(size[0]), int(size[1]))
        self.stride = (int(stride[0]), int(stride[1]))
        self.sampling, self.augment, self.seed = sampling, augment, int(seed)
        self.name = name or self.sequences[0].format
        self.epoch = 0
        lengths = np.array([len(s) for s in self.sequences], dtype=np.float64)
        self._seq_prob = lengths / lengths.sum()
        if epoch_length is not None and epoch_length < 1:
            raise ConfigError(f"epoch_length: expected >= 1, got {epoch_length}")
        self.epoch_length = int(epoch_length or max(1, int(lengths.sum()) // clip_length))
        self._fixed = [
            (k, start)
            for k, seq in enumerate(self.sequences)
            for start in self._even_starts(
                len(seq), self._fit_stride(len(seq), self.stride[0]), clips_per_sequence
            )
        ]

    def _fit_stride(self, n: int, stride: int) -> int:
        return max(1, min(stride, (n - 1) // max(1, self.clip_length - 1))) if self.clip_length > 1 else 1

    def _even_starts(self, n: int, stride: int, count: int) -> list[int]:
        last = n - 1 - (self.clip_length - 1) * stride
        return sorted({int(round(x)) for x in np.linspace(0, last, count)})

    def set_epoch(self, epoch: int) -> None:
        """Draw different clips in random mode (fixed mode is the same every epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.epoch_length if self.sampling == "random" else len(self._fixed)

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < len(self):
            raise IndexError(f"clip {idx} out of range ({len(self)} clips)")
        rng = np.random.default_rng([self.seed, self.epoch, int(idx)])
        if self.sampling == "fixed":
            k, start = self._fixed[idx]
            return self._make_clip(k, start, self._fit_stride(len(self.sequences[k]), self.stride[0]), rng)
        return self.sample(rng)

    def sample(self, rng: np.random.Generator) -> dict:
        """A random clip drawn with ``rng`` (sequence by length, stride, start, augmentation)."""
        k = int(rng.choice(len(self.sequences), p=self._seq_prob))
        n = len(self.sequences[k])
        stride = self._fit_stride(n, int(rng.integers(self.stride[0], self.stride[1] + 1)))
        start = int(rng.integers(0, n - (self.clip_length - 1) * stride))
        return self._make_clip(k, start, stride, rng)

    def _make_clip(self, k: int, start: int, stride: int, rng: np.random.Generator) -> dict:
        seq = self.sequences[k]
        ids = [start + j * stride for j in range(self.clip_length)]
        frames = [seq[i] for i in ids]
        video, depth, mask, K, cam2world = _stack_frames(frames, seq.name)
        src_hw = tuple(video.shape[-2:])
        if self.augment is not None:  # training: a random box; validation: the centred box inference uses
            fit = FrameFit(src_hw, tuple(self.size), random_crop_box(rng, src_hw, self.size, self.augment))
        else:
            fit = FrameFit.plan(src_hw, tuple(self.size), "crop")
        video, depth, mask, K = fit.clip(video, depth, mask, K)
        if self.augment is not None:
            video = color_jitter_clip(video, rng, self.augment)
        return {
            "video": video,
            "depth": depth,
            "K": K,
            "cam2world": cam2world,
            "mask": mask,
            "frame_ids": torch.tensor(ids, dtype=torch.long),
            "dataset": self.name,
            "scene": seq.name,
        }


def _stack_frames(frames: list[Frame], scene: str):
    """Frames -> video [T,3,H,W] float, depth [T,H,W], mask [T,H,W] bool, K [T,3,3], cam2world [T,4,4]."""
    shape = frames[0].image.shape
    for f in frames:
        if f.image.shape != shape or f.image.ndim != 3 or f.image.shape[2] != 3 or f.image.dtype != np.uint8:
            raise ShapeError(
                f"{scene} frame {f.index}: expected uint8 images of one shape [H, W, 3] in a clip, "
                f"got {f.image.dtype} {list(f.image.shape)} (first frame {list(shape)})"
            )
    H0, W0 = shape[:2]
    video = torch.from_numpy(np.stack([f.image for f in frames])).permute(0, 3, 1, 2).float() / 255.0
    depth = torch.from_numpy(
        np.stack([f.depth if f.depth is not None else np.zeros((H0, W0), np.float32) for f in frames])
    ).float()
    mask = torch.from_numpy(
        np.stack([f.mask if f.mask is not None else np.zeros((H0, W0), bool) for f in frames]).astype(bool)
    )
    K = torch.from_numpy(np.stack([np.asarray(f.K, dtype=np.float64) for f in frames])).float()
    cam2world = torch.from_numpy(
        np.stack([f.cam2world if f.cam2world is not None else np.full((4, 4), np.nan) for f in frames])
    ).float()
    if depth.shape[-2:] != (H0, W0) or mask.shape[-2:] != (H0, W0):
        raise ShapeError(
            f"{scene}: depth/mask {list(depth.shape[-2:])} differ from the image size {[H0, W0]}"
        )
    return video, depth, mask, K, cam2world


class DatasetMixture(Dataset):
    """Weighted mixture of clip datasets: item ``idx`` comes from dataset k with probability w_k.

    Args:
        datasets: the component datasets (usually one ClipDataset per source).
        weights: non-negative sampling weights (normalised here), one per dataset.
        epoch_length: items per epoch.
        seed: base seed (item idx of epoch e draws from ``default_rng([seed, e, idx])``).
    """

    def __init__(
        self,
        datasets: SequenceABC[ClipDataset],
        weights: SequenceABC[float],
        epoch_length: int,
        seed: int = 0,
    ) -> None:
        if len(datasets) == 0 or len(datasets) != len(weights):
            raise ConfigError(
                f"mixture: expected one weight per dataset, got {len(datasets)} and {len(weights)}"
            )
        w = np.asarray(weights, dtype=np.float64)
        if not (np.isfinite(w).all() and (w >= 0).all() and w.sum() > 0):
            raise ConfigError(
                f"mixture weights: expected non-negative with a positive sum, got {list(weights)}"
            )
        if epoch_length < 1:
            raise ConfigError(f"epoch_length: expected >= 1, got {epoch_length}")
        self.datasets, self.probs = list(datasets), w / w.sum()
        self.epoch_length, self.seed, self.epoch = int(epoch_length), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for d in self.datasets:
            d.set_epoch(epoch)

    def __len__(self) -> int:
        return self.epoch_length

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < len(self):
            raise IndexError(f"clip {idx} out of range ({len(self)} clips)")
        rng = np.random.default_rng([self.seed, self.epoch, int(idx)])
        k = int(rng.choice(len(self.datasets), p=self.probs))
        child = self.datasets[k]
        if child.sampling == "random":
            return child.sample(rng)
        return child[int(rng.integers(len(child)))]


def collate_clips(items: list[dict]) -> dict:
    """Stack clip items into a batch: tensors get a leading B, ``dataset``/``scene`` become lists."""
    if not items:
        raise ShapeError("collate_clips: expected at least one clip")
    batch = {
        key: torch.stack([it[key] for it in items]) for key in ("video", "depth", "K", "cam2world", "mask")
    }
    batch["frame_ids"] = torch.stack([it["frame_ids"] for it in items])
    batch["dataset"] = [it["dataset"] for it in items]
    batch["scene"] = [it["scene"] for it in items]
    return batch


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one torch thread per worker, and Python/NumPy/torch global
    RNGs seeded from the worker's torch seed (for any library code that uses them)."""
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global RNG is what third-party code uses


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    shuffle: bool = False,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over clips with ``collate_clips``, per-worker seeding and a seeded generator.

    Clips are already random per index, so ``shuffle`` only reorders them; batches are identical
    for any ``num_workers``.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_clips,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        drop_last=drop_last,
        pin_memory=pin_memory,
    )
