"""The papers' toy games as named tasks, with exactly what the papers state about them.

Papers: [HATRPO] = Kuba et al., "Trust Region Policy Optimisation in Multi-Agent Reinforcement
Learning" (ICLR 2022; HATRPO/HAPPO). [HAML] = Kuba et al., "Heterogeneous-Agent Mirror Learning:
A Continuum of Solutions to Cooperative MARL" (HAML, HAA2C, HADDPG). Beware: "Proposition 2"
means different things in the two papers; the heterogeneity trap is [HAML]'s.

Task ``"homogeneity-trap"`` — [HATRPO], Proposition 1 (proof: [HATRPO], Appendix B); restated as
[HAML], Proposition 1 "Trap of Homogeneity". Stated:

    "a fully-cooperative game with an even number of agents n, one state, and the joint action
    space {0,1}^n, where the reward is given by r(0^{n/2}, 1^{n/2}) = r(1^{n/2}, 0^{n/2}) = 1,
    and r(a^{1:n}) = 0 for all other joint actions. Let J* be the optimal joint reward, and
    J*_share be the optimal joint reward under the shared policy constraint. Then
    J*_share / J* = 2 / 2^n."

    The proof: J* = 1 (e.g. the deterministic joint action (0^{n/2}, 1^{n/2})); a shared policy
    (θ, 1-θ) (θ = probability of action 0) has J(θ) = 2 θ^{n/2} (1-θ)^{n/2}, maximal at θ = 1/2,
    so J*_share = 2 · 2^{-n/2} · 2^{-n/2} = 2 / 2^n.

    Here: agents 0..n/2-1 are the paper's first half (``payoff[0,..,0,1,..,1] = 1`` and
    ``payoff[1,..,1,0,..,0] = 1``, 0 elsewhere); :data:`HOMOGENEITY_TRAP_OPTIMUM` = J* = 1 and
    :func:`homogeneity_trap_shared_optimum` (n) = J*_share = 2 / 2^n. No initial policy is stated.
    Note that the uniform policy is itself the best shared policy (θ = 1/2), so every method
    starts (near-uniform init) at the bound. The shared-policy constraint holds for any
    parameter-shared policy here because every agent sees the same constant observation (no
    agent id is part of it).

Task ``"heterogeneity-trap"`` — [HAML], Proposition 2 "Trap of Heterogeneity" (proof: [HAML],
Appendix A.2). Stated:

    "a fully-cooperative game with 2 agents, one state, and the joint action space {0,1}^2,
    where the reward is given by r(0,0) = 0, r(0,1) = r(1,0) = 2, and r(1,1) = -1. Suppose that
    π^i_old(0) > 0.6 for i = 1, 2. Then, if agents i update their policies by
    π^i_new = argmax_{π^i} E_{a^i ~ π^i, a^{-i} ~ π^{-i}_old}[A_{π_old}(a^i, a^{-i})], ∀ i ∈ N,
    then the resulting policy will yield a lower return, J(π_old) > J(π_new) = min_π J(π)."

    The proof: E_{a^{-i}~π_old^{-i}}[Q(0, a^{-i})] = 2(1 - π^{-i}) and [Q(1, a^{-i})] = 3π^{-i} - 1,
    (π^{-i} = π^{-i}_old(0)); for π^{-i} > 0.6 the second is larger, so every agent's solution is
    the greedy π^i_new(1) = 1 and J(π_new) = r(1,1) = -1. (Its line "J(π_new) = ... > 0.6²·0 -
    (1 - 0.6²) = -0.64" is a bound on J(π_old); the text writes π_new there.)

    Here: ``payoff = [[0, 2], [2, -1]]`` (``payoff[a^1, a^2]``); optimum
    :data:`HETEROGENEITY_TRAP_OPTIMUM` = 2 (joint actions (0,1) and (1,0)); minimum
    :data:`HETEROGENEITY_TRAP_MINIMUM` = -1 (joint action (1,1)); the stated initial condition is
    π^i_old(0) > :data:`HETEROGENEITY_TRAP_P0_THRESHOLD` = 0.6 for both agents (no single
    initial policy is stated). Derived, not stated: a sequential (HA) update from the same π_old
    reaches the optimum — the first agent's update is the same greedy π(1) = 1; the second then
    maximises E_{a^{i_1} ~ π^{i_1}_new}[Q(a^{i_1}, a^{i_2})] and picks 0 (r(1,0) = 2 > r(1,1) = -1),
    so J = 2. E.g. from π^i_old(0) = 0.7: J(π_old) = 0.75.

Task ``"figure1"`` — [HATRPO], Figure 1 (and the paragraph after Equation (5)). Stated:

    "Example of differentiable game with r(a^1, a^2) = a^1 a^2. We initialise agents' 1-D
    Gaussian policies with μ^1 = -0.25, μ^2 = 0.25. Orange intervals represent the KL-ball of
    δ = 0.5. Individual trust region update (red) jointly decreases the performance, whereas our
    sequential updates (blue) lead to improvement." The text adds: "a single-state differential
    game where two agents draw their actions from Gaussian distributions with learnable means
    μ^1, μ^2 and unit variance, and the reward function is r(a^1, a^2) = a^1 a^2."

    Here: :func:`figure1_reward`; :data:`FIGURE1_INITIAL_MEANS` = (-0.25, 0.25),
    :data:`FIGURE1_STD` = 1, :data:`FIGURE1_KL_DELTA` = 0.5. Derived, not stated (the figure
    gives no numbers): J(μ^1, μ^2) = E[a^1 a^2] = μ^1 μ^2 (:func:`figure1_expected_return`),
    -0.0625 at the start; KL(N(μ,1) || N(μ',1)) = (μ - μ')² / 2, so the δ = 0.5 ball is
    |μ' - μ| ≤ 1; agent i's surrogate with the other fixed is linear, μ̄^i μ^{-i}, so its
    trust-region step is to μ^i + sign(μ^{-i}). Simultaneous: (0.75, -0.75), J = -0.5625 (worse).
    Sequential, agent 1 first: μ^1 = 0.75, then μ^2 = 1.25, J = 0.9375; agent 2 first:
    μ^2 = -0.75, then μ^1 = -1.25, J = 0.9375 (better).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from haml.envs.base import VectorMultiAgentEnv
from haml.envs.toy.differentiable_game import DifferentiableGame
from haml.envs.toy.matrix_game import MatrixGame
from haml.envs.toy.memory import MemoryGame
from haml.utils.seeding import check_seed

__all__ = [
    "TASKS",
    "Options",
    "make_vector_env",
    "homogeneity_trap_payoff",
    "homogeneity_trap_shared_optimum",
    "HOMOGENEITY_TRAP_OPTIMUM",
    "DEFAULT_HOMOGENEITY_TRAP_AGENTS",
    "MAX_HOMOGENEITY_TRAP_AGENTS",
    "heterogeneity_trap_payoff",
    "HETEROGENEITY_TRAP_OPTIMUM",
    "HETEROGENEITY_TRAP_MINIMUM",
    "HETEROGENEITY_TRAP_P0_THRESHOLD",
    "figure1_reward",
    "figure1_expected_return",
    "FIGURE1_INITIAL_MEANS",
    "FIGURE1_STD",
    "FIGURE1_KL_DELTA",
]

TASKS: tuple[str, ...] = ("homogeneity-trap", "heterogeneity-trap", "figure1", "memory")
"""The papers' three games, and "memory" (:class:`~haml.envs.toy.memory.MemoryGame`, not from the
papers: the cheap test of recurrent policies, masks and dying agents)."""
"""The named tasks of the ``toy`` environment family."""

# -- homogeneity trap ([HATRPO] Proposition 1 = [HAML] Proposition 1) ---------------------------------

HOMOGENEITY_TRAP_OPTIMUM = 1.0
"""J*: the optimal joint reward ([HATRPO], proof of Proposition 1: "Clearly J* = 1")."""

DEFAULT_HOMOGENEITY_TRAP_AGENTS = 4
"""n when :attr:`Options.n_agents` is None (the paper states any even n)."""

MAX_HOMOGENEITY_TRAP_AGENTS = 20
"""The table has 2^n entries (2^20 float32 = 4 MiB); beyond that no policy would ever see a reward."""


def _check_homogeneity_agents(n_agents: Any) -> int:
    if (
        isinstance(n_agents, bool)
        or not isinstance(n_agents, int)
        or n_agents < 2
        or n_agents % 2
        or n_agents > MAX_HOMOGENEITY_TRAP_AGENTS
    ):
        raise ValueError(
            "homogeneity-trap: 'n_agents' must be an even int in 2..{} (Proposition 1 needs an even n), "
            "got {!r}".format(MAX_HOMOGENEITY_TRAP_AGENTS, n_agents)
        )
    return n_agents


def homogeneity_trap_payoff(n_agents: int) -> torch.Tensor:
    """The ``(2,) * n`` table of [HATRPO]/[HAML] Proposition 1: 1 at (0^{n/2}, 1^{n/2}) and (1^{n/2}, 0^{n/2})."""
    half = _check_homogeneity_agents(n_agents) // 2
    payoff = torch.zeros((2,) * n_agents)
    payoff[(0,) * half + (1,) * half] = 1.0
    payoff[(1,) * half + (0,) * half] = 1.0
    return payoff


def homogeneity_trap_shared_optimum(n_agents: int) -> float:
    """J*_share = J* · 2 / 2^n = 2 / 2^n: no shared policy does better ([HATRPO] Proposition 1)."""
    _check_homogeneity_agents(n_agents)
    return HOMOGENEITY_TRAP_OPTIMUM * 2.0 / 2.0**n_agents


# -- heterogeneity trap ([HAML] Proposition 2) -----------------------------------------------------

HETEROGENEITY_TRAP_OPTIMUM = 2.0
"""max_π J(π) = r(0,1) = r(1,0) = 2."""

HETEROGENEITY_TRAP_MINIMUM = -1.0
"""min_π J(π) = r(1,1) = -1: where simultaneous greedy updates land ([HAML] Proposition 2)."""

HETEROGENEITY_TRAP_P0_THRESHOLD = 0.6
"""The proposition's initial condition: π^i_old(0) > 0.6 for both agents."""


def heterogeneity_trap_payoff() -> torch.Tensor:
    """``payoff[a^1, a^2]`` of [HAML] Proposition 2: r(0,0) = 0, r(0,1) = r(1,0) = 2, r(1,1) = -1."""
    return torch.tensor([[0.0, 2.0], [2.0, -1.0]])


# -- the differentiable game of [HATRPO] Figure 1 ---------------------------------------------------

FIGURE1_INITIAL_MEANS = (-0.25, 0.25)
"""(μ^1, μ^2) of the agents' initial 1-D Gaussian policies."""

FIGURE1_STD = 1.0
"""The policies' standard deviation ("unit variance"; only the means are learnt)."""

FIGURE1_KL_DELTA = 0.5
"""δ, the radius of each agent's KL ball."""


def figure1_reward(actions: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """r(a^1, a^2) = a^1 a^2 for actions ``[*B, 1]`` each; returns ``[*B]``."""
    a1, a2 = actions
    return a1[..., 0] * a2[..., 0]


def figure1_expected_return(mu1: Any, mu2: Any) -> Any:
    """J(μ^1, μ^2) = E[a^1 a^2] = μ^1 μ^2 for independent Gaussian policies (any variances)."""
    return mu1 * mu2


# -- the registry's entry point -------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """Parameters of the toy tasks (the ``env.*`` settings of a run)."""

    n_agents: int | None = None
    """Number of agents. "homogeneity-trap": an even int in 2..20 (None: 4). "heterogeneity-trap"
    and "figure1" are two-agent games: None or 2."""

    episode_stats_limit: int | None = None
    """At most this many ``EpisodeStats`` per step (those of the first envs); None: one per env, as
    the interface says. Building one costs more than a step of the games themselves, which
    matters at thousands of envs (docs/BENCHMARKS.md, "Environment adapters")."""

    delay: int = 2
    """"memory" only: steps between seeing the cue and answering."""

    death_prob: float = 0.0
    """"memory" only: probability that an agent is dead for a whole episode."""


def make_vector_env(
    task: str,
    num_envs: int,
    options: Options | None = None,
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> VectorMultiAgentEnv:
    """``num_envs`` copies of a named toy task on ``device``.

    ``seed`` seeds "memory"'s cues and deaths; the papers' games use no randomness.
    """
    if task not in TASKS:
        raise ValueError(f"toy: unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    options = Options() if options is None else options
    if not isinstance(options, Options):
        raise TypeError(f"toy: 'options' must be a haml.envs.toy.Options, got {type(options).__name__}")
    seed = check_seed(seed, "toy")
    common: dict[str, Any] = dict(
        num_envs=num_envs, device=device, task=task, episode_stats_limit=options.episode_stats_limit
    )

    if task == "memory":
        n = 2 if options.n_agents is None else options.n_agents
        return MemoryGame(n, options.delay, options.death_prob, num_envs, device, seed)
    if task == "homogeneity-trap":
        n = DEFAULT_HOMOGENEITY_TRAP_AGENTS if options.n_agents is None else options.n_agents
        return MatrixGame(homogeneity_trap_payoff(n), **common)
    if options.n_agents not in (None, 2):
        raise ValueError(
            f"toy: task {task!r} is a two-agent game; 'n_agents' must be None or 2, got {options.n_agents!r}"
        )
    if task == "heterogeneity-trap":
        return MatrixGame(heterogeneity_trap_payoff(), **common)
    return DifferentiableGame(figure1_reward, action_dims=(1, 1), **common)
