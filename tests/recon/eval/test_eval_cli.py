"""`recon eval` end to end: two untrained checkpoints on the quick synthetic protocol, every
built-in protocol loads, and user mistakes exit 2 with a one-line message naming the problem."""

import json

import cv2
import numpy as np
import pytest
import torch
import yaml
from evo.tools import file_interface

from data.synth import SynthConfig, synthetic_sequence, write_tum_sequence
from recon.checkpoint import save_weights
from recon.cli import main
from recon.eval.pose_metrics import pose_baselines
from recon.eval.protocols import builtin_protocols, load_protocol
from recon.model import build_model
from recon.model.config import load_model_config

MICRO = {"image_size": [32, 48], "dim": 48, "depth": 2, "num_heads": 2, "window": 2,
         "head": {"features": 16, "levels": [0, 1], "camera_hidden": 32, "pose_slots": 1}}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The micro models gain nothing from intra-op threads; on a busy 2-core machine they only spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two untrained micro models that differ in their memory: elastic TTT vs full causal attention."""
    root = tmp_path_factory.mktemp("eval_ckpt")
    out = {}
    for memory in ("elastic", "causal_attention"):
        torch.manual_seed(0)
        cfg = load_model_config("tiny", **MICRO, memory={"type": memory, "depths": [1]})
        out[memory] = save_weights(build_model(cfg), root / memory)
    return out


def test_eval_two_checkpoints_end_to_end(tmp_path, checkpoints, capsys):
    out = tmp_path / "report"
    args = ["eval", "synthetic_drift_quick", "--out", str(out), "--max-frames", "12", "--quiet"]
    for name, path in checkpoints.items():
        args += ["--checkpoint", str(path), "--name", name]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| elastic | 10 |" in printed and "| causal_attention | 10 |" in printed
    assert "| ATE RMSE | ATE static camera | ATE const. velocity | ATE / static | Sim(3) scale |" in printed

    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["elastic", "causal_attention"]
    assert report["models"][1]["model"]["memory_type"] == "causal_attention"
    assert "--max-frames 12" in report["settings"]["command"]
    for model in report["models"]:
        assert [s["name"] for s in model["sequences"]] == ["synth_loop_0", "synth_loop_1"]
        assert [r["label"] for r in model["summary"]] == ["10", "full"]  # 20 and 40 exceed 12 frames
        seq = model["sequences"][0]
        assert seq["num_frames"] == 12 and len(seq["curves"]["ate"]) == 12
        assert seq["prefixes"][-1]["pose"]["num_poses"] == 12
        assert seq["prefixes"][-1]["depth"]["median"]["num_pixels"] > 0
        assert "chamfer_l1" in seq["prefixes"][-1]["cloud"]
        # 12 frames: one memory-norm sample, after the last frame; finite, nothing non-finite
        assert seq["health"]["nonfinite_frames"] == 0 and len(seq["health"]["memory_norm"]) == 1
        assert 0 < seq["health"]["memory_norm"][0] < float("inf")
    md = (out / "report.md").read_text()
    assert md.count("| elastic | synth_loop_") == 4  # the per-sequence and the stream-health tables
    assert "## Stream health" in md
    for png in ("error_vs_length.png", "per_frame_error.png"):
        assert cv2.imread(str(out / png)) is not None

    # trajectories: evo reads them; the ground truth is the generator's own camera path
    protocol = load_protocol("synthetic_drift_quick")
    config = SynthConfig(**{**protocol.synthetic.config, "width": 48, "height": 32})
    expected = synthetic_sequence(config, 0).load.built.cam2world[:12]
    trajectories = out / "trajectories"
    gt = file_interface.read_tum_trajectory_file(str(trajectories / "groundtruth" / "synth_loop_0.txt"))
    np.testing.assert_allclose(gt.positions_xyz, expected[:, :3, 3], atol=1e-6)
    # the baselines of every prefix are those of the generator's camera path
    for model in report["models"]:
        for prefix in model["sequences"][0]["prefixes"]:
            L = prefix["length"]
            assert prefix["pose_baselines"] == pytest.approx(pose_baselines(expected[:L], "sim3"), rel=1e-6)
            assert prefix["pose"]["ate_vs_static"] == pytest.approx(
                prefix["pose"]["ate_rmse"] / prefix["pose_baselines"]["static_ate_rmse"], rel=1e-9)
    est = file_interface.read_tum_trajectory_file(str(trajectories / "elastic" / "synth_loop_0.txt"))
    assert est.num_poses == 12 and np.allclose(est.timestamps, np.arange(12) / config.fps)


def test_merge_of_separate_runs_equals_one_joint_run(tmp_path, checkpoints, capsys):
    """Each model evaluated alone, then --merge: the same per-model results as one joint evaluation."""
    base = ["synthetic_drift_quick", "--max-frames", "6", "--quiet"]
    joint, parts = tmp_path / "joint", []
    args = ["eval", *base, "--out", str(joint)]
    for name, path in checkpoints.items():
        args += ["--checkpoint", str(path), "--name", name]
        part = tmp_path / name
        assert main(["eval", *base, "--out", str(part), "--checkpoint", str(path), "--name", name]) == 0
        parts.append(str(part / "report.json"))
    assert main(args) == 0
    merged = tmp_path / "merged"
    capsys.readouterr()
    assert main(["eval", "--merge", *parts, "--out", str(merged)]) == 0
    assert "| causal_attention | full (6) |" in capsys.readouterr().out
    a, b = (json.loads((d / "report.json").read_text()) for d in (joint, merged))
    assert [m["name"] for m in b["models"]] == list(checkpoints)
    for ma, mb in zip(a["models"], b["models"], strict=True):
        assert ma["summary"] == mb["summary"]
        for sa, sb in zip(ma["sequences"], mb["sequences"], strict=True):
            assert sa["prefixes"] == sb["prefixes"] and sa["curves"] == sb["curves"]
    assert [m["report"] for m in b["settings"]["merged_from"]] == parts
    assert "Merged from the reports of:" in (merged / "report.md").read_text()

    # mistakes: a missing file, a file that is not a report, the same model twice
    (tmp_path / "bad.json").write_text("{\"format\": \"other\"}")
    for extra, message in (([str(tmp_path / "nope.json")], "nope.json not found"),
                           ([str(tmp_path / "bad.json")], "expected a streamrecon-eval-report/1"),
                           ([parts[0]], "appears in more than one report")):
        assert main(["eval", "--merge", parts[0], *extra, "--out", str(tmp_path / "m2")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


@pytest.mark.parametrize("name", builtin_protocols())
def test_builtin_protocols_load(name):
    p = load_protocol(name)
    assert p.name == name and p.description
    if p.dataset.format != "synthetic":
        assert p.sequences and "http" in p.dataset.download  # says where to get the data


def _run_error(args, capsys) -> str:
    assert main(["eval", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err  # one line, no traceback
    return err


def test_missing_data_root_names_path_and_download(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    err = _run_error(["tum_dynamics", "--checkpoint", "unused", "--data-root", str(missing), "--out",
                      str(tmp_path / "o")], capsys)
    assert f"data root {missing} does not exist" in err and "cvg.cit.tum.de" in err
    err = _run_error(["bonn", "--checkpoint", "unused", "--out", str(tmp_path / "o")], capsys)
    assert "pass --data-root" in err
    (tmp_path / "tum").mkdir()
    err = _run_error(["tum_dynamics", "--checkpoint", "x", "--data-root", str(tmp_path / "tum")], capsys)
    assert "8 of 8 sequence folders are missing" in err and "rgbd_dataset_freiburg3_sitting_static" in err
    assert not (tmp_path / "o").exists()  # nothing written


def test_protocol_file_with_unknown_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"synthetic": {"seeds": [0]}, "lenghts": [10]}))
    err = _run_error([str(bad), "--checkpoint", "x"], capsys)
    assert "unknown key 'lenghts'" in err and "lengths" in err
    err = _run_error(["no_such_protocol", "--checkpoint", "x"], capsys)
    assert "built-in: bonn" in err


def test_checkpoint_and_name_mistakes(tmp_path, capsys, checkpoints):
    ckpt = str(checkpoints["elastic"])
    err = _run_error(["synthetic_drift_quick", "--checkpoint", ckpt, "--name", "a", "--name", "b"], capsys)
    assert "--name: expected one per --checkpoint (1), got 2" in err
    err = _run_error(["synthetic_drift_quick", "--checkpoint", ckpt, "--checkpoint", ckpt], capsys)
    assert "labels must be distinct" in err
    err = _run_error(["synthetic_drift_quick", "--checkpoint", str(tmp_path / "missing")], capsys)
    assert "no such checkpoint" in err
    err = _run_error(["synthetic_drift_quick"], capsys)
    assert "--checkpoint: expected at least one" in err


def test_sequence_without_valid_depth(tmp_path, capsys, checkpoints):
    """A TUM-layout sequence whose depth PNGs are all zero: the message names the sequence."""
    root = tmp_path / "data"
    config = SynthConfig(num_frames=4, width=48, height=32, trajectory="walk", shadows=False)
    seq = synthetic_sequence(config, 1)
    write_tum_sequence(seq, root / "seqA", fps=30.0, video=False)
    for png in (root / "seqA" / "depth").glob("*.png"):
        cv2.imwrite(str(png), np.zeros((32, 48), np.uint16))
    protocol = tmp_path / "p.yaml"
    protocol.write_text(yaml.safe_dump({
        "name": "zero_depth", "dataset": {"format": "tum", "download": "none"},
        "sequences": [{"path": "seqA"}], "lengths": ["full"],
    }))
    err = _run_error([str(protocol), "--checkpoint", str(checkpoints["elastic"]), "--data-root", str(root),
                      "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert "sequence seqA: no valid ground-truth depth in any of its 4 frames" in err
    assert not (tmp_path / "o" / "report.json").exists()


def test_list_protocols(capsys):
    assert main(["eval", "--list"]) == 0
    out = capsys.readouterr().out
    for name in builtin_protocols():
        assert name in out


@pytest.mark.slow
def test_long_synthetic_drift_protocol(tmp_path, checkpoints):
    """600 frames of each 10,000-frame benchmark sequence: every length up to 500 plus the full prefix."""
    out = tmp_path / "long"
    args = ["eval", "synthetic_drift", "--checkpoint", str(checkpoints["elastic"]), "--out", str(out),
            "--max-frames", "600", "--quiet"]
    assert main(args) == 0
    model = json.loads((out / "report.json").read_text())["models"][0]
    assert [r["label"] for r in model["summary"]] == ["50", "80", "100", "200", "500", "full"]
    assert all(r["sequences"] == 3 and r["ate_rmse"] is not None for r in model["summary"])
    for seq in model["sequences"]:
        assert len(seq["curves"]["ate"]) == 600 and all(v is not None for v in seq["curves"]["ate"])
        assert seq["drift"]["ate_per_100_frames"] is not None
