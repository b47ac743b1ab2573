"""Toy games from the papers: one-step, pure torch, deterministic, thousands of copies per step.

- :class:`MatrixGame` (``payoff``): n agents pick discrete actions, all receive
  ``payoff[a^1, ..., a^n]``; :func:`expected_payoff` gives the exact J(π) of given policies.
- :class:`DifferentiableGame` (``reward_fn``, ``action_dims``): continuous actions, a
  differentiable team reward.
- Named tasks (:data:`TASKS`, :class:`Options`, :func:`make_vector_env`, the entry point of the
  env registry): ``"homogeneity-trap"`` ([HATRPO]/[HAML] Proposition 1), ``"heterogeneity-trap"``
  ([HAML] Proposition 2), ``"figure1"`` ([HATRPO] Figure 1). :mod:`haml.envs.toy.presets` quotes what
  the papers state about each (payoff, initial policy, bound, optimum); and ``"memory"``
  (:class:`MemoryGame`, not from the papers): recall a cue seen a few steps earlier, with action
  masks and dying agents, the cheap test of recurrent policies.

Every class here implements :class:`haml.envs.base.VectorMultiAgentEnv` directly.
"""

from __future__ import annotations

from haml.envs.toy.differentiable_game import DifferentiableGame, RewardFn
from haml.envs.toy.matrix_game import MatrixGame, expected_payoff
from haml.envs.toy.memory import MemoryGame
from haml.envs.toy.presets import TASKS, Options, make_vector_env

__all__ = [
    "MatrixGame",
    "MemoryGame",
    "DifferentiableGame",
    "RewardFn",
    "expected_payoff",
    "TASKS",
    "Options",
    "make_vector_env",
]
