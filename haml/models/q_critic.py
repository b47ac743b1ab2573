"""The centralised critic of the off-policy algorithms: Q_φ(s, a¹..aⁿ) over the global state and
the joint action (agents' action sizes may differ), optionally twin (two independent Q networks).

The HA actor phase evaluates Q once per agent (and discrete HASAC once per action of that agent)
on the same states, with only the actions changing. :meth:`QCritic.state_term` therefore computes
what the state contributes to the first layer once per update, and :meth:`QCritic.q_from` adds
the actions' part and runs the rest of the network. Both routes equal :meth:`QCritic.forward` up
to rounding:

- without an input LayerNorm, ``W [s, a] + b = (W_s s + b) + W_a a``;
- with one (``input_norm``, the SMAX/SMAC/MPE settings), ``LN`` over ``x = [s, a]`` of width
  ``D = S + A`` followed by the first Linear is

      W (γ ⊙ (x − m)/σ + β) + b = (W_γ (x − m)) / σ + (W β + b),   W_γ = W diag(γ),

  with ``m`` and ``σ² = M2/D`` the mean and (biased) variance over all of ``x``. The state's part
  is kept centred on its own mean ``m_s`` and the actions' on ``m_a``; with ``δ = m_a − m_s``,

      W_γ (x − m) = W_γs (s − m_s) + W_γa (a − m_a) + δ (S/D · W_γa 1 − A/D · W_γs 1),
      m = m_s + δ A/D,   M2 = M2_s + M2_a + δ² S A / D

  (Chan et al.'s pairwise update of the mean and sum of squares, which never subtracts two large
  sums), so ``W_γs (s − m_s)``, ``m_s`` and ``M2_s`` are the state term.

Conventions as in :mod:`haml.models.policies`: inputs ``[*B, dim]``, orthogonal init with the
activation's gain, zero biases. Imports no environment and no algorithm code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from haml.models.checks import check_agent_sizes, check_positive_int
from haml.models.mlp import MLP, init_linear

__all__ = ["QCritic", "StateTerm"]


class StateTerm(NamedTuple):
    """What :meth:`QCritic.q_from` needs of the states, from :meth:`QCritic.state_term`.

    ``first``: per network ``[*B, H_1]``, ``W_s s + b`` (no input norm) or ``W_γs (s − m_s)``
    (input norm). ``mean``, ``m2``: ``[*B, 1]`` mean of s and ``Σ (s − m_s)²`` with input norm,
    else None. Broadcasts against actions with extra leading dimensions.
    """

    first: tuple[torch.Tensor, ...]
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None


class QCritic(nn.Module):
    """Q_φ(s, a¹..aⁿ): an :class:`~haml.models.mlp.MLP` over ``[s, a¹, ..., aⁿ]`` and a linear
    output, one or two (``twin``) independent networks.

    Args:
        state_dim: size of the global state s.
        action_dims: ``(d_1, ..., d_n)``, each agent's action size; the joint action is their
            concatenation in agent order.
        hidden, activation, layer_norm, input_norm, layer_norm_eps: each network's trunk.
        twin: two Q networks (TD3-style clipped double Q); ``forward`` then returns ``(q1, q2)``.
        dtype, device: where to put the parameters.

    :meth:`state_term` and :meth:`q_from` split the first layer (the module doc), with or without
    ``input_norm``.
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
        self.input_norm = bool(input_norm)
        in_dim = state_dim + sum(self.action_dims)
        self.nets = nn.ModuleList()
        for _ in range(2 if self.twin else 1):
            body = MLP(in_dim, hidden, activation, layer_norm, input_norm, layer_norm_eps)
            head = init_linear(nn.Linear(body.out_dim, 1), 1.0)
            self.nets.append(nn.Sequential(*body.layers, head))
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
            raise ValueError(f"QCritic: 'which' must be one of {list(range(len(self.nets)))} "
                             f"or None, got {which!r}")
        return [self.nets[which]]

    def _first_weight(self, net: nn.Sequential) -> torch.Tensor:
        """``W_γ = W diag(γ)`` of a network's input LayerNorm and first Linear, or the first
        Linear's ``W`` without input norm."""
        if not self.input_norm:
            return net[0].weight
        return net[1].weight * net[0].weight

    def _first_bias(self, net: nn.Sequential) -> torch.Tensor:
        """``W β + b`` of a network's input LayerNorm and first Linear, or ``b`` without."""
        if not self.input_norm:
            return net[0].bias
        return torch.addmv(net[1].bias, net[1].weight, net[0].bias)

    def _rest(self, net: nn.Sequential) -> nn.Sequential:
        """The modules after the first Linear."""
        return net[2:] if self.input_norm else net[1:]

    def state_term(self, state: torch.Tensor, which: int | None = None) -> StateTerm:
        """What the states ``[*B, S]`` contribute to the first layer (:class:`StateTerm`), to be
        reused by :meth:`q_from` for any number of actions. ``which``: that network only (0 or
        1)."""
        s = self.state_dim
        nets = self._chosen(which)
        if not self.input_norm:
            return StateTerm(tuple(F.linear(state, self._first_weight(net)[:, :s],
                                            self._first_bias(net)) for net in nets))
        mean = state.mean(-1, keepdim=True)
        centred = state - mean
        m2 = (centred * centred).sum(-1, keepdim=True)
        first = tuple(F.linear(centred, self._first_weight(net)[:, :s]) for net in nets)
        return StateTerm(first, mean, m2)

    def q_from(
        self,
        h_s: StateTerm,
        actions: Sequence[torch.Tensor] | torch.Tensor,
        which: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Q from :meth:`state_term`'s ``h_s`` and the actions ``[*C, *B, d_i]`` (``C`` optional
        leading dimensions, e.g. one per candidate action): the rest of the first layer, then the
        network.

        ``which``: evaluate that network only and return its ``[*B]`` values (``h_s`` then from
        ``state_term(state, which)``): TD3's actors ascend the first twin alone."""
        joint = self._joint(actions)
        s = self.state_dim
        nets = self._chosen(which)
        if len(h_s.first) != len(nets):
            raise ValueError(f"QCritic: the state term holds {len(h_s.first)} networks' part, "
                             f"{len(nets)} asked for (state_term and q_from need the same 'which')")
        if self.input_norm:
            a_dim = joint.shape[-1]
            d = s + a_dim
            a_mean = joint.mean(-1, keepdim=True)
            a_centred = joint - a_mean
            delta = a_mean - h_s.mean
            m2 = (h_s.m2 + (a_centred * a_centred).sum(-1, keepdim=True)
                  + delta * delta * (s * a_dim / d))
            inv_std = torch.rsqrt(m2 / d + nets[0][0].eps)
            a_with_delta = torch.cat((a_centred, delta.expand(*a_centred.shape[:-1], 1)), -1)
        qs = []
        for net, h in zip(nets, h_s.first):
            weight = self._first_weight(net)
            if not self.input_norm:
                first = _add_product(h, joint, weight[:, s:])
            else:
                w_a = weight[:, s:]
                # δ (S/D · W_γa 1 − A/D · W_γs 1), the shift from each part's own mean to x's,
                # rides in the actions' product as one more column.
                shift = (s / d) * w_a.sum(1) - (a_dim / d) * weight[:, :s].sum(1)
                centred = _add_product(h, a_with_delta, torch.cat((w_a, shift[:, None]), 1))
                first = torch.addcmul(self._first_bias(net), centred, inv_std)
            qs.append(self._rest(net)(first))
        return self._out(qs) if which is None else qs[0].squeeze(-1)


def _add_product(h: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``h + x Wᵀ`` in one fused product where the shapes allow: ``x`` ``[*C, *B, k]``, ``h``
    ``[*B, H]`` broadcasting over the leading ``C``."""
    if x.dim() == 2 and h.dim() == 2:
        return torch.addmm(h, x, weight.t())
    if x.dim() == 3 and h.dim() == 2:  # [C, B, k]: one batched product, W shared by stride 0
        return torch.baddbmm(h, x, weight.t().expand(x.shape[0], *weight.t().shape))
    return h + F.linear(x, weight)
