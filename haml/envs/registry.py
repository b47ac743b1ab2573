"""The lazy registry of environment families: ``name -> module``, imported on first use.

Every family module has the same contract:

- ``TASKS``: the known task names (a family may accept more, e.g. any valid MaMuJoCo
  ``"<Scenario>-<agent_conf>"``);
- ``Options``: a dataclass of the family's options, each field typed and documented;
- ``make_vector_env(task, num_envs, options, device, seed) -> VectorMultiAgentEnv``.

Importing this module (or ``haml``) imports no family and no simulator. A family whose simulator
package is missing is still listed; using it raises an ``ImportError`` naming the pip extra.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import types
import typing
from dataclasses import dataclass
from typing import Any

import torch

from haml.envs.base import VectorMultiAgentEnv, require_num_envs
from haml.utils.seeding import check_seed

__all__ = [
    "build_options",
    "env_module",
    "env_names",
    "make_env",
    "options_class",
    "register_env_family",
    "task_names",
]


@dataclass(frozen=True)
class _Family:
    module: str
    """Import path of the family module."""
    requires: tuple[str, ...] = ()
    """Top-level packages the family's simulator needs (checked without importing them)."""
    extra: str | None = None
    """The ``haml[...]`` pip extra that installs them."""
    install: str | None = None
    """How to install them, where a pip extra is not enough (said instead of the extra)."""


_FAMILIES: dict[str, _Family] = {}


def register_env_family(
    name: str,
    module: str,
    *,
    requires: tuple[str, ...] = (),
    extra: str | None = None,
    install: str | None = None,
) -> None:
    """Register (or replace) the env family ``name``, implemented by the module path ``module``."""
    if not name or not name.isidentifier():
        raise ValueError(f"env family name must be an identifier, got {name!r}")
    _FAMILIES[name] = _Family(module=module, requires=tuple(requires), extra=extra, install=install)


register_env_family(
    "mamujoco",
    "haml.envs.mamujoco",
    requires=("gymnasium_robotics", "mujoco", "pettingzoo"),
    extra="mamujoco",
)
register_env_family("toy", "haml.envs.toy")
register_env_family("smax", "haml.envs.smax", requires=("jax", "jaxmarl"), extra="smax")
register_env_family("mpe", "haml.envs.mpe", requires=("mpe2", "pettingzoo"), extra="mpe")
# StarCraft II itself cannot come from pip, nor can oxwhirl's `smac`/`smacv2` (PyPI's `smac` is
# SMAC3, an unrelated optimiser; haml.envs.smac recognises it and says so).
_STARCRAFT_INSTALL = (
    "install StarCraft II and oxwhirl's package from GitHub, then pip install \"haml[smac]\" "
    "(docs/envs/smac.md)"
)
register_env_family("smac", "haml.envs.smac", requires=("smac",), extra="smac",
                    install=_STARCRAFT_INSTALL.replace("package", "smac"))
register_env_family("smacv2", "haml.envs.smacv2", requires=("smacv2",), extra="smac",
                    install=_STARCRAFT_INSTALL.replace("package", "smacv2"))


def env_names() -> list[str]:
    """The registered env families, sorted."""
    return sorted(_FAMILIES)


def _family(name: str) -> _Family:
    if name not in _FAMILIES:
        raise ValueError(f"unknown env {name!r}; registered envs: {', '.join(env_names())}")
    return _FAMILIES[name]


def _missing_packages(family: _Family) -> list[str]:
    return [package for package in family.requires if importlib.util.find_spec(package) is None]


def env_module(name: str, *, check_requirements: bool = True) -> types.ModuleType:
    """The family module of env ``name`` (imported now; it imports its simulator lazily).

    With ``check_requirements`` (the default) a missing simulator package raises an
    ``ImportError`` that names it and the pip extra that installs it.
    """
    family = _family(name)
    if check_requirements:
        missing = _missing_packages(family)
        if missing:
            hint = f': pip install "haml[{family.extra}]"' if family.extra else ""
            if family.install:
                hint = f": {family.install}"
            raise ImportError(
                f"env {name!r} needs the package(s) {', '.join(missing)}, not installed{hint}"
            )
    return importlib.import_module(family.module)


def task_names(env: str) -> list[str]:
    """The known tasks of env family ``env`` (needs no simulator)."""
    return list(env_module(env, check_requirements=False).TASKS)


def options_class(env: str) -> type:
    """The ``Options`` dataclass of env family ``env`` (needs no simulator)."""
    return env_module(env, check_requirements=False).Options


# -- options ------------------------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    """``int``, ``float | None``, ``one of ['a', 'b']``: the type hint as the user reads it."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return f"one of {list(typing.get_args(annotation))}"
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits the type hint ``annotation`` (the simple types options use)."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple, dict):
        return isinstance(value, origin)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # an annotation this checker does not understand: the dataclass validates


def build_options(options_cls: type, overrides: dict[str, Any]) -> Any:
    """``options_cls(**overrides)`` with an error naming every unknown key and wrongly typed value.

    ``int`` values are accepted where a ``float`` is expected (and converted); ``bool`` is never
    taken for a number.
    """
    if not dataclasses.is_dataclass(options_cls):
        raise TypeError(f"{options_cls!r} is not an options dataclass")
    fields = {field.name: field for field in dataclasses.fields(options_cls) if field.init}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for {options_cls.__module__}."
            f"{options_cls.__qualname__}; valid options: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(options_cls)
    values = {}
    for key, value in overrides.items():
        annotation = hints.get(key, Any)
        if not _matches(value, annotation):
            raise TypeError(
                f"option {key!r} must be {_type_name(annotation)}, got {value!r} "
                f"({type(value).__name__})"
            )
        if annotation is float and isinstance(value, int):
            value = float(value)
        values[key] = value
    return options_cls(**values)


def make_env(
    env: str,
    task: str,
    num_envs: int = 1,
    seed: int | None = None,
    device: torch.device | str = "cpu",
    **options: Any,
) -> VectorMultiAgentEnv:
    """``num_envs`` copies of ``task`` of env family ``env``, torch tensors on ``device``.

    ``options`` are the family's ``Options`` fields (an unknown key or a wrongly typed value is an
    error naming it). Env ``e`` is seeded with ``seed + e`` on the first reset.

    >>> envs = make_env("mamujoco", "HalfCheetah-2x3", num_envs=4, seed=1, episode_limit=1000)
    """
    require_num_envs(num_envs)
    seed = check_seed(seed, "make_env")
    module = env_module(env)
    known = list(module.TASKS)
    if not isinstance(task, str):
        raise TypeError(
            f"task must be a string, got {task!r}; known {env} tasks: {', '.join(known)}"
        )
    opts = build_options(module.Options, options)
    return module.make_vector_env(task, num_envs, opts, torch.device(device), seed)
