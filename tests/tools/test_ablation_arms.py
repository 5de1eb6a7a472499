"""configs/ablation/arms.yaml and tools/memory_ablation.sh: every arm parses and builds; a bad arm
fails at config time (exit 2, one line naming the valid options), in the arms tool and in
`recon train fit` itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from layers.registry import build_memory
from recon.errors import ConfigError
from tools.ablation_arms import load_arms, main, train_args

ROOT = Path(__file__).resolve().parents[2]
ARMS = ["none", "gla", "gla_head_decay", "gla_plain", "elastic_reduced", "elastic_fsm", "ttt_lact",
        "causal_attention"]


def test_the_arms_of_issue_15_are_listed_and_build():
    arms = load_arms()
    assert list(arms) == ARMS
    torch.manual_seed(0)
    x = torch.randn(1, 3, 4, 48)
    for name, arm in arms.items():
        layer = build_memory(arm["type"], 48, 3, arm["options"])
        if layer is not None:
            y, _ = layer(x)
            assert y.shape == x.shape and torch.isfinite(y).all(), name
    assert train_args(arms["none"]) == ["--model.net.memory.type", "none"]  # the running none_s0 job's
    assert arms["elastic_fsm"]["options"]["mode"] == "faithful"
    assert build_memory("gla", 48, 3, arms["gla_head_decay"]["options"]).decay == "head"
    assert build_memory("ttt", 48, 3, arms["ttt_lact"]["options"]).chunk_frames > 1


@pytest.mark.parametrize(
    "arm, message",
    [("{type: gla, options: {lam: 0.5}}", "unknown option of memory type 'gla'; valid options: head_dim"),
     ("{type: elastic, options: {mode: faithful, learn_beta: true}}", "for mode='reduced' only"),
     ("{type: lstm}", "unknown memory type 'lstm'")],
    ids=["option-of-another-type", "misfit", "unknown-type"],
)
def test_a_bad_arm_fails_with_one_line(tmp_path, capsys, arm, message):
    path = tmp_path / "arms.yaml"
    path.write_text(f"arms:\n  bad: {arm}\n")
    with pytest.raises(ConfigError, match=message):
        load_arms(path)
    assert main(["list", "--arms", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_memory_ablation_script_refuses_an_unknown_arm():
    run = subprocess.run(["tools/memory_ablation.sh", "train", "lstm"], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert run.returncode == 2
    assert "unknown arm 'lstm'; expected one of: none gla" in run.stderr
    assert not (ROOT / "runs" / "ablation2" / "lstm_s0").exists()


def test_memory_ablation_script_refuses_a_bad_frame_cap(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "MAX_FRAMES": "1k", "ROOT": str(tmp_path)}
    run = subprocess.run(["tools/memory_ablation.sh", "eval", "none"], cwd=ROOT, capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip() == "MAX_FRAMES must be a frame count, got '1k'"


@pytest.mark.parametrize(
    "options, message",
    [('{"delta_rule": false}', "model.memory.options.delta_rule: unknown option of memory type 'elastic'; "
                               "valid options: "),
     ('{"mode": "faithful", "form": "sequential"}', "model.memory.options.form: option 'form' is for "
                                                    "mode='reduced' only; mode='faithful' takes: "),
     ('{"mode": "faithful", "lam": -1}',
      "model.memory.options (elastic): ElasticMemory: lam must be in (0, 1]")],
    ids=["unknown-option", "misfit", "out-of-range"],
)
def test_recon_train_fit_refuses_bad_memory_options_at_config_time(tmp_path, options, message):
    cmd = [sys.executable, "-m", "recon.cli", "train", "fit",
           "--config", "configs/train/tiny_synthetic_cpu.yaml",
           "--trainer.default_root_dir", str(tmp_path / "run"), "--model.net.memory.type", "elastic",
           "--model.net.memory.options", options]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0], run.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_recon_train_fit_refuses_long_pose_offsets_inside_the_window(tmp_path):
    """The long-slot study's TRAIN_ARGS: an offset the window already covers fails at config time."""
    cmd = [sys.executable, "-m", "recon.cli", "train", "fit",
           "--config", "configs/train/tiny_synthetic_cpu.yaml",
           "--trainer.default_root_dir", str(tmp_path / "run"),
           "--model.net.head.long_pose_offsets", "[7,32]"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and ("model.head.long_pose_offsets [7, 32]: expected strictly increasing frame "
                                 "offsets in pose_slots + 1 = 8 .. 256") in errors[0], run.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()
