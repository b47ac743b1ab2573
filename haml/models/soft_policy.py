"""The stochastic actors of the maximum-entropy off-policy algorithms (HASAC, [HASAC] §4).

- :class:`SquashedGaussianPolicy` (``Box`` actions): ``u ~ N(μ_θ(o), diag σ_θ(o)²)`` with a
  **state-dependent** log standard deviation (a second linear head on the trunk), clamped to
  ``[log_std_min, log_std_max]``; the action is ``a = c + h·tanh(u)`` (centre c, half-width h of
  the Box), drawn by reparameterisation (``u = μ + σ·ε``), so that ∂a/∂θ flows into the actor loss.
  Its exact log-density, by the change of variables ``a = f(u)``::

      log π(a|o) = Σ_j [ log N(u_j; μ_j, σ_j) - log(h_j · (1 - tanh² u_j)) ]

  with ``log(1 - tanh² u) = 2·(log 2 - u - softplus(-2u))``, which stays finite where tanh u
  rounds to ±1. A dimension with both bounds infinite (the toy ``DifferentiableGame``) is left
  unsquashed, ``a_j = u_j``, and adds no Jacobian term; a half-bounded dimension has neither a
  squash nor an unbounded Gaussian that respects it, and is refused. The deterministic action is
  the squashed mean ``c + h·tanh(μ)``.
- :class:`SoftCategoricalPolicy` (``Discrete`` actions): ``π_θ(·|o) = softmax`` of the logits,
  unavailable actions (``action_mask`` False) masked to probability exactly 0 (their logits set to
  the dtype's lowest value, :func:`~haml.models.policies.masked_logits`). :meth:`~SoftCategoricalPolicy.probs`
  gives the probabilities and log-probabilities of every action, which the actor's loss sums over
  exactly (``Σ_a π(a)(α log π(a) - Q(a))``).

Both offer what the learner needs, ``action_log_prob(obs, mask)`` (with gradient) and
``critic_input(action)`` (the action as the Q critic's input: itself, or one-hot), and what the
shared acting and evaluation code needs, ``sample(obs, action_mask=None, deterministic=False) ->
(action, log_prob)`` without gradient.

Conventions as in :mod:`haml.models.policies`: observations ``[*B, obs_dim]``, orthogonal init
with the activation's gain, zero biases, heads with gain 0.01 (initial means near 0, σ near 1,
near-uniform categorical). Imports no environment and no algorithm code.

[HASAC] Liu et al., "Maximum Entropy Heterogeneous-Agent Reinforcement Learning", ICLR 2024.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from haml.models.box_squash import BoxSquash
from haml.models.checks import check_obs
from haml.models.mlp import MLP, init_linear
from haml.models.policies import HEAD_GAIN, masked_logits, parse_action_space

__all__ = [
    "LOG_STD_MAX",
    "LOG_STD_MIN",
    "SoftCategoricalPolicy",
    "SquashedGaussianPolicy",
    "make_soft_policy",
    "tanh_log_abs_det",
]

LOG_STD_MIN = -20.0
"""Default lower clamp of the state-dependent log σ (SAC's usual value)."""
LOG_STD_MAX = 2.0
"""Default upper clamp of the state-dependent log σ."""

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


def tanh_log_abs_det(u: torch.Tensor) -> torch.Tensor:
    """``log(1 - tanh² u)`` elementwise, as ``2·(log 2 - u - softplus(-2u))`` (exact, and finite
    for every finite u, where the direct form gives log 0 once tanh u rounds to ±1)."""
    return 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))


class SquashedGaussianPolicy(BoxSquash):
    """π_θ(a|o): ``MLP`` trunk, a mean head and a log-σ head, tanh-squashed into the Box.

    Args:
        obs_dim: size of the (flat) observation.
        action_space: a 1-D gymnasium ``spaces.Box``; each dimension either bounded on both sides
            (squashed) or on neither (left as the Gaussian's draw).
        hidden, activation, layer_norm, input_norm, layer_norm_eps: the trunk (:class:`MLP`).
        log_std_min, log_std_max: the clamp of the log-σ head's output (σ ∈ [e^min, e^max]).
        dtype, device: where to put the parameters and the bound buffers.

    Buffers: ``action_low`` / ``action_high`` (the Box's), ``action_center`` c and
    ``action_scale`` h (0 and 1 for an unbounded dimension), ``bounded`` (bool per dimension).
    See the module doc for the density.
    """

    kind = "gaussian"

    def __init__(
        self,
        obs_dim: int,
        action_space: Any,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        layer_norm: bool = False,
        input_norm: bool = False,
        log_std_min: float = LOG_STD_MIN,
        log_std_max: float = LOG_STD_MAX,
        layer_norm_eps: float = 1e-5,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        kind, _ = parse_action_space(action_space, owner="SquashedGaussianPolicy")
        if kind != "gaussian":
            raise TypeError(
                "SquashedGaussianPolicy: 'action_space' must be a gymnasium spaces.Box, got "
                f"{type(action_space).__name__} (use SoftCategoricalPolicy for Discrete)"
            )
        if not log_std_min < log_std_max:
            raise ValueError(
                "SquashedGaussianPolicy: 'log_std_min' must be smaller than 'log_std_max', got "
                f"{log_std_min!r} and {log_std_max!r}"
            )
        low = torch.as_tensor(action_space.low, dtype=torch.float64).reshape(-1)
        high = torch.as_tensor(action_space.high, dtype=torch.float64).reshape(-1)
        has_low, has_high = torch.isfinite(low), torch.isfinite(high)
        if (has_low != has_high).any():
            dims = torch.nonzero(has_low != has_high).flatten().tolist()
            raise ValueError(
                f"SquashedGaussianPolicy: action dimensions {dims} have one finite and one "
                "infinite bound; a tanh squash needs both bounds and an unsquashed Gaussian "
                "neither"
            )
        bounded = has_low & has_high
        if (low[bounded] >= high[bounded]).any():
            raise ValueError(
                f"SquashedGaussianPolicy: 'action_space' bounds must satisfy low < high, got "
                f"low={low.tolist()}, high={high.tolist()}"
            )
        self.obs_dim = obs_dim
        self.action_dim = int(low.shape[0])
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)
        self.body = MLP(obs_dim, hidden, activation, layer_norm, input_norm, layer_norm_eps)
        self.mean_head = init_linear(nn.Linear(self.body.out_dim, self.action_dim), HEAD_GAIN)
        self.log_std_head = init_linear(nn.Linear(self.body.out_dim, self.action_dim), HEAD_GAIN)
        self._register_box(low, high, self.mean_head.weight.dtype)
        if dtype is not None or device is not None:
            self.to(device=device, dtype=dtype)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, log σ)`` ``[*B, d]`` of the pre-squash Gaussian (log σ clamped)."""
        check_obs("SquashedGaussianPolicy", obs, self.obs_dim)
        features = self.body(obs)
        log_std = torch.clamp(self.log_std_head(features), self.log_std_min, self.log_std_max)
        return self.mean_head(features), log_std

    def log_abs_det(self, u: torch.Tensor) -> torch.Tensor:
        """``Σ_j log |∂a_j/∂u_j|`` ``[*B]``: ``log h_j + log(1 - tanh² u_j)`` over the bounded
        dimensions (0 for an unbounded one)."""
        if self._squash == "none":
            return u.new_zeros(u.shape[:-1])
        per_dim = torch.log(self.action_scale) + tanh_log_abs_det(u)
        if self._squash == "some":
            per_dim = torch.where(self.bounded, per_dim, torch.zeros_like(per_dim))
        return per_dim.sum(-1)

    def action_log_prob(
        self,
        obs: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a [*B, d], log π(a|o) [*B])``, reparameterised (differentiable in θ):
        ``u = μ + σ·ε``, ``a = squash(u)``; ``deterministic``: ``u = μ``."""
        if action_mask is not None:
            raise ValueError("SquashedGaussianPolicy: 'action_mask' applies only to Discrete actions")
        mean, log_std = self(obs)
        if deterministic:
            noise = torch.zeros_like(mean)
            u = mean
        else:
            noise = torch.randn_like(mean)
            u = mean + log_std.exp() * noise
        # log N(u; μ, σ) = -ε²/2 - log σ - ½ log 2π per dimension, with ε = (u - μ)/σ the noise.
        log_normal = (-0.5 * noise.square() - log_std - _HALF_LOG_2PI).sum(-1)
        return self.squash(u), log_normal - self.log_abs_det(u)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log π(a|o) ``[*B]`` of given actions ``[*B, d]`` strictly inside the Box (the inverse
        ``u = atanh((a - c)/h)``): for tests and diagnostics; the update uses the draws' own
        log-densities from :meth:`action_log_prob`."""
        mean, log_std = self(obs)
        if self._squash == "none":
            u = action
        else:
            u = torch.atanh((action - self.action_center) / self.action_scale)
            if self._squash == "some":
                u = torch.where(self.bounded, u, action)
        z = (u - mean) / log_std.exp()
        log_normal = (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(-1)
        return log_normal - self.log_abs_det(u)

    def sample(
        self,
        obs: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a [*B, d], log π(a|o) [*B])`` without gradient: a draw, or the squashed mean when
        ``deterministic`` (what the evaluation loop and :class:`~haml.runners.acting.JointActor`
        call)."""
        with torch.no_grad():
            return self.action_log_prob(obs, action_mask, deterministic)

    def critic_input(self, action: torch.Tensor) -> torch.Tensor:
        """The action as the Q critic reads it: itself ``[*B, d]``."""
        return action


class SoftCategoricalPolicy(nn.Module):
    """π_θ(a|o) = softmax(logits_θ(o)) over ``Discrete(n)``, with available-action masks.

    Args:
        obs_dim: size of the (flat) observation.
        action_space: a gymnasium ``spaces.Discrete`` starting at 0.
        hidden, activation, layer_norm, input_norm, layer_norm_eps: the trunk (:class:`MLP`).
        dtype, device: where to put the parameters.

    ``action_dim`` is the number of actions ``n`` (the size of the one-hot critic input).
    """

    kind = "categorical"

    def __init__(
        self,
        obs_dim: int,
        action_space: Any,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        layer_norm: bool = False,
        input_norm: bool = False,
        layer_norm_eps: float = 1e-5,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        kind, n = parse_action_space(action_space, owner="SoftCategoricalPolicy")
        if kind != "categorical":
            raise TypeError(
                "SoftCategoricalPolicy: 'action_space' must be a gymnasium spaces.Discrete, got "
                f"{type(action_space).__name__} (use SquashedGaussianPolicy for Box)"
            )
        self.obs_dim = obs_dim
        self.action_dim = n
        self.body = MLP(obs_dim, hidden, activation, layer_norm, input_norm, layer_norm_eps)
        self.head = init_linear(nn.Linear(self.body.out_dim, n), HEAD_GAIN)
        if dtype is not None or device is not None:
            self.to(device=device, dtype=dtype)

    def forward(self, obs: torch.Tensor, action_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The masked logits ``[*B, n]`` (unavailable actions at the dtype's lowest value)."""
        check_obs("SoftCategoricalPolicy", obs, self.obs_dim)
        logits = self.head(self.body(obs))
        if action_mask is not None and action_mask.shape != logits.shape:
            raise ValueError(
                f"SoftCategoricalPolicy: 'action_mask' must have shape {tuple(logits.shape)} "
                f"([*B, n_actions]), got {tuple(action_mask.shape)}"
            )
        return masked_logits(logits, action_mask)

    def probs(
        self, obs: torch.Tensor, action_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(π(·|o), log π(·|o))``, each ``[*B, n]``; an unavailable action has probability
        exactly 0 (its log-probability is a huge negative number: weight it by the mask, never by
        the probability alone, before scaling it)."""
        log_probs = torch.log_softmax(self(obs, action_mask), dim=-1)
        return log_probs.exp(), log_probs

    def action_log_prob(
        self,
        obs: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a [*B] int64, log π(a|o) [*B])``: a draw (or the most probable available action
        when ``deterministic``); the log-probability keeps its gradient, the index has none."""
        _, log_probs = self.probs(obs, action_mask)
        if deterministic:
            action = log_probs.argmax(-1)
        else:
            flat = log_probs.detach().exp().reshape(-1, self.action_dim)
            action = torch.multinomial(flat, 1).reshape(log_probs.shape[:-1])
        return action, log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)

    def sample(
        self,
        obs: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a [*B] int64, log π(a|o) [*B])`` without gradient (the acting interface)."""
        with torch.no_grad():
            return self.action_log_prob(obs, action_mask, deterministic)

    def critic_input(self, action: torch.Tensor) -> torch.Tensor:
        """The action as the Q critic reads it: one-hot ``[*B, n]`` in the parameters' dtype."""
        return F.one_hot(action, self.action_dim).to(self.head.weight.dtype)


def make_soft_policy(
    obs_dim: int, action_space: Any, **kwargs: Any
) -> SquashedGaussianPolicy | SoftCategoricalPolicy:
    """The soft policy for ``action_space``: :class:`SquashedGaussianPolicy` for a Box,
    :class:`SoftCategoricalPolicy` for a Discrete space (``log_std_min`` / ``log_std_max`` are
    dropped for it)."""
    kind, _ = parse_action_space(action_space, owner="make_soft_policy")
    if kind == "gaussian":
        return SquashedGaussianPolicy(obs_dim, action_space, **kwargs)
    kwargs.pop("log_std_min", None)
    kwargs.pop("log_std_max", None)
    return SoftCategoricalPolicy(obs_dim, action_space, **kwargs)
