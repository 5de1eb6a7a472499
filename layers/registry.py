"""Memory layer types by name: the model builds its long-range memory layers from here.

==================  =============================================  ==========================
name                class                                          state per frame
==================  =============================================  ==========================
``none``            no memory layer                                none
``gla``             :class:`layers.gla.GLAMemory`                  fixed
``elastic``         :class:`layers.elastic.ElasticMemory`          fixed
``ttt``             :class:`layers.ttt.TTTMemory`                  fixed
``causal_attention`` :class:`layers.causal_attention.CausalAttentionMemory`  grows (baseline)
==================  =============================================  ==========================

Every class takes ``(dim, num_heads, **options)`` with typed keyword options and follows the
protocol of :mod:`layers.memory`. Modules are imported on first use, so a missing optional layer
only fails when it is asked for.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: listing the types (help texts, tools) does not import torch
    from torch import nn

# name -> (module, class); "none" means no layer at all.
MEMORY_TYPES: dict[str, tuple[str, str] | None] = {
    "none": None,
    "gla": ("layers.gla", "GLAMemory"),
    "elastic": ("layers.elastic", "ElasticMemory"),
    "ttt": ("layers.ttt", "TTTMemory"),
    "causal_attention": ("layers.causal_attention", "CausalAttentionMemory"),
}


def memory_class(name: str) -> type[nn.Module] | None:
    """The class registered under ``name`` (None for ``"none"``).

    Raises:
        ValueError: unknown name (the message lists the known ones) or a module that cannot be
            imported.
    """
    if name not in MEMORY_TYPES:
        raise ValueError(f"unknown memory type {name!r}; expected one of {sorted(MEMORY_TYPES)}")
    entry = MEMORY_TYPES[name]
    if entry is None:
        return None
    module_name, class_name = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"memory type {name!r}: cannot import {module_name} ({e})") from e
    return getattr(module, class_name)


def memory_options(name: str) -> dict[str, Any]:
    """Keyword options (name -> default) accepted by the constructor of memory type ``name``."""
    cls = memory_class(name)
    if cls is None:
        return {}
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    return {p.name: p.default for p in params
            if p.name not in ("dim", "num_heads") and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def build_memory(name: str, dim: int, num_heads: int, **options: Any) -> nn.Module | None:
    """Construct memory layer ``name`` of width ``dim`` with ``num_heads`` heads (None for "none").

    Raises:
        ValueError: unknown type or unknown option (the message lists the valid options).
    """
    cls = memory_class(name)
    if cls is None:
        if options:
            raise ValueError(f"memory type 'none' takes no options, got {sorted(options)}")
        return None
    valid = memory_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"memory type {name!r}: unknown option(s) {unknown}; valid options: {sorted(valid)}")
    return cls(dim, num_heads, **options)
