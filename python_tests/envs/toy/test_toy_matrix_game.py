"""MatrixGame: payoff lookup on hand-made tables, the EnvStep contract, bad input, state_dict."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from haml.envs.base import EnvStep, VectorMultiAgentEnv
from haml.envs.toy import MatrixGame, expected_payoff

# 2 agents with 2 and 3 actions: payoff[a1, a2].
TABLE_2x3 = [[1.0, -2.0, 3.5], [0.0, 7.0, -1.25]]

# 3 agents with 2, 3 and 2 actions: payoff[a1, a2, a3] = 100 a1 + 10 a2 + a3 - 5, written out by hand.
TABLE_2x3x2 = [
    [[-5.0, -4.0], [5.0, 6.0], [15.0, 16.0]],
    [[95.0, 96.0], [105.0, 106.0], [115.0, 116.0]],
]


def step(game: MatrixGame, *actions: list[int]) -> EnvStep:
    return game.step(tuple(torch.tensor(a, device=game.device) for a in actions))


def test_implements_the_vector_env_protocol(device):
    game = MatrixGame(TABLE_2x3, num_envs=3, device=device)
    assert isinstance(game, VectorMultiAgentEnv)
    assert game.spec.n_agents == 2
    assert [space.n for space in game.spec.action_spaces] == [2, 3]
    assert game.n_actions == (2, 3)
    assert game.spec.env == "toy" and game.spec.task == "matrix-game"
    assert game.spec.obs_dim(0) == game.spec.obs_dim(1) == game.spec.state_dim == 1


def test_two_agents_lookup_by_hand(device):
    game = MatrixGame(TABLE_2x3, num_envs=6, device=device)
    out = step(game, [0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2])
    assert out.reward.tolist() == [1.0, -2.0, 3.5, 0.0, 7.0, -1.25]
    out = step(game, [1, 0, 1, 0, 1, 0], [2, 2, 1, 1, 0, 0])
    assert out.reward.tolist() == [-1.25, 3.5, 7.0, -2.0, 0.0, 1.0]


def test_three_agents_lookup_by_hand(device):
    joint = list(itertools.product(range(2), range(3), range(2)))
    game = MatrixGame(TABLE_2x3x2, num_envs=len(joint), device=device)
    a1, a2, a3 = (list(column) for column in zip(*joint))
    out = step(game, a1, a2, a3)
    assert out.reward.tolist() == [100.0 * x + 10.0 * y + z - 5.0 for x, y, z in joint]


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4), (4, 1, 3, 2)])
def test_vectorised_over_thousands_of_envs(device, shape):
    gen = torch.Generator().manual_seed(sum(shape))
    payoff = torch.randn(shape, generator=gen)
    E = 5000
    actions = tuple(torch.randint(0, a, (E,), generator=gen) for a in shape)
    game = MatrixGame(payoff, num_envs=E, device=device)
    out = game.step(tuple(a.to(device) for a in actions))
    assert out.reward.shape == (E,) and out.reward.dtype == torch.float32
    torch.testing.assert_close(out.reward.cpu(), payoff[actions], rtol=0, atol=0)


def test_step_output_follows_the_interface(device):
    E = 7
    game = MatrixGame(TABLE_2x3, num_envs=E, device=device)
    first = game.reset(seed=3)
    assert first.reward.tolist() == [0.0] * E
    assert not first.terminated.any() and not first.truncated.any()
    assert first.episodes == []
    out = step(game, [1] * E, [1] * E)
    for obs in (*out.obs, out.state, *out.final_obs, out.final_state):
        assert obs.shape == (E, 1) and obs.dtype == torch.float32
        assert obs.device.type == torch.device(device).type
        assert bool((obs == 1.0).all())
    assert out.terminated.dtype == torch.bool and bool(out.terminated.all())
    assert out.truncated.dtype == torch.bool and not bool(out.truncated.any())
    assert out.action_masks is None
    assert len(out.episodes) == E
    assert [e.ret for e in out.episodes] == [7.0] * E
    assert [e.length for e in out.episodes] == [1] * E
    assert [e.env for e in out.episodes] == list(range(E))
    assert game.steps == 1


def test_episode_stats_limit_reports_the_first_envs():
    game = MatrixGame(TABLE_2x3, num_envs=6, episode_stats_limit=2)
    out = step(game, [0, 1, 0, 0, 0, 0], [2, 1, 0, 0, 0, 0])
    assert [e.ret for e in out.episodes] == [3.5, 7.0]
    assert out.reward.shape == (6,)
    assert MatrixGame(TABLE_2x3, num_envs=6, episode_stats_limit=0).step(
        (torch.zeros(6, dtype=torch.long), torch.zeros(6, dtype=torch.long))
    ).episodes == []


def test_observations_are_fresh_tensors():
    game = MatrixGame(TABLE_2x3, num_envs=2)
    out = step(game, [0, 0], [0, 0])
    out.obs[0].zero_()
    out.state.zero_()
    again = step(game, [0, 0], [0, 0])
    assert bool((again.obs[0] == 1).all()) and bool((again.state == 1).all())


def test_accepted_action_forms():
    game = MatrixGame(TABLE_2x3, num_envs=3)
    as_list = game.step([torch.tensor([1, 0, 1]), torch.tensor([2, 1, 0])]).reward
    column = game.step((torch.tensor([[1], [0], [1]]), torch.tensor([[2], [1], [0]]))).reward
    small_ints = (torch.tensor([1, 0, 1], dtype=torch.int32), torch.tensor([2, 1, 0], dtype=torch.uint8))
    int32 = game.step(small_ints).reward
    assert as_list.tolist() == column.tolist() == int32.tolist() == [-1.25, -2.0, 0.0]


def test_payoff_forms_and_dtype():
    from_numpy = MatrixGame(np.array(TABLE_2x3, dtype=np.float64))
    from_ints = MatrixGame([[1, 2], [3, 4]])
    assert from_numpy.payoff.dtype == from_ints.payoff.dtype == torch.float32
    assert from_ints.payoff.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert from_numpy.optimum == 7.0
    single_agent = MatrixGame([0.5, 2.0], num_envs=2)  # a bandit is a 1-agent matrix game
    assert single_agent.step((torch.tensor([1, 0]),)).reward.tolist() == [2.0, 0.5]


def test_deterministic():
    actions = (torch.tensor([0, 1, 1]), torch.tensor([2, 0, 1]))
    a = MatrixGame(TABLE_2x3, num_envs=3)
    b = MatrixGame(TABLE_2x3, num_envs=3)
    a.reset(seed=0)
    b.reset(seed=123)
    assert torch.equal(a.step(actions).reward, b.step(actions).reward)


@pytest.mark.parametrize(
    ("payoff", "error", "match"),
    [
        (3.0, ValueError, "one dimension per agent"),
        (torch.zeros(2, 0), ValueError, "at least one action per agent"),
        (torch.ones(2, 2, dtype=torch.bool), TypeError, "real numbers"),
        (torch.ones(2, 2, dtype=torch.complex64), TypeError, "real numbers"),
        ([[1.0, float("nan")], [0.0, 1.0]], ValueError, "finite"),
        ([[1.0, float("inf")], [0.0, 1.0]], ValueError, "finite"),
        ([[1.0, 2.0], [3.0]], ValueError, "rectangular"),
        ("payoff", ValueError, "'payoff'"),
    ],
)
def test_bad_payoff(payoff, error, match):
    with pytest.raises(error, match=match):
        MatrixGame(payoff)


@pytest.mark.parametrize("num_envs", [0, -3, 2.0, True, None])
def test_bad_num_envs(num_envs):
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1"):
        MatrixGame(TABLE_2x3, num_envs=num_envs)


@pytest.mark.parametrize(
    ("actions", "error", "match"),
    [
        (
            (torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])),
            ValueError,
            r"agent 0 chose action 2 .*Discrete\(2\), valid actions 0\.\.1",
        ),
        ((torch.tensor([0, 1, 1]), torch.tensor([0, 3, 2])), ValueError, r"agent 1 chose action 3 .*Discrete\(3\)"),
        ((torch.tensor([0, 1, 1]), torch.tensor([0, -1, 2])), ValueError, "agent 1 chose action -1"),
        ((torch.tensor([0.0, 1.0, 1.0]), torch.tensor([0, 1, 2])), TypeError, r"\[0\] \(agent 0\).*integer"),
        ((torch.tensor([0, 1, 1]), [0, 1, 2]), TypeError, r"actions\[1\] \(agent 1\).*torch.Tensor"),
        (
            (torch.tensor([0, 1]), torch.tensor([0, 1, 2])),
            ValueError,
            r"actions\[0\] \(agent 0\) must have shape \[num_envs\] = \[3\]",
        ),
        ((torch.tensor([0, 1, 1]), torch.zeros(3, 2, dtype=torch.long)), ValueError, r"agent 1\) must have shape"),
        ((torch.tensor([0, 1, 1]),), ValueError, r"one tensor per agent \(2 agents\).*length 1"),
        (torch.zeros(3, 2, dtype=torch.long), ValueError, "one tensor per agent"),
    ],
)
def test_bad_actions_name_the_agent(actions, error, match):
    game = MatrixGame(TABLE_2x3, num_envs=3)
    with pytest.raises(error, match=match):
        game.step(actions)
    assert game.steps == 0


def test_closed_env_refuses_to_step():
    game = MatrixGame(TABLE_2x3, num_envs=1)
    game.close()
    with pytest.raises(RuntimeError, match="closed"):
        step(game, [0], [0])


def test_state_dict_round_trip():
    game = MatrixGame(TABLE_2x3, num_envs=4)
    for _ in range(3):
        step(game, [0, 1, 0, 1], [0, 1, 2, 0])
    state = game.state_dict()
    assert state["steps"] == 3 and state["num_envs"] == 4

    restored = MatrixGame(TABLE_2x3, num_envs=4)
    restored.load_state_dict(state)
    assert restored.steps == 3 and restored.state_dict()["steps"] == 3
    actions = (torch.tensor([1, 1, 0, 0]), torch.tensor([2, 0, 1, 2]))
    assert torch.equal(game.step(actions).reward, restored.step(actions).reward)

    with pytest.raises(ValueError, match="different game: num_envs"):
        MatrixGame(TABLE_2x3, num_envs=5).load_state_dict(state)
    with pytest.raises(ValueError, match="different game: payoff"):
        MatrixGame([[1.0, -2.0, 3.5], [0.0, 7.0, 0.0]], num_envs=4).load_state_dict(state)
    with pytest.raises(KeyError, match="steps"):
        restored.load_state_dict({k: v for k, v in state.items() if k != "steps"})


def test_state_dict_survives_torch_save(tmp_path):
    game = MatrixGame(TABLE_2x3x2, num_envs=2)
    step(game, [0, 1], [2, 2], [1, 0])
    torch.save(game.state_dict(), tmp_path / "env.pt")
    restored = MatrixGame(TABLE_2x3x2, num_envs=2)
    restored.load_state_dict(torch.load(tmp_path / "env.pt"))
    assert restored.steps == 1


# -- expected_payoff ---------------------------------------------------------------------------


def brute_force_expected_payoff(payoff: torch.Tensor, probs: list[torch.Tensor]) -> float:
    total = 0.0
    for joint in itertools.product(*(range(a) for a in payoff.shape)):
        weight = 1.0
        for p, a in zip(probs, joint):
            weight *= float(p[a])
        total += weight * float(payoff[joint])
    return total


def test_expected_payoff_matches_enumeration():
    gen = torch.Generator().manual_seed(7)
    payoff = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    probs = [torch.rand(a, generator=gen, dtype=torch.float64).softmax(0) for a in (2, 3, 4)]
    exact = brute_force_expected_payoff(payoff, probs)
    assert float(expected_payoff(payoff, probs)) == pytest.approx(exact, abs=1e-12)
    assert float(MatrixGame(payoff).expected_payoff(probs)) == pytest.approx(
        brute_force_expected_payoff(payoff, probs), abs=1e-6
    )


def test_expected_payoff_of_deterministic_policies_is_the_table_entry():
    payoff = torch.tensor(TABLE_2x3)
    for a1, a2 in itertools.product(range(2), range(3)):
        one_hot = [torch.eye(2)[a1], torch.eye(3)[a2]]
        assert float(expected_payoff(payoff, one_hot)) == TABLE_2x3[a1][a2]


def test_expected_payoff_batched_and_differentiable():
    gen = torch.Generator().manual_seed(1)
    payoff = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    logits = [torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True),
              torch.randn(5, 2, generator=gen, dtype=torch.float64, requires_grad=True)]
    probs = [l.softmax(-1) for l in logits]
    J = expected_payoff(payoff, probs)
    assert J.shape == (5,) and J.requires_grad
    J, probs = J.detach(), [p.detach() for p in probs]
    for b in range(5):
        exact = brute_force_expected_payoff(payoff, [probs[0][b], probs[1][b]])
        assert float(J[b]) == pytest.approx(exact, abs=1e-12)
    # dJ/dπ^1(a) = Σ_{a2} payoff[a, a2] π^2(a2): the expected payoff of action a.
    p = [probs[0][0].detach().requires_grad_(), probs[1][0].detach()]
    (grad,) = torch.autograd.grad(expected_payoff(payoff, p), p[0])
    torch.testing.assert_close(grad, payoff @ p[1])


@pytest.mark.parametrize(
    ("probs", "match"),
    [
        ([torch.tensor([0.5, 0.5])], "one tensor per agent"),
        ([torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5])], r"probs\[1\] \(agent 1\) must have shape \[\*B, 3\]"),
        ([torch.tensor([0.7, 0.7]), torch.tensor([1.0, 0.0, 0.0])], r"probs\[0\].*sum to 1"),
        ([torch.tensor([1.5, -0.5]), torch.tensor([1.0, 0.0, 0.0])], r"probs\[0\].*non-negative"),
        ([torch.tensor([1, 0]), torch.tensor([1.0, 0.0, 0.0])], r"probs\[0\].*floating"),
    ],
)
def test_expected_payoff_bad_probs(probs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        expected_payoff(torch.tensor(TABLE_2x3), probs)
