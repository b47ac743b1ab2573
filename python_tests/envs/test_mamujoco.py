"""haml.envs.mamujoco: tasks, observation options, episodes, seeding and exact resume on MuJoCo."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium_robotics")
pytest.importorskip("mujoco")

from haml.envs import mamujoco  # noqa: E402
from haml.envs.mamujoco import Options, make_single_env, make_vector_env  # noqa: E402


def local(**kwargs) -> Options:
    return Options(fully_observable=False, **kwargs)


def random_actions(envs, generator, scale=1.0):
    return [
        (torch.rand(envs.num_envs, space.shape[0], generator=generator) * 2 - 1) * scale
        for space in envs.spec.action_spaces
    ]


# -- tasks and spaces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, obs_dims, act_dims, state_dim",
    [
        ("HalfCheetah-2x3", [12, 12], [3, 3], 17),
        ("Hopper-3x1", [8, 9, 8], [1, 1, 1], 11),
        ("Humanoid-9|8", [242, 170], [9, 8], 348),
        ("Ant-4x2", [42] * 4, [2] * 4, 105),
    ],
)
def test_local_observation_and_action_sizes_per_agent(task, obs_dims, act_dims, state_dim):
    env = make_single_env(task, local())
    try:
        assert [
            env.observation_space[f"agent_{i}"].shape[0] for i in range(len(obs_dims))
        ] == obs_dims
        assert [space.shape[0] for space in env.action_space.spaces] == act_dims
        assert env.observation_space["state"].shape == (state_dim,)
        obs, _ = env.reset(seed=0)
        assert [obs[f"agent_{i}"].shape[0] for i in range(len(obs_dims))] == obs_dims
    finally:
        env.close()


def test_every_known_task_name_parses():
    for task in mamujoco.TASKS:
        mamujoco.parse_task(task)
    assert set(mamujoco.PAPER_TASKS) <= set(mamujoco.TASKS)


def test_many_agent_swimmer_takes_any_factorisation():
    env = make_single_env("ManyAgentSwimmer-4x2", local())
    try:
        assert len(env.action_space.spaces) == 4
        assert all(space.shape == (2,) for space in env.action_space.spaces)
    finally:
        env.close()


@pytest.mark.parametrize(
    "task, match",
    [
        ("HalfCheetah-2x5", "UNKNOWN partitioning"),
        ("Cheetah-2x3", "UNKNOWN label"),
        ("HalfCheetah", "expected '<Scenario>-<agent_conf>'"),
        ("ManyAgentSwimmer-ten", "<agents>x<segments per agent>"),
    ],
)
def test_unknown_tasks_are_errors_listing_the_known_ones(task, match):
    with pytest.raises(ValueError, match=match) as info:
        mamujoco.parse_task(task)
    assert "HalfCheetah-2x3" in str(info.value) and "Humanoid-9|8" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"agent_obsk": -1}, "agent_obsk"),
        ({"episode_limit": 0}, "episode_limit"),
        ({"vectorization": "threads"}, "vectorization"),
        ({"start_method": "teleport"}, "start_method"),
        ({"step_timeout": 0.0}, "step_timeout"),
    ],
)
def test_bad_option_values_are_errors_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Options(**kwargs)


def test_agent_obsk_changes_the_observation_size():
    sizes = []
    for k in (0, 1, 2):
        env = make_single_env("Walker2d-2x3", local(agent_obsk=k))
        sizes.append([env.observation_space[f"agent_{i}"].shape[0] for i in range(2)])
        env.close()
    assert sizes[0][0] < sizes[1][0] < sizes[2][0]
    env = make_single_env("Walker2d-2x3", local(agent_obsk=None))  # global state, no id
    assert env.observation_space["agent_0"].shape == env.observation_space["state"].shape
    env.close()


def test_fully_observable_obs_is_the_state_then_the_one_hot_id():
    envs = make_vector_env("Hopper-3x1", 2, Options(vectorization="sync"), seed=0)
    try:
        assert envs.spec.obs_spaces[0].shape == (11 + 3,)
        envs.reset()
        step = envs.step(random_actions(envs, torch.Generator().manual_seed(0)))
        for i in range(3):
            assert torch.equal(step.obs[i][:, :11], step.state)
            assert torch.equal(step.obs[i][:, 11:], torch.eye(3)[i].expand(2, 3))
    finally:
        envs.close()


# -- episodes -----------------------------------------------------------------------------------


def test_time_limit_truncates_without_terminating():
    envs = make_vector_env(
        "HalfCheetah-2x3", 2, Options(vectorization="sync", episode_limit=5), seed=0
    )
    try:
        envs.reset()
        g = torch.Generator().manual_seed(0)
        flags = []
        for _ in range(10):
            out = envs.step(random_actions(envs, g))
            flags.append((out.terminated.tolist(), out.truncated.tolist()))
            assert all(ep.length == 5 for ep in out.episodes)
            assert [ep.env for ep in out.episodes] == [e for e in range(2) if out.truncated[e]]
        ends = [t for t, (_, trunc) in enumerate(flags) if any(trunc)]
        assert ends == [4, 9] and not any(any(term) for term, _ in flags)
    finally:
        envs.close()


def test_hopper_falls_over_and_terminates():
    envs = make_vector_env("Hopper-3x1", 1, Options(vectorization="sync"), seed=0)
    try:
        envs.reset()
        g = torch.Generator().manual_seed(0)
        for _ in range(200):
            out = envs.step(random_actions(envs, g))
            if out.terminated.any():
                break
        assert out.terminated.all() and not out.truncated.any()
        assert out.episodes[0].length < 200
    finally:
        envs.close()


def test_final_obs_is_the_true_last_observation_and_obs_the_reset_one():
    """Compared with single envs stepped by hand with the same seeds and actions."""
    seed, limit = 3, 4
    envs = make_vector_env(
        "Hopper-3x1", 2, local(vectorization="sync", episode_limit=limit), seed=seed
    )
    singles = [make_single_env("Hopper-3x1", local(episode_limit=limit)) for _ in range(2)]
    try:
        out = envs.reset()
        truth = [env.reset(seed=seed + e)[0] for e, env in enumerate(singles)]
        for e in range(2):
            assert np.array_equal(out.state[e].numpy(), truth[e]["state"])
        g = torch.Generator().manual_seed(0)
        for _ in range(limit):
            actions = random_actions(envs, g)
            out = envs.step(actions)
            for e, env in enumerate(singles):
                obs, reward, terminated, truncated, _ = env.step(
                    tuple(a[e].numpy() for a in actions)
                )
                assert np.array_equal(out.final_state[e].numpy(), obs["state"])
                for i in range(3):
                    assert np.array_equal(out.final_obs[i][e].numpy(), obs[f"agent_{i}"])
                assert out.reward[e].item() == np.float32(reward)
                if terminated or truncated:
                    first, _ = env.reset()
                    assert np.array_equal(out.state[e].numpy(), first["state"])
                    assert not np.array_equal(out.state[e].numpy(), obs["state"])
        assert out.truncated.all()
    finally:
        envs.close()
        for env in singles:
            env.close()


# -- seeding, vectorisation, resume --------------------------------------------------------------


def _trajectory(envs, steps, seed=None):
    g = torch.Generator().manual_seed(11)
    out = [envs.reset(seed=seed)]
    out += [envs.step(random_actions(envs, g, scale=1.5)) for _ in range(steps)]
    return out


def _same(a, b):
    return all(
        torch.equal(x.state, y.state)
        and torch.equal(x.reward, y.reward)
        and torch.equal(x.terminated, y.terminated)
        and torch.equal(x.truncated, y.truncated)
        and torch.equal(x.final_state, y.final_state)
        and all(torch.equal(p, q) for p, q in zip(x.obs + x.final_obs, y.obs + y.final_obs))
        for x, y in zip(a, b)
    )


def test_same_seed_same_trajectory_and_envs_differ_by_index():
    opts = Options(vectorization="sync", episode_limit=20)
    a = make_vector_env("Hopper-3x1", 2, opts, seed=5)
    b = make_vector_env("Hopper-3x1", 2, opts, seed=5)
    c = make_vector_env("Hopper-3x1", 2, opts, seed=6)
    try:
        ta, tb, tc = _trajectory(a, 30), _trajectory(b, 30), _trajectory(c, 30)
        assert _same(ta, tb)
        assert not torch.equal(ta[0].state[0], ta[0].state[1])  # env 0 and env 1: seeds 5 and 6
        assert torch.equal(tc[0].state[0], ta[0].state[1])  # seed 6 + 0 == seed 5 + 1
    finally:
        for envs in (a, b, c):
            envs.close()


def test_sync_and_async_are_identical():
    sync = make_vector_env("Hopper-3x1", 2, Options(vectorization="sync", episode_limit=15), seed=2)
    asyn = make_vector_env(
        "Hopper-3x1", 2, Options(vectorization="async", episode_limit=15), seed=2
    )
    try:
        assert _same(_trajectory(sync, 40), _trajectory(asyn, 40))
    finally:
        sync.close()
        asyn.close()


def test_clipped_and_in_range_actions_give_the_same_step():
    envs = [
        make_vector_env("HalfCheetah-2x3", 1, Options(vectorization="sync"), seed=0)
        for _ in range(2)
    ]
    try:
        for env in envs:
            env.reset()
        big = envs[0].step([torch.full((1, 3), 7.0), torch.full((1, 3), -7.0)])
        one = envs[1].step([torch.full((1, 3), 1.0), torch.full((1, 3), -1.0)])
        assert torch.equal(big.state, one.state) and torch.equal(big.reward, one.reward)
    finally:
        for env in envs:
            env.close()


@pytest.mark.parametrize(
    "task, vectorization, num_envs",
    [
        ("Hopper-3x1", "async", 2),
        ("HalfCheetah-2x3", "sync", 2),
        ("Humanoid-9|8", "sync", 1),  # reads derived quantities (xipos) before it steps
        ("Ant-4x2", "sync", 1),
    ],
)
def test_resume_from_state_dict_is_bit_for_bit(task, vectorization, num_envs):
    """Save mid-run, restore into fresh envs: the next steps equal those of the envs that go on."""
    opts = Options(vectorization=vectorization, episode_limit=12)
    original = make_vector_env(task, num_envs, opts, seed=1)
    restored = make_vector_env(task, num_envs, opts, seed=123)
    try:
        _trajectory(original, 17)  # mid-episode, after an automatic reset
        buffer = io.BytesIO()
        torch.save(original.state_dict(), buffer)
        buffer.seek(0)
        restored.reset()
        restored.load_state_dict(torch.load(buffer, weights_only=True))
        now = [original.current()], [restored.current()]
        assert _same(*now)
        g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
        ended = 0
        for _ in range(15):  # crosses an episode end: counters, RNG (reset noise), returns
            a = original.step(random_actions(original, g1, scale=1.5))
            b = restored.step(random_actions(restored, g2, scale=1.5))
            assert _same([a], [b])
            assert a.episodes == b.episodes
            ended += len(a.episodes)
        assert ended > 0
    finally:
        original.close()
        restored.close()
