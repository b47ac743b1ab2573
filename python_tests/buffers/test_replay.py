"""haml.buffers.replay: the off-policy ring against a plain Python loop.

- a random stream of vector-env steps (random terminations and truncations, heterogeneous agents)
  is fed to the buffer and kept in a list; every stored transition's n-step return, discount, K,
  next observation, state and masks are compared with a loop over that list, for n in {1, 3, 5},
  rings not yet full, full and wrapped, windows cut at episode ends and at the newest row;
- hand-computed cases: a time limit bootstraps (gamma^K), a terminal does not (0);
- ``sample`` draws ``torch.randint(len, (B,))`` from the global generator, counted from the oldest row;
- ``state_dict`` round trip (through ``torch.save`` / ``weights_only`` load): the same batches after
  reload with the same RNG state, the same ring after more steps; mismatches and bad input are
  ``ValueError`` naming what.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import pytest
import torch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from haml.buffers import ReplayBuffer, ReplaySample, bytes_per_transition
from haml.envs.base import EnvSpec, EnvStep

OBS_DIMS = (3, 5)
STATE_DIM = 4


def mixed_spec() -> EnvSpec:
    """Obs sizes 3 and 5, one Box(2) agent and one Discrete(4) agent, agents that die."""
    return EnvSpec(
        env="test",
        task="mixed",
        n_agents=2,
        obs_spaces=tuple(spaces.Box(-1.0, 1.0, (d,)) for d in OBS_DIMS),
        action_spaces=(spaces.Box(-1.0, 1.0, (2,)), spaces.Discrete(4)),
        state_space=spaces.Box(-1.0, 1.0, (STATE_DIM,)),
        active_masks=True,
    )


def masked_spec() -> EnvSpec:
    """Obs sizes 3 and 5, Discrete(3) and Discrete(4) agents with available-action masks."""
    return EnvSpec(
        env="test",
        task="masked",
        n_agents=2,
        obs_spaces=tuple(spaces.Box(-1.0, 1.0, (d,)) for d in OBS_DIMS),
        action_spaces=(spaces.Discrete(3), spaces.Discrete(4)),
        state_space=spaces.Box(-1.0, 1.0, (STATE_DIM,)),
        action_masks=True,
    )


@dataclass
class Step:
    """One vector-env step as the runner hands it to ``add``."""

    before: EnvStep
    actions: list[torch.Tensor]
    after: EnvStep


def _masks(spec: EnvSpec, E: int, g: torch.Generator) -> tuple[torch.Tensor, ...] | None:
    if not spec.action_masks:
        return None
    return tuple(torch.rand(E, int(s.n), generator=g) < 0.6 for s in spec.action_spaces)


def make_stream(
    spec: EnvSpec, E: int, steps: int, seed: int, p_term: float = 0.15, p_trunc: float = 0.15
) -> list[Step]:
    """``steps`` random vector-env steps; agent 0's first observation feature is the transition's
    id ``t·E + e`` (exact in float32), so a sampled transition can be found in the stream."""
    g = torch.Generator().manual_seed(seed)
    stream = []
    for t in range(steps):
        obs = [torch.randn(E, d, generator=g) for d in OBS_DIMS]
        obs[0][:, 0] = torch.arange(E, dtype=torch.float32) + t * E
        before = EnvStep(
            obs=tuple(obs),
            state=torch.randn(E, STATE_DIM, generator=g),
            reward=torch.zeros(E),
            terminated=torch.zeros(E, dtype=torch.bool),
            truncated=torch.zeros(E, dtype=torch.bool),
            final_obs=tuple(obs),
            final_state=torch.zeros(E, STATE_DIM),
            action_masks=_masks(spec, E, g),
            active_masks=(
                tuple(torch.rand(E, generator=g) < 0.8 for _ in range(spec.n_agents))
                if spec.active_masks
                else None
            ),
        )
        actions = []
        for space in spec.action_spaces:
            if isinstance(space, spaces.Discrete):
                actions.append(torch.randint(int(space.n), (E,), generator=g))
            else:
                actions.append(torch.randn(E, int(space.shape[0]), generator=g))
        u = torch.rand(E, generator=g)
        terminated = u < p_term
        truncated = (u >= p_term) & (u < p_term + p_trunc)
        after = EnvStep(
            obs=tuple(torch.randn(E, d, generator=g) for d in OBS_DIMS),
            state=torch.randn(E, STATE_DIM, generator=g),
            reward=torch.randn(E, generator=g),
            terminated=terminated,
            truncated=truncated,
            final_obs=tuple(torch.randn(E, d, generator=g) for d in OBS_DIMS),
            final_state=torch.randn(E, STATE_DIM, generator=g),
            action_masks=_masks(spec, E, g),
        )
        stream.append(Step(before, actions, after))
    return stream


def to_device(step: Step, device: torch.device) -> Step:
    def move(env_step: EnvStep) -> EnvStep:
        def tup(x):
            return None if x is None else tuple(t.to(device) for t in x)

        return EnvStep(
            obs=tup(env_step.obs),
            state=env_step.state.to(device),
            reward=env_step.reward.to(device),
            terminated=env_step.terminated.to(device),
            truncated=env_step.truncated.to(device),
            final_obs=tup(env_step.final_obs),
            final_state=env_step.final_state.to(device),
            action_masks=tup(env_step.action_masks),
            active_masks=tup(env_step.active_masks),
        )

    return Step(move(step.before), [a.to(device) for a in step.actions], move(step.after))


def fill(buffer: ReplayBuffer, stream: list[Step]) -> None:
    for step in stream:
        step = to_device(step, buffer.device)
        buffer.add(step.before, step.actions, step.after)


def reference(stream: list[Step], t: int, e: int, n: int, gamma: float) -> dict:
    """The n-step transition from step ``t`` of env ``e``, by a plain loop over the stream."""
    ret, K = 0.0, 0
    for k in range(n):
        if t + k >= len(stream):  # the newest step: nothing after it is stored
            break
        after = stream[t + k].after
        ret += gamma**k * float(after.reward[e])
        K = k + 1
        if bool(after.terminated[e]) or bool(after.truncated[e]):
            break
    last = stream[t + K - 1].after
    ended = bool(last.terminated[e]) or bool(last.truncated[e])
    return {
        "reward": ret,
        "discount": 0.0 if bool(last.terminated[e]) else gamma**K,
        "steps": K,
        "next_obs": [o[e] for o in last.final_obs],
        "next_state": last.final_state[e],
        "next_action_masks": (
            None if last.action_masks is None
            else [torch.ones_like(m[e]) if ended else m[e] for m in last.action_masks]
        ),
    }


def check_sample(sample: ReplaySample, stream: list[Step], E: int, n: int, gamma: float) -> None:
    """Every row of ``sample`` against :func:`reference`, found by its id."""
    ids = sample.obs[0][:, 0].cpu().long().tolist()
    for b, tid in enumerate(ids):
        t, e = divmod(tid, E)
        step, want = stream[t], reference(stream, t, e, n, gamma)
        for i in range(len(OBS_DIMS)):
            assert torch.equal(sample.obs[i][b].cpu(), step.before.obs[i][e])
            assert torch.equal(sample.actions[i][b].cpu(), step.actions[i][e])
            assert torch.equal(sample.next_obs[i][b].cpu(), want["next_obs"][i])
            assert sample.actions[i].dtype == step.actions[i].dtype
        assert torch.equal(sample.state[b].cpu(), step.before.state[e])
        assert torch.equal(sample.next_state[b].cpu(), want["next_state"])
        assert int(sample.steps[b]) == want["steps"], (t, e)
        assert float(sample.reward[b]) == pytest.approx(want["reward"], rel=1e-5, abs=1e-5), (t, e)
        assert float(sample.discount[b]) == pytest.approx(want["discount"], rel=1e-6, abs=1e-7), (t, e)
        if step.before.action_masks is None:
            assert sample.action_masks is None and sample.next_action_masks is None
        else:
            for i in range(len(OBS_DIMS)):
                assert torch.equal(sample.action_masks[i][b].cpu(), step.before.action_masks[i][e])
                assert torch.equal(sample.next_action_masks[i][b].cpu(), want["next_action_masks"][i])
        if step.before.active_masks is None:
            assert sample.active_masks is None
        else:
            for i in range(len(OBS_DIMS)):
                assert bool(sample.active_masks[i][b]) == bool(step.before.active_masks[i][e])


def stored_steps(buffer: ReplayBuffer, total: int) -> range:
    """The stream steps the ring still holds, oldest first."""
    return range(max(0, total - buffer.rows), total)


# ----------------------------------------------------------------------------- n-step vs a loop


@settings(max_examples=40, deadline=None)
@given(
    E=st.integers(1, 3),
    capacity=st.integers(1, 14),
    steps=st.integers(1, 16),
    n=st.sampled_from([1, 3, 5]),
    gamma=st.sampled_from([0.0, 0.5, 0.9, 1.0]),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_stored_transition_matches_the_loop(E, capacity, steps, n, gamma, masked, seed):
    """Every transition the ring holds (not full, full, wrapped several times), through the
    sampler's gather in the order oldest first."""
    spec = masked_spec() if masked else mixed_spec()
    stream = make_stream(spec, E, steps, seed)
    buffer = ReplayBuffer(spec, capacity, E, n, gamma)
    fill(buffer, stream)
    held = stored_steps(buffer, steps)
    assert len(buffer) == len(held) * E <= buffer.capacity
    everything = buffer._gather(torch.arange(len(buffer)))
    # Oldest first: index j is env j % E of the (j // E)-th oldest stored step.
    expected_ids = [t * E + e for t in held for e in range(E)]
    assert everything.obs[0][:, 0].long().tolist() == expected_ids
    check_sample(everything, stream, E, n, gamma)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_samples_match_the_loop_after_wrap_around(device, n):
    """A ring of 6 rows of 3 envs after 23 steps (wrapped 3 times), sampled through ``sample``."""
    E, gamma = 3, 0.95
    stream = make_stream(mixed_spec(), E, 23, seed=n)
    buffer = ReplayBuffer(mixed_spec(), 17, E, n, gamma, device=device)
    assert (buffer.rows, buffer.capacity) == (6, 18)
    fill(buffer, stream)
    assert len(buffer) == 18
    held = {t * E + e for t in stored_steps(buffer, 23) for e in range(E)}
    seen = set()
    for _ in range(10):
        sample = buffer.sample(18)
        assert sample.reward.device.type == torch.device(device).type
        ids = set(sample.obs[0][:, 0].long().tolist())
        assert ids <= held
        seen |= ids
        check_sample(sample, stream, E, n, gamma)
    assert len(seen) > 9  # draws spread over the ring


def test_windows_stop_at_the_newest_row_and_never_read_overwritten_rows():
    """No episode ends: the K of each stored step is the number of rows up to the newest, capped
    by n, both before the ring is full and once it has wrapped (the oldest row then follows the
    newest in ring order and must not be read into a window)."""
    E, n, gamma = 2, 5, 0.9
    stream = make_stream(mixed_spec(), E, 11, seed=0, p_term=0.0, p_trunc=0.0)
    buffer = ReplayBuffer(mixed_spec(), 8, E, n, gamma)  # 4 rows
    fill(buffer, stream[:3])
    s = buffer._gather(torch.arange(len(buffer)))
    assert s.steps.tolist() == [3, 3, 2, 2, 1, 1]
    assert s.discount.tolist() == pytest.approx([gamma**3] * 2 + [gamma**2] * 2 + [gamma] * 2)
    fill(buffer, stream[3:])  # 11 steps into 4 rows: the newest is step 10, at row 2
    s = buffer._gather(torch.arange(len(buffer)))
    assert s.obs[0][:, 0].long().tolist() == list(range(14, 22))
    assert s.steps.tolist() == [4, 4, 3, 3, 2, 2, 1, 1]
    newest = stream[10].after
    for b in (6, 7):  # the newest step bootstraps from its own true next observation
        assert torch.equal(s.next_obs[1][b], newest.final_obs[1][b - 6])
    check_sample(s, stream, E, n, gamma)


# ----------------------------------------------------------------------------- hand-computed


def scripted(rewards, terminated, truncated) -> list[Step]:
    """One env, the given per-step rewards and ends; other fields random."""
    stream = make_stream(mixed_spec(), 1, len(rewards), seed=1)
    for step, r, te, tr in zip(stream, rewards, terminated, truncated):
        step.after.reward = torch.tensor([float(r)])
        step.after.terminated = torch.tensor([bool(te)])
        step.after.truncated = torch.tensor([bool(tr)])
    return stream


def test_truncation_bootstraps_and_termination_does_not():
    g = 0.5
    # ep 1: r=1, r=2 (time limit) | ep 2: r=4, r=8 (terminal) | ep 3: r=16, r=32 (newest)
    stream = scripted([1, 2, 4, 8, 16, 32], [0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0])
    buffer = ReplayBuffer(mixed_spec(), 10, 1, 3, g)
    fill(buffer, stream)
    s = buffer._gather(torch.arange(6))
    assert s.steps.tolist() == [2, 1, 2, 1, 2, 1]
    assert s.reward.tolist() == pytest.approx([1 + g * 2, 2, 4 + g * 8, 8, 16 + g * 32, 32])
    assert s.discount.tolist() == pytest.approx([g**2, g, 0.0, 0.0, g**2, g])
    # The bootstrap reads the true final observation of the step that ended the window.
    for b, last in enumerate([1, 1, 3, 3, 5, 5]):
        assert torch.equal(s.next_state[b], stream[last].after.final_state[0])


def test_one_step_is_the_plain_td_target():
    stream = scripted([3, 5], [1, 0], [0, 0])
    buffer = ReplayBuffer(mixed_spec(), 4, 1, 1, 0.99)
    fill(buffer, stream)
    s = buffer._gather(torch.arange(2))
    assert s.reward.tolist() == [3.0, 5.0]
    assert s.discount.tolist() == pytest.approx([0.0, 0.99])
    assert s.steps.tolist() == [1, 1]


def test_next_masks_are_all_true_where_the_episode_ended():
    E = 4
    stream = make_stream(masked_spec(), E, 1, seed=3, p_term=0.0, p_trunc=0.0)
    after = stream[0].after
    after.terminated = torch.tensor([True, False, False, False])
    after.truncated = torch.tensor([False, True, False, False])
    after.action_masks = tuple(torch.zeros_like(m) for m in after.action_masks)
    buffer = ReplayBuffer(masked_spec(), 4, E, 1, 0.9)
    fill(buffer, stream)
    s = buffer._gather(torch.arange(E))
    for m in s.next_action_masks:
        assert m.all(dim=1).tolist() == [True, True, False, False]
        assert not m[2:].any()


# ----------------------------------------------------------------------------- sampling


def test_sample_is_randint_over_stored_transitions_from_the_global_generator():
    E = 3
    stream = make_stream(mixed_spec(), E, 9, seed=4)
    buffer = ReplayBuffer(mixed_spec(), 12, E, 3, 0.9)  # 4 rows, wrapped
    fill(buffer, stream)
    torch.manual_seed(7)
    index = torch.randint(len(buffer), (12,))
    torch.manual_seed(7)
    sample = buffer.sample(12)
    ids = [(9 - 4) * E + int(j) for j in index]  # the oldest stored step is 5
    assert sample.obs[0][:, 0].long().tolist() == ids
    assert buffer.sample(12).reward.shape == (12,)  # a batch may be as large as the buffer


def test_shapes_and_dtypes_of_a_sample():
    buffer = ReplayBuffer(mixed_spec(), 10, 2, 3, 0.9)
    fill(buffer, make_stream(mixed_spec(), 2, 4, seed=5))
    s = buffer.sample(6)
    assert [tuple(o.shape) for o in s.obs] == [(6, 3), (6, 5)]
    assert [tuple(o.shape) for o in s.next_obs] == [(6, 3), (6, 5)]
    assert [(tuple(a.shape), a.dtype) for a in s.actions] == [
        ((6, 2), torch.float32),
        ((6,), torch.int64),
    ]
    assert [(tuple(m.shape), m.dtype) for m in s.active_masks] == [((6,), torch.bool)] * 2
    assert s.action_masks is None and s.next_action_masks is None
    assert s.state.shape == s.next_state.shape == (6, STATE_DIM)
    assert s.reward.dtype == s.discount.dtype == torch.float32
    assert s.steps.dtype == torch.int64
    assert s.reward.shape == s.discount.shape == s.steps.shape == (6,)
    buffer = ReplayBuffer(masked_spec(), 10, 2, 3, 0.9)
    fill(buffer, make_stream(masked_spec(), 2, 4, seed=5))
    s = buffer.sample(6)
    assert [tuple(m.shape) for m in s.action_masks] == [(6, 3), (6, 4)]
    assert [tuple(m.shape) for m in s.next_action_masks] == [(6, 3), (6, 4)]
    assert s.active_masks is None


# ----------------------------------------------------------------------------- memory


def test_memory_per_transition():
    # mixed: 8·(3+5+4) o,o',s,s' + 4·2 + 8 actions + 2 alive + 6 = 120
    assert bytes_per_transition(mixed_spec()) == 8 * 12 + 8 + 8 + 2 + 6 == 120
    # masked: 8·12 + 8 + 8 actions + 2·(3+4) masks at o and o' + 6 = 132
    assert bytes_per_transition(masked_spec()) == 8 * 12 + 16 + 14 + 6 == 132
    for spec in (mixed_spec(), masked_spec()):
        buffer = ReplayBuffer(spec, 10, 3, 3, 0.9)
        assert buffer.capacity == 12
        assert buffer.nbytes == buffer.capacity * bytes_per_transition(spec)


# ----------------------------------------------------------------------------- checkpoints


def roundtrip(state: dict) -> dict:
    """Through a file as a checkpoint writes and reads it (``weights_only``)."""
    f = io.BytesIO()
    torch.save(state, f)
    f.seek(0)
    return torch.load(f, weights_only=True)


@pytest.mark.parametrize("steps", [3, 11])  # not full, wrapped
@pytest.mark.parametrize("masked", [False, True])
def test_state_dict_round_trip_is_exact(device, steps, masked):
    spec, E, n = (masked_spec() if masked else mixed_spec()), 2, 3
    stream = make_stream(spec, E, steps + 4, seed=steps)
    buffer = ReplayBuffer(spec, 9, E, n, 0.9, device=device)  # 5 rows
    fill(buffer, stream[:steps])
    state = roundtrip(buffer.state_dict())
    resumed = ReplayBuffer(spec, 9, E, n, 0.9, device=device)
    resumed.load_state_dict(state)
    assert len(resumed) == len(buffer)

    def same(a: ReplaySample, b: ReplaySample) -> None:
        for name in a.__dataclass_fields__:
            x, y = getattr(a, name), getattr(b, name)
            if isinstance(x, tuple):
                assert all(torch.equal(u, v) for u, v in zip(x, y)), name
            else:
                assert (x is None and y is None) or torch.equal(x, y), name

    for _ in range(2):  # the same batches from the same RNG state, also after more steps
        cpu_rng = torch.random.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
        a = buffer.sample(6)
        torch.random.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng)
        same(a, resumed.sample(6))
        fill(buffer, stream[steps:])
        fill(resumed, stream[steps:])
    assert len(buffer) == len(resumed) == 10


def test_state_dict_keeps_only_written_rows_until_full():
    buffer = ReplayBuffer(mixed_spec(), 10, 2, 1, 0.9)
    fill(buffer, make_stream(mixed_spec(), 2, 2, seed=0))
    assert buffer.state_dict()["contents"]["reward"].shape == (2, 2)


def test_state_dict_without_contents_resumes_empty():
    buffer = ReplayBuffer(mixed_spec(), 10, 2, 1, 0.9)
    fill(buffer, make_stream(mixed_spec(), 2, 4, seed=0))
    state = roundtrip(buffer.state_dict(include_contents=False))
    assert state["contents"] is None
    buffer.load_state_dict(state)
    assert len(buffer) == 0
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(1)
    fill(buffer, make_stream(mixed_spec(), 2, 1, seed=1))
    assert len(buffer) == 2


def test_load_state_dict_refuses_a_different_layout():
    buffer = ReplayBuffer(mixed_spec(), 10, 2, 3, 0.9)
    fill(buffer, make_stream(mixed_spec(), 2, 3, seed=0))
    state = buffer.state_dict()
    with pytest.raises(ValueError, match="capacity is 10 in the checkpoint, 12 here"):
        ReplayBuffer(mixed_spec(), 12, 2, 3, 0.9).load_state_dict(state)
    with pytest.raises(ValueError, match="num_envs is 2 in the checkpoint, 5 here"):
        ReplayBuffer(mixed_spec(), 10, 5, 3, 0.9).load_state_dict(state)
    with pytest.raises(ValueError, match="fields differ"):
        ReplayBuffer(masked_spec(), 10, 2, 3, 0.9).load_state_dict(state)
    obs_spaces = (spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (6,)))
    bigger = EnvSpec(**{**mixed_spec().__dict__, "obs_spaces": obs_spaces})
    message = r"obs\.1 has shape \[5\] per transition in the checkpoint, \[6\] here"
    with pytest.raises(ValueError, match=message):
        ReplayBuffer(bigger, 10, 2, 3, 0.9).load_state_dict(state)
    target = ReplayBuffer(mixed_spec(), 10, 2, 3, 0.9)
    broken = {**state, "contents": {**state["contents"], "reward": torch.zeros(2, 2)}}
    with pytest.raises(ValueError, match=r"contents\['reward'\] must be \(3, 2\)"):
        target.load_state_dict(broken)
    assert len(target) == 0  # nothing loaded after an error
    with pytest.raises(ValueError, match="filled"):
        target.load_state_dict({**state, "filled": 9})
    # n_step and gamma apply at sample time: a buffer with other values loads the contents.
    other = ReplayBuffer(mixed_spec(), 10, 2, 1, 0.5)
    other.load_state_dict(state)
    assert len(other) == 6


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": 0}, "capacity must be an integer >= 1, got 0"),
        ({"capacity": 2.5}, "capacity"),
        ({"num_envs": 0}, "num_envs must be an integer >= 1, got 0"),
        ({"n_step": 0}, "n_step must be an integer >= 1, got 0"),
        ({"gamma": 1.5}, r"gamma must be a number in \[0, 1\], got 1.5"),
        ({"gamma": -0.1}, "gamma"),
        ({"gamma": math.nan}, "gamma"),
    ],
)
def test_bad_constructor_arguments_name_the_argument(kwargs, match):
    args = {"spec": mixed_spec(), "capacity": 10, "num_envs": 2, "n_step": 3, "gamma": 0.9, **kwargs}
    with pytest.raises(ValueError, match=match):
        ReplayBuffer(**args)


def test_action_masks_need_discrete_agents():
    spec = EnvSpec(**{**mixed_spec().__dict__, "action_masks": True})
    with pytest.raises(ValueError, match="action_masks needs Discrete action spaces, agent 0"):
        ReplayBuffer(spec, 10, 2, 3, 0.9)


def test_bad_sample_arguments():
    buffer = ReplayBuffer(mixed_spec(), 10, 2, 3, 0.9)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        buffer.sample(0)
    with pytest.raises(ValueError, match="the buffer is empty"):
        buffer.sample(1)
    fill(buffer, make_stream(mixed_spec(), 2, 2, seed=0))
    with pytest.raises(ValueError, match="the buffer holds 4 transitions, fewer than batch_size 5"):
        buffer.sample(5)


def test_bad_add_input_names_the_field_and_writes_nothing():
    E = 2
    buffer = ReplayBuffer(mixed_spec(), 4, E, 1, 0.9)  # 2 rows
    stream = make_stream(mixed_spec(), E, 3, seed=0)
    fill(buffer, stream[:2])  # full: the next add overwrites the oldest row
    before = buffer._gather(torch.arange(len(buffer)))
    bad = stream[2]
    with pytest.raises(ValueError, match=r"actions must hold 2 tensors"):
        buffer.add(bad.before, bad.actions[:1], bad.after)
    with pytest.raises(ValueError, match=r"actions\[1\] must have shape \(2,\), got \(2, 1\)"):
        buffer.add(bad.before, [bad.actions[0], bad.actions[1][:, None]], bad.after)
    final_obs = (bad.after.final_obs[0], torch.zeros(E, 4))
    wrong_obs = EnvStep(**{**bad.after.__dict__, "final_obs": final_obs})
    with pytest.raises(ValueError, match=r"after.final_obs\[1\] must have shape \(2, 5\)"):
        buffer.add(bad.before, bad.actions, wrong_obs)
    after = buffer._gather(torch.arange(len(buffer)))
    assert torch.equal(before.obs[1], after.obs[1]) and torch.equal(before.reward, after.reward)
