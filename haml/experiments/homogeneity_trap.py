"""The trap of homogeneity ([HATRPO], Proposition 1; [HAML], Proposition 1).

Game (:mod:`haml.envs.toy.presets`, task ``"homogeneity-trap"``): n agents (n even), actions
{0, 1}, reward 1 for the joint actions (0^{n/2}, 1^{n/2}) and (1^{n/2}, 0^{n/2}), 0 otherwise.
J* = 1, and any policy shared by all agents gets at most J*_share = 2 / 2^n (at θ = 1/2).

Claim checked on every seed, from the library's default (near-uniform) initialisation, after the
same number of iterations for each algorithm:

- MAPPO with parameter sharing (``mappo``; the observation is the same constant for every agent,
  with no agent id, so the shared network *is* one policy) has J ≤ 2 / 2^n at every iteration;
- HAPPO and HATRPO (``happo``, ``hatrpo``: one policy per agent, sequential updates) end with
  J ≥ :data:`OPTIMUM_FRACTION` · J*.

J is exact: :func:`~haml.envs.toy.expected_payoff` of each agent's own policy's probabilities.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from haml.config.schema import ExperimentConfig
from haml.envs.toy import expected_payoff
from haml.envs.toy.presets import (
    DEFAULT_HOMOGENEITY_TRAP_AGENTS,
    HOMOGENEITY_TRAP_OPTIMUM,
    homogeneity_trap_payoff,
    homogeneity_trap_shared_optimum,
)
from haml.experiments._common import (
    DEFAULT_OUT_DIR,
    categorical_probs,
    check_run_args,
    make_runner,
    quiet_torch,
    summarise,
    toy_config,
    write_outputs,
)
from haml.runners import Runner

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["NAME", "ALGORITHMS", "OPTIMUM_FRACTION", "ITERATIONS", "run", "joint_return"]

NAME = "homogeneity-trap"
TASK = "homogeneity-trap"

ALGORITHMS: dict[str, tuple[str, ...]] = {
    # [HATRPO]'s MaMuJoCo clip (0.3) with a large step size: one-step game, 500 samples per
    # agent, a handful of parameters.
    "mappo": ("algo.lr=0.1", "algo.clip=0.3"),
    "happo": ("algo.lr=0.1", "algo.clip=0.3"),
    # A larger KL radius than the toy default (0.01): the optimum is deterministic, far from the
    # uniform start, and 0.08 per agent per iteration gets there in a few iterations.
    "hatrpo": ("algo.max_kl=0.08",),
}
"""The algorithms compared and their overrides of the toy defaults (the papers give no training
settings for this game). ``mappo`` shares parameters; the others are sequential HA methods."""

SHARED = "mappo"
"""The parameter-sharing algorithm, whose J Proposition 1 bounds."""

NUM_ENVS = 500
"""Games per iteration (one step each): the batch of every agent."""

ITERATIONS = 6
"""Iterations of every algorithm."""

OPTIMUM_FRACTION = 0.95
"""HAPPO/HATRPO count as having reached the optimum when J ≥ this · J*."""

BOUND_TOLERANCE = 1e-6
"""Float slack on J ≤ 2 / 2^n (J is computed in float64 from float32 probabilities)."""

PAPER = "[HATRPO] (HATRPO/HAPPO), Proposition 1 and Appendix B; [HAML] (HAML), Proposition 1"


def joint_return(runner: Runner) -> float:
    """Exact J of the runner's current policies (each agent's own ``policies[i]``)."""
    probs = [categorical_probs(policy) for policy in runner.policies]
    return float(expected_payoff(runner.env.payoff.double(), probs))


def _train(cfg: ExperimentConfig, seed: int, iterations: int) -> dict[str, Any]:
    runner = make_runner(cfg, seed)
    curve = [joint_return(runner)]
    for _ in range(iterations):
        runner.iterate()
        curve.append(joint_return(runner))
    probs0 = [float(categorical_probs(p)[0]) for p in runner.policies]
    return {"J": curve[-1], "J_curve": curve, "pi_action0": probs0}


def run(
    seeds: int = 10,
    out_dir: str | Path = DEFAULT_OUT_DIR,
    quick: bool = False,
    n_agents: int = DEFAULT_HOMOGENEITY_TRAP_AGENTS,
    iterations: int = ITERATIONS,
) -> dict[str, Any]:
    """Train MAPPO (shared), HAPPO and HATRPO on seeds ``0 .. seeds-1``; write
    ``<out_dir>/homogeneity-trap.json`` and (unless ``quick``) ``.png``; return the result dict.

    ``quick`` skips the figure only (the numbers are the same). ``n_agents``: any even n in 2..20
    (the proposition's n; more agents need more iterations).
    """
    out = check_run_args(NAME, seeds, out_dir)
    bound = homogeneity_trap_shared_optimum(n_agents)  # validates n_agents
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"{NAME}: 'iterations' must be a positive int, got {iterations!r}")
    started = time.perf_counter()
    optimum = HOMOGENEITY_TRAP_OPTIMUM
    per_seed = []
    configs = {
        algo: toy_config(
            algo, TASK, [f"env.options.n_agents={n_agents}", f"train.num_envs={NUM_ENVS}", *overrides]
        )
        for algo, overrides in ALGORITHMS.items()
    }
    with quiet_torch():
        for seed in range(seeds):
            runs = {algo: _train(cfg, seed, iterations) for algo, cfg in configs.items()}
            checks = {
                # "stays": at every iteration, not only the last
                f"{SHARED}_stayed_at_or_below_bound":
                    max(runs[SHARED]["J_curve"]) <= bound + BOUND_TOLERANCE,
                **{
                    f"{algo}_reached_optimum": runs[algo]["J"] >= OPTIMUM_FRACTION * optimum
                    for algo in ALGORITHMS if algo != SHARED
                },
            }
            per_seed.append({"seed": seed, **{algo: r for algo, r in runs.items()},
                             "checks": checks, "held": all(checks.values())})
    result = summarise(
        NAME,
        claim=(
            f"With n = {n_agents} agents, parameter-shared MAPPO stays at J <= 2/2^n = {bound:g} "
            f"(the best any shared policy can do), while HAPPO and HATRPO reach the optimum "
            f"(J >= {OPTIMUM_FRACTION:g} J*, J* = {optimum:g}), after {iterations} iterations each."
        ),
        paper=PAPER,
        settings={
            "env": "toy",
            "task": TASK,
            "n_agents": n_agents,
            "num_envs": NUM_ENVS,
            "iterations": iterations,
            "overrides": {algo: list(o) for algo, o in ALGORITHMS.items()},
            "initial_policy": "the library's default initialisation (near-uniform: logits ~ 0.01)",
        },
        per_seed=per_seed,
        started=started,
        bound_J_share=bound,
        optimum_J=optimum,
        payoff_nonzero=[list(map(int, idx)) for idx in torch.nonzero(homogeneity_trap_payoff(n_agents)).tolist()],
    )
    return write_outputs(result, out, None if quick else _draw)


def _draw(result: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    styles = {"mappo": ("tab:red", "MAPPO (shared)"), "happo": ("tab:blue", "HAPPO"),
              "hatrpo": ("tab:green", "HATRPO")}
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.add_subplot()
    for algo, (color, label) in styles.items():
        curves = torch.tensor([s[algo]["J_curve"] for s in result["seeds"]])
        x = range(curves.shape[1])
        for curve in curves:
            ax.plot(x, curve, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(x, curves.mean(0), color=color, linewidth=2.0, label=f"{label} (mean of {len(curves)} seeds)")
    n = result["settings"]["n_agents"]
    ax.axhline(result["optimum_J"], color="black", linestyle="--", linewidth=1.0, label=r"$J^* = 1$")
    ax.axhline(result["bound_J_share"], color="tab:red", linestyle=":", linewidth=1.2,
               label=rf"$J^*_{{share}} = 2/2^{{{n}}}$ = {result['bound_J_share']:g}")
    ax.set_xlabel("iteration")
    ax.set_ylabel(r"exact $J(\pi)$")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title(f"Trap of homogeneity, n = {n} ([HATRPO] Prop. 1): held on "
                 f"{result['held_count']}/{result['num_seeds']} seeds", fontsize=10)
    ax.legend(fontsize=8, loc="center right")
    return figure
