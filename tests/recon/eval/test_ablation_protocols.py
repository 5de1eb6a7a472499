"""The memory ablation's evaluation protocols: held-out loop sequences and the lengths the study
reads (HorizonStream's Table 6: 80 / 200 / 1,000 frames; plus 10,000)."""

from __future__ import annotations

from recon.eval.drift import resolve_lengths
from recon.eval.protocols import builtin_protocols, load_protocol

TRAINING_SEEDS = range(0, 2000)  # configs/train/tiny_synthetic_cpu.yaml (validation 1000..1007 inside)
VALIDATE_SHIPPED_SEEDS = range(5000, 5008)  # tools/validate_shipped.py default


def test_synthetic_loops_is_held_out_and_loops():
    p = load_protocol("synthetic_loops")
    assert "synthetic_loops" in builtin_protocols()
    seeds = [int(s) for s in p.synthetic.seeds]
    assert len(seeds) >= 20 and len(set(seeds)) == len(seeds)
    drift_seeds = load_protocol("synthetic_drift").synthetic.seeds
    for s in seeds:
        assert s not in TRAINING_SEEDS and s not in VALIDATE_SHIPPED_SEEDS and s not in drift_seeds
    assert p.synthetic.config["trajectory"] == "loop" and p.synthetic.config["num_frames"] == 300
    assert resolve_lengths(p.lengths, 300) == [(80, "80"), (200, "200"), (300, "full")]


def test_synthetic_drift_reports_the_study_lengths():
    p = load_protocol("synthetic_drift")
    labels = dict(resolve_lengths(p.lengths, p.synthetic.config["num_frames"]))
    for n in (80, 200, 1000, 10000):
        assert labels[n] == str(n)
    # causal_attention is cut to its first 2,000 frames: no 10,000 row, its own length as "full"
    assert resolve_lengths(p.lengths, 2000)[-1] == (2000, "2000")
    assert (1500, "full") in resolve_lengths(p.lengths, 1500)
