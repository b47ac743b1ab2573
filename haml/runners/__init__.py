"""The runners: one on-policy runner for every on-policy algorithm (HA and MA)."""

from haml.runners.evaluate import EvalResult, evaluate
from haml.runners.on_policy import OnPolicyRunner, TrainingDiverged

__all__ = ["EvalResult", "OnPolicyRunner", "TrainingDiverged", "evaluate"]
