"""Training: LightningCLI recipes end to end, resume after a kill, truncated backprop, NaN guard, DDP."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from recon.checkpoint import load_model
from recon.cli import main as recon_main
from recon.model import build_model
from recon.train.callbacks import TrainingDivergedError
from recon.train.module import OptimConfig, ReconModule, lr_factor
from recon.train.tbptt import TBPTTConfig, run_segments, segment_bounds

REPO = Path(__file__).resolve().parents[3]
NET = {
    "name": "test",
    "image_size": [32, 48],
    "dim": 48,
    "depth": 2,
    "num_heads": 2,
    "window": 2,
    "memory": {"type": "elastic", "depths": [1]},
    "head": {"features": 16, "levels": [0, 1], "camera_hidden": 32},
}


def _recipe(tmp_path: Path, **trainer) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 4,
            "val_check_interval": 2,
            "check_val_every_n_epoch": None,
            "limit_val_batches": 1,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 1,
            "default_root_dir": str(tmp_path / "run"),
            "enable_progress_bar": False,
            **trainer,
        },
        "checkpoint": {"every_n_train_steps": 2},
        "model": {"net": NET, "optim": {"warmup_steps": 2}},
        "data": {
            "train": {
                "clip_length": 4,
                "batch_size": 2,
                "epoch_length": 8,
                "sources": [
                    {"kind": "synthetic", "num_sequences": 2, "seed": 0, "synth": {"num_frames": 12}}
                ],
            },
            "val": {
                "clip_length": 4,
                "batch_size": 1,
                "sampling": "fixed",
                "sources": [
                    {"kind": "synthetic", "num_sequences": 1, "seed": 100, "synth": {"num_frames": 8}}
                ],
            },
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _metrics(run: Path) -> list[dict]:
    import csv

    files = sorted(run.glob("logs/version_*/metrics.csv"))
    assert files, f"no metrics.csv under {run}"
    with open(files[-1]) as f:
        return list(csv.DictReader(f))


def test_fit_logs_metrics_images_checkpoints_and_exports(tmp_path):
    recipe = _recipe(tmp_path, max_steps=3)
    assert recon_main(["train", "fit", "--config", str(recipe)]) == 0
    run = tmp_path / "run"
    rows = _metrics(run)
    logged = {k for r in rows for k, v in r.items() if v not in ("", None)}
    for key in ("train/loss", "val/abs_rel", "val/delta1", "val/ate", "train/camera_rotation"):
        assert key in logged, key
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert [p.name for p in run.glob("logs/version_0/predictions/*.png")] == ["step_0000002.png"]
    # max_steps=3 is not a multiple of the checkpoint period (2): the final state is saved anyway.
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    # validate from the checkpoint, then export and reload the network.
    assert (
        recon_main(
            [
                "train",
                "validate",
                "--config",
                str(recipe),
                "--ckpt_path",
                str(run / "checkpoints" / "last.ckpt"),
            ]
        )
        == 0
    )
    assert recon_main(["export", str(run / "checkpoints" / "last.ckpt"), str(tmp_path / "export")]) == 0
    net = load_model(tmp_path / "export")
    state = {k[4:]: v for k, v in ckpt["state_dict"].items()}
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key


def _adam_steps(ckpt: dict) -> set[float]:
    return {float(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()}


def test_killed_run_resumes_with_same_step_and_optimizer_state(tmp_path):
    recipe = _recipe(
        tmp_path,
        max_steps=10_000,
        val_check_interval=None,
        limit_val_batches=0,
        check_val_every_n_epoch=10_000,
    )
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "recon.cli", "train", "fit", "--config", str(recipe)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if last.exists():
                time.sleep(0.5)  # let the step after it start, then kill mid-run
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert last.exists(), proc.stderr.read().decode()[-2000:]
    killed = torch.load(last, map_location="cpu", weights_only=True)
    step = killed["global_step"]
    assert step >= 2 and _adam_steps(killed) == {float(step)}

    target = step + 2
    from recon.train.cli import run_cli

    assert (
        run_cli(
            ["fit", "--config", str(recipe), "--trainer.max_steps", str(target), "--ckpt_path", "last"]
        )
        == 0
    )
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == target
    # Adam's per-parameter step counter continues from the killed run's: its state was restored.
    assert _adam_steps(resumed) == {float(target)}
    assert resumed["lr_schedulers"][0]["last_epoch"] == target


def test_each_memory_type_trains_with_one_key_change(tmp_path):
    """One optimizer step per memory type through the same module and loss."""
    from recon.train.datamodule import ClipDataModule, SourceConfig, SplitConfig

    dm = ClipDataModule(
        SplitConfig(
            [SourceConfig(num_sequences=1, synth={"num_frames": 6})],
            clip_length=3,
            batch_size=1,
            epoch_length=1,
        ),
        image_size=(32, 48),
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    from layers.registry import MEMORY_TYPES, memory_class

    for memory_type in MEMORY_TYPES:
        try:
            memory_class(memory_type)
        except ValueError:
            continue  # a layer type whose module is not in this checkout cannot be trained
        module = ReconModule({**NET, "memory": {"type": memory_type, "depths": [1]}})
        opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
        terms, _ = module.model_step(batch, backward=lambda loss: loss.backward())
        assert math.isfinite(float(terms["loss"])), memory_type
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), memory_type
        opt.step()


def _clip(T=6, B=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "video": torch.rand(B, T, 3, 32, 48, generator=g),
        "K": torch.eye(3).expand(B, T, 3, 3),
        "cam2world": torch.eye(4).expand(B, T, 4, 4).clone(),
    }


@pytest.mark.parametrize("segment_length", [1, 2, 4], ids=lambda s: f"seg{s}")
def test_segments_carrying_state_compute_the_same_outputs_as_the_whole_clip(segment_length):
    net = build_model(NET).eval()
    batch = _clip()
    with torch.no_grad():
        full = net(batch["video"])
        _, seg = run_segments(
            net,
            batch,
            TBPTTConfig(segment_length, 1),
            lambda out, s, f: {"loss": out["depth"].mean()},
            keep_outputs=True,
        )
    for key in ("depth", "depth_conf", "cam2world", "world_points"):
        torch.testing.assert_close(seg[key], full[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("segment_length", [0, 3], ids=["one-segment", "seg3"])
def test_dense_every_k_runs_the_dense_head_on_clip_frames_0_k_2k(segment_length):
    """Dense outputs of every 2nd clip frame equal the full run's; poses equal on every frame; the
    loss sees those frames' ground truth (a loss on the full outputs sliced the same way)."""
    net = build_model(NET).eval()
    batch = _clip(T=7)
    batch["depth"] = torch.rand(1, 7, 32, 48, generator=torch.Generator().manual_seed(3)) + 1.0
    with torch.no_grad():
        full = net(batch["video"])
        seen = []

        def loss_fn(out, seg, first):
            start = int(seg["frame_ids"][0, 0])
            seen.append((start, out["dense_frames"].tolist()))
            idx = start + out["dense_frames"]
            torch.testing.assert_close(out["depth"], full["depth"][:, idx], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(out["world_points"], full["world_points"][:, idx], rtol=1e-4,
                                       atol=1e-4)
            stop = start + seg["video"].shape[1]
            torch.testing.assert_close(out["cam2world"], full["cam2world"][:, start:stop], rtol=1e-4,
                                       atol=1e-5)
            torch.testing.assert_close(seg["depth"][:, out["dense_frames"]], batch["depth"][:, idx])
            return {"loss": out["depth"].mean()}

        batch["frame_ids"] = torch.arange(7)[None]
        run_segments(net, batch, TBPTTConfig(segment_length, 1), loss_fn, dense_every=2)
    frames = sorted(start + i for start, idx in seen for i in idx)
    assert frames == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="dense_every"):
        run_segments(net, batch, TBPTTConfig(0, 1), loss_fn, dense_every=2, keep_outputs=True)


def test_loss_on_dense_subset_equals_loss_on_the_sliced_clip():
    from recon.train.losses import LossConfig, reconstruction_loss

    g = torch.Generator().manual_seed(5)
    T, idx = 6, torch.tensor([0, 2, 4])
    K = torch.tensor([[40.0, 0, 23.5], [0, 40.0, 15.5], [0, 0, 1]]).expand(1, T, 3, 3)
    poses = torch.eye(4).repeat(1, T, 1, 1)
    poses[0, :, 0, 3] = torch.arange(T) * 0.1
    batch = {"depth": torch.rand(1, T, 32, 48, generator=g) + 1, "K": K, "cam2world": poses,
             "dataset": ["synthetic"]}
    pred_full = {"depth": torch.rand(1, T, 32, 48, generator=g) + 1,
                 "depth_conf": 1 + torch.rand(1, T, 32, 48),
                 "world_points": torch.randn(1, T, 32, 48, 3, generator=g), "cam2world": poses,
                 "window_cam2world": torch.eye(4).expand(1, T, 1, 4, 4), "pose_enc": torch.zeros(1, T, 9)}
    sub = {**pred_full, **{k: pred_full[k][:, idx] for k in ("depth", "depth_conf", "world_points")},
           "dense_frames": idx}
    sliced_batch = {**batch, "depth": batch["depth"][:, idx], "K": K[:, idx], "cam2world": poses[:, idx]}
    sliced_pred = {**pred_full, **{k: pred_full[k][:, idx] for k in pred_full}}
    cfg = LossConfig(metric_scale=1.0)
    got = reconstruction_loss(sub, batch, cfg)
    ref = reconstruction_loss(sliced_pred, sliced_batch, cfg)
    for key in ("depth", "points", "gradient", "metric_scale", "scale_ratio"):
        torch.testing.assert_close(got[key], ref[key], msg=key)


def _grads(net):
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def _frame_loss(out, seg, first):
    return {"loss": (out["depth"].log() ** 2).mean() + out["cam2world"][..., :3, 3].square().mean()}


def test_tbptt_with_all_segments_in_one_group_equals_full_backprop():
    net = build_model(NET)
    batch = _clip(T=6)
    net.zero_grad()
    out = net(batch["video"])
    # Frame-weighted mean of per-segment losses == the loss of the whole clip for per-frame means.
    _frame_loss(out, batch, None)["loss"].backward()
    reference = _grads(net)
    net.zero_grad()
    run_segments(net, batch, TBPTTConfig(2, 3), _frame_loss, backward=lambda loss: loss.backward())
    for name, g in _grads(net).items():
        torch.testing.assert_close(g, reference[name], rtol=1e-4, atol=1e-6, msg=name)


def test_tbptt_truncation_stops_gradients_at_group_boundaries():
    """K=1, segments of 2: reference = each segment run from a detached state, backpropagated alone."""
    from recon.model import detach_state

    net = build_model(NET)
    batch = _clip(T=6)
    net.zero_grad()
    state = net.init_state(1)
    for start, stop in segment_bounds(6, 2):
        out, state = net.run(batch["video"][:, start:stop], state)
        ((stop - start) / 6 * _frame_loss(out, None, None)["loss"]).backward()
        state = detach_state(state)
    reference = _grads(net)
    net.zero_grad()
    run_segments(net, batch, TBPTTConfig(2, 1), _frame_loss, backward=lambda loss: loss.backward())
    got = _grads(net)
    assert got.keys() == reference.keys()
    for name, g in got.items():
        torch.testing.assert_close(g, reference[name], rtol=1e-4, atol=1e-6, msg=name)
    # and it differs from full backprop (the truncation is real)
    net.zero_grad()
    run_segments(net, batch, TBPTTConfig(2, 3), _frame_loss, backward=lambda loss: loss.backward())
    full = _grads(net)
    assert any(not torch.allclose(full[n], reference[n], rtol=1e-3, atol=1e-6) for n in full)


def test_lr_schedule_warmup_then_cosine_hand_values():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_factor(s, 14, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 14, cfg) == pytest.approx(1.0)
    assert lr_factor(9, 14, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert lr_factor(14, 14, cfg) == pytest.approx(0.1)


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    import recon.train.module as module_mod

    real = module_mod.reconstruction_loss
    calls = {"n": 0}

    def flaky(out, seg, cfg, first=None):
        terms = real(out, seg, cfg, first)
        calls["n"] += 1
        if calls["n"] > 3:  # steps 1-3 fine, step 4 diverges
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(module_mod, "reconstruction_loss", flaky)
    recipe = _recipe(
        tmp_path, max_steps=8, val_check_interval=None, limit_val_batches=0, check_val_every_n_epoch=1000
    )
    from recon.train.cli import run_cli

    with pytest.raises(
        TrainingDivergedError, match=r"loss is nan at global step 3.*last good checkpoint"
    ):
        run_cli(["fit", "--config", str(recipe), "--checkpoint.every_n_train_steps", "1"])
    last = torch.load(
        tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert last["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_unknown_config_key_is_a_clear_error_without_traceback(tmp_path, capsys):
    recipe = _recipe(tmp_path)
    data = yaml.safe_load(recipe.read_text())
    data["model"]["net"]["widnow"] = 3
    recipe.write_text(yaml.safe_dump(data))
    assert recon_main(["train", "fit", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "does not accept option 'model.net.widnow'" in err and "Traceback" not in err
    assert recon_main(["train", "fit", "--config", str(recipe), "--model.net.memory.tpye", "ttt"]) == 2
    assert "model.net.memory.tpye" in capsys.readouterr().err


def test_data_root_without_usable_sequences_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty_root"
    (empty / "seq_a").mkdir(parents=True)
    (empty / "seq_a" / "notes.txt").write_text("nothing here")
    recipe = _recipe(tmp_path)
    args = [
        "train",
        "fit",
        "--config",
        str(recipe),
        "--data.train.sources",
        f"[{{kind: disk, root: {empty}}}]",
    ]
    assert recon_main(args) == 2
    err = capsys.readouterr().err
    assert f"data root {empty}: no usable sequences" in err and "seq_a" in err


def test_mixture_of_synthetic_and_disk_sources_yields_clip_batches(tmp_path):
    from data.synth import SynthConfig, synthetic_sequence
    from data.synth.writer import write_tum_sequence
    from recon.train.datamodule import ClipDataModule, SourceConfig, SplitConfig

    write_tum_sequence(
        synthetic_sequence(SynthConfig(num_frames=6, width=48, height=32), 7),
        tmp_path / "tum_seq",
        video=False,
    )
    split = SplitConfig(
        [
            SourceConfig(kind="synthetic", num_sequences=1, synth={"num_frames": 6}, weight=1.0),
            SourceConfig(kind="disk", root=str(tmp_path), weight=1.0),
        ],
        clip_length=3,
        batch_size=4,
        epoch_length=8,
    )
    dm = ClipDataModule(split, image_size=(32, 48))
    dm.setup("fit")
    names = set()
    for batch in dm.train_dataloader():
        assert batch["video"].shape == (4, 3, 3, 32, 48) and batch["depth"].shape == (4, 3, 32, 48)
        assert batch["K"].shape == (4, 3, 3, 3) and batch["cam2world"].shape == (4, 3, 4, 4)
        assert torch.isfinite(batch["cam2world"]).all()
        names.update(batch["dataset"])
    assert names == {"synthetic", "tum"}


@pytest.mark.slow
def test_ddp_two_cpu_processes_gloo(tmp_path):
    recipe = _recipe(
        tmp_path,
        devices=2,
        strategy="ddp",
        max_steps=3,
        val_check_interval=None,
        limit_val_batches=0,
        check_val_every_n_epoch=1000,
    )
    out = subprocess.run(
        [sys.executable, "-m", "recon.cli", "train", "fit", "--config", str(recipe)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "distributed_backend=gloo" in out.stderr + out.stdout
    last = torch.load(
        tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert last["global_step"] == 3


def test_prediction_panel_shares_colours_after_median_scaling():
    from recon.train.callbacks import prediction_panel

    g = torch.Generator().manual_seed(0)
    T, H, W = 2, 4, 5
    gt = 1 + 3 * torch.rand(T, H, W, generator=g)
    gt[:, 0, 0] = 0.0  # invalid pixels
    pred = 2.0 * gt.clamp_min(0.5)  # a power of two keeps the median scaling exact in float
    panel = prediction_panel(torch.rand(T, 3, H, W, generator=g), gt, pred, torch.ones(T, H, W))
    assert panel.shape == (T * H, 4 * W, 3) and panel.dtype.name == "uint8"
    gt_cols, pred_cols = panel[:, W : 2 * W], panel[:, 2 * W : 3 * W]
    valid = (gt > 0).reshape(T * H, W).numpy()
    # A prediction off by a global factor is shown in the ground truth's colours once median-scaled.
    assert (gt_cols[valid] == pred_cols[valid]).all()
    assert (gt_cols[~valid] == 0).all()


def test_init_from_starts_the_network_from_an_exported_model(tmp_path, capsys):
    """--model.init_from: the module's network holds the exported weights; a checkpoint that does
    not fit the configured network is one clear line and exit 2."""
    from recon.checkpoint import save_weights

    torch.manual_seed(3)
    source = build_model(NET)
    save_weights(source, tmp_path / "start")
    module = ReconModule(NET, init_from=str(tmp_path / "start"))
    for name, tensor in source.state_dict().items():
        assert torch.equal(module.net.state_dict()[name], tensor), name
    assert module.hparams["init_from"] == str(tmp_path / "start")
    save_weights(build_model({**NET, "dim": 64}), tmp_path / "wide")
    recipe = _recipe(tmp_path)
    code = recon_main(["train", "fit", "--config", str(recipe), "--model.init_from", str(tmp_path / "wide")])
    err = capsys.readouterr().err
    assert code == 2 and "wide: checkpoint does not fit this model (fine-tuning start)" in err
    assert "Traceback" not in err
