"""Comparison reports: summary means by hand, files that parse (JSON keys, Markdown rows, PNGs)."""

import copy
import json
import math

import cv2
import matplotlib.image as mpimg
import numpy as np
import pytest

from recon.eval.drift import SequenceEvaluation, evaluate_trajectory
from recon.eval.protocols import load_protocol
from recon.eval.report import (
    ModelRun,
    build_report,
    drift_summary,
    markdown_report,
    merge_reports,
    report_json,
    summarize,
    write_report,
    write_report_dict,
)

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


SEQUENCES = ((0, 40), (1, 30))  # (seed, frames)


def _gt(seed, N):
    i = np.arange(N)
    gt = np.tile(np.eye(4), (N, 1, 1))
    gt[:, :3, 3] = np.stack([np.cos(0.1 * i + seed), np.sin(0.1 * i), 0.02 * i], 1)
    return gt


def _runs(protocol=PROTOCOL):
    """Two 'models' on two sequences: the second drifts twice as fast."""
    runs = []
    for name, d in (("gla", 0.002), ("causal", 0.004)):
        run = ModelRun(name, f"/ckpt/{name}", {"memory_type": name})
        for seed, N in SEQUENCES:
            i = np.arange(N)
            gt = _gt(seed, N)
            est = gt.copy()
            est[:, 2, 3] += d * np.maximum(i - 4, 0)
            run.sequences.append(evaluate_trajectory(i / 30.0, est, i / 30.0, gt, protocol, f"seq{seed}"))
        runs.append(run)
    return runs


def test_summary_rows_carry_the_baselines_the_ratio_and_the_sim3_scale():
    run = _runs()[1]
    rows = {r["label"]: r for r in summarize(run)}
    for label, lengths in (("10", (10, 10)), ("20", (20, 20)), ("full", (40, 30))):
        gts = [_gt(seed, L)[:, :3, 3] for (seed, _), L in zip(SEQUENCES, lengths, strict=True)]
        # static camera after Sim(3): RMS distance of the true centres from their centroid
        static = [np.sqrt(((c - c.mean(0)) ** 2).sum(1).mean()) for c in gts]
        row = rows[label]
        assert row["static_ate_rmse"] == pytest.approx(np.mean(static), rel=1e-9)
        ates = [next(p for p in s.prefixes if p["label"] == label)["pose"]["ate_rmse"] for s in run.sequences]
        assert row["ate_vs_static"] == pytest.approx(np.mean(np.divide(ates, static)), rel=1e-9)
        assert 0 < row["ate_vs_static"] < 1
        # the estimate is the ground truth plus a small drift: constant velocity is far worse than it
        assert row["constant_velocity_ate_rmse"] > row["ate_rmse"]
        assert row["sim3_scale"] == pytest.approx(1.0, abs=0.05) and row["sim3_scale"] != 1.0
    # se3 fixes the scale at 1: no Sim(3) scale is reported, the baselines use se3 too
    se3 = load_protocol({**PROTOCOL.to_dict(), "pose": {"align": "se3", "drift_align_frames": 5}})
    row = summarize(_runs(se3)[1])[0]
    assert row["sim3_scale"] is None
    assert row["static_ate_rmse"] == pytest.approx(rows["10"]["static_ate_rmse"])
    assert "Sim(3) scale" not in markdown_report(build_report(se3, _runs(se3))).split("## Drift")[0]


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
    assert rows[0].startswith("| model | length | sequences | ATE RMSE | ATE static camera | "
                              "ATE const. velocity | ATE / static | Sim(3) scale |")
    per_seq = md.split("## Per sequence", 1)[1]
    assert "| ATE RMSE | ATE static camera | ATE const. velocity | ATE / static | Sim(3) scale |" in per_seq
    assert len(rows) == 1 + 2 * 3  # header + models x lengths
    assert "| gla | full (35) | 2 |" in md  # mean full length of 40 and 30 frames
    assert "recon eval report_test" in md
    for png in (paths["length_plot"], paths["curve_plot"]):
        image = cv2.imread(str(png))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
        assert mpimg.imread(png).ndim == 3


def test_report_json_rounds_only_number_lists_and_is_a_fixed_point():
    rng = np.random.default_rng(3)
    curve = (rng.standard_normal(10_000) * 10.0 ** rng.integers(-6, 4, 10_000)).tolist()
    report = {"name": "gla", "checkpoint": None, "score": 0.12345678901234567, "flag": True, "empty": [],
              "nested": {"curve": curve, "mixed": [{"k": 1.0000001234567}, [1, None, 2.5]], "none": {}},
              "ints": [1, 2, 3], "bools": [True, False]}
    text = report_json(report)
    back = json.loads(text)
    assert back["score"] == report["score"] and back["flag"] is True  # scalars keep full precision
    assert back["nested"]["mixed"][0]["k"] == 1.0000001234567
    assert back["nested"]["mixed"][1] == [1, None, 2.5] and back["ints"] == [1, 2, 3]
    assert back["bools"] == [True, False] and back["empty"] == [] and back["nested"]["none"] == {}
    # 6 significant digits: relative error at most half a unit in the 6th digit
    np.testing.assert_allclose(back["nested"]["curve"], curve, rtol=5e-6, atol=0)
    assert max(abs(b - a) / abs(a) for a, b in zip(curve, back["nested"]["curve"], strict=True)) > 1e-8
    assert report_json(back) == text  # writing what was read gives the same text
    assert len(text) < 14 * len(curve)  # vs about 28 bytes a number with json.dumps(indent=1)
    assert text.count("\n") < 40  # the 10,000-number list is one line
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            report_json({"curve": [0.0, bad]})


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


def test_reports_without_the_baseline_columns_still_render_and_merge(tmp_path):
    """A report.json written before the baselines existed: '–' in its cells, merge keeps both."""
    new = build_report(PROTOCOL, _runs()[:1])
    old = copy.deepcopy(build_report(PROTOCOL, _runs()[1:]))
    added = ("static_ate_rmse", "constant_velocity_ate_rmse", "ate_vs_static", "sim3_scale")
    for model in old["models"]:
        for row in model["summary"]:
            for key in added:
                del row[key]
        for seq in model["sequences"]:
            for prefix in seq["prefixes"]:
                del prefix["pose_baselines"]
                del prefix["pose"]["ate_vs_static"]
    old_only = markdown_report(old)
    assert "ATE static camera" not in old_only.split("## Drift")[0]  # no column without any value
    merged = merge_reports([("new/report.json", new), ("old/report.json", old)])
    assert [m["name"] for m in merged["models"]] == ["gla", "causal"]
    assert merged["models"][0]["summary"] == new["models"][0]["summary"]
    md = markdown_report(merged)
    gla = next(line for line in md.splitlines() if line.startswith("| gla | 10 |"))
    causal = next(line for line in md.splitlines() if line.startswith("| causal | 10 |"))
    static = f"{new['models'][0]['summary'][0]['static_ate_rmse']:.4f}"
    assert gla.split(" | ")[4] == static and causal.split(" | ")[4] == "–"
    write_report_dict(tmp_path, merged)  # plots included
    columns = json.loads((tmp_path / "report.json").read_text())["columns"]
    assert columns["static_ate_rmse"] == "ATE static camera"
