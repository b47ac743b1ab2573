"""haml.models.soft_policy: the tanh-squashed Gaussian's exact log-density (against a numerical
change of variables and a numerical integral), bounds, the clamped state-dependent log σ,
reparameterised gradients; the masked categorical; the acting interface used by evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from haml.models.soft_policy import (
    SoftCategoricalPolicy,
    SquashedGaussianPolicy,
    make_soft_policy,
    tanh_log_abs_det,
)
from haml.runners.acting import JointActor

INF = math.inf


def _box(low: list[float], high: list[float]) -> spaces.Box:
    return spaces.Box(np.array(low, dtype=np.float32), np.array(high, dtype=np.float32))


def _set_gaussian(policy: SquashedGaussianPolicy, mean: list[float], log_std: list[float]) -> None:
    """Make the policy output a constant (μ, log σ) whatever the observation."""
    with torch.no_grad():
        for head, values in ((policy.mean_head, mean), (policy.log_std_head, log_std)):
            head.weight.zero_()
            head.bias.copy_(torch.tensor(values, dtype=head.bias.dtype))


# -- SquashedGaussianPolicy -------------------------------------------------------------------


def test_tanh_log_abs_det_is_log_one_minus_tanh_squared_and_stays_finite():
    u = torch.linspace(-5, 5, 101, dtype=torch.float64)
    torch.testing.assert_close(tanh_log_abs_det(u), torch.log(1 - torch.tanh(u) ** 2),
                               rtol=1e-10, atol=1e-12)
    far = torch.tensor([-60.0, 60.0])  # float32 tanh rounds to ±1 here: log 0 in the direct form
    assert torch.isinf(torch.log(1 - torch.tanh(far) ** 2)).all()
    out = tanh_log_abs_det(far)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([-118.6137, -118.6137]), rtol=1e-5, atol=0)


def test_log_density_against_a_finite_difference_jacobian():
    """log π(a) = log N(u; μ, σ) - Σ log |∂a_j/∂u_j|, with the derivative of the squash taken
    numerically, on asymmetric bounds and with one unbounded dimension."""
    torch.manual_seed(0)
    space = _box([0.0, -2.0, -INF], [3.0, 5.0, INF])
    policy = SquashedGaussianPolicy(4, space, hidden=(8,), dtype=torch.float64)
    _set_gaussian(policy, [0.3, -0.7, 1.5], [-0.5, 0.2, 0.1])
    obs = torch.randn(64, 4, dtype=torch.float64)
    action, log_prob = policy.action_log_prob(obs)
    mean, log_std = policy(obs)
    # Recover the pre-squash draw, then differentiate the squash numerically.
    center, scale = policy.action_center, policy.action_scale
    u = torch.where(policy.bounded, torch.atanh((action - center) / scale), action)
    eps = 1e-6
    jac = (policy.squash(u + eps) - policy.squash(u - eps)) / (2 * eps)
    normal = torch.distributions.Normal(mean, log_std.exp())
    expected = (normal.log_prob(u) - torch.log(jac)).sum(-1)
    torch.testing.assert_close(log_prob, expected, rtol=1e-6, atol=1e-6)
    # ... and log_prob(obs, a) inverts the squash to the same value.
    torch.testing.assert_close(policy.log_prob(obs, action), log_prob, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("low, high, mean, log_std", [
    (-1.0, 1.0, 0.0, 0.0), (0.0, 3.0, 1.2, -0.3), (-2.0, 0.5, -0.8, 0.6),
])
def test_the_density_integrates_to_one_over_the_box(low, high, mean, log_std):
    """1-D: ∫ π(a) da over (low, high) = 1, by the trapezoidal rule in a = c + h tanh(u) (the
    substitution keeps the grid fine where the density piles up near the bounds)."""
    policy = SquashedGaussianPolicy(1, _box([low], [high]), hidden=(), dtype=torch.float64)
    _set_gaussian(policy, [mean], [log_std])
    u = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    a = (low + high) / 2 + (high - low) / 2 * torch.tanh(u)
    inside = (a > low) & (a < high)
    a = a[inside]
    density = policy.log_prob(torch.zeros(a.shape[0], 1, dtype=torch.float64), a[:, None]).exp()
    integral = torch.trapezoid(density, a)
    assert abs(float(integral.detach()) - 1.0) < 1e-6


def test_actions_stay_in_the_box_and_the_mean_is_deterministic():
    space = _box([-0.4, 2.0], [0.4, 6.0])
    policy = SquashedGaussianPolicy(3, space, hidden=(8,))
    _set_gaussian(policy, [3.0, -0.5], [2.0, 2.0])  # wide: many draws near the bounds
    obs = torch.randn(4096, 3)
    action, log_prob = policy.sample(obs)
    assert not action.requires_grad and not log_prob.requires_grad
    assert (action >= policy.action_low).all() and (action <= policy.action_high).all()
    assert torch.isfinite(log_prob).all()
    det, det_log_prob = policy.sample(obs[:5], deterministic=True)
    expected = torch.tensor([0.4 * math.tanh(3.0), 4.0 + 2.0 * math.tanh(-0.5)])
    torch.testing.assert_close(det, expected.expand(5, 2), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(det_log_prob, policy.log_prob(obs[:5], det), rtol=1e-5, atol=1e-5)


def test_log_std_is_state_dependent_and_clamped():
    policy = SquashedGaussianPolicy(2, _box([-1.0], [1.0]), hidden=(8,), log_std_min=-3.0,
                                    log_std_max=0.5)
    with torch.no_grad():
        policy.log_std_head.weight.fill_(10.0)
    _, log_std = policy(torch.tensor([[5.0, 5.0], [-5.0, -5.0], [0.0, 0.0]]))
    assert log_std.max() <= 0.5 and log_std.min() >= -3.0
    assert len(set(log_std.flatten().tolist())) > 1  # not one number for every observation
    with pytest.raises(ValueError, match="log_std_min"):
        SquashedGaussianPolicy(2, _box([-1.0], [1.0]), log_std_min=1.0, log_std_max=0.0)


def test_the_draw_is_reparameterised():
    """∂a/∂θ exists and matches a finite difference of the same draw (same noise)."""
    torch.manual_seed(3)
    policy = SquashedGaussianPolicy(2, _box([-1.0, -2.0], [1.0, 2.0]), hidden=(4,),
                                    dtype=torch.float64)
    obs = torch.randn(16, 2, dtype=torch.float64)
    bias = policy.mean_head.bias
    torch.manual_seed(7)
    action, log_prob = policy.action_log_prob(obs)
    (action.sum() + log_prob.sum()).backward()
    grad = bias.grad.clone()
    eps = 1e-6
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            bias[0] += sign * eps
            torch.manual_seed(7)
            a, lp = policy.action_log_prob(obs)
            values.append(float(a.sum() + lp.sum()))
            bias[0] -= sign * eps
    assert abs((values[0] - values[1]) / (2 * eps) - float(grad[0])) < 1e-5


def test_unbounded_dimensions_are_a_plain_gaussian_and_half_bounded_are_refused():
    policy = SquashedGaussianPolicy(2, _box([-INF], [INF]), hidden=(), dtype=torch.float64)
    _set_gaussian(policy, [1.5], [0.3])
    obs = torch.zeros(8, 2, dtype=torch.float64)
    action, log_prob = policy.action_log_prob(obs)
    expected = torch.distributions.Normal(torch.tensor(1.5, dtype=torch.float64),
                                          torch.tensor(0.3, dtype=torch.float64).exp())
    expected = expected.log_prob(action[:, 0])
    torch.testing.assert_close(log_prob, expected, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match=r"dimensions \[1\] have one finite and one infinite"):
        SquashedGaussianPolicy(2, _box([-1.0, 0.0], [1.0, INF]))
    with pytest.raises(TypeError, match="Discrete"):
        SquashedGaussianPolicy(2, spaces.Discrete(3))
    with pytest.raises(ValueError, match="action_mask"):
        policy.sample(obs, torch.ones(8, 1, dtype=torch.bool))


# -- SoftCategoricalPolicy --------------------------------------------------------------------


def test_masked_actions_get_zero_probability_and_are_never_drawn():
    torch.manual_seed(0)
    policy = SoftCategoricalPolicy(3, spaces.Discrete(5), hidden=(8,))
    with torch.no_grad():
        policy.head.bias.copy_(torch.tensor([5.0, 4.0, 0.0, 0.0, 0.0]))  # masked ones preferred
    obs = torch.randn(2000, 3)
    mask = torch.ones(2000, 5, dtype=torch.bool)
    mask[:, :2] = False
    mask[::2, 4] = False
    probs, log_probs = policy.probs(obs, mask)
    assert (probs[~mask] == 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(2000))
    assert torch.isfinite(log_probs[mask]).all()
    action, log_prob = policy.sample(obs, mask)
    assert action.dtype == torch.int64 and action.shape == (2000,)
    assert mask.gather(1, action[:, None]).all()
    assert set(action[::2].tolist()) == {2, 3} and set(action[1::2].tolist()) == {2, 3, 4}
    torch.testing.assert_close(log_prob, log_probs.gather(1, action[:, None]).squeeze(1))
    mode, _ = policy.sample(obs, mask, deterministic=True)
    torch.testing.assert_close(mode, probs.argmax(-1))
    with pytest.raises(ValueError, match="action_mask"):
        policy.probs(obs, mask[:, :4])


def test_the_critic_input_is_one_hot():
    policy = SoftCategoricalPolicy(2, spaces.Discrete(3), hidden=(), dtype=torch.float64)
    onehot = policy.critic_input(torch.tensor([2, 0]))
    assert onehot.dtype == torch.float64
    assert onehot.tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]


def test_make_soft_policy_picks_the_head_by_space():
    assert isinstance(make_soft_policy(3, _box([-1.0], [1.0]), hidden=(4,)), SquashedGaussianPolicy)
    cat = make_soft_policy(3, spaces.Discrete(4), hidden=(4,), log_std_min=-5.0, log_std_max=1.0)
    assert isinstance(cat, SoftCategoricalPolicy) and cat.action_dim == 4


def test_the_shared_acting_code_runs_both():
    """JointActor (training and evaluation) calls ``sample(obs, mask, deterministic=...)``."""
    policies = [SquashedGaussianPolicy(2, _box([-1.0], [1.0]), hidden=(4,)),
                SoftCategoricalPolicy(3, spaces.Discrete(4), hidden=(4,))]
    actor = JointActor(policies, num_envs=6)
    step = type("Step", (), {"obs": [torch.randn(6, 2), torch.randn(6, 3)], "action_masks": None})
    actions, logps, _ = actor.act(step, deterministic=True)
    assert actions[0].shape == (6, 1) and actions[1].shape == (6,)
    assert all(lp.shape == (6,) for lp in logps)
