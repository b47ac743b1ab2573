"""The typed configuration of a training run.

:class:`ExperimentConfig` is the whole run: which algorithm on which environment task, the rollout
and evaluation schedule, the actor and critic networks, and the algorithm's own settings (the
dataclass its registry entry names, defined beside its learner: e.g.
:class:`haml.algorithms.happo.PPOConfig`). The YAML files under ``haml/config/defaults/``
mirror these dataclasses field for field; :mod:`haml.config.loader` merges them with command-line ``key=value`` overrides and rejects any
unknown key or wrong type, naming it.

The field defaults here are [HATRPO]'s common MaMuJoCo settings (Appendix E, Table 3), so that a
dataclass built with no argument is a meaningful configuration; every family and task default
lives in the YAML files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ActorNetworkConfig",
    "CriticConfig",
    "EnvConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LR_SCHEDULES",
    "NetworkConfig",
    "RunConfig",
    "TrainConfig",
    "check_choice",
    "check_positive",
]

LR_SCHEDULES = ("constant", "linear")
ACTIVATIONS = ("relu", "tanh")
RNN_KINDS = ("none", "gru")


def check_choice(section: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{section}.{name} must be one of {list(choices)}, got {value!r}")


def check_positive(section: str, name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{section}.{name} must be {bound}, got {value!r}")


@dataclass
class EnvConfig:
    """Which environment: a registered family, one of its tasks, and the family's options."""

    name: str = "mamujoco"
    """Registered environment family (``haml.envs.env_names()``)."""
    task: str = "HalfCheetah-2x3"
    """Task of the family (``haml.envs.task_names(name)``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The family's options (its ``Options`` dataclass; checked when the env is built)."""


@dataclass
class TrainConfig:
    """The on-policy iteration: rollout size, discounting, schedule and devices."""

    steps: int = 10_000_000
    """Total environment steps (transitions summed over the vectorised envs)."""
    num_envs: int = 4
    """Envs stepped together ([HATRPO], Table 3: 4 rollout threads)."""
    rollout_length: int = 1000
    """Steps per env per iteration; a batch holds num_envs × rollout_length transitions."""
    gamma: float = 0.99
    """Discount γ."""
    gae_lambda: float = 0.95
    """GAE λ."""
    normalize_advantages: bool = True
    """Normalise Â to mean 0, std 1 over the active samples of each agent (HARL)."""
    device: str = "cpu"
    """Training device (``cpu``, ``cuda``, ``cuda:1``)."""
    torch_threads: int = 0
    """``torch.set_num_threads`` for training; 0 leaves torch's default."""
    chunk_length: int = 10
    """Recurrent networks only: steps per training chunk (truncated BPTT from the hidden state
    stored at the chunk's start; HARL's ``data_chunk_length`` 10). ``rollout_length`` must be a
    multiple of it."""
    rollout_workers: int = 0
    """On-policy runs: Ray actors that collect the rollout, each stepping a slice of the
    ``num_envs`` envs (:mod:`haml.runners.rollout_workers`); 0 collects in this process."""
    rollout_timeout: float = 600.0
    """Seconds a rollout worker may take to answer (one rollout) before it is replaced."""

    def __post_init__(self) -> None:
        for name in ("steps", "num_envs", "rollout_length", "chunk_length"):
            check_positive("train", name, getattr(self, name))
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"train.gamma must lie in [0, 1], got {self.gamma}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"train.gae_lambda must lie in [0, 1], got {self.gae_lambda}")
        check_positive("train", "torch_threads", self.torch_threads, allow_zero=True)
        check_positive("train", "rollout_workers", self.rollout_workers, allow_zero=True)
        check_positive("train", "rollout_timeout", self.rollout_timeout)
        if self.rollout_workers > self.num_envs:
            raise ValueError(
                f"train.rollout_workers ({self.rollout_workers}) must not exceed train.num_envs "
                f"({self.num_envs}): each worker steps at least one env"
            )


@dataclass
class EvalConfig:
    """Deterministic evaluation during training (actions = the policy's mean / mode)."""

    every: int = 25
    """Evaluate every this many iterations (and after the last); 0 turns evaluation off."""
    episodes: int = 10
    """Episodes per evaluation ([HAML], Table 2: 32)."""
    num_envs: int = 5
    """Envs used for evaluation."""

    def __post_init__(self) -> None:
        check_positive("eval", "every", self.every, allow_zero=True)
        check_positive("eval", "episodes", self.episodes)
        check_positive("eval", "num_envs", self.num_envs)


@dataclass
class RunConfig:
    """Outputs: checkpoints, logs."""

    checkpoint_every: int = 50
    """Write a checkpoint every this many iterations (and at the end, and on Ctrl-C)."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep (at least 1: the latest is always kept)."""
    log_every: int = 1
    """Write a metrics row every this many iterations."""

    def __post_init__(self) -> None:
        check_positive("run", "checkpoint_every", self.checkpoint_every)
        check_positive("run", "keep_checkpoints", self.keep_checkpoints)
        check_positive("run", "log_every", self.log_every)


@dataclass
class NetworkConfig:
    """An MLP (HARL's ``MLPBase``): [LayerNorm] → (Linear → activation → [LayerNorm]) × depth."""

    hidden: list[int] = field(default_factory=lambda: [64])
    """Hidden widths ([HATRPO], Table 3: one hidden layer of 64)."""
    activation: str = "relu"
    """``relu`` or ``tanh``."""
    layer_norm: bool = True
    """LayerNorm after each hidden layer."""
    input_norm: bool = True
    """LayerNorm on the input features (HARL's ``use_feature_normalization``)."""
    rnn: str = "none"
    """``none`` (feed-forward) or ``gru``: a GRU (width = the last hidden width) and a LayerNorm
    after the MLP, hidden state reset at episode starts, trained on chunks of
    ``train.chunk_length`` steps (HARL's ``use_recurrent_policy``)."""
    rnn_layers: int = 1
    """GRU layers (HARL's ``recurrent_n``: 1)."""

    # The dotted section named in error messages (a plain class attribute, not a field): a bare
    # NetworkConfig is the critic's network; ActorNetworkConfig says "actor".
    _section = "critic.network"

    def __post_init__(self) -> None:
        check_choice(self._section, "activation", self.activation, ACTIVATIONS)
        check_choice(self._section, "rnn", self.rnn, RNN_KINDS)
        check_positive(self._section, "rnn_layers", self.rnn_layers)
        if self.rnn != "none" and not self.hidden:
            raise ValueError(f"{self._section}.rnn={self.rnn!r} needs at least one hidden layer")
        if any(width < 1 for width in self.hidden):
            raise ValueError(f"{self._section}.hidden widths must be positive, got {list(self.hidden)}")


@dataclass
class ActorNetworkConfig(NetworkConfig):
    """The policy network: an MLP and a diagonal-Gaussian or categorical head."""

    _section = "actor"

    log_std_init: float = -1.0
    """Initial log σ of Gaussian policies (σ = e^-1 ≈ 0.37, HARL's initial σ)."""


@dataclass
class CriticConfig:
    """The centralised V critic (or per-agent critics for IPPO) and how it is trained."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    lr: float = 5e-3
    """Critic learning rate ([HATRPO], Table 3)."""
    epochs: int = 5
    """Passes over the batch per iteration."""
    num_minibatches: int = 1
    adam_eps: float = 1e-5
    max_grad_norm: float = 10.0
    """Gradient-norm clip; 0 turns it off."""
    huber_delta: float = 10.0
    """δ of the Huber value loss; 0 gives the squared error."""
    value_clip: float = 0.2
    """Clip the new value within ±this of the collected one (max of clipped and unclipped
    losses, as PPO); 0 turns it off."""
    value_norm: bool = True
    """Train V on normalised returns (running mean/variance, β = 0.99999, HARL's ValueNorm)."""
    lr_schedule: str = "constant"
    """``constant`` or ``linear`` decay to 0 over the run."""
    native_gradient: bool = True
    """Each step's gradient from the native forward and transposed pass
    (:func:`haml.ops.value_gradient.value_loss_gradient`) for an MLP critic it serves; the same
    gradient to rounding as autograd, which ``false`` forces (and recurrent critics use)."""

    def __post_init__(self) -> None:
        check_positive("critic", "lr", self.lr)
        check_positive("critic", "epochs", self.epochs)
        check_positive("critic", "num_minibatches", self.num_minibatches)
        for name in ("max_grad_norm", "huber_delta", "value_clip"):
            check_positive("critic", name, getattr(self, name), allow_zero=True)
        check_choice("critic", "lr_schedule", self.lr_schedule, LR_SCHEDULES)


@dataclass
class ExperimentConfig:
    """One training run. ``algo`` holds the algorithm's own config (its registry entry's class)."""

    algo_name: str = "happo"
    """Registered algorithm (``haml.algorithms.algo_names()``)."""
    seed: int = 0
    env: EnvConfig = field(default_factory=EnvConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    actor: ActorNetworkConfig = field(default_factory=ActorNetworkConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    algo: Any = None
    """The algorithm's config dataclass (``haml.algorithms.algo_spec(algo_name).config_cls``)."""


_ALGORITHM_CONFIGS = {
    "PPOConfig": "haml.algorithms.happo",
    "A2CConfig": "haml.algorithms.haa2c",
    "TRPOConfig": "haml.algorithms.hatrpo",
}


def __getattr__(name: str) -> Any:
    """The algorithms' config dataclasses live beside their learners; they stay importable from
    here (imported on first use: the algorithm modules import this one)."""
    if name in _ALGORITHM_CONFIGS:
        import importlib

        return getattr(importlib.import_module(_ALGORITHM_CONFIGS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
