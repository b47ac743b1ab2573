"""haml.envs.mpe: tasks and spaces, agreement with mpe2, team rewards, episodes, seeding, resume."""

from __future__ import annotations

import copy
import importlib
import io
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("mpe2")

from haml.envs import make_env, options_class, task_names  # noqa: E402
from haml.envs import mpe  # noqa: E402
from haml.envs.mpe import Options, make_single_env, make_vector_env  # noqa: E402


def random_actions(spec, num_envs, generator, scale=1.0):
    """Valid discrete indices, or Gaussian continuous actions (haml's policies are unclipped)."""
    out = []
    for space in spec.action_spaces:
        if hasattr(space, "n"):
            out.append(torch.randint(space.n, (num_envs,), generator=generator))
        else:
            out.append(torch.randn(num_envs, space.shape[0], generator=generator) * scale)
    return out


def single_actions(env, rng):
    """One env's actions (for single envs and mpe2's own parallel env): valid discrete indices,
    continuous values around [0, 1] (some outside)."""
    return [
        int(rng.integers(space.n)) if hasattr(space, "n") else rng.normal(0.5, 0.5, space.shape)
        for space in env.action_space.spaces
    ]


def close_all(*envs):
    for env in envs:
        env.close()


# -- tasks and spaces ---------------------------------------------------------------------------

SPACES = {
    # task: (obs dims, discrete action sizes, continuous action sizes, state dim)
    "simple_spread": ([18] * 3, [5] * 3, [5] * 3, 54),
    "simple_reference": ([21] * 2, [50] * 2, [15] * 2, 42),
    "simple_speaker_listener": ([3, 11], [3, 5], [3, 5], 14),
    "simple_formation": ([6] * 4, [5] * 4, [5] * 4, 24),
    "simple_line": ([8] * 4, [5] * 4, [5] * 4, 32),
    "collect_treasure": ([86] * 6 + [84] * 2, [5] * 8, [5] * 8, 684),
}


def test_the_table_covers_every_task():
    assert set(SPACES) == set(mpe.TASKS)
    assert task_names("mpe") == list(mpe.TASKS)
    assert options_class("mpe") is Options


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("task", list(SPACES))
def test_spec_of_every_task(task, continuous):
    obs_dims, n_actions, action_dims, state_dim = SPACES[task]
    envs = make_vector_env(task, 1, Options(continuous_actions=continuous))
    try:
        spec = envs.spec
        assert (spec.env, spec.task, spec.n_agents) == ("mpe", task, len(obs_dims))
        assert [spec.obs_dim(i) for i in range(spec.n_agents)] == obs_dims
        assert spec.state_dim == state_dim and spec.episode_limit == 25
        assert not spec.action_masks and not spec.active_masks
        if continuous:
            assert [space.shape[0] for space in spec.action_spaces] == action_dims
            for space in spec.action_spaces:
                assert np.all(space.low == 0.0) and np.all(space.high == 1.0)
        else:
            assert [space.n for space in spec.action_spaces] == n_actions
    finally:
        envs.close()


def test_versioned_names_are_accepted():
    assert mpe.parse_task("simple_spread_v3") == "simple_spread"
    envs = make_vector_env("simple_speaker_listener_v4", 1)
    assert envs.spec.task == "simple_speaker_listener"
    envs.close()


def test_n_agents_sizes_simple_spread():
    envs = make_vector_env("simple_spread", 1, Options(n_agents=5))
    try:
        # velocity 2, position 2, 5 landmarks, 4 other agents' positions and messages
        assert envs.spec.n_agents == 5 and envs.spec.obs_dim(0) == 4 + 10 + 8 + 8
        assert envs.spec.state_dim == 5 * 30
    finally:
        envs.close()


@pytest.mark.parametrize("view, extra", [("state", 0), ("state_id", 3)])
def test_global_agent_views(view, extra):
    envs = make_vector_env("simple_spread", 2, Options(agent_view=view), seed=0)
    try:
        envs.reset()
        out = envs.step(random_actions(envs.spec, 2, torch.Generator().manual_seed(0)))
        for i in range(3):
            assert out.obs[i].shape == (2, 54 + extra)
            assert torch.equal(out.obs[i][:, :54], out.state)
            if extra:
                assert torch.equal(out.obs[i][:, 54:], torch.eye(3)[i].expand(2, 3))
    finally:
        envs.close()


# -- the same numbers as mpe2 --------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, continuous",
    [(task, False) for task in SPACES] + [("simple_spread", True), ("simple_reference", True)],
)
def test_observations_state_and_team_reward_match_mpe2s_parallel_env(task, continuous):
    """haml drives mpe2's AEC env itself: it must give exactly what mpe2's parallel env gives."""
    env = make_single_env(task, Options(continuous_actions=continuous))
    module = importlib.import_module(f"mpe2.{mpe._TASKS[task].module}")
    reference = module.parallel_env(continuous_actions=continuous, max_cycles=10_000)
    agents = reference.possible_agents
    rng = np.random.default_rng(1)
    try:
        obs, _ = env.reset(seed=7)
        ref_obs, _ = reference.reset(seed=7)
        for step in range(12):
            for i, agent in enumerate(agents):
                assert np.array_equal(obs[f"agent_{i}"], ref_obs[agent]), (step, agent)
            assert np.array_equal(obs["state"], reference.state())
            actions = single_actions(env, rng)
            if continuous:  # mpe2's parallel env clips too, but warns
                actions = [np.clip(a, 0.0, 1.0).astype(np.float32) for a in actions]
            obs, reward, terminated, truncated, _ = env.step(actions)
            ref_obs, ref_rewards, *_ = reference.step(dict(zip(agents, actions)))
            assert reward == pytest.approx(np.mean([ref_rewards[a] for a in agents]), abs=1e-12)
            assert not terminated and not truncated
    finally:
        close_all(env, reference)


# -- team rewards ---------------------------------------------------------------------------------


def _place(env, positions):
    """Put the world's entities (agents then landmarks) at ``positions``, at rest."""
    for entity, pos in zip(env.parallel_env.raw_env.world.entities, positions):
        entity.state.p_pos = np.array(pos, dtype=np.float64)
        entity.state.p_vel = np.zeros(2)


@pytest.mark.parametrize("local_ratio", [0.0, 0.5, 1.0])
def test_simple_spread_team_reward_is_the_mixed_coverage_and_collision_mean(local_ratio):
    """(1 - α) G - α 2C / N: agents 0 and 1 overlap (one colliding pair), agent 2 is apart."""
    env = make_single_env("simple_spread", Options(local_ratio=local_ratio))
    try:
        env.reset(seed=0)
        agents = [(0.0, 0.0), (0.1, 0.0), (0.8, 0.8)]
        landmarks = [(0.0, 0.5), (-0.6, 0.0), (0.8, 0.3)]
        _place(env, agents + landmarks)
        # no-op actions: a step moves nothing that is at rest... except the colliding pair,
        # which the contact force pushes apart; read the positions after the step.
        _, reward, *_ = env.step([0, 0, 0])
        world = env.parallel_env.raw_env.world
        pos = [a.state.p_pos for a in world.agents]
        coverage = -sum(min(np.linalg.norm(p - np.array(lm)) for p in pos) for lm in landmarks)
        pairs = sum(
            np.linalg.norm(pos[i] - pos[j]) < 0.3 for i in range(3) for j in range(i + 1, 3)
        )
        assert pairs == 1
        expected = (1 - local_ratio) * coverage - local_ratio * 2 * pairs / 3
        assert reward == pytest.approx(expected, abs=1e-12)
    finally:
        env.close()


def test_simple_reference_team_reward_is_minus_the_mean_goal_distance():
    env = make_single_env("simple_reference")
    try:
        env.reset(seed=3)
        _, reward, *_ = env.step([0, 0])
        world = env.parallel_env.raw_env.world
        distances = [
            np.linalg.norm(agent.goal_a.state.p_pos - agent.goal_b.state.p_pos)
            for agent in world.agents
        ]
        assert reward == pytest.approx(-np.mean(distances), abs=1e-12)
    finally:
        env.close()


def test_sum_team_reward_is_n_times_the_mean():
    g = torch.Generator().manual_seed(0)
    probe = make_vector_env("collect_treasure", 2)
    actions = [random_actions(probe.spec, 2, g) for _ in range(8)]
    probe.close()
    returns = []
    for team_reward in ("mean", "sum"):
        envs = make_vector_env("collect_treasure", 2, Options(team_reward=team_reward), seed=1)
        envs.reset()
        returns.append(torch.stack([envs.step(a).reward for a in actions]))
        envs.close()
    assert returns[0].abs().sum() > 0
    torch.testing.assert_close(returns[1], 8 * returns[0], rtol=1e-6, atol=1e-6)


# -- episodes -------------------------------------------------------------------------------------


def test_reset_and_step_shapes_and_dtypes():
    envs = make_vector_env("simple_speaker_listener", 3, seed=0)
    try:
        first = envs.reset()
        assert [o.shape for o in first.obs] == [(3, 3), (3, 11)]
        assert first.state.shape == (3, 14) and first.state.dtype == torch.float32
        out = envs.step(random_actions(envs.spec, 3, torch.Generator().manual_seed(0)))
        assert [o.dtype for o in out.obs] == [torch.float32] * 2
        assert out.reward.shape == (3,) and out.reward.dtype == torch.float32
        assert out.terminated.dtype == torch.bool and out.truncated.dtype == torch.bool
        assert not out.terminated.any() and not out.truncated.any() and out.episodes == []
    finally:
        envs.close()


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
def test_max_cycles_truncates_with_the_true_final_observation(continuous):
    """Compared with single envs stepped by hand with the same seeds and actions."""
    seed, limit, n = 3, 5, 2
    options = Options(max_cycles=limit, continuous_actions=continuous)
    envs = make_vector_env("simple_spread", n, options, seed=seed)
    singles = [make_single_env("simple_spread", options) for _ in range(n)]
    try:
        envs.reset()
        for e, env in enumerate(singles):
            env.reset(seed=seed + e)
        g = torch.Generator().manual_seed(0)
        for t in range(limit):
            actions = random_actions(envs.spec, n, g)
            out = envs.step(actions)
            assert not out.terminated.any()
            assert out.truncated.tolist() == [t == limit - 1] * n
            for e, env in enumerate(singles):
                clipped = [a[e].clamp(0, 1) if continuous else a[e] for a in actions]
                obs, reward, _, truncated, _ = env.step(tuple(a.numpy() for a in clipped))
                assert truncated == (t == limit - 1)
                assert out.reward[e].item() == np.float32(reward)
                assert np.array_equal(out.final_state[e].numpy(), obs["state"])
                for i in range(3):
                    assert np.array_equal(out.final_obs[i][e].numpy(), obs[f"agent_{i}"])
        # the episode ended: obs is the next episode's first observation, not the final one
        first = [env.reset()[0] for env in singles]
        for e in range(n):
            assert np.array_equal(out.state[e].numpy(), first[e]["state"])
            assert not torch.equal(out.state[e], out.final_state[e])
        assert [ep.length for ep in out.episodes] == [limit] * n
        assert [ep.env for ep in out.episodes] == list(range(n))
    finally:
        close_all(envs, *singles)


def test_terminate_on_success_terminates_when_every_landmark_is_covered():
    env = make_single_env("simple_spread", Options(n_agents=2, terminate_on_success=True))
    try:
        env.reset(seed=0)
        _, _, terminated, truncated, _ = env.step([0, 0])
        assert not terminated
        _place(env, [(0.5, 0.5), (-0.5, -0.5), (0.5, 0.5), (-0.5, -0.5)])
        _, _, terminated, truncated, _ = env.step([0, 0])
        assert terminated and not truncated
    finally:
        env.close()


def test_continuous_actions_are_clipped_to_zero_one():
    """Actions far outside [0, 1] act exactly as their clipped values."""
    g = torch.Generator().manual_seed(0)
    runs = []
    for scale in (1.0, None):
        envs = make_vector_env("simple_reference", 2, Options(continuous_actions=True), seed=2)
        envs.reset()
        g.manual_seed(0)
        states = []
        for _ in range(6):
            actions = random_actions(envs.spec, 2, g, scale=10.0)
            if scale is None:
                actions = [a.clamp(0.0, 1.0) for a in actions]
            states.append(envs.step(actions).state)
        runs.append(torch.stack(states))
        envs.close()
    assert torch.equal(runs[0], runs[1])


def test_an_out_of_range_discrete_action_is_an_error_naming_the_range():
    envs = make_vector_env("simple_spread", 1, seed=0)
    envs.reset()
    with pytest.raises(RuntimeError, match=r"0\.\.4"):
        envs.step([torch.tensor([5]), torch.tensor([0]), torch.tensor([0])])
    envs.close()


# -- seeding, vectorisation, resume ---------------------------------------------------------------


def _trajectory(envs, steps, seed=None):
    g = torch.Generator().manual_seed(11)
    out = [envs.reset(seed=seed)]
    out += [envs.step(random_actions(envs.spec, envs.num_envs, g)) for _ in range(steps)]
    return torch.stack([step.state for step in out]), torch.stack([step.reward for step in out])


def test_seeding_is_reproducible_and_env_e_gets_seed_plus_e():
    runs = {}
    for seed in (3, 3, 4):
        envs = make_vector_env("simple_reference", 2, seed=seed)
        runs.setdefault(seed, []).append(_trajectory(envs, 30))  # crosses a reset at step 25
        envs.close()
    (s1, r1), (s2, r2) = runs[3]
    assert torch.equal(s1, s2) and torch.equal(r1, r2)
    s4, _ = runs[4][0]
    assert not torch.equal(s1, s4)
    assert torch.equal(s1[0, 1], s4[0, 0])  # env 1 of seed 3 starts as env 0 of seed 4


def test_async_gives_the_same_trajectory_as_sync():
    trajectories = []
    for vectorization in ("sync", "async"):
        envs = make_vector_env("simple_spread", 2, Options(vectorization=vectorization), seed=5)
        trajectories.append(_trajectory(envs, 27))
        envs.close()
    assert torch.equal(trajectories[0][0], trajectories[1][0])
    assert torch.equal(trajectories[0][1], trajectories[1][1])


@pytest.mark.parametrize(
    "task, continuous",
    [(task, False) for task in SPACES] + [("simple_reference", True)],
)
def test_resume_continues_exactly(task, continuous):
    """Save mid-episode, reload through torch.save/load(weights_only) into envs built with another
    seed, and continue across an automatic reset: every output is the same."""
    options = Options(continuous_actions=continuous)
    g = torch.Generator().manual_seed(1)
    envs = make_vector_env(task, 2, options, seed=5)
    resumed = make_vector_env(task, 2, options, seed=99)
    try:
        envs.reset()
        for _ in range(17):
            envs.step(random_actions(envs.spec, 2, g))
        buffer = io.BytesIO()
        torch.save(envs.state_dict(), buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
        actions = [random_actions(envs.spec, 2, g) for _ in range(12)]
        expected = [envs.step(a) for a in actions]
        assert any(step.episodes for step in expected)  # an automatic reset happened
        resumed.load_state_dict(saved)  # into envs never reset (as a resumed run builds them)
        for a, want in zip(actions, expected):
            got = resumed.step(a)
            assert all(torch.equal(x, y) for x, y in zip(got.obs, want.obs))
            assert torch.equal(got.state, want.state) and torch.equal(got.reward, want.reward)
            assert torch.equal(got.final_state, want.final_state)
            assert [(ep.ret, ep.length) for ep in got.episodes] == [
                (ep.ret, ep.length) for ep in want.episodes
            ]
    finally:
        close_all(envs, resumed)


def test_resume_across_a_treasure_pickup_and_respawn():
    """collect_treasure's carried treasures, dead/alive treasures and its world's own RNG (which
    draws the respawns) are part of the state: saved just before a pickup, the pickup, the
    respawn and the rewards replay exactly."""
    original = make_single_env("collect_treasure")
    resumed = make_single_env("collect_treasure")
    try:
        original.reset(seed=4)
        resumed.reset(seed=5)
        world = original.parallel_env.raw_env.world
        _place(original, [world.landmarks[0].state.p_pos.copy()])  # collector_0 on treasure_0
        saved = copy.deepcopy(original.resume_state)
        noop = [0] * 8
        expected = [original.step(noop) for _ in range(3)]
        assert world.agents[0].holding is not None  # picked up...
        assert world.landmarks[0].alive  # ...and respawned elsewhere
        resumed.resume_state = saved
        for want in expected:
            obs, reward, *_ = resumed.step(noop)
            assert reward == want[1]
            assert all(np.array_equal(obs[key], want[0][key]) for key in obs)
    finally:
        close_all(original, resumed)


def test_a_state_of_another_task_is_refused():
    spread = make_single_env("simple_spread")
    line = make_single_env("simple_line")
    spread.reset(seed=0)
    line.reset(seed=0)
    with pytest.raises(ValueError, match="entities"):
        line.resume_state = spread.resume_state
    close_all(spread, line)


# -- errors ---------------------------------------------------------------------------------------


def test_unknown_task_is_an_error_listing_the_known_ones():
    with pytest.raises(ValueError, match="unknown MPE task 'simple_tag'") as info:
        make_env("mpe", "simple_tag")
    assert "simple_spread" in str(info.value) and "simple_reference" in str(info.value)


def test_unknown_option_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'N'.*valid options:.*n_agents"):
        make_env("mpe", "simple_spread", N=4)


@pytest.mark.parametrize(
    "task, kwargs, match",
    [
        ("simple_reference", {"n_agents": 3}, "fixed number of agents.*simple_spread"),
        ("simple_reference", {"local_ratio": 0.2}, "local_ratio.*simple_spread only"),
        ("collect_treasure", {"terminate_on_success": True}, "no success condition"),
    ],
)
def test_options_of_other_tasks_are_errors_naming_the_tasks_that_take_them(task, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_env("mpe", task, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_cycles": 0}, "max_cycles"),
        ({"n_agents": 1}, "n_agents"),
        ({"local_ratio": 1.5}, "local_ratio"),
        ({"agent_view": "global"}, "agent_view"),
        ({"team_reward": "max"}, "team_reward"),
        ({"vectorization": "auto"}, "vectorization"),
        ({"step_timeout": 0.0}, "step_timeout"),
        ({"start_method": "teleport"}, "start_method"),
    ],
)
def test_bad_option_values_are_errors_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Options(**kwargs)


def test_listing_tasks_and_options_imports_no_simulator():
    code = (
        "import sys\n"
        "from haml.envs import registry\n"
        "assert 'simple_spread' in registry.task_names('mpe')\n"
        "assert registry.options_class('mpe').__name__ == 'Options'\n"
        "loaded = [m for m in ('mpe2', 'pygame', 'pettingzoo') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
