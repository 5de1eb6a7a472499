"""Typed dataclasses from plain mappings (YAML, JSON, dicts): the one place config values are checked.

:func:`from_dict` builds a dataclass field by field against its annotations: unknown keys, values
of the wrong type and choices outside a ``Literal`` raise :class:`recon.errors.ConfigError` naming
the key (``where``) and what was expected. Model configs (``recon.model.config``), the memory
layers' options (``layers.registry``) and eval protocols use it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from recon.errors import ConfigError


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` against type annotation ``tp``; ConfigError naming ``where``.

    ``float`` accepts an int (converted); ``int``, ``str`` and ``bool`` take exactly that type; a
    union takes the first member that accepts the value (None only where the union has it) and
    otherwise says what each member expected.
    """
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) or value not in choices:
            raise ConfigError(f"{where}: unknown {value!r}; valid: {', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return coerce(value, members[0], where)
        refusals = []
        for member in members:
            try:
                return coerce(value, member, where)
            except ConfigError as e:
                refusals.append(str(e).removeprefix(f"{where}: "))
        raise ConfigError(f"{where}: {'; or '.join(refusals)}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        items = [coerce(v, args[i] if origin is tuple else args[0], f"{where}[{i}]")
                 for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected float, got {value!r}")
        return float(value)
    if tp in (int, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: Any, where: str = "model") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid)}")
    return cls(**{k: coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()})
