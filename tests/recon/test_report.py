"""Comparison reports: summary means by hand, files that parse (JSON keys, Markdown rows, PNGs)."""

import json
import math

import cv2
import matplotlib.image as mpimg
import numpy as np
import pytest

from recon.eval.drift import SequenceEvaluation, evaluate_trajectory
from recon.eval.protocols import load_protocol
from recon.eval.report import ModelRun, drift_summary, markdown_report, summarize, write_report

PROTOCOL = load_protocol({
    "name": "report_test",
    "description": "hand-made runs",
    "synthetic": {"seeds": [0]},
    "lengths": [10, 20, "full"],
    "pose": {"drift_align_frames": 5},
    "depth": {"align": []},
})


def _seq(name, rows, drift=None, n=None):
    """A SequenceEvaluation with given (label, length, ate_rmse) prefixes."""
    prefixes = [{"label": lab, "length": L, "pose": {"ate_rmse": ate}} for lab, L, ate in rows]
    return SequenceEvaluation(name, n or rows[-1][1], prefixes, {"ate": [0.0] * (n or rows[-1][1])},
                              drift or {"ate_per_100_frames": 0.0}, {"fps": 10.0, "latency_ms_median": 100.0})


def test_summary_means_over_sequences_reaching_each_length():
    run = ModelRun("m", "ckpt", sequences=[
        _seq("a", [("10", 10, 1.0), ("20", 20, 2.0), ("full", 25, 3.0)], {"ate_per_100_frames": 0.5}),
        _seq("b", [("10", 10, 3.0), ("full", 15, 5.0)], {"ate_per_100_frames": float("nan")}),
    ])
    rows = {r["label"]: r for r in summarize(run)}
    assert list(rows) == ["10", "20", "full"]  # numeric order, full last
    assert rows["10"]["ate_rmse"] == pytest.approx(2.0) and rows["10"]["sequences"] == 2
    assert rows["20"]["ate_rmse"] == pytest.approx(2.0) and rows["20"]["sequences"] == 1  # b is too short
    assert rows["full"]["ate_rmse"] == pytest.approx(4.0) and rows["full"]["length"] == pytest.approx(20.0)
    assert rows["10"]["abs_rel_median"] is None  # no depth in these runs
    assert drift_summary(run)["ate_per_100_frames"] == pytest.approx(0.5)  # NaN left out


def _runs():
    """Two 'models' on two sequences: the second drifts twice as fast."""
    runs = []
    for name, d in (("gla", 0.002), ("causal", 0.004)):
        run = ModelRun(name, f"/ckpt/{name}", {"memory_type": name})
        for seed, N in ((0, 40), (1, 30)):
            i = np.arange(N)
            gt = np.tile(np.eye(4), (N, 1, 1))
            gt[:, :3, 3] = np.stack([np.cos(0.1 * i + seed), np.sin(0.1 * i), 0.02 * i], 1)
            est = gt.copy()
            est[:, 2, 3] += d * np.maximum(i - 4, 0)
            run.sequences.append(evaluate_trajectory(i / 30.0, est, i / 30.0, gt, PROTOCOL, f"seq{seed}"))
        runs.append(run)
    return runs


def test_report_files_exist_and_parse(tmp_path):
    runs = _runs()
    paths = write_report(tmp_path, PROTOCOL, runs, {"command": "recon eval report_test ..."})
    report = json.loads(paths["json"].read_text())
    assert report["format"] == "streamrecon-eval-report/1"
    assert {"created_utc", "protocol", "settings", "columns", "models"} <= set(report)
    assert [m["name"] for m in report["models"]] == ["gla", "causal"]
    model = report["models"][0]
    assert {"summary", "drift", "sequences", "checkpoint", "model"} <= set(model)
    assert [r["label"] for r in model["summary"]] == ["10", "20", "full"]
    assert len(model["sequences"][0]["curves"]["ate"]) == 40
    rates = [m["drift"]["ate_per_100_frames"] for m in report["models"]]
    assert rates == pytest.approx([0.2, 0.4], abs=1e-9)  # d * 100 per model, as built

    md = paths["markdown"].read_text()
    table = md.split("## Error vs sequence length", 1)[1].split("## Drift", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| model | length | sequences | ATE RMSE")
    assert len(rows) == 1 + 2 * 3  # header + models x lengths
    assert "| gla | full (35) | 2 |" in md  # mean full length of 40 and 30 frames
    assert "recon eval report_test" in md
    for png in (paths["length_plot"], paths["curve_plot"]):
        image = cv2.imread(str(png))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
        assert mpimg.imread(png).ndim == 3


def test_nan_metrics_are_null_in_json_and_dashes_in_markdown(tmp_path):
    nan_seq = _seq("a", [("10", 10, math.nan)], {"ate_per_100_frames": math.nan})
    nan_run = ModelRun("m", "c", sequences=[nan_seq])
    ok_run = ModelRun("k", "c", sequences=[_seq("a", [("10", 10, 0.25)])])
    paths = write_report(tmp_path, PROTOCOL, [nan_run, ok_run])
    text = paths["json"].read_text()
    assert "NaN" not in text
    report = json.loads(text)
    assert report["models"][0]["sequences"][0]["drift"]["ate_per_100_frames"] is None
    md = markdown_report(report)
    assert "| m | 10 | 1 | – |" in md and "| k | 10 | 1 | 0.2500 |" in md
