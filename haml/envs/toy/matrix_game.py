"""The one-step cooperative matrix game, vectorised in torch.

``n`` agents each pick a discrete action ``a^i ∈ {0, ..., A_i - 1}`` and all receive the team
reward ``r(a^1, ..., a^n) = payoff[a^1, ..., a^n]``, where ``payoff`` has shape
``(A_1, ..., A_n)`` (the number of actions may differ between agents). There is one state, so
the expected return of a joint policy π = (π^1, ..., π^n) is

    J(π) = Σ_a payoff[a] Π_i π^i(a^i),

which :func:`expected_payoff` computes exactly (and differentiably) from the agents' action
probabilities: the experiments compare *that* with the papers' numbers, rather than a noisy mean
of sampled rewards.

The games of the papers built on it are in :mod:`haml.envs.toy.presets` (the homogeneity trap of
[HATRPO]/[HAML] Proposition 1 and the heterogeneity trap of [HAML] Proposition 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from haml.envs.toy._one_step import OneStepGame

__all__ = ["MatrixGame", "as_payoff", "expected_payoff"]


def as_payoff(payoff: Any, owner: str = "MatrixGame") -> torch.Tensor:
    """``payoff`` (tensor, numpy array or nested lists) as a float32 CPU tensor, after checks.

    It must have one dimension per agent (at least one), at least one action per agent, a real
    (integer or floating, not bool/complex) dtype and only finite values.
    """
    if isinstance(payoff, torch.Tensor):
        table = payoff.detach()
    else:
        try:
            table = torch.as_tensor(payoff)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"{owner}: 'payoff' must be a tensor, numpy array or rectangular nested list of numbers "
                f"({err})"
            ) from None
    if not (table.is_floating_point() or _is_integer(table)):
        raise TypeError(
            f"{owner}: 'payoff' must hold real numbers (an integer or floating dtype), got {table.dtype}"
        )
    if table.dim() == 0:
        raise ValueError(f"{owner}: 'payoff' must have one dimension per agent, got a scalar")
    if any(size == 0 for size in table.shape):
        raise ValueError(
            f"{owner}: 'payoff' must have at least one action per agent, got shape {tuple(table.shape)}"
        )
    table = table.to(device="cpu", dtype=torch.float32)
    if not torch.isfinite(table).all():
        raise ValueError(f"{owner}: 'payoff' must be finite everywhere (it holds NaN or inf)")
    return table.contiguous()


def _is_integer(t: torch.Tensor) -> bool:
    return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


def expected_payoff(payoff: torch.Tensor, probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """J(π) = Σ_a payoff[a] Π_i π^i(a^i): the exact expected team reward of independent policies.

    Args:
        payoff: ``(A_1, ..., A_n)``, any real dtype (as :class:`MatrixGame` takes it).
        probs: one tensor per agent, ``[*B, A_i]``: agent i's action probabilities (each row sums
            to 1), with the same batch shape ``B`` (possibly empty) for every agent.

    Returns:
        ``[*B]``: J for each batch entry, differentiable in ``probs`` (so an exact policy gradient
        can be taken through it), in the dtype of ``probs``.
    """
    if not isinstance(payoff, torch.Tensor):
        payoff = as_payoff(payoff, owner="expected_payoff")
    n = payoff.dim()
    if not isinstance(probs, (tuple, list)) or len(probs) != n:
        got = f" of length {len(probs)}" if isinstance(probs, (tuple, list)) else ""
        raise ValueError(
            f"expected_payoff: 'probs' must be a tuple/list with one tensor per agent ({n} agents, the "
            f"dimensions of 'payoff'), got a {type(probs).__name__}{got}"
        )
    batch = tuple(probs[0].shape[:-1])
    for i, p in enumerate(probs):
        if not isinstance(p, torch.Tensor) or not p.is_floating_point():
            raise TypeError(f"expected_payoff: probs[{i}] (agent {i}) must be a floating tensor")
        if p.dim() == 0 or p.shape[-1] != payoff.shape[i] or tuple(p.shape[:-1]) != batch:
            raise ValueError(
                f"expected_payoff: probs[{i}] (agent {i}) must have shape [*B, {payoff.shape[i]}] with "
                f"B = {list(batch)} (that of probs[0]), got {list(p.shape)}"
            )
        if (p < 0).any() or not torch.allclose(p.sum(-1), torch.ones_like(p.sum(-1)), atol=1e-5):
            raise ValueError(
                f"expected_payoff: probs[{i}] (agent {i}) must be non-negative and sum to 1 over actions"
            )
    # Contract the last agent's axis first: r holds Σ over a^{i+1..n} of payoff · Π_{j>i} π^j,
    # with the batch axes in front, [*B, A_1, ..., A_i].
    r = payoff.to(dtype=probs[0].dtype, device=probs[0].device)
    for i in reversed(range(n)):
        p = probs[i].reshape(batch + (1,) * i + (payoff.shape[i],))
        r = (r * p).sum(-1)
    return r


class MatrixGame(OneStepGame):
    """``num_envs`` copies of the one-step matrix game ``payoff`` (a ``VectorMultiAgentEnv``).

    Args:
        payoff: ``(A_1, ..., A_n)`` team reward of every joint action (tensor, numpy array or
            nested lists; real numbers, finite). ``n = payoff.dim()`` agents; agent i has
            ``Discrete(A_i)`` actions.
        num_envs: ``E``, the number of games played at every ``step()``.
        device: where the payoff lives and every returned tensor is.
        task: the name in ``spec.task`` (the presets pass theirs).
        episode_stats_limit: ``None`` reports one ``EpisodeStats`` per env per step (the
            interface); ``K`` only those of the first ``K`` envs (see :mod:`._one_step`).

    ``step(actions)`` takes one int tensor ``[E]`` (or ``[E, 1]``) per agent and returns
    ``reward[e] = payoff[actions[0][e], ..., actions[n-1][e]]``.
    """

    def __init__(
        self,
        payoff: Any,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        *,
        task: str = "matrix-game",
        episode_stats_limit: int | None = None,
    ) -> None:
        from gymnasium import spaces

        table = as_payoff(payoff)
        super().__init__(
            task=task,
            action_spaces=tuple(spaces.Discrete(int(a)) for a in table.shape),
            num_envs=num_envs,
            device=device,
            episode_stats_limit=episode_stats_limit,
        )
        self.n_actions: tuple[int, ...] = tuple(int(a) for a in table.shape)
        """``(A_1, ..., A_n)``."""
        self.payoff = table.to(self.device)
        """The ``(A_1, ..., A_n)`` float32 table on ``device`` (read it, don't write it)."""
        self._flat_payoff = self.payoff.reshape(-1)
        # Row-major strides of the table: the flat index of a joint action is Σ_i a^i · stride_i.
        self._strides = tuple(int(s) for s in table.stride())

    @property
    def optimum(self) -> float:
        """max_a payoff[a]: the best joint return (reached by a deterministic joint action)."""
        return float(self.payoff.max())

    def expected_payoff(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """:func:`expected_payoff` of this game's table."""
        return expected_payoff(self.payoff, probs)

    def _game_state(self) -> dict[str, Any]:
        return {"payoff": self.payoff.cpu()}

    def _validated_actions(self, actions: Sequence[Any]) -> tuple[torch.Tensor, ...]:
        E = self.num_envs
        checked = []
        for i, a in enumerate(actions):
            if not isinstance(a, torch.Tensor):
                raise TypeError(
                    f"MatrixGame.step: actions[{i}] (agent {i}) must be a torch.Tensor of action indices, "
                    f"got {type(a).__name__}"
                )
            if not _is_integer(a):
                raise TypeError(
                    f"MatrixGame.step: actions[{i}] (agent {i}) must be an integer tensor of action "
                    f"indices (int64), got dtype {a.dtype}"
                )
            if a.dim() == 2 and a.shape[1] == 1:
                a = a[:, 0]
            if tuple(a.shape) != (E,):
                raise ValueError(
                    f"MatrixGame.step: actions[{i}] (agent {i}) must have shape [num_envs] = [{E}] "
                    f"(or [{E}, 1]), got {list(a.shape)}"
                )
            checked.append(a.to(device=self.device, dtype=torch.int64))
        # One host sync for all agents; find the culprit only when something is out of range.
        out_of_range = torch.stack([((a < 0) | (a >= n)).any() for a, n in zip(checked, self.n_actions)])
        if out_of_range.any():
            i = int(out_of_range.nonzero()[0, 0])
            a, n = checked[i], self.n_actions[i]
            bad = a[(a < 0) | (a >= n)]
            raise ValueError(
                f"MatrixGame.step: agent {i} chose action {int(bad[0])} ({bad.numel()} of {E} envs out of "
                f"range); its action space is Discrete({n}), valid actions 0..{n - 1}"
            )
        return tuple(checked)

    def _team_reward(self, actions: tuple[torch.Tensor, ...]) -> torch.Tensor:
        flat_index = actions[0] * self._strides[0]
        for a, stride in zip(actions[1:], self._strides[1:]):
            flat_index = flat_index + a * stride
        return self._flat_payoff[flat_index]
