"""The networks of the deterministic off-policy algorithms (HADDPG, MADDPG; [HAML], Algorithm 3)
besides their critic (:mod:`haml.models.q_critic`).

- :class:`DeterministicPolicy`: μ_θ(o), an :class:`~haml.models.mlp.MLP` trunk and a linear head
  squashed into the action ``Box`` with tanh; ``explore`` adds Gaussian noise, clipped to the Box.
- Target networks: :func:`frozen_copy` and :func:`polyak_update` (one multi-tensor lerp over every
  parameter).

Conventions as in :mod:`haml.models.policies`: inputs ``[*B, dim]``, orthogonal init with the
activation's gain, zero biases; the policy's output layer has gain 0.01 (initial actions near the
middle of the Box). Imports no environment and no algorithm code.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from haml.models.box_squash import BoxSquash
from haml.models.checks import check_obs, check_positive_int
from haml.models.mlp import MLP, init_linear
from haml.models.policies import HEAD_GAIN, parse_action_space

__all__ = ["DeterministicPolicy", "frozen_copy", "polyak_update"]


def _box_bounds(action_space: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` of a 1-D Box as float64 tensors (a Discrete space is refused)."""
    kind, _ = parse_action_space(action_space, owner="DeterministicPolicy")
    if kind != "gaussian":
        raise TypeError(
            "DeterministicPolicy: 'action_space' must be a gymnasium spaces.Box (deterministic "
            f"policies act in continuous spaces), got {type(action_space).__name__}"
        )
    low = torch.as_tensor(action_space.low, dtype=torch.float64).reshape(-1)
    high = torch.as_tensor(action_space.high, dtype=torch.float64).reshape(-1)
    if torch.isnan(low).any() or torch.isnan(high).any() or (low > high).any():
        raise ValueError(
            f"DeterministicPolicy: 'action_space' bounds must satisfy low <= high, got "
            f"low={low.tolist()}, high={high.tolist()}"
        )
    return low, high


class DeterministicPolicy(BoxSquash):
    """μ_θ(o): ``MLP -> Linear -> squash`` into the action Box.

    Args:
        obs_dim: size of the (flat) observation.
        action_space: a 1-D gymnasium ``spaces.Box``. A dimension whose bounds are both finite is
            squashed, ``a_j = low_j + (tanh(x_j) + 1)/2 · (high_j - low_j)`` (computed as
            ``c_j + h_j tanh(x_j)`` with the centre c and half-width h, then clipped to the
            bounds against rounding); a dimension with an infinite bound (one or both) is left
            as the head's output (the toy ``DifferentiableGame`` is unbounded), which
            :meth:`explore` clips to its finite bound if it has one.
        hidden, activation, layer_norm, input_norm, layer_norm_eps: the trunk (:class:`MLP`).
        dtype, device: where to put the parameters and the bound buffers.

    Buffers: ``action_low`` / ``action_high`` (the Box's, possibly infinite), ``action_scale`` (the
    half-width h; 1 for an unbounded dimension: the unit of the exploration noise) and
    ``action_center`` (0 for an unbounded dimension).

    ``sample`` (what :class:`~haml.runners.acting.JointActor` and the evaluation loop call) returns
    μ(o) and zero log-probabilities; exploration is :meth:`explore`.
    """

    def __init__(
        self,
        obs_dim: int,
        action_space: Any,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        layer_norm: bool = False,
        input_norm: bool = False,
        layer_norm_eps: float = 1e-5,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        low, high = _box_bounds(action_space)
        self.obs_dim = obs_dim
        self.action_dim = int(low.shape[0])
        self.body = MLP(obs_dim, hidden, activation, layer_norm, input_norm, layer_norm_eps)
        self.head = init_linear(nn.Linear(self.body.out_dim, self.action_dim), HEAD_GAIN)
        self._register_box(low, high, self.head.weight.dtype)
        if dtype is not None or device is not None:
            self.to(device=device, dtype=dtype)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """μ_θ(o): actions ``[*B, d]`` for observations ``[*B, obs_dim]`` (differentiable)."""
        check_obs("DeterministicPolicy", obs, self.obs_dim)
        return self.squash(self.head(self.body(obs)))

    def sample(
        self,
        obs: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ(o) [*B, d], zeros [*B])`` without gradient, whatever ``deterministic`` says.

        The stochastic policies' interface, so that the shared acting and evaluation code runs a
        deterministic policy unchanged; ``action_mask`` must be None (Box actions have none).
        """
        if action_mask is not None:
            raise ValueError("DeterministicPolicy: 'action_mask' applies only to Discrete actions")
        with torch.no_grad():
            action = self(obs)
        return action, action.new_zeros(action.shape[:-1])

    def explore(
        self, obs: torch.Tensor, noise_std: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``clip(μ(o) + σ·h·ε, low, high)``, ε ~ N(0, I), without gradient ([HAML], Algorithm 3:
        a = μ(o) + X_t with Gaussian X).

        ``noise_std`` σ is relative to each dimension's half-width h (``action_scale``; 1 where
        unbounded). ``generator`` (on the policy's device) makes the noise reproducible apart from
        the global RNG.
        """
        with torch.no_grad():
            action = self(obs)
            if noise_std == 0:
                return action
            noise = torch.randn(
                action.shape, generator=generator, dtype=action.dtype, device=action.device
            )
            action = torch.addcmul(action, noise, self.action_scale, value=float(noise_std))
            return torch.clamp(action, self.action_low, self.action_high)


# ----------------------------------------------------------------------------------------------
# Target networks


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters require no gradient (a target network)."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


def _parameters(modules: Iterable[nn.Module]) -> list[torch.Tensor]:
    return [p for module in modules for p in module.parameters()]


def polyak_update(
    targets: Sequence[nn.Module], sources: Sequence[nn.Module], tau: float
) -> None:
    """φ' ← τ φ + (1 - τ) φ' for every parameter of ``targets`` (paired in order with those of
    ``sources``), as one multi-tensor op (``torch._foreach_lerp_``) ([HAML], Algorithm 3).

    ``tau`` in (0, 1]; 1 copies. Buffers (the policies' bounds) are constants and are not touched.
    """
    if not 0 < tau <= 1:
        raise ValueError(f"polyak_update: 'tau' must be in (0, 1], got {tau!r}")
    target_params, source_params = _parameters(targets), _parameters(sources)
    if len(target_params) != len(source_params) or any(
        t.shape != s.shape for t, s in zip(target_params, source_params)
    ):
        raise ValueError("polyak_update: 'targets' and 'sources' must have the same parameters")
    with torch.no_grad():
        torch._foreach_lerp_(target_params, source_params, float(tau))
