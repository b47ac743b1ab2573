"""CriticLearner's gradient from the native value gradient (``critic.native_gradient``) against its
autograd path, the reference: the same multi-epoch, multi-minibatch update at float64 with value
normalisation, value clipping, Huber loss and sample masks; autograd for recurrent critics and
with ``native_gradient: false``."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from haml.algorithms.critics import CriticLearner
from haml.config.schema import CriticConfig
from haml.models.recurrent import GRUCritic
from haml.models.value import VCritic
from haml.ops import value_gradient
from haml.ops.value_gradient import serves_natively


def _problem(dtype=torch.float64, n=400, seed=0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    critic = VCritic(9, (24, 16), "relu", layer_norm=True, input_norm=True).to(dtype)
    inputs = torch.randn(n, 9, generator=gen, dtype=dtype)
    returns = 5.0 + 3.0 * torch.randn(n, generator=gen, dtype=dtype)
    with torch.no_grad():
        old_raw = critic(inputs) + 0.1 * torch.randn(n, generator=gen, dtype=dtype)
    mask = (torch.rand(n, generator=gen) < 0.8).to(dtype)
    return critic, inputs, returns, old_raw, mask


class _Spy:
    """Counts the native value-gradient calls the learner makes."""

    def __init__(self, monkeypatch):
        import haml.algorithms.critics as critics

        self.calls = 0
        real = critics.value_loss_gradient

        def spy(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(critics, "value_loss_gradient", spy)


@pytest.mark.parametrize("value_norm", [True, False])
@pytest.mark.parametrize("value_clip, huber_delta", [(0.2, 10.0), (0.0, 0.0), (0.05, 1.0)])
def test_native_update_equals_autograd_at_float64(value_norm, value_clip, huber_delta, monkeypatch):
    critic, inputs, returns, old_raw, mask = _problem()
    if not serves_natively(critic, inputs):
        pytest.skip("the native extension is not in use")
    spy = _Spy(monkeypatch)
    cfg = CriticConfig(lr=1e-3, epochs=3, num_minibatches=2, value_norm=value_norm,
                       value_clip=value_clip, huber_delta=huber_delta, max_grad_norm=0.5)
    native = CriticLearner(copy.deepcopy(critic), cfg)
    autograd = CriticLearner(copy.deepcopy(critic), dataclasses.replace(cfg, native_gradient=False))
    torch.manual_seed(1)  # the minibatch permutations
    out_native = native.update(inputs, returns, old_raw, mask)
    torch.manual_seed(1)
    out_autograd = autograd.update(inputs, returns, old_raw, mask)
    assert spy.calls == 6  # 3 epochs x 2 minibatches, all on the native path (the other: none)
    torch.testing.assert_close(out_native["value_loss"], out_autograd["value_loss"], rtol=1e-10, atol=0)
    moved = 0.0
    for p_n, p_a, p_0 in zip(native.critic.parameters(), autograd.critic.parameters(), critic.parameters()):
        torch.testing.assert_close(p_n, p_a, rtol=1e-9, atol=1e-12)
        moved += float((p_a - p_0).detach().abs().sum())
    assert moved > 0  # the update did something


def test_native_gradient_false_and_recurrent_critics_use_autograd(monkeypatch):
    spy = _Spy(monkeypatch)
    critic, inputs, returns, old_raw, _ = _problem()
    learner = CriticLearner(critic, CriticConfig(epochs=2, native_gradient=False))
    learner.update(inputs, returns, old_raw)
    assert spy.calls == 0
    assert not serves_natively(GRUCritic(9, (8,)).double(), inputs)


def test_float32_native_update_tracks_autograd(monkeypatch):
    critic, inputs, returns, old_raw, mask = _problem(dtype=torch.float32)
    if not serves_natively(critic, inputs):
        pytest.skip("the native extension is not in use")
    cfg = CriticConfig(lr=1e-3, epochs=5)
    native = CriticLearner(copy.deepcopy(critic), cfg)
    autograd = CriticLearner(copy.deepcopy(critic), dataclasses.replace(cfg, native_gradient=False))
    native.update(inputs, returns, old_raw, mask)
    autograd.update(inputs, returns, old_raw, mask)
    for p_n, p_a in zip(native.critic.parameters(), autograd.critic.parameters()):
        torch.testing.assert_close(p_n, p_a, rtol=1e-4, atol=1e-5)
    assert value_gradient.serves_natively(native.critic, inputs)
