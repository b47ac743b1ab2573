"""haml.models.stacked: several MLP policies of one architecture acting as one batched network."""

from __future__ import annotations

import pytest
import torch
from gymnasium import spaces

from haml.envs.base import EnvStep
from haml.models import MLPPolicy
from haml.models.recurrent import GRUPolicy
from haml.models.stacked import StackedPolicies, stack_key
from haml.runners.acting import JointActor

BOX = spaces.Box(-1.0, 1.0, (3,))
DISCRETE = spaces.Discrete(5)


def perturbed(n: int, seed: int, **kwargs) -> list[MLPPolicy]:
    """``n`` policies of one architecture whose weights (LayerNorm affine and log σ included)
    all differ, so that a mixed-up agent or a dropped affine term shows."""
    torch.manual_seed(seed)
    policies = []
    for _ in range(n):
        policy = MLPPolicy(**{"obs_dim": 6, "action_space": BOX, "hidden": (16, 8), **kwargs})
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(0.3 * torch.randn_like(p))
        policies.append(policy)
    return policies


ARCHITECTURES = [
    dict(activation="tanh"),
    dict(activation="relu", layer_norm=True, input_norm=True),
    dict(activation="relu", layer_norm=True, input_norm=False, hidden=(32,)),
    dict(activation="tanh", input_norm=True, hidden=()),
    dict(action_space=DISCRETE, activation="relu", layer_norm=True, input_norm=True),
]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_head_output_matches_each_policy(arch):
    policies = perturbed(3, seed=1, **arch)
    obs = torch.randn(3, 7, 6)
    out = StackedPolicies(policies).head_output(obs)
    assert out.shape == (3, 7, policies[0].action_dim)
    for i, policy in enumerate(policies):
        torch.testing.assert_close(out[i], policy.head(policy.body(obs[i])), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_sampled_log_probs_are_each_policys_own(arch):
    policies = perturbed(2, seed=2, **arch)
    obs = [torch.randn(9, 6) for _ in policies]
    actions, logp = StackedPolicies(policies).sample(obs)
    assert logp.shape == (2, 9) and not logp.requires_grad
    for i, policy in enumerate(policies):
        torch.testing.assert_close(logp[i], policy.log_prob(obs[i], actions[i]), rtol=1e-5, atol=1e-5)


def test_deterministic_actions_are_means_or_modes():
    for space in (BOX, DISCRETE):
        policies = perturbed(2, seed=3, action_space=space, layer_norm=True, input_norm=True)
        obs = [torch.randn(5, 6) for _ in policies]
        actions, logp = StackedPolicies(policies).sample(obs, deterministic=True)
        for i, policy in enumerate(policies):
            expected, expected_logp = policy.sample(obs[i], deterministic=True)
            if space is BOX:
                torch.testing.assert_close(actions[i], expected, rtol=1e-5, atol=1e-5)
            else:
                assert torch.equal(actions[i], expected)
            torch.testing.assert_close(logp[i], expected_logp, rtol=1e-5, atol=1e-5)


def test_gaussian_draws_have_each_policys_mean_and_spread():
    torch.manual_seed(4)
    policies = perturbed(2, seed=4, layer_norm=True, input_norm=True)
    with torch.no_grad():
        policies[0].log_std.fill_(-1.0)
        policies[1].log_std.copy_(torch.tensor([0.5, -0.5, 0.0]))
    obs_row = torch.randn(2, 1, 6)
    obs = [obs_row[i].expand(20000, 6) for i in range(2)]
    actions, _ = StackedPolicies(policies).sample(obs)
    for i, policy in enumerate(policies):
        mean = policy.head(policy.body(obs_row[i]))[0].detach()
        # 20000 draws: the standard error of the mean is σ/141 (at most 0.012 here), of the std
        # about σ/200; the agents' means differ by 0.3 or more, so a mix-up still fails.
        torch.testing.assert_close(actions[i].mean(0), mean, atol=0.05, rtol=0)
        torch.testing.assert_close(actions[i].std(0), policy.log_std.detach().exp(), atol=0.03, rtol=0.02)


def test_masked_actions_are_never_sampled():
    policies = perturbed(2, seed=5, action_space=DISCRETE, layer_norm=True)
    masks = [torch.rand(4000, 5) < 0.5 for _ in policies]
    for m in masks:
        m[:, 2] = True  # at least one available action per row
    obs = [torch.randn(4000, 6) for _ in policies]
    actions, logp = StackedPolicies(policies).sample(obs, masks)
    for i, policy in enumerate(policies):
        assert masks[i].gather(1, actions[i][:, None]).all()
        torch.testing.assert_close(logp[i], policy.log_prob(obs[i], actions[i], masks[i]))


@pytest.mark.parametrize("foreach", [False, True])  # haml's learners use the multi-tensor Adam
def test_the_stack_follows_in_place_updates(foreach):
    policies = perturbed(2, seed=6, layer_norm=True, input_norm=True)
    stack = StackedPolicies(policies)
    obs = torch.randn(2, 4, 6)
    before = stack.head_output(obs)
    # An optimiser step on one policy (in place, as every haml update is).
    optimizer = torch.optim.Adam(policies[1].parameters(), lr=0.1, foreach=foreach)
    policies[1].log_prob(obs[1], torch.zeros(4, 3)).sum().backward()
    optimizer.step()
    after = stack.head_output(obs)
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[1], policies[1].head(policies[1].body(obs[1])), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(after[1], before[1])
    # load_state_dict copies in place too.
    policies[0].load_state_dict(policies[1].state_dict())
    same_obs = stack.head_output(obs[[1, 1]])
    torch.testing.assert_close(same_obs[0], same_obs[1])


def test_a_shared_policy_repeated_stacks():
    (policy,) = perturbed(1, seed=7, layer_norm=True)
    obs = torch.randn(3, 5, 6)
    out = StackedPolicies([policy] * 3).head_output(obs)
    for i in range(3):
        torch.testing.assert_close(out[i], policy.head(policy.body(obs[i])), rtol=1e-5, atol=1e-5)


def test_bad_input_is_refused():
    a = MLPPolicy(6, BOX, hidden=(8,))
    with pytest.raises(ValueError, match="differ in architecture"):
        StackedPolicies([a, MLPPolicy(6, BOX, hidden=(9,))])
    with pytest.raises(ValueError, match="differ in architecture"):
        StackedPolicies([a, MLPPolicy(7, BOX, hidden=(8,))])
    with pytest.raises(TypeError, match="MLPPolicy"):
        StackedPolicies([a, GRUPolicy(6, BOX, hidden=(8,))])
    with pytest.raises(ValueError, match="at least one"):
        StackedPolicies([])
    stack = StackedPolicies([a, a])
    with pytest.raises(ValueError, match="2 policies"):
        stack.sample([torch.zeros(3, 6)])
    with pytest.raises(ValueError, match="shape"):
        stack.sample([torch.zeros(3, 6), torch.zeros(3, 5)])
    assert stack_key(GRUPolicy(6, BOX, hidden=(8,))) is None


def _step(obs: list[torch.Tensor]) -> EnvStep:
    E = obs[0].shape[0]
    no = torch.zeros(E, dtype=torch.bool)
    state = torch.zeros(E, 1)
    return EnvStep(tuple(obs), state, torch.zeros(E), no, no, tuple(obs), state)


def test_joint_actor_stacks_alike_agents_and_keeps_the_rest_apart():
    torch.manual_seed(8)
    alike = perturbed(2, seed=8, layer_norm=True, input_norm=True)
    other = MLPPolicy(4, BOX, hidden=(16, 8))  # another obs size: acts on its own
    policies = [alike[0], other, alike[1]]
    actor = JointActor(policies, num_envs=5)
    groups = [(agents, stack is not None) for agents, stack in actor._groups]
    assert sorted(groups) == [([0, 2], True), ([1], False)]
    obs = [torch.randn(5, 6), torch.randn(5, 4), torch.randn(5, 6)]
    actions, logps, states = actor.act(_step(obs))
    assert states == [None, None, None]
    for i, policy in enumerate(policies):
        assert actions[i].shape == (5, 3)
        torch.testing.assert_close(logps[i], policy.log_prob(obs[i], actions[i]), rtol=1e-5, atol=1e-5)
