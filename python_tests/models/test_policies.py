"""haml.models.MLPPolicy: structure, initialisation, distributions, masks, dtypes, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Categorical, Normal

from haml.models import MLP, MLPPolicy, PolicySpec, joint_log_prob

BOX = spaces.Box(-1.0, 1.0, (3,))
DISCRETE = spaces.Discrete(5)


def manual_features(policy: MLPPolicy, obs: torch.Tensor) -> torch.Tensor:
    """The trunk written out by hand from its flags: [LN] -> (Linear -> act -> [LN])*."""
    act = torch.tanh if policy.body.activation == "tanh" else torch.relu
    modules = list(policy.body.layers)
    x, i = obs, 0
    if policy.body.input_norm:
        ln = modules[i]
        x = nn.functional.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
        i += 1
    for _ in policy.body.hidden:
        lin = modules[i]
        x = act(x @ lin.weight.T + lin.bias)
        i += 2
        if policy.body.layer_norm:
            ln = modules[i]
            x = nn.functional.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
            i += 1
    assert i == len(modules)
    return x


def perturb(policy: nn.Module, generator: torch.Generator) -> None:
    """Random weights everywhere (init leaves near-uniform heads and unit LayerNorms)."""
    with torch.no_grad():
        for p in policy.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=generator, dtype=p.dtype))


# -- structure and initialisation -----------------------------------------------------------------


@pytest.mark.parametrize("hidden", [(), (7,), (6, 5, 4)])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("input_norm", [False, True])
def test_layer_structure_follows_flags(hidden, activation, layer_norm, input_norm):
    policy = MLPPolicy(4, BOX, hidden=hidden, activation=activation, layer_norm=layer_norm,
                       input_norm=input_norm)
    spec = policy.spec()
    assert isinstance(spec, PolicySpec)
    kinds = [type(m).__name__ for m in spec.layers]
    expected = ["LayerNorm"] if input_norm else []
    for _ in hidden:
        expected += ["Linear", "Tanh" if activation == "tanh" else "ReLU"]
        expected += ["LayerNorm"] if layer_norm else []
    expected.append("Linear")
    assert kinds == expected
    widths = [m.out_features for m in spec.layers if isinstance(m, nn.Linear)]
    assert widths == [*hidden, 3]
    assert (spec.head, spec.activation, spec.layer_norm, spec.input_norm) == (
        "gaussian", activation, layer_norm, input_norm
    )
    assert spec.hidden == tuple(hidden) and spec.obs_dim == 4 and spec.action_dim == 3
    assert spec.log_std is policy.log_std
    assert spec.parameter_names == tuple(n for n, _ in policy.named_parameters())
    # the forward is exactly the layer list read in order
    gen = torch.Generator().manual_seed(1)
    perturb(policy, gen)
    obs = torch.randn(9, 4, generator=gen)
    x = obs
    for m in spec.layers:
        x = m(x)
    torch.testing.assert_close(policy.distribution(obs).loc, x, rtol=0, atol=0)
    torch.testing.assert_close(policy.head(manual_features(policy, obs)), x)


@pytest.mark.parametrize("activation,gain", [("tanh", 5.0 / 3.0), ("relu", math.sqrt(2.0))])
def test_orthogonal_init_with_activation_gain_and_small_head(activation, gain):
    policy = MLPPolicy(6, DISCRETE, hidden=(16, 8), activation=activation)
    linears = [m for m in policy.spec().layers if isinstance(m, nn.Linear)]
    for layer, g in zip(linears, [gain, gain, 0.01]):
        w = layer.weight.detach().double()
        rows, cols = w.shape
        gram = w @ w.T if rows <= cols else w.T @ w
        torch.testing.assert_close(gram, g * g * torch.eye(min(rows, cols), dtype=torch.float64),
                                   rtol=0, atol=1e-5 * g * g)
        assert torch.count_nonzero(layer.bias) == 0


def test_gaussian_log_std_is_state_independent_parameter():
    policy = MLPPolicy(4, BOX, hidden=(8,), log_std_init=-0.7)
    assert isinstance(policy.log_std, nn.Parameter) and policy.log_std.shape == (3,)
    dist = policy.distribution(torch.randn(5, 4))
    torch.testing.assert_close(dist.scale, torch.full((5, 3), math.exp(-0.7)))
    assert MLPPolicy(4, DISCRETE).log_std is None
    assert "log_std" not in dict(MLPPolicy(4, DISCRETE).named_parameters())


# -- shapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [(1,), (11,), (4, 3)])
def test_gaussian_shapes_and_log_prob(batch):
    gen = torch.Generator().manual_seed(2)
    policy = MLPPolicy(5, BOX, hidden=(8, 8))
    perturb(policy, gen)
    obs = torch.randn(*batch, 5, generator=gen)
    dist = policy.distribution(obs)
    assert isinstance(dist, Normal) and dist.batch_shape == (*batch, 3)
    actions, logp = policy.sample(obs)
    assert actions.shape == (*batch, 3) and logp.shape == batch
    assert not logp.requires_grad
    mu, sigma = dist.loc, dist.scale
    by_hand = (-0.5 * ((actions - mu) / sigma) ** 2 - sigma.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(policy.log_prob(obs, actions), by_hand)
    torch.testing.assert_close(logp, by_hand)
    entropy = (0.5 + 0.5 * math.log(2 * math.pi) + sigma.log()).sum(-1)
    torch.testing.assert_close(policy.entropy(obs), entropy)
    assert policy.log_prob(obs, actions).requires_grad
    mean_actions, _ = policy.sample(obs, deterministic=True)
    torch.testing.assert_close(mean_actions, mu.detach())


def test_gaussian_sample_draws_what_the_distribution_draws():
    """sample() skips building the Normal; with the same generator state it must draw the same
    actions as Normal.sample() and give them Normal.log_prob's density."""
    gen = torch.Generator().manual_seed(5)
    policy = MLPPolicy(5, BOX, hidden=(8,), layer_norm=True, input_norm=True, log_std_init=-0.7)
    perturb(policy, gen)
    obs = torch.randn(33, 5, generator=gen)
    torch.manual_seed(11)
    actions, logp = policy.sample(obs)
    torch.manual_seed(11)
    dist = policy.distribution(obs)
    expected = dist.sample()
    assert torch.equal(actions, expected)
    torch.testing.assert_close(logp, dist.log_prob(expected).sum(-1))
    _, logp_mean = policy.sample(obs, deterministic=True)
    torch.testing.assert_close(logp_mean, dist.log_prob(dist.mean).sum(-1))


@pytest.mark.parametrize("batch", [(1,), (13,), (2, 6)])
def test_categorical_shapes_and_action_layouts(batch):
    gen = torch.Generator().manual_seed(3)
    policy = MLPPolicy(5, DISCRETE, hidden=(8,))
    perturb(policy, gen)
    obs = torch.randn(*batch, 5, generator=gen)
    dist = policy.distribution(obs)
    assert isinstance(dist, Categorical) and dist.batch_shape == batch
    actions, logp = policy.sample(obs)
    assert actions.shape == batch and actions.dtype == torch.int64
    logits = policy.head(manual_features(policy, obs))
    by_hand = torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(policy.log_prob(obs, actions), by_hand)
    torch.testing.assert_close(logp, by_hand)
    # HARL stores actions as [*B, 1] floats
    torch.testing.assert_close(policy.log_prob(obs, actions.unsqueeze(-1).float()), by_hand)
    assert policy.entropy(obs).shape == batch
    mode, _ = policy.sample(obs, deterministic=True)
    assert torch.equal(mode, logits.argmax(-1))


# -- action masks --------------------------------------------------------------------------------


def masked_setup(seed=4, n=64, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    policy = MLPPolicy(6, DISCRETE, hidden=(16,), layer_norm=True).to(dtype)
    perturb(policy, gen)
    obs = torch.randn(n, 6, generator=gen, dtype=dtype)
    mask = torch.rand(n, 5, generator=gen) < 0.5
    mask[torch.arange(n), torch.randint(0, 5, (n,), generator=gen)] = True  # >= 1 available
    mask[0] = torch.tensor([False, False, False, True, False])  # a single available action
    return policy, obs, mask


def test_masked_actions_are_never_sampled():
    policy, obs, mask = masked_setup()
    # make masked actions the most likely ones before masking: the mask must overrule them
    with torch.no_grad():
        policy.head.bias.copy_(torch.tensor([5.0, 5.0, 5.0, -5.0, 5.0]))
    dist = policy.distribution(obs, mask)
    samples = dist.sample((4000,))  # [4000, N]
    assert mask.gather(1, samples.T).all()
    assert torch.all(samples[:, 0] == 3)
    assert torch.all(dist.probs[~mask] == 0)
    # every available action is still reachable
    seen = torch.zeros_like(mask)
    seen.scatter_(1, samples.T, True)
    probs = dist.probs
    assert torch.all(seen[probs > 0.01])


def test_masked_log_prob_and_entropy_match_hand_computation():
    policy, obs, mask = masked_setup(dtype=torch.float64)
    logits = policy.head(manual_features(policy, obs)).detach()
    # softmax over the available actions only
    exp = torch.where(mask, torch.exp(logits - logits.max(-1, keepdim=True).values), 0.0)
    probs = exp / exp.sum(-1, keepdim=True)
    dist = policy.distribution(obs, mask)
    torch.testing.assert_close(dist.probs, probs, rtol=1e-12, atol=1e-14)
    entropy = -torch.where(mask, probs * torch.log(torch.where(mask, probs, 1.0)), 0.0).sum(-1)
    got_entropy = policy.entropy(obs, mask)
    torch.testing.assert_close(got_entropy, entropy, rtol=1e-12, atol=1e-12)
    assert got_entropy[0] == 0  # one available action: no uncertainty
    gen = torch.Generator().manual_seed(5)
    actions = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    log_prob = policy.log_prob(obs, actions, mask)
    torch.testing.assert_close(log_prob, torch.log(probs.gather(1, actions[:, None]).squeeze(1)),
                               rtol=1e-12, atol=1e-12)
    assert torch.isfinite(log_prob).all()
    # gradients of log-prob and entropy stay finite through the masked logits
    (log_prob.sum() + got_entropy.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters())
    # a float 0/1 mask is the same mask
    torch.testing.assert_close(policy.log_prob(obs, actions, mask.double()), log_prob)


def test_masked_action_has_zero_probability_and_huge_negative_log_prob():
    policy, obs, mask = masked_setup()
    dist = policy.distribution(obs, mask)
    masked_idx = (~mask[1]).nonzero()[0]
    assert dist.probs[1, masked_idx].item() == 0.0
    assert dist.log_prob(masked_idx.expand(obs.shape[0]))[1] < -1e30


# -- dtype --------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", [BOX, DISCRETE])
def test_float64_everywhere(space):
    policy = MLPPolicy(4, space, hidden=(8, 8), layer_norm=True, input_norm=True).double()
    obs = torch.randn(7, 4, dtype=torch.float64)
    dist = policy.distribution(obs)
    assert dist.logits.dtype == torch.float64 if space is DISCRETE else dist.loc.dtype == torch.float64
    actions, logp = policy.sample(obs)
    assert logp.dtype == torch.float64 and policy.entropy(obs).dtype == torch.float64
    assert policy.spec().dtype == torch.float64
    built = MLPPolicy(4, space, hidden=(8,), dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in built.parameters())


def test_joint_log_prob_of_other_distributions_is_passed_through():
    dist = torch.distributions.Independent(Normal(torch.zeros(3, 2), torch.ones(3, 2)), 1)
    value = torch.zeros(3, 2)
    torch.testing.assert_close(joint_log_prob(dist, value), dist.log_prob(value))


# -- bad input ----------------------------------------------------------------------------------


def test_bad_construction_arguments():
    with pytest.raises(TypeError, match="action_space"):
        MLPPolicy(4, spaces.MultiDiscrete([2, 3]))
    with pytest.raises(ValueError, match="action_space"):
        MLPPolicy(4, spaces.Box(-1, 1, (2, 2)))
    with pytest.raises(ValueError, match="action_space"):
        MLPPolicy(4, spaces.Discrete(3, start=1))
    with pytest.raises(ValueError, match="activation"):
        MLPPolicy(4, BOX, activation="gelu")
    with pytest.raises(ValueError, match="hidden"):
        MLPPolicy(4, BOX, hidden=(8, 0))
    with pytest.raises(TypeError, match="hidden"):
        MLP(4, hidden=8)


def test_bad_call_arguments():
    gauss = MLPPolicy(4, BOX, hidden=(8,))
    cat = MLPPolicy(4, DISCRETE, hidden=(8,))
    with pytest.raises(ValueError, match="obs"):
        gauss.distribution(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="action_mask"):
        gauss.distribution(torch.zeros(3, 4), torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="action_mask"):
        cat.distribution(torch.zeros(3, 4), torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="action_mask"):
        cat.distribution(torch.zeros(3, 4), torch.ones(3, 5, dtype=torch.int64))
