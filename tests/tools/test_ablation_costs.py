"""tools/ablation_costs.py: the cost table of the arms (state bytes against the layers' own cache
sizes, a growing cache for causal attention only) and its bad input."""

from __future__ import annotations

import json

import pytest
import yaml

from recon.model import build_model, load_model_config
from tools import ablation_costs


def _arms(tmp_path, arms: dict):
    path = tmp_path / "arms.yaml"
    path.write_text(yaml.safe_dump({"arms": arms}))
    return path


def test_costs_of_three_arms(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ablation_costs, "CLIP_FRAMES", 4)
    arms = _arms(tmp_path, {"none": {"type": "none"}, "gla": {"type": "gla"},
                            "causal_attention": {"type": "causal_attention"}})
    assert ablation_costs.main(["--arms", str(arms), "--frames", "12", "--repeats", "1",
                                "--out", str(tmp_path / "out")]) == 0
    rows = {r["arm"]: r for r in json.loads((tmp_path / "out" / "costs.json").read_text())["rows"]}
    assert "| arm |" in (tmp_path / "out" / "costs.md").read_text()
    # state at the start: what init_state allocates for that config, independently built
    for name, memory in (("none", "none"), ("gla", "gla")):
        expected = build_model(load_model_config("tiny", memory={"type": memory})).init_state(1).nbytes()
        assert rows[name]["state MiB"] == pytest.approx(expected / 2**20, abs=0.006)
        assert rows[name]["state growth KiB/frame"] == 0.0
    assert rows["gla"]["state MiB"] > rows["none"]["state MiB"]
    assert rows["causal_attention"]["state growth KiB/frame"] > 0.0
    assert rows["none"]["train vs none"] == 1.0 and rows["none"]["stream vs none"] == 1.0
    assert all(r["frames/s"] > 0 and r["train step s (48 frames)"] > 0 for r in rows.values())


@pytest.mark.parametrize("arms,message", [
    ({"gla": {"type": "gla"}}, "'none' arm"),
    ({"none": {"type": "none"}, "x": {"type": "gla", "options": {"nope": 1}}}, "nope"),
])
def test_bad_arms_exit_2_with_one_line(tmp_path, capsys, arms, message):
    assert ablation_costs.main(["--arms", str(_arms(tmp_path, arms))]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bad_numbers_exit_2(capsys):
    assert ablation_costs.main(["--frames", "3"]) == 2
    assert "--frames" in capsys.readouterr().err
