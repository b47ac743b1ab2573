"""The trap of heterogeneity ([HAML], Proposition 2 and Appendix A.2).

Game (:mod:`haml.envs.toy.presets`, task ``"heterogeneity-trap"``): two agents, actions {0, 1},
r(0,0) = 0, r(0,1) = r(1,0) = 2, r(1,1) = -1. The proposition: from any π_old with
π^i_old(0) > 0.6 (i = 1, 2), the simultaneous update

    π^i_new = argmax_{π^i} E_{a^i ~ π^i, a^{-i} ~ π^{-i}_old}[A_{π_old}(a^i, a^{-i})]   for all i

gives J(π_new) = min_π J = -1 < J(π_old). The sequential (HA) update from the same π_old reaches
the optimum 2: the first agent makes the same greedy move to action 1, the second then answers
the *new* policy of the first and picks 0 (derived in :mod:`haml.envs.toy.presets`).

Per seed, π^1_old(0) and π^2_old(0) are drawn uniformly in (0.6, 1), and two versions are run
from that π_old:

1. **exact** (the proposition's update, which is defined as an exact argmax): each agent's
   best response computed from the payoff table, simultaneously (every agent answers π_old) or
   sequentially in a random order (agent i_m answers the new policies of i_1..i_{m-1});
2. **learned**: one iteration of the registered algorithms ``maa2c_ns`` (MAA2C-NS: per-agent
   policies, simultaneous A2C updates) and ``haa2c`` (HAA2C: sequential, factor-weighted) through
   :func:`~haml.runners.make_runner`'s runner, with the initial policies written into the
   networks. A large step (Adam lr 0.5, 20 mini-epochs on the unclipped A2C objective
   E[r(θ) M Â], which is linear in π^i) makes the update approximately the greedy one.

J is exact (:func:`~haml.envs.toy.expected_payoff`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from haml.envs.toy import expected_payoff
from haml.envs.toy.presets import (
    HETEROGENEITY_TRAP_MINIMUM,
    HETEROGENEITY_TRAP_OPTIMUM,
    HETEROGENEITY_TRAP_P0_THRESHOLD,
    heterogeneity_trap_payoff,
)
from haml.experiments._common import (
    DEFAULT_OUT_DIR,
    categorical_probs,
    check_run_args,
    make_runner,
    quiet_torch,
    record_updates,
    set_categorical_policy,
    summarise,
    toy_config,
    write_outputs,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "NAME",
    "SIMULTANEOUS",
    "SEQUENTIAL",
    "GREEDY_OVERRIDES",
    "TOLERANCE",
    "run",
    "initial_policies",
    "best_response",
    "exact_simultaneous_update",
    "exact_sequential_update",
]

NAME = "heterogeneity-trap"
TASK = "heterogeneity-trap"

SIMULTANEOUS = "maa2c_ns"
"""MAA2C-NS: one policy per agent, all updated at once from the same data (M = 1)."""

SEQUENTIAL = "haa2c"
"""HAA2C: the same objective, agents updated one after another, weighted by M."""

NUM_ENVS = 10_000
"""Games in the one iteration. The learned update estimates E[Q | a^i] from samples; near the
proposition's threshold (π^{-i}(0) → 0.6) the two actions' values differ by 5 π^{-i}(0) − 3 → 0,
and an agent with π^i(0) → 1 rarely plays action 1, so a large batch keeps the sampled argmax
equal to the exact one on most draws."""

GREEDY_OVERRIDES: tuple[str, ...] = ("algo.lr=0.5", "algo.epochs=20")
"""One iteration that is approximately the greedy (argmax) update: the A2C surrogate is linear in
π^i, and 20 Adam steps of size 0.5 on the logits drive π^i to (nearly) the sampled argmax."""

TOLERANCE = 0.1
"""The learned updates count as reaching J = -1 (simultaneous) or J = 2 (sequential) within this."""

P0_HIGH = 1.0
"""π^i_old(0) is drawn uniformly in (:data:`HETEROGENEITY_TRAP_P0_THRESHOLD`, this)."""

PAPER = "[HAML] (HAML), Proposition 2 ('Trap of Heterogeneity') and Appendix A.2"


def initial_policies(seed: int) -> tuple[list[float], list[int]]:
    """This seed's π^i_old(0) for both agents, uniform in (0.6, 1), and the agent order of the
    exact sequential update (a uniform permutation), from a generator of its own."""
    generator = torch.Generator().manual_seed(seed)
    low = HETEROGENEITY_TRAP_P0_THRESHOLD
    u = torch.rand(2, generator=generator, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
    order = torch.randperm(2, generator=generator).tolist()
    return (low + (P0_HIGH - low) * u).tolist(), order


def _as_probs(p0: Sequence[float]) -> list[torch.Tensor]:
    return [torch.tensor([p, 1.0 - p], dtype=torch.float64) for p in p0]


def best_response(payoff: torch.Tensor, agent: int, probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """argmax over agent ``agent``'s policies of E_{a^i ~ π^i, a^{-i} ~ probs^{-i}}[Q(a^i, a^{-i})]:
    the deterministic policy on the action of highest expected Q (one state, so Q = r; the
    advantage A = Q − V has the same argmax). Ties go to the lower action."""
    n_actions = payoff.shape[agent]
    values = []
    for action in range(n_actions):
        one_hot = torch.zeros(n_actions, dtype=torch.float64)
        one_hot[action] = 1.0
        trial = list(probs)
        trial[agent] = one_hot
        values.append(expected_payoff(payoff.double(), trial))
    best = int(torch.stack(values).argmax())
    response = torch.zeros(n_actions, dtype=torch.float64)
    response[best] = 1.0
    return response


def exact_simultaneous_update(payoff: torch.Tensor, probs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Every agent answers π_old (the proposition's update)."""
    return [best_response(payoff, i, probs) for i in range(len(probs))]


def exact_sequential_update(
    payoff: torch.Tensor, probs: Sequence[torch.Tensor], order: Sequence[int]
) -> list[torch.Tensor]:
    """Agents in ``order``; agent i_m answers the new policies of i_1..i_{m-1} and the old ones of
    the rest (the HA scheme with an exact argmax as each agent's step)."""
    current = list(probs)
    for agent in order:
        current[agent] = best_response(payoff, agent, current)
    return current


def _exact_J(payoff: torch.Tensor, probs: Sequence[torch.Tensor]) -> float:
    return float(expected_payoff(payoff.double(), list(probs)))


def _learned_update(cfg: Any, seed: int, p0: Sequence[float]) -> dict[str, Any]:
    runner = make_runner(cfg, seed)
    for policy, p in zip(runner.policies, p0):
        set_categorical_policy(policy, [p, 1.0 - p])
    payoff = runner.env.payoff
    J_old = _exact_J(payoff, [categorical_probs(p) for p in runner.policies])
    updates = record_updates(runner)
    runner.iterate()
    new = [categorical_probs(p) for p in runner.policies]
    return {
        "J_old": J_old,
        "J_new": _exact_J(payoff, new),
        "pi_new_action0": [float(p[0]) for p in new],
        "order": [update.agents[0] for update in updates],
    }


def run(seeds: int = 10, out_dir: str | Path = DEFAULT_OUT_DIR, quick: bool = False) -> dict[str, Any]:
    """Both versions (exact and learned) on seeds ``0 .. seeds-1``; write
    ``<out_dir>/heterogeneity-trap.json`` and (unless ``quick``) ``.png``; return the result dict.
    ``quick`` skips the figure only."""
    out = check_run_args(NAME, seeds, out_dir)
    started = time.perf_counter()
    payoff = heterogeneity_trap_payoff()
    low, high = HETEROGENEITY_TRAP_MINIMUM, HETEROGENEITY_TRAP_OPTIMUM
    configs = {
        algo: toy_config(algo, TASK, [f"train.num_envs={NUM_ENVS}", *GREEDY_OVERRIDES])
        for algo in (SIMULTANEOUS, SEQUENTIAL)
    }
    per_seed = []
    with quiet_torch():
        for seed in range(seeds):
            p0, order = initial_policies(seed)
            old = _as_probs(p0)
            J_old = _exact_J(payoff, old)
            exact_sim = exact_simultaneous_update(payoff, old)
            exact_seq = exact_sequential_update(payoff, old, order)
            exact = {
                "simultaneous": {"J_new": _exact_J(payoff, exact_sim),
                                 "pi_new_action0": [float(p[0]) for p in exact_sim]},
                "sequential": {"J_new": _exact_J(payoff, exact_seq),
                               "pi_new_action0": [float(p[0]) for p in exact_seq], "order": order},
            }
            learned = {algo: _learned_update(cfg, seed, p0) for algo, cfg in configs.items()}
            sim, seq = learned[SIMULTANEOUS], learned[SEQUENTIAL]
            checks = {
                "exact_simultaneous_reaches_min": exact["simultaneous"]["J_new"] == low < J_old,
                "exact_sequential_reaches_optimum": exact["sequential"]["J_new"] == high,
                f"{SIMULTANEOUS}_decreases_to_min":
                    sim["J_new"] < sim["J_old"] and sim["J_new"] <= low + TOLERANCE,
                f"{SEQUENTIAL}_reaches_optimum": seq["J_new"] >= high - TOLERANCE,
            }
            per_seed.append({
                "seed": seed,
                "pi_old_action0": p0,
                "J_old": J_old,
                "exact": exact,
                **learned,
                "checks": checks,
                "held": all(checks.values()),
            })
    result = summarise(
        NAME,
        claim=(
            "From pi^i_old(0) > 0.6 (i = 1, 2), simultaneous greedy updates lower the return to the "
            f"worst joint action, J(pi_new) = min J = {low:g} < J(pi_old); sequential HA updates reach "
            f"the optimum J = {high:g}. Checked for the exact argmax update of the proposition and "
            f"for one learned iteration of {SIMULTANEOUS} vs {SEQUENTIAL} "
            f"(within {TOLERANCE:g} of -1 and 2)."
        ),
        paper=PAPER,
        settings={
            "env": "toy",
            "task": TASK,
            "pi_old_action0": f"uniform in ({HETEROGENEITY_TRAP_P0_THRESHOLD:g}, {P0_HIGH:g}) per agent",
            "num_envs": NUM_ENVS,
            "iterations": 1,
            "overrides": list(GREEDY_OVERRIDES),
            "algorithms": {"simultaneous": SIMULTANEOUS, "sequential": SEQUENTIAL},
            "tolerance": TOLERANCE,
        },
        per_seed=per_seed,
        started=started,
        minimum_J=low,
        optimum_J=high,
        payoff=payoff.tolist(),
    )
    return write_outputs(result, out, None if quick else _draw)


def _draw(result: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    seeds = result["seeds"]
    figure = Figure(figsize=(11.0, 4.4), layout="constrained")
    plane, values = figure.subplots(1, 2, width_ratios=[1.0, 1.3])

    # Left: the policy plane (π^1(0), π^2(0)) with J contours, start points and where each update
    # lands (learned; the exact ones land on the corners).
    grid = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    p1, p2 = torch.meshgrid(grid, grid, indexing="xy")
    payoff = torch.tensor(result["payoff"], dtype=torch.float64)
    J = expected_payoff(payoff, [torch.stack([p1, 1 - p1], -1), torch.stack([p2, 1 - p2], -1)])
    contours = plane.contour(p1.numpy(), p2.numpy(), J.numpy(), levels=[-0.75, -0.25, 0.25, 0.75, 1.25, 1.75],
                             colors="grey", linewidths=0.6)
    plane.clabel(contours, fontsize=7, fmt="%g")
    threshold = HETEROGENEITY_TRAP_P0_THRESHOLD
    plane.fill_between([threshold, 1.0], threshold, 1.0, color="gold", alpha=0.2, label=r"$\pi^i_{old}(0) > 0.6$")
    for s in seeds:
        start = s["pi_old_action0"]
        for algo, color in ((SIMULTANEOUS, "tab:red"), (SEQUENTIAL, "tab:blue")):
            end = s[algo]["pi_new_action0"]
            plane.annotate("", xy=end, xytext=start,
                           arrowprops=dict(arrowstyle="->", color=color, alpha=0.5, linewidth=0.9))
        plane.plot(*start, "o", color="black", markersize=3)
    plane.plot([], [], color="tab:red", label=f"{SIMULTANEOUS} (simultaneous)")
    plane.plot([], [], color="tab:blue", label=f"{SEQUENTIAL} (sequential)")
    plane.set_xlim(-0.03, 1.03)
    plane.set_ylim(-0.03, 1.03)
    plane.set_aspect("equal")
    plane.set_xlabel(r"$\pi^1(0)$")
    plane.set_ylabel(r"$\pi^2(0)$")
    plane.set_title(r"one iteration from $\pi_{old}$ (contours: J)", fontsize=10)
    plane.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)

    # Right: J before and after, per seed.
    x = torch.arange(len(seeds)).double()
    plot = [
        (lambda s: s["J_old"], "k", "o", r"$J(\pi_{old})$"),
        (lambda s: s["exact"]["simultaneous"]["J_new"], "tab:red", "x", "exact simultaneous argmax"),
        (lambda s: s[SIMULTANEOUS]["J_new"], "tab:red", "o", f"{SIMULTANEOUS}, 1 iteration"),
        (lambda s: s["exact"]["sequential"]["J_new"], "tab:blue", "x", "exact sequential argmax"),
        (lambda s: s[SEQUENTIAL]["J_new"], "tab:blue", "o", f"{SEQUENTIAL}, 1 iteration"),
    ]
    for k, (get, color, marker, label) in enumerate(plot):
        offset = (k - 2) * 0.08
        face = color if marker == "o" and color != "k" else "none"
        values.scatter(x + offset, [get(s) for s in seeds], marker=marker, color=color, label=label,
                       s=28, facecolors=face if marker == "o" else None)
    values.axhline(result["optimum_J"], color="tab:blue", linestyle="--", linewidth=0.8)
    values.axhline(result["minimum_J"], color="tab:red", linestyle="--", linewidth=0.8)
    values.set_xticks(x.tolist(), [str(s["seed"]) for s in seeds])
    values.set_xlabel("seed")
    values.set_ylabel(r"exact $J(\pi)$")
    values.set_ylim(-1.3, 2.3)
    values.set_title(f"Trap of heterogeneity ([HAML] Prop. 2): held on {result['held_count']}/"
                     f"{result['num_seeds']} seeds", fontsize=10)
    values.legend(fontsize=7, loc="center right", bbox_to_anchor=(1.0, 0.35))
    return figure
