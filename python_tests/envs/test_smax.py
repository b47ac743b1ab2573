"""haml.envs.smax: spaces, masks, episode ends, win rate, seeding and exact resume of SMAX maps.

JAX compiles one program per (task, options, number of envs): the tests share two of them
(3m with the default options and 3m with a 3-step limit and agent ids, both with E envs).
"""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("jaxmarl")

from haml.envs import make_env, task_names  # noqa: E402
from haml.envs import smax  # noqa: E402
from haml.envs.smax import STOP_ACTION, Options, jax_random_steps_per_second, make_vector_env  # noqa: E402

E = 8
RANDOM_STEPS = 300
N_ALLIES = 3  # 3m: 3 marines a side
UNIT_FEATURES = 10  # world_state: per unit health, x, y, cooldown, 6 unit-type bits
SHORT = Options(episode_limit=3, agent_id=True)


def random_available(step, generator):
    return [torch.multinomial(mask.float(), 1, generator=generator).squeeze(1) for mask in step.action_masks]


def stop_everyone(env):
    return [torch.full((env.num_envs,), STOP_ACTION, dtype=torch.int64) for _ in range(env.spec.n_agents)]


def run(env, steps, seed, generator_seed=0, start=None):
    """``steps`` random available actions from ``reset(seed)`` (or from ``start``); every EnvStep."""
    generator = torch.Generator().manual_seed(generator_seed)
    step = env.reset(seed=seed) if start is None else start
    out = []
    for _ in range(steps):
        step = env.step(random_available(step, generator))
        out.append(step)
    return out


def assert_same_steps(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for name in ("state", "reward", "terminated", "truncated", "final_state"):
            assert torch.equal(getattr(x, name), getattr(y, name)), name
        for name in ("obs", "final_obs", "action_masks", "active_masks"):
            assert all(torch.equal(p, q) for p, q in zip(getattr(x, name), getattr(y, name))), name
        assert x.episodes == y.episodes


@pytest.fixture(scope="module")
def env3m():
    env = make_vector_env("3m", E, Options(), "cpu", seed=0)
    yield env
    env.close()


@pytest.fixture(scope="module")
def long_run(env3m):
    """RANDOM_STEPS steps of random available actions in E envs of 3m, seed 0."""
    first = env3m.reset(seed=0)
    return first, run(env3m, RANDOM_STEPS, seed=None, start=first)


@pytest.fixture(scope="module")
def short_env():
    env = make_vector_env("3m", E, SHORT, "cpu", seed=5)
    yield env
    env.close()


# -- tasks, options, spaces -------------------------------------------------------------------------


def test_tasks_are_jaxmarls_maps_and_listed_without_jax():
    from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO

    assert list(smax.TASKS) == list(MAP_NAME_TO_SCENARIO)
    code = (
        "import sys, haml, haml.envs.smax; from haml.envs import task_names, options_class;"
        "assert task_names('smax')[:3] == ['3m', '2s3z', '25m'];"
        "assert options_class('smax').__name__ == 'Options';"
        "jax = [m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'jaxmarl'))];"
        "assert not jax, jax"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert task_names("smax") == list(smax.TASKS)


@pytest.mark.parametrize(
    "task, n_agents, obs_dim, state_dim, n_actions",
    [
        # unit_list obs: 13 features per other unit + 10 own; state: 12 per unit; 5 + n_enemies actions
        ("3m", 3, 13 * 2 + 13 * 3 + 10, 12 * 6, 8),
        ("2s3z", 5, 13 * 4 + 13 * 5 + 10, 12 * 10, 10),
    ],
)
def test_spec(task, n_agents, obs_dim, state_dim, n_actions):
    env = make_env("smax", task, num_envs=2)
    spec = env.spec
    assert (spec.env, spec.task, spec.n_agents) == ("smax", task, n_agents)
    assert spec.action_masks and spec.active_masks and spec.episode_limit == 100
    assert [space.shape for space in spec.obs_spaces] == [(obs_dim,)] * n_agents
    assert all(space.dtype == np.float32 for space in spec.obs_spaces)
    assert [space.n for space in spec.action_spaces] == [n_actions] * n_agents
    assert spec.state_space.shape == (state_dim,) and spec.state_space.dtype == np.float32
    with_ids = make_env("smax", task, num_envs=2, agent_id=True, episode_limit=7)
    assert with_ids.spec.obs_dim(0) == obs_dim + n_agents and with_ids.spec.episode_limit == 7
    conic = make_env("smax", task, num_envs=2, observation_type="conic")
    assert conic.spec.obs_dim(0) == 13 * 32 * 2 + 10  # 32 sectors of 2 units, then its own


def test_unknown_task_and_option_errors():
    with pytest.raises(ValueError, match=r"unknown SMAX task '4m'; known maps: 3m, 2s3z, .*5m_vs_6m"):
        make_env("smax", "4m")
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'enemy_ai'.*valid options: agent_id"):
        make_env("smax", "3m", enemy_ai="scripted")
    with pytest.raises(TypeError, match="option 'attack_mode' must be one of"):
        make_env("smax", "3m", attack_mode="weakest")
    with pytest.raises(ValueError, match="episode_limit must be an integer >= 1"):
        Options(episode_limit=0)
    with pytest.raises(ValueError, match="observation_type must be one of"):
        Options(observation_type="image")
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1"):
        make_vector_env("3m", 0)


# -- reset and step -------------------------------------------------------------------------------


def test_reset_and_step_shapes_and_dtypes(env3m, long_run):
    first, steps = long_run
    spec = env3m.spec
    for step in (first, steps[0], steps[-1]):
        assert len(step.obs) == len(step.final_obs) == spec.n_agents
        for i in range(spec.n_agents):
            for tensor in (step.obs[i], step.final_obs[i]):
                assert tensor.shape == (E, spec.obs_dim(i)) and tensor.dtype == torch.float32
            assert step.action_masks[i].shape == (E, spec.action_spaces[i].n)
            assert step.action_masks[i].dtype == torch.bool
            assert step.active_masks[i].shape == (E,) and step.active_masks[i].dtype == torch.bool
        for tensor in (step.state, step.final_state):
            assert tensor.shape == (E, spec.state_dim) and tensor.dtype == torch.float32
        assert step.reward.shape == (E,) and step.reward.dtype == torch.float32
        assert step.terminated.dtype == step.truncated.dtype == torch.bool
    # after reset: nothing ended, everyone alive, final_* = obs
    assert not first.terminated.any() and not first.truncated.any() and not first.reward.any()
    assert all(bool(alive.all()) for alive in first.active_masks)
    assert all(torch.equal(a, b) for a, b in zip(first.obs, first.final_obs))
    # observations within the declared bounds
    for step in steps[::25]:
        for obs in step.obs:
            assert float(obs.min()) >= -1.0 and float(obs.max()) <= 1.0


def test_masks_follow_deaths(long_run):
    first, steps = long_run
    assert first.action_masks[0][:, :STOP_ACTION + 1].all()  # moves and stop at the start
    saw_death = saw_attack = False
    for step in steps:
        for i in range(N_ALLIES):
            alive, mask, obs = step.active_masks[i], step.action_masks[i], step.obs[i]
            assert mask[:, STOP_ACTION].all()  # stop is always available
            dead = ~alive
            if dead.any():
                saw_death = True
                only_stop = torch.zeros(mask.shape[1], dtype=torch.bool)
                only_stop[STOP_ACTION] = True
                assert (mask[dead] == only_stop).all()
                assert not obs[dead].any()  # a dead unit observes nothing
                health = step.state[:, i * UNIT_FEATURES]
                assert not health[dead].any() and (health[alive] > 0).all()
            saw_attack |= bool(mask[alive, STOP_ACTION + 1 :].any())
    assert saw_death and saw_attack


def test_episode_ends_terminated_when_a_side_is_eliminated(long_run):
    _, steps = long_run
    ended = 0
    for step in steps:
        assert not (step.terminated & step.truncated).any()
        for e in torch.nonzero(step.terminated).flatten().tolist():
            ended += 1
            health = step.final_state[e, : 6 * UNIT_FEATURES : UNIT_FEATURES]
            allies_dead, enemies_dead = not health[:N_ALLIES].any(), not health[N_ALLIES:].any()
            assert allies_dead or enemies_dead
            assert not torch.equal(step.final_state[e], step.state[e])  # reset: a new episode
            assert not all(torch.equal(step.final_obs[i][e], step.obs[i][e]) for i in range(N_ALLIES))
            assert all(bool(alive[e]) for alive in step.active_masks)  # fresh: everyone alive
        going_on = ~(step.terminated | step.truncated)
        assert all(torch.equal(o[going_on], f[going_on]) for o, f in zip(step.obs, step.final_obs))
        assert torch.equal(step.state[going_on], step.final_state[going_on])
        assert len(step.episodes) == int((step.terminated | step.truncated).sum())
        ended_envs = torch.nonzero(step.terminated | step.truncated).flatten().tolist()
        assert [episode.env for episode in step.episodes] == ended_envs
        for episode in step.episodes:
            assert episode.metrics.keys() == {"win"} and episode.metrics["win"] in (0.0, 1.0)
            assert 1 <= episode.length <= 100 and 0.0 <= episode.ret <= 2.0 + 1e-5
    assert ended >= 20  # random marines die fast (~20-step episodes)


def test_short_limit_truncates_and_agent_id(short_env):
    steps = run(short_env, 7, seed=3)
    for t, step in enumerate(steps, start=1):
        assert not step.terminated.any()  # the sides start 16 apart: nobody dies in 3 steps
        assert bool(step.truncated.all()) == (t % 3 == 0) and bool(step.truncated.any()) == (t % 3 == 0)
        if t % 3 == 0:
            assert [ep.length for ep in step.episodes] == [3] * E
            assert not torch.equal(step.final_state, step.state)
        else:
            assert step.episodes == []
        for i, obs in enumerate(step.obs):
            ids = obs[:, -N_ALLIES:]
            assert torch.equal(ids, torch.eye(N_ALLIES)[i].expand(E, N_ALLIES))
            assert torch.equal(step.final_obs[i][:, -N_ALLIES:], ids)


def _put_on_the_wall(env, units):
    """Move ``units`` (indices into allies then enemies) of every env just off the map's west
    edge: SMAX clamps a moving unit to the map and kills one that touches its edge, so whatever
    they do, they die in the next step."""
    state = env.state_dict()
    positions = state["sim_state"][".state.unit_positions"]
    positions[:, units, 0] = -1.0
    env.load_state_dict(state)


def test_win_and_draw(env3m):
    env3m.reset(seed=11)
    _put_on_the_wall(env3m, [3, 4, 5])  # every enemy
    step = env3m.step(stop_everyone(env3m))
    assert step.terminated.all() and not step.truncated.any()
    # reward: the enemies' whole health (1) + the won-battle bonus (1)
    assert torch.allclose(step.reward, torch.full((E,), 2.0))
    assert [ep.metrics["win"] for ep in step.episodes] == [1.0] * E

    env3m.reset(seed=12)
    _put_on_the_wall(env3m, [0, 1, 2, 3, 4, 5])  # both sides die at once: a draw, no bonus
    step = env3m.step(stop_everyone(env3m))
    assert step.terminated.all()
    assert torch.allclose(step.reward, torch.ones(E))
    assert [ep.metrics["win"] for ep in step.episodes] == [0.0] * E


# -- actions --------------------------------------------------------------------------------------


def test_invalid_actions_raise_naming_the_agent(env3m):
    step = env3m.reset(seed=1)
    good = stop_everyone(env3m)
    with pytest.raises(ValueError, match=r"one tensor per agent \(3 agents\), got a list of length 2"):
        env3m.step(good[:2])
    with pytest.raises(ValueError, match=r"actions\[1\] \(agent 1 \(ally_1\)\) must be an integer tensor"):
        env3m.step([good[0], good[1].float(), good[2]])
    with pytest.raises(ValueError, match=r"actions\[2\] \(agent 2 \(ally_2\)\) must have shape \[8\]"):
        env3m.step([good[0], good[1], good[2][:, None]])
    with pytest.raises(ValueError, match=r"agent 0 \(ally_0\) in env 0 chose action 8, outside 0..7"):
        env3m.step([torch.full((E,), 8), good[1], good[2]])
    assert not step.action_masks[1][3, 5:].any()  # nobody in range at the start
    attack = good[1].clone()
    attack[3] = 5
    with pytest.raises(
        ValueError,
        match=r"agent 1 \(ally_1\) in env 3 chose unavailable action 5 \(attack enemy 0\); "
        r"available: 0 \(move north\), 1 \(move east\), 2 \(move south\), 3 \(move west\), 4 \(stop\)",
    ):
        env3m.step([good[0], attack, good[2]])
    # nothing was stepped: the same observation is still current
    assert torch.equal(env3m.current().state, step.state)


def test_dead_agents_may_only_stop(env3m):
    env3m.reset(seed=2)
    _put_on_the_wall(env3m, [1])  # ally 1 dies, the rest fight on
    step = env3m.step(stop_everyone(env3m))
    assert not step.active_masks[1].any() and step.active_masks[0].all()
    moves = stop_everyone(env3m)
    moves[1] = torch.zeros(E, dtype=torch.int64)
    only_stop = r"agent 1 \(ally_1\) in env 0 chose unavailable action 0 .*available: 4 \(stop\)$"
    with pytest.raises(ValueError, match=only_stop):
        env3m.step(moves)


# -- seeding and resume ---------------------------------------------------------------------------


def test_same_seed_same_trajectory_different_seed_differs(env3m, long_run):
    _, steps = long_run
    twin = make_vector_env("3m", E, Options(), "cpu")
    try:
        assert_same_steps(run(twin, 40, seed=0), steps[:40])
        other = run(twin, 40, seed=1)
        assert not torch.equal(other[0].state, steps[0].state)
    finally:
        twin.close()
    # env e starts from seed + e: env 1 of seed 0 is env 0 of seed 1
    assert torch.equal(env3m.reset(seed=1).state[0], env3m.reset(seed=0).state[1])


def test_state_dict_round_trip_reproduces_the_continuation(env3m):
    run(env3m, 25, seed=4)
    buffer = io.BytesIO()
    torch.save(env3m.state_dict(), buffer)
    now = env3m.current()
    continued = run(env3m, 60, seed=None, generator_seed=9, start=now)

    fresh = make_vector_env("3m", E, Options(), "cpu")
    try:
        buffer.seek(0)
        fresh.load_state_dict(torch.load(buffer, weights_only=True))
        resumed_now = fresh.current()
        assert torch.equal(resumed_now.state, now.state)
        assert all(torch.equal(a, b) for a, b in zip(resumed_now.action_masks, now.action_masks))
        resumed = run(fresh, 60, seed=None, generator_seed=9, start=resumed_now)
        assert_same_steps(resumed, continued)
        assert any(step.episodes for step in resumed)  # episode bookkeeping carried over too
    finally:
        fresh.close()
    with pytest.raises(ValueError, match="state dict is for options="):
        make_vector_env("3m", E, SHORT).load_state_dict(env3m.state_dict())
    with pytest.raises(ValueError, match="state dict is for num_envs=8"):
        make_vector_env("3m", 2).load_state_dict(env3m.state_dict())


def test_jax_only_stepping_measures_steps_per_second():
    rate = jax_random_steps_per_second("3m", E, 20, seed=0)
    assert rate > 0 and np.isfinite(rate)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        jax_random_steps_per_second("3m", E, 0)
