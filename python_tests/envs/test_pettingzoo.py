"""haml.envs.pettingzoo: a user's PettingZoo parallel env as a haml vector env, from Python
(``from_pettingzoo``) and the command line (``--env pettingzoo --task module:function``).

The envs are the hand-checkable ones of ``pettingzoo_envs.py``; the documented example is tested
in ``test_custom_env_doc.py``.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch

pytest.importorskip("pettingzoo")

import pettingzoo_envs as P  # noqa: E402

import haml  # noqa: E402
from haml import cli  # noqa: E402
from haml.config.loader import ConfigError, load_config, read_config  # noqa: E402
from haml.envs import from_pettingzoo, make_env  # noqa: E402
from haml.envs.base import EnvError  # noqa: E402
from haml.envs.pettingzoo import REWARD_MISMATCH_WARNING, load_env_fn  # noqa: E402
from haml.runners.env_position import NO_ENV_STATE_WARNING  # noqa: E402

FAST = ["eval.every=0", "run.checkpoint_every=1000"]
"""Overrides of a short training run that only has to go through the runner."""


def _step(env, *actions):
    return env.step([torch.as_tensor(a) for a in actions])


def _train(algo, env, steps, tmp_path, *extra):
    return haml.train(algo, env, steps=steps, out=tmp_path / algo, quiet=True,
                      overrides=[*FAST, *extra])


# -- heterogeneous spaces -----------------------------------------------------------------------


def test_heterogeneous_spaces_are_read_from_the_env_and_flattened_to_float32(capsys):
    env = from_pettingzoo(P.Hetero, num_envs=2, seed=0)
    try:
        spec = env.spec
        assert (spec.env, spec.task, spec.n_agents) == ("pettingzoo", "pettingzoo_envs:Hetero", 3)
        assert [spec.obs_dim(i) for i in range(3)] == [6, 3, 1]  # 2x3 float64, int64, bool
        assert all(space.dtype == np.float32 for space in spec.obs_spaces)
        a, b, c = spec.action_spaces
        Box = gymnasium.spaces.Box  # noqa: N806
        assert (a, b, c) == (Box(-1, 1, (2,), np.float32), gymnasium.spaces.Discrete(4),
                             Box(-2, 2, (1,), np.float32))
        assert spec.state_dim == 10 and not spec.action_masks
        assert ("global state is the agents' observations concatenated (10 values; the env has "
                "no state())") in capsys.readouterr().out

        first = env.reset()
        assert first.obs[1].tolist() == [[0, 0, 7]] * 2
        step = _step(env, [[0.5, -0.5], [2.0, 0.1]], [0, 3], [[1.0], [3.0]])
        # a's observation shows the action it received (clipped to its Box), b's the Discrete
        # index plus the space's start, c's the step's parity as a number
        expected_a = torch.tensor([[1, 1, 1, 0.5, -0.5, 0], [1, 1, 1, 1.0, 0.1, 0]])
        assert torch.allclose(step.obs[0], expected_a)
        assert step.obs[1].tolist() == [[1, 1, 7], [1, 4, 7]]
        assert step.obs[2].tolist() == [[1.0], [1.0]]
        assert torch.equal(step.state, torch.cat(step.obs, dim=1))
        assert step.reward.tolist() == [1.0, 1.0]
    finally:
        env.close()


@pytest.mark.parametrize("algo", ["happo", "hatrpo"])
def test_heterogeneous_agents_train_together(algo, tmp_path):
    """A Box agent, a Discrete agent and another Box agent in one run: the env asserts that every
    action it gets is in its own space (float64 Box, Discrete from 1)."""
    env = from_pettingzoo(P.Hetero, num_envs=4, seed=0)
    result = _train(algo, env, 80, tmp_path, "train.rollout_length=10")
    env.close()
    assert (result.iterations, result.env_steps) == (2, 80)


# -- action masks -------------------------------------------------------------------------------


def test_action_masks_come_from_the_info_and_from_a_dict_observation():
    env = from_pettingzoo(P.Masked, num_envs=2, seed=0)
    try:
        assert env.spec.action_masks
        assert [env.spec.obs_dim(i) for i in range(2)] == [2, 2]  # the Dict's "observation"
        step = env.reset()
        for t in range(10):
            t_env = t % 8  # episodes are 8 steps long
            assert step.action_masks[0].tolist() == [P.left_mask(t_env).astype(bool).tolist()] * 2
            assert step.action_masks[1].tolist() == [P.right_mask(t_env).astype(bool).tolist()] * 2
            right = int(np.flatnonzero(P.right_mask(t_env))[0])
            step = _step(env, [t_env % 4, (t_env + 1) % 4], [right, right])
            assert step.reward.tolist() == [float(t_env % 4 != 3), float(t_env % 4 == 3)]
            # final_obs: the step's true next observation, also where the episode ends
            assert step.final_obs[1][:, 1].tolist() == [right, right]
    finally:
        env.close()


def test_a_masked_env_is_learned_without_an_unavailable_action(tmp_path):
    """The env raises on an unavailable action; the deterministic policies reach the best return
    (8: the lower available action at each of 8 steps; random choice scores 4)."""
    env = from_pettingzoo(P.Masked, num_envs=8, seed=0)
    result = haml.train("happo", env, steps=1280, out=tmp_path / "run", quiet=True,
                        overrides=["train.rollout_length=32", "eval.every=5", "eval.episodes=8"])
    env.close()
    assert result.eval_return == 8.0


# -- agents that leave --------------------------------------------------------------------------


def test_agents_that_leave_are_inactive_observe_zeros_and_get_no_actions():
    env = from_pettingzoo(P.Dying, num_envs=1, seed=0)
    zero = [[0.0]]
    try:
        step = env.reset()
        assert [m.item() for m in step.active_masks] == [True, True, True]
        with pytest.warns(UserWarning, match="rewards differ") as record:
            # Dying raises if it gets an action for an agent that has left
            steps = [_step(env, zero, zero, zero) for _ in range(7)]
        assert len([w for w in record if REWARD_MISMATCH_WARNING in str(w.message)]) == 1
    finally:
        env.close()
    alive = [[m.item() for m in s.active_masks] for s in steps[:3]]
    assert alive == [[False, True, True], [False, False, True], [True, True, True]]
    # the step an agent leaves, it shows the last observation the env gave it; zeros after
    assert steps[0].obs[0].tolist() == [[1.0, 0.0]]
    assert steps[1].obs[0].tolist() == [[0.0, 0.0]] and steps[1].obs[1].tolist() == [[2.0, 1.0]]
    # the team reward is the mean over the agents that acted (d_i earns i + 1)
    assert [s.reward.item() for s in steps[:3]] == [2.0, 2.5, 3.0]
    assert [(s.terminated.item(), s.truncated.item()) for s in steps[:3]] == [
        (False, False), (False, False), (True, False)]
    assert steps[2].episodes[0].length == 3 and steps[2].episodes[0].ret == 7.5
    # without state() the state is the observations, zeros for those that left
    assert steps[1].state.tolist() == [[0.0, 0.0, 2.0, 1.0, 2.0, 2.0]]
    assert steps[3].state.tolist() == steps[0].state.tolist()  # the next episode runs the same


def test_an_episode_whose_last_agent_is_truncated_is_truncated():
    factory = functools.partial(P.Dying, last_truncated=True, silent_death=True)
    env = from_pettingzoo(factory, seed=0)
    try:
        env.reset()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            steps = [_step(env, [[0.0]], [[0.0]], [[0.0]]) for _ in range(3)]
    finally:
        env.close()
    assert [(s.terminated.item(), s.truncated.item()) for s in steps] == [
        (False, False), (False, False), (False, True)]
    assert steps[0].obs[0].tolist() == [[0.0, 0.0]]  # left without a last observation


def test_a_run_with_agents_that_leave_trains(tmp_path):
    env = from_pettingzoo(P.Dying, num_envs=4, seed=0)
    with pytest.warns(UserWarning, match="rewards differ"):
        result = _train("happo", env, 48, tmp_path, "train.rollout_length=6")
    env.close()
    assert result.env_steps == 48


# -- async --------------------------------------------------------------------------------------


def test_async_workers_with_a_picklable_factory_match_sync():
    """spawn: the factory (a partial of a module-level class) is pickled into fresh interpreters.
    The same actions give the same steps as in this process, and the reward warning of the
    workers (each of the two reports it) reaches this process, once per vector env."""
    factory = functools.partial(P.Dying, last_truncated=True)
    sync = from_pettingzoo(factory, num_envs=2, seed=3)
    spawned = from_pettingzoo(factory, num_envs=2, seed=3, vectorization="async",
                              start_method="spawn")
    try:
        assert spawned.spec == sync.spec
        for env in (sync, spawned):
            env.reset()
        actions = [torch.zeros(2, 1)] * 3
        truncated = []
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            for _ in range(4):
                expected, got = sync.step(actions), spawned.step(actions)
                truncated.append(got.truncated.tolist())
                for name in ("obs", "state", "reward", "terminated", "truncated", "active_masks"):
                    left, right = getattr(expected, name), getattr(got, name)
                    pairs = zip(left, right) if isinstance(left, tuple) else [(left, right)]
                    assert all(torch.equal(x, y) for x, y in pairs), name
        assert truncated == [[False, False], [False, False], [True, True], [False, False]]
        assert [str(w.message) for w in record] == [
            f"pettingzoo/{sync.spec.task}: {REWARD_MISMATCH_WARNING}"] * 2
    finally:
        sync.close()
        spawned.close()


# -- what is refused ----------------------------------------------------------------------------


def _raises(factory):
    """Build the envs of ``factory`` and step them through two episodes."""
    env = from_pettingzoo(factory, num_envs=1, seed=0)
    try:
        env.reset()
        for t in range(16):
            _step(env, [t % 4], [(t % 8 + 2) % 4])
    finally:
        env.close()


@pytest.mark.parametrize(
    "factory, error, message",
    [
        (P.AecOnly, TypeError, r"PettingZoo AEC env \(AecOnly.*aec_to_parallel"),
        (lambda: gymnasium.make("CartPole-v1"), TypeError, "single-agent gymnasium env"),
        (dict, TypeError,
         r"not a PettingZoo parallel env \(it has no possible_agents, reset, step"),
        (lambda: P.Spaces(observation=gymnasium.spaces.Discrete(3)), TypeError,
         r"agent 'left' has the observation space Discrete\(3\); haml needs a numeric Box"),
        (lambda: P.Spaces(observation=gymnasium.spaces.MultiBinary(3)), TypeError,
         "observation space MultiBinary"),
        (P.TextObservation, TypeError, "the observation of 'left' is not numeric"),
        (P.masked_box_actions, TypeError,
         "action masks, which need every agent's actions to be Discrete; 'left' act in a Box"),
        (P.GrowingTeam, EnvError, r"possible_agents changed between resets, from \['left', "
         r"'right'\] to \['left', 'right', 'extra_2'\]"),
        (P.AbsentAtReset, ValueError, r"reset\(\) gave observations for \['left'\], not for every "
         "possible agent"),
        (P.Latecomer, EnvError, r"\['newcomer'\], which did not act in it \(agents may leave an "
         "episode, but not join it\\)"),
        (P.MaskVanishes, EnvError, "agent 'left' gave no action_mask in its info"),
        (functools.partial(P.Hetero, colour="red"), RuntimeError,
         "the env function raised TypeError.*colour"),
    ],
    ids=["aec", "gymnasium", "not-an-env", "discrete-obs", "multibinary-obs", "text-obs",
         "masked-box", "changing-agents", "absent-agent", "joining-agent", "vanishing-mask",
         "raising-env-fn"],
)
def test_an_incompatible_env_is_an_error_saying_why(factory, error, message):
    with pytest.raises(error, match=message):
        _raises(factory)


@pytest.mark.parametrize("name", list(P.UNSUPPORTED_ACTIONS))
def test_an_unsupported_action_space_is_named_with_the_supported_ones(name):
    space = P.UNSUPPORTED_ACTIONS[name]
    message = rf"'left' has the action space {type(space).__name__}.*supported: Box \(1-D, float\)"
    with pytest.raises(TypeError, match=message + " and Discrete"):
        from_pettingzoo(lambda: P.Spaces(action=space))


def test_from_pettingzoo_wants_the_function_not_an_env():
    with pytest.raises(TypeError, match=r"pass the function, e.g. make_env, not make_env\(\)"):
        from_pettingzoo(P.Masked())


def test_the_reward_warning_is_given_once_and_only_where_rewards_differ(recwarn):
    env = from_pettingzoo(P.Masked, num_envs=2, seed=0)
    env.reset()
    for t in range(20):
        _step(env, [t % 8 % 4] * 2, [(t % 8 + 2) % 4] * 2)
    env.close()
    assert not [w for w in recwarn if "rewards differ" in str(w.message)]


# -- tasks, the registry and the config ---------------------------------------------------------


def test_task_import_paths():
    assert load_env_fn("pettingzoo_envs:make_masked") is P.make_masked
    assert load_env_fn("pettingzoo_envs:Dying") is P.Dying
    for task, message in [
        ("pettingzoo_envs", "import path of a function"),
        ("pettingzoo_envs:nothing", "module 'pettingzoo_envs' has no 'nothing'"),
        ("haml_no_such_module:make_env", "cannot import 'haml_no_such_module'"),
        ("pettingzoo_envs:<lambda>", "cannot be imported by name"),
        ("pettingzoo_envs:np", "is a module, not a function"),
    ]:
        with pytest.raises((ValueError, ImportError, TypeError), match=message):
            load_env_fn(task)


def test_make_env_takes_an_import_path_and_the_options():
    env = make_env("pettingzoo", "pettingzoo_envs:make_masked", num_envs=2, seed=0,
                   agent_view="state_id", episode_limit=3)
    try:
        assert env.spec.task == "pettingzoo_envs:make_masked" and env.spec.episode_limit == 3
        assert [env.spec.obs_dim(i) for i in range(2)] == [4 + 2, 4 + 2]  # state + one-hot id
        env.reset()
        steps = [_step(env, [t, t], [(t + 2) % 4] * 2) for t in range(3)]
        truncated = [s.truncated.tolist() for s in steps]
        assert truncated == [[False, False], [False, False], [True, True]]
    finally:
        env.close()


def test_the_config_checks_the_task_and_the_options():
    cfg = load_config("happo", "pettingzoo")
    assert cfg.env.task == "haml.envs.examples.meet:make_env"
    assert cfg.env.options["agent_view"] == "local" and cfg.train.torch_threads == 1
    with pytest.raises(ConfigError, match="import path of a function"):
        load_config("happo", "pettingzoo", "not a path")
    message = "unknown key 'env.options.num_envs'; valid keys of 'env.options': agent_view"
    with pytest.raises(ValueError, match=message):
        load_config("happo", "pettingzoo", overrides=["env.options.num_envs=8"])  # train.num_envs


def test_importing_haml_envs_imports_neither_pettingzoo_nor_the_family():
    code = (
        "import sys, haml, haml.envs\n"
        "assert not {'pettingzoo', 'haml.envs.pettingzoo'} & set(sys.modules)\n"
        "from haml.envs import from_pettingzoo\n"
        "assert 'pettingzoo' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


# -- the command line ---------------------------------------------------------------------------

RUN = ["train.num_envs=2", "train.rollout_length=16", "eval.every=1", "eval.episodes=2",
       "eval.num_envs=2", "run.checkpoint_every=1"]


def test_cli_run_records_the_task_and_options_for_eval_and_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train = ["train", "--algo", "happo", "--env", "pettingzoo", "--task",
             "pettingzoo_envs:make_masked", "--steps", "64", "--out", str(run_dir), "--quiet", *RUN,
             "env.options.agent_view=state_id"]
    assert cli.main(train) == 0
    cfg = read_config(run_dir / "config.yaml")
    assert cfg.env.task == "pettingzoo_envs:make_masked"
    assert cfg.env.options["agent_view"] == "state_id"
    capsys.readouterr()

    # eval builds the same envs: observations of the state_id view (a local view would not fit
    # the policies' input size), masks honoured (Masked raises on an unavailable action)
    assert cli.main(["eval", str(run_dir), "--episodes", "4"]) == 0
    assert "eval return over 4 episodes (deterministic)" in capsys.readouterr().out

    assert cli.main(["train", "--resume", str(run_dir), "--steps", "128", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert NO_ENV_STATE_WARNING in out and "done: 128 steps, 4 iterations" in out


@pytest.mark.parametrize(
    "task, message",
    [("my_env", "import path of a function"),
     ("haml_no_such_module:make_env", "cannot import 'haml_no_such_module'"),
     ("pettingzoo_envs:AecOnly", "aec_to_parallel")],
)
def test_cli_errors_are_one_line(task, message, tmp_path, capsys):
    code = cli.main(["train", "--algo", "happo", "--env", "pettingzoo", "--task", task,
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("haml train: error:")
    assert "Traceback" not in err


def test_evaluate_a_python_run_on_its_env_object(tmp_path):
    env = from_pettingzoo(P.Masked, num_envs=2, seed=0)
    result = _train("happo", env, 64, tmp_path, "train.rollout_length=16")
    report = haml.evaluate(result.run_dir, episodes=4, env=env)
    assert len(report.result.episodes) == 4 and report.result.mean_length == 8
    assert report.env_steps == 64
    assert not env._closed  # the caller's env stays open
    env.close()
    with pytest.raises(TypeError, match="VectorMultiAgentEnv"):
        haml.evaluate(result.run_dir, env=P.Masked())
    assert Path(result.run_dir).is_dir()
