"""tools/ablation_stats.py on synthetic report dicts, against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tools.ablation_stats import analyse, bootstrap_mean, main, paired


def report(values: dict[str, dict[str, float]]) -> dict:
    """A report.json-shaped dict: values = {sequence: {label: ATE}}."""
    seqs = [{"name": name, "prefixes": [{"label": lab, "length": 80, "pose": {"ate_rmse": v}}
                                        for lab, v in labels.items()]}
            for name, labels in values.items()]
    return {"models": [{"sequences": seqs}]}


def runs_case():
    """Three sequences. none_s0 = (1, 2, 4); none_s1 = none_s0 + 0.05 everywhere (seed noise 0.05);
    gla = none - 0.1 (beyond the noise), ttt = none + 0.03 (interval excludes 0, within the noise),
    elastic = 2 x none (ratio 2)."""
    base = {"a": 1.0, "b": 2.0, "c": 4.0}
    make = lambda f: report({s: {"80": f(v)} for s, v in base.items()})
    return {("none", 0): make(lambda v: v), ("none", 1): make(lambda v: v + 0.05),
            ("gla", 0): make(lambda v: v - 0.1), ("ttt", 0): make(lambda v: v + 0.03),
            ("elastic", 0): make(lambda v: 2 * v)}


def test_constant_differences_give_point_intervals_and_verdicts():
    result = analyse(runs_case())
    rows = {r["arm"]: r for r in result["comparisons"]}
    assert [n["arm"] for n in result["noise"]] == ["none"]
    assert result["noise"][0]["diff"] == pytest.approx(0.05)
    gla, ttt, el = rows["gla"], rows["ttt"], rows["elastic"]
    assert (gla["diff"], gla["diff_low"], gla["diff_high"]) == pytest.approx((-0.1, -0.1, -0.1))
    assert gla["mean_b"] == pytest.approx(7 / 3) and gla["mean_a"] == pytest.approx(7 / 3 - 0.1)
    # geometric-mean ratio of (0.9, 1.9, 3.9) / (1, 2, 4), by hand
    assert gla["ratio"] == pytest.approx((0.9 * 0.95 * 0.975) ** (1 / 3))
    assert gla["verdict"] == "better: exceeds the noise"
    assert ttt["verdict"] == "interval excludes 0 but within seed-to-seed noise"
    assert (el["ratio"], el["ratio_low"], el["ratio_high"]) == pytest.approx((2.0, 2.0, 2.0))
    assert el["diff"] == pytest.approx(7 / 3) and el["verdict"] == "worse: exceeds the noise"


def test_two_sequence_bootstrap_interval_by_hand():
    """d = (0, 1): a resample's mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4, so the 2.5% and
    97.5% percentiles are 0 and 1 and the interval includes 0."""
    mean, low, high = bootstrap_mean(np.array([0.0, 1.0]))
    assert (mean, low, high) == (0.5, 0.0, 1.0)
    st = paired({"a": 1.0, "b": 3.0}, {"a": 1.0, "b": 2.0})
    assert (st["diff"], st["diff_low"], st["diff_high"]) == (0.5, 0.0, 1.0)
    assert st["ratio"] == pytest.approx(math.sqrt(1.5))


def test_noise_not_measured_and_unpaired_sequences():
    runs = runs_case()
    del runs[("none", 1)]
    rows = {r["arm"]: r for r in analyse(runs)["comparisons"]}
    assert rows["gla"]["noise"] is None
    assert rows["gla"]["verdict"] == "better, interval excludes 0 (noise not measured)"
    # only the sequences both runs have are paired
    assert paired({"a": 1.0, "x": 5.0}, {"a": 2.0, "y": 1.0})["n"] == 1
    assert paired({"x": 1.0}, {"y": 1.0}) is None


def test_cli_writes_tables_from_a_run_tree(tmp_path, capsys):
    for (arm, seed), rep in runs_case().items():
        d = tmp_path / f"{arm}_s{seed}" / "eval" / "synthetic_loops"
        d.mkdir(parents=True)
        (d / "report.json").write_text(json.dumps(rep))
    out = tmp_path / "out"
    assert main(["--root", str(tmp_path), "--protocol", "synthetic_loops", "--out", str(out)]) == 0
    text = (out / "stats.md").read_text()
    assert "| gla | 0 | 80 | 3 |" in text and "better: exceeds the noise" in text
    assert "| none | 1 - 0 | 80 | 3 |" in text
    assert json.loads((out / "stats.json").read_text())["metric"] == "ate_rmse"
    assert main(["--root", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "no none_s<seed>" in capsys.readouterr().err


def test_pair_mode_compares_two_reports(tmp_path, capsys):
    """A = B / 2 on two of three sequences and = B on the third: ratio (1/2 * 1/2 * 1)^(1/3)."""
    b = report({"a": {"80": 1.0}, "b": {"80": 2.0}, "c": {"80": 4.0}})
    a = report({"a": {"80": 0.5}, "b": {"80": 1.0}, "c": {"80": 4.0}})
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert main(["--pair", str(pa), str(pb)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("80: n=3, mean 1.8333 vs 2.3333, difference -0.5000")
    assert f"geometric-mean ratio {0.25 ** (1 / 3):.3f}" in line and line.endswith("lower on 2/3")
    assert main(["--pair", str(tmp_path / "missing.json"), str(pb)]) == 2
    assert "missing.json: not a readable recon eval report.json" in capsys.readouterr().err


def _report_with_trajectories(folder, name: str, shrink: float, n: int = 10) -> None:
    """A report folder whose model ran one 'loop' sequence: the true centres on a line x = 0.1 i,
    the predicted ones the same line shrunk toward the origin by ``shrink`` (rotations identity)."""
    from recon.trajectory import write_tum

    gt = np.tile(np.eye(4), (n, 1, 1))
    gt[:, 0, 3] = 0.1 * np.arange(n)
    est = gt.copy()
    est[:, 0, 3] *= shrink
    ts = np.arange(n) / 30.0
    (folder / "trajectories" / name).mkdir(parents=True)
    (folder / "trajectories" / "groundtruth").mkdir()
    write_tum(folder / "trajectories" / name / "loop.txt", ts, est)
    write_tum(folder / "trajectories" / "groundtruth" / "loop.txt", ts, gt)
    prefixes = [{"label": str(k), "length": k, "pose": {"ate_rmse": 0.0}} for k in (5, n)]
    (folder / "report.json").write_text(json.dumps(
        {"models": [{"name": name, "sequences": [{"name": "loop", "prefixes": prefixes}]}]}))


def test_rigid_ate_is_recomputed_from_the_trajectories(tmp_path, capsys):
    """Shrunk collinear centres: the SE(3) fit can only shift them, so the error is (1 - s) times the
    spread of the true centres: 0.5 std (s = 0.5) against 0.75 std (s = 0.25), ratio 2/3; the Sim(3)
    ATE stored in the reports is 0 for both (a scale fit undoes any shrink)."""
    _report_with_trajectories(tmp_path / "a", "half", 0.5)
    _report_with_trajectories(tmp_path / "b", "quarter", 0.25)
    pair = ["--pair", str(tmp_path / "a" / "report.json"), str(tmp_path / "b" / "report.json")]
    assert main([*pair, "--metric", "ate_se3_rmse"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    std5, std10 = 0.1 * np.std(np.arange(5)), 0.1 * np.std(np.arange(10))
    assert lines[1].startswith(f"5: n=1, mean {0.5 * std5:.4f} vs {0.75 * std5:.4f}")
    assert lines[2].startswith(f"10: n=1, mean {0.5 * std10:.4f} vs {0.75 * std10:.4f}")
    assert "geometric-mean ratio 0.667" in lines[2]
    assert main(pair) == 0
    assert "mean 0.0000 vs 0.0000" in capsys.readouterr().out
