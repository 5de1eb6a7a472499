"""tools/window_pose_check.py: per-offset pair counts and ratios, the memory-horizon stream, bad input."""

from __future__ import annotations

import json

import pytest

from recon.checkpoint import save_weights
from recon.model import build_model
from tools import window_pose_check

NET = dict(name="test", image_size=(32, 48), patch_size=16, dim=48, depth=2, num_heads=2, window=3,
           head=dict(features=16, levels=[0, 1], camera_hidden=32, long_pose_offsets=[5]))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("wpc")
    return {memory: str(save_weights(build_model({**NET, "memory": dict(type=memory, depths=[1])}),
                                     root / memory)) for memory in ("none", "gla")}


def _check(checkpoint, out, *extra):
    assert window_pose_check.main(["--checkpoint", checkpoint, "--num-sequences", "2", "--num-frames", "8",
                                   "--out", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_per_offset_pairs_and_ratios_pool_the_sequences(checkpoints, tmp_path, capsys):
    report = _check(checkpoints["gla"], tmp_path / "a.json")
    # offsets 1, 2 (window 3) and the long slot 5; 8 frames: 8 - d pairs a sequence, 2 sequences
    assert {d: v["pairs"] for d, v in report["per_offset"].items()} == {"1": 14, "2": 12, "5": 6}
    rows = report["per_sequence"]
    for d, v in report["per_offset"].items():
        for part in ("rotation", "translation"):
            error = sum(r["per_offset"][d][part] for r in rows)
            none = sum(r["per_offset"][d][f"{part}_no_motion"] for r in rows)
            assert v[f"{part}_pooled_ratio"] == pytest.approx(error / none, rel=1e-12)
    # the per-pair sums give back each sequence's mean over all its pairs
    for r in rows:
        pairs = sum(v["pairs"] for v in r["per_offset"].values())
        assert r["rotation"] == pytest.approx(sum(v["rotation"] for v in r["per_offset"].values()) / pairs,
                                              rel=1e-5)
    assert "per slot offset (pooled ratios): 1: rot" in capsys.readouterr().out


def test_memory_horizon_changes_a_memory_model_only(checkpoints, tmp_path):
    for memory, changes in (("none", False), ("gla", True)):
        plain = _check(checkpoints[memory], tmp_path / f"{memory}.json")
        cut = _check(checkpoints[memory], tmp_path / f"{memory}_h1.json", "--memory-horizon", "1")
        assert cut["settings"]["memory_horizon"] == 1
        if changes:
            assert cut["per_offset"]["5"] != plain["per_offset"]["5"]
        else:   # the step loop equals the clip path to float tolerance
            for d, v in plain["per_offset"].items():
                assert cut["per_offset"][d]["rotation_pooled_ratio"] == pytest.approx(
                    v["rotation_pooled_ratio"], rel=1e-4)


def test_bad_horizon_and_checkpoint_exit_2(checkpoints, tmp_path, capsys):
    assert window_pose_check.main(["--checkpoint", checkpoints["none"], "--memory-horizon", "0"]) == 2
    assert "--memory-horizon: expected a frame count >= 1, got 0" in capsys.readouterr().err
    assert window_pose_check.main(["--checkpoint", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("window_pose_check: ")
