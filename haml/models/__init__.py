"""haml's networks: the MLP trunk and the stochastic policies of the on-policy algorithms.

Needs only torch (gymnasium is read when a policy is built from an action space); imports no
environment and no algorithm.
"""

from haml.models.mlp import ACTIVATIONS, MLP
from haml.models.policies import (
    MLPPolicy,
    PolicySpec,
    StochasticPolicy,
    joint_entropy,
    joint_log_prob,
    masked_logits,
    sample_head,
)
from haml.models.stacked import StackedPolicies

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "MLPPolicy",
    "PolicySpec",
    "StackedPolicies",
    "StochasticPolicy",
    "joint_entropy",
    "joint_log_prob",
    "masked_logits",
    "sample_head",
]
