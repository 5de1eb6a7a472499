"""Restore the memory ablation's per-arm reports from the committed merged ones.

``tools/memory_ablation.sh report`` merges ``ROOT/<arm>_s<seed>/eval/<protocol>/report.json`` into
``DOCS/<protocol>/report.json`` (``recon eval --merge``: the inputs' models in order, each input's
settings under ``settings.merged_from``), and the run folders are not committed. On a fresh clone
this writes each merged model back to the path it came from, so that one more arm can be
evaluated and the report regenerated with every arm:

    python -m tools.ablation_restore docs/memory_ablation/synthetic_loops/report.json \\
        docs/memory_ablation/synthetic_drift_max1000/report.json

A report already at its path is left alone (``--force`` overwrites it). A file that is not a
merged report of one model per input exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recon.eval.report import REPORT_FORMAT, check_report, report_json


def split_merged(report: dict, where: str) -> list[tuple[Path, dict]]:
    """(original path, single-model report) for every input of a merged ``report``.

    Raises:
        ValueError: not a merged report of this format, or inputs and models that do not pair up.
    """
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise ValueError(f"{where}: expected a {REPORT_FORMAT} report.json")
    sources = report.get("settings", {}).get("merged_from")
    models = report.get("models", [])
    if not sources:
        raise ValueError(f"{where}: not a merged report (no settings.merged_from)")
    if len(sources) != len(models):
        raise ValueError(f"{where}: {len(sources)} merged inputs but {len(models)} models; "
                         "expected one model per input")
    common = {k: report[k] for k in report if k not in ("settings", "models")}
    return [(Path(src["report"]), {**common, "settings": src.get("settings", {}), "models": [model]})
            for src, model in zip(sources, models, strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="merged report.json files")
    parser.add_argument("--force", action="store_true", help="overwrite reports already present")
    args = parser.parse_args(argv)
    try:
        pieces = []
        for path in args.reports:
            try:
                report = json.loads(Path(path).read_text())
            except (OSError, ValueError) as err:
                raise ValueError(f"{path}: not a readable report.json ({err})") from err
            found = split_merged(report, path)
            check_report(path, report)
            pieces += found
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    for out, single in pieces:
        if out.exists() and not args.force:
            print(f"kept {out} (already there)")
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report_json(single))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
