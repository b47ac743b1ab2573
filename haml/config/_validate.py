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

The same checks serve keyword arguments given from Python (``make_env``'s env options, through
:func:`haml.envs.registry.build_options`): with ``kwargs=True`` the keys are called options, every
unknown one is named at once, types are spelt as Python writes them (``float``, ``int | None``)
and an integral float is not taken for an int (YAML's ``1e7`` is a float; Python's ``10**7`` is
not).
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


def describe_type(hint: Any, python: bool = False) -> str:
    """A reader's name for a type annotation: ``int``, ``list of int``, ``float or null``...;
    with ``python``, as Python writes it: ``float``, ``int | None``, ``one of ['a', 'b']``."""
    if hint is Any:
        return "any value"
    if hint is type(None):
        return "None" if python else "null"
    union = _union_args(hint)
    if union is not None:
        return (" | " if python else " or ").join(describe_type(arm, python) for arm in union)
    origin = typing.get_origin(hint)
    if origin in (list, tuple, typing.Sequence):
        if python:
            return origin.__name__ if isinstance(origin, type) else "sequence"
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"list of {describe_type(args[0])}" if args else "list"
    if origin in (dict, typing.Mapping, Mapping):
        return "dict" if python else "mapping"
    choices = None
    if origin is typing.Literal:
        choices = list(typing.get_args(hint))
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        choices = [m.value for m in hint]
    if choices is not None:
        return f"one of {choices}" if python else "one of " + ", ".join(map(repr, choices))
    if dataclasses.is_dataclass(hint):
        return f"mapping (section {hint.__name__})"
    if python:
        return getattr(hint, "__name__", str(hint).replace("typing.", ""))
    return {bool: "bool (true/false)", int: "int", float: "number", str: "string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


@dataclasses.dataclass(frozen=True)
class _Where:
    """Where checked data come from, and how messages name keys and types."""

    source: str
    """The file, override or function, first in every message."""
    kwargs: bool = False
    """Python keyword arguments (see the module doc) rather than YAML data."""

    def key(self, key: str) -> str:
        return f"option '{key}'" if self.kwargs else f"'{key}'"

    def type_error(self, key: str, hint: Any, value: Any) -> ConfigTypeError:
        return ConfigTypeError(
            f"{self.source}: {self.key(key)} must be {describe_type(hint, self.kwargs)}, "
            f"got {value!r} ({type(value).__name__})"
        )

    def choice_error(self, key: str, hint: Any, value: Any) -> ConfigTypeError:
        """A value outside a ``Literal`` or an enum (whose type is the set of its values)."""
        return ConfigTypeError(
            f"{self.source}: {self.key(key)} must be {describe_type(hint, self.kwargs)}, got {value!r}"
        )


def _conform(value: Any, hint: Any, key: str, where: _Where) -> Any:
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
                return _conform(value, arm, key, where)
            except ConfigError:
                continue
        raise where.type_error(key, hint, value)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise where.type_error(key, hint, value)
        return check_section(value, hint, prefix=f"{key}.", source=where.source, kwargs=where.kwargs)
    origin = typing.get_origin(hint)
    if origin in (list, tuple, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            raise where.type_error(key, hint, value)
        args = typing.get_args(hint)
        if origin is tuple and args and Ellipsis not in args:
            if len(args) != len(value):
                raise ConfigError(
                    f"{where.source}: {where.key(key)} must have {len(args)} items, got {list(value)!r}"
                )
            return [_conform(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args))]
        item = args[0] if args else Any
        return [_conform(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin in (dict, typing.Mapping, Mapping):
        if not isinstance(value, Mapping):
            raise where.type_error(key, hint, value)
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigTypeError(f"{where.source}: keys of '{key}' must be strings, got {k!r}")
            out[k] = _conform(v, item, f"{key}.{k}", where)
        return out
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise where.choice_error(key, hint, value)
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value.value
        if value not in {m.value for m in hint}:
            raise where.choice_error(key, hint, value)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise where.type_error(key, hint, value)
        return value
    if hint is int:
        if isinstance(value, bool):
            raise where.type_error(key, hint, value)
        if isinstance(value, int):
            return value
        # 1e7 (a float to YAML) is a natural way to write a step count.
        if isinstance(value, float) and value.is_integer() and not where.kwargs:
            return int(value)
        raise where.type_error(key, hint, value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise where.type_error(key, hint, value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise where.type_error(key, hint, value)
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
    kwargs: bool = False,
) -> dict[str, Any]:
    """``data`` checked key by key against the dataclass ``cls``; a normalised plain copy.

    ``prefix`` is the dotted path of the section (``"critic."``), used in messages; ``types_``
    replaces ``cls``'s field types (the loader gives ``algo`` the algorithm's own config class);
    ``also_valid`` names keys the caller has already taken out of ``data`` (listed as valid in
    the unknown-key message); ``kwargs``: ``data`` are Python keyword arguments (module doc).
    """
    where = _Where(source, kwargs)
    if not isinstance(data, Mapping):
        section = f"'{prefix[:-1]}'" if prefix else "the top level"
        raise ConfigTypeError(f"{source}: {section} must be a mapping, got {data!r} ({type(data).__name__})")
    hints = dict(field_types(cls)) if types_ is None else dict(types_)
    for key in data:
        if not isinstance(key, str):
            raise ConfigTypeError(f"{source}: keys must be strings, got {key!r} under {prefix[:-1] or 'the top level'}")
    unknown = [key for key in data if key not in hints]
    if unknown:
        raise _unknown_keys(where, unknown, prefix, [*hints, *also_valid])
    return {key: _conform(value, hints[key], f"{prefix}{key}", where) for key, value in data.items()}


def _unknown_keys(where: _Where, unknown: list[str], prefix: str, valid: list[str]) -> ConfigError:
    """YAML data: the first unknown key, with the section's valid keys; keyword arguments: every
    unknown option at once."""
    if where.kwargs:
        return ConfigError(
            f"{where.source}: unknown option(s) {', '.join(repr(prefix + key) for key in unknown)}; "
            f"valid options: {', '.join(valid)}"
        )
    section = f"of {prefix[:-1]!r}" if prefix else "at the top level"
    return ConfigError(
        f"{where.source}: unknown key '{prefix}{unknown[0]}'; valid keys {section}: {', '.join(valid)}"
    )
