"""DifferentiableGame: reward and its gradient, the EnvStep contract, bad input, state_dict."""

from __future__ import annotations

import pytest
import torch

from haml.envs.base import VectorMultiAgentEnv
from haml.envs.toy import DifferentiableGame
from haml.envs.toy.presets import FIGURE1_INITIAL_MEANS, figure1_reward


def quadratic_reward(actions: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """r = -|a^1 - 1|² - |a^2 + a^1[0]|² for a^1 ∈ R², a^2 ∈ R³ (a hand-checkable 2-agent game)."""
    a1, a2 = actions
    return -((a1 - 1.0) ** 2).sum(-1) - ((a2 + a1[..., :1]) ** 2).sum(-1)


def test_implements_the_vector_env_protocol(device):
    game = DifferentiableGame(quadratic_reward, action_dims=(2, 3), num_envs=4, device=device)
    assert isinstance(game, VectorMultiAgentEnv)
    assert game.spec.n_agents == 2
    assert [s.shape for s in game.spec.action_spaces] == [(2,), (3,)]
    for space in game.spec.action_spaces:
        assert bool((space.low == -float("inf")).all()) and bool((space.high == float("inf")).all())
    assert game.spec.task == "differentiable-game"


def test_figure1_reward_and_gradient_at_the_initial_means():
    game = DifferentiableGame(figure1_reward, action_dims=(1, 1))
    mu1, mu2 = FIGURE1_INITIAL_MEANS
    a1 = torch.tensor([[mu1]], dtype=torch.float64, requires_grad=True)
    a2 = torch.tensor([[mu2]], dtype=torch.float64, requires_grad=True)
    r = game.reward((a1, a2))
    assert r.shape == (1,) and float(r.detach()) == pytest.approx(-0.0625)
    g1, g2 = torch.autograd.grad(r.sum(), (a1, a2))
    # ∂(a^1 a^2)/∂a^1 = a^2 = 0.25 and ∂/∂a^2 = a^1 = -0.25: each agent alone wants to move towards
    # the other's sign, which is what makes the simultaneous update of [HATRPO] Figure 1 fail.
    assert float(g1) == pytest.approx(0.25) and float(g2) == pytest.approx(-0.25)


def test_step_rewards_and_interface(device):
    E = 3000
    gen = torch.Generator().manual_seed(0)
    a1 = torch.randn(E, 2, generator=gen)
    a2 = torch.randn(E, 3, generator=gen)
    game = DifferentiableGame(quadratic_reward, action_dims=[2, 3], num_envs=E, device=device)
    assert game.reset(seed=1).reward.abs().sum() == 0
    out = game.step((a1.to(device), a2.to(device)))
    expected = -((a1 - 1) ** 2).sum(1) - ((a2 + a1[:, :1]) ** 2).sum(1)
    torch.testing.assert_close(out.reward.cpu(), expected)
    assert out.reward.dtype == torch.float32 and not out.reward.requires_grad
    assert bool(out.terminated.all()) and not bool(out.truncated.any())
    assert all(o.shape == (E, 1) for o in (*out.obs, out.state, *out.final_obs, out.final_state))
    assert len(out.episodes) == E and out.episodes[5].ret == pytest.approx(float(expected[5]))
    assert {e.length for e in out.episodes} == {1}


def test_step_does_not_track_gradients_of_the_caller():
    game = DifferentiableGame(figure1_reward, action_dims=(1, 1), num_envs=2)
    a = torch.ones(2, 1, requires_grad=True)
    out = game.step((a, 2 * a))
    assert out.reward.tolist() == [2.0, 2.0] and not out.reward.requires_grad


def test_float64_actions_are_accepted_and_rewards_are_float32():
    game = DifferentiableGame(figure1_reward, action_dims=(1, 1), num_envs=2)
    a1 = torch.tensor([[0.5], [2.0]], dtype=torch.float64)
    a2 = torch.tensor([[4.0], [-1.0]], dtype=torch.float64)
    out = game.step((a1, a2))
    assert out.reward.dtype == torch.float32 and out.reward.tolist() == [2.0, -2.0]


@pytest.mark.parametrize(
    ("actions", "error", "match"),
    [
        ((torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1)), TypeError, r"actions\[0\] \(agent 0\).*float"),
        (
            (torch.zeros(2, 1), torch.zeros(2)),
            ValueError,
            r"actions\[1\] \(agent 1\) must have shape \[num_envs, d_1\] = \[2, 1\]",
        ),
        ((torch.zeros(3, 1), torch.zeros(2, 1)), ValueError, r"agent 0\) must have shape"),
        ((torch.zeros(2, 1), torch.tensor([[0.0], [float("nan")]])), ValueError, "agent 1's actions hold NaN"),
        ((torch.tensor([[float("inf")], [0.0]]), torch.zeros(2, 1)), ValueError, "agent 0's actions hold NaN or inf"),
        ((torch.zeros(2, 1),), ValueError, "one tensor per agent"),
        ((torch.zeros(2, 1), [[0.0], [0.0]]), TypeError, r"actions\[1\] \(agent 1\)"),
    ],
)
def test_bad_actions_name_the_agent(actions, error, match):
    game = DifferentiableGame(figure1_reward, action_dims=(1, 1), num_envs=2)
    with pytest.raises(error, match=match):
        game.step(actions)


def test_bad_reward_fn_output_is_reported():
    game = DifferentiableGame(lambda actions: actions[0], action_dims=(1, 1), num_envs=2)  # [E, 1], not [E]
    expected = r"'reward_fn' must return one reward per env, shape \[2\], got \[2, 1\]"
    with pytest.raises(ValueError, match=expected):
        game.step((torch.zeros(2, 1), torch.zeros(2, 1)))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(reward_fn=3.0, action_dims=(1,)), TypeError, "'reward_fn' must be callable"),
        (dict(reward_fn=figure1_reward, action_dims=()), ValueError, "'action_dims'"),
        (dict(reward_fn=figure1_reward, action_dims=(1, 0)), ValueError, "'action_dims'"),
        (dict(reward_fn=figure1_reward, action_dims=5), ValueError, "'action_dims'"),
        (dict(reward_fn=figure1_reward, action_dims=(1, 1), num_envs=0), ValueError, "num_envs must be an integer >= 1"),
        (dict(reward_fn=figure1_reward, action_dims=(1,), episode_stats_limit=-1), ValueError, "'episode_stats_limit'"),
    ],
)
def test_bad_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        DifferentiableGame(**kwargs)


def test_state_dict_round_trip():
    game = DifferentiableGame(quadratic_reward, action_dims=(2, 3), num_envs=2, task="quadratic")
    game.step((torch.zeros(2, 2), torch.zeros(2, 3)))
    state = game.state_dict()
    assert state == {"env": "toy", "task": "quadratic", "num_envs": 2, "steps": 1, "action_dims": [2, 3]}
    restored = DifferentiableGame(quadratic_reward, action_dims=(2, 3), num_envs=2, task="quadratic")
    restored.load_state_dict(state)
    assert restored.steps == 1
    with pytest.raises(ValueError, match="different game: action_dims"):
        other = DifferentiableGame(quadratic_reward, action_dims=(2, 2), num_envs=2, task="quadratic")
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="different game: task"):
        DifferentiableGame(quadratic_reward, action_dims=(2, 3), num_envs=2).load_state_dict(state)
