"""haml.buffers.layout: a rollout ``[T, E, ...]`` as the samples of an update, and back.

- ``FlatLayout``: sample ``n = t·E + e``;
- ``ChunkLayout(L)``: chunk ``c = k·E + e`` holds steps ``kL .. kL+L-1`` of env ``e``, samples are
  time-major over chunks (``n = j·C + c``); ``chunk_starts`` gives each chunk's first step (the
  stored hidden state it restarts from), in the same chunk order; ``concat`` puts several agents'
  chunks side by side, still time-major; ``select_units`` picks whole chunks;
- ``ActorBatch.subset`` / ``units`` / ``view`` on top of them: a minibatch of whole chunks reads the
  same distribution as the full batch.
"""

from __future__ import annotations

import math

import pytest
import torch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from haml.algorithms.base import ActorBatch, Sequences
from haml.buffers.layout import ChunkLayout, FlatLayout, select_units
from haml.models.recurrent import GRUPolicy, SequenceView


@st.composite
def rollouts(draw, trailing: bool = True):
    """``(x [T, E, *rest], L)`` with T a multiple of L; values encode (t, e, rest) uniquely."""
    L = draw(st.integers(1, 5))
    K = draw(st.integers(1, 4))
    E = draw(st.integers(1, 4))
    rest = tuple(draw(st.lists(st.integers(1, 3), max_size=2))) if trailing else ()
    T = K * L
    x = torch.arange(T * E * math.prod(rest), dtype=torch.float64)
    return x.reshape(T, E, *rest), L


FAST = settings(max_examples=60, deadline=None)


# -- ChunkLayout ----------------------------------------------------------------------------------


@FAST
@given(rollouts())
def test_chunk_layout_round_trip(case):
    x, L = case
    layout = ChunkLayout(L)
    T, E = x.shape[:2]
    samples = layout.to_samples(x)
    assert samples.shape == (T * E, *x.shape[2:])
    assert torch.equal(layout.from_samples(samples, T, E), x)


@FAST
@given(rollouts())
def test_chunk_samples_are_time_major_over_chunks_of_consecutive_steps(case):
    x, L = case
    T, E = x.shape[:2]
    C = (T // L) * E
    samples = ChunkLayout(L).to_samples(x)
    for j in range(L):
        for k in range(T // L):
            for e in range(E):
                c = k * E + e
                assert torch.equal(samples[j * C + c], x[k * L + j, e])


@FAST
@given(rollouts())
def test_chunk_starts_picks_steps_0_L_2L(case):
    x, L = case
    T, E = x.shape[:2]
    layout = ChunkLayout(L)
    starts = layout.chunk_starts(x)
    assert starts.shape == ((T // L) * E, *x.shape[2:])
    for k in range(T // L):
        for e in range(E):
            assert torch.equal(starts[k * E + e], x[k * L, e])
    # The same chunk order as the samples: chunk c's first sample is its stored start.
    C = starts.shape[0]
    assert torch.equal(layout.to_samples(x).view(L, C, *x.shape[2:])[0], starts)


@FAST
@given(rollouts(trailing=False), st.integers(1, 3))
def test_concat_keeps_each_agents_chunks_time_major(case, n_agents):
    x, L = case
    layout = ChunkLayout(L)
    parts_rollout = [x + 1000 * i for i in range(n_agents)]
    parts = [layout.to_samples(p) for p in parts_rollout]
    C = parts[0].shape[0] // L
    joined = layout.concat(parts)
    assert joined.shape == (n_agents * L * C,)
    grid = joined.view(L, n_agents * C)
    for i, p in enumerate(parts):
        # Agent i's chunks are columns i·C .. (i+1)·C-1 of the [L, n·C] view, each unchanged.
        assert torch.equal(grid[:, i * C : (i + 1) * C], p.view(L, C))
    # The runner concatenates the agents' chunk starts with torch.cat: the orders agree.
    starts = torch.cat([layout.chunk_starts(p) for p in parts_rollout], 0)
    assert torch.equal(grid[0], starts)


@FAST
@given(rollouts(), st.data())
def test_select_units_equals_indexing_the_L_by_C_view(case, data):
    x, L = case
    samples = ChunkLayout(L).to_samples(x)
    C = samples.shape[0] // L
    idx = torch.tensor(data.draw(st.lists(st.integers(0, C - 1), min_size=1, max_size=C, unique=True)))
    got = select_units(samples, idx, L)
    rest = samples.shape[1:]
    assert got.shape == (L * idx.numel(), *rest)
    assert torch.equal(got.view(L, idx.numel(), *rest), samples.view(L, C, *rest)[:, idx])


def test_select_units_of_length_one_is_plain_indexing():
    x = torch.arange(12.0).view(6, 2)
    idx = torch.tensor([4, 0, 3])
    assert torch.equal(select_units(x, idx, 1), x[idx])


@pytest.mark.parametrize("T,L", [(10, 4), (3, 2), (5, 10)])
def test_a_rollout_not_divisible_by_the_chunk_length_names_train_chunk_length(T, L):
    layout = ChunkLayout(L)
    x = torch.zeros(T, 2, 3)
    with pytest.raises(ValueError, match="train.chunk_length") as err:
        layout.to_samples(x)
    assert f"train.rollout_length={T}" in str(err.value)
    with pytest.raises(ValueError, match="train.chunk_length"):
        layout.chunk_starts(x)


def test_chunk_layout_of_the_whole_rollout_and_of_length_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 2, generator=g)
    # L = T: one chunk per env, samples [T, E] time-major = the flat layout.
    assert torch.equal(ChunkLayout(6).to_samples(x), FlatLayout().to_samples(x))
    assert torch.equal(ChunkLayout(6).chunk_starts(x), x[0])
    # L = 1: every step its own chunk, again sample t·E + e.
    assert torch.equal(ChunkLayout(1).to_samples(x), FlatLayout().to_samples(x))
    # In between the orders differ (the test above can fail).
    assert not torch.equal(ChunkLayout(2).to_samples(x), FlatLayout().to_samples(x))


# -- FlatLayout ---------------------------------------------------------------------------------


@FAST
@given(rollouts())
def test_flat_layout_round_trip_and_order(case):
    x, _ = case
    T, E = x.shape[:2]
    layout = FlatLayout()
    assert layout.length == 1
    samples = layout.to_samples(x)
    assert torch.equal(layout.from_samples(samples, T, E), x)
    for t in range(T):
        for e in range(E):
            assert torch.equal(samples[t * E + e], x[t, e])
    assert torch.equal(layout.chunk_starts(x), samples)


def test_flat_concat_puts_agents_one_after_the_other():
    layout = FlatLayout()
    a, b = torch.arange(4.0), torch.arange(4.0, 10.0)
    assert layout.concat([a]) is a
    assert torch.equal(layout.concat([a, b]), torch.arange(10.0))


def test_per_sample_results_map_back_to_the_rollout():
    """What the runner does with the HA factor: compute per sample, return to ``[T, E]``."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, generator=g)
    for layout in (FlatLayout(), ChunkLayout(4), ChunkLayout(2)):
        back = layout.from_samples(torch.exp(layout.to_samples(x)), 8, 3)
        torch.testing.assert_close(back, torch.exp(x))


# -- ActorBatch on chunks -------------------------------------------------------------------------


def _chunk_batch(L: int = 3, K: int = 2, E: int = 4, seed: int = 0):
    """An ActorBatch of a GRU policy over ``C = K·E`` chunks, built as the runner builds one."""
    g = torch.Generator().manual_seed(seed)
    T = K * L
    policy = GRUPolicy(5, spaces.Discrete(3), hidden=(6,))
    with torch.no_grad():
        for p in policy.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    layout = ChunkLayout(L)
    obs = torch.randn(T, E, 5, generator=g)
    states = torch.randn(T, E, 1, 6, generator=g)
    starts = torch.rand(T, E, generator=g) < 0.3
    mask = torch.rand(T, E, 3, generator=g) < 0.7
    mask[..., 2] = True
    actions = torch.randint(0, 3, (T, E), generator=g)
    per_step = torch.randn(T, E, generator=g)
    s = layout.to_samples
    batch = ActorBatch(
        obs=s(obs), actions=s(actions), logp_old=s(per_step), advantages=s(per_step + 1),
        factor=s(per_step + 2), mask=s(per_step > 0), action_mask=s(mask),
        sequences=Sequences(L, layout.chunk_starts(states), s(starts)),
    )
    return policy, batch


def test_units_are_chunks_for_a_recurrent_batch_and_samples_otherwise():
    policy, batch = _chunk_batch(L=3, K=2, E=4)
    assert batch.units == 8
    flat = ActorBatch(batch.obs, batch.actions, batch.logp_old, batch.advantages, batch.factor)
    assert flat.units == 24
    assert flat.view(policy) is policy
    assert isinstance(batch.view(policy), SequenceView)


def test_a_minibatch_of_chunks_reads_the_same_distribution_as_the_full_batch():
    L = 3
    policy, batch = _chunk_batch(L=L)
    idx = torch.tensor([5, 0, 6])
    sub = batch.subset(idx)
    assert sub.units == 3 and sub.obs.shape[0] == L * 3
    for name in ("obs", "actions", "logp_old", "advantages", "factor", "mask", "action_mask"):
        full = getattr(batch, name)
        expected = full.view(L, -1, *full.shape[1:])[:, idx].flatten(0, 1)
        assert torch.equal(getattr(sub, name), expected), name
    assert torch.equal(sub.sequences.h0, batch.sequences.h0[idx])
    with torch.no_grad():
        whole = batch.view(policy).log_prob(batch.obs, batch.actions, batch.action_mask)
        part = sub.view(policy).log_prob(sub.obs, sub.actions, sub.action_mask)
    torch.testing.assert_close(part, whole.view(L, -1)[:, idx].flatten())
    # Mis-pairing chunks with another chunk's stored state changes the result (the test can fail).
    wrong = Sequences(L, batch.sequences.h0[idx.roll(1)], sub.sequences.starts)
    with torch.no_grad():
        other = SequenceView(policy, wrong.h0, wrong.starts, L).log_prob(
            sub.obs, sub.actions, sub.action_mask
        )
    assert not torch.allclose(other, part)
