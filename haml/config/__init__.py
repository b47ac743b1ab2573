"""haml's typed configuration: the dataclasses (:mod:`.schema`; each algorithm's own beside its
learner in :mod:`haml.algorithms`), the shipped YAML defaults (``defaults/``, ``tuned/``) and the
strict loader (:mod:`.loader`)."""

from haml.config.loader import (
    CONFIG_DIR,
    ConfigError,
    ConfigTypeError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    env_names_with_yaml,
    load_config,
    parse_override,
    read_config,
    save_config,
    tuned_configs,
)
from haml.config.schema import (
    ActorNetworkConfig,
    CriticConfig,
    EnvConfig,
    EvalConfig,
    ExperimentConfig,
    NetworkConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "A2CConfig",
    "ActorNetworkConfig",
    "CONFIG_DIR",
    "ConfigError",
    "ConfigTypeError",
    "CriticConfig",
    "EnvConfig",
    "EvalConfig",
    "ExperimentConfig",
    "NetworkConfig",
    "PPOConfig",
    "RunConfig",
    "TRPOConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "env_names_with_yaml",
    "load_config",
    "parse_override",
    "read_config",
    "save_config",
    "tuned_configs",
]


def __getattr__(name: str):
    """``PPOConfig``, ``A2CConfig``, ``TRPOConfig``: the algorithms' configs, defined beside their
    learners, imported on first use (the algorithm modules import this package)."""
    from haml.config import schema

    return getattr(schema, name)
