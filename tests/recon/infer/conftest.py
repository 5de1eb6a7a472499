"""Fixtures for the streaming-run tests: a small untrained checkpoint and a short synthetic sequence."""

import pytest
import yaml

from data.synth import SynthConfig, synthetic_sequence, write_tum_sequence
from recon.checkpoint import save_weights
from recon.model import build_model


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """An exported (safetensors + config) untrained model, small enough to stream fast on a CPU."""
    with open("configs/model/tiny.yaml") as f:
        cfg = yaml.safe_load(f)
    cfg.update(dim=64, depth=2, num_heads=2, window=2)
    cfg["memory"] = {"type": "none", "depths": [], "options": {}}
    cfg["head"].update(features=16, levels=[0, 1], camera_hidden=64, pose_slots=1)
    torch_seed = 0
    import torch

    torch.manual_seed(torch_seed)
    return save_weights(build_model(cfg), tmp_path_factory.mktemp("ckpt") / "small")


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory):
    """A 12-frame synthetic sequence in the TUM layout (with video.mp4), at the model resolution."""
    out = tmp_path_factory.mktemp("synth") / "seq"
    seq = synthetic_sequence(
        SynthConfig(num_frames=12, width=128, height=96, trajectory="walk", num_dynamic=1, shadows=False),
        seed=5,
    )
    write_tum_sequence(seq, out, fps=30.0, video=True)
    return out
