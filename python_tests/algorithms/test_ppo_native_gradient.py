"""PPOActorLearner's gradient from the native Fisher operator (``native_gradient``) against its
autograd path, the reference: the same gradient at float64 (≤ 1e-10 relative) and the same update,
for Gaussian and masked categorical MLP policies, with factors, sample masks, entropy and
minibatches; and autograd wherever the native operator does not serve the policy."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from gymnasium import spaces

from haml.algorithms.base import ActorBatch
from haml.algorithms.happo import PPOActorLearner, PPOConfig
from haml.models import MLPPolicy, joint_log_prob
from haml.ops import FisherOperator
from haml.ops.fvp import serves_natively


def _problem(head: str, dtype=torch.float64, n=300, seed=0):
    gen = torch.Generator().manual_seed(seed)
    space = spaces.Box(-1.0, 1.0, (3,)) if head == "gaussian" else spaces.Discrete(5)
    torch.manual_seed(seed)
    policy = MLPPolicy(7, space, hidden=(33, 17), activation="tanh", layer_norm=True,
                       input_norm=True).to(dtype)
    obs = torch.randn(n, 7, generator=gen, dtype=dtype)
    action_mask = None
    if head == "categorical":
        action_mask = torch.rand(n, 5, generator=gen) < 0.7
        action_mask[:, 0] = True
    with torch.no_grad():
        dist = policy.distribution(obs, action_mask)
        actions = dist.sample()
        logp_old = joint_log_prob(dist, actions) + 0.1 * torch.randn(n, generator=gen, dtype=dtype)
    mask = (torch.rand(n, generator=gen) < 0.8).to(dtype)
    batch = ActorBatch(
        obs=obs, actions=actions, logp_old=logp_old,
        advantages=torch.randn(n, generator=gen, dtype=dtype),
        factor=torch.exp(0.2 * torch.randn(n, generator=gen, dtype=dtype)),
        mask=mask, action_mask=action_mask,
    )
    return policy, batch


def _require_native(policy, obs):
    if not serves_natively(policy, obs):
        pytest.skip("the native Fisher operator is not built or does not serve this policy")


def _flat_grad(policy):
    return torch.cat([p.grad.reshape(-1) for p in policy.parameters()])


class _Spy:
    """Counts FisherOperator.objective_gradient calls."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = FisherOperator.objective_gradient

        def spy(op, objective):
            self.calls += 1
            return real(op, objective)

        monkeypatch.setattr(FisherOperator, "objective_gradient", spy)


@pytest.mark.parametrize("head", ["gaussian", "categorical"])
@pytest.mark.parametrize("entropy_coef", [0.0, 0.01])
def test_native_gradient_equals_autograd_at_float64(head, entropy_coef, monkeypatch):
    policy, batch = _problem(head)
    _require_native(policy, batch.obs)
    spy = _Spy(monkeypatch)
    cfg = PPOConfig(lr=1e-3, epochs=1, clip=0.2, entropy_coef=entropy_coef, max_grad_norm=0.0)
    native = PPOActorLearner(copy.deepcopy(policy), cfg)
    autograd = PPOActorLearner(copy.deepcopy(policy), dataclasses.replace(cfg, native_gradient=False))
    out_native, out_autograd = native.update(batch), autograd.update(batch)
    assert spy.calls == 1  # the native learner took the native path, the other did not
    want, got = _flat_grad(autograd.policy), _flat_grad(native.policy)
    assert want.norm() > 0
    assert ((got - want).norm() / want.norm()).item() <= 1e-10
    for key in ("policy_loss", "clip_fraction", "approx_kl", "ratio_mean", "grad_norm"):
        torch.testing.assert_close(out_native[key], out_autograd[key], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("head", ["gaussian", "categorical"])
def test_native_gradient_makes_the_same_update(head, monkeypatch):
    # Several epochs and minibatches (the global RNG draws the same partitions for both).
    policy, batch = _problem(head, seed=1)
    _require_native(policy, batch.obs)
    spy = _Spy(monkeypatch)
    cfg = PPOConfig(lr=1e-3, epochs=3, num_minibatches=2, clip=0.2, entropy_coef=0.01)
    native = PPOActorLearner(copy.deepcopy(policy), cfg)
    autograd = PPOActorLearner(copy.deepcopy(policy), dataclasses.replace(cfg, native_gradient=False))
    torch.manual_seed(5)
    native.update(batch)
    torch.manual_seed(5)
    autograd.update(batch)
    assert spy.calls == 6
    for a, b in zip(autograd.policy.parameters(), native.policy.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-10)
    moved = [not torch.equal(a, b) for a, b in zip(policy.parameters(), native.policy.parameters())]
    assert all(moved)


def test_float32_native_gradient_is_close_to_autograd():
    policy, batch = _problem("gaussian", dtype=torch.float32, n=2000)
    _require_native(policy, batch.obs)
    cfg = PPOConfig(lr=1e-3, epochs=1, clip=0.2, max_grad_norm=0.0)
    native = PPOActorLearner(copy.deepcopy(policy), cfg)
    autograd = PPOActorLearner(copy.deepcopy(policy), dataclasses.replace(cfg, native_gradient=False))
    native.update(batch)
    autograd.update(batch)
    want, got = _flat_grad(autograd.policy), _flat_grad(native.policy)
    assert ((got - want).norm() / want.norm()).item() <= 1e-4


def test_policies_the_operator_does_not_serve_take_autograd(monkeypatch):
    spy = _Spy(monkeypatch)
    policy, batch = _problem("gaussian")
    policy.head.bias.requires_grad_(False)  # frozen parameters: the native operator refuses
    assert not serves_natively(policy, batch.obs)
    learner = PPOActorLearner(policy, PPOConfig(lr=1e-3, epochs=2))
    before = policy.head.weight.detach().clone()
    learner.update(batch)
    assert spy.calls == 0
    assert not torch.equal(before, policy.head.weight)
