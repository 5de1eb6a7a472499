"""tools/bench/bench_run_long.summarise on a hand-made timing table."""

from __future__ import annotations

import numpy as np
import pytest

from tools.bench.bench_run_long import same_phase, schedule_classes, summarise


def test_summarise_by_hand():
    n = 400
    lat = np.full(n, 20.0)
    lat[300:400:3] = 50.0                      # every third late frame measures a revisit
    rss = np.linspace(100.0, 140.0, n)
    timing = np.stack((np.arange(n), lat, rss), 1)
    row = summarise(timing, (100, 200), (300, 400), 200)
    assert row["flatness"] == 1.0              # the median skips the measured frames ...
    late = np.r_[np.full(66, 20.0), np.full(34, 50.0)]
    assert row["mean_flatness"] == pytest.approx(late.mean() / 20.0)   # ... the mean does not
    assert row["rss_growth_mb"] == pytest.approx(rss[-1] - rss[200])
    assert row["p95_latency_ms"] == 50.0
    assert row["mean_fps"] == pytest.approx(1000.0 / lat.mean())
    assert row["median_per_500_ms"] == []          # fewer than 500 frames
    assert row["cpu_flatness"] is None             # a timing.txt without the cpu_ms column


def test_cpu_flatness_reads_the_cpu_column():
    """Wall time 20 -> 30 ms while the step's own CPU time stays 18 ms: contention, not more work."""
    n = 400
    lat = np.where(np.arange(n) >= 300, 30.0, 20.0)
    cpu = np.full(n, 18.0)
    cpu[300:] = 19.8
    timing = np.stack((np.arange(n), lat, np.full(n, 100.0), cpu), 1)
    row = summarise(timing, (100, 200), (300, 400), 200)
    assert row["flatness"] == 1.5 and row["cpu_flatness"] == pytest.approx(1.1)


def test_same_phase_windows_by_hand():
    """A loop of 300 frames whose frames 250-300 of every pass cost 40 ms (the rest 20 ms): the late
    window 1150-1200 and its earlier copies 850-900, 550-600, 250-300 all read 40 ms, so the
    same-phase ratio is 1 while the 100-200 bar would read 2."""
    n = 1200
    lat = np.where(np.arange(n) % 300 >= 250, 40.0, 20.0)
    lat[1150:1200] += 4.0                           # the late window is 10% slower than before
    timing = np.stack((np.arange(n), lat, np.full(n, 100.0)), 1)
    out = same_phase(timing, (1150, 1200), 300)
    windows = ["1150-1200", "850-900", "550-600", "250-300"]
    assert [w["window"] for w in out["same_phase_medians_ms"]] == windows
    assert [w["median_ms"] for w in out["same_phase_medians_ms"]] == [44.0, 40.0, 40.0, 40.0]
    assert out["same_phase_flatness"] == pytest.approx(44.0 / 40.0)   # against 550-600 (second pass)
    row = summarise(timing, (100, 200), (1150, 1200), 200)
    assert row["median_per_500_ms"] == [20.0, 20.0]


def test_schedule_classes_by_hand():
    """Every 4th frame calibrates (+5 ms), every 3rd late frame measures a revisit (+6 ms): no frame
    gets dearer, yet the late median moves (75% of the early frames do neither, 50% of the late
    ones); the class medians are flat, and a 10% dearer per-frame step shows in base_flatness."""
    n = 400
    f = np.arange(n)
    lat = 40.0 + 5.0 * (f % 4 == 0) + 6.0 * ((f % 3 == 0) & (f >= 300))
    timing = np.stack((f, lat, np.full(n, 100.0)), 1)
    out = schedule_classes(timing, (100, 200), (300, 400), {"calibration": 4, "revisit": 3})
    classes = out["schedule_classes"]
    assert classes["none"]["median_ms_low"] == 40.0 and classes["none"]["median_ms_high"] == 40.0
    assert classes["calibration"]["median_ms_low"] == 45.0
    assert classes["calibration+revisit"]["median_ms_high"] == 51.0
    assert classes["revisit"]["median_ms_low"] == 40.0 and classes["revisit"]["median_ms_high"] == 46.0
    assert out["base_flatness"] == 1.0
    assert classes["none"]["frames_low"] == sum(1 for k in range(100, 200) if k % 4 and k % 3)
    assert summarise(timing, (100, 200), (300, 400), 200)["flatness"] > 1.0   # the bar's median moved
    lat[300:] += 4.0
    timing = np.stack((f, lat, np.full(n, 100.0)), 1)
    assert schedule_classes(timing, (100, 200), (300, 400), {"calibration": 4, "revisit": 3})[
        "base_flatness"] == pytest.approx(1.1)
