"""The papers' own small examples as reproducible experiments (``haml reproduce <name>``).

Each experiment trains the registered algorithms on a toy game of :mod:`haml.envs.toy` (or, where
the paper defines the update as an exact argmax, also computes that update exactly), measures
the exact expected return J, checks the paper's claim on every seed, and writes
``<out>/<name>.json`` (the claim, the settings, per-seed numbers, which seeds it held on) and
``<out>/<name>.png``:

================================  =============================================================
``homogeneity-trap``              [HATRPO]/[HAML] Proposition 1: shared-parameter MAPPO stays
                                  at or below J*_share = 2/2^n; HAPPO and HATRPO reach J* = 1
``heterogeneity-trap``            [HAML] Proposition 2: from π^i(0) > 0.6, simultaneous greedy
                                  updates (MAA2C-NS) fall to J = -1, sequential ones (HAA2C)
                                  reach J = 2
``figure1``                       [HATRPO] Figure 1: the simultaneous trust-region step lowers
                                  J = μ^1 μ^2, the sequential (HATRPO) step raises it
================================  =============================================================

A claim counts as reproduced when it holds on at least 90 % of the seeds (9 of 10). Each
experiment's default run takes seconds on a CPU; the tests in ``python_tests/experiments`` run
them as haml's quick learning tests.

Example::

    from haml.experiments import run_experiment

    result = run_experiment("figure1", seeds=10, out_dir="experiments")
    result["held_count"], result["reproduced"]  # (10, True): claim held on 10 of 10 seeds
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "EXPERIMENTS",
    "DEFAULT_OUT_DIR",
    "REQUIRED_FRACTION",
    "experiment_names",
    "get_experiment",
    "run_experiment",
]

DEFAULT_OUT_DIR = "experiments"
"""Where ``haml reproduce`` writes ``<name>.json`` and ``<name>.png`` unless told otherwise."""

REQUIRED_FRACTION = 0.9
"""A claim counts as reproduced when it holds on at least this fraction of the seeds (9 of 10)."""

EXPERIMENTS: dict[str, str] = {
    "homogeneity-trap": "haml.experiments.homogeneity_trap",
    "heterogeneity-trap": "haml.experiments.heterogeneity_trap",
    "figure1": "haml.experiments.figure1",
}
"""Experiment name → the module whose ``run(seeds, out_dir, quick)`` performs it (imported when
first used, so that listing the experiments, e.g. building ``haml``'s parser, imports no trainer)."""

RunFn = Callable[..., dict[str, Any]]


def experiment_names() -> list[str]:
    """The registered experiment names, in the order ``haml reproduce all`` runs them."""
    return list(EXPERIMENTS)


def get_experiment(name: str) -> RunFn:
    """The ``run`` function of experiment ``name``; an unknown name is an error listing the
    valid ones."""
    if not isinstance(name, str) or name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {experiment_names()}")
    return importlib.import_module(EXPERIMENTS[name]).run


def run_experiment(
    name: str, seeds: int = 10, out_dir: str | Path = DEFAULT_OUT_DIR, quick: bool = False
) -> dict[str, Any]:
    """Run experiment ``name`` on seeds ``0 .. seeds-1``, write ``<out_dir>/<name>.json`` (and
    ``.png`` unless ``quick``), and return the result dict (keys: ``claim``, ``held_count``,
    ``num_seeds``, ``required_count``, ``reproduced``, ``seeds``, ``settings``, ``seconds``,
    ``json``, ``figure``, and the experiment's own numbers)."""
    return get_experiment(name)(seeds=seeds, out_dir=out_dir, quick=quick)
