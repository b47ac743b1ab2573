"""haml.envs.smac / haml.envs.smacv2 on a scripted fake of StarCraft2Env (fake_starcraft.py), and
on the real SMAC when oxwhirl's smac and StarCraft II are installed.

The fake's observation of agent i is [health, t, episode, x, i + 1] (zeros once dead), its state
starts with [t, episode, x]: every number below can be checked by hand.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys

import gymnasium
import numpy as np
import pytest
import torch
from fake_starcraft import (
    N_ACTIONS_NO_ATTACK,
    OBS_DIM,
    FakeStarCraft2Env,
    FakeStarCraft2EnvWithoutUnits,
    expected_avail,
)

from haml.envs import build_options, options_class, smac, smacv2, task_names
from haml.envs.base import VectorMultiAgentEnv
from haml.envs.gym_adapter import ParallelEnvAdapter

VECTORIZATIONS = ["sync", "async"]


def fake(**script):
    """An ``env_factory`` playing the fake with this script."""
    return functools.partial(FakeStarCraft2Env, **script)


def make(task="3m", num_envs=2, seed=0, vectorization="sync", **script):
    options = smac.Options(env_factory=fake(**script), vectorization=vectorization)
    return smac.make_vector_env(task, num_envs, options, seed=seed)


def first_available(action_masks):
    """Per agent, the first available action of every env: always a legal joint action."""
    return [mask.to(torch.int64).argmax(dim=1) for mask in action_masks]


def obs_t(step, agent=0):
    """The fake's step counter t as seen by ``agent``, per env."""
    return step.obs[agent][:, 1]


# -- tasks and options --------------------------------------------------------------------------


def test_tasks_are_the_smac_maps_and_smacv2_scenarios():
    standard = {"3m", "8m", "2s3z", "3s5z", "5m_vs_6m", "MMM2", "corridor", "6h_vs_8z"}
    assert standard | {"3s5z_vs_3s6z", "27m_vs_30m", "2c_vs_64zg"} <= set(smac.TASKS)
    assert task_names("smac") == list(smac.TASKS)
    assert len(smacv2.TASKS) == 15
    assert {"protoss_5_vs_5", "terran_10_vs_10", "zerg_20_vs_23"} <= set(smacv2.TASKS)
    assert task_names("smacv2") == list(smacv2.TASKS)
    assert options_class("smac") is smac.Options
    assert options_class("smacv2") is smacv2.Options


def test_unknown_task_lists_the_known_ones():
    options = smac.Options(env_factory=fake())
    with pytest.raises(ValueError, match=r"unknown SMAC task '4m'.*3m.*corridor"):
        smac.make_vector_env("4m", 1, options)
    v2_options = smacv2.Options(env_factory=fake())
    with pytest.raises(ValueError, match=r"unknown SMACv2 task 'protoss_6_vs_6'.*protoss_5_vs_5"):
        smacv2.make_vector_env("protoss_6_vs_6", 1, v2_options)


def test_unknown_and_wrongly_typed_options_are_errors_naming_them():
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'agent_ids'.*agent_id"):
        build_options(smac.Options, {"agent_ids": True})
    with pytest.raises(TypeError, match="option 'agent_id' must be bool"):
        build_options(smac.Options, {"agent_id": "yes"})
    with pytest.raises(ValueError, match="unknown option.*'conic_fov'"):
        build_options(smac.Options, {"conic_fov": True})  # a SMACv2 option
    assert build_options(smacv2.Options, {"conic_fov": True}).conic_fov is True
    with pytest.raises(ValueError, match=r"difficulty must be one of \['1'.*'A'\], got '11'"):
        smac.Options(difficulty="11")
    with pytest.raises(ValueError, match="vectorization must be one of"):
        smac.Options(vectorization="threads")
    with pytest.raises(ValueError, match="env_kwargs: 'map_name', 'reward_win' cannot be given"):
        smac.Options(env_kwargs={"reward_win": 1.0, "map_name": "8m"})
    with pytest.raises(ValueError, match="env_kwargs: 'capability_config' cannot be given"):
        smacv2.Options(env_kwargs={"capability_config": {}})
    with pytest.raises(ValueError, match="capability_config must be a dict with at least"):
        smacv2.Options(capability_config={"team_gen": {}})
    with pytest.raises(TypeError, match="options must be haml.envs.smacv2.Options"):
        smacv2.make_vector_env("protoss_5_vs_5", 1, smac.Options(env_factory=fake()))
    with pytest.raises(ValueError, match="sc2_path: no such directory"):
        smac.make_vector_env("3m", 1, smac.Options(env_factory=fake(), sc2_path="/no/such/sc2"))


def test_options_reach_the_env_as_starcraft2env_arguments():
    options = smac.Options(
        env_factory=fake(),
        reward_win=100.0,
        obs_last_action=True,
        difficulty="A",
        env_kwargs={"window_size_x": 640},
    )
    env = smac.make_single_env("8m", options).parallel_env.env
    kwargs = env.kwargs
    assert kwargs["map_name"] == "8m"
    assert kwargs["reward_win"] == 100.0 and kwargs["obs_last_action"] is True
    assert kwargs["difficulty"] == "A" and kwargs["window_size_x"] == 640
    assert kwargs["seed"] is None
    assert "step_mul" not in kwargs  # None: the env's own default
    assert "capability_config" not in kwargs and "conic_fov" not in kwargs  # SMACv2 only


# -- spec, masks, alive flags ---------------------------------------------------------------------


def test_spec():
    envs = make(num_envs=1, episode_limit=7, n_agents=4, n_enemies=5)
    try:
        assert isinstance(envs, VectorMultiAgentEnv)
        spec = envs.spec
        assert (spec.env, spec.task, spec.n_agents) == ("smac", "3m", 4)
        assert spec.action_masks and spec.active_masks
        assert spec.episode_limit == 7
        assert all(space.n == N_ACTIONS_NO_ATTACK + 5 for space in spec.action_spaces)
        assert [spec.obs_dim(i) for i in range(4)] == [OBS_DIM] * 4
        # [t, episode, x] + ally and enemy healths + one-hot last actions
        assert spec.state_dim == 3 + 4 + 5 + 4 * (N_ACTIONS_NO_ATTACK + 5)
    finally:
        envs.close()


def test_agent_id_is_appended_to_the_observation():
    options = smac.Options(env_factory=fake(), agent_id=True)
    envs = smac.make_vector_env("3m", 2, options, seed=0)
    try:
        assert [envs.spec.obs_dim(i) for i in range(3)] == [OBS_DIM + 3] * 3
        step = envs.reset()
        for i in range(3):
            assert torch.equal(step.obs[i][:, OBS_DIM:], torch.eye(3)[i].expand(2, 3))
            assert torch.all(step.obs[i][:, 4] == i + 1)  # the fake's own id feature
    finally:
        envs.close()


@pytest.mark.parametrize("vectorization", VECTORIZATIONS)
def test_action_and_active_masks_through_the_vector_env(vectorization):
    envs = make(num_envs=2, vectorization=vectorization, ally_deaths={1: 2})
    try:
        step = envs.reset()
        for t in range(4):
            assert len(step.action_masks) == 3 and len(step.active_masks) == 3
            for agent in range(3):
                alive = not (agent == 1 and t >= 2)
                expected = torch.tensor(expected_avail(t, 3, alive)).expand(2, -1)
                mask = step.action_masks[agent]
                assert mask.dtype == torch.bool and mask.shape == (2, N_ACTIONS_NO_ATTACK + 3)
                assert torch.equal(mask, expected), (t, agent)
                active = step.active_masks[agent]
                assert active.dtype == torch.bool and active.shape == (2,)
                assert active.tolist() == [alive, alive], (t, agent)
            assert torch.all(obs_t(step) == t)
            step = envs.step(first_available(step.action_masks))
    finally:
        envs.close()


def test_a_dead_agent_observes_zeros_and_may_only_noop():
    envs = make(num_envs=2, ally_deaths={1: 1})
    try:
        step = envs.step(first_available(envs.reset().action_masks))
        assert torch.all(step.obs[1] == 0)
        assert torch.all(step.obs[0][:, 0] == 1.0)  # the others are alive
        assert step.action_masks[1][:, 0].all() and not step.action_masks[1][:, 1:].any()
        assert not step.active_masks[1].any() and step.active_masks[0].all()
        step = envs.step(first_available(step.action_masks))  # the dead one no-ops: fine
        actions = first_available(step.action_masks)
        actions[1] = torch.ones(2, dtype=torch.int64)  # "stop" for the dead agent
        with pytest.raises(RuntimeError, match="agent 1 chose action 1, which is not available"):
            envs.step(actions)
    finally:
        envs.close()


def test_alive_flags_from_the_actions_when_the_env_has_no_units():
    options = smac.Options(
        env_factory=functools.partial(FakeStarCraft2EnvWithoutUnits, ally_deaths={2: 1})
    )
    envs = smac.make_vector_env("3m", 1, options, seed=0)
    try:
        step = envs.step(first_available(envs.reset().action_masks))
        assert [a.item() for a in step.active_masks] == [True, True, False]
    finally:
        envs.close()


class NoActionForAgent2(FakeStarCraft2Env):
    """A broken env: agent 2 has no available action at all."""

    def get_avail_agent_actions(self, agent):
        if agent == 2:
            return [0] * self.n_actions
        return super().get_avail_agent_actions(agent)


def test_an_agent_without_any_available_action_is_an_error():
    """A policy cannot sample from an all-false mask; the adapter says which agent."""
    envs = smac.make_vector_env(
        "3m", 1, smac.Options(env_factory=NoActionForAgent2), seed=0
    )
    try:
        with pytest.raises(RuntimeError, match="agent 2 has no available action"):
            envs.reset()
    finally:
        envs.close()


class BoxActionEnv:
    """A one-agent parallel env with a continuous action (no action masks possible)."""

    possible_agents = ["a"]

    def observation_space(self, agent):
        return gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def action_space(self, agent):
        return gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def state(self):
        return np.zeros(2, dtype=np.float32)


def test_action_masks_need_discrete_actions():
    with pytest.raises(TypeError, match="action masks need Discrete action spaces, agent 0"):
        ParallelEnvAdapter(BoxActionEnv(), action_masks=lambda env: [np.ones(1)])
    adapter = ParallelEnvAdapter(BoxActionEnv())  # without masks: no mask keys
    assert set(adapter.observation_space.spaces) == {"agent_0", "state"}


# -- episode ends ---------------------------------------------------------------------------------


def play(envs, steps):
    step = envs.reset()
    for _ in range(steps):
        step = envs.step(first_available(step.action_masks))
    return step


def test_a_won_battle_terminates_keeps_its_final_observation_and_counts_a_win():
    envs = make(num_envs=2, win_at=3)
    try:
        step = play(envs, 2)
        assert not step.terminated.any() and not step.truncated.any() and step.episodes == []
        step = envs.step(first_available(step.action_masks))
        assert step.terminated.tolist() == [True, True]
        assert step.truncated.tolist() == [False, False]
        # final_obs: the last observation of the battle (t = 3, episode 1) ...
        assert torch.all(step.final_obs[0][:, 1] == 3) and torch.all(step.final_obs[0][:, 2] == 1)
        assert torch.all(step.final_state[:, 0] == 3)
        # ... obs: the first one of the next episode, everyone alive again
        assert torch.all(obs_t(step) == 0) and torch.all(step.obs[0][:, 2] == 2)
        assert torch.all(step.state[:, 0] == 0)
        assert all(active.all() for active in step.active_masks)
        first_masks = torch.tensor(expected_avail(0, 3, True)).expand(2, -1)
        assert torch.equal(step.action_masks[0], first_masks)
        assert len(step.episodes) == 2
        for episode in step.episodes:
            assert episode.length == 3 and episode.ret == pytest.approx(1 + 1 + 11)
            assert episode.metrics == {"win": 1.0, "dead_allies": 0.0, "dead_enemies": 3.0}
    finally:
        envs.close()


def test_a_lost_battle_terminates_without_a_win():
    envs = make(num_envs=1, lose_at=2)
    try:
        step = play(envs, 2)
        assert step.terminated.tolist() == [True] and step.truncated.tolist() == [False]
        assert torch.all(step.final_obs[0] == 0)  # every ally dead: zero observations
        assert step.episodes[0].metrics == {"win": 0.0, "dead_allies": 3.0, "dead_enemies": 0.0}
    finally:
        envs.close()


@pytest.mark.parametrize("continuing_episode", [False, True])
def test_the_time_limit_truncates(continuing_episode):
    """With or without ``info["episode_limit"]`` (SMAC sets it only with continuing_episode):
    the env's timeout counter tells a time limit from a decided battle."""
    options = smac.Options(
        env_factory=fake(episode_limit=4), env_kwargs={"continuing_episode": continuing_episode}
    )
    envs = smac.make_vector_env("3m", 2, options, seed=0)
    try:
        step = play(envs, 3)
        assert not step.truncated.any()
        step = envs.step(first_available(step.action_masks))
        assert step.truncated.tolist() == [True, True]
        assert step.terminated.tolist() == [False, False]
        assert torch.all(step.final_obs[0][:, 1] == 4) and torch.all(obs_t(step) == 0)
        assert [e.metrics["win"] for e in step.episodes] == [0.0, 0.0]
        assert [e.length for e in step.episodes] == [4, 4]
        # the next episode's time limit is recognised too
        step = play(envs, 0)
        for _ in range(4):
            step = envs.step(first_available(step.action_masks))
        assert step.truncated.all() and not step.terminated.any()
    finally:
        envs.close()


def test_a_crashed_game_truncates():
    """SMAC restarts a crashed StarCraft II and returns (0, True, {}): cut, not decided."""
    envs = make(num_envs=1, crash_at=2)
    try:
        step = play(envs, 2)
        assert step.truncated.tolist() == [True] and step.terminated.tolist() == [False]
        assert step.episodes[0].metrics == {"win": 0.0}
    finally:
        envs.close()


# -- seeding and resume -----------------------------------------------------------------------------


def test_seeds_fix_the_game_and_a_seeded_reset_relaunches_it():
    def x_values(step):
        return step.state[:, 2].tolist()

    envs_a, envs_b = make(num_envs=2, seed=11), make(num_envs=2, seed=11)
    envs_c = make(num_envs=2, seed=12)
    try:
        first_a, first_b = x_values(envs_a.reset()), x_values(envs_b.reset())
        first_c = x_values(envs_c.reset())
        assert first_a == first_b
        assert first_a[0] != first_a[1]  # env e is seeded with seed + e ...
        assert first_c[0] == first_a[1]  # ... so env 0 of seed 12 is env 1 of seed 11
        second = x_values(envs_a.reset())  # an unseeded reset: the same game goes on
        assert second != first_a
        again = x_values(envs_a.reset(seed=11))  # a seeded reset launches a new game
        assert again == first_a
    finally:
        for envs in (envs_a, envs_b, envs_c):
            envs.close()


def test_state_dict_is_not_implemented():
    envs = make(num_envs=1)
    try:
        envs.reset()
        with pytest.raises(NotImplementedError, match="StarCraft II cannot save a running game"):
            envs.state_dict()
        with pytest.raises(NotImplementedError, match="cannot restore"):
            envs.load_state_dict({})
    finally:
        envs.close()


# -- SMACv2 -------------------------------------------------------------------------------------


def test_smacv2_capability_config_reaches_the_env():
    options = smacv2.Options(env_factory=fake())
    adapter = smacv2.make_single_env("terran_10_vs_11", options)
    kwargs = adapter.parallel_env.env.kwargs
    assert kwargs["map_name"] == "10gen_terran"
    config = kwargs["capability_config"]
    assert config["n_units"] == 10 and config["n_enemies"] == 11
    assert config["team_gen"]["unit_types"] == ["marine", "marauder", "medivac"]
    assert config["team_gen"]["weights"] == [0.45, 0.45, 0.1]
    assert config["team_gen"]["exception_unit_types"] == ["medivac"]
    assert config["start_positions"]["dist_type"] == "surrounded_and_reflect"
    assert kwargs["use_unit_ranges"] is True and kwargs["obs_own_pos"] is True
    assert kwargs["min_attack_range"] == 2 and kwargs["conic_fov"] is False
    # the fake wrote into its copy, as smacv2's wrapper does; the standard config is untouched
    assert config["team_gen"]["env_key"] == "team_gen"
    assert "env_key" not in smacv2.capability_config("terran_10_vs_11")["team_gen"]
    adapter.close()

    envs = smacv2.make_vector_env("zerg_10_vs_11", 2, smacv2.Options(env_factory=fake()), seed=0)
    try:
        spec = envs.spec
        assert (spec.env, spec.task, spec.n_agents) == ("smacv2", "zerg_10_vs_11", 10)
        assert envs.spec.action_spaces[0].n == N_ACTIONS_NO_ATTACK + 11
        step = envs.step(first_available(envs.reset().action_masks))
        assert len(step.action_masks) == 10 and all(a.all() for a in step.active_masks)
    finally:
        envs.close()


def test_smacv2_capability_config_option_replaces_the_tasks():
    custom = {"n_units": 2, "n_enemies": 4, "team_gen": {"dist_type": "weighted_teams"}}
    options = smacv2.Options(env_factory=fake(), capability_config=custom)
    envs = smacv2.make_vector_env("protoss_5_vs_5", 1, options, seed=0)
    try:
        assert envs.spec.n_agents == 2 and envs.spec.action_spaces[0].n == N_ACTIONS_NO_ATTACK + 4
        assert "env_key" not in custom["team_gen"]  # the option's dict is never written into
    finally:
        envs.close()
    standard_types = {
        "protoss": ["stalker", "zealot", "colossus"],
        "zerg": ["zergling", "baneling", "hydralisk"],
    }
    for race, types in standard_types.items():
        config = smacv2.capability_config(f"{race}_20_vs_23")
        assert config["team_gen"]["unit_types"] == types
        assert (config["n_units"], config["n_enemies"]) == (20, 23)
    assert "exception_unit_types" not in smacv2.capability_config("protoss_5_vs_5")["team_gen"]
    zerg = smacv2.capability_config("zerg_5_vs_5")["team_gen"]
    assert zerg["exception_unit_types"] == ["baneling"]


# -- the real packages ------------------------------------------------------------------------------


def test_smac3_installed_as_smac_is_named_in_the_error(tmp_path, monkeypatch):
    """PyPI's `smac` (SMAC3, an optimiser) shadows oxwhirl's: the error must say so."""
    package = tmp_path / "smac"
    (package / "facade").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('this test must not import smac')\n")
    (package / "facade" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "smac", raising=False)
    with pytest.raises(ImportError, match=r"the installed 'smac'.* is SMAC3 .*oxwhirl/smac\.git"):
        smac.import_smac_env_class()
    with pytest.raises(ImportError, match="is SMAC3"):
        smac.make_vector_env("3m", 1, smac.Options())  # the default factory


def test_a_foreign_smac_package_and_a_missing_one_are_told_apart(tmp_path, monkeypatch):
    (tmp_path / "smac").mkdir()
    (tmp_path / "smac" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "smac", raising=False)
    with pytest.raises(ImportError, match=r"has no 'smac.env'.*not oxwhirl's"):
        smac.import_smac_env_class()
    if importlib.util.find_spec("smacv2") is None:
        with pytest.raises(ImportError, match="oxwhirl's 'smacv2' package is not installed"):
            smacv2.import_smacv2_env_class()


def _real_smac_missing() -> str | None:
    """Why the real SMAC cannot run here (None: it can)."""
    try:
        smac.import_smac_env_class()
    except ImportError as err:
        return str(err)
    path = os.environ.get("SC2PATH", os.path.expanduser("~/StarCraftII"))
    if not os.path.isdir(path):
        return f"StarCraft II is not installed (no {path}; set SC2PATH)"
    if not os.path.isdir(os.path.join(path, "Maps", "SMAC_Maps")):
        return f"the SMAC maps are not in {os.path.join(path, 'Maps', 'SMAC_Maps')}"
    return None


@pytest.mark.skipif(_real_smac_missing() is not None, reason=f"real SMAC: {_real_smac_missing()}")
def test_real_smac_3m_runs_a_few_steps():
    envs = smac.make_vector_env("3m", 1, smac.Options(vectorization="sync"), seed=1)
    try:
        spec = envs.spec
        assert spec.n_agents == 3 and spec.episode_limit == 60
        assert all(space.n == 9 for space in spec.action_spaces)  # 6 + 3 enemies
        step = envs.reset()
        assert all(active.all() for active in step.active_masks)
        for _ in range(5):
            step = envs.step(first_available(step.action_masks))
            assert np.isfinite(step.reward.numpy()).all()
            for agent in range(3):
                dead = ~step.active_masks[agent]
                assert torch.all(step.obs[agent][dead] == 0)
    finally:
        envs.close()
