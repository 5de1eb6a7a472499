"""``MemoryHorizon`` (``recon eval --memory-horizon N``): the memory layers see exactly the frames
since the last multiple of N, everything else the state carries is untouched, and a horizon no
stream reaches changes nothing."""

import json

import pytest
import torch

from recon.checkpoint import save_weights
from recon.cli import main
from recon.errors import InputError
from recon.eval.memory_horizon import MemoryHorizon
from recon.model import build_model
from recon.model.config import load_model_config
from recon.model.state import state_tensors

MICRO = {"image_size": [32, 48], "dim": 48, "depth": 2, "num_heads": 2, "window": 3,
         "head": {"features": 16, "levels": [0, 1], "camera_hidden": 32, "pose_slots": 2}}
FRAMES = 7


def _model(memory: str):
    torch.manual_seed(0)
    cfg = load_model_config("tiny", **MICRO, memory={"type": memory, "depths": [1]})
    return build_model(cfg).eval()


def _stream(model, video):
    """Per frame: (outputs, the memory caches the aggregator received, the state after the step)."""
    seen = []
    inner = model.model if isinstance(model, MemoryHorizon) else model
    forward = inner.aggregator.forward

    def spy(video, frame_index, windows, memory):
        seen.append([t.clone() for t in state_tensors(memory)])
        return forward(video, frame_index, windows, memory)

    inner.aggregator.forward = spy
    try:
        state, steps = model.init_state(1), []
        with torch.inference_mode():
            for t in range(video.shape[0]):
                out, state = model.step(video[t:t + 1], state)
                steps.append((out, seen[-1], state))
    finally:
        del inner.aggregator.forward
    return steps


@pytest.fixture(scope="module")
def video():
    return torch.rand(FRAMES, 3, 32, 48, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("memory", ["gla", "elastic", "causal_attention"])
def test_memory_sees_only_frames_since_the_last_reset(memory, video):
    model = _model(memory)
    plain = _stream(model, video)
    horizon = MemoryHorizon(model, 3)
    cut = _stream(horizon, video)
    empty = [t.clone() for t in state_tensors(model.aggregator.init_caches(1, "cpu")[1])]
    for t in range(FRAMES):
        received = cut[t][1]
        if t % 3 == 0:   # frames 0, 3, 6: the memory arrives empty
            expected = empty
        else:            # otherwise: what the previous step of the same (cut) stream left
            expected = [x.clone() for x in state_tensors(cut[t - 1][2].memory)]
        assert len(received) == len(expected)
        for a, b in zip(received, expected, strict=True):
            assert torch.equal(a, b)
    assert horizon.resets == 2
    # frames 0-2 are the plain stream's; from frame 3 the memory's older content is missing
    for t in range(3):
        for key in ("cam2world", "depth"):
            assert torch.equal(cut[t][0][key], plain[t][0][key])
    assert not torch.equal(cut[4][0]["depth"], plain[4][0]["depth"])
    # the local windows and the pose history are carried, not reset
    assert cut[3][2].frame_index == 4 and torch.count_nonzero(cut[3][2].windows[0].k) > 0


def test_a_horizon_beyond_the_stream_and_a_model_without_memory_change_nothing(video):
    gla = _model("gla")
    plain, far = _stream(gla, video), _stream(MemoryHorizon(gla, FRAMES), video)
    none = _model("none")
    none_plain, none_cut = _stream(none, video), _stream(MemoryHorizon(none, 1), video)
    for a, b in ((plain, far), (none_plain, none_cut)):
        for (out_a, _, _), (out_b, _, _) in zip(a, b, strict=True):
            for key in ("cam2world", "depth", "K", "world_points"):
                assert torch.equal(out_a[key], out_b[key])


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_a_horizon_that_is_not_a_frame_count_is_refused(bad):
    with pytest.raises(InputError, match="--memory-horizon: expected a frame count >= 1"):
        MemoryHorizon(_model("none"), bad)


def test_recon_eval_memory_horizon(tmp_path, capsys):
    ckpt = save_weights(_model("gla"), tmp_path / "gla")
    args = ["eval", "synthetic_drift_quick", "--checkpoint", str(ckpt), "--max-frames", "6", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "cut"), "--memory-horizon", "2"]) == 0
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    cut = json.loads((tmp_path / "cut" / "report.json").read_text())
    plain = json.loads((tmp_path / "plain" / "report.json").read_text())
    assert cut["settings"]["memory_horizon"] == 2 and plain["settings"]["memory_horizon"] is None
    assert "--memory-horizon 2" in cut["settings"]["command"]
    ate = [r["models"][0]["sequences"][0]["prefixes"][-1]["pose"]["ate_rmse"] for r in (cut, plain)]
    assert ate[0] != ate[1]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(tmp_path / "bad"), "--memory-horizon", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--memory-horizon" in err[0]
