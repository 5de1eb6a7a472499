"""The memory registry: one typed options class per type, equal to its constructor's defaults."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest
import torch

from layers.ops.elastic.sequential import ANCHOR_POLICIES, IMPORTANCE_ESTIMATORS
from layers.registry import (
    MEMORY_TYPES,
    ElasticOptions,
    GLAOptions,
    build_memory,
    memory_class,
    parse_memory_options,
)
from recon.errors import ConfigError

LAYER_TYPES = [name for name in MEMORY_TYPES if name != "none"]


def constructor_defaults(name: str) -> dict:
    """Keyword options and defaults read from the layer constructor's own signature."""
    params = list(inspect.signature(memory_class(name).__init__).parameters.values())[3:]  # self, dim, heads
    return {p.name: p.default for p in params}


@pytest.mark.parametrize("name", LAYER_TYPES)
def test_options_defaults_equal_the_constructor_defaults(name):
    options = MEMORY_TYPES[name].options()
    assert options.kwargs() == constructor_defaults(name)
    assert options.changed() == {}


def test_none_has_no_options_and_no_layer():
    assert parse_memory_options("none", {}).kwargs() == {}
    assert build_memory("none", 48, 2) is None


@pytest.mark.parametrize("name", LAYER_TYPES)
def test_built_from_options_equals_the_constructor_with_its_defaults(name):
    torch.manual_seed(0)
    reference = memory_class(name)(48, 2)
    torch.manual_seed(0)
    layer = build_memory(name, 48, 2, MEMORY_TYPES[name].options())
    ref_state, state = reference.state_dict(), layer.state_dict()
    assert list(state) == list(ref_state)
    for key in ref_state:
        assert torch.equal(state[key], ref_state[key]), key


def test_choices_equal_the_layer_constants():
    hints = typing.get_type_hints(ElasticOptions)
    assert typing.get_args(hints["estimator"]) == IMPORTANCE_ESTIMATORS
    assert typing.get_args(hints["anchor"]) == ANCHOR_POLICIES


def test_mapping_is_parsed_and_typed():
    options = parse_memory_options("gla", {"chunk_size": 32, "gate_bias_range": [1, 2], "expand_v": 2})
    assert isinstance(options, GLAOptions)
    assert options.gate_bias_range == (1.0, 2.0) and type(options.expand_v) is float
    assert options.changed() == {"chunk_size": 32, "gate_bias_range": [1.0, 2.0], "expand_v": 2.0}
    assert parse_memory_options("ttt", {"retention_frames": None}).retention_frames is None
    assert parse_memory_options("ttt", {"retention_frames": [4, 64]}).retention_frames == (4.0, 64.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.chunk_size = 16


@pytest.mark.parametrize("name, data, pattern", [
    pytest.param("gla", {"chunk": 32},
                 r"^model\.memory\.options\.chunk: unknown option of memory type 'gla'; "
                 r"valid options: head_dim, .*chunk_size", id="unknown-key"),
    pytest.param("none", {"chunk_size": 32}, r"options\.chunk_size: unknown option of memory type 'none'; "
                 r"valid options: \(none\)$", id="none-takes-none"),
    pytest.param("gla", {"chunk_size": "64"}, r"^model\.memory\.options\.chunk_size: expected int, got '64'$",
                 id="wrong-type"),
    pytest.param("gla", {"delta_rule": 1}, r"options\.delta_rule: expected bool, got 1$", id="int-for-bool"),
    pytest.param("elastic", {"lam": "0.5"}, r"options\.lam: expected float, got '0.5'$", id="str-for-float"),
    pytest.param("ttt", {"form": "reduced"},
                 r"options\.form: unknown 'reduced'; valid: parallel, sequential$", id="choice"),
    pytest.param("gla", {"gate_bias_range": [0.0]},
                 r"options\.gate_bias_range: expected 2 values", id="tuple"),
    pytest.param("ttt", {"retention_frames": "long"},
                 r"options\.retention_frames: expected a list, got 'long'; or unknown 'long'; valid: auto$",
                 id="union"),
    pytest.param("gla", [1, 2],
                 r"^model\.memory\.options: expected a mapping of GLAOptions fields", id="list"),
    pytest.param("gla", ElasticOptions(), r"memory type 'gla' takes GLAOptions, got ElasticOptions",
                 id="other-type's-options"),
    pytest.param("lstm", {}, r"unknown memory type 'lstm'", id="unknown-type"),
])
def test_bad_options_name_the_key_and_what_was_expected(name, data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_memory_options(name, data)
