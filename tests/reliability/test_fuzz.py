"""Fuzzing the families of issue 17's cases with hypothesis.

Every property asserts the same contract: a user mistake ends with exit code 2 (``recon data check``:
1 with the problems listed) and one line that names the input and what was expected, never a
traceback; a value that is fine gets past the check that would refuse it; and what is on disk
stays consistent (nothing half-written, an existing report folder untouched).

Each test runs a handful of examples in the default suite (the ``fast`` profile) and many more in
the ``slow`` profile (``pytest -m slow``); see tests/reliability/conftest.py.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from recon.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_model
from recon.errors import CheckpointError, InputError
from recon.eval.report import _METRIC_PATHS as METRIC_PATHS
from recon.eval.report import _TEXT_KEYS as TEXT_KEYS
from recon.eval.report import markdown_report, merge_reports
from recon.infer.sources import check_intrinsics, parse_intrinsics
from tests.data.readers import fixtures as fx
from tests.reliability.conftest import assert_user_error, run_cli, run_cli_out
from tests.reliability.test_commands import minimal_report

ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
NUMBER_TEXT = st.one_of(
    ANY_FLOAT.map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "", " ", "0x10", "1_0", "½", "3.5.1"]),
    st.text(max_size=6),
)


def _as(kind, text: str):
    try:
        return kind(text)
    except (ValueError, OverflowError):
        return None


def _in(low, high, *, low_open=False, high_open=False):
    def ok(v):
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return False
        above = v > low if low_open else v >= low
        return above and (high is None or (v < high if high_open else v <= high))
    return ok


RUN_OPTIONS = {
    "--voxel-size": (float, _in(0.0, None, low_open=True)),
    "--conf-quantile": (float, _in(0.0, 1.0, high_open=True)),
    "--fov": (float, _in(1.0, 179.0)),
    "--max-points": (int, _in(1, None)),
    "--stride": (int, _in(1, None)),
    "--max-frames": (int, _in(1, None)),
    "--threads": (int, _in(1, None)),
    "--web-port": (int, _in(1, 65535)),
}


def test_numeric_options_are_finite_and_in_range(fuzz, tmp_path, capsys):
    missing = tmp_path / "missing.mp4"

    @fuzz
    @given(option=st.sampled_from(sorted(RUN_OPTIONS)), text=NUMBER_TEXT)
    def prop(option, text):
        kind, ok = RUN_OPTIONS[option]
        code, err = run_cli(["run", missing, f"{option}={text}", "--out", tmp_path / "o"], capsys)
        if ok(_as(kind, text)):  # accepted: the next mistake (the missing source) is the one reported
            assert_user_error(code, err, "run", missing, "no such file")
        else:
            assert_user_error(code, err, "run", option)
        assert not (tmp_path / "o").exists()

    prop()


INTRINSIC_VALUES = st.one_of(
    st.lists(ANY_FLOAT, min_size=4, max_size=4),
    st.lists(ANY_FLOAT, min_size=9, max_size=9),
    # plausible pinhole matrices with a perturbed entry: the cases a real file gets wrong
    st.tuples(st.floats(1, 2000), st.floats(1, 2000), st.floats(-300, 500), st.floats(-300, 400),
              st.integers(0, 8), ANY_FLOAT).map(
        lambda t: _perturbed(*t)),
    st.lists(st.floats(-1e3, 1e3), min_size=0, max_size=12),
)


def _perturbed(fx_, fy_, cx, cy, entry, value) -> list[float]:
    K = [fx_, 0.0, cx, 0.0, fy_, cy, 0.0, 0.0, 1.0]
    K[entry] = value
    return K


def _valid_K(K: np.ndarray, width: int, height: int) -> bool:
    return (K.shape == (3, 3) and np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0
            and np.array_equal(K[2], [0.0, 0.0, 1.0]) and K[0, 1] == 0 and K[1, 0] == 0
            and -0.5 <= K[0, 2] <= width - 0.5 and -0.5 <= K[1, 2] <= height - 0.5)


def test_intrinsics_are_a_pinhole_on_the_image_or_refused(fuzz):
    folder = Path(tempfile.mkdtemp(prefix="fuzz_K_"))

    @fuzz
    @given(values=INTRINSIC_VALUES, as_file=st.booleans(), layout=st.sampled_from(["commas", "rows"]))
    def prop(values, as_file, layout):
        if as_file:
            text = str(folder / "K.txt")
            rows = [values[i:i + 3] for i in range(0, len(values), 3)] if layout == "rows" else [values]
            Path(text).write_text("\n".join(" ".join(repr(v) for v in r) for r in rows) + "\n")
        else:
            text = ",".join(repr(v) for v in values)
        try:
            K = parse_intrinsics(text)
            check_intrinsics(K, 128, 96, f"--intrinsics {text}")
        except InputError as e:
            assert "\n" not in str(e) and ("intrinsics" in str(e) or text in str(e)), str(e)
            return
        assert _valid_K(K, 128, 96), K  # accepted only when it is what the model will use

    try:
        prop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_intrinsics_through_the_cli_stop_before_the_model(fuzz, tmp_path, image_folder, capsys):
    missing_ckpt = tmp_path / "no_ckpt"

    @fuzz
    @given(values=INTRINSIC_VALUES.filter(lambda v: len(v) == 4))
    def prop(values):
        text = ",".join(repr(v) for v in values)
        code, err = run_cli(["run", image_folder, "--intrinsics", text, "--checkpoint", missing_ckpt,
                             "--out", tmp_path / "o", "--quiet"], capsys)
        try:
            valid = _valid_K(parse_intrinsics(text), 128, 96)
        except InputError:
            valid = False
        assert_user_error(code, err, "run", missing_ckpt if valid else "intrinsics")
        assert not (tmp_path / "o" / "summary.json").exists()

    prop()


def test_video_files_of_random_bytes_are_refused(fuzz, tmp_path, capsys):
    @fuzz
    @given(data=st.binary(max_size=2048), suffix=st.sampled_from([".mp4", ".avi", ".mov"]))
    def prop(data, suffix):
        path = tmp_path / f"clip{suffix}"
        path.write_bytes(data)
        code, err = run_cli(["run", path, "--out", tmp_path / "o"], capsys)
        assert_user_error(code, err, "run", path)
        assert not (tmp_path / "o" / "summary.json").exists()

    prop()


# -- checkpoints ------------------------------------------------------------------------------------

CONFIG_KEYS = ("dim", "depth", "num_heads", "patch_size", "window", "image_size", "mlp_ratio")


def test_checkpoint_contents_never_escape_as_tracebacks(fuzz, small_checkpoint):
    base = yaml.safe_load((small_checkpoint / CONFIG_NAME).read_text())

    @fuzz
    @given(
        case=st.sampled_from(["weights", "config-text", "config-value", "ckpt"]),
        data=st.binary(max_size=512),
        text=st.text(max_size=200),
        key=st.sampled_from(CONFIG_KEYS),
        value=st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=5), st.lists(st.integers(-4, 10**5), max_size=3), st.none()),
    )
    def prop(case, data, text, key, value):
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "ckpt"
            shutil.copytree(small_checkpoint, ckpt)
            if case == "weights":
                (ckpt / WEIGHTS_NAME).write_bytes(data)
            elif case == "config-text":
                (ckpt / CONFIG_NAME).write_text(text)
            elif case == "config-value":
                config = yaml.safe_load((ckpt / CONFIG_NAME).read_text())
                assume(config["model"].get(key) != value)
                config["model"][key] = value
                (ckpt / CONFIG_NAME).write_text(yaml.safe_dump(config))
            else:
                ckpt = Path(tmp) / "run.ckpt"
                ckpt.write_bytes(data)
            try:
                model = load_model(ckpt)
            except CheckpointError as err:
                assert str(ckpt) in str(err) and "\n" not in str(err).strip(), str(err)
                return
            # loaded: only an edit that leaves every tensor shape as it was (e.g. the window)
            got = getattr(model.cfg, key)
            assert case == "config-value" and (got == value or isinstance(got, tuple) and list(got) == value)

    prop()
    assert yaml.safe_load((small_checkpoint / CONFIG_NAME).read_text()) == base


# -- reports ----------------------------------------------------------------------------------------

JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | ANY_FLOAT | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=8,
)


def _leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))
    else:
        yield path


MODEL_LEAVES = list(_leaves(minimal_report()["models"][0]))


def _finite_number(v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return abs(v) <= 2**63 if isinstance(v, int) else math.isfinite(v)


def _metric_tree(v) -> bool:
    """A metric, or a mapping of metrics (prefix entries nest)."""
    if isinstance(v, dict):
        return all(_metric_tree(x) or isinstance(x, str) and k in ("align",) for k, x in v.items())
    return v is None or _finite_number(v)


def _acceptable(where: tuple, value) -> bool:
    """What check_report lets through at a leaf of a model entry (the spec, written out)."""
    key = where[-1]
    in_prefix = "prefixes" in where
    if key in ("name", "checkpoint", "label") and where[0] != "model":
        return isinstance(value, str)
    if key == "num_frames":
        return isinstance(value, int) and not isinstance(value, bool)
    if key == "sequences":
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 2**63
    if key == "length":
        return _finite_number(value)
    if where[0] == "model":  # network facts: a value or a list of values (image_size, memory_depths)
        def ok(v):
            return v is None or _finite_number(v) or (isinstance(v, str) and where[1] in TEXT_KEYS)
        listed = where[1] in ("image_size", "memory_depths")
        return ok(value) or (len(where) == 2 and listed and isinstance(value, list) and all(map(ok, value)))
    if key in ("align", "memory_type", "signature"):
        return isinstance(value, str) or value is None or _finite_number(value)
    if in_prefix and tuple(where[where.index("prefixes") + 2:]) not in METRIC_PATHS:
        return _metric_tree(value)
    return value is None or _finite_number(value)


def test_merge_accepts_numbers_and_refuses_anything_else(fuzz):
    @fuzz
    @given(where=st.sampled_from(MODEL_LEAVES), value=JSON_VALUE)
    def prop(where, value):
        report = minimal_report("b")
        node = report["models"][0]
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = value
        sources = [("a.json", minimal_report("a")), ("b.json", report)]
        try:
            merged = merge_reports(sources)
        except ValueError as e:
            assert str(e).startswith("b.json: ") and "\n" not in str(e), str(e)
            assert not _acceptable(where, value), (where, value, str(e))
            return
        assert _acceptable(where, value), (where, value)
        markdown_report(merged)  # what was accepted renders and serialises
        json.dumps(merged, allow_nan=False)

    prop()


def test_merge_of_arbitrary_json_files_is_one_line_and_writes_nothing(fuzz, tmp_path, capsys):
    out = tmp_path / "out"

    @fuzz
    @given(doc=JSON_VALUE)
    def prop(doc):
        path = tmp_path / "report.json"
        path.write_text(json.dumps(doc))
        code, err = run_cli(["eval", "--merge", path, "--out", out], capsys)
        assert_user_error(code, err, "eval", path)
        assert not out.exists()

    prop()


# -- ground truth files -------------------------------------------------------------------------------

GT_LINE = st.one_of(
    st.lists(st.one_of(ANY_FLOAT.map(repr), st.text(max_size=4)), max_size=9).map(" ".join),
    st.sampled_from(["# comment", "", "1305031102.175 0 0 0 0 0 0 1", "nan nan nan nan nan nan nan nan"]),
)


@pytest.fixture(scope="module")
def tum_folder(tmp_path_factory) -> Path:
    return fx.write_tum(tmp_path_factory.mktemp("tum"), fx.render()).root


@pytest.mark.filterwarnings("ignore::UserWarning")  # the reader's notes about unmatched frames
def test_broken_ground_truth_is_reported_by_data_check_and_optional_for_a_run(fuzz, tum_folder, capsys):
    from recon.infer.sources import FrameStream, open_source

    @fuzz
    @given(target=st.sampled_from(["groundtruth.txt", "depth.txt", "depth-png"]),
           lines=st.lists(GT_LINE, max_size=5), data=st.binary(max_size=256))
    def prop(target, lines, data):
        with tempfile.TemporaryDirectory() as tmp:
            seq = Path(tmp) / "seq"
            shutil.copytree(tum_folder, seq)
            if target == "depth-png":
                broken = sorted((seq / "depth").iterdir())[1]
                broken.write_bytes(data)
            else:
                broken = seq / target
                broken.write_text("\n".join(lines) + "\n")
            # data check: never a traceback; a broken ground truth is an error or a listed problem
            code, printed, err = run_cli_out(["data", "check", seq], capsys)
            assert "Traceback" not in err
            if code == 2:
                assert_user_error(code, err, "data", seq)
            else:
                assert code in (0, 1), (code, err)
            # a run needs only the images: every frame comes out, the broken ground truth left out
            source = open_source(str(seq))
            stream = FrameStream(source, (24, 32), lenient_ground_truth=True)
            frames = list(stream)
            if target == "depth-png":
                assert len(frames) == 3
                assert frames[1].gt_problem is not None and broken.name in frames[1].gt_problem
                assert frames[1].gt_depth is None
            else:  # what the reader lists all loads (a depth.txt that parses may drop unmatched frames)
                assert 1 <= len(frames) == len(source)

    prop()
