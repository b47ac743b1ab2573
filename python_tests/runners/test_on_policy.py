"""The runner's guards (a non-finite loss or parameter stops training, naming what and when),
and collection acting with the current policies."""

from __future__ import annotations

import math

import pytest
import torch

from haml.logging import metrics as M
from haml.runners import TrainingDiverged

from python_tests.runners.test_sequential import _runner


def test_a_nan_metric_is_named_with_the_iteration():
    runner = _runner("happo", torch.tensor([[1.0, 0.0], [0.0, 1.0]]), lr=0.05)
    runner.iterate()
    runner.check_finite({M.VALUE_LOSS: torch.tensor(1.0)})
    with pytest.raises(TrainingDiverged, match=r"iteration 2: non-finite losses/policy_loss/agent_1"):
        runner.check_finite({M.agent_metric(M.POLICY_LOSS, 1): torch.tensor(math.nan)})
    with pytest.raises(TrainingDiverged, match="non-finite parameters"):
        with torch.no_grad():
            runner.critics[0].critic.head.bias.fill_(math.inf)
        runner.check_finite({})


@pytest.mark.parametrize("algo", ["happo", "hatrpo", "mappo"])
def test_collection_acts_with_the_updated_policies(algo):
    """Alike agents act through one stacked copy of their weights (haml.models.stacked): after
    updates (Adam's in place, HATRPO's copy_ of the accepted step) the log-probabilities recorded
    at collection must be those of the current policies, not of a stale stack."""
    torch.manual_seed(1)
    payoff = torch.randn(2, 2, 2)  # three agents with two actions each: one stack
    fields = {"max_kl": 0.05} if algo == "hatrpo" else {"lr": 0.05}
    runner = _runner(algo, payoff, **fields)
    groups = [(agents, stack is not None) for agents, stack in runner._actor._groups]
    assert groups == [([0, 1, 2], True)]
    for _ in range(2):
        runner.iterate()
    buffer, _ = runner.collect()
    for i, policy in enumerate(runner.policies):
        with torch.no_grad():
            expected = policy.log_prob(buffer.obs[i], buffer.actions[i])
        torch.testing.assert_close(buffer.logp[i], expected, rtol=1e-5, atol=1e-5)
