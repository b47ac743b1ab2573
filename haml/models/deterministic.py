"""The networks of the deterministic off-policy algorithms (HADDPG, MADDPG; [HAML], Algorithm 3).

- :class:`DeterministicPolicy`: μ_θ(o), an :class:`~haml.models.mlp.MLP` trunk and a linear head
  squashed into the action ``Box`` with tanh; ``explore`` adds Gaussian noise, clipped to the Box.
- :class:`QCritic`: the centralised critic Q_φ(s, a¹..aⁿ) over the global state and the joint
  action (agents' action sizes may differ), optionally twin (two independent Q networks). Its
  first layer is split, ``W [s, a] + b = (W_s s + b) + W_a a``, so that the HA actor phase, which
  evaluates Q once per agent on the same states, computes the state term once per update.
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
import torch.nn.functional as F
from torch import nn

from haml.models.box_squash import BoxSquash
from haml.models.checks import check_agent_sizes, check_obs, check_positive_int
from haml.models.mlp import MLP, init_linear
from haml.models.policies import HEAD_GAIN, parse_action_space

__all__ = ["DeterministicPolicy", "QCritic", "frozen_copy", "polyak_update"]


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


class QCritic(nn.Module):
    """Q_φ(s, a¹..aⁿ): an :class:`MLP` over ``[s, a¹, ..., aⁿ]`` and a linear output, one or two
    (``twin``) independent networks.

    Args:
        state_dim: size of the global state s.
        action_dims: ``(d_1, ..., d_n)``, each agent's action size; the joint action is their
            concatenation in agent order.
        hidden, activation, layer_norm, input_norm, layer_norm_eps: each network's trunk.
        twin: two Q networks (TD3-style clipped double Q); ``forward`` then returns ``(q1, q2)``.
        dtype, device: where to put the parameters.

    The split of the first layer: :meth:`state_term` computes ``h_s = W_s s + b`` (one tensor per
    network) and :meth:`q_from` ``(h_s, actions)`` adds ``W_a a`` and runs the rest, equal to
    :meth:`forward` up to rounding. It needs ``input_norm=False``: a LayerNorm over ``[s, a]``
    mixes the two, so with ``input_norm`` ``state_term`` returns the state itself and ``q_from``
    runs the whole network (the same values, no saving). ``splits`` says which applies.
    """

    def __init__(
        self,
        state_dim: int,
        action_dims: Sequence[int],
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        layer_norm: bool = False,
        input_norm: bool = False,
        twin: bool = False,
        layer_norm_eps: float = 1e-5,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("QCritic", "state_dim", state_dim)
        check_agent_sizes("QCritic", "action_dims", action_dims, "one action size per agent")
        self.state_dim = state_dim
        self.action_dims = tuple(action_dims)
        self.twin = bool(twin)
        in_dim = state_dim + sum(self.action_dims)
        self.nets = nn.ModuleList()
        for _ in range(2 if self.twin else 1):
            body = MLP(in_dim, hidden, activation, layer_norm, input_norm, layer_norm_eps)
            head = init_linear(nn.Linear(body.out_dim, 1), 1.0)
            self.nets.append(nn.Sequential(*body.layers, head))
        self.splits = not input_norm
        if dtype is not None or device is not None:
            self.to(device=device, dtype=dtype)

    def _joint(self, actions: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if isinstance(actions, torch.Tensor):
            joint = actions
        else:
            if len(actions) != len(self.action_dims):
                raise ValueError(
                    f"QCritic: {len(actions)} agents' actions given, "
                    f"expected {len(self.action_dims)}"
                )
            joint = actions[0] if len(actions) == 1 else torch.cat(tuple(actions), dim=-1)
        if joint.shape[-1] != sum(self.action_dims):
            raise ValueError(
                f"QCritic: the joint action must have {sum(self.action_dims)} entries "
                f"(action_dims={self.action_dims}), got shape {tuple(joint.shape)}"
            )
        return joint

    def _out(self, qs: list[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        qs = [q.squeeze(-1) for q in qs]
        return (qs[0], qs[1]) if self.twin else qs[0]

    def forward(
        self, state: torch.Tensor, actions: Sequence[torch.Tensor] | torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Q(s, a) ``[*B]`` (or ``(q1, q2)`` when twin) of states ``[*B, S]`` and per-agent actions
        ``[*B, d_i]`` (or the joint action ``[*B, Σd]``): the plain, unsplit network."""
        x = torch.cat((state, self._joint(actions)), dim=-1)
        return self._out([net(x) for net in self.nets])

    def _chosen(self, which: int | None) -> list[nn.Module]:
        if which is None:
            return list(self.nets)
        if which not in range(len(self.nets)):
            raise ValueError(f"QCritic: 'which' must be one of {list(range(len(self.nets)))} or None, "
                             f"got {which!r}")
        return [self.nets[which]]

    def state_term(self, state: torch.Tensor, which: int | None = None) -> tuple[torch.Tensor, ...]:
        """``h_s = W_s s + b`` per network ``[*B, H_1]`` (the state's part of the first layer);
        the state itself when :attr:`splits` is False. ``which``: that network only (0 or 1)."""
        if not self.splits:
            return (state,)
        s = self.state_dim
        return tuple(F.linear(state, net[0].weight[:, :s], net[0].bias) for net in self._chosen(which))

    def q_from(
        self,
        h_s: tuple[torch.Tensor, ...],
        actions: Sequence[torch.Tensor] | torch.Tensor,
        which: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Q from :meth:`state_term`'s ``h_s`` and the actions: ``rest(h_s + W_a a)``.

        ``which``: evaluate that network only and return its ``[*B]`` values (``h_s`` then from
        ``state_term(state, which)``): TD3's actors ascend the first twin alone."""
        joint = self._joint(actions)
        if not self.splits:
            qs = self(h_s[0], joint)
            return qs if which is None or not self.twin else qs[which]
        s = self.state_dim
        qs = []
        for net, h in zip(self._chosen(which), h_s):
            first = torch.addmm(h, joint, net[0].weight[:, s:].t()) if joint.dim() == 2 else (
                h + F.linear(joint, net[0].weight[:, s:])
            )
            qs.append(net[1:](first))
        return self._out(qs) if which is None else qs[0].squeeze(-1)


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
