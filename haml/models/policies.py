"""Stochastic MLP policies: a diagonal Gaussian for ``Box`` actions, a masked categorical for ``Discrete``.

This is the actor the on-policy algorithms (HATRPO, HAPPO, HAA2C) use, and the network whose Fisher
matrix ``haml.ops.fvp`` multiplies by. It imports no environment and no algorithm code: an action
space is only read for its kind and size (gymnasium is imported lazily, when a policy is built).

Conventions:

- ``obs`` is ``[*B, obs_dim]`` (any batch shape ``B``, typically ``[N]`` or ``[T, E]``).
- Gaussian: ``distribution(obs)`` is ``Normal(loc [*B, d], scale [*B, d])``, one factor per action
  dimension; joint log-probabilities and entropies sum over the last dimension.
- Categorical: ``distribution(obs, action_mask)`` is ``Categorical(logits [*B, n])``; actions are
  integer indices ``[*B]`` (``[*B, 1]`` is accepted too, as HARL stores them).
- Distributions are built with ``validate_args=False``: validation calls ``bool()`` on device
  tensors, a host sync per construction on CUDA, and the update path has none (docs/DESIGN.md, Layers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal

from haml.models.checks import check_obs
from haml.models.mlp import MLP, init_linear

__all__ = [
    "MLPPolicy",
    "PolicySpec",
    "StochasticPolicy",
    "joint_log_prob",
    "joint_entropy",
    "head_distribution",
    "gaussian_log_density_offset",
    "gaussian_sample",
    "sample_head",
    "masked_logits",
    "parse_action_space",
]

HEAD_GAIN = 0.01
"""Orthogonal-init gain of an actor's output layer (HARL: 0.01), so the initial policy is nearly
uniform (categorical) or has means near 0 (Gaussian)."""


@runtime_checkable
class StochasticPolicy(Protocol):
    """What ``haml.ops.fvp`` and ``haml.ops.line_search`` need from a policy (an ``nn.Module``).

    ``distribution(obs, action_mask=None)`` returns a ``torch.distributions.Normal`` (one factor per
    action dimension, the last dimension) or ``Categorical`` whose batch starts with ``obs``'s.
    """

    def distribution(self, obs: torch.Tensor, action_mask: torch.Tensor | None = None) -> Distribution: ...


def joint_log_prob(dist: Distribution, actions: torch.Tensor) -> torch.Tensor:
    """log π(a|s) of the whole action, per sample: ``[*B]``.

    Gaussian: the sum over action dimensions of the per-dimension log-densities (the joint of a
    diagonal Gaussian). Categorical: the log-probability of the index; a trailing singleton
    dimension on ``actions`` is dropped. Other distributions: ``dist.log_prob(actions)``.
    """
    if isinstance(dist, Normal):
        return dist.log_prob(actions).sum(-1)
    if isinstance(dist, Categorical):
        if actions.dim() == len(dist.batch_shape) + 1 and actions.shape[-1] == 1:
            actions = actions.squeeze(-1)
        return dist.log_prob(actions)
    return dist.log_prob(actions)


def joint_entropy(dist: Distribution) -> torch.Tensor:
    """Entropy of the whole action per sample ``[*B]`` (summed over Gaussian action dimensions)."""
    entropy = dist.entropy()
    return entropy.sum(-1) if isinstance(dist, Normal) else entropy


def masked_logits(logits: torch.Tensor, action_mask: torch.Tensor | None) -> torch.Tensor:
    """Logits with unavailable actions (``action_mask`` False / 0) set to the dtype's lowest value.

    The lowest finite value rather than -inf: after log-softmax a masked action's log-probability
    is that same huge negative number (its probability exp(...) is exactly 0, so it is never
    sampled), available actions keep finite log-probabilities, and ``Categorical.entropy`` (which
    clamps logits at that value) multiplies it by p = 0, so entropy ignores masked actions, with no
    -inf · 0 = NaN in values or gradients. HARL uses -1e10 instead, which is not "probability 0"
    in float64. A row with no available action at all becomes uniform over all actions.
    """
    if action_mask is None:
        return logits
    available = action_mask if action_mask.dtype == torch.bool else action_mask != 0
    return logits.masked_fill(~available, torch.finfo(logits.dtype).min)


def head_distribution(
    out: torch.Tensor, log_std: torch.Tensor | None, action_mask: torch.Tensor | None = None
) -> Normal | Categorical:
    """The action distribution of a policy head's output ``out [*B, d]``: ``Normal(out,
    exp(log_std))`` when the policy has a ``log_std`` (Gaussian), else ``Categorical`` over the
    :func:`masked_logits` of ``out``."""
    if log_std is not None:
        return Normal(out, log_std.exp().expand_as(out), validate_args=False)
    return Categorical(logits=masked_logits(out, action_mask), validate_args=False)


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_density_offset(log_std: torch.Tensor) -> torch.Tensor:
    """``-(log σ_j + ½ log 2π)`` per action dimension: the part of a diagonal Gaussian's
    log-density that does not depend on the action (what :func:`gaussian_sample` adds)."""
    return -(log_std + _HALF_LOG_2PI)


def gaussian_sample(
    mean: torch.Tensor,
    std: torch.Tensor,
    log_density_offset: torch.Tensor,
    deterministic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(actions, joint log-probs)`` of ``N(mean, diag σ²)`` for ``mean [*B, d]``; ``std`` and
    ``log_density_offset`` (:func:`gaussian_log_density_offset`) broadcast against ``mean``.

    ``a = μ + σ·ε`` with ``ε ~ N(0, I)``, and the joint log-density in terms of ε,
    ``log π(a) = Σ_j (-ε_j²/2 - log σ_j - ½ log 2π)``: the same action, drawn from the same
    generator, as ``Normal(μ, σ).sample()`` (which computes ``μ + σ·ε`` the same way), and the
    same density as ``Normal.log_prob`` up to rounding, without building the distribution.
    ``deterministic``: the mean and its density.
    """
    if deterministic:
        return mean, log_density_offset.sum(-1).expand(mean.shape[:-1])
    noise = torch.randn_like(mean)
    return mean + std * noise, torch.addcmul(log_density_offset, noise, noise, value=-0.5).sum(-1)


def sample_head(
    out: torch.Tensor,
    log_std: torch.Tensor | None,
    action_mask: torch.Tensor | None = None,
    deterministic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(actions, joint log-probs)`` drawn from :func:`head_distribution` ``(out, log_std,
    action_mask)``; ``deterministic`` takes the mean / mode. No gradient is needed or kept.

    Gaussian: :func:`gaussian_sample`, which skips building the ``Normal``. This runs once per
    agent per env step in collection, where a ``Normal`` and its ``log_prob`` cost several times
    the ops of the draw itself.
    """
    if log_std is None:
        dist = Categorical(logits=masked_logits(out, action_mask), validate_args=False)
        actions = dist.probs.argmax(-1) if deterministic else dist.sample()
        return actions, dist.log_prob(actions)
    return gaussian_sample(out, log_std.exp(), gaussian_log_density_offset(log_std), deterministic)


@dataclass(frozen=True)
class PolicySpec:
    """The structure of an :class:`MLPPolicy`, for code (a native kernel) that reads its weights.

    ``layers`` are the modules of the forward pass in order: the input ``LayerNorm`` (if
    ``input_norm``), then per hidden layer ``Linear``, the activation and (if ``layer_norm``) a
    ``LayerNorm``, and last the output ``Linear`` (the mean for Gaussian, the logits for
    categorical). ``parameter_names`` is the order of the trainable parameters, that is the layout of
    the flat vectors that ``haml.ops.fvp`` multiplies (``policy.named_parameters()`` order).
    """

    head: Literal["gaussian", "categorical"]
    obs_dim: int
    action_dim: int
    """Number of action dimensions (Gaussian) or of actions (categorical)."""
    hidden: tuple[int, ...]
    activation: str
    input_norm: bool
    layer_norm: bool
    layer_norm_eps: float
    layers: tuple[nn.Module, ...]
    log_std: nn.Parameter | None
    """The state-independent log standard deviations ``[action_dim]`` (Gaussian), else None."""
    parameter_names: tuple[str, ...]
    dtype: torch.dtype
    device: torch.device


def parse_action_space(
    action_space: Any, owner: str = "MLPPolicy"
) -> tuple[Literal["gaussian", "categorical"], int]:
    """``("gaussian", d)`` for a 1-D ``Box``, ``("categorical", n)`` for a ``Discrete`` from 0;
    errors name ``owner``."""
    try:
        from gymnasium import spaces
    except ImportError as err:  # pragma: no cover - gymnasium is a dependency of haml
        raise ImportError(f"{owner} needs gymnasium to read 'action_space'") from err
    if isinstance(action_space, spaces.Box):
        if len(action_space.shape) != 1 or action_space.shape[0] < 1:
            raise ValueError(
                f"{owner}: 'action_space' Box must be 1-D with at least one dimension, "
                f"got shape {action_space.shape}"
            )
        return "gaussian", int(action_space.shape[0])
    if isinstance(action_space, spaces.Discrete):
        if int(action_space.start) != 0:
            raise ValueError(
                f"{owner}: 'action_space' Discrete must start at 0 (actions are indices), "
                f"got start={int(action_space.start)}"
            )
        return "categorical", int(action_space.n)
    raise TypeError(
        f"{owner}: 'action_space' must be a gymnasium spaces.Box or spaces.Discrete, "
        f"got {type(action_space).__name__}"
    )


class MLPPolicy(nn.Module):
    """π_θ(a|o): an :class:`~haml.models.mlp.MLP` trunk and a Gaussian or categorical head.

    Args:
        obs_dim: size of the (flat) observation.
        action_space: gymnasium ``spaces.Box`` (1-D; diagonal Gaussian) or ``spaces.Discrete``
            (categorical, with optional action masks). Box bounds are not used: actions are not
            squashed (clip them at the environment, as HARL does).
        hidden: widths of the hidden layers; any depth, ``()`` included.
        activation: ``"tanh"`` or ``"relu"``.
        layer_norm: a LayerNorm after each hidden layer (Linear -> activation -> LayerNorm).
        input_norm: a LayerNorm on the input features (HARL's ``use_feature_normalization``).
        log_std_init: initial value of every log standard deviation (Gaussian only). 0 gives σ = 1;
            HARL starts at σ ≈ 0.37, that is ``log_std_init ≈ -1.0``.
        layer_norm_eps: ε of every LayerNorm.
        dtype, device: where to put the parameters (``policy.double()`` works as well).

    The Gaussian's standard deviation is ``exp(log_std)`` with ``log_std`` a free, state-independent
    parameter ``[action_dim]``. HARL uses ``σ = sigmoid(log_std / x) · y`` (x = 1, y = 0.5), which
    bounds σ by 0.5. haml keeps the plain exponential: σ is unbounded (no built-in cap on
    exploration, so the KL constraint alone limits each step), and the Fisher block of ``log_std``
    is the constant 2·I per sample, which is what the native Fisher product exploits.

    Weights: orthogonal with the activation's gain, zero biases, output layer gain 0.01.
    """

    def __init__(
        self,
        obs_dim: int,
        action_space: Any,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        layer_norm: bool = False,
        input_norm: bool = False,
        log_std_init: float = 0.0,
        layer_norm_eps: float = 1e-5,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        head, action_dim = parse_action_space(action_space)
        self.head_type: Literal["gaussian", "categorical"] = head
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.body = MLP(obs_dim, hidden, activation, layer_norm, input_norm, layer_norm_eps)
        self.head = init_linear(nn.Linear(self.body.out_dim, action_dim), HEAD_GAIN)
        if head == "gaussian":
            self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))
        else:
            self.register_parameter("log_std", None)
        if dtype is not None or device is not None:
            self.to(device=device, dtype=dtype)

    # -- structure ---------------------------------------------------------------------------

    def spec(self) -> PolicySpec:
        """The layer structure and weights (by reference) as a :class:`PolicySpec`."""
        ref = self.head.weight
        return PolicySpec(
            head=self.head_type,
            obs_dim=self.obs_dim,
            action_dim=self.action_dim,
            hidden=self.body.hidden,
            activation=self.body.activation,
            input_norm=self.body.input_norm,
            layer_norm=self.body.layer_norm,
            layer_norm_eps=self.body.layer_norm_eps,
            layers=(*self.body.layers, self.head),
            log_std=self.log_std,
            parameter_names=tuple(n for n, p in self.named_parameters() if p.requires_grad),
            dtype=ref.dtype,
            device=ref.device,
        )

    # -- distributions -----------------------------------------------------------------------

    def _check_obs(self, obs: torch.Tensor) -> None:
        check_obs("MLPPolicy", obs, self.obs_dim)

    def _check_action_mask(self, action_mask: torch.Tensor, logits: torch.Tensor) -> None:
        if self.head_type != "categorical":
            raise ValueError("MLPPolicy: 'action_mask' applies only to a Discrete action space")
        if not isinstance(action_mask, torch.Tensor):
            raise TypeError(
                f"MLPPolicy: 'action_mask' must be a torch.Tensor, got {type(action_mask).__name__}"
            )
        if action_mask.dtype != torch.bool and not action_mask.dtype.is_floating_point:
            raise TypeError(
                f"MLPPolicy: 'action_mask' must be bool (or floating 0/1), got {action_mask.dtype}"
            )
        if action_mask.shape != logits.shape:
            raise ValueError(
                f"MLPPolicy: 'action_mask' must have shape {tuple(logits.shape)} ([*B, n_actions]), "
                f"got {tuple(action_mask.shape)}"
            )
        if action_mask.device != logits.device:
            raise ValueError(
                f"MLPPolicy: 'action_mask' is on {action_mask.device} but 'obs' is on {logits.device}"
            )

    def distribution(
        self, obs: torch.Tensor, action_mask: torch.Tensor | None = None
    ) -> Normal | Categorical:
        """π_θ(·|o) for observations ``[*B, obs_dim]``.

        Gaussian: ``Normal(μ_θ(o), exp(log_std))`` with batch shape ``[*B, d]``. Categorical:
        ``Categorical(logits)`` with batch shape ``[*B]``; ``action_mask`` ``[*B, n]`` (bool, or
        floating with nonzero = available) gives unavailable actions probability exactly 0
        (:func:`masked_logits`).
        """
        self._check_obs(obs)
        out = self.head(self.body(obs))
        if action_mask is not None:
            self._check_action_mask(action_mask, out)
        return head_distribution(out, self.log_std, action_mask)

    def forward(
        self, obs: torch.Tensor, action_mask: torch.Tensor | None = None
    ) -> Normal | Categorical:
        """Same as :meth:`distribution`."""
        return self.distribution(obs, action_mask)

    def log_prob(
        self, obs: torch.Tensor, actions: torch.Tensor, action_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Joint log π_θ(a|o) per sample ``[*B]`` (summed over Gaussian action dimensions)."""
        return joint_log_prob(self.distribution(obs, action_mask), actions)

    def entropy(self, obs: torch.Tensor, action_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Entropy of π_θ(·|o) per sample ``[*B]``; masked actions contribute nothing."""
        return joint_entropy(self.distribution(obs, action_mask))

    def sample(
        self, obs: torch.Tensor, action_mask: torch.Tensor | None = None, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(actions, joint log-probs)`` without gradient; ``deterministic`` takes the mean / mode.

        Actions are ``[*B, d]`` (Gaussian) or ``[*B]`` int64 indices (categorical).
        """
        self._check_obs(obs)
        with torch.no_grad():
            out = self.head(self.body(obs))
            if action_mask is not None:
                self._check_action_mask(action_mask, out)
            return sample_head(out, self.log_std, action_mask, deterministic)
