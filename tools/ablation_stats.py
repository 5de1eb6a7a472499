"""Paired statistics of the memory ablation: is an arm's error different from `none`'s by more than
training noise?

Reads the ``report.json`` that ``recon eval`` wrote for every trained arm and seed
(``ROOT/<arm>_s<seed>/eval/<protocol>/report.json``, tools/memory_ablation.sh) and, per length label
and per arm, pairs the sequences with those of ``none`` of the same seed (seed 0 when the baseline
has no run of that seed):

- the per-sequence differences ``d_i = err_arm,i - err_none,i`` with their mean and a bootstrap 95%
  interval (``scipy.stats.bootstrap``, percentile method, sequences resampled);
- the per-sequence ratios ``err_arm,i / err_none,i`` as a geometric mean ``exp(mean log r_i)`` with
  its bootstrap 95% interval;
- beside them, the seed-to-seed difference of the same kind for every arm with two seeds
  (``none_s1 - none_s0``, ``gla_s1 - gla_s0``): what retraining alone changes.

A difference **exceeds the noise** when its 95% interval excludes 0 and its mean is larger in size
than the largest seed-to-seed mean difference at that length. When no arm has two seeds yet, the
verdict says that the noise is not measured and reports only whether the interval excludes 0.

    python -m tools.ablation_stats --root runs/ablation2 --protocol synthetic_loops \\
        --out docs/memory_ablation/synthetic_loops          # -> stats.md, stats.json
    python -m tools.ablation_stats --pair A/report.json B/report.json [--metric ate_se3_rmse]

``ate_se3_rmse`` is not stored in the reports: it is the ATE after a rigid (SE(3), no scale) fit,
recomputed on every prefix from the TUM trajectories ``recon eval`` writes beside its report
(``trajectories/<model>/<sequence>.txt`` and ``trajectories/groundtruth/``), i.e. the error of
the trajectory at the size the model gave it: what a metric-scale readout is for.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
from scipy import stats

METRICS = {  # name -> path in a report's per-sequence prefix dict (None: from the trajectories)
    "ate_rmse": ("pose", "ate_rmse"),
    "rpe_trans_rmse": ("pose", "rpe_trans_rmse"),
    "abs_rel_median": ("depth", "median", "abs_rel"),
    "ate_se3_rmse": None,
}
BASELINE = "none"
REPORT_DIR_KEY = "_report_dir"  # find_runs records each report's folder under this key
RUN_NAME = re.compile(r"^(?P<arm>.+)_s(?P<seed>\d+)$")


def per_sequence(report: dict, metric: str, report_dir: Path | None = None) -> dict[str, dict[str, float]]:
    """{length label: {sequence name: metric}} of a report's first model (finite values only).

    ``report_dir`` (the report's folder) is needed for ``ate_se3_rmse``, read from its trajectories.
    """
    keys = METRICS[metric]
    model = report["models"][0]
    folder = report_dir if report_dir is not None else report.get(REPORT_DIR_KEY)
    out: dict[str, dict[str, float]] = {}
    for seq in model["sequences"]:
        rigid = _rigid_ate(folder, model["name"], seq["name"]) if keys is None else None
        for prefix in seq["prefixes"]:
            if rigid is not None:
                node = rigid(int(prefix["length"]))
            else:
                node = prefix
                for k in keys:
                    node = node.get(k) if isinstance(node, dict) else None
            if isinstance(node, (int, float)) and math.isfinite(node):
                out.setdefault(prefix["label"], {})[seq["name"]] = float(node)
    return out


def _rigid_ate(report_dir: Path | str | None, model: str, sequence: str):
    """``length -> ATE RMSE`` after an SE(3) fit of the first ``length`` predicted poses
    (timestamp-associated), with the sequence's two trajectories read once."""
    from recon.eval.evaluation import safe_name
    from recon.eval.pose_metrics import associate_trajectories, pose_metrics
    from recon.trajectory import read_tum

    if report_dir is None:
        raise ValueError("ate_se3_rmse needs the report's folder (its trajectories)")
    folder = Path(report_dir) / "trajectories"
    ts_est, est = read_tum(folder / safe_name(model) / f"{safe_name(sequence)}.txt")
    ts_gt, gt = read_tum(folder / "groundtruth" / f"{safe_name(sequence)}.txt")

    def ate(length: int) -> float:
        _, e, g = associate_trajectories(ts_est[:length], est[:length], ts_gt, gt)
        return pose_metrics(e, g, align="se3").ate_rmse

    return ate


def bootstrap_mean(x: np.ndarray, seed: int = 0,
                   resamples: int = 10000) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the mean of ``x`` and its percentile-bootstrap 95% interval (None for n < 2)."""
    x = np.asarray(x, dtype=np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return mean, None, None
    if np.all(x == x[0]):  # every resample has this mean
        return mean, mean, mean
    res = stats.bootstrap((x,), np.mean, confidence_level=0.95, n_resamples=resamples, method="percentile",
                          rng=np.random.default_rng(seed))
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired(a: dict[str, float], b: dict[str, float]) -> dict | None:
    """Statistics of ``a - b`` and ``a / b`` over the sequences both have (None if they share none)."""
    names = sorted(set(a) & set(b))
    if not names:
        return None
    x, y = np.array([a[n] for n in names]), np.array([b[n] for n in names])
    diff = bootstrap_mean(x - y)
    out = {"n": len(names), "mean_a": float(x.mean()), "mean_b": float(y.mean()),
           "diff": diff[0], "diff_low": diff[1], "diff_high": diff[2],
           "ratio": None, "ratio_low": None, "ratio_high": None}
    if np.all(x > 0) and np.all(y > 0):
        lr = bootstrap_mean(np.log(x / y))
        out.update(ratio=math.exp(lr[0]), ratio_low=None if lr[1] is None else math.exp(lr[1]),
                   ratio_high=None if lr[2] is None else math.exp(lr[2]))
    return out


def analyse(runs: dict[tuple[str, int], dict], metric: str = "ate_rmse") -> dict:
    """Comparisons of every arm with ``none`` and the seed-to-seed differences.

    Args:
        runs: (arm, seed) -> report dict.
        metric: a key of ``METRICS``.

    Returns:
        {"metric", "noise": [{arm, seeds, label, ...paired stats}],
         "comparisons": [{arm, seed, baseline_seed, label, ...paired stats, noise, verdict}]}
    """
    values = {key: per_sequence(rep, metric) for key, rep in runs.items()}
    noise = []
    for arm in sorted({a for a, _ in values}):
        seeds = sorted(s for a, s in values if a == arm)
        for s in seeds[1:]:
            first, other = values[(arm, seeds[0])], values[(arm, s)]
            for label in _labels(first, other):
                st = paired(other[label], first[label])
                if st is not None:
                    noise.append({"arm": arm, "seeds": [seeds[0], s], "label": label, **st})
    comparisons = []
    base_seeds = sorted(s for a, s in values if a == BASELINE)
    for (arm, seed), vals in sorted(values.items()):
        if arm == BASELINE or not base_seeds:
            continue
        bseed = seed if seed in base_seeds else base_seeds[0]
        base = values[(BASELINE, bseed)]
        for label in _labels(vals, base):
            st = paired(vals[label], base[label])
            if st is None:
                continue
            level = [abs(n["diff"]) for n in noise if n["label"] == label]
            row = {"arm": arm, "seed": seed, "baseline_seed": bseed, "label": label, **st,
                   "noise": max(level) if level else None}
            row["verdict"] = verdict(row)
            comparisons.append(row)
    return {"metric": metric, "noise": noise, "comparisons": comparisons}


def verdict(row: dict) -> str:
    """Plain words: does the difference exceed the measured seed-to-seed noise?"""
    low, high = row["diff_low"], row["diff_high"]
    if low is None:
        return "one sequence: no interval"
    excludes = low > 0 or high < 0
    side = "worse" if row["diff"] > 0 else "better"
    if row["noise"] is None:
        return (f"{side}, interval excludes 0 (noise not measured)" if excludes
                else "interval includes 0 (noise not measured)")
    if excludes and abs(row["diff"]) > row["noise"]:
        return f"{side}: exceeds the noise"
    if excludes:
        return "interval excludes 0 but within seed-to-seed noise"
    return "within noise (interval includes 0)"


def _labels(a: dict, b: dict) -> list[str]:
    common = set(a) & set(b)
    return sorted(common, key=lambda s: math.inf if not s.isdigit() else int(s))


def _ci(mean, low, high, fmt="{:+.4f}") -> str:
    if mean is None:
        return "–"
    text = fmt.format(mean)
    return text if low is None else f"{text} [{fmt.format(low)}, {fmt.format(high)}]"


def markdown(result: dict, protocol: str) -> str:
    """The tables of :func:`analyse` as Markdown."""
    m = result["metric"]
    lines = [f"# Memory ablation statistics: {protocol}, {m}", "",
             f"Per-sequence paired differences `{m}(arm) - {m}(none)` (same seed; mean and bootstrap 95% "
             "interval over sequences), geometric-mean ratios arm / none, and the largest seed-to-seed "
             "mean difference at that length (noise). A difference exceeds the noise when its interval "
             "excludes 0 and its size is above the noise.", "",
             "| arm | seed | length | n | none | arm | difference [95%] | ratio [95%] | noise | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["comparisons"]:
        lines.append(
            f"| {r['arm']} | {r['seed']} | {r['label']} | {r['n']} | {r['mean_b']:.4f} | {r['mean_a']:.4f} | "
            f"{_ci(r['diff'], r['diff_low'], r['diff_high'])} | "
            f"{_ci(r['ratio'], r['ratio_low'], r['ratio_high'], '{:.3f}')} | "
            f"{_ci(r['noise'], None, None, '{:.4f}')} | {r['verdict']} |")
    lines += ["", "Seed-to-seed differences (retraining only; later seed minus first):", "",
              "| arm | seeds | length | n | difference [95%] | ratio [95%] |", "|---|---|---|---|---|---|"]
    for r in result["noise"]:
        lines.append(f"| {r['arm']} | {r['seeds'][1]} - {r['seeds'][0]} | {r['label']} | {r['n']} | "
                     f"{_ci(r['diff'], r['diff_low'], r['diff_high'])} | "
                     f"{_ci(r['ratio'], r['ratio_low'], r['ratio_high'], '{:.3f}')} |")
    if not result["noise"]:
        lines.append("| (no arm with two seeds yet) | | | | | |")
    return "\n".join(lines) + "\n"


def find_runs(root: Path, protocol: str) -> dict[tuple[str, int], dict]:
    """(arm, seed) -> report of ``root/<arm>_s<seed>/eval/<protocol>/report.json``."""
    runs = {}
    for path in sorted(root.glob(f"*_s*/eval/{protocol}/report.json")):
        match = RUN_NAME.match(path.parents[2].name)
        if match:
            runs[(match["arm"], int(match["seed"]))] = {**json.loads(path.read_text()),
                                                        REPORT_DIR_KEY: str(path.parent)}
    return runs


def compare_reports(a: Path, b: Path, metric: str) -> str:
    """Paired statistics of report ``a`` against report ``b`` (same protocol), one line per length."""
    values = []
    for path in (a, b):
        try:
            values.append(per_sequence(json.loads(path.read_text()), metric, path.parent))
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise ValueError(f"{path}: not a readable recon eval report.json ({e})") from e
    lines = [f"{metric}: {a} vs {b} (paired over sequences; bootstrap 95% intervals)"]
    for label in _labels(*values):
        st = paired(values[0][label], values[1][label])
        if st is None:
            continue
        ratio = "" if st["ratio"] is None else (
            f", geometric-mean ratio {st['ratio']:.3f}"
            + ("" if st["ratio_low"] is None else f" [{st['ratio_low']:.3f}, {st['ratio_high']:.3f}]"))
        x, y = values[0][label], values[1][label]
        better = sum(x[n] < y[n] for n in x if n in y)
        diff = _ci(st["diff"], st["diff_low"], st["diff_high"])
        lines.append(f"{label}: n={st['n']}, mean {st['mean_a']:.4f} vs {st['mean_b']:.4f}, difference "
                     f"{diff}{ratio}, lower on {better}/{st['n']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.ablation_stats",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="runs/ablation2", help="ablation root (default: %(default)s)")
    parser.add_argument("--protocol", default="synthetic_loops",
                        help="protocol folder (default: %(default)s)")
    parser.add_argument("--metric", default="ate_rmse", choices=sorted(METRICS))
    parser.add_argument("--out", help="folder for stats.md and stats.json (required without --pair)")
    parser.add_argument("--pair", nargs=2, metavar=("A", "B"), type=Path,
                        help="instead: compare two report.json files of one protocol (A against B)")
    args = parser.parse_args(argv)
    if args.pair:
        try:
            print(compare_reports(*args.pair, args.metric))
        except ValueError as e:
            print(f"ablation_stats: error: {e}", file=sys.stderr)
            return 2
        return 0
    if not args.out:
        parser.error("--out is required (or --pair A B)")
    runs = find_runs(Path(args.root), args.protocol)
    if not any(arm == BASELINE for arm, _ in runs):
        print(f"ablation_stats: error: no {BASELINE}_s<seed>/eval/{args.protocol}/report.json under "
              f"{args.root}", file=sys.stderr)
        return 2
    result = analyse(runs, args.metric)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.metric == "ate_rmse" else f"_{args.metric}"
    (out / f"stats{suffix}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"stats{suffix}.md").write_text(markdown(result, args.protocol))
    print(f"wrote {out / f'stats{suffix}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
