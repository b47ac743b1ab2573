"""Small invariants of the learners: learning-rate schedules, the value normaliser, the Huber loss."""

from __future__ import annotations

import pytest
import torch

from haml.algorithms.critics import CriticLearner
from haml.algorithms.happo import PPOActorLearner
from haml.config.schema import CriticConfig, PPOConfig
from haml.models.value import ValueNorm, VCritic, huber


@pytest.mark.parametrize("schedule,expected", [("constant", 1e-3), ("linear", 0.25e-3)])
def test_learning_rate_schedules(schedule, expected):
    actor = PPOActorLearner(torch.nn.Linear(2, 2), PPOConfig(lr=1e-3, lr_schedule=schedule))
    critic = CriticLearner(VCritic(3), CriticConfig(lr=1e-3, lr_schedule=schedule))
    for learner in (actor, critic):
        learner.set_progress(0.75)
        assert learner.lr == pytest.approx(expected)
        assert all(g["lr"] == pytest.approx(expected) for g in learner.optimizer.param_groups)


def test_value_norm_is_debiased_from_the_first_update():
    norm = ValueNorm(beta=0.99999)
    x = torch.tensor([1.0, 3.0, 5.0, 7.0])
    norm.update(x)
    mean, var = norm.mean_var()
    assert float(mean) == pytest.approx(4.0, rel=1e-6)
    assert float(var) == pytest.approx(5.0, rel=1e-4)
    torch.testing.assert_close(norm.denormalize(norm.normalize(x)), x)
    # A constant return does not divide by ~0: the variance floor holds.
    flat = ValueNorm()
    flat.update(torch.full((8,), 2.0))
    assert float(flat.mean_var()[1]) == pytest.approx(1e-2)


def test_huber_is_quadratic_inside_and_linear_outside():
    e = torch.tensor([-12.0, -1.0, 0.0, 3.0, 10.0, 11.0])
    expected = torch.tensor([10 * 12 - 50.0, 0.5, 0.0, 4.5, 50.0, 10 * 11 - 50.0])
    torch.testing.assert_close(huber(e, 10.0), expected)
    torch.testing.assert_close(huber(e, 0.0), 0.5 * e**2)
