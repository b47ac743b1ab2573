"""haml's algorithms: the registry and the per-agent actor updates (HAPPO, HATRPO, HAA2C, ...).

Algorithms use only ``haml.ops`` and ``haml.models``; they never import an environment or a runner.
"""

from haml.algorithms.registry import ALGORITHMS, AlgoSpec, algo_names, algo_spec, algos_for_action_kind

__all__ = ["ALGORITHMS", "AlgoSpec", "algo_names", "algo_spec", "algos_for_action_kind"]
