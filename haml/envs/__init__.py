"""haml's environments: one multi-agent interface (:mod:`haml.envs.base`) and a lazy registry.

``import haml.envs`` imports no simulator: a family module (``haml.envs.mamujoco``, ...) is
imported by :func:`make_env` and friends, and it imports its simulator only when an env is built.
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
    "make_env",
    "options_class",
    "register_env_family",
    "task_names",
]
