"""Comparison reports of several checkpoints (or memory types) on one protocol.

Written to an output folder:

- ``report.json``: everything (protocol, settings, per model: summary rows per length, drift
  rates, timing, and every sequence's prefix metrics and per-frame curves); NaN is written as null.
  Lists of numbers (the per-frame curves, memory norms) are written on one line with
  ``CURVE_DIGITS`` significant digits (:func:`report_json`), which keeps a 3 x 10,000-frame report
  of several models to a few MB; every other number keeps its full precision.
- ``report.md``: Markdown tables: error vs sequence length, drift, per sequence.
- ``error_vs_length.png``: ATE RMSE and AbsRel against the prefix length, one line per model.
- ``per_frame_error.png``: the per-frame drift curves (alignment on the first n frames), mean over
  the sequences of each model.

Summary numbers are means over the sequences that reach a length (a sequence shorter than a
length does not count for it); ``full`` rows average each sequence's full length. Beside the
model's ATE every row has the baselines of the same frames (``static_ate_rmse``: a camera that never
moves; ``constant_velocity_ate_rmse``: one that keeps its initial motion; see
``recon.eval.pose_metrics``), ``ate_vs_static`` (the mean over sequences of model ATE / static ATE)
and ``sim3_scale`` (the mean scale of the model trajectory's Sim(3) alignment; None unless
``pose.align`` is ``sim3``). Reports written before these columns existed merge and render with
"–" in them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from recon.errors import InputError
from recon.eval.drift import SequenceEvaluation
from recon.eval.protocols import FULL, Protocol

REPORT_FORMAT = "streamrecon-eval-report/1"
# Significant digits of the numbers in lists (per-frame curves, memory norms) in report.json.
CURVE_DIGITS = 6
JSON_NAME, MARKDOWN_NAME = "report.json", "report.md"
LENGTH_PLOT, CURVE_PLOT = "error_vs_length.png", "per_frame_error.png"


@dataclass
class ModelRun:
    """One model's results on a protocol.

    Attributes:
        name: label in the report. checkpoint: where the weights came from.
        model: facts about the network (memory type, parameters, image size, signature).
        sequences: per-sequence drift evaluations.
    """

    name: str
    checkpoint: str
    model: dict = field(default_factory=dict)
    sequences: list[SequenceEvaluation] = field(default_factory=list)


def _get(*keys: str) -> Callable[[dict], float | None]:
    def getter(prefix: dict) -> float | None:
        node = prefix
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return None
            node = node[k]
        return None if node is None or isinstance(node, str) else float(node)

    getter.keys = keys  # the metric's path in a prefix dict (check_report checks it is a number)
    return getter


def _sim3_scale(prefix: dict) -> float | None:
    """The scale of the model trajectory's alignment when it is a Sim(3) (se3 / none fix it at 1)."""
    pose = prefix.get("pose")
    if not isinstance(pose, dict) or pose.get("align") != "sim3":
        return None
    return _get("pose", "scale")(prefix)


# (column key, Markdown header, getter on a prefix dict, number format)
COLUMNS = (
    ("ate_rmse", "ATE RMSE", _get("pose", "ate_rmse"), "{:.4f}"),
    ("static_ate_rmse", "ATE static camera", _get("pose_baselines", "static_ate_rmse"), "{:.4f}"),
    ("constant_velocity_ate_rmse", "ATE const. velocity",
     _get("pose_baselines", "constant_velocity_ate_rmse"), "{:.4f}"),
    ("ate_vs_static", "ATE / static", _get("pose", "ate_vs_static"), "{:.3f}"),
    ("sim3_scale", "Sim(3) scale", _sim3_scale, "{:#.4g}"),
    ("rpe_trans_rmse", "RPE trans", _get("pose", "rpe_trans_rmse"), "{:.4f}"),
    ("rpe_rot_rmse_deg", "RPE rot (deg)", _get("pose", "rpe_rot_rmse_deg"), "{:.3f}"),
    ("abs_rel_median", "AbsRel (frame median)", _get("depth", "median", "abs_rel"), "{:.4f}"),
    ("delta1_median", "δ<1.25 (frame median)", _get("depth", "median", "delta1"), "{:.4f}"),
    ("abs_rel_sequence", "AbsRel (seq. median)", _get("depth", "median_sequence", "abs_rel"), "{:.4f}"),
    ("delta1_sequence", "δ<1.25 (seq. median)", _get("depth", "median_sequence", "delta1"), "{:.4f}"),
    ("abs_rel_scale_shift", "AbsRel (scale+shift)", _get("depth", "scale_shift", "abs_rel"), "{:.4f}"),
    ("chamfer_l1", "Chamfer-L1", _get("cloud", "chamfer_l1"), "{:.4f}"),
    ("fscore", "F-score", _get("cloud", "fscore"), "{:.4f}"),
)
DRIFT_KEYS = (
    ("ate_per_100_frames", "ATE drift / 100 frames"),
    ("abs_rel_fixed_scale_per_100_frames", "AbsRel drift / 100 frames (scale of first n)"),
)


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _label_order(label: str) -> float:
    return math.inf if label == FULL else float(label)


def summarize(run: ModelRun) -> list[dict]:
    """Rows per length label: mean of every column over the sequences reaching that length."""
    by_label: dict[str, list[dict]] = {}
    for seq in run.sequences:
        for prefix in seq.prefixes:
            by_label.setdefault(prefix["label"], []).append(prefix)
    rows = []
    for label in sorted(by_label, key=_label_order):
        prefixes = by_label[label]
        row = {"label": label, "length": float(np.mean([p["length"] for p in prefixes])),
               "sequences": len(prefixes)}
        for key, _, getter, _ in COLUMNS:
            row[key] = _mean([getter(p) for p in prefixes])
        rows.append(row)
    return rows


def drift_summary(run: ModelRun) -> dict:
    """Mean drift rates and timing over the sequences of a run."""
    out = {key: _mean([s.drift.get(key) for s in run.sequences]) for key, _ in DRIFT_KEYS}
    out["align_frames"] = _mean([s.drift.get("align_frames") for s in run.sequences])
    for key in ("fps", "latency_ms_median"):
        out[key] = _mean([s.timing.get(key) for s in run.sequences])
    return out


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def build_report(protocol: Protocol, runs: list[ModelRun], settings: dict | None = None) -> dict:
    """The report as a JSON-ready dict (NaN -> None)."""
    models = []
    for run in runs:
        models.append({
            "name": run.name,
            "checkpoint": run.checkpoint,
            "model": run.model,
            "summary": summarize(run),
            "drift": drift_summary(run),
            "sequences": [s.to_dict() for s in run.sequences],
        })
    return _json_safe(_envelope(protocol.to_dict(), settings or {}, models))


def _envelope(protocol: dict, settings: dict, models: list[dict]) -> dict:
    """The report dict around its model entries."""
    return {
        "format": REPORT_FORMAT,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "protocol": protocol,
        "settings": settings,
        "columns": {key: header for key, header, _, _ in COLUMNS},
        "models": models,
    }


def _fmt(value, spec: str) -> str:
    return "–" if value is None else spec.format(value)


def markdown_report(report: dict) -> str:
    """Markdown tables of a report dict (as :func:`build_report` returns)."""
    proto = report["protocol"]
    rows = [row for m in report["models"] for row in m["summary"]]
    used = [c for c in COLUMNS if any(row.get(c[0]) is not None for row in rows)]
    lines = [f"# Evaluation: {proto['name']}", ""]
    if proto.get("description"):
        lines += [proto["description"].strip(), ""]
    settings = report.get("settings", {})
    if settings.get("command"):
        lines += ["Command:", "", "```bash", settings["command"], "```", ""]
    merged = [m["settings"].get("command") for m in settings.get("merged_from", [])]
    merged = [c for c in merged if c]
    if merged:
        lines += ["Merged from the reports of:", "", "```bash", *merged, "```", ""]
    lines += [
        f"Created {report['created_utc']}. Pose alignment: {proto['pose']['align']} on each prefix; drift "
        f"curves align on the first {proto['pose']['drift_align_frames']} frames.",
        "",
        "## Models",
        "",
        "| model | checkpoint | memory | parameters | image size |",
        "|---|---|---|---|---|",
    ]
    for m in report["models"]:
        facts = m.get("model") or {}
        size = "x".join(str(v) for v in facts.get("image_size", [])) or "–"
        params = facts.get("num_parameters")
        lines.append(f"| {m['name']} | {m['checkpoint']} | {facts.get('memory_type', '–')} | "
                     f"{'–' if params is None else f'{params:,}'} | {size} |")
    lines += [
        "",
        "## Error vs sequence length",
        "",
        "| model | length | sequences | " + " | ".join(c[1] for c in used) + " |",
        "|---|---|---|" + "---|" * len(used),
    ]
    for m in report["models"]:
        for row in m["summary"]:
            label = f"full ({row['length']:.0f})" if row["label"] == FULL else row["label"]
            cells = [_fmt(row.get(c[0]), c[3]) for c in used]
            lines.append(f"| {m['name']} | {label} | {row['sequences']} | " + " | ".join(cells) + " |")
    lines += ["", "## Drift", "", "| model | " + " | ".join(h for _, h in DRIFT_KEYS) + " | frames/s | "
              "median latency (ms) |", "|---|" + "---|" * (len(DRIFT_KEYS) + 2)]
    for m in report["models"]:
        d = m["drift"]
        cells = [_fmt(d.get(k), "{:+.5f}") for k, _ in DRIFT_KEYS]
        cells += [_fmt(d.get("fps"), "{:.1f}"), _fmt(d.get("latency_ms_median"), "{:.1f}")]
        lines.append(f"| {m['name']} | " + " | ".join(cells) + " |")
    lines += ["", "## Per sequence (longest prefix)", "",
              "| model | sequence | frames | ATE RMSE | ATE static camera | ATE const. velocity | "
              "ATE / static | Sim(3) scale | AbsRel (frame median) | ATE drift / 100 frames |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for m in report["models"]:
        for s in m["sequences"]:
            last = s["prefixes"][-1] if s["prefixes"] else {}
            cells = [
                str(s["num_frames"]),
                _fmt(_get("pose", "ate_rmse")(last), "{:.4f}"),
                _fmt(_get("pose_baselines", "static_ate_rmse")(last), "{:.4f}"),
                _fmt(_get("pose_baselines", "constant_velocity_ate_rmse")(last), "{:.4f}"),
                _fmt(_get("pose", "ate_vs_static")(last), "{:.3f}"),
                _fmt(_sim3_scale(last), "{:#.4g}"),
                _fmt(_get("depth", "median", "abs_rel")(last), "{:.4f}"),
                _fmt(s["drift"].get("ate_per_100_frames"), "{:+.5f}"),
            ]
            lines.append(f"| {m['name']} | {s['name']} | " + " | ".join(cells) + " |")
    lines += _health_lines(report)
    lines += ["", f"![error vs length]({LENGTH_PLOT})", "", f"![per-frame error]({CURVE_PLOT})", ""]
    return "\n".join(lines)


def _health_lines(report: dict) -> list[str]:
    """The "Stream health" table: non-finite frames and the memory-state norm of every sequence."""
    rows = [(m["name"], s) for m in report["models"] for s in m["sequences"] if s.get("health")]
    if not rows:
        return []
    lines = ["", "## Stream health", "",
             "Frames whose pose or depth held a NaN / inf, and the largest memory-state tensor norm "
             "(sampled every `memory_norm_every` frames; growth = max over the second half of the samples / "
             "max over samples 10-50%, about 1 for a bounded state).", "",
             "| model | sequence | frames | non-finite frames | memory norm, first sample | last | max "
             "| growth |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in rows:
        h = s["health"]
        norms = [v for v in h.get("memory_norm", []) if v is not None]
        first, last, top = (norms[0], norms[-1], max(norms)) if norms else (None, None, None)
        cells = [str(s["num_frames"]), str(h.get("nonfinite_frames", "–")), _fmt(first, "{:.4g}"),
                 _fmt(last, "{:.4g}"), _fmt(top, "{:.4g}"), _fmt(h.get("memory_norm_growth"), "{:.3f}")]
        lines.append(f"| {name} | {s['name']} | " + " | ".join(cells) + " |")
    return lines


def _mean_curve(curves: list[list]) -> np.ndarray:
    """NaN-mean of curves of different lengths, frame by frame."""
    n = max((len(c) for c in curves), default=0)
    stack = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        stack[i, : len(c)] = np.asarray([np.nan if v is None else v for v in c], dtype=np.float64)
    with np.errstate(all="ignore"):
        counts = np.isfinite(stack).sum(axis=0)
        return np.where(counts > 0, np.nansum(stack, axis=0) / np.maximum(counts, 1), np.nan)


def plot_report(report: dict, out_dir: Path) -> list[Path]:
    """Write the two PNG figures (matplotlib, Agg backend); returns their paths."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = (("ate_rmse", "ATE RMSE (Sim(3) on the prefix)"),
              ("abs_rel_sequence", "AbsRel (sequence median scale)"),
              ("abs_rel_median", "AbsRel (per-frame median scale)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), constrained_layout=True)
    for ax, (key, title) in zip(axes, panels, strict=True):
        for m in report["models"]:
            pts = [(r["length"], r[key]) for r in m["summary"] if r.get(key) is not None]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, marker="o", label=m["name"])
        if key == "ate_rmse":  # the baselines of the ground truth, from the first model reporting each length
            for base, style, name in (("static_ate_rmse", "--", "static camera"),
                                      ("constant_velocity_ate_rmse", ":", "constant velocity")):
                pts = {}
                for m in report["models"]:
                    for r in m["summary"]:
                        if r.get(base) is not None:
                            pts.setdefault(r["label"], (r["length"], r[base]))
                if pts:
                    x, y = zip(*sorted(pts.values()), strict=True)
                    ax.plot(x, y, style, color="grey", label=name)
        ax.set(title=title, xlabel="sequence length (frames)", xscale="log")
        ax.grid(True, alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend()
    paths = [out_dir / LENGTH_PLOT, out_dir / CURVE_PLOT]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    n = report["protocol"]["pose"]["drift_align_frames"]
    curves = (("ate", "camera-centre error (alignment on the first n frames)"),
              ("abs_rel_fixed_scale", "AbsRel at the depth scale of the first n frames"))
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), constrained_layout=True)
    for ax, (key, title) in zip(axes, curves, strict=True):
        for m in report["models"]:
            y = _mean_curve([s["curves"].get(key, []) for s in m["sequences"]])
            if len(y) and np.isfinite(y).any():
                ax.plot(np.arange(len(y)), y, label=m["name"], linewidth=1.2)
        ax.axvline(n - 0.5, color="grey", linestyle="--", linewidth=0.8, label=f"n = {n}")
        ax.set(title=title, xlabel="frame")
        ax.grid(True, alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def write_report(
    out_dir: str | Path, protocol: Protocol, runs: list[ModelRun], settings: dict | None = None
) -> dict[str, Path]:
    """Write report.json, report.md and the PNG plots into ``out_dir``; returns their paths.

    The plots and the Markdown come first and report.json last (each moved into place atomically
    from a temporary folder: :func:`write_report_dict`), so a report.json on disk always belongs to
    a finished evaluation.
    """
    return write_report_dict(out_dir, build_report(protocol, runs, settings))


def write_report_dict(out_dir: str | Path, report: dict) -> dict[str, Path]:
    """Write a report dict (:func:`build_report`, :func:`merge_reports`) as :func:`write_report` does.

    Every file is rendered into a temporary sibling folder first and moved into ``out_dir`` only
    when all of them were written (report.json last): a report that fails to render leaves an
    existing report folder as it was.

    Raises:
        InputError: ``out_dir`` is an existing file, or cannot be created.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a folder (expected a report folder)")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as e:
        raise InputError(f"--out {out_dir}: cannot be created ({e.strerror})") from None
    try:
        plots = [p.name for p in plot_report(report, tmp)]
        (tmp / MARKDOWN_NAME).write_text(markdown_report(report))
        (tmp / JSON_NAME).write_text(report_json(report))
        out_dir.mkdir(exist_ok=True)
        for name in (*plots, MARKDOWN_NAME, JSON_NAME):
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"json": out_dir / JSON_NAME, "markdown": out_dir / MARKDOWN_NAME,
            "length_plot": out_dir / plots[0], "curve_plot": out_dir / plots[1]}


def report_json(report: dict) -> str:
    """report.json's text: indented one level per nesting, lists of numbers on one line.

    Dicts and lists that hold containers are indented like ``json.dumps(indent=1)``; a list whose
    items are all numbers or null is written on one line, its floats with ``CURVE_DIGITS``
    significant digits (writing again reads back the same text). Raises ValueError on NaN / inf,
    like ``json.dumps(allow_nan=False)`` (:func:`build_report` turns them into null first).
    """
    return _dumps(report, 0)


def _is_number(x) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def _dumps(value, level: int) -> str:
    if isinstance(value, dict):
        brackets, items = "{}", [f"{json.dumps(str(k))}: {_dumps(v, level + 1)}" for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        if all(_is_number(x) for x in value):
            return "[" + ", ".join(json.dumps(float(f"{x:.{CURVE_DIGITS}g}") if isinstance(x, float) else x,
                                              allow_nan=False) for x in value) + "]"
        brackets, items = "[]", [_dumps(v, level + 1) for v in value]
    else:
        return json.dumps(value, allow_nan=False)
    if not items:
        return brackets
    inner = " " * (level + 1)
    return brackets[0] + "\n" + ",\n".join(inner + item for item in items) + "\n" + " " * level + brackets[1]


# Leaves of a report's model entries that are text; every other leaf is a finite number or null.
_TEXT_KEYS = frozenset({"name", "checkpoint", "label", "align", "memory_type", "signature"})


# Network facts that are lists of numbers; every other fact is one value.
_LIST_FACTS = frozenset({"image_size", "memory_depths"})
# Paths in a prefix dict that the tables and plots read as numbers.
_METRIC_PATHS = tuple(sorted({c[2].keys for c in COLUMNS if hasattr(c[2], "keys")} | {("pose", "scale")}))


def _key(k) -> str:
    """A key as it appears in a message path (quoted unless it is a plain name)."""
    return k if isinstance(k, str) and k.isidentifier() else json.dumps(k)


def _show(value) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _scalar(value, key: str, where: str, path: str) -> None:
    """A metric: a finite number or null (text only under the keys in _TEXT_KEYS)."""
    if value is None or (isinstance(value, str) and key in _TEXT_KEYS):
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (isinstance(value, float) and not math.isfinite(value)) or (
            isinstance(value, int) and abs(value) > 2**63):
        raise ValueError(f"{path}: {where} is {_show(value)}, expected a finite number or null")


def _flat(node, where: str, path: str) -> None:
    """A mapping of metrics (summary row, drift, timing)."""
    if not isinstance(node, dict):
        raise ValueError(f"{path}: {where} is {_show(node)}, expected a mapping")
    for k, v in node.items():
        _scalar(v, k, f"{where}.{_key(k)}", path)


def _nested(node, where: str, path: str) -> None:
    """A mapping of metrics and mappings of metrics (a prefix's pose / depth / cloud entries)."""
    if not isinstance(node, dict):
        raise ValueError(f"{path}: {where} is {_show(node)}, expected a mapping")
    for k, v in node.items():
        if isinstance(v, dict) and k not in _TEXT_KEYS:
            _nested(v, f"{where}.{_key(k)}", path)
        else:
            _scalar(v, k, f"{where}.{_key(k)}", path)


def _require(node, key: str, kind, where: str, path: str):
    value = node.get(key) if isinstance(node, dict) else None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        names = {"dict": "a mapping", "list": "a list", "str": "text", "int": "an integer",
                 "int or float": "a number"}.get(names, names)
        raise ValueError(f"{path}: {where}.{_key(key)} is {_show(value)}, expected {names}")
    return value


def check_report(path: str, report: dict) -> None:
    """A report.json's structure and values as :func:`markdown_report` and :func:`plot_report` read
    them: every metric a finite number or null, every table a mapping, every curve a list.

    Raises:
        ValueError: naming the file and the first offending entry (e.g. ``models[0].summary[1].ate_rmse``).
    """
    protocol = _require(report, "protocol", dict, "report", path)
    _require(protocol, "name", str, "protocol", path)
    pose = _require(protocol, "pose", dict, "protocol", path)
    _require(pose, "align", str, "protocol.pose", path)
    _require(pose, "drift_align_frames", int, "protocol.pose", path)
    if not isinstance(report.get("settings", {}), dict):
        raise ValueError(f"{path}: settings is {_show(report.get('settings'))}, expected a mapping")
    for i, model in enumerate(_require(report, "models", list, "report", path)):
        where = f"models[{i}]"
        if not isinstance(model, dict):
            raise ValueError(f"{path}: {where} is {_show(model)}, expected a mapping")
        _require(model, "name", str, where, path)
        _require(model, "checkpoint", str, where, path)
        facts = model.get("model", {})
        if not isinstance(facts, dict):
            raise ValueError(f"{path}: {where}.model is {_show(facts)}, expected a mapping")
        for k, v in facts.items():
            listed = isinstance(v, list) and k in _LIST_FACTS
            for j, item in enumerate(v if listed else [v]):
                _scalar(item, k, f"{where}.model.{_key(k)}" + (f"[{j}]" if listed else ""), path)
        _flat(_require(model, "drift", dict, where, path), f"{where}.drift", path)
        for j, row in enumerate(_require(model, "summary", list, where, path)):
            _require(row, "label", str, f"{where}.summary[{j}]", path)
            _require(row, "length", (int, float), f"{where}.summary[{j}]", path)
            _require(row, "sequences", int, f"{where}.summary[{j}]", path)
            _flat(row, f"{where}.summary[{j}]", path)
        for j, seq in enumerate(_require(model, "sequences", list, where, path)):
            w = f"{where}.sequences[{j}]"
            _require(seq, "name", str, w, path)
            _require(seq, "num_frames", int, w, path)
            _flat(_require(seq, "drift", dict, w, path), f"{w}.drift", path)
            _flat(seq.get("timing", {}), f"{w}.timing", path)
            health = dict(seq.get("health", {}))
            norms = health.pop("memory_norm", [])
            _flat(health, f"{w}.health", path)
            if not isinstance(norms, list):
                raise ValueError(f"{path}: {w}.health.memory_norm is {_show(norms)}, expected a list")
            for k, v in enumerate(norms):
                _scalar(v, "memory_norm", f"{w}.health.memory_norm[{k}]", path)
            for c, curve in _require(seq, "curves", dict, w, path).items():
                _require(seq["curves"], c, list, f"{w}.curves", path)
                for k, v in enumerate(curve):
                    _scalar(v, c, f"{w}.curves.{_key(c)}[{k}]", path)
            for k, prefix in enumerate(_require(seq, "prefixes", list, w, path)):
                _require(prefix, "label", str, f"{w}.prefixes[{k}]", path)
                _require(prefix, "length", (int, float), f"{w}.prefixes[{k}]", path)
                _nested(prefix, f"{w}.prefixes[{k}]", path)
                for keys in _METRIC_PATHS:  # what the tables read must be a number, not a mapping
                    node = prefix
                    for key in keys:
                        node = node.get(key) if isinstance(node, dict) else None
                    _scalar(node, keys[-1], f"{w}.prefixes[{k}].{'.'.join(keys)}", path)


def merge_reports(reports: list[tuple[str, dict]]) -> dict:
    """One report from several ``report.json`` dicts of the same protocol (e.g. models evaluated in
    parallel processes or on different machines).

    Args:
        reports: (source path, report dict) pairs, in the order the models should appear.

    Returns:
        a report dict whose ``models`` are all the inputs' models and whose ``settings`` keep each
        input's settings under ``merged_from``.

    Raises:
        ValueError: not a report of this format, a metric that is not a number (:func:`check_report`),
            protocols that differ, or a model name that appears twice; the message names the file.
    """
    if not reports:
        raise ValueError("merge: expected at least one report.json")
    first_path, first = reports[0]
    models, names, sources = [], set(), []
    for path, report in reports:
        if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
            found = report.get("format") if isinstance(report, dict) else type(report).__name__
            raise ValueError(f"{path}: expected a {REPORT_FORMAT} report.json, found format {found!r}")
        check_report(path, report)
        if report.get("protocol") != first.get("protocol"):
            raise ValueError(
                f"{path}: protocol {report.get('protocol', {}).get('name')!r} differs from the one in "
                f"{first_path} ({first.get('protocol', {}).get('name')!r}, or same name, other settings)"
            )
        for model in report.get("models", []):
            if model["name"] in names:
                raise ValueError(f"{path}: model name {model['name']!r} appears in more than one report")
            names.add(model["name"])
            models.append(model)
        sources.append({"report": str(path), "settings": report.get("settings", {})})
    return _envelope(first["protocol"], {"merged_from": sources}, models)
