"""haml.models.deterministic: the squashed deterministic policy, exploration, the Q critic's split
first layer, target copies and the Polyak update."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from haml.models import DeterministicPolicy, QCritic, frozen_copy, polyak_update
from haml.models.stacked import stack_key
from haml.runners.acting import JointActor

INF = math.inf


def _box(low: list[float], high: list[float]) -> spaces.Box:
    return spaces.Box(np.array(low, dtype=np.float32), np.array(high, dtype=np.float32))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _head_output(policy: DeterministicPolicy, obs: torch.Tensor) -> torch.Tensor:
    return policy.head(policy.body(obs))


# -- DeterministicPolicy ----------------------------------------------------------------------


def test_squash_matches_the_formula_on_asymmetric_bounds(device):
    space = _box([0.0, -2.0, -0.5], [3.0, 5.0, -0.25])
    policy = DeterministicPolicy(4, space, hidden=(8,), device=device, dtype=torch.float64)
    with torch.no_grad():
        policy.head.weight.mul_(3000.0)  # outputs over the whole tanh range, saturated ones too
    obs = torch.randn(256, 4, generator=_gen(), dtype=torch.float64).to(device)
    x = _head_output(policy, obs)
    low = torch.tensor(space.low, dtype=torch.float64, device=device)
    high = torch.tensor(space.high, dtype=torch.float64, device=device)
    expected = low + (torch.tanh(x) + 1) / 2 * (high - low)
    action = policy(obs)
    torch.testing.assert_close(action, expected, rtol=0, atol=1e-12)
    assert (action >= low).all() and (action <= high).all()
    assert (x.abs() > 20).any()  # some dimensions really were saturated
    torch.testing.assert_close(policy.action_scale, (high - low) / 2)
    torch.testing.assert_close(policy.action_center, (high + low) / 2)


def test_float32_actions_stay_inside_the_bounds():
    space = _box([-1.0, 0.1, -7.3], [1.0, 0.7, 2.9])
    policy = DeterministicPolicy(3, space, hidden=(16,))
    with torch.no_grad():
        policy.head.bias.copy_(torch.tensor([40.0, -40.0, 40.0]))  # saturate every dimension
    action = policy(torch.randn(64, 3, generator=_gen()))
    low, high = torch.tensor(space.low), torch.tensor(space.high)
    assert (action >= low).all() and (action <= high).all()


def test_unbounded_dimensions_are_left_unsquashed_with_finite_gradients():
    space = _box([-1.0, -INF, 0.0, -INF], [1.0, INF, INF, 2.0])
    policy = DeterministicPolicy(5, space, hidden=(8, 8))
    with torch.no_grad():
        policy.head.weight.mul_(1e3)
    obs = torch.randn(32, 5, generator=_gen())
    x = _head_output(policy, obs)
    action = policy(obs)
    assert policy.bounded.tolist() == [True, False, False, False]
    torch.testing.assert_close(action[:, 1:], x[:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(action[:, 0], torch.tanh(x[:, 0]))
    assert policy.action_scale.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert policy.action_center.tolist() == [0.0, 0.0, 0.0, 0.0]
    action.sum().backward()
    for p in policy.parameters():
        assert torch.isfinite(p.grad).all()
    # d a_j / d x_j = 1 on an unbounded dimension: the head bias gradient is the batch size.
    assert policy.head.bias.grad[1:].tolist() == [32.0, 32.0, 32.0]


def test_a_wholly_unbounded_box_is_the_head_output():
    policy = DeterministicPolicy(3, spaces.Box(-INF, INF, (2,)), hidden=(4,))
    obs = torch.randn(7, 3, generator=_gen())
    torch.testing.assert_close(policy(obs), _head_output(policy, obs), rtol=0, atol=0)


def test_squash_gradients_are_finite_when_saturated():
    policy = DeterministicPolicy(3, spaces.Box(-2.0, 2.0, (2,)), hidden=(4,))
    with torch.no_grad():
        policy.head.bias.fill_(1e4)
    policy(torch.randn(5, 3, generator=_gen())).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters())


def test_sample_is_the_deterministic_action_with_zero_log_probs():
    policy = DeterministicPolicy(4, spaces.Box(-1.0, 1.0, (3,)))
    obs = torch.randn(2, 6, 4, generator=_gen())
    for deterministic in (False, True):
        action, logp = policy.sample(obs, deterministic=deterministic)
        assert action.shape == (2, 6, 3) and logp.shape == (2, 6)
        assert not action.requires_grad and (logp == 0).all()
        torch.testing.assert_close(action, policy(obs).detach(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="action_mask"):
        policy.sample(obs, torch.ones(2, 6, 3, dtype=torch.bool))


def test_joint_actor_acts_with_deterministic_policies():
    box = spaces.Box(-1.0, 1.0, (2,))
    policies = [DeterministicPolicy(3, box), DeterministicPolicy(5, box)]
    assert stack_key(policies[0]) is None
    actor = JointActor(policies, num_envs=4)
    obs = [torch.randn(4, 3, generator=_gen(1)), torch.randn(4, 5, generator=_gen(2))]
    actions, logps, states = actor.act(types.SimpleNamespace(obs=obs, action_masks=None), True)
    for policy, o, a, lp in zip(policies, obs, actions, logps):
        torch.testing.assert_close(a, policy(o).detach(), rtol=0, atol=0)
        assert lp.shape == (4,)
    assert states == [None, None]


def test_explore_clips_to_the_bounds_and_scales_the_noise_by_the_half_width():
    space = _box([-1.0, 10.0, -INF], [1.0, 30.0, INF])
    policy = DeterministicPolicy(2, space, hidden=(8,), dtype=torch.float64)
    obs = torch.randn(20_000, 2, generator=_gen(), dtype=torch.float64)
    mu = policy(obs).detach()
    # Small noise: no clipping, std = sigma * half-width (1, 10 and 1 for the unbounded one).
    noisy = policy.explore(obs, 0.01, generator=_gen(3))
    std = (noisy - mu).std(0)
    expected = torch.tensor([0.01, 0.1, 0.01], dtype=torch.float64)
    torch.testing.assert_close(std, expected, rtol=0.05, atol=0)
    # Huge noise: clipped to the bounds, the unbounded dimension is not.
    noisy = policy.explore(obs, 100.0, generator=_gen(4))
    assert noisy[:, 0].min() == -1.0 and noisy[:, 0].max() == 1.0
    assert noisy[:, 1].min() == 10.0 and noisy[:, 1].max() == 30.0
    assert noisy[:, 2].abs().max() > 100.0
    assert not noisy.requires_grad
    # Reproducible from the generator; zero noise is the deterministic action.
    torch.testing.assert_close(policy.explore(obs, 0.3, _gen(5)), policy.explore(obs, 0.3, _gen(5)))
    torch.testing.assert_close(policy.explore(obs, 0.0), mu, rtol=0, atol=0)


def test_policy_init_conventions_and_dtype():
    box = spaces.Box(-1.0, 1.0, (2,))
    policy = DeterministicPolicy(6, box, hidden=(32, 32), dtype=torch.float64)
    assert policy.head.weight.dtype == torch.float64 and policy.action_low.dtype == torch.float64
    assert policy.bounded.dtype == torch.bool
    assert torch.equal(policy.head.bias, torch.zeros(2, dtype=torch.float64))
    # Output layer gain 0.01: initial actions near the centre of the Box.
    assert policy(torch.randn(100, 6, dtype=torch.float64, generator=_gen())).abs().max() < 0.1
    assert isinstance(policy.body.layers[1], nn.ReLU)


def test_policy_bad_input():
    with pytest.raises(TypeError, match="Box"):
        DeterministicPolicy(3, spaces.Discrete(4))
    with pytest.raises(ValueError, match="obs"):
        DeterministicPolicy(3, spaces.Box(-1.0, 1.0, (2,)))(torch.zeros(4, 5))


# -- QCritic ----------------------------------------------------------------------------------


def _randomise_norms(critic: QCritic, gen: torch.Generator) -> None:
    """Non-trivial γ and β in every LayerNorm (they start at 1 and 0, which would hide a γ or β
    left out of the split)."""
    with torch.no_grad():
        for module in critic.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.5 * torch.randn(module.weight.shape, generator=gen,
                                                          dtype=module.weight.dtype))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=gen,
                                                    dtype=module.bias.dtype))


@pytest.mark.parametrize("twin", [False, True])
@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("input_norm", [False, True])
def test_split_first_layer_equals_the_unsplit_forward(device, twin, layer_norm, input_norm):
    critic = QCritic(7, [3, 1, 2], hidden=(16, 8), layer_norm=layer_norm, input_norm=input_norm,
                     twin=twin, dtype=torch.float64)
    gen = _gen(1)
    _randomise_norms(critic, gen)
    critic.to(device)
    # States off-centre and on another scale than the actions: the input norm's mean and
    # variance then come from both parts, which a wrong combination of the two would miss.
    state = (3 + 2 * torch.randn(50, 7, generator=gen, dtype=torch.float64)).to(device)
    actions = [torch.randn(50, d, generator=gen, dtype=torch.float64).to(device) for d in (3, 1, 2)]
    plain = critic(state, actions)
    split = critic.q_from(critic.state_term(state), actions)
    joint = critic(state, torch.cat(actions, -1))
    if twin:
        assert isinstance(plain, tuple) and len(plain) == 2 and plain[0].shape == (50,)
        assert not torch.allclose(plain[0], plain[1])  # two independent networks
    else:
        plain, split, joint = (plain,), (split,), (joint,)
        assert plain[0].shape == (50,)
    for p, s, j in zip(plain, split, joint):
        torch.testing.assert_close(s, p, rtol=0, atol=1e-12)
        torch.testing.assert_close(j, p, rtol=0, atol=0)


@pytest.mark.parametrize("input_norm", [False, True])
def test_split_gradients_match(input_norm):
    critic = QCritic(5, [2, 2], hidden=(12, 12), input_norm=input_norm, twin=True,
                     dtype=torch.float64)
    gen = _gen(2)
    _randomise_norms(critic, gen)
    state = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    a0 = torch.randn(30, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    a1 = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    params = list(critic.parameters())
    plain = torch.autograd.grad(critic(state, [a0, a1])[1].sum(), [a0, *params], allow_unused=True)
    split = torch.autograd.grad(
        critic.q_from(critic.state_term(state, which=1), [a0, a1], which=1).sum(), [a0, *params],
        allow_unused=True,
    )
    # The first network's parameters get no gradient from the second's value either way.
    assert [g is None for g in split] == [g is None for g in plain]
    assert sum(g is not None for g in plain) == 1 + len(params) // 2
    for g_split, g_plain in zip(split, plain):
        if g_plain is not None:
            torch.testing.assert_close(g_split, g_plain, rtol=0, atol=1e-12)


@pytest.mark.parametrize("input_norm", [False, True])
def test_one_state_term_serves_candidate_actions(input_norm):
    """A state term ``[B, ·]`` broadcast against actions ``[C, B, ·]`` (discrete HASAC's one call
    for every action of an agent) equals C separate evaluations."""
    critic = QCritic(6, [4, 3], hidden=(10,), input_norm=input_norm, twin=True, dtype=torch.float64)
    gen = _gen(3)
    _randomise_norms(critic, gen)
    state = torch.randn(20, 6, generator=gen, dtype=torch.float64)
    other = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    onehot = torch.eye(4, dtype=torch.float64)[:, None, :].expand(4, 20, 4)
    q1, q2 = critic.q_from(critic.state_term(state), [onehot, other.expand(4, 20, 3)])
    assert q1.shape == (4, 20)
    for k in range(4):
        r1, r2 = critic(state, [onehot[k], other])
        torch.testing.assert_close(q1[k], r1, rtol=0, atol=1e-12)
        torch.testing.assert_close(q2[k], r2, rtol=0, atol=1e-12)


def test_state_term_and_q_from_need_the_same_networks():
    critic = QCritic(4, [2], hidden=(8,), twin=True)
    with pytest.raises(ValueError, match="same 'which'"):
        critic.q_from(critic.state_term(torch.zeros(3, 4), which=0), [torch.zeros(3, 2)])


def test_critic_bad_input():
    with pytest.raises(ValueError, match="action_dims"):
        QCritic(4, [])
    with pytest.raises(ValueError, match="action_dims"):
        QCritic(4, [2, 0])
    with pytest.raises(ValueError, match="state_dim"):
        QCritic(0, [2])
    critic = QCritic(4, [2, 3])
    with pytest.raises(ValueError, match="3 agents.* expected 2"):
        critic(torch.zeros(1, 4), [torch.zeros(1, 2)] * 3)
    with pytest.raises(ValueError, match="5 entries"):
        critic(torch.zeros(1, 4), [torch.zeros(1, 2), torch.zeros(1, 2)])


# -- target networks --------------------------------------------------------------------------


def test_frozen_copy_is_independent_and_needs_no_gradient():
    critic = QCritic(3, [1], hidden=(4,))
    target = frozen_copy(critic)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in critic.parameters())
    for t, s in zip(target.parameters(), critic.parameters()):
        assert torch.equal(t, s) and t.data_ptr() != s.data_ptr()


@pytest.mark.parametrize("tau", [0.1, 0.73, 1.0])
def test_polyak_update_matches_a_loop_over_tensors(device, tau):
    torch.manual_seed(3)
    box = spaces.Box(-1.0, 1.0, (2,))
    sources = [QCritic(6, [2, 2], hidden=(8, 8), layer_norm=True, device=device),
               DeterministicPolicy(3, box, hidden=(5,), device=device)]
    targets = [frozen_copy(m) for m in sources]
    with torch.no_grad():
        for m in targets:
            for p in m.parameters():
                p.add_(torch.randn(p.shape).to(device))
    expected = [
        (tau * s.detach() + (1 - tau) * t.detach())
        for m_t, m_s in zip(targets, sources)
        for t, s in zip(m_t.parameters(), m_s.parameters())
    ]
    polyak_update(targets, sources, tau)
    updated = [p for m in targets for p in m.parameters()]
    assert len(updated) == len(expected) > 8
    for p, e in zip(updated, expected):
        torch.testing.assert_close(p, e, rtol=1e-6, atol=1e-6)
        assert not p.requires_grad
    if tau == 1.0:
        for t, s in zip(updated, [p for m in sources for p in m.parameters()]):
            assert torch.equal(t, s)


def test_polyak_update_is_one_multi_tensor_op():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(str(func))
            return func(*args, **(kwargs or {}))

    sources = [QCritic(4, [1, 1], hidden=(4, 4)) for _ in range(3)]
    targets = [frozen_copy(m) for m in sources]
    with Ops() as ops:
        polyak_update(targets, sources, 0.5)
    assert ops.names == ["aten._foreach_lerp_.Scalar"]


def test_polyak_update_bad_input():
    a, b = QCritic(4, [1], hidden=(4,)), QCritic(4, [1], hidden=(5,))
    for tau in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="tau"):
            polyak_update([a], [frozen_copy(a)], tau)
    with pytest.raises(ValueError, match="same parameters"):
        polyak_update([a], [b], 0.5)
