"""haml.ops.value_gradient: the native value-network gradient against autograd, bad input, fallback."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn

from haml.algorithms.critics import clipped_value_loss
from haml.models.value import VCritic, huber
from haml.ops import _backend, value_gradient
from haml.ops.value_gradient import reference, serves_natively, value_loss_gradient

needs_native = pytest.mark.skipif(
    not _backend.has_native_class("FisherOperator"), reason="the native extension is not in use"
)

# (hidden, activation, layer_norm, input_norm)
CONFIGS = [
    ((), "relu", False, False),
    ((), "tanh", False, True),
    ((7,), "tanh", False, False),
    ((6, 5), "relu", True, True),
    ((5, 4, 3), "tanh", True, False),
    ((8, 8, 8), "relu", False, True),
]
IDS = ["-".join(map(str, c)) for c in CONFIGS]


def make_critic(config, dtype=torch.float64, in_dim=5, seed=0):
    """A VCritic with random (non-initial) weights."""
    hidden, activation, layer_norm, input_norm = config
    gen = torch.Generator().manual_seed(seed)
    critic = VCritic(in_dim, hidden, activation, layer_norm, input_norm)
    with torch.no_grad():
        for p in critic.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=gen))
    return critic.to(dtype)


def critic_loss(target, old, mask):
    """The critic learner's clipped Huber loss (haml.algorithms.critics), masked."""
    return functools.partial(clipped_value_loss, target=target, old=old, value_clip=0.2,
                             huber_delta=1.0, mask=mask)


@needs_native
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@pytest.mark.parametrize("n", [1, 37, 600])  # 600: more than one block of the CPU product
def test_native_gradient_matches_autograd(config, n, each_cpu_isa):
    critic = make_critic(config)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    loss = critic_loss(
        torch.randn(n, generator=gen, dtype=torch.float64),
        torch.randn(n, generator=gen, dtype=torch.float64),
        (torch.rand(n, generator=gen) < 0.7).double().clamp(min=float(n == 1)),
    )
    assert serves_natively(critic, x)
    value, gradient, values = value_loss_gradient(critic, x, loss)
    ref_value, ref_gradient, ref_values = reference.value_loss_gradient(critic, x, loss)
    assert gradient.shape == (sum(p.numel() for p in critic.parameters()),)
    torch.testing.assert_close(values, ref_values, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-12)
    assert ref_gradient.norm() > 0 or n == 1  # one sample may sit where the clipped loss is flat
    assert (gradient - ref_gradient).norm() <= 1e-10 * ref_gradient.norm() + 1e-14


@needs_native
def test_float32_gradient_matches_autograd_to_float32_rounding():
    critic = make_critic(CONFIGS[3], dtype=torch.float32)
    x = torch.randn(300, 5)
    loss = lambda v: (v - 1.0).square().mean()  # noqa: E731
    _, gradient, _ = value_loss_gradient(critic, x, loss)
    _, ref_gradient, _ = reference.value_loss_gradient(critic, x, loss)
    assert gradient.dtype == torch.float32
    assert (gradient - ref_gradient).norm() / ref_gradient.norm() < 1e-5


@needs_native
def test_the_gradient_is_the_one_autograd_gives_the_parameters():
    """Split in parameters() order, the flat vector is each parameter's .grad of loss.backward()."""
    critic = make_critic(CONFIGS[3])
    x = torch.randn(20, 5, dtype=torch.float64)
    _, flat, _ = value_loss_gradient(critic, x, lambda v: v.sum())
    critic(x).sum().backward()
    expected = torch.cat([p.grad.reshape(-1) for p in critic.parameters()])
    torch.testing.assert_close(flat, expected, rtol=1e-10, atol=1e-12)


def test_other_networks_run_autograd_and_say_why_once():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1), nn.Flatten(0))
    x = torch.randn(6, 3)
    assert not serves_natively(net, x)
    value_gradient._FALLBACKS_SAID.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, g1, _ = value_loss_gradient(net, x, lambda v: v.square().sum())
        value_loss_gradient(net, x, lambda v: v.square().sum())
    said = [w for w in caught if "value_loss_gradient" in str(w.message)]
    if _backend.has_native_class("FisherOperator"):
        assert len(said) == 1 and "Sequential" in str(said[0].message)
    _, g2, _ = reference.value_loss_gradient(net, x, lambda v: v.square().sum())
    torch.testing.assert_close(g1, g2)


def test_frozen_parameters_and_half_precision_are_not_served():
    critic = make_critic(CONFIGS[2], dtype=torch.float32)
    x = torch.randn(4, 5)
    critic.head.bias.requires_grad_(False)
    assert not serves_natively(critic, x)
    critic = make_critic(CONFIGS[2], dtype=torch.bfloat16)
    assert not serves_natively(critic, x.bfloat16())


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda c, x: value_loss_gradient("net", x, lambda v: v.sum()), TypeError, "'network'"),
        (lambda c, x: value_loss_gradient(c, x, 3.0), TypeError, "'loss' must be callable"),
        (lambda c, x: value_loss_gradient(c, x.numpy(), lambda v: v.sum()), TypeError, "'inputs'"),
        (lambda c, x: value_loss_gradient(c, x[:0], lambda v: v.sum()), ValueError, "N >= 1"),
        (lambda c, x: value_loss_gradient(c, x.float(), lambda v: v.sum()), ValueError, "float32"),
        (lambda c, x: value_loss_gradient(c, x, lambda v: v), TypeError, "0-d floating"),
        (lambda c, x: value_loss_gradient(c, x, lambda v: v.detach().sum()), ValueError,
         "does not depend"),
    ],
)
def test_bad_input_is_named(call, error, words):
    critic = make_critic(CONFIGS[2])
    x = torch.randn(4, 5, dtype=torch.float64)
    with pytest.raises(error, match=words):
        call(critic, x)


@needs_native
def test_a_linear_head_operator_refuses_fisher_products():
    critic = make_critic(CONFIGS[3])
    x = torch.randn(4, 5, dtype=torch.float64)
    body = critic.body
    op = torch.classes.haml.FisherOperator(
        x, list(critic.parameters()), None, None, "linear", body.activation,
        body.input_norm, body.layer_norm, body.layer_norm_eps, 0.0,
    )
    v = torch.zeros(op.num_params(), dtype=torch.float64)
    with pytest.raises(RuntimeError, match="no Fisher metric"):
        op.apply(v)
    with pytest.raises(RuntimeError, match="no Fisher metric"):
        op.conjugate_gradient(v, 3, 1e-10)


def test_wrong_input_width_names_inputs():
    critic = make_critic(CONFIGS[3])
    with pytest.raises(ValueError, match="'inputs' have 4 features but the network takes 5"):
        value_loss_gradient(critic, torch.randn(3, 4, dtype=torch.float64), lambda v: v.sum())


@needs_native
@pytest.mark.gpu
def test_native_gradient_on_cuda_matches_autograd():
    # Off the CPU the operator runs its ATen sequence instead of the blocked product.
    for config in CONFIGS:
        critic = make_critic(config).cuda()
        x = torch.randn(300, 5, dtype=torch.float64, device="cuda")
        loss = lambda v: huber(1.0 - v, 1.0).mean()  # noqa: E731
        assert serves_natively(critic, x)
        _, gradient, _ = value_loss_gradient(critic, x, loss)
        _, ref_gradient, _ = reference.value_loss_gradient(critic, x, loss)
        assert gradient.device.type == "cuda"
        assert (gradient - ref_gradient).norm() <= 1e-10 * ref_gradient.norm() + 1e-14
