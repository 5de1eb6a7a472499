"""One-line errors instead of tracebacks, and the training / report items of issue 17.

`recon train --ckpt_path` (missing folder, missing file, random bytes, a pickle), out-of-range
optimizer values, the epoch counter of a resumed run, `recon export` into a file, `recon eval
--merge` with bad reports (and an existing report folder left untouched), a checkpoint whose
config asks for absurd sizes, and Ctrl-C while the libraries load.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from recon.checkpoint import CONFIG_NAME, load_model
from recon.errors import CheckpointError
from recon.eval.report import REPORT_FORMAT
from tests.recon.train.test_train import _recipe
from tests.reliability.conftest import assert_user_error, run_cli

REPO = Path(__file__).resolve().parents[2]


def _pickle_bomb(path: Path, marker: Path) -> Path:
    """A pickle that would create ``marker`` if it were ever unpickled."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=2))
    return path


# -- recon train ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return _recipe(tmp_path_factory.mktemp("train"), max_steps=2, val_check_interval=None,
                   limit_val_batches=0, check_val_every_n_epoch=10_000)


def test_ckpt_path_last_without_a_checkpoint_fails_naming_the_folder(recipe, tmp_path, capsys):
    root = tmp_path / "fresh_run"
    code, err = run_cli(["train", "fit", "--config", recipe, "--trainer.default_root_dir", root,
                         "--ckpt_path", "last"], capsys)
    assert_user_error(code, err, "train", "--ckpt_path last", root / "checkpoints")
    assert not (root / "checkpoints").exists()  # nothing trained from scratch


@pytest.mark.parametrize("case", ["missing", "random-bytes", "pickle"])
def test_bad_ckpt_path_is_one_line_and_never_unpickled(recipe, tmp_path, case, capsys):
    marker = tmp_path / "PWNED"
    path = tmp_path / f"{case}.ckpt"
    if case == "random-bytes":
        path.write_bytes(os.urandom(4096))
    elif case == "pickle":
        _pickle_bomb(path, marker)
    code, err = run_cli(["train", "fit", "--config", recipe, "--ckpt_path", path], capsys)
    expected = "no such file" if case == "missing" else "weights-only"
    assert_user_error(code, err, "train", path, expected)
    assert not marker.exists()


@pytest.mark.parametrize(
    "key, value, expected",
    [("lr", "-1", "a finite number > 0"), ("lr", "0", "a finite number > 0"),
     ("lr", "nan", "model.optim.lr"), ("weight_decay", "-0.5", "a finite number >= 0"),
     ("betas", "[0.9, 1.5]", "two numbers in [0, 1)"), ("min_lr_ratio", "2", "a number in [0, 1]"),
     ("schedule", "cosnie", "'cosine' or 'constant'"), ("grad_clip", "-1", "a finite number >= 0")],
)
def test_out_of_range_optimizer_values_exit_2_naming_the_key(recipe, key, value, expected, capsys):
    code, err = run_cli(["train", "fit", "--config", recipe, f"--model.optim.{key}={value}"], capsys)
    assert_user_error(code, err, "train", f"model.optim.{key}", expected)


def test_a_misspelt_key_is_one_line(recipe, capsys):
    code, err = run_cli(["train", "fit", "--config", recipe, "--trainer.max_stepz", "3"], capsys)
    assert_user_error(code, err, "train", "--trainer.max_stepz")


def test_resuming_from_the_end_of_fit_checkpoint_keeps_the_epoch_count(tmp_path, capsys):
    """2 batches per epoch, max_steps 5 ends in the middle of epoch 2: last.ckpt must say what the
    step checkpoint of step 5 says (epoch 2, in progress), and a resumed step 6 is still epoch 2."""
    recipe = _recipe(tmp_path, max_steps=5, val_check_interval=None, limit_val_batches=0,
                     check_val_every_n_epoch=10_000)
    data = yaml.safe_load(recipe.read_text())
    data["data"]["train"]["epoch_length"] = 4  # 4 clips / batch size 2 = 2 steps per epoch
    recipe.write_text(yaml.safe_dump(data))
    ckpts = tmp_path / "run" / "checkpoints"
    args = ["train", "fit", "--config", recipe, "--checkpoint.every_n_train_steps", "3"]
    assert run_cli(args, capsys)[0] == 0
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 5 and last["epoch"] == 2
    assert last["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 2  # epoch 2 not done
    step3 = torch.load(ckpts / "step0000003.ckpt", map_location="cpu", weights_only=True)
    assert step3["epoch"] == 1  # the step checkpoints count the same way

    assert run_cli([*args, "--trainer.max_steps", "6", "--ckpt_path", "last"], capsys)[0] == 0
    resumed = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 6 and resumed["epoch"] == 2


# -- recon export ---------------------------------------------------------------------------------


def test_export_into_an_existing_file_is_one_line_and_leaves_the_file(tmp_path, small_checkpoint, capsys):
    target = tmp_path / "model.bin"
    target.write_bytes(b"precious")
    code, err = run_cli(["export", small_checkpoint, target], capsys)
    assert_user_error(code, err, "export", target, "not a folder")
    assert target.read_bytes() == b"precious"


# -- a config that asks for absurd sizes ------------------------------------------------------------


@pytest.mark.parametrize("key, value", [("dim", 60000), ("depth", 60000)])
def test_absurd_config_is_refused_against_the_weight_header_before_building(
    tmp_path, small_checkpoint, key, value, capsys
):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(small_checkpoint, ckpt)
    config = yaml.safe_load((ckpt / CONFIG_NAME).read_text())
    config["model"][key] = value
    (ckpt / CONFIG_NAME).write_text(yaml.safe_dump(config))
    t0 = time.time()
    with pytest.raises(CheckpointError, match="does not fit this model config.*nothing was built"):
        load_model(ckpt)
    assert time.time() - t0 < 10.0
    code, err = run_cli(["export", ckpt, tmp_path / "out"], capsys)
    assert_user_error(code, err, "export", ckpt, "nothing was built")


# -- recon eval --merge ---------------------------------------------------------------------------


def minimal_report(name: str = "a") -> dict:
    """The smallest valid report.json a merge accepts (the fields the renderers read)."""
    return {
        "format": REPORT_FORMAT,
        "created_utc": "2026-01-01T00:00:00+00:00",
        "protocol": {"name": "p", "description": "", "pose": {"align": "sim3", "drift_align_frames": 4}},
        "settings": {"command": f"recon eval p --name {name}"},
        "models": [{
            "name": name,
            "checkpoint": f"ckpt/{name}",
            "model": {"memory_type": "none", "image_size": [96, 128], "num_parameters": 1000},
            "summary": [{"label": "full", "length": 8.0, "sequences": 1, "ate_rmse": 0.1,
                         "abs_rel_median": 0.2, "abs_rel_sequence": 0.25}],
            "drift": {"ate_per_100_frames": 0.01, "fps": 30.0, "latency_ms_median": 3.0},
            "sequences": [{
                "name": "s0", "num_frames": 8,
                "prefixes": [{"label": "full", "length": 8, "pose": {"align": "sim3", "ate_rmse": 0.1},
                              "depth": {"median": {"abs_rel": 0.2}}}],
                "curves": {"ate": [0.0, 0.1, None, 0.2], "abs_rel_fixed_scale": [0.2, 0.3]},
                "drift": {"ate_per_100_frames": 0.01}, "timing": {"fps": 30.0},
            }],
        }],
    }


def _write(path: Path, report: dict) -> Path:
    path.write_text(json.dumps(report))
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_minimal_reports_merge(tmp_path, capsys):
    a, b = _write(tmp_path / "a.json", minimal_report("a")), _write(tmp_path / "b.json", minimal_report("b"))
    code, err = run_cli(["eval", "--merge", a, b, "--out", tmp_path / "merged"], capsys)
    assert code == 0, err
    merged = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert [m["name"] for m in merged["models"]] == ["a", "b"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]  # no temp folder left


@pytest.mark.parametrize(
    "where, value",
    [("summary.0.ate_rmse", "abc"), ("summary.0.ate_rmse", [1]), ("drift.fps", {"x": 1}),
     ("sequences.0.curves.ate", "not a list"), ("sequences.0.prefixes.0.pose.ate_rmse", True),
     ("summary.0.length", None), ("name", 3)],
)
def test_merge_of_a_report_with_non_numbers_fails_and_leaves_the_report_folder(
    tmp_path, where, value, capsys
):
    good = _write(tmp_path / "good.json", minimal_report("good"))
    out = tmp_path / "out"
    assert run_cli(["eval", "--merge", good, "--out", out], capsys)[0] == 0
    before = _snapshot(out)
    report = minimal_report("bad")
    node = report["models"][0]
    *path, last = where.split(".")
    for key in path:
        node = node[int(key)] if key.isdigit() else node[key]
    node[last] = value
    bad = _write(tmp_path / "bad.json", report)
    code, err = run_cli(["eval", "--merge", good, bad, "--out", out], capsys)
    assert_user_error(code, err, "eval", bad, "expected")
    assert _snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_merge_nan_from_json_is_refused(tmp_path, capsys):
    text = json.dumps(minimal_report()).replace('"ate_rmse": 0.1', '"ate_rmse": NaN', 1)
    bad = tmp_path / "nan.json"
    bad.write_text(text)
    code, err = run_cli(["eval", "--merge", bad, "--out", tmp_path / "o"], capsys)
    assert_user_error(code, err, "eval", bad, "finite number")
    assert not (tmp_path / "o").exists()


def test_merge_or_eval_into_an_existing_file_is_one_line(tmp_path, capsys):
    report = _write(tmp_path / "r.json", minimal_report())
    target = tmp_path / "taken"
    target.write_text("mine")
    code, err = run_cli(["eval", "--merge", report, "--out", target], capsys)
    assert_user_error(code, err, "eval", target, "not a folder")
    code, err = run_cli(["eval", "synthetic_drift_quick", "--checkpoint", "x", "--out", target], capsys)
    assert_user_error(code, err, "eval", target, "not a folder")
    assert target.read_text() == "mine"


def test_a_report_that_fails_to_render_leaves_the_folder_untouched(tmp_path, monkeypatch, capsys):
    import recon.eval.report as report_mod

    out = tmp_path / "out"
    report = _write(tmp_path / "r.json", minimal_report())
    assert run_cli(["eval", "--merge", report, "--out", out], capsys)[0] == 0
    before = _snapshot(out)

    def broken(report, out_dir):
        (out_dir / "report.md").write_text("half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_mod, "markdown_report", lambda r: broken(r, next(tmp_path.glob(".out*"))))
    with pytest.raises(RuntimeError, match="disk full"):
        report_mod.write_report_dict(out, copy.deepcopy(json.loads(report.read_text())))
    assert _snapshot(out) == before and not list(tmp_path.glob(".out*"))


# -- Ctrl-C during start-up -------------------------------------------------------------------------


def test_ctrl_c_while_the_commands_load_prints_interrupted_and_exits_130(monkeypatch, capsys):
    from recon import cli

    def interrupted(name, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert cli.main(["run", "clip.mp4"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "recon run: interrupted"


def _default_sigint() -> None:
    # A child of a non-interactive shell may inherit SIGINT as ignored; a user's terminal does not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_in_the_first_second_of_a_console_run_is_clean(tmp_path, small_checkpoint, synthetic_folder):
    """0.3 s and 1 s in, `recon run` is still importing torch, open3d, ... (it needs seconds)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for delay in (0.3, 1.0):
        proc = subprocess.Popen(
            [sys.executable, "-m", "recon.cli", "run", str(synthetic_folder), "--checkpoint",
             str(small_checkpoint), "--out", str(tmp_path / f"o{delay}"), "--quiet"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_default_sigint)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, (delay, err)
        assert "Traceback" not in err and err.strip().splitlines()[-1] == "recon run: interrupted", err


def test_an_import_failing_because_of_ctrl_c_reads_as_interrupted(monkeypatch, capsys):
    """A Ctrl-C inside a native import (open3d) surfaces as ImportError raised from the interrupt."""
    import importlib

    from recon import cli

    def interrupted(name, *a, **k):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise ImportError("initialization failed") from e

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert cli.main(["run", "clip.mp4"]) == 130
    assert capsys.readouterr().err.strip() == "recon run: interrupted"
    monkeypatch.setattr(importlib, "import_module", lambda *a, **k: (_ for _ in ()).throw(ImportError("x")))
    with pytest.raises(ImportError):  # a plain import failure is not an interrupt
        cli.main(["run", "clip.mp4"])
