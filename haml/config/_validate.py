"""Strict checks of plain data (parsed YAML, overrides) against the config dataclasses.

:func:`check_section` walks a mapping beside a dataclass: every key must be one of its fields
(else :class:`ConfigError` naming the full dotted key and listing the section's valid keys) and
every value must have the field's type (else :class:`ConfigTypeError` naming the key, the type
wanted and the value given). It returns a normalised copy (an integral float such as ``1e7`` given
for an int field becomes the int; an int given for a float field becomes the float), ready to be
merged by OmegaConf, which then validates the types a second time.

The checks are stricter than OmegaConf's own conversions on purpose: OmegaConf turns ``2`` into
``True`` for a bool field, ``5`` into ``"5"`` for a string field and ``"5"`` into ``5`` for an int
field; here each of those is a type error.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ConfigError", "ConfigTypeError", "check_section", "describe_type", "field_types"]


class ConfigError(ValueError):
    """A configuration that cannot be used: an unknown key or name, or a value out of range."""


class ConfigTypeError(ConfigError, TypeError):
    """A configuration value of the wrong type (also a :class:`ConfigError`)."""


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """Field name → resolved type annotation of the dataclass ``cls``, in field order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


def describe_type(hint: Any) -> str:
    """A reader's name for a type annotation: ``int``, ``list of int``, ``float or null``..."""
    if hint is Any:
        return "any value"
    if hint is type(None):
        return "null"
    union = _union_args(hint)
    if union is not None:
        return " or ".join(describe_type(arm) for arm in union)
    origin = typing.get_origin(hint)
    if origin in (list, tuple, typing.Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"list of {describe_type(args[0])}" if args else "list"
    if origin in (dict, typing.Mapping, Mapping):
        return "mapping"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if dataclasses.is_dataclass(hint):
        return f"mapping (section {hint.__name__})"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    return {bool: "bool (true/false)", int: "int", float: "number", str: "string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _type_error(source: str, key: str, hint: Any, value: Any) -> ConfigTypeError:
    return ConfigTypeError(
        f"{source}: '{key}' must be {describe_type(hint)}, got {value!r} ({type(value).__name__})"
    )


def _conform(value: Any, hint: Any, key: str, source: str) -> Any:
    """``value`` checked against ``hint`` and normalised; raises naming ``key``."""
    if hint is Any or hint is object:
        return value
    union = _union_args(hint)
    if union is not None:
        if value is None and type(None) in union:
            return None
        for arm in union:
            if arm is type(None):
                continue
            try:
                return _conform(value, arm, key, source)
            except ConfigError:
                continue
        raise _type_error(source, key, hint, value)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise _type_error(source, key, hint, value)
        return check_section(value, hint, prefix=f"{key}.", source=source)
    origin = typing.get_origin(hint)
    if origin in (list, tuple, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            raise _type_error(source, key, hint, value)
        args = typing.get_args(hint)
        if origin is tuple and args and Ellipsis not in args:
            if len(args) != len(value):
                raise ConfigError(f"{source}: '{key}' must have {len(args)} items, got {list(value)!r}")
            return [_conform(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args))]
        item = args[0] if args else Any
        return [_conform(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin in (dict, typing.Mapping, Mapping):
        if not isinstance(value, Mapping):
            raise _type_error(source, key, hint, value)
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigTypeError(f"{source}: keys of '{key}' must be strings, got {k!r}")
            out[k] = _conform(v, item, f"{key}.{k}", source)
        return out
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{source}: '{key}' must be {describe_type(hint)}, got {value!r}")
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value.value
        if value not in {m.value for m in hint}:
            raise ConfigError(f"{source}: '{key}' must be {describe_type(hint)}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _type_error(source, key, hint, value)
        return value
    if hint is int:
        if isinstance(value, bool):
            raise _type_error(source, key, hint, value)
        if isinstance(value, int):
            return value
        # 1e7 (a float to YAML) is a natural way to write a step count.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _type_error(source, key, hint, value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(source, key, hint, value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _type_error(source, key, hint, value)
        return value
    # A type this module does not model: left to OmegaConf / the dataclass.
    return value


def check_section(
    data: Mapping[str, Any],
    cls: type,
    *,
    prefix: str = "",
    source: str,
    types_: Mapping[str, Any] | None = None,
    also_valid: Sequence[str] = (),
) -> dict[str, Any]:
    """``data`` checked key by key against the dataclass ``cls``; a normalised plain copy.

    ``prefix`` is the dotted path of the section (``"critic."``), used in messages; ``types_``
    replaces ``cls``'s field types (the loader gives ``algo`` the algorithm's own config class);
    ``also_valid`` names keys the caller has already taken out of ``data`` (listed as valid in
    the unknown-key message).
    """
    if not isinstance(data, Mapping):
        where = f"'{prefix[:-1]}'" if prefix else "the top level"
        raise ConfigTypeError(f"{source}: {where} must be a mapping, got {data!r} ({type(data).__name__})")
    hints = dict(field_types(cls)) if types_ is None else dict(types_)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigTypeError(f"{source}: keys must be strings, got {key!r} under {prefix[:-1] or 'the top level'}")
        if key not in hints:
            raise ConfigError(
                f"{source}: unknown key '{prefix}{key}'; valid keys "
                f"{('of ' + repr(prefix[:-1])) if prefix else 'at the top level'}: "
                f"{', '.join([*hints, *also_valid])}"
            )
        out[key] = _conform(value, hints[key], f"{prefix}{key}", source)
    return out
