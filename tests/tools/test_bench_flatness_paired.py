"""tools/bench/bench_flatness_paired: the interleaved windows by hand, and a short real stream."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tools.bench.bench_flatness_paired import paired_timing, summarise_paired


def _rows(first: int, lat: np.ndarray, cpu: np.ndarray, parity: int) -> np.ndarray:
    n = len(lat)
    return np.stack((np.arange(first, first + n), lat, cpu, 2 * np.arange(n) + parity), 1)


def test_summarise_paired_by_hand():
    """Every 4th frame calibrates (+5 ms), every 3rd late frame measures a revisit (+6 ms), and the
    late frames run on a machine 2% slower in wall time only: the class medians say which work
    grew, the CPU ratio leaves the wall-time slowdown out."""
    f_early, f_late = np.arange(100, 200), np.arange(9900, 10000)
    early = 40.0 + 5.0 * (f_early % 4 == 0)
    late = 40.0 + 5.0 * (f_late % 4 == 0) + 6.0 * (f_late % 3 == 0)
    timing = {"early": _rows(100, early, early - 2.0, 0), "late": _rows(9900, late * 1.02, late - 2.0, 1)}
    out = summarise_paired(timing, {"calibration": 4, "revisit": 3})
    assert out["window_low"] == "100-200" and out["window_high"] == "9900-10000"
    assert out["median_latency_ms_low"] == float(np.median(early))
    assert out["flatness"] == pytest.approx(np.median(late * 1.02) / np.median(early))
    assert out["cpu_flatness"] == pytest.approx(np.median(late - 2.0) / np.median(early - 2.0))
    assert out["mean_flatness"] == pytest.approx(late.mean() * 1.02 / early.mean())
    classes = out["schedule_classes"]
    assert classes["none"]["flatness"] == pytest.approx(1.02)
    assert classes["revisit"]["median_ms_high"] == pytest.approx(46.0 * 1.02)
    assert classes["calibration+revisit"]["median_ms_high"] == pytest.approx(51.0 * 1.02)
    assert out["base_flatness"] == pytest.approx(1.02)
    assert "schedule_classes" not in summarise_paired(timing, {})


@pytest.fixture(scope="module")
def short_video(tmp_path_factory):
    from data.synth import SynthConfig, synthetic_sequence, write_tum_sequence

    out = tmp_path_factory.mktemp("paired") / "seq"
    seq = synthetic_sequence(SynthConfig(num_frames=12, width=128, height=96, trajectory="walk",
                                         shadows=False), seed=3)
    write_tum_sequence(seq, out, fps=30.0, video=True)
    return out / "video.mp4"


def test_paired_timing_interleaves_the_two_windows(short_video):
    timing = paired_timing(str(short_video), None, (2, 5), (8, 11), True, True, progress=False)
    assert timing["early"][:, 0].tolist() == [2, 3, 4] and timing["late"][:, 0].tolist() == [8, 9, 10]
    assert timing["early"][:, 3].tolist() == [0, 2, 4] and timing["late"][:, 3].tolist() == [1, 3, 5]
    assert (timing["early"][:, 1:3] > 0).all() and (timing["late"][:, 1:3] > 0).all()


def test_paired_timing_rejects_a_short_source_and_unequal_windows(short_video):
    with pytest.raises(ValueError, match="12 frames, the window needs 20"):
        paired_timing(str(short_video), None, (2, 4), (18, 20), True, True, progress=False)
    with pytest.raises(ValueError, match="same length"):
        paired_timing(str(short_video), None, (2, 4), (6, 10), True, True, progress=False)


def test_cli_bad_input_exits_2(tmp_path, short_video):
    cmd = [sys.executable, "-m", "tools.bench.bench_flatness_paired"]
    missing = subprocess.run([*cmd, str(tmp_path / "none.mp4")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no such video" in missing.stderr
    window = subprocess.run([*cmd, str(short_video), "--late", "9-3"], capture_output=True, text=True)
    assert window.returncode == 2 and "FIRST < END" in window.stderr
    short = subprocess.run([*cmd, str(short_video), "--out", str(tmp_path / "o.json")],
                           capture_output=True, text=True)
    assert short.returncode == 2 and "the window needs 200" in short.stderr
    assert not (tmp_path / "o.json").exists()
