"""The named toy tasks hold the papers' stated numbers, and the papers' claims hold on them.

The claims are checked with exact computations on the games (best responses and expected returns
from action probabilities), not with any learning algorithm: these tests pin the environments.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from haml.envs.toy import TASKS, DifferentiableGame, MatrixGame, Options, expected_payoff, make_vector_env
from haml.envs.toy.presets import (
    DEFAULT_HOMOGENEITY_TRAP_AGENTS,
    FIGURE1_INITIAL_MEANS,
    FIGURE1_KL_DELTA,
    FIGURE1_STD,
    HETEROGENEITY_TRAP_MINIMUM,
    HETEROGENEITY_TRAP_OPTIMUM,
    HETEROGENEITY_TRAP_P0_THRESHOLD,
    HOMOGENEITY_TRAP_OPTIMUM,
    figure1_expected_return,
    heterogeneity_trap_payoff,
    homogeneity_trap_payoff,
    homogeneity_trap_shared_optimum,
)


def test_tasks_and_factory(device):
    assert TASKS == ("homogeneity-trap", "heterogeneity-trap", "figure1", "memory")
    for task in TASKS:
        env = make_vector_env(task, 8, Options(), torch.device(device), seed=0)
        assert env.spec.env == "toy" and env.spec.task == task and env.num_envs == 8
        assert env.device.type == torch.device(device).type
        env.reset(seed=0)
    default = make_vector_env("homogeneity-trap", 2, Options(), "cpu", None)
    assert default.spec.n_agents == DEFAULT_HOMOGENEITY_TRAP_AGENTS
    assert make_vector_env("homogeneity-trap", 2, Options(n_agents=6), "cpu", None).spec.n_agents == 6
    assert make_vector_env("heterogeneity-trap", 2, Options(n_agents=2), "cpu", None).spec.n_agents == 2
    assert isinstance(make_vector_env("figure1", 2, None, "cpu", None), DifferentiableGame)
    limited = make_vector_env("heterogeneity-trap", 4, Options(episode_stats_limit=1), "cpu", None)
    assert len(limited.step((torch.zeros(4, dtype=torch.long),) * 2).episodes) == 1


@pytest.mark.parametrize(
    ("task", "options", "error", "match"),
    [
        (
            "matrix",
            Options(),
            ValueError,
            "unknown task 'matrix'; valid tasks: homogeneity-trap, heterogeneity-trap, figure1",
        ),
        ("homogeneity-trap", Options(n_agents=3), ValueError, "even int in 2..20"),
        ("homogeneity-trap", Options(n_agents=0), ValueError, "even int"),
        ("homogeneity-trap", Options(n_agents=22), ValueError, "even int in 2..20"),
        ("heterogeneity-trap", Options(n_agents=4), ValueError, "two-agent game"),
        ("figure1", Options(n_agents=3), ValueError, "two-agent game"),
        ("figure1", {"n_agents": 2}, TypeError, "'options'"),
    ],
)
def test_factory_errors(task, options, error, match):
    with pytest.raises(error, match=match):
        make_vector_env(task, 2, options, "cpu", None)


# -- homogeneity trap: [HATRPO] Proposition 1 (= [HAML] Proposition 1) -----------------------------


@pytest.mark.parametrize("n", [2, 4, 6, 8])
def test_homogeneity_trap_payoff_is_the_propositions(n):
    payoff = homogeneity_trap_payoff(n)
    assert payoff.shape == (2,) * n
    half = n // 2
    rewarded = {(0,) * half + (1,) * half, (1,) * half + (0,) * half}
    for joint in itertools.product((0, 1), repeat=n):
        assert float(payoff[joint]) == (1.0 if joint in rewarded else 0.0), joint
    game = make_vector_env("homogeneity-trap", 2**n, Options(n_agents=n), "cpu", None)
    assert isinstance(game, MatrixGame) and game.optimum == HOMOGENEITY_TRAP_OPTIMUM == 1.0


@pytest.mark.parametrize("n", [2, 4, 6, 8])
def test_homogeneity_trap_shared_bound(n):
    """J*_share / J* = 2 / 2^n: the best shared policy (θ, 1-θ) reaches it at θ = 1/2, no θ beats it."""
    bound = homogeneity_trap_shared_optimum(n)
    assert bound == pytest.approx(2.0 / 2.0**n)
    payoff = homogeneity_trap_payoff(n).double()
    theta = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    shared = torch.stack([theta, 1.0 - theta], dim=-1)  # [1001, 2], the same policy for every agent
    J = expected_payoff(payoff, [shared] * n)
    torch.testing.assert_close(J, 2.0 * theta ** (n // 2) * (1.0 - theta) ** (n // 2))  # the proof's J(θ)
    assert float(J.max()) == pytest.approx(bound, rel=1e-12)
    assert float(theta[J.argmax()]) == pytest.approx(0.5)
    # Heterogeneous deterministic policies reach J* = 1.
    half = n // 2
    zero, one = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    one_hot = [zero] * half + [one] * half
    assert float(expected_payoff(payoff, one_hot)) == HOMOGENEITY_TRAP_OPTIMUM


def test_homogeneity_trap_env_pays_the_rewarded_joint_actions():
    n, E = 4, 3
    game = make_vector_env("homogeneity-trap", E, Options(n_agents=n), "cpu", None)
    # Per agent, the actions of envs 0..2; env 0 plays (0,0,1,1), env 1 (1,1,0,0), env 2 (0,1,1,1).
    columns = [(0, 1, 0), (0, 1, 1), (1, 0, 1), (1, 0, 1)]
    out = game.step(tuple(torch.tensor(c) for c in columns))
    assert out.reward.tolist() == [1.0, 1.0, 0.0]


# -- heterogeneity trap: [HAML] Proposition 2 ------------------------------------------------------


def q_of_own_actions(payoff: torch.Tensor, agent: int, other_policy: torch.Tensor) -> torch.Tensor:
    """E_{a^{-i} ~ π^{-i}}[Q(a^i, a^{-i})] for each a^i of a two-agent game (Q ≡ r: one state)."""
    return payoff @ other_policy if agent == 0 else payoff.T @ other_policy


def greedy(q: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(q.argmax(), q.numel()).to(q.dtype)


def test_heterogeneity_trap_payoff_is_the_propositions():
    payoff = heterogeneity_trap_payoff()
    assert payoff.tolist() == [[0.0, 2.0], [2.0, -1.0]]  # r(0,0)=0, r(0,1)=r(1,0)=2, r(1,1)=-1
    assert float(payoff.max()) == HETEROGENEITY_TRAP_OPTIMUM == 2.0
    assert float(payoff.min()) == HETEROGENEITY_TRAP_MINIMUM == -1.0
    assert HETEROGENEITY_TRAP_P0_THRESHOLD == 0.6
    game = make_vector_env("heterogeneity-trap", 4, Options(), "cpu", None)
    out = game.step((torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])))
    assert out.reward.tolist() == [0.0, 2.0, 2.0, -1.0]


@pytest.mark.parametrize(("p1", "p2"), [(0.61, 0.61), (0.7, 0.7), (0.65, 0.95), (0.99, 0.8)])
def test_heterogeneity_trap_claims(p1, p2):
    """From π^i_old(0) > 0.6: simultaneous greedy updates reach min J = -1 < J(π_old); a sequential
    update (either order) reaches the optimum 2."""
    payoff = heterogeneity_trap_payoff().double()
    old = [torch.tensor([p1, 1 - p1], dtype=torch.float64), torch.tensor([p2, 1 - p2], dtype=torch.float64)]
    J_old = float(expected_payoff(payoff, old))
    # The proof's expected Q values: 2(1 - π^{-i}) for action 0 and 3π^{-i} - 1 for action 1.
    for i in (0, 1):
        q = q_of_own_actions(payoff, i, old[1 - i])
        other_p0 = float(old[1 - i][0])
        assert q.tolist() == pytest.approx([2 * (1 - other_p0), 3 * other_p0 - 1])

    simultaneous = [greedy(q_of_own_actions(payoff, i, old[1 - i])) for i in (0, 1)]
    assert [p.tolist() for p in simultaneous] == [[0.0, 1.0], [0.0, 1.0]]
    J_simultaneous = float(expected_payoff(payoff, simultaneous))
    assert J_simultaneous == HETEROGENEITY_TRAP_MINIMUM < J_old

    for first, second in ((0, 1), (1, 0)):
        new = list(old)
        new[first] = greedy(q_of_own_actions(payoff, first, old[second]))
        new[second] = greedy(q_of_own_actions(payoff, second, new[first]))
        assert float(expected_payoff(payoff, new)) == HETEROGENEITY_TRAP_OPTIMUM > J_old


def test_heterogeneity_trap_threshold_matters():
    """Below the stated condition the trap need not close: at π^i_old(0) = 0.5 greedy picks action 0."""
    payoff = heterogeneity_trap_payoff().double()
    half = torch.tensor([0.5, 0.5], dtype=torch.float64)
    assert greedy(q_of_own_actions(payoff, 0, half)).tolist() == [1.0, 0.0]


# -- [HATRPO] Figure 1 -----------------------------------------------------------------------------


def test_figure1_is_the_papers_game():
    game = make_vector_env("figure1", 3, Options(), "cpu", None)
    assert game.spec.n_agents == 2 and [s.shape for s in game.spec.action_spaces] == [(1,), (1,)]
    out = game.step((torch.tensor([[-0.25], [2.0], [3.0]]), torch.tensor([[0.25], [-1.5], [0.5]])))
    assert out.reward.tolist() == [-0.0625, -3.0, 1.5]
    assert FIGURE1_INITIAL_MEANS == (-0.25, 0.25) and FIGURE1_STD == 1.0 and FIGURE1_KL_DELTA == 0.5


def test_figure1_expected_return_matches_sampled_rewards():
    E = 200_000
    gen = torch.Generator().manual_seed(0)
    mu1, mu2 = FIGURE1_INITIAL_MEANS
    a1 = mu1 + FIGURE1_STD * torch.randn(E, 1, generator=gen)
    a2 = mu2 + FIGURE1_STD * torch.randn(E, 1, generator=gen)
    game = make_vector_env("figure1", E, Options(episode_stats_limit=0), "cpu", None)
    mean = float(game.step((a1, a2)).reward.double().mean())
    # Var(a^1 a^2) = (1 + μ1²)(1 + μ2²) - μ1²μ2² ≈ 1.13; 5 standard errors.
    assert mean == pytest.approx(figure1_expected_return(mu1, mu2), abs=5 * math.sqrt(1.13 / E))


def trust_region_step(mu_own: float, mu_other: float) -> float:
    """Agent i's exact step: max of its surrogate μ̄^i μ^{-i} s.t. KL(N(μ^i, σ²) || N(μ̄^i, σ²)) ≤ δ."""
    radius = math.sqrt(2.0 * FIGURE1_KL_DELTA) * FIGURE1_STD
    return mu_own + math.copysign(radius, mu_other)


def test_figure1_trust_region_claims():
    """Simultaneous individual trust-region steps decrease J; sequential ones (either order) raise it."""
    mu1, mu2 = FIGURE1_INITIAL_MEANS
    # The KL ball of δ = 0.5 around N(μ, 1) is |Δμ| ≤ 1.
    Normal = torch.distributions.Normal
    kl = torch.distributions.kl_divergence(Normal(mu1, FIGURE1_STD), Normal(mu1 + 1.0, FIGURE1_STD))
    assert float(kl) == pytest.approx(FIGURE1_KL_DELTA)
    # Each agent's surrogate gradient is the other's mean (d/dμ^i of μ^1 μ^2), with autograd on J.
    mu = torch.tensor(FIGURE1_INITIAL_MEANS, requires_grad=True)
    (grad,) = torch.autograd.grad(figure1_expected_return(mu[0], mu[1]), mu)
    assert grad.tolist() == [mu2, mu1]

    J0 = figure1_expected_return(mu1, mu2)
    assert J0 == pytest.approx(-0.0625)
    simultaneous = (trust_region_step(mu1, mu2), trust_region_step(mu2, mu1))
    assert simultaneous == pytest.approx((0.75, -0.75))
    J_simultaneous = figure1_expected_return(*simultaneous)
    assert J_simultaneous == pytest.approx(-0.5625) and J_simultaneous < J0

    new1 = trust_region_step(mu1, mu2)
    first_agent1 = (new1, trust_region_step(mu2, new1))
    new2 = trust_region_step(mu2, mu1)
    first_agent2 = (trust_region_step(mu1, new2), new2)
    assert first_agent1 == pytest.approx((0.75, 1.25)) and first_agent2 == pytest.approx((-1.25, -0.75))
    for means in (first_agent1, first_agent2):
        J_sequential = figure1_expected_return(*means)
        assert J_sequential == pytest.approx(0.9375) and J_sequential > J0
