"""Memory layer types by name, each with a typed options class: the one registry of memory layers.

====================  =======================================================  ========================
name                  layer class / options class (here)                       state per frame
====================  =======================================================  ========================
``none``              no memory layer / :class:`NoMemoryOptions`               none
``gla``               :class:`layers.gla.GLAMemory` / :class:`GLAOptions`      fixed
``elastic``           :class:`layers.elastic.ElasticMemory`                    fixed
                      / :class:`ElasticOptions`
``ttt``               :class:`layers.ttt.TTTMemory` / :class:`TTTOptions`      fixed
``causal_attention``  :class:`layers.causal_attention.CausalAttentionMemory`   grows (baseline)
                      / :class:`CausalAttentionOptions`
====================  =======================================================  ========================

Every class takes ``(dim, num_heads, **options)`` and follows the protocol of :mod:`layers.memory`.
Its options are a frozen dataclass here, with the constructor's defaults (a test holds them equal
to the constructor's signature); :func:`parse_memory_options` turns a config mapping into one and
is the one place option names, types and choices are checked (``ConfigError`` naming
``model.memory.options.<key>``), and the combinations of options that do not fit together
(:meth:`MemoryOptions.check`: elastic's faithful mode, ``chunk_frames``). Value ranges are the
constructors' to check.
Modules are imported on first use, so listing types and options does not import torch, and a
missing optional layer only fails when it is built.

Example:
    >>> parse_memory_options("gla", {"chunk_size": 32, "delta_rule": False}).changed()
    {'chunk_size': 32, 'delta_rule': False}
    >>> parse_memory_options("ttt", {"form": "parallel"}).form
    'parallel'
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from recon.errors import ConfigError
from recon.typed import from_dict

if TYPE_CHECKING:  # annotations only: listing the types (help texts, tools) does not import torch
    from torch import nn

Form = Literal["parallel", "sequential"]  # parallel: chunked closed form; sequential: per-frame loop


@dataclass(frozen=True)
class MemoryOptions:
    """Base of the options classes: the keyword options of one memory layer's constructor."""

    def kwargs(self) -> dict[str, Any]:
        """Every option by name, as the constructor's keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def check(self) -> list[tuple[str, str]]:
        """Combinations of options that do not fit together: (option, why) pairs, empty if none.

        Checked when a config is parsed (:func:`parse_memory_options`), so a bad arm fails before
        anything is built; the constructors check the same combinations for direct use.
        """
        return []

    def changed(self) -> dict[str, Any]:
        """The options that differ from their defaults, YAML/JSON-ready (tuples as lists).

        This is what a config writes (``ModelConfig.to_dict``), so a config that sets no option
        keeps ``options: {}`` and the signature it always had.
        """
        return {f.name: list(v) if isinstance(v, tuple) else v
                for f in dataclasses.fields(self) if (v := getattr(self, f.name)) != f.default}


@dataclass(frozen=True)
class NoMemoryOptions(MemoryOptions):
    """``none``: no memory layer, no options."""


@dataclass(frozen=True)
class GLAOptions(MemoryOptions):
    """Options of :class:`layers.gla.GLAMemory` (its docstring says what each one does)."""

    head_dim: int | None = None  # None: dim / num_heads
    expand_v: float = 1.0
    conv_size: int = 4
    gate_normalizer: float = 16.0
    gate_low_rank: int = 16
    gate_min: float = -5.0
    gate_bias_range: tuple[float, float] = (0.0, 6.0)
    chunk_size: int = 64
    backend: Literal["torch", "triton"] | None = None  # None: triton on CUDA when it is available
    delta_rule: bool = True
    decay: Literal["channel", "head"] = "channel"  # layers.gla.DECAYS


@dataclass(frozen=True)
class ElasticOptions(MemoryOptions):
    """Options of :class:`layers.elastic.ElasticMemory`."""

    form: Form = "parallel"
    hidden_ratio: float = 2.0
    base_lr: float = 1e-2
    lam: float = 0.5
    beta: float = 0.9
    learn_lam: bool = False
    learn_beta: bool = False
    importance_init: float = 0.5
    inclusive: bool = False
    estimator: Literal["static", "abs", "sq", "si"] = "sq"  # layers.ops.elastic IMPORTANCE_ESTIMATORS
    anchor: Literal["global", "streaming", "streaming-ema"] = "streaming-ema"  # ... ANCHOR_POLICIES
    importance_decay: float = 0.9
    update_hidden: bool = False
    retention_frames: tuple[float, float] | Literal["auto"] | None = "auto"  # auto: per mode
    mode: Literal["reduced", "faithful"] = "reduced"  # layers.elastic.MODES
    chunk_frames: int = 1

    def check(self) -> list[tuple[str, str]]:
        return elastic_option_conflicts(self.kwargs(), pairs=True)


@dataclass(frozen=True)
class TTTOptions(MemoryOptions):
    """Options of :class:`layers.ttt.TTTMemory`."""

    form: Form = "sequential"
    hidden_ratio: float = 2.0
    base_lr: float = 1e-2
    inclusive: bool = False
    update_hidden: bool = True
    weight_norm: bool = True
    muon_steps: int = 5
    momentum: float = 0.0
    retention_frames: tuple[float, float] | Literal["auto"] | None = "auto"  # auto: per form
    chunk_frames: int = 1

    def check(self) -> list[tuple[str, str]]:
        return chunk_frames_conflicts(self.chunk_frames, self.form, self.inclusive)


REDUCED_ONLY = ("form", "learn_lam", "learn_beta", "importance_init", "update_hidden")
"""Elastic options of reduced mode only: faithful mode fixes what they choose."""


def chunk_frames_conflicts(chunk_frames: Any, form: str, inclusive: bool) -> list[tuple[str, str]]:
    """A fast-weight memory's ``chunk_frames``: an int >= 1; > 1 needs the sequential recurrence
    (``form``) and ``inclusive=False`` (a frame must not read an update made from later frames)."""
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
        return [("chunk_frames", f"expected an int >= 1, got {chunk_frames!r}")]
    if chunk_frames > 1 and form != "sequential":
        return [("chunk_frames", f"{chunk_frames} frames per update needs form='sequential' (got {form!r})")]
    if chunk_frames > 1 and inclusive:
        return [("inclusive", "inclusive=True needs chunk_frames=1 (a frame would read an update made "
                              "from later frames of its chunk)")]
    return []


def elastic_option_conflicts(options: dict[str, Any], pairs: bool = False) -> list:
    """What does not fit in a set of elastic options (any subset of :class:`ElasticOptions`' fields).

    Faithful mode takes lam, beta, estimator (not ``"static"``), anchor, importance_decay,
    inclusive, retention_frames, chunk_frames, hidden_ratio and base_lr; the options in
    ``REDUCED_ONLY`` must stay at their defaults there. Returns messages, or (option, message)
    pairs with ``pairs=True``.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(ElasticOptions)}
    out: list[tuple[str, str]] = []
    faithful = options.get("mode", "reduced") == "faithful"
    if faithful:
        taken = [k for k in defaults if k not in REDUCED_ONLY]
        for key in REDUCED_ONLY:
            if key in options and options[key] != defaults[key]:
                out.append((key, f"option {key!r} is for mode='reduced' only; mode='faithful' takes: "
                                 f"{', '.join(taken)}"))
        if options.get("estimator") == "static":
            out.append(("estimator", "mode='faithful' needs a data-dependent estimator (abs, sq, si; "
                                     "FSM's configs use si), got 'static'"))
    if "chunk_frames" in options:
        form = "sequential" if faithful else options.get("form", defaults["form"])
        out += chunk_frames_conflicts(options["chunk_frames"], form, options.get("inclusive", False))
    return out if pairs else [f"{k}: {m}" for k, m in out]


@dataclass(frozen=True)
class CausalAttentionOptions(MemoryOptions):
    """Options of :class:`layers.causal_attention.CausalAttentionMemory`."""

    qk_norm: bool = True


@dataclass(frozen=True)
class MemoryType:
    """One registered memory type: its layer class (module, class name; None = no layer) and options."""

    layer: tuple[str, str] | None
    options: type[MemoryOptions]


MEMORY_TYPES: dict[str, MemoryType] = {
    "none": MemoryType(None, NoMemoryOptions),
    "gla": MemoryType(("layers.gla", "GLAMemory"), GLAOptions),
    "elastic": MemoryType(("layers.elastic", "ElasticMemory"), ElasticOptions),
    "ttt": MemoryType(("layers.ttt", "TTTMemory"), TTTOptions),
    "causal_attention": MemoryType(("layers.causal_attention", "CausalAttentionMemory"),
                                   CausalAttentionOptions),
}


def _entry(name: str) -> MemoryType:
    if name not in MEMORY_TYPES:
        raise ValueError(f"unknown memory type {name!r}; expected one of {sorted(MEMORY_TYPES)}")
    return MEMORY_TYPES[name]


def memory_class(name: str) -> type[nn.Module] | None:
    """The class registered under ``name`` (None for ``"none"``).

    Raises:
        ValueError: unknown name (the message lists the known ones) or a module that cannot be
            imported.
    """
    entry = _entry(name).layer
    if entry is None:
        return None
    module_name, class_name = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"memory type {name!r}: cannot import {module_name} ({e})") from e
    return getattr(module, class_name)


def memory_options(name: str) -> dict[str, Any]:
    """The options of memory type ``name`` with their defaults (name -> default)."""
    return _entry(name).options().kwargs()


def parse_memory_options(name: str, data: Any, where: str = "model.memory.options") -> MemoryOptions:
    """The typed options of memory type ``name`` from a mapping (or an options object of that type).

    Raises:
        ConfigError: unknown type, unknown option, a value of the wrong type or outside a choice;
            the message names ``<where>.<key>`` and what was expected.
    """
    try:
        cls = _entry(name).options
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from e
    if isinstance(data, MemoryOptions) and not isinstance(data, cls):
        raise ConfigError(f"{where}: memory type {name!r} takes {cls.__name__}, got {type(data).__name__}")
    if isinstance(data, dict):
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in valid:
                raise ConfigError(f"{where}.{key}: unknown option of memory type {name!r}; valid options: "
                                  f"{', '.join(valid) or '(none)'}")
    options = from_dict(cls, data, where)
    for key, why in options.check():
        raise ConfigError(f"{where}.{key}: {why}")
    return options


def build_memory(name: str, dim: int, num_heads: int,
                 options: MemoryOptions | dict[str, Any] | None = None) -> nn.Module | None:
    """Construct memory layer ``name`` of width ``dim`` with ``num_heads`` heads (None for "none").

    ``options`` is the type's options object or a mapping parsed by :func:`parse_memory_options`.

    Raises:
        ConfigError: unknown type or option, or an option of the wrong type.
        ValueError: an option value the layer's constructor refuses.
    """
    opts = parse_memory_options(name, {} if options is None else options)
    cls = memory_class(name)
    return None if cls is None else cls(dim, num_heads, **opts.kwargs())
