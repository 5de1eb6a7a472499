"""The one stream loop (recon.infer.stream): predictions equal a hand-written model.step loop; the
model owns precision (no autocast outside recon/model; ``autocast: none`` is honoured on CUDA)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.infer.frames import SourceFrame
from recon.infer.stream import StreamSession
from recon.model import build_model

ROOT = Path(__file__).resolve().parents[3]


def _model(autocast: str = "bf16"):
    torch.manual_seed(0)
    cfg = dict(name="test", image_size=(32, 48), patch_size=16, dim=48, depth=2, num_heads=2, window=3,
               num_register_tokens=2, memory=dict(type="gla", depths=[0, 1], options={}),
               head=dict(features=16, levels=[0, 1], camera_hidden=32), autocast=autocast)
    return build_model(cfg).eval()


def _frames(n: int, hw=(32, 48), K: np.ndarray | None = None) -> list[SourceFrame]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (hw[0], 2 * hw[1], 3), dtype=np.uint8)
    return [SourceFrame(t, t / 30.0, np.ascontiguousarray(base[:, t:t + hw[1]]), K=K) for t in range(n)]


@pytest.mark.parametrize("known_K", [False, True], ids=["predicted-K", "known-K"])
def test_session_equals_a_model_step_loop(known_K):
    model = _model()
    K = np.array([[40.0, 0, 23.5], [0, 41.0, 15.5], [0, 0, 1]]) if known_K else None
    frames = _frames(5, K=K)
    preds = list(StreamSession(model, "cpu").run(frames))
    state = model.init_state(1)
    with torch.no_grad():
        for frame, pred in zip(frames, preds, strict=True):
            x = torch.tensor(frame.image, dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
            Kt = None if K is None else torch.tensor(K, dtype=torch.float32)[None]
            out, state = model.step(x, state, K=Kt)
            assert pred.frame is frame
            for name, key in (("depth", "depth"), ("conf", "depth_conf"), ("K", "K"),
                              ("cam2world", "cam2world"), ("world_points", "world_points")):
                np.testing.assert_allclose(getattr(pred, name), out[key][0].numpy(), rtol=1e-6, atol=1e-6,
                                           err_msg=name)
            assert pred.latency_ms > 0 and pred.pose_fallbacks == int(state.poses.fallbacks.sum())
    if K is not None:
        np.testing.assert_allclose(preds[-1].K, K, rtol=1e-6)


def _autocast_calls(path: Path) -> list[int]:
    """Line numbers of calls to anything named ``autocast`` (torch.autocast, torch.cuda.amp.autocast)."""
    tree = ast.parse(path.read_text(), str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name == "autocast":
                lines.append(node.lineno)
    return lines


def test_no_autocast_outside_recon_model():
    """The model applies its config's precision (StreamReconModel.run); nothing outside recon/model
    wraps it (the memory layers in layers/ only switch autocast off to keep their states fp32)."""
    files = [p for top in ("recon", "data", "tools") for p in (ROOT / top).rglob("*.py")
             if (ROOT / "recon" / "model") not in p.parents]
    assert len(files) > 50
    found = {str(p.relative_to(ROOT)): lines for p in files if (lines := _autocast_calls(p))}
    assert found == {}
    assert _autocast_calls(ROOT / "recon" / "model" / "model.py"), "the scan no longer sees the model's own"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("autocast, dtype", [("none", torch.float32), ("bf16", torch.bfloat16)])
def test_session_on_cuda_runs_the_configs_precision(autocast, dtype):
    model = _model(autocast).cuda()
    seen = []
    linear = next(m for m in model.aggregator.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    preds = list(StreamSession(model, "cuda").run(_frames(3)))
    assert seen and set(seen) == {dtype}
    assert all(np.isfinite(p.depth).all() for p in preds)
