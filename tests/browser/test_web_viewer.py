"""The Rerun web viewer in a real browser: Debian's chromium driven by Playwright's Python API
(``executable_path``: no browser download), software-rendered (SwiftShader).

``recon run --rerun serve`` streams a short synthetic video; the page it prints is opened during
the run and again after the run has ended (the server must still serve it), and the .rrd the run
saved is opened in ``rerun --serve-web`` afterwards. Each time the test waits for the viewer to
draw, saves a screenshot, and checks that the page left Rerun's welcome screen and that the 3D view
draws the reconstruction: its pixels differ from the same blueprint's empty 3D view (a recording
with our layout and no data, screenshotted first).

Screenshots land in ``$RECON_TEST_ARTIFACTS/browser/`` (default ``outputs/test-artifacts/browser/``).
Marked ``browser`` (about 1.5 min): ``make test-browser``; not in the default suite.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.recon.infer.conftest import small_checkpoint  # noqa: F401  (fixture)

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
VIEWPORT = {"width": 1280, "height": 800}
# The 3D view of default_blueprint (left 3/4 of the width, top 4/5 of the height), inset from its
# borders and title bar; fractions of the page.
VIEW_3D = (0.05, 0.12, 0.70, 0.75)  # x0, y0, x1, y1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _artifacts() -> Path:
    root = Path(os.environ.get("RECON_TEST_ARTIFACTS", REPO / "outputs" / "test-artifacts"))
    out = root / "browser"
    shutil.rmtree(out, ignore_errors=True)  # no screenshot of an earlier run left to mislead
    out.mkdir(parents=True)
    return out


def _pixels(path: Path) -> np.ndarray:
    return cv2.imread(str(path))[..., ::-1].astype(np.int16)


def _crop(img: np.ndarray, box=VIEW_3D) -> np.ndarray:
    h, w = img.shape[:2]
    return img[int(box[1] * h): int(box[3] * h), int(box[0] * w): int(box[2] * w)]


def _changed(a: np.ndarray, b: np.ndarray, level: int = 40) -> float:
    """Fraction of pixels whose colour differs by more than ``level`` in some channel."""
    return float((np.abs(a - b).max(-1) > level).mean())


def _video(folder: Path, frames: int) -> Path:
    """A synthetic walk (48 rendered frames) played back and forth to ``frames`` frames, as an mp4."""
    from data.synth import SynthConfig, synthetic_sequence

    seq = synthetic_sequence(SynthConfig(num_frames=48, width=128, height=96, trajectory="walk",
                                         num_dynamic=1, shadows=False), seed=3)
    images = [seq[i].image for i in range(len(seq))]
    loop = images + images[-2:0:-1]
    path = folder / "walk.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (128, 96))
    for i in range(frames):
        writer.write(loop[i % len(loop)][..., ::-1])
    writer.release()
    return path


class _Lines:
    """A subprocess's stdout, read by a thread: wait for a line containing some text."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)
            self._q.put(line)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=0.5)
            except queue.Empty:
                continue
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} within {timeout} s; got: {''.join(self.lines)[-2000:]}")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (tools/setup.sh installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--use-angle=swiftshader",
                                                              "--enable-unsafe-swiftshader",
                                                              "--ignore-gpu-blocklist"])
        yield b
        b.close()


def _shoot(browser, url: str, path: Path, ready, timeout: float = 90.0) -> np.ndarray:
    """Open ``url`` in a fresh page, screenshot it every second until ``ready(pixels)`` (or the
    timeout), keep the last screenshot at ``path``; returns its pixels."""
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(url)
        deadline = time.monotonic() + timeout
        while True:
            page.wait_for_timeout(1000)
            page.screenshot(path=str(path), timeout=120_000)  # a busy software renderer is slow
            img = _pixels(path)
            if ready(img) or time.monotonic() > deadline:
                return img
    finally:
        page.close()


def test_web_viewer_draws_the_run_during_and_after_it_and_the_rrd(browser, small_checkpoint, tmp_path):  # noqa: F811
    from recon.infer.rerun_logger import RerunLogger, RerunOptions

    art = _artifacts()
    t0 = time.monotonic()
    # the references: Rerun's welcome screen, and our layout with no data (an empty 3D view)
    grpc0, web0 = _free_port(), _free_port()
    empty = RerunLogger(RerunOptions(viewer="serve", grpc_port=grpc0, web_port=web0, memory_limit="64MB"))
    try:
        welcome = _shoot(browser, f"http://127.0.0.1:{web0}/", art / "welcome.png", lambda img: True,
                         timeout=0)
        blank = _shoot(browser, empty.page_url, art / "empty_layout.png",
                       lambda img: _changed(img, welcome, level=4) > 0.3)
    finally:
        empty.close()
    # both are mostly white: the welcome screen's panels are a shade darker than our views
    assert _changed(blank, welcome, level=4) > 0.3, "the empty layout looks like the welcome screen"

    def drawn(img: np.ndarray) -> bool:
        """Not the welcome screen, and a 3D view unlike both the empty view and the welcome title."""
        return (_changed(img, welcome, level=4) > 0.3 and _changed(_crop(img), _crop(blank)) > 0.01
                and _changed(_crop(img), _crop(welcome)) > 0.01)

    video = _video(tmp_path, frames=450)
    out = tmp_path / "run"
    grpc, web = _free_port(), _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    argv = ["run", video, "--checkpoint", small_checkpoint, "--out", out, "--rrd", out / "run.rrd", "--quiet",
            "--rerun", "serve", "--rerun-port", grpc, "--web-port", web, "--rerun-memory-limit", "256MB"]
    proc = subprocess.Popen([sys.executable, "-m", "recon.cli", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    stdout = _Lines(proc.stdout)
    try:
        line = stdout.wait_for("rerun: web viewer at ", timeout=120)
        page_url = line.split("rerun: web viewer at ")[1].split()[0]
        assert page_url == f"http://127.0.0.1:{web}/?url=rerun%2Bhttp://127.0.0.1:{grpc}/proxy"
        during = _shoot(browser, page_url, art / "during_run.png", drawn)
        status = json.loads((out / "summary.json").read_text())
        assert proc.poll() is None and status["status"] == "running", "the run ended before the page drew"
        assert drawn(during), f"during the run: {art / 'during_run.png'}"
        stdout.wait_for("still serving the recording", timeout=300)
        assert json.loads((out / "summary.json").read_text())["status"] == "complete"
        after = _shoot(browser, page_url, art / "after_run.png", drawn)
        assert drawn(after), f"after the run: {art / 'after_run.png'}"
        assert proc.poll() is None  # still serving
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    # the saved recording, in rerun's own web viewer: the same layout, drawn
    grpc2, web2 = _free_port(), _free_port()
    rerun = Path(sys.executable).parent / "rerun"
    viewer = subprocess.Popen([str(rerun), "--serve-web", "--port", str(grpc2), "--web-viewer-port",
                               str(web2), str(out / "run.rrd")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(3)
        from recon.infer.rerun_logger import viewer_page_url

        saved = _shoot(browser, viewer_page_url(web2, grpc2), art / "saved_rrd.png", drawn)
    finally:  # the `rerun` entry point is a Python launcher of the native viewer: stop the group
        os.killpg(viewer.pid, signal.SIGTERM)
        viewer.wait(timeout=30)
    assert drawn(saved), f"the saved .rrd: {art / 'saved_rrd.png'}"
    print(f"browser test: {time.monotonic() - t0:.0f} s; screenshots in {art}")
