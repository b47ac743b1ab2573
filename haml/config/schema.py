"""The typed configuration of a training run.

:class:`ExperimentConfig` is the whole run: which algorithm on which environment task, the rollout
and evaluation schedule, the actor and critic networks, and the algorithm's own settings
(:class:`PPOConfig`, :class:`TRPOConfig` or :class:`A2CConfig`, chosen by the algorithm's registry
entry). The YAML files under ``haml/config/defaults/`` mirror these dataclasses field for field;
:mod:`haml.config.loader` merges them with command-line ``key=value`` overrides and rejects any
unknown key or wrong type, naming it.

The field defaults here are paper 000's common MaMuJoCo settings (Appendix E, Table 3), so that a
dataclass built with no argument is a meaningful configuration; every family and task default
lives in the YAML files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "A2CConfig",
    "ActorNetworkConfig",
    "ActorNetworkConfig",
    "CriticConfig",
    "EnvConfig",
    "EvalConfig",
    "ExperimentConfig",
    "NetworkConfig",
    "PPOConfig",
    "RunConfig",
    "TRPOConfig",
    "TrainConfig",
]

LR_SCHEDULES = ("constant", "linear")
ACTIVATIONS = ("relu", "tanh")
RNN_KINDS = ("none", "gru")
KL_KINDS = ("exact", "harl")


def _choice(section: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{section}.{name} must be one of {list(choices)}, got {value!r}")


def _positive(section: str, name: str, value: float, allow_zero: bool = False) -> None:
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
    """Envs stepped together (paper 000, Table 3: 4 rollout threads)."""
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

    def __post_init__(self) -> None:
        for name in ("steps", "num_envs", "rollout_length", "chunk_length"):
            _positive("train", name, getattr(self, name))
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"train.gamma must lie in [0, 1], got {self.gamma}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"train.gae_lambda must lie in [0, 1], got {self.gae_lambda}")
        _positive("train", "torch_threads", self.torch_threads, allow_zero=True)


@dataclass
class EvalConfig:
    """Deterministic evaluation during training (actions = the policy's mean / mode)."""

    every: int = 25
    """Evaluate every this many iterations (and after the last); 0 turns evaluation off."""
    episodes: int = 10
    """Episodes per evaluation (paper 001, Table 2: 32)."""
    num_envs: int = 5
    """Envs used for evaluation."""

    def __post_init__(self) -> None:
        _positive("eval", "every", self.every, allow_zero=True)
        _positive("eval", "episodes", self.episodes)
        _positive("eval", "num_envs", self.num_envs)


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
        _positive("run", "checkpoint_every", self.checkpoint_every)
        _positive("run", "keep_checkpoints", self.keep_checkpoints)
        _positive("run", "log_every", self.log_every)


@dataclass
class NetworkConfig:
    """An MLP (HARL's ``MLPBase``): [LayerNorm] → (Linear → activation → [LayerNorm]) × depth."""

    hidden: list[int] = field(default_factory=lambda: [64])
    """Hidden widths (paper 000, Table 3: one hidden layer of 64)."""
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
        _choice(self._section, "activation", self.activation, ACTIVATIONS)
        _choice(self._section, "rnn", self.rnn, RNN_KINDS)
        _positive(self._section, "rnn_layers", self.rnn_layers)
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
    """Critic learning rate (paper 000, Table 3)."""
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

    def __post_init__(self) -> None:
        _positive("critic", "lr", self.lr)
        _positive("critic", "epochs", self.epochs)
        _positive("critic", "num_minibatches", self.num_minibatches)
        for name in ("max_grad_norm", "huber_delta", "value_clip"):
            _positive("critic", name, getattr(self, name), allow_zero=True)
        _choice("critic", "lr_schedule", self.lr_schedule, LR_SCHEDULES)


@dataclass
class PPOConfig:
    """First-order actor updates: HAPPO / MAPPO / IPPO (clipped) and HAA2C / MAA2C (``clip`` 0).

    Paper 000, Table 4 (MaMuJoCo): lr 5e-6, 5 epochs, clip 0.3; paper 001: HAA2C 5 mini-epochs,
    no clipping.
    """

    lr: float = 5e-6
    """Actor learning rate (Adam)."""
    epochs: int = 5
    """PPO epochs / A2C mini-epochs per iteration."""
    num_minibatches: int = 1
    clip: float = 0.3
    """PPO ε; 0 gives the unclipped factor-weighted objective (HAA2C)."""
    entropy_coef: float = 0.0
    adam_eps: float = 1e-5
    max_grad_norm: float = 10.0
    """Gradient-norm clip; 0 turns it off."""
    lr_schedule: str = "constant"
    """``constant`` or ``linear`` decay to 0 over the run."""

    def __post_init__(self) -> None:
        _positive("algo", "lr", self.lr)
        _positive("algo", "epochs", self.epochs)
        _positive("algo", "num_minibatches", self.num_minibatches)
        for name in ("clip", "entropy_coef", "max_grad_norm"):
            _positive("algo", name, getattr(self, name), allow_zero=True)
        _choice("algo", "lr_schedule", self.lr_schedule, LR_SCHEDULES)


@dataclass
class A2CConfig(PPOConfig):
    """HAA2C / MAA2C: the factor-weighted A2C objective, several mini-epochs, no clipping.

    Paper 001, Appendix F.2: 5 mini-epochs; actor lr 2e-4 (HalfCheetah, Ant), 1e-4 (Walker2d).
    """

    lr: float = 2e-4
    clip: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clip != 0.0:
            raise ValueError(f"algo.clip must be 0 for A2C-style algorithms, got {self.clip}")


@dataclass
class TRPOConfig:
    """HATRPO: one trust-region step per agent per iteration (paper 000, Algorithm 2)."""

    max_kl: float = 1e-4
    """δ, the mean-KL radius (paper 000, Table 6: per task)."""
    cg_iters: int = 10
    damping: float = 0.1
    backtrack_coef: float = 0.8
    max_backtracks: int = 10
    accept_ratio: float = 0.5
    """Accept a step when improvement ≥ this × the expected improvement (paper 000, Table 4)."""
    kl: str = "exact"
    """``exact`` (the true KL) or ``harl`` (the reference code's discrete approximation)."""

    def __post_init__(self) -> None:
        _positive("algo", "max_kl", self.max_kl)
        _positive("algo", "cg_iters", self.cg_iters)
        _positive("algo", "damping", self.damping, allow_zero=True)
        if not 0.0 < self.backtrack_coef < 1.0:
            raise ValueError(f"algo.backtrack_coef must lie in (0, 1), got {self.backtrack_coef}")
        _positive("algo", "max_backtracks", self.max_backtracks)
        _positive("algo", "accept_ratio", self.accept_ratio, allow_zero=True)
        _choice("algo", "kl", self.kl, KL_KINDS)


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
    """A :class:`PPOConfig`, :class:`A2CConfig` or :class:`TRPOConfig`."""
