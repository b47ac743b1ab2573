"""The differentiable game of [HATRPO], Figure 1 (and the paragraph after its eq. (5)).

Game (:mod:`haml.envs.toy.presets`, task ``"figure1"``): two agents with 1-D Gaussian policies
N(μ^i, 1) ("learnable means μ^1, μ^2 and unit variance"), reward r(a^1, a^2) = a^1 a^2, so
J(μ^1, μ^2) = μ^1 μ^2. Initial means μ = (-0.25, 0.25) (J = -0.0625), KL ball δ = 0.5. The
figure's claim: the individual (simultaneous) trust-region update decreases the joint return, the
sequential one improves it.

Both updates are the library's trust-region step (:func:`haml.ops.trust_region_step`, through
:class:`~haml.algorithms.hatrpo.TRPOActorLearner`) inside the ``hatrpo`` runner
(:func:`haml.runners.make_runner`), with ``max_kl`` = δ:

- **sequential**: the registered ``hatrpo`` as it is (a random agent order each iteration, the
  second agent's objective weighted by the first's ratio M);
- **simultaneous**: the same runner and learners with the runner's ``sequential=False`` option
  (see :data:`SIMULTANEOUS`): each agent takes its trust-region step on the same batch with
  M = 1, as MAPPO-NS does with the clipped objective. The registry has no simultaneous TRPO
  entry, so the experiment asks the runner for that scheme.

Each agent's step is observed through the runner's update hook
(:func:`~haml.experiments._common.record_updates`).

σ stays 1: log σ is frozen (``requires_grad`` off), which the trust-region step honours (it
updates the trainable parameters only). J is exact: μ^1 μ^2 from the networks' means.

With ``actor.hidden=[]`` the mean is μ = w·1 + b (two parameters, one direction), and the
conjugate-gradient solve uses damping 0.1 (the papers' code), so each step has KL
δ · 2/2.1 ≈ 0.476 rather than δ: |Δμ| ≈ 0.976 instead of the exact ball's 1.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from haml.envs.toy.presets import (
    FIGURE1_INITIAL_MEANS,
    FIGURE1_KL_DELTA,
    FIGURE1_STD,
    figure1_expected_return,
)
from haml.experiments._common import (
    DEFAULT_OUT_DIR,
    check_run_args,
    gaussian_mean,
    make_runner,
    quiet_torch,
    record_updates,
    set_gaussian_policy,
    summarise,
    toy_config,
    write_outputs,
)
from haml.runners import AgentUpdate, Runner

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["NAME", "ITERATIONS", "SIMULTANEOUS", "run", "exact_path"]

NAME = "figure1"
TASK = "figure1"

NUM_ENVS = 2000
"""Games per iteration: each agent's batch."""

ITERATIONS = 3
"""Iterations of each update scheme (the figure shows the first; the next ones show where each
scheme goes: the sequential one keeps improving, the simultaneous one oscillates)."""

PAPER = "[HATRPO] (HATRPO/HAPPO), Figure 1 and the paragraph after eq. (5)"


SIMULTANEOUS = {"sequential": False}
"""The runner option that turns ``hatrpo`` into simultaneous trust-region updates: every agent's
step from the same batch with M = 1 (in a fixed order, irrelevant when M stays 1)."""


def _means(runner: Runner) -> list[float]:
    return [gaussian_mean(policy) for policy in runner.policies]


def _train(cfg: Any, seed: int, sequential: bool, iterations: int) -> dict[str, Any]:
    runner = make_runner(cfg, seed, **({} if sequential else SIMULTANEOUS))
    for policy, mean in zip(runner.policies, FIGURE1_INITIAL_MEANS):
        set_gaussian_policy(policy, mean, FIGURE1_STD, learn_std=False)
    # After every single agent's update: (μ^1, μ^2) (the staircase of a sequential step) and the
    # spread of the factor M that agent was given (0 when M ≡ 1: the first agent of a sequential
    # step, every agent of a simultaneous one).
    points = [_means(runner)]
    factor_std: list[float] = []

    def record(update: AgentUpdate) -> None:
        points.append(_means(runner))
        factor_std.append(float(update.factor.std(unbiased=False)))

    runner.add_update_hook(record)
    updates = record_updates(runner)
    means = [_means(runner)]
    for _ in range(iterations):
        runner.iterate()
        means.append(_means(runner))
    orders = [[u.agents[0] for u in updates if u.iteration == k] for k in range(iterations)]
    return {
        "means": means,
        "J": [figure1_expected_return(m1, m2) for m1, m2 in means],
        "agent_steps": points,
        "factor_std": factor_std,
        "orders": orders,
        "std_after": [float(policy.log_std.exp()) for policy in runner.policies],
    }


def exact_path(sequential: bool, iterations: int, order: tuple[int, int] = (0, 1)) -> list[list[float]]:
    """The exact trust-region steps, for comparison: agent i's surrogate with the other agent
    fixed is linear, μ̄^i μ^{-i}, and its δ-ball is |μ̄^i − μ^i| ≤ σ √(2δ), so its step is
    μ^i + σ √(2δ) · sign(μ^{-i}) (with μ^{-i} the other's *new* mean when sequential)."""
    radius = FIGURE1_STD * math.sqrt(2.0 * FIGURE1_KL_DELTA)
    mu = list(FIGURE1_INITIAL_MEANS)
    path = [list(mu)]
    for _ in range(iterations):
        old = list(mu)
        for agent in order:
            other = mu[1 - agent] if sequential else old[1 - agent]
            mu[agent] = mu[agent] + radius * math.copysign(1.0, other)
        path.append(list(mu))
    return path


def run(
    seeds: int = 10,
    out_dir: str | Path = DEFAULT_OUT_DIR,
    quick: bool = False,
    iterations: int = ITERATIONS,
) -> dict[str, Any]:
    """Both schemes from the stated initial policies on seeds ``0 .. seeds-1``; write
    ``<out_dir>/figure1.json`` and (unless ``quick``) ``.png``; return the result dict.
    ``quick`` skips the figure only."""
    out = check_run_args(NAME, seeds, out_dir)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"{NAME}: 'iterations' must be a positive int, got {iterations!r}")
    started = time.perf_counter()
    overrides = [f"train.num_envs={NUM_ENVS}", f"algo.max_kl={FIGURE1_KL_DELTA}"]
    cfg = toy_config("hatrpo", TASK, overrides)
    J0 = figure1_expected_return(*FIGURE1_INITIAL_MEANS)
    per_seed = []
    with quiet_torch():
        for seed in range(seeds):
            sequential = _train(cfg, seed, sequential=True, iterations=iterations)
            simultaneous = _train(cfg, seed, sequential=False, iterations=iterations)
            checks = {
                "sequential_improves": sequential["J"][1] > J0,
                "simultaneous_decreases": simultaneous["J"][1] < J0,
            }
            per_seed.append({"seed": seed, "sequential": sequential, "simultaneous": simultaneous,
                             "checks": checks, "held": all(checks.values())})
    result = summarise(
        NAME,
        claim=(
            f"From mu = {FIGURE1_INITIAL_MEANS}, sigma = {FIGURE1_STD:g} and KL radius delta = "
            f"{FIGURE1_KL_DELTA:g}, one sequential trust-region iteration (HATRPO) raises "
            f"J = mu1 mu2 above J0 = {J0:g}, and one simultaneous trust-region iteration (each agent's "
            "step from the same batch, M = 1) lowers it below J0."
        ),
        paper=PAPER,
        settings={
            "env": "toy",
            "task": TASK,
            "algorithm": "hatrpo (sequential) and hatrpo with sequential=False (simultaneous)",
            "initial_means": list(FIGURE1_INITIAL_MEANS),
            "std": FIGURE1_STD,
            "std_learned": False,
            "max_kl": FIGURE1_KL_DELTA,
            "num_envs": NUM_ENVS,
            "iterations": iterations,
            "overrides": overrides,
        },
        per_seed=per_seed,
        started=started,
        J0=J0,
        exact={
            "sequential_agent1_first": exact_path(True, iterations, (0, 1)),
            "sequential_agent2_first": exact_path(True, iterations, (1, 0)),
            "simultaneous": exact_path(False, iterations),
        },
    )
    return write_outputs(result, out, None if quick else _draw)


def _draw(result: dict[str, Any]) -> Figure:
    import numpy as np
    from matplotlib.figure import Figure

    seeds = result["seeds"]
    figure = Figure(figsize=(11.0, 4.8), layout="constrained")
    plane, curves = figure.subplots(1, 2, width_ratios=[1.15, 1.0])
    blue, red, orange = "tab:blue", "tab:red", "tab:orange"

    # Left: the (μ1, μ2) plane with J = μ1 μ2 contours.
    extent = 3.6
    grid = np.linspace(-extent, extent, 201)
    m1, m2 = np.meshgrid(grid, grid)
    contours = plane.contour(m1, m2, m1 * m2, levels=[-4, -1, -0.25, 0.25, 1, 4, 9],
                             colors="grey", linewidths=0.6)
    plane.clabel(contours, fontsize=7, fmt="%g")
    start = result["settings"]["initial_means"]
    radius = result["settings"]["std"] * math.sqrt(2 * result["settings"]["max_kl"])
    # Each agent's own KL ball around the start: an interval along its own axis (the paper's
    # orange intervals).
    plane.plot([start[0] - radius, start[0] + radius], [start[1], start[1]], color=orange, linewidth=4,
               alpha=0.6, solid_capstyle="butt", label=f"each agent's KL ball, δ = {result['settings']['max_kl']:g}")
    plane.plot([start[0], start[0]], [start[1] - radius, start[1] + radius], color=orange, linewidth=4,
               alpha=0.6, solid_capstyle="butt")
    for s in seeds:
        steps = np.array(s["sequential"]["agent_steps"])
        plane.plot(steps[:, 0], steps[:, 1], color=blue, alpha=0.35, linewidth=1.0)
        means = np.array(s["simultaneous"]["means"])
        plane.plot(means[:, 0], means[:, 1], color=red, alpha=0.35, linewidth=1.0)
        plane.plot(*means[1], "o", color=red, markersize=3, alpha=0.6)
        plane.plot(*steps[2], "o", color=blue, markersize=3, alpha=0.6)
    plane.plot(*start, "ko", markersize=5, label=f"start μ = ({start[0]:g}, {start[1]:g})")
    plane.plot([], [], color=blue, label="sequential (HATRPO), per agent step")
    plane.plot([], [], color=red, label="simultaneous trust-region steps")
    plane.set_xlim(-extent, extent)
    plane.set_ylim(-extent, extent)
    plane.set_aspect("equal")
    plane.axhline(0, color="black", linewidth=0.4)
    plane.axvline(0, color="black", linewidth=0.4)
    plane.set_xlabel(r"$\mu^1$")
    plane.set_ylabel(r"$\mu^2$")
    plane.set_title(r"paths in the $(\mu^1, \mu^2)$ plane (contours: $J = \mu^1\mu^2$)", fontsize=10)
    plane.legend(fontsize=7, loc="lower right")

    # Right: J per iteration.
    x = np.arange(result["settings"]["iterations"] + 1)
    for key, color, label in (("sequential", blue, "sequential (HATRPO)"),
                              ("simultaneous", red, "simultaneous trust-region")):
        for s in seeds:
            curves.plot(x, s[key]["J"], color=color, alpha=0.35, linewidth=1.0)
        curves.plot([], [], color=color, label=f"{label}, {len(seeds)} seeds")
    for key, color in (("sequential_agent1_first", blue), ("simultaneous", red)):
        path = np.array(result["exact"][key])
        curves.plot(x, path[:, 0] * path[:, 1], color=color, linestyle=":", linewidth=1.5)
    curves.plot([], [], color="grey", linestyle=":", label="exact trust-region steps")
    curves.axhline(result["J0"], color="black", linewidth=0.6, linestyle="--", label=f"J0 = {result['J0']:g}")
    curves.set_xticks(x)
    curves.set_xlabel("iteration")
    curves.set_ylabel(r"exact $J = \mu^1 \mu^2$")
    curves.set_title(f"[HATRPO] Figure 1: held on {result['held_count']}/{result['num_seeds']} seeds", fontsize=10)
    curves.legend(fontsize=7, loc="upper left")
    return figure
