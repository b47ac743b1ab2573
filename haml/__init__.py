"""haml: Heterogeneous-Agent Mirror Learning (HATRPO, HAPPO, HAA2C, HADDPG) for PyTorch.

Importing haml needs only torch: the native extension ``haml._C`` is optional (the ops fall back to
their pure-PyTorch references), and no simulator is imported until an environment is created.

``haml.train(algo, env, task=None, steps=..., seed=0, out=None, **overrides) -> Result`` trains;
``haml.resume(run_dir, steps=None)`` continues a run (:mod:`haml.training`);
``haml.evaluate(run_dir, episodes=10, env=None)`` evaluates its checkpoint with deterministic
actions (:func:`haml.evaluation.evaluate_run`); ``haml.sweep(algos, env, tasks, seeds, ...)``
runs a grid of them, in parallel on Ray when it is installed (:mod:`haml.sweeps`).
"""

from haml import models, ops
from haml.evaluation import evaluate_run as evaluate
from haml.sweeps import sweep
from haml.training import Result, resume, train

__version__ = "0.1.0"

__all__ = ["models", "ops", "train", "resume", "evaluate", "sweep", "Result", "__version__"]
