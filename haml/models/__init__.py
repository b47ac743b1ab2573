"""haml's networks: the MLP trunk, the stochastic policies of the on-policy algorithms, and the
deterministic policy, Q critic and target networks of the off-policy ones.

Needs only torch (gymnasium is read when a policy is built from an action space); imports no
environment and no algorithm.
"""

from haml.models.deterministic import DeterministicPolicy, frozen_copy, polyak_update
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
from haml.models.q_critic import QCritic, StateTerm
from haml.models.stacked import StackedPolicies

__all__ = [
    "ACTIVATIONS",
    "DeterministicPolicy",
    "MLP",
    "MLPPolicy",
    "PolicySpec",
    "QCritic",
    "StackedPolicies",
    "StateTerm",
    "StochasticPolicy",
    "frozen_copy",
    "joint_entropy",
    "joint_log_prob",
    "masked_logits",
    "polyak_update",
    "sample_head",
]
