"""The lazy registry of environment families: ``name -> module``, imported on first use.

Every family module has the same contract:

- ``TASKS``: the known task names (a family may accept more, e.g. any valid MaMuJoCo
  ``"<Scenario>-<agent_conf>"``);
- ``Options``: a dataclass of the family's options, each field typed and documented;
- ``make_vector_env(task, num_envs, options, device, seed) -> VectorMultiAgentEnv``.

A family module may also define optional hooks, module-level functions for what only some
families can do (:data:`FAMILY_HOOKS` lists them; :func:`family_hook` looks one up, so that shared
code asks for a capability and never for a family by name):

- ``episode_frames(task, options, act, seed)``: one deterministic episode drawn as RGB frames
  (``haml eval --render``). ``act`` maps the per-agent observations (``[1, obs_dim_i]`` float32
  CPU tensors) to per-agent actions ``[1, d_i]``; the iterator yields the frame rate, then
  ``[H, W, 3]`` uint8 frames as they are drawn. Before the frame rate it raises
  :class:`~haml.envs.base.RenderUnavailable` with the reason when nothing can be drawn here.
  MaMuJoCo has it.
- ``jax_random_steps_per_second(task, num_envs, steps, seed=0, options=None) -> float``: the
  steps/s of the family's own jitted program stepped with random actions in JAX alone
  (``haml bench train``'s "JAX only" row). SMAX has it.
- ``action_kind_option(kind) -> str | None``: the ``key=value`` override that gives the
  family's tasks ``kind`` actions (``"discrete"`` or ``"continuous"``), or None where none does;
  an algorithm refused for the env's action kind names it. MPE has it.

Importing this module (or ``haml``) imports no family and no simulator. A family whose simulator
package is missing is still listed; using it raises an ``ImportError`` naming the pip extra.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from haml.envs.base import VectorMultiAgentEnv, require_num_envs
from haml.utils.seeding import check_seed

__all__ = [
    "FAMILY_HOOKS",
    "build_options",
    "check_options",
    "env_module",
    "env_names",
    "families_with_hook",
    "family_hook",
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
# A user's own PettingZoo parallel env: the task is the import path of the function that builds it.
register_env_family(
    "pettingzoo", "haml.envs.pettingzoo", requires=("pettingzoo",), extra="pettingzoo"
)
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


# -- optional hooks -----------------------------------------------------------------------------

FAMILY_HOOKS: dict[str, str] = {
    "episode_frames": "draws one deterministic episode as RGB frames (haml eval --render)",
    "jax_random_steps_per_second": "times the family's jitted program stepped in JAX alone "
    "(haml bench train's JAX-only row)",
    "action_kind_option": "names the option that switches the family's action kind (the "
    "refusal of an algorithm that cannot act in the env's actions)",
}
"""The optional hooks a family module may define, by name, with what each does (the module
docstring gives their signatures)."""


def _check_hook_name(name: str) -> None:
    if name not in FAMILY_HOOKS:
        raise ValueError(f"unknown env-family hook {name!r}; the hooks: {', '.join(FAMILY_HOOKS)}")


def family_hook(env: str, name: str) -> Callable[..., Any] | None:
    """The optional hook ``name`` (one of :data:`FAMILY_HOOKS`) of env family ``env``, or None
    where the family does not define it. Imports the family module, not its simulator."""
    _check_hook_name(name)
    hook = getattr(env_module(env, check_requirements=False), name, None)
    if hook is not None and not callable(hook):
        raise TypeError(f"env family {env!r}: hook {name!r} must be a function, got {hook!r}")
    return hook


def families_with_hook(name: str) -> list[str]:
    """The registered families whose module defines hook ``name``, sorted (for messages that
    say where a capability is available)."""
    _check_hook_name(name)
    found = []
    for env in env_names():
        try:
            module = env_module(env, check_requirements=False)
        except ImportError:  # a family module that cannot even be imported here
            continue
        if callable(getattr(module, name, None)):
            found.append(env)
    return found


# -- options ------------------------------------------------------------------------------------


def check_options(
    options_cls: type, options: Any, *, source: str | None = None, prefix: str = "", kwargs: bool = True
) -> dict[str, Any]:
    """``options`` (a mapping) checked against the fields of ``options_cls``: the one check of env
    options, which ``make_env`` and the config loader share. Every unknown key and wrongly typed
    value is an error naming it, the family (``source``, default the class's path) and the type
    expected; returns a normalised copy (``int`` → ``float`` where a float is expected).

    ``kwargs`` (the default): the options are Python keyword arguments; False: YAML data, whose
    keys the messages give as ``prefix`` + key (the loader: ``env.options.``). See
    :mod:`haml.config._validate`.
    """
    from haml.config._validate import check_section

    if not dataclasses.is_dataclass(options_cls):
        raise TypeError(f"{options_cls!r} is not an options dataclass")
    source = source or f"{options_cls.__module__}.{options_cls.__qualname__}"
    return check_section(options, options_cls, prefix=prefix, source=source, kwargs=kwargs)


def build_options(
    options_cls: type, overrides: Any, *, source: str | None = None, prefix: str = "", kwargs: bool = True
) -> Any:
    """``options_cls(**overrides)`` after :func:`check_options` (same arguments); the dataclass's
    own ``__post_init__`` then checks the values (ranges, combinations)."""
    return options_cls(**check_options(options_cls, overrides, source=source, prefix=prefix, kwargs=kwargs))


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
    opts = build_options(module.Options, options, source=f"env {env!r}")
    return module.make_vector_env(task, num_envs, opts, torch.device(device), seed)
