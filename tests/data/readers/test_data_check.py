"""`recon data check` / `recon data formats` through recon.cli.main, and the synthetic generator's
TUM output read back by the TUM reader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data import FORMATS, load_sequence
from recon.cli import main
from tests.data.readers import fixtures as fx


def test_check_clean_fixture_prints_summary(tmp_path, capsys):
    w = fx.write_scannet(tmp_path, fx.render())
    assert main(["data", "check", str(w.root)]) == 0
    out = capsys.readouterr().out
    assert "format       scannet" in out and "frames       3 (checked 3)" in out
    assert "resolution   32x24" in out and "problems     none" in out
    assert "poses        3/3 frames (100.0% coverage)" in out
    assert "skipped invalid pose: 1" in out  # the -inf pose frame is reported as a note


def test_check_json_figures_match_the_data(tmp_path, capsys):
    w = fx.write_tum(tmp_path, fx.render(), masks=True)
    assert main(["data", "check", str(w.root), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    valid = ~w.invalid
    assert rep["format"] == "tum" and rep["checked_frames"] == 3 and rep["frames_with_mask"] == 3
    assert rep["valid_depth_fraction"] == pytest.approx(valid.mean())
    assert rep["depth_min"] == pytest.approx(w.gt.depth[valid].min(), abs=1e-4)
    assert rep["depth_max"] == pytest.approx(w.gt.depth[valid].max(), abs=1e-4)
    assert rep["resolutions"] == {"32x24": 3} and rep["problems"] == []


def test_check_reports_broken_frames_and_exits_1(tmp_path, capsys):
    w = fx.write_7scenes(
        tmp_path, fx.render(3, 640, 480, np.array([[525.0, 0, 320], [0, 525, 240], [0, 0, 1]]))
    )
    (w.root / "frame-000001.pose.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n" + "0 0 0 1\n")
    png = w.root / "frame-000002.depth.proj.png"
    png.write_bytes(png.read_bytes()[:100])
    assert main(["data", "check", str(w.root), "--format", "7scenes"]) == 1
    out = capsys.readouterr().out
    assert "problem      frame 1:" in out and "frame-000001.pose.txt" in out and "16 numbers), got 20" in out
    assert "problem      frame 2:" in out and "frame-000002.depth.proj.png: unreadable or truncated" in out
    assert "frames       3 (checked 1)" in out


def test_check_bad_layout_is_one_line_error(tmp_path, capsys):
    (tmp_path / "readme.md").write_text("not a dataset")
    assert main(["data", "check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recon data: error:") and "not a known dataset layout" in err
    assert len(err.strip().splitlines()) == 1


def test_check_reader_options_and_bad_option(tmp_path, capsys):
    w = fx.write_co3d(tmp_path, fx.render(2), fx.render(2, seed=7))
    assert (
        main(["data", "check", str(w.root.parent), "--format", "co3d", "-o", "sequence=189_20393_38136"]) == 0
    )
    assert "sequence     189_20393_38136" in capsys.readouterr().out
    assert main(["data", "check", str(w.root), "-o", "colour=1"]) == 2
    assert "no option(s) colour" in capsys.readouterr().err
    assert main(["data", "check", str(w.root), "-o", "sequence"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_formats_lists_every_reader(capsys):
    assert main(["data", "formats"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == list(FORMATS)


def test_tum_reader_reads_the_synthetic_generator_output(tmp_path, capsys):
    from data.synth.sequence import SynthConfig, synthetic_sequence
    from data.synth.writer import write_tum_sequence

    seq = synthetic_sequence(SynthConfig(num_frames=3, width=32, height=24, num_dynamic=1), seed=3)
    root = write_tum_sequence(seq, tmp_path / "seq", video=False)
    read = load_sequence(root)
    assert read.format == "tum" and len(read) == 3
    for i in range(3):
        a, b = seq[i], read[i]
        np.testing.assert_array_equal(b.image, a.image)
        np.testing.assert_allclose(b.K, a.K, atol=1e-5)
        np.testing.assert_allclose(b.cam2world, a.cam2world, atol=1e-5)
        valid = (a.depth > 0) & (a.depth < 65535 / 5000)
        np.testing.assert_allclose(b.depth[valid], a.depth[valid], atol=0.5 / 5000 + 1e-6)
        np.testing.assert_array_equal(b.mask, a.mask)
    assert main(["data", "check", str(root)]) == 0
