"""Several :class:`~haml.models.policies.MLPPolicy` of one architecture acting as one batched network.

Collection runs every agent's policy once per env step on a few rows (one per env): the cost is
the number of ops, each a few microseconds of dispatch, not their arithmetic. Agents whose
policies have the same architecture (MaMuJoCo's fully observable agents, SMAX's alike units) are
run together instead: their weights are stacked along a leading agent dimension, every layer is
one batched matmul for all of them, and a step costs the ops of one policy rather than of ``n``.

The math is each policy's own, agent by agent::

    x_i = LN(o_i) ;  x_i = LN(act(W_i^l x_i + b_i^l)) per hidden layer l ;  μ_i = W_i^h x_i + b_i^h

where each LayerNorm's per-agent affine map is folded into the Linear after it (see
:func:`_stacked_ops`); actions and log-probabilities are drawn as by
:func:`~haml.models.policies.sample_head` from the stacked head output. Results match the
per-policy forward up to float rounding (a batched matmul sums in another order), which
``python_tests/models/test_stacked.py`` bounds.

The stack is a copy of the weights. It is rebuilt whenever a parameter changed in place since it
was made (an optimiser step, ``load_state_dict``, a trust-region step's ``copy_``), which the
parameters' version counters tell at the cost of reading them; assigning a new tensor to a
parameter's ``.data`` or replacing the parameter object bypasses that check: call :meth:`rebuild`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from haml.models.policies import (
    MLPPolicy,
    gaussian_log_density_offset,
    gaussian_sample,
    sample_head,
)

__all__ = ["StackedPolicies", "stack_key"]

_ACTIVATION_FNS = {"relu": torch.relu, "tanh": torch.tanh}


def stack_key(policy: nn.Module) -> tuple[Any, ...] | None:
    """Policies with equal keys can act as one :class:`StackedPolicies`; ``None`` for a policy
    that cannot be stacked (not a plain :class:`MLPPolicy`, e.g. a recurrent one)."""
    if type(policy) is not MLPPolicy:
        return None
    body, weight = policy.body, policy.head.weight
    return (
        policy.head_type,
        policy.obs_dim,
        policy.action_dim,
        body.hidden,
        body.activation,
        body.input_norm,
        body.layer_norm,
        body.layer_norm_eps,
        weight.dtype,
        weight.device,
    )


class StackedPolicies:
    """``policies`` (at least one; all with the same :func:`stack_key`; a module may repeat, as
    for a shared policy) acting together on ``[n, E, obs_dim]`` observations."""

    def __init__(self, policies: Sequence[MLPPolicy]) -> None:
        policies = list(policies)
        if not policies:
            raise ValueError("StackedPolicies: needs at least one policy")
        keys = {stack_key(p) for p in policies}
        if None in keys:
            raise TypeError("StackedPolicies: every policy must be a haml.models.MLPPolicy")
        if len(keys) != 1:
            raise ValueError(
                "StackedPolicies: the policies differ in architecture (obs/action size, hidden "
                "widths, activation, normalisation, dtype or device) and cannot be stacked"
            )
        self.policies = policies
        first = policies[0]
        self.activation = _ACTIVATION_FNS[first.body.activation]
        self.eps = first.body.layer_norm_eps
        self._params = [p for policy in policies for p in policy.parameters()]
        self._versions: tuple[int, ...] | None = None
        self._ops: list[tuple[str, tuple[torch.Tensor, ...]]] = []
        # Gaussian heads: σ and the log-density offset, [n, 1, d] (they broadcast over the env
        # rows of [n, E, d]); kept from the rebuild, as log σ does not change between updates.
        self._std: torch.Tensor | None = None
        self._log_density_offset: torch.Tensor | None = None

    def rebuild(self) -> None:
        """Copy the policies' current weights into the stack."""
        with torch.no_grad():
            self._ops = _stacked_ops(self.policies)
            if self.policies[0].log_std is None:
                self._std = self._log_density_offset = None
            else:
                log_std = _stack([p.log_std for p in self.policies])
                self._std = log_std.exp()
                self._log_density_offset = gaussian_log_density_offset(log_std)
        self._params = [p for policy in self.policies for p in policy.parameters()]
        self._versions = tuple(p._version for p in self._params)

    def _current(self) -> None:
        if self._versions != tuple(p._version for p in self._params):
            self.rebuild()

    @torch.no_grad()
    def head_output(self, obs: torch.Tensor) -> torch.Tensor:
        """The policies' head outputs ``[n, E, d]`` (Gaussian means or logits) for ``obs [n, E,
        obs_dim]``, row ``i`` by policy ``i``."""
        self._current()
        x = obs
        for kind, args in self._ops:
            if kind == "norm":
                x = F.layer_norm(x, x.shape[-1:], eps=self.eps)
            elif kind == "linear":
                weight_t, bias = args
                x = torch.baddbmm(bias, x, weight_t)
            else:
                x = self.activation(x)
        return x

    @torch.no_grad()
    def sample(
        self,
        obs: Sequence[torch.Tensor],
        action_masks: Sequence[torch.Tensor] | None = None,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(actions [n, E, ...], joint log-probs [n, E])`` for per-policy observations
        ``obs[i] [E, obs_dim]``; what ``policies[i].sample(obs[i], action_masks[i])`` gives
        (the same distributions; the draws differ, one noise tensor serving all agents)."""
        if len(obs) != len(self.policies):
            raise ValueError(
                f"StackedPolicies: got {len(obs)} observations for {len(self.policies)} policies"
            )
        for o, policy in zip(obs, self.policies):
            policy._check_obs(o)
        out = self.head_output(torch.stack(tuple(obs)))
        mask = None
        if action_masks is not None:
            for m, policy, o in zip(action_masks, self.policies, out):
                policy._check_action_mask(m, o)
            mask = torch.stack(tuple(action_masks))
        if self._std is None:
            return sample_head(out, None, mask, deterministic)
        return gaussian_sample(out, self._std, self._log_density_offset, deterministic)


def _stacked_ops(policies: Sequence[MLPPolicy]) -> list[tuple[str, tuple[torch.Tensor, ...]]]:
    """The forward pass of ``policies`` as ``(kind, stacked tensors)`` steps: ``norm`` (an
    unweighted LayerNorm, no tensors), ``linear`` (``Wᵀ [n, in, out]``, bias ``[n, 1, out]``) and
    ``act``.

    Every LayerNorm of an :class:`MLPPolicy` is followed by a Linear (the next hidden layer or
    the head), and its affine map folds into it: ``W(γ⊙x̂ + β) + b = (W diag γ) x̂ + (Wβ + b)``,
    which saves an op per LayerNorm per step.
    """
    ops: list[tuple[str, tuple[torch.Tensor, ...]]] = []
    columns = list(zip(*[(*p.body.layers, p.head) for p in policies]))
    for k, column in enumerate(columns):
        module = column[0]
        if isinstance(module, nn.LayerNorm):
            ops.append(("norm", ()))
        elif isinstance(module, nn.Linear):
            weights = [m.weight for m in column]  # [out, in] each
            biases = [m.bias for m in column]
            before = columns[k - 1][0] if k > 0 else None
            if isinstance(before, nn.LayerNorm):
                norms = columns[k - 1]
                biases = [b + w @ n.bias for w, b, n in zip(weights, biases, norms)]
                weights = [w * n.weight for w, n in zip(weights, norms)]
            weight_t = torch.stack([w.t() for w in weights]).contiguous()
            ops.append(("linear", (weight_t, _stack(biases))))
        else:
            ops.append(("act", ()))
    return ops


def _stack(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-agent vectors ``[w]`` as ``[n, 1, w]``, to broadcast over the env rows."""
    return torch.stack(list(rows))[:, None, :]
