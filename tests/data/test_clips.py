"""Clip dataset: batch schema, K under crop/resize by reprojection, clip-consistent colour,
determinism with workers and epochs, fixed sampling, mixture weights."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from data.augment import ClipAugment, color_jitter_clip, random_crop_box
from data.clips import ClipDataset, DatasetMixture, collate_clips, make_loader
from data.fit import FrameFit
from data.schema import Frame, Sequence
from data.synth import SynthConfig, synthetic_sequence
from recon.errors import ConfigError
from recon.geometry import transform_points, unproject_depth


@pytest.fixture(scope="module")
def synth_seqs():
    config = SynthConfig(num_frames=40, width=64, height=48, num_dynamic=1)
    return [synthetic_sequence(config, seed=s, name=f"synth_{s}") for s in (1, 2)]


def _constant_sequence(name: str, n: int, hw=(8, 8), fmt: str = "toy") -> Sequence:
    def load(i: int) -> Frame:
        return Frame(image=np.full((*hw, 3), i % 256, np.uint8), K=np.eye(3), timestamp=float(i))

    return Sequence(name=name, format=fmt, root="", num_frames=n, load=load)


def test_batches_follow_the_clip_schema(synth_seqs):
    ds = ClipDataset(synth_seqs, clip_length=4, size=(24, 32), stride=(1, 3), augment=ClipAugment(), seed=3)
    batch = next(iter(make_loader(ds, batch_size=2)))
    B, T, H, W = 2, 4, 24, 32
    assert batch["video"].shape == (B, T, 3, H, W) and batch["video"].dtype == torch.float32
    assert 0.0 <= batch["video"].min() and batch["video"].max() <= 1.0
    assert batch["depth"].shape == (B, T, H, W) and (batch["depth"] > 0).all()
    assert batch["K"].shape == (B, T, 3, 3) and batch["cam2world"].shape == (B, T, 4, 4)
    assert batch["mask"].shape == (B, T, H, W) and batch["mask"].dtype == torch.bool
    assert batch["frame_ids"].shape == (B, T) and batch["frame_ids"].dtype == torch.long
    steps = batch["frame_ids"].diff(dim=1)
    assert ((steps >= 1) & (steps <= 3)).all() and (steps == steps[:, :1]).all()
    assert batch["dataset"] == ["synthetic", "synthetic"] and set(batch["scene"]) <= {"synth_1", "synth_2"}
    for b in range(B):  # poses are the sequence's own, frame by frame
        seq = synth_seqs[int(batch["scene"][b][-1]) - 1]
        expected = torch.from_numpy(np.stack([seq.load.built.cam2world[i] for i in batch["frame_ids"][b]]))
        torch.testing.assert_close(batch["cam2world"][b], expected.float())


@pytest.mark.parametrize(
    "box,out_hw",
    [((5, 3, 40, 30), (24, 32)), ((0, 0, 64, 48), (96, 128)), ((10, 7, 33, 21), (20, 31))],
    ids=["crop-down", "upscale", "odd-aniso"],
)
def test_crop_resize_K_reprojects_points_where_the_pixels_went(box, out_hw):
    K = torch.tensor([[[60.0, 0.0, 31.2], [0.0, 58.0, 24.7], [0.0, 0.0, 1.0]]])
    _, _, _, K2 = FrameFit((48, 64), out_hw, box).clip(
        torch.zeros(1, 3, 48, 64),
        torch.zeros(1, 48, 64),
        torch.zeros(1, 48, 64, dtype=torch.bool),
        K,
    )
    pts = torch.rand(200, 3) * torch.tensor([4.0, 3.0, 3.0]) + torch.tensor([-2.0, -1.5, 1.0])
    uv = pts @ K[0].T
    uv = uv[:, :2] / uv[:, 2:]
    uv2 = pts @ K2[0].T
    uv2 = uv2[:, :2] / uv2[:, 2:]
    x0, y0, w, h = box
    H, W = out_hw
    # Pixel centres at integers: a source pixel (u, v) lands at ((u - x0 + 0.5) W / w - 0.5, ...).
    expected = torch.stack([(uv[:, 0] - x0 + 0.5) * W / w - 0.5, (uv[:, 1] - y0 + 0.5) * H / h - 0.5], -1)
    torch.testing.assert_close(uv2, expected, rtol=0, atol=1e-4)


def test_downscale_by_three_keeps_exact_depth_and_geometry(synth_seqs):
    frame = synth_seqs[0][7]
    video = torch.from_numpy(frame.image).permute(2, 0, 1)[None].float() / 255
    depth = torch.from_numpy(frame.depth)[None]
    K = torch.from_numpy(frame.K)[None].float()
    box = (2, 3, 60, 42)  # 3x downscale: output pixel centres fall exactly on source pixel centres
    mask = torch.zeros_like(depth, dtype=torch.bool)
    _, d2, _, K2 = FrameFit((48, 64), (14, 20), box).clip(video, depth, mask, K)
    v, u = torch.meshgrid(torch.arange(14), torch.arange(20), indexing="ij")
    torch.testing.assert_close(d2[0], depth[0, 3 + 3 * v + 1, 2 + 3 * u + 1], rtol=0, atol=0)
    T = torch.from_numpy(frame.cam2world).float()
    out_world = transform_points(T, unproject_depth(d2[0], K2[0]).reshape(-1, 3))
    src_world = transform_points(
        T, unproject_depth(depth[0], K[0])[3 + 3 * v + 1, 2 + 3 * u + 1].reshape(-1, 3)
    )
    torch.testing.assert_close(out_world, src_world, rtol=0, atol=2e-5)


def test_color_jitter_uses_one_set_of_factors_per_clip():
    frame = torch.rand(1, 3, 16, 16)
    clip = frame.repeat(5, 1, 1, 1)
    aug = ClipAugment(color_prob=1.0, brightness=0.2, contrast=0.3, saturation=0.3, hue=0.2)
    out = color_jitter_clip(clip, np.random.default_rng(0), aug)
    assert torch.equal(out, out[:1].expand_as(out))  # identical frames stay identical
    assert (out - clip).abs().max() > 0.02  # and something changed
    again = color_jitter_clip(clip, np.random.default_rng(0), aug)
    assert torch.equal(out, again)


def test_random_crop_box_stays_inside_and_respects_scale():
    aug = ClipAugment(crop_scale=(0.5, 0.9), crop_ratio=(1.0, 1.0))
    rng = np.random.default_rng(0)
    for _ in range(200):
        x0, y0, w, h = random_crop_box(rng, (48, 64), (24, 32), aug)
        assert 0 <= x0 and 0 <= y0 and x0 + w <= 64 and y0 + h <= 48
        assert 0.5 - 0.05 <= w * h / (64 * 48) <= 0.9 + 0.05


def test_deterministic_with_seed_any_worker_count_and_new_clips_per_epoch(synth_seqs):
    def make():
        return ClipDataset(
            synth_seqs, 3, (24, 32), stride=(1, 4), augment=ClipAugment(), seed=7, epoch_length=4
        )

    a, b = make(), make()
    for key in ("video", "depth", "K", "frame_ids"):
        assert torch.equal(a[2][key], b[2][key])
    serial = list(make_loader(a, batch_size=2, num_workers=0))
    parallel = list(make_loader(b, batch_size=2, num_workers=2))
    for x, y in zip(serial, parallel, strict=True):
        assert torch.equal(x["video"], y["video"]) and torch.equal(x["frame_ids"], y["frame_ids"])
    first = a[1]["video"]
    a.set_epoch(1)
    assert not torch.equal(first, a[1]["video"])


def test_fixed_sampling_is_evenly_spaced_and_epoch_independent():
    seqs = [_constant_sequence("a", 50), _constant_sequence("b", 20)]
    ds = ClipDataset(seqs, clip_length=5, size=(8, 8), stride=(2, 2), sampling="fixed", clips_per_sequence=3)
    starts = [(item["scene"], item["frame_ids"].tolist()) for item in (ds[i] for i in range(len(ds)))]
    # a: last start 50 - 1 - 4*2 = 41 -> 0, 20 (20.5 rounds to even), 41; b: last start 11 -> 0, 6 (5.5), 11.
    assert [(s, ids[0]) for s, ids in starts] == [
        ("a", 0),
        ("a", 20),
        ("a", 41),
        ("b", 0),
        ("b", 6),
        ("b", 11),
    ]
    assert all(np.diff(ids).tolist() == [2] * 4 for _, ids in starts)
    ds.set_epoch(5)
    assert [ds[i]["frame_ids"].tolist() for i in range(len(ds))] == [ids for _, ids in starts]


def test_mixture_weights_are_respected():
    parts = [
        ClipDataset([_constant_sequence(n, 30, fmt=n)], clip_length=2, size=(4, 4), name=n)
        for n in ("big", "mid", "small", "never")
    ]
    weights = [6.0, 3.0, 1.0, 0.0]
    mix = DatasetMixture(parts, weights, epoch_length=2000, seed=1)
    names = [mix[i]["dataset"] for i in range(len(mix))]
    counts = np.array([names.count(n) for n in ("big", "mid", "small")])
    assert names.count("never") == 0
    expected = len(mix) * np.array(weights[:3]) / sum(weights)
    assert scipy.stats.chisquare(counts, expected).pvalue > 1e-3, counts
    mix.set_epoch(1)
    assert [mix[i]["dataset"] for i in range(50)] != names[:50]


def test_collate_stacks_and_lists():
    ds = ClipDataset([_constant_sequence("a", 10)], clip_length=2, size=(4, 4))
    batch = collate_clips([ds[0], ds[1], ds[2]])
    assert batch["video"].shape == (3, 2, 3, 4, 4) and batch["scene"] == ["a", "a", "a"]
    assert torch.isnan(batch["cam2world"]).all()  # no poses in this sequence: NaN, never identity


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"clip_length": 100}, "long enough"),
        ({"stride": (3, 1)}, "stride"),
        ({"sampling": "shuffled"}, "sampling"),
        ({"augment": ClipAugment(crop_scale=(0.0, 1.0))}, "crop_scale"),
    ],
    ids=["too-long", "stride-order", "bad-mode", "bad-crop"],
)
def test_bad_settings_raise_config_error(kwargs, match):
    settings = {"clip_length": 4, "size": (4, 4)} | kwargs
    with pytest.raises(ConfigError, match=match):
        ClipDataset([_constant_sequence("a", 10)], **settings)


def test_bad_mixture_weights_raise_config_error():
    part = ClipDataset([_constant_sequence("a", 10)], clip_length=2, size=(4, 4))
    with pytest.raises(ConfigError, match="weights"):
        DatasetMixture([part, part], [1.0, -1.0], epoch_length=10)


def test_synthetic_mixture_preset_builds_and_yields_a_clip():
    from pathlib import Path

    from jsonargparse import ArgumentParser

    from recon.train.datamodule import ClipDataModule

    parser = ArgumentParser()
    parser.add_class_arguments(ClipDataModule, "data")
    preset = Path(__file__).parents[2] / "configs" / "data" / "synthetic.yaml"
    dm = parser.instantiate(parser.parse_args(["--data", str(preset)])).data
    train = dm.splits["train"]
    assert [s.name for s in train.sources] == ["synth_static", "synth_dynamic", "synth_loops"]
    item = DatasetMixture(
        [
            ClipDataset(
                [synthetic_sequence(SynthConfig(**s.synth, width=32, height=24), s.seed)],
                4,
                (24, 32),
                stride=s.stride,
                augment=train.augment,
                name=s.name,
            )
            for s in train.sources
        ],
        [s.weight for s in train.sources],
        epoch_length=4,
        seed=dm.seed,
    )[0]
    assert item["video"].shape == (4, 3, 24, 32) and item["dataset"] in {s.name for s in train.sources}
