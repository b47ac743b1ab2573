"""The runner's guards: a non-finite loss or parameter stops training, naming what and when."""

from __future__ import annotations

import math

import pytest
import torch

from haml.logging import metrics as M
from haml.runners.on_policy import TrainingDiverged

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
