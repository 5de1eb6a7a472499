"""tools/bench/bench_refine runs every setting on the same frames and reports ratios to 'off'."""

from __future__ import annotations

import json

from tools.bench import bench_refine


def test_bench_refine_reports_every_setting(tmp_path):
    out = tmp_path / "bench_refine.json"
    assert bench_refine.main(["--frames", "12", "--out", str(out)]) == 0
    rows = {r["setting"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == set(bench_refine.SETTINGS)
    assert rows["off"]["ratio_to_off"] == 1.0
    assert all(r["frames"] == 2 and r["median_ms"] > 0 for r in rows.values())
