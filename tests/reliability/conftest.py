"""Shared pieces of the reliability suite: the fuzz profiles, the CLI harness and small inputs.

Every command is run in-process through ``recon.cli.main``: an exception escaping it would be a
traceback for the user, so :func:`run_cli` lets it fail the test; what it returns is the exit code
and the captured stderr, which :func:`assert_user_error` checks is one line naming the input.

Fuzz profiles (hypothesis): ``fast`` (a handful of examples, the default suite) and ``slow`` (many
more, marked ``slow``: ``make test-slow`` / ``pytest -m slow``). A fuzz test takes the ``fuzz``
fixture and decorates its property with it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from recon.cli import main
from tests.recon.infer.conftest import small_checkpoint, synthetic_folder  # noqa: F401  (fixtures)

PROFILES = {
    "fast": settings(max_examples=12, deadline=None, database=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]),
    "slow": settings(max_examples=300, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]),
}


@pytest.fixture(params=["fast", pytest.param("slow", marks=pytest.mark.slow)])
def fuzz(request) -> settings:
    """The hypothesis settings of this run: a decorator for the property (``@fuzz`` then ``@given``)."""
    return PROFILES[request.param]


def run_cli_out(argv: list[str], capsys) -> tuple[int, str, str]:
    """``recon ARGV`` in-process: (exit code, stdout, stderr). argparse's SystemExit counts as an exit;
    any other exception is a traceback the user would see, and fails the test."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 2
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``recon ARGV`` in-process: (exit code, stderr)."""
    code, _, err = run_cli_out(argv, capsys)
    return code, err


def assert_user_error(code: int, err: str, command: str, *names: object) -> str:
    """Exit 2 and one stderr line ``recon COMMAND: error: ...`` that names every one of ``names``."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"recon {command}: error: "), err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def write_frames(folder: Path, images: list[np.ndarray]) -> Path:
    """An image folder (frame_000.png, ...) of [H, W, 3] uint8 RGB images."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), image[..., ::-1])
    return folder


def textured(seed: int, hw: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A frame with texture: smooth random blobs."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (hw[0] // 8, hw[1] // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """Eight textured 128x96 frames as an image folder (a plain source: no calibration, no ground truth)."""
    return write_frames(tmp_path_factory.mktemp("frames") / "clip", [textured(i) for i in range(8)])
