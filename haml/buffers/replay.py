"""The off-policy replay buffer: a ring of vector-env steps, torch tensors on the training device.

Layout. A buffer for ``E`` envs and ``capacity`` transitions is a ring of ``R = ceil(capacity / E)``
**rows**, one row per vector-env step, each row holding the ``E`` transitions of that step (so it
holds ``R·E >= capacity`` transitions: ``capacity`` rounded up to whole steps; :attr:`capacity`
is that number). Every field is a tensor ``[R, E, ...]``; per-agent fields are one tensor per agent
of that agent's own size (no padding). Row ``r`` of env ``e`` holds the transition

    (o_t, s_t, a_t, avail(o_t), alive(o_t), r_t, terminated_t, truncated_t, o'_t, s'_t, avail(o'_t))

where ``o'_t``/``s'_t`` are the **true** next observation and state (the env's ``final_obs`` /
``final_state``: the last observation of the episode where it ended at t, not the first one of the
next episode) and ``avail(o'_t)`` the next available-action masks (all True where the episode ended:
they are not observed there, and no target uses them, since a terminated step does not bootstrap
and a truncated one bootstraps from ``o'_t`` whose masks the env never reported).
Available-action masks, as everywhere in haml, need every agent's action space to be Discrete.

n-step returns (the authors' tuned HADDPG settings choose ``n`` per task) are computed at sample
time, for the whole batch at once: a window of the ``n`` rows ``t .. t+n-1`` of the sampled env
is gathered by index arithmetic (``[B, n]``) and cut at

- the first episode end, inclusive (``terminated`` or ``truncated``: rewards of the next episode are
  never summed), and
- the newest stored row (a window never reads an unwritten row, nor, once the ring wraps, the
  oldest rows that follow the newest one in ring order; the oldest rows are fine to *start* from).

With ``K`` the number of steps kept (``1 <= K <= n``):

    reward   = sum_{k<K} gamma^k r_{t+k}
    discount = gamma^K · (1 - terminated_{t+K-1})        (a time limit bootstraps, a terminal does not)
    next_*   = o'_{t+K-1}, s'_{t+K-1}, avail(o'_{t+K-1})

so a critic target reads ``y = reward + discount · Q'(next_state, μ'(next_obs))``.

Why ``o'``/``s'`` are stored per row, doubling the observation memory: the envs reset themselves,
so the row after an episode end holds the next episode's first observation, not the true final one
a time limit must bootstrap from; and with the next observation in the same row, the n-step target
reads row ``t+K-1`` whatever ``K`` is, which works at the newest row too (whose successor is not
written yet). Storing final observations only at episode ends would save the memory at the cost of
a sparse side table and a second lookup.

Memory per transition, in bytes (float32 4, int64 8, bool 1):

    8 · (sum_i obs_dim_i + state_dim)          o, o' and s, s'
    + sum_i (4 · d_i  for a Box agent,  8 for a Discrete one)    actions
    + 2 · sum_i n_i                            available-action masks at o and o' (tasks with masks)
    + n_agents                                 alive flags (tasks where agents die)
    + 6                                        reward (4), terminated (1), truncated (1)

:func:`bytes_per_transition` evaluates it for an :class:`~haml.envs.base.EnvSpec`; docs/OFF_POLICY.md
works an example.

Sampling is uniform over the stored transitions with ``torch.randint`` on the buffer's device from
the global generator (so a checkpoint's RNG state reproduces the batches); its cost does not grow
with the buffer's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from haml.envs.base import EnvSpec, EnvStep

__all__ = ["REPLAY_STATE_FORMAT", "ReplayBuffer", "ReplaySample", "bytes_per_transition"]

REPLAY_STATE_FORMAT = 1
"""The version of :meth:`ReplayBuffer.state_dict`'s layout."""


@dataclass
class ReplaySample:
    """A batch of ``B`` n-step transitions (see the module doc for the formulas)."""

    obs: tuple[torch.Tensor, ...]
    """Per agent ``[B, obs_dim_i]`` float32: o_t."""
    state: torch.Tensor
    """``[B, state_dim]``: s_t."""
    actions: tuple[torch.Tensor, ...]
    """Per agent ``[B, d_i]`` float32 (Box) or ``[B]`` int64 (Discrete): a_t."""
    action_masks: tuple[torch.Tensor, ...] | None
    """Per agent ``[B, n_i]`` bool at o_t, if the env has them."""
    active_masks: tuple[torch.Tensor, ...] | None
    """Per agent ``[B]`` bool at o_t, if the env has them."""
    reward: torch.Tensor
    """``[B]``: the n-step discounted return ``sum_{k<K} gamma^k r_{t+k}``."""
    discount: torch.Tensor
    """``[B]``: ``gamma^K · (1 - terminated_{t+K-1})``, the factor of the bootstrap."""
    next_obs: tuple[torch.Tensor, ...]
    """Per agent ``[B, obs_dim_i]``: the true observation after step t+K-1."""
    next_state: torch.Tensor
    """``[B, state_dim]``: the true state after step t+K-1."""
    next_action_masks: tuple[torch.Tensor, ...] | None
    """Per agent ``[B, n_i]`` bool at next_obs (all True where the episode ended)."""
    steps: torch.Tensor
    """``[B]`` int64: K, the number of rewards summed (1..n)."""


def _is_discrete(space: Any) -> bool:
    from gymnasium import spaces

    return isinstance(space, spaces.Discrete)


def _action_shape(space: Any) -> tuple[tuple[int, ...], torch.dtype]:
    """``((), int64)`` for a Discrete agent, ``((d,), float32)`` for a 1-D Box one."""
    if _is_discrete(space):
        return (), torch.int64
    return (int(space.shape[0]),), torch.float32


def bytes_per_transition(spec: EnvSpec) -> int:
    """Bytes one stored transition takes for ``spec`` (the module doc's formula)."""
    total = 8 * (sum(spec.obs_dim(i) for i in range(spec.n_agents)) + spec.state_dim)
    for space in spec.action_spaces:
        shape, dtype = _action_shape(space)
        total += math.prod(shape) * (8 if dtype == torch.int64 else 4)
    if spec.action_masks:
        total += 2 * sum(int(space.n) for space in spec.action_spaces)
    if spec.active_masks:
        total += spec.n_agents
    return total + 6


class ReplayBuffer:
    """A ring of ``ceil(capacity / num_envs)`` vector-env steps with n-step sampling.

    ``add`` one vector-env step at a time; ``sample`` a batch of :class:`ReplaySample`. The
    tensors live on ``device``; ``add`` moves its inputs there (a no-op when the envs run on it).
    """

    def __init__(
        self,
        spec: EnvSpec,
        capacity: int,
        num_envs: int,
        n_step: int,
        gamma: float,
        device: torch.device | str = "cpu",
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"ReplayBuffer: capacity must be an integer >= 1, got {capacity!r}")
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"ReplayBuffer: num_envs must be an integer >= 1, got {num_envs!r}")
        if isinstance(n_step, bool) or not isinstance(n_step, int) or n_step < 1:
            raise ValueError(f"ReplayBuffer: n_step must be an integer >= 1, got {n_step!r}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
            raise ValueError(f"ReplayBuffer: gamma must be a number in [0, 1], got {gamma!r}")
        self.spec = spec
        self.requested_capacity = capacity
        self.num_envs = num_envs
        self.n_step = n_step
        self.gamma = float(gamma)
        self.device = torch.device(device)
        self.rows = -(-capacity // num_envs)
        """R: vector-env steps the ring holds."""
        self.capacity = self.rows * num_envs
        """Transitions the ring holds: ``capacity`` rounded up to a multiple of ``num_envs``."""

        R, E, n, kw = self.rows, num_envs, spec.n_agents, {"device": self.device}
        # Zero-filled, not empty: rows not yet written are never read into a result, but a NaN
        # there must not be able to leak through arithmetic either.
        self.obs = [torch.zeros(R, E, spec.obs_dim(i), **kw) for i in range(n)]
        self.next_obs = [torch.zeros(R, E, spec.obs_dim(i), **kw) for i in range(n)]
        self.state = torch.zeros(R, E, spec.state_dim, **kw)
        self.next_state = torch.zeros(R, E, spec.state_dim, **kw)
        self.actions = []
        for space in spec.action_spaces:
            shape, dtype = _action_shape(space)
            self.actions.append(torch.zeros(R, E, *shape, dtype=dtype, **kw))
        self.action_masks: list[torch.Tensor] | None = None
        self.next_action_masks: list[torch.Tensor] | None = None
        if spec.action_masks:
            for i, space in enumerate(spec.action_spaces):
                if not _is_discrete(space):
                    raise ValueError(
                        "ReplayBuffer: spec.action_masks needs Discrete action spaces, "
                        f"agent {i} has {space!r}"
                    )
            sizes = [int(space.n) for space in spec.action_spaces]
            self.action_masks = [torch.ones(R, E, k, dtype=torch.bool, **kw) for k in sizes]
            self.next_action_masks = [torch.ones(R, E, k, dtype=torch.bool, **kw) for k in sizes]
        self.active_masks: list[torch.Tensor] | None = None
        if spec.active_masks:
            self.active_masks = [torch.ones(R, E, dtype=torch.bool, **kw) for _ in range(n)]
        self.reward = torch.zeros(R, E, **kw)
        self.terminated = torch.zeros(R, E, dtype=torch.bool, **kw)
        self.truncated = torch.zeros(R, E, dtype=torch.bool, **kw)

        self._ptr = 0
        """The row the next ``add`` writes (the oldest row once the ring is full)."""
        self._filled = 0
        """Rows written so far, at most R."""
        # gamma^k for k = 0..n, in double on the host, then cast once.
        self._gamma_pow = torch.tensor(
            [self.gamma**k for k in range(n_step + 1)], dtype=torch.float32, device=self.device
        )
        self._window = torch.arange(n_step, device=self.device)

    # ------------------------------------------------------------------ storage

    def __len__(self) -> int:
        """Transitions stored (at most :attr:`capacity`)."""
        return self._filled * self.num_envs

    @property
    def nbytes(self) -> int:
        """Bytes held by the ring's tensors (``capacity · bytes_per_transition(spec)``)."""
        return sum(t.numel() * t.element_size() for t in self._fields().values())

    def _fields(self) -> dict[str, torch.Tensor]:
        """Every storage tensor by a flat name (``obs.0``, ``actions.1``, ``reward``, ...)."""
        fields: dict[str, torch.Tensor] = {}
        for name in ("obs", "next_obs", "actions", "action_masks", "next_action_masks", "active_masks"):
            tensors = getattr(self, name)
            if tensors is not None:
                for i, t in enumerate(tensors):
                    fields[f"{name}.{i}"] = t
        for name in ("state", "next_state", "reward", "terminated", "truncated"):
            fields[name] = getattr(self, name)
        return fields

    def _check(self, what: str, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"ReplayBuffer.add: {what} must have shape {shape}, got {got}")
        return x

    def add(self, step: EnvStep, actions: Sequence[torch.Tensor], after: EnvStep) -> None:
        """Store one vector-env step: ``E`` transitions.

        ``step`` is what the actions were chosen from (o_t, s_t and its masks), ``actions`` the
        per-agent a_t, ``after`` what the env returned for them (r_t, terminated, truncated, and the
        true next observation ``final_obs``/``final_state``; ``after.action_masks`` are stored as
        the next masks only where the episode goes on, all True where it ended).
        """
        spec, E, n, S = self.spec, self.num_envs, self.spec.n_agents, self.spec.state_dim
        if len(actions) != n:
            raise ValueError(
                f"ReplayBuffer.add: actions must hold {n} tensors (one per agent), got {len(actions)}"
            )
        # Every input is checked before anything is written: a full ring's oldest row is overwritten.
        writes: list[tuple[torch.Tensor, torch.Tensor]] = []  # (storage [R, E, ...], row [E, ...])
        for i in range(n):
            d = spec.obs_dim(i)
            writes.append((self.obs[i], self._check(f"step.obs[{i}]", step.obs[i], (E, d))))
            next_obs = self._check(f"after.final_obs[{i}]", after.final_obs[i], (E, d))
            writes.append((self.next_obs[i], next_obs))
            shape = (E, *self.actions[i].shape[2:])
            writes.append((self.actions[i], self._check(f"actions[{i}]", actions[i], shape)))
        writes.append((self.state, self._check("step.state", step.state, (E, S))))
        writes.append((self.next_state, self._check("after.final_state", after.final_state, (E, S))))
        writes.append((self.reward, self._check("after.reward", after.reward, (E,))))
        terminated = self._check("after.terminated", after.terminated, (E,))
        truncated = self._check("after.truncated", after.truncated, (E,))
        writes.append((self.terminated, terminated))
        writes.append((self.truncated, truncated))
        if self.action_masks is not None:
            if step.action_masks is None or after.action_masks is None:
                raise ValueError("ReplayBuffer.add: the spec has action masks, step or after has none")
            ended = (terminated | truncated).to(self.device)
            for i in range(n):
                shape = (E, self.action_masks[i].shape[2])
                mask = self._check(f"step.action_masks[{i}]", step.action_masks[i], shape)
                nxt = self._check(f"after.action_masks[{i}]", after.action_masks[i], shape)
                writes.append((self.action_masks[i], mask))
                # The next masks are not observed where the episode ended: all True there.
                writes.append((self.next_action_masks[i], nxt.to(self.device) | ended[:, None]))
        if self.active_masks is not None:
            if step.active_masks is None:
                raise ValueError("ReplayBuffer.add: the spec has active masks, step has none")
            for i in range(n):
                alive = self._check(f"step.active_masks[{i}]", step.active_masks[i], (E,))
                writes.append((self.active_masks[i], alive))
        r = self._ptr
        for storage, value in writes:
            storage[r].copy_(value)
        self._ptr = (r + 1) % self.rows
        self._filled = min(self._filled + 1, self.rows)

    # ------------------------------------------------------------------ sampling

    def sample(self, batch_size: int) -> ReplaySample:
        """``batch_size`` n-step transitions drawn uniformly (with replacement) from those stored,
        with ``torch.randint`` from the global generator of the buffer's device."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"ReplayBuffer.sample: batch_size must be an integer >= 1, got {batch_size!r}"
            )
        stored = len(self)
        if stored == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty; add steps before sampling")
        if batch_size > stored:
            raise ValueError(
                f"ReplayBuffer.sample: the buffer holds {stored} transitions, "
                f"fewer than batch_size {batch_size}"
            )
        index = torch.randint(stored, (batch_size,), device=self.device)
        return self._gather(index)

    def _gather(self, index: torch.Tensor) -> ReplaySample:
        """The n-step transitions at ``index`` ``[B]`` int64 in ``[0, len)``, counted from the
        oldest stored row: transition ``j`` is env ``j % E`` of the ``j // E``-th oldest row."""
        E, R, n = self.num_envs, self.rows, self.n_step
        age = index // E  # [B] rows between the oldest stored row and the sampled one
        env = index % E  # [B]
        oldest = self._ptr if self._filled == R else 0
        row = (oldest + age) % R  # [B]

        # The window t .. t+n-1 as rows of the ring: [B, n].
        ahead = age[:, None] + self._window[None, :]  # rows after the oldest
        stored = ahead < self._filled  # never past the newest row
        rows = (oldest + ahead) % R
        envs = env[:, None].expand_as(rows)
        r = self.reward[rows, envs]
        ended = self.terminated[rows, envs] | self.truncated[rows, envs]
        # Step k is kept when it is stored and no episode ended at a step before it.
        ended_before = (ended.cumsum(1) - ended.long()) > 0
        keep = stored & ~ended_before  # [B, n], a prefix of each row (at least step 0)
        K = keep.sum(1)  # [B] steps summed, 1..n

        reward = (torch.where(keep, r, 0.0) * self._gamma_pow[:n]).sum(1)
        last = rows.gather(1, (K - 1)[:, None]).squeeze(1)  # [B] the row of step t+K-1
        discount = self._gamma_pow[K] * (~self.terminated[last, env]).float()

        def at(tensors, rows_):
            return None if tensors is None else tuple(t[rows_, env] for t in tensors)

        return ReplaySample(
            obs=at(self.obs, row),
            state=self.state[row, env],
            actions=at(self.actions, row),
            action_masks=at(self.action_masks, row),
            active_masks=at(self.active_masks, row),
            reward=reward,
            discount=discount,
            next_obs=at(self.next_obs, last),
            next_state=self.next_state[last, env],
            next_action_masks=at(self.next_action_masks, last),
            steps=K,
        )

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self, include_contents: bool = True) -> dict:
        """Everything to resume exactly: the layout, the ring position and (by default) the
        stored rows.

        With ``include_contents=False`` only the layout is saved and a buffer loaded from it is
        **empty**: the resumed run refills it with the steps it collects after the resume, so it
        does not reproduce an uninterrupted run. The checkpoint is then small.

        The tensors returned are views of the buffer's own storage, not copies (a copy of a large
        buffer would double its memory): save the dict before the next ``add``. Only the written
        rows are included while the ring is not yet full.
        """
        state: dict[str, Any] = {
            "format": REPLAY_STATE_FORMAT,
            "capacity": self.requested_capacity,
            "num_envs": self.num_envs,
            "rows": self.rows,
            "n_step": self.n_step,
            "gamma": self.gamma,
            "shapes": {name: list(t.shape[2:]) for name, t in self._fields().items()},
            "dtypes": {name: str(t.dtype) for name, t in self._fields().items()},
            "contents": None,
        }
        if include_contents:
            state["ptr"] = self._ptr
            state["filled"] = self._filled
            state["contents"] = {name: t[: self._filled] for name, t in self._fields().items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`'s output; the layout must match this buffer's
        (``ValueError`` naming what differs). ``n_step`` and ``gamma`` may differ: they are
        applied at sample time, the stored contents do not depend on them."""
        where = "ReplayBuffer.load_state_dict"
        if not isinstance(state, dict):
            raise ValueError(f"{where}: expected a dict, got {type(state).__name__}")
        if state.get("format") != REPLAY_STATE_FORMAT:
            raise ValueError(
                f"{where}: format {state.get('format')!r} is not {REPLAY_STATE_FORMAT}"
            )
        for key, mine in (("capacity", self.requested_capacity), ("num_envs", self.num_envs)):
            if state.get(key) != mine:
                raise ValueError(
                    f"{where}: {key} is {state.get(key)!r} in the checkpoint, {mine} here"
                )
        fields = self._fields()
        shapes = state.get("shapes", {})
        if set(shapes) != set(fields):
            missing = sorted(set(fields) - set(shapes))
            extra = sorted(set(shapes) - set(fields))
            raise ValueError(
                f"{where}: the stored fields differ from this buffer's "
                f"(missing: {missing}, unexpected: {extra}); agents or masks differ"
            )
        for name, t in fields.items():
            if list(shapes[name]) != list(t.shape[2:]):
                raise ValueError(
                    f"{where}: {name} has shape {list(shapes[name])} per transition "
                    f"in the checkpoint, {list(t.shape[2:])} here"
                )
            dtype = state.get("dtypes", {}).get(name)
            if dtype != str(t.dtype):
                raise ValueError(
                    f"{where}: {name} has dtype {dtype} in the checkpoint, {t.dtype} here"
                )
        contents = state.get("contents")
        if contents is None:
            self._ptr = 0
            self._filled = 0
            return
        ptr, filled = state.get("ptr"), state.get("filled")
        if not (isinstance(filled, int) and 0 <= filled <= self.rows):
            raise ValueError(f"{where}: filled must be in [0, {self.rows}], got {filled!r}")
        expected_ptr = filled % self.rows if filled < self.rows else None
        ptr_fits = isinstance(ptr, int) and 0 <= ptr < self.rows
        if not ptr_fits or (expected_ptr is not None and ptr != expected_ptr):
            raise ValueError(f"{where}: ptr {ptr!r} does not fit filled {filled}")
        if set(contents) != set(fields):
            raise ValueError(
                f"{where}: contents hold fields "
                f"{sorted(contents)}, expected {sorted(fields)}"
            )
        for name, t in fields.items():
            src = contents[name]
            want = (filled, self.num_envs, *t.shape[2:])
            if not isinstance(src, torch.Tensor) or tuple(src.shape) != want or src.dtype != t.dtype:
                is_tensor = isinstance(src, torch.Tensor)
                got = (tuple(src.shape), src.dtype) if is_tensor else type(src).__name__
                raise ValueError(
                    f"{where}: contents[{name!r}] must be {want} {t.dtype}, got {got}"
                )
        for name, t in fields.items():
            t[:filled].copy_(contents[name])
        self._ptr = ptr
        self._filled = filled
