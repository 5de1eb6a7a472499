"""tools/ablation_restore: splitting a merged report is undone by recon eval's own merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recon.eval.report import merge_reports
from tools.ablation_restore import main, split_merged

COMMITTED = Path("docs/memory_ablation/synthetic_loops/report.json")


def test_split_then_merge_gives_the_committed_report_back():
    merged = json.loads(COMMITTED.read_text())
    pieces = split_merged(merged, str(COMMITTED))
    assert [str(p) for p, _ in pieces] == [s["report"] for s in merged["settings"]["merged_from"]]
    assert all(len(r["models"]) == 1 for _, r in pieces)
    again = merge_reports([(str(p), r) for p, r in pieces])
    assert again["models"] == merged["models"]
    assert again["settings"]["merged_from"] == merged["settings"]["merged_from"]
    assert again["protocol"] == merged["protocol"] and again["columns"] == merged["columns"]


def test_main_writes_each_arm_and_keeps_what_is_there(tmp_path, monkeypatch, capsys):
    merged = json.loads(COMMITTED.read_text())
    src = tmp_path / "merged.json"
    src.write_text(json.dumps(merged))
    monkeypatch.chdir(tmp_path)                  # the merged_from paths are relative (runs/...)
    assert main([str(src)]) == 0
    first = Path(merged["settings"]["merged_from"][0]["report"])
    assert json.loads(first.read_text())["models"] == merged["models"][:1]
    first.write_text("{}")
    assert main([str(src)]) == 0 and first.read_text() == "{}"      # kept without --force
    assert main([str(src), "--force"]) == 0
    assert json.loads(first.read_text())["models"] == merged["models"][:1]
    capsys.readouterr()


@pytest.mark.parametrize("content, message", [
    ("not json", "not a readable report.json"),
    (json.dumps({"format": "other"}), "expected a streamrecon-eval-report/1 report.json"),
])
def test_bad_input_exits_2(tmp_path, capsys, content, message):
    bad = tmp_path / "r.json"
    bad.write_text(content)
    assert main([str(bad)]) == 2
    assert message in capsys.readouterr().err


def test_unmerged_report_is_refused():
    merged = json.loads(COMMITTED.read_text())
    single = {**merged, "settings": {}, "models": merged["models"][:1]}
    with pytest.raises(ValueError, match="not a merged report"):
        split_merged(single, "x.json")
    short = {**merged, "models": merged["models"][:2]}
    with pytest.raises(ValueError, match="one model per input"):
        split_merged(short, "x.json")
