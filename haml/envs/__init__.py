"""haml's environments: one multi-agent interface (:mod:`haml.envs.base`) and a lazy registry.

``import haml.envs`` imports no simulator: a family module (``haml.envs.mamujoco``, ...) is
imported by :func:`make_env` and friends, and it imports its simulator only when an env is built.
``haml.envs.from_pettingzoo`` (a user's own PettingZoo env, :mod:`haml.envs.pettingzoo`) is
imported on first use.
"""

from haml.envs.base import EnvSpec, EnvStep, EpisodeStats, VectorMultiAgentEnv
from haml.envs.registry import (
    build_options,
    env_module,
    env_names,
    make_env,
    options_class,
    register_env_family,
    task_names,
)

__all__ = [
    "EnvSpec",
    "EnvStep",
    "EpisodeStats",
    "VectorMultiAgentEnv",
    "build_options",
    "env_module",
    "env_names",
    "from_pettingzoo",
    "make_env",
    "options_class",
    "register_env_family",
    "task_names",
]


def __getattr__(name: str) -> object:
    """``from_pettingzoo``, imported when first asked for (it imports gymnasium's vector envs)."""
    if name == "from_pettingzoo":
        from haml.envs.pettingzoo import from_pettingzoo

        return from_pettingzoo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
