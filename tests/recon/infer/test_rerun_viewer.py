"""The Rerun logger without a browser: the served recording outlives the run, the page address, the
buffer bound, busy ports, colormaps and ranges, the trajectory so far, and the blueprint in the .rrd.

What the web viewer draws is checked in a real browser by ``tests/browser/test_web_viewer.py``
(``make test-browser``).
"""

from __future__ import annotations

import socket
import urllib.request
from collections import defaultdict

import numpy as np
import pytest
from rerun.chunk import RrdReader

from recon.errors import InputError
from recon.infer.frames import FramePrediction, SourceFrame
from recon.infer.rerun_logger import (
    TRAJECTORY_SEGMENT,
    RerunLogger,
    RerunOptions,
    check_memory_limit,
    image_range,
    viewer_page_url,
)
from tests.reliability.conftest import assert_user_error, run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _frame(i: int, hw=(24, 32)):
    rng = np.random.default_rng(i)
    h, w = hw
    K = np.array([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]])
    c2w = np.eye(4)
    c2w[:3, 3] = [0.1 * i, 0.0, 0.02 * i]
    depth = rng.uniform(1.0, 3.0, hw).astype(np.float32)
    conf = (1.0 + rng.exponential(2.0, hw)).astype(np.float32)
    pts = rng.normal(size=(h, w, 3)).astype(np.float32)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return img, depth, conf, K, c2w, pts


def _log(logger: RerunLogger, frames: int) -> list[np.ndarray]:
    centres = []
    for i in range(frames):
        img, depth, conf, K, c2w, pts = _frame(i)
        pred = FramePrediction(SourceFrame(i, i / 30.0, img), depth, conf, K, c2w, pts)
        logger.log_frame(pred, {"fps": 30.0})
        centres.append(c2w[:3, 3])
    logger.log_map(frames - 1, np.zeros((10, 3), np.float32), np.zeros((10, 3), np.uint8))
    return centres


def _columns(path) -> dict[str, list]:
    """Entity path -> the record batches of its temporal chunks."""
    out = defaultdict(list)
    for chunk in RrdReader(str(path)).stream().to_chunks():
        if not chunk.is_static:
            out[chunk.entity_path].append(chunk.to_record_batch())
    return out


def _column(batches, suffix: str):
    """The values of the one column whose name ends with ``suffix`` over ``batches`` (Arrow lists)."""
    values = []
    for batch in batches:
        (name,) = [n for n in batch.schema.names if n.endswith(suffix)]
        values += batch.column(name).to_pylist()
    return values


def test_saved_recording_has_colormaps_ranges_trajectory_and_blueprint(tmp_path):
    rrd = tmp_path / "rec.rrd"
    logger = RerunLogger(RerunOptions(save=str(rrd)))
    frames = TRAJECTORY_SEGMENT + 3  # two trajectory segments
    centres = np.array(_log(logger, frames))
    logger.finish()
    assert not logger.serving
    reader = RrdReader(str(rrd))
    assert [b.application_id for b in reader.blueprints()] == ["streamrecon"]  # same layout as live
    cols = _columns(rrd)
    # depth: turbo over [0, 1.25 x the first frame's 99th percentile]; confidence: viridis from 1
    _, depth0, conf0, *_ = _frame(0)
    assert set(map(str, _column(cols["/world/camera/depth"], "colormap"))) == {"[5]"}  # Turbo = 5
    assert set(map(str, _column(cols["/world/camera/confidence"], "colormap"))) == {"[6]"}  # Viridis = 6
    (depth_range,) = {tuple(r[0]) for r in _column(cols["/world/camera/depth"], "depth_range")}
    np.testing.assert_allclose(depth_range, (0.0, np.percentile(depth0, 99) * 1.25), rtol=1e-6)
    (conf_range,) = {tuple(r[0]) for r in _column(cols["/world/camera/confidence"], "depth_range")}
    np.testing.assert_allclose(conf_range, (1.0, np.percentile(conf0, 99) * 1.25), rtol=1e-6)
    # the trajectory so far, every frame: segment 0 holds frames 0..255, segment 1 continues from 255
    seg0 = _column(cols["/world/trajectory/0000"], "strips")
    seg1 = _column(cols["/world/trajectory/0001"], "strips")
    assert len(seg0) == TRAJECTORY_SEGMENT and len(seg1) == 3
    np.testing.assert_allclose(np.array(seg0[-1][0]), centres[:TRAJECTORY_SEGMENT], atol=1e-6)
    np.testing.assert_allclose(np.array(seg1[-1][0]), centres[TRAJECTORY_SEGMENT - 1:], atol=1e-6)
    for k, strip in enumerate(seg0):  # at frame k the path ends at camera k
        np.testing.assert_allclose(np.array(strip[0]), centres[: k + 1], atol=1e-6)


@pytest.mark.filterwarnings("ignore:RRD file has no footer")  # read while still served: footer comes at close
def test_serve_keeps_serving_after_the_run_and_prints_the_page(tmp_path, capsys):
    grpc_port, web_port = free_port(), free_port()
    rrd = tmp_path / "rec.rrd"
    logger = RerunLogger(RerunOptions(viewer="serve", save=str(rrd), grpc_port=grpc_port, web_port=web_port,
                                      memory_limit="64MB"))
    try:
        printed = capsys.readouterr().out
        page = f"http://127.0.0.1:{web_port}/?url=rerun%2Bhttp://127.0.0.1:{grpc_port}/proxy"
        assert page == viewer_page_url(web_port, grpc_port) == logger.page_url
        assert page in printed and "64MB" in printed
        _log(logger, 3)
        logger.finish()  # the run is over
        assert logger.serving
        assert RrdReader(str(rrd)).stream().to_chunks()  # every frame is in the file already
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=10) as r:
            assert r.status == 200 and b"web viewer" in r.read().lower()
        with socket.create_connection(("127.0.0.1", grpc_port), timeout=10):
            pass  # the gRPC server still accepts viewers
    finally:
        logger.close()
    assert not logger.serving
    assert len(_columns(rrd)["/world/camera"]) >= 1


@pytest.mark.parametrize("flag", ["--web-port", "--rerun-port"])
def test_busy_port_is_one_line_naming_port_and_flag(tmp_path, small_checkpoint, synthetic_folder, flag,
                                                    capsys):
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = "--rerun-port" if flag == "--web-port" else "--web-port"
        code, err = run_cli(["run", synthetic_folder, "--checkpoint", small_checkpoint, "--out",
                             tmp_path / "out", "--quiet", "--rerun", "serve", flag, port, other, free_port()],
                            capsys)
    assert_user_error(code, err, "run", f"{flag} {port}", "not free", f"choose another port with {flag}")
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("text", ["1GiB", "512MB", "25%", "0.5GB", "100%"])
def test_memory_limit_accepts_sizes_and_percentages(text):
    assert check_memory_limit(text) == text


@pytest.mark.parametrize("text", ["", "lots", "-1GB", "0MB", "150%", "12 parsecs", "1e9"])
def test_bad_memory_limit_is_a_user_error(tmp_path, synthetic_folder, small_checkpoint, text, capsys):
    with pytest.raises(InputError, match="--rerun-memory-limit"):
        check_memory_limit(text)
    code, err = run_cli(["run", synthetic_folder, "--checkpoint", small_checkpoint, "--out", tmp_path / "o",
                         "--quiet", "--rerun", "serve", f"--rerun-memory-limit={text}"], capsys)
    assert_user_error(code, err, "run", "--rerun-memory-limit", "512MB")


def test_image_range_ignores_invalid_pixels():
    values = np.array([[0.0, np.nan, np.inf], [1.0, 2.0, 3.0]], np.float32)
    lo, hi = image_range(values)
    assert lo == pytest.approx(np.percentile([1.0, 2.0, 3.0], 1))
    assert hi == pytest.approx(np.percentile([1.0, 2.0, 3.0], 99) * 1.25)
    assert image_range(np.zeros((2, 2))) == (0.0, 1.0)
