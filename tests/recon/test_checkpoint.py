"""Checkpoint IO: safetensors + config round trip, weights-only Lightning .ckpt, clear mismatch errors."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from recon.checkpoint import (
    CONFIG_NAME,
    DEFAULT_CHECKPOINT,
    WEIGHTS_NAME,
    load_model,
    read_lightning_checkpoint,
    save_weights,
)
from recon.cli import main as recon_main
from recon.errors import CheckpointError
from recon.model import build_model, load_model_config
from recon.model.config import ARCHITECTURE_VERSION

SMALL = {"name": "test", "image_size": [32, 48], "dim": 48, "depth": 2, "num_heads": 2, "window": 2,
         "memory": {"type": "elastic", "depths": [1]},
         "head": {"features": 16, "levels": [0, 1], "camera_hidden": 32}}


def _small(**over):
    cfg = {**SMALL, **over}
    return build_model(cfg)


def _assert_same_function(a, b):
    video = torch.rand(1, 3, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_a, out_b = a.eval()(video), b.eval()(video)
    for key in ("depth", "depth_conf", "cam2world", "world_points"):
        torch.testing.assert_close(out_a[key], out_b[key], rtol=0, atol=0, msg=key)


def test_export_round_trip_gives_the_same_network(tmp_path):
    model = _small()
    save_weights(model, tmp_path / "exp", {"step": 7})
    assert (tmp_path / "exp" / WEIGHTS_NAME).is_file()
    cfg = yaml.safe_load((tmp_path / "exp" / CONFIG_NAME).read_text())
    assert cfg["model"]["dim"] == 48 and cfg["meta"] == {"step": 7}
    # The file holds every tensor of the state dict, bit for bit (read back with safetensors itself).
    stored = load_file(str(tmp_path / "exp" / WEIGHTS_NAME))
    assert set(stored) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(stored[key], value), key
    loaded = load_model(tmp_path / "exp")
    _assert_same_function(model, loaded)
    # Also through the .safetensors path.
    _assert_same_function(model, load_model(tmp_path / "exp" / WEIGHTS_NAME))


def test_exported_files_are_readable_by_others_like_any_written_file(tmp_path):
    """safetensors writes its files 0600; an export (often shared, or committed) gets 0666 - umask."""
    import os
    import stat

    old = os.umask(0o027)
    try:
        save_weights(_small(), tmp_path / "exp")
    finally:
        os.umask(old)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        assert stat.S_IMODE((tmp_path / "exp" / name).stat().st_mode) == 0o640, name


def _fake_lightning_ckpt(path, model, step=11):
    ckpt = {"state_dict": {f"net.{k}": v for k, v in model.state_dict().items()}, "global_step": step,
            "epoch": 0, "hyper_parameters": {"net": model.cfg.to_dict()}}
    torch.save(ckpt, path)


def test_lightning_ckpt_loads_weights_only_and_exports(tmp_path):
    model = _small()
    _fake_lightning_ckpt(tmp_path / "run.ckpt", model)
    cfg, state, facts = read_lightning_checkpoint(tmp_path / "run.ckpt")
    assert facts["global_step"] == 11 and cfg["dim"] == 48 and set(state) == set(model.state_dict())
    _assert_same_function(model, load_model(tmp_path / "run.ckpt"))
    assert recon_main(["export", str(tmp_path / "run.ckpt"), str(tmp_path / "out")]) == 0
    meta = yaml.safe_load((tmp_path / "out" / CONFIG_NAME).read_text())["meta"]
    assert meta["global_step"] == 11
    _assert_same_function(model, load_model(tmp_path / "out"))


def test_pickled_code_in_ckpt_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {}, "hyper_parameters": {"net": Evil()}}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="weights-only"):
        read_lightning_checkpoint(tmp_path / "evil.ckpt")


def test_other_architecture_lists_missing_unexpected_and_mismatched_keys(tmp_path):
    save_weights(_small(), tmp_path / "elastic")
    with pytest.raises(CheckpointError) as err:
        other = {**SMALL, "dim": 64, "memory": {"type": "ttt", "depths": [0]}}
        load_model(tmp_path / "elastic", model_config=other)
    msg = str(err.value)
    assert "shape mismatches" in msg and "(checkpoint [" in msg
    assert "missing keys" in msg and "unexpected keys" in msg
    assert str(tmp_path / "elastic") in msg


@pytest.mark.parametrize("case", ["missing-dir", "empty-dir", "not-safetensors", "wrong-suffix"])
def test_bad_checkpoint_paths_raise_checkpoint_error(tmp_path, case):
    if case == "missing-dir":
        path = tmp_path / "nope"
    elif case == "empty-dir":
        path = tmp_path / "empty"
        path.mkdir()
    elif case == "not-safetensors":
        path = tmp_path / "bad"
        path.mkdir()
        (path / WEIGHTS_NAME).write_bytes(b"garbage")
        (path / CONFIG_NAME).write_text(yaml.safe_dump({"model": SMALL}))
    else:
        path = tmp_path / "weights.bin"
        path.write_bytes(b"x")
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_model(path)


def test_export_cli_reports_error_without_traceback(tmp_path, capsys):
    assert recon_main(["export", str(tmp_path / "missing.ckpt"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "missing.ckpt" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_checkpoint_of_the_old_architecture_is_refused_by_name(tmp_path):
    """A config written before architecture versions were recorded (version 1: one camera token)."""
    path = save_weights(_small(), tmp_path / "old")
    config = yaml.safe_load((path / CONFIG_NAME).read_text())
    del config["model"]["architecture"]
    (path / CONFIG_NAME).write_text(yaml.safe_dump(config))
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    msg = str(err.value)
    assert "architecture 1" in msg and "single camera token" in msg
    assert f"architecture {ARCHITECTURE_VERSION}" in msg
    assert str(path) in msg


def test_model_config_with_another_window_is_refused_by_name(tmp_path):
    path = save_weights(_small(), tmp_path / "w2")
    with pytest.raises(CheckpointError, match="trained with window 2, the requested model config has 3"):
        load_model(path, model_config={**SMALL, "window": 3})


def test_model_config_with_another_pose_slot_count_is_refused_by_name(tmp_path):
    base = {**SMALL, "window": 4}
    path = save_weights(build_model(base), tmp_path / "s3")
    match = "trained with head.pose_slots 3, the requested model config has 2"
    with pytest.raises(CheckpointError, match=match):
        load_model(path, model_config={**base, "head": {**SMALL["head"], "pose_slots": 2}})


def test_shipped_checkpoint_config_builds_the_network_of_its_weights():
    """The shipped config.yaml loads as written, keeps its recorded signature and builds the
    parameter names and shapes stored in its safetensors file."""
    written = yaml.safe_load((DEFAULT_CHECKPOINT / CONFIG_NAME).read_text())
    cfg = load_model_config(written["model"])
    assert cfg.signature() == written["signature"]
    assert cfg.to_dict() == written["model"]
    with torch.device("meta"):
        model = build_model(cfg)
    with safe_open(str(DEFAULT_CHECKPOINT / WEIGHTS_NAME), "pt") as f:
        stored = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == stored
    assert load_model(DEFAULT_CHECKPOINT).signature == written["signature"]


def test_init_from_checkpoint_keeps_new_parts_and_refuses_what_does_not_fit(tmp_path):
    """Fine-tuning start: tensors the checkpoint lacks keep their init (returned by name); a
    checkpoint of a wider model, or with tensors this model lacks, names them and loads nothing."""
    from recon.checkpoint import init_from_checkpoint, save_weights
    from recon.errors import CheckpointError
    from recon.model import build_model

    small = dict(name="test", image_size=(32, 48), patch_size=16, dim=48, depth=2, num_heads=2, window=2,
                 memory=dict(type="none", depths=[]), head=dict(features=16, levels=[0], camera_hidden=32))
    with_memory = dict(small, memory=dict(type="gla", depths=[1]))
    save_weights(build_model(small), tmp_path / "plain")
    save_weights(build_model(with_memory), tmp_path / "memory")
    save_weights(build_model(dict(small, dim=64)), tmp_path / "wide")
    torch.manual_seed(1)
    net = build_model(with_memory)
    kept = init_from_checkpoint(net, tmp_path / "plain")       # the memory block is new here
    assert kept and all(k.startswith("aggregator.memory_blocks.") for k in kept)
    plain = load_file(str(tmp_path / "plain" / "model.safetensors"))
    assert all(torch.equal(net.state_dict()[k], v) for k, v in plain.items())
    net = build_model(small)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"shape mismatches: aggregator.embed.metric_token "
                       r"\(checkpoint \[1, 64\], model \(fine-tuning start\) \[1, 48\]\)"):
        init_from_checkpoint(net, tmp_path / "wide")
    with pytest.raises(CheckpointError, match=r"unexpected keys: aggregator.memory_blocks"):
        init_from_checkpoint(net, tmp_path / "memory")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
