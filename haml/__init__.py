"""haml: Heterogeneous-Agent Mirror Learning (HATRPO, HAPPO, HAA2C, HADDPG) for PyTorch.

Importing haml needs only torch: the native extension ``haml._C`` is optional (the ops fall back to
their pure-PyTorch references), and no simulator is imported until an environment is created.

``haml.train(algo, env, task=None, steps=..., seed=0, out=None, **overrides) -> Result`` trains;
``haml.resume(run_dir, steps=None)`` continues a run (:mod:`haml.training`);
``haml.evaluate(run_dir, episodes=10, env=None)`` evaluates its checkpoint with deterministic
actions (:func:`haml.evaluation.evaluate_run`).
"""

from haml import models, ops
from haml.evaluation import evaluate_run as evaluate
from haml.training import Result, resume, train

__version__ = "0.1.0"

__all__ = ["models", "ops", "train", "resume", "evaluate", "Result", "__version__"]
