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


def test_an_empty_or_folder_rrd_path_is_a_usage_error(tmp_path, capsys):
    """`--rrd ''` or a folder used to reach rerun and raise from its file sink: now argparse
    refuses it (exit 2, one line naming the option), before any output is written."""
    import pytest

    for command in (["demo", "--out", str(tmp_path / "demo")], ["run", str(tmp_path / "none.mp4")]):
        for bad in ("", str(tmp_path)):
            with pytest.raises(SystemExit) as err:
                main([*command, "--rrd", bad])
            assert err.value.code == 2
            message = capsys.readouterr().err
            assert "argument --rrd: expected an .rrd file path (not empty, not a folder)" in message
            assert "Traceback" not in message
    assert not (tmp_path / "demo").exists()
