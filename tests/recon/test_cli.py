"""The `recon` entry point: help, version, env, and clean errors."""

import json
import subprocess
import sys

from recon import __version__
from recon.cli import main


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert capsys.readouterr().out.strip() == f"streamrecon {__version__}"


def test_env_json_lists_libraries_and_triton_mode(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for lib in ("torch", "triton", "lightning", "rerun-sdk", "open3d", "kornia", "opencv"):
        assert lib in info["libraries"]
        assert not info["libraries"][lib].startswith("not available"), (lib, info["libraries"][lib])
    assert info["triton_mode"].startswith(("interpreted", "compiled", "unavailable"))


def test_console_script_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "recon.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "env" in out.stdout


def test_unknown_subcommand_exits_nonzero_without_traceback():
    out = subprocess.run([sys.executable, "-m", "recon.cli", "nope"], capture_output=True, text=True)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "invalid choice" in out.stderr
