"""tools/bench/bench_run_long.summarise on a hand-made timing table."""

from __future__ import annotations

import numpy as np
import pytest

from tools.bench.bench_run_long import summarise


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
