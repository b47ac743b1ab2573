"""haml.models.dueling: the dueling decomposition, the masked greedy choice and ε-greedy draws, the
joint-action numbering against itertools.product, one agent's slice of the joint values."""

from __future__ import annotations

import itertools

import pytest
import torch
from gymnasium import spaces

from haml.models.dueling import (
    DuelingJointQCritic,
    DuelingQNetwork,
    available_actions,
    dueling_combine,
    masked_greedy,
)


def _mask(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(*shape, generator=gen) < 0.5
    mask[..., 0] |= ~mask.any(-1)  # at least one available action per row
    return mask


def test_dueling_decomposition_over_all_and_over_available_actions():
    torch.manual_seed(0)
    net = DuelingQNetwork(3, spaces.Discrete(5), hidden=(8,), dueling_hidden=(8,), dtype=torch.float64)
    obs = torch.randn(7, 3, dtype=torch.float64)
    value, advantage = net.net.streams(obs)
    torch.testing.assert_close(net(obs), value + advantage - advantage.mean(-1, keepdim=True))
    mask = _mask(7, 5)
    expected = torch.stack([
        value[t] + advantage[t] - advantage[t][mask[t]].mean() for t in range(7)
    ])
    torch.testing.assert_close(net(obs, mask), expected)
    # V is what is left after the advantages' mean over the available actions.
    q = net(obs, mask)
    torch.testing.assert_close((q * mask).sum(-1) / mask.sum(-1), value.squeeze(-1))


def test_the_greedy_action_is_the_best_available_one():
    torch.manual_seed(1)
    net = DuelingQNetwork(4, spaces.Discrete(6), hidden=(16,), dueling_hidden=(16,))
    obs = torch.randn(50, 4)
    mask = _mask(50, 6, seed=2)
    q = net(obs, mask)
    greedy = net.greedy(obs, mask)
    assert greedy.dtype == torch.int64 and greedy.shape == (50,)
    assert mask.gather(-1, greedy[:, None]).all()
    for t in range(50):
        available = mask[t].nonzero().squeeze(-1)
        assert greedy[t] == available[q[t, available].argmax()]
    assert torch.equal(net.greedy(obs), net(obs).argmax(-1))
    # sample(): the greedy action and zero log-probabilities, deterministic or not.
    for deterministic in (True, False):
        action, logp = net.sample(obs, mask, deterministic=deterministic)
        assert torch.equal(action, greedy) and torch.equal(logp, torch.zeros(50))


def test_a_row_with_no_available_action_counts_every_action():
    q = torch.tensor([[1.0, 3.0, 2.0], [1.0, 3.0, 2.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    available = available_actions(mask, q)
    assert available[1].all() and torch.equal(available[0], mask[0])
    assert masked_greedy(q, available).tolist() == [2, 1]
    torch.testing.assert_close(dueling_combine(torch.zeros(2, 1), q, available)[1], q[1] - 2.0)


def test_epsilon_greedy_draws():
    torch.manual_seed(3)
    net = DuelingQNetwork(2, spaces.Discrete(4), hidden=(8,), dueling_hidden=(8,))
    obs = torch.randn(4000, 2)
    mask = _mask(4000, 4, seed=4)
    greedy = net.greedy(obs, mask)
    assert torch.equal(net.explore(obs, 0.0, mask), greedy)
    uniform = net.explore(obs, 1.0, mask)
    assert mask.gather(-1, uniform[:, None]).all()  # never an unavailable action
    # ε = 1 is uniform over the available actions: P(greedy) = 1 / #available.
    hit = (uniform == greedy).float()
    torch.testing.assert_close(hit.mean(), (1 / mask.sum(-1).float()).mean(), atol=0.03, rtol=0)
    # ε = 0.5 per row: about half the rows keep the greedy action for sure, the rest by chance.
    mixed = net.explore(obs, 0.5, mask)
    expected = 0.5 + 0.5 * (1 / mask.sum(-1).float()).mean()
    torch.testing.assert_close((mixed == greedy).float().mean(), expected, atol=0.03, rtol=0)
    # A generator makes the draws reproducible apart from the global RNG.
    a = net.explore(obs, 0.5, mask, generator=torch.Generator().manual_seed(7))
    b = net.explore(obs, 0.5, mask, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_a_box_space_is_refused():
    with pytest.raises(TypeError, match="Discrete"):
        DuelingQNetwork(3, spaces.Box(-1, 1, (2,)))


@pytest.mark.parametrize("counts", [(3,), (2, 3), (2, 3, 4), (5, 1, 2), (2, 2, 2, 2)])
def test_joint_index_follows_itertools_product(counts):
    critic = DuelingJointQCritic(3, counts, hidden=(4,), dueling_hidden=(4,))
    joint = list(itertools.product(*(range(n) for n in counts)))
    assert critic.n_joint == len(joint)
    actions = [torch.tensor([a[i] for a in joint]) for i in range(len(counts))]
    assert torch.equal(critic.joint_index(actions), torch.arange(len(joint)))


def test_agent_values_and_joint_availability_against_product():
    counts = (3, 2, 4)
    torch.manual_seed(5)
    critic = DuelingJointQCritic(5, counts, hidden=(8,), dueling_hidden=(8,), dtype=torch.float64)
    table = {a: k for k, a in enumerate(itertools.product(*(range(n) for n in counts)))}
    B = 6
    state = torch.randn(B, 5, dtype=torch.float64)
    actions = [torch.randint(0, n, (B,)) for n in counts]
    masks = [_mask(B, n, seed=10 + i) for i, n in enumerate(counts)]
    q = critic(state)
    for agent, n in enumerate(counts):
        values = critic.agent_values(q, actions, agent)
        assert values.shape == (B, n)
        for t in range(B):
            for a in range(n):
                joint = tuple(a if j == agent else int(actions[j][t]) for j in range(len(counts)))
                assert values[t, a] == q[t, table[joint]]
    available = critic.joint_available(masks)
    for joint, k in table.items():
        expected = masks[0][:, joint[0]] & masks[1][:, joint[1]] & masks[2][:, joint[2]]
        assert torch.equal(available[:, k], expected)
    # The dueling mean of the joint critic runs over the available joint actions.
    value, advantage = critic.net.streams(state)
    weight = available.double()
    baseline = (advantage * weight).sum(-1, keepdim=True) / weight.sum(-1, keepdim=True)
    torch.testing.assert_close(critic(state, masks), value + advantage - baseline)
    # value(): one joint action per sample.
    torch.testing.assert_close(
        critic.value(state, actions, masks),
        critic(state, masks).gather(-1, critic.joint_index(actions)[:, None]).squeeze(-1),
    )


def test_bad_critic_arguments_are_refused():
    with pytest.raises(ValueError, match="action_counts"):
        DuelingJointQCritic(3, (2, 0))
    with pytest.raises(ValueError, match="state_dim"):
        DuelingJointQCritic(0, (2, 2))
    critic = DuelingJointQCritic(3, (2, 2), hidden=(4,), dueling_hidden=(4,))
    with pytest.raises(ValueError, match="expected 2"):
        critic.joint_index([torch.zeros(3, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"\[\*B, 3\]"):
        critic(torch.zeros(2, 4))
