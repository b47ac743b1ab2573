"""haml.envs.vector and haml.envs.gym_adapter on a tiny fake PettingZoo env (no simulator).

The fake env makes every quantity checkable by hand: observations carry the step counter, a
seeded random number drawn at reset, and the action each agent just took.
"""

from __future__ import annotations

import contextlib
import functools
import io
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch

from haml.envs.base import EnvError, VectorMultiAgentEnv
from haml.envs.gym_adapter import ParallelEnvAdapter, SimStateHooks
from haml.envs.vector import GymVectorEnv, make_gym_vector_env


class FakeParallelEnv:
    """Two agents with different sizes; obs_i = [t, x, a_i...], reward = t + x, state = [t, x].

    ``x`` is drawn from the env's RNG at every reset. The episode terminates at step
    ``terminate_at``; step ``fail_at`` raises; step ``hang_at`` sleeps for a minute; every step
    takes ``step_seconds``, every reset ``reset_seconds``.
    """

    def __init__(
        self, discrete=False, terminate_at=None, fail_at=None, hang_at=None, step_seconds=0.0,
        reset_seconds=0.0,
    ):
        self.possible_agents = ["first", "second"]
        self.discrete = discrete
        self.terminate_at = terminate_at
        self.fail_at = fail_at
        self.hang_at = hang_at
        self.step_seconds = step_seconds
        self.reset_seconds = reset_seconds
        self.rng = np.random.default_rng()
        self.t, self.x = 0, 0.0
        self.last = [np.zeros(self._act_dim(i)) for i in range(2)]

    def _act_dim(self, i):
        return 1 if self.discrete else i + 1

    def observation_space(self, agent):
        i = self.possible_agents.index(agent)
        return gymnasium.spaces.Box(-np.inf, np.inf, (2 + self._act_dim(i),), np.float64)

    def action_space(self, agent):
        i = self.possible_agents.index(agent)
        if self.discrete:
            return gymnasium.spaces.Discrete(3)
        return gymnasium.spaces.Box(-1.0, 1.0, (i + 1,), np.float32)

    def state(self):
        return np.array([self.t, self.x])

    def _obs(self):
        return {
            agent: np.concatenate([[self.t, self.x], self.last[i]])
            for i, agent in enumerate(self.possible_agents)
        }

    def reset(self, seed=None, options=None):
        time.sleep(self.reset_seconds)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t, self.x = 0, float(self.rng.normal())
        self.last = [np.zeros(self._act_dim(i)) for i in range(2)]
        return self._obs(), {agent: {} for agent in self.possible_agents}

    def step(self, actions):
        self.t += 1
        time.sleep(self.step_seconds)
        if self.t == self.fail_at:
            raise ValueError("boom")
        if self.t == self.hang_at:
            time.sleep(60)
        self.last = [
            np.atleast_1d(np.asarray(actions[a], dtype=np.float64)) for a in self.possible_agents
        ]
        done = self.t == self.terminate_at
        agents = self.possible_agents
        return (
            self._obs(),
            {a: float(self.t + self.x) for a in agents},
            {a: done for a in agents},
            {a: False for a in agents},
            {a: {} for a in agents},
        )

    def close(self):
        pass


def _get_fake_state(env):
    return {"t": env.t, "x": env.x, "last": list(env.last), "rng": env.rng.bit_generator.state}


def _set_fake_state(env, state):
    env.t, env.x, env.last = state["t"], state["x"], list(state["last"])
    env.rng.bit_generator.state = state["rng"]


FAKE_HOOKS = SimStateHooks(get=_get_fake_state, set=_set_fake_state)


def make_fake(env_index=0, episode_limit=None, agent_view="local", hooks=True, **kwargs):
    return ParallelEnvAdapter(
        FakeParallelEnv(**kwargs),
        episode_limit=episode_limit,
        agent_view=agent_view,
        sim_state=FAKE_HOOKS if hooks else None,
        env_index=env_index,
        name="fake",
    )


def make_vec(num_envs=2, asynchronous=False, seed=0, step_timeout=30.0, **kwargs):
    fns = [functools.partial(make_fake, e, **kwargs) for e in range(num_envs)]
    return GymVectorEnv(
        fns,
        env="fake",
        task="pair",
        seed=seed,
        asynchronous=asynchronous,
        step_timeout=step_timeout,
    )


def box_actions(num_envs, value):
    return [torch.full((num_envs, 1), value), torch.full((num_envs, 2), value)]


# -- adapter ------------------------------------------------------------------------------------


def test_adapter_spaces_keep_per_agent_sizes_and_are_float32():
    env = make_fake()
    assert env.observation_space["agent_0"].shape == (3,)
    assert env.observation_space["agent_1"].shape == (4,)
    assert env.observation_space["state"].shape == (2,)
    assert all(space.dtype == np.float32 for space in env.observation_space.spaces.values())
    assert [space.shape for space in env.action_space.spaces] == [(1,), (2,)]


def test_state_id_view_is_state_then_one_hot():
    env = make_fake(agent_view="state_id")
    obs, _ = env.reset(seed=3)
    for i in range(2):
        np.testing.assert_array_equal(obs[f"agent_{i}"][:2], obs["state"])
        np.testing.assert_array_equal(obs[f"agent_{i}"][2:], np.eye(2, dtype=np.float32)[i])


def test_adapter_time_limit_truncates_and_termination_is_separate():
    env = make_fake(episode_limit=3, terminate_at=5)
    env.reset(seed=0)
    flags = [env.step((np.zeros(1), np.zeros(2)))[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    env = make_fake(episode_limit=10, terminate_at=2)
    env.reset(seed=0)
    flags = [env.step((np.zeros(1), np.zeros(2)))[2:4] for _ in range(2)]
    assert flags == [(False, False), (True, False)]


def test_adapter_without_hooks_cannot_resume():
    env = make_fake(hooks=False)
    assert not env.resumable
    with pytest.raises(NotImplementedError, match="cannot be saved"):
        _ = env.resume_state


# -- vector env ---------------------------------------------------------------------------------


def test_is_a_vector_multi_agent_env_and_spec_matches():
    envs = make_vec()
    try:
        assert isinstance(envs, VectorMultiAgentEnv)
        assert envs.spec.n_agents == 2
        assert [envs.spec.obs_dim(i) for i in range(2)] == [3, 4]
        assert envs.spec.state_dim == 2
    finally:
        envs.close()


def test_reset_seeds_env_e_with_seed_plus_e():
    envs = make_vec(num_envs=3, seed=10)
    try:
        first = envs.reset()
        expected = [np.float32(np.random.default_rng(10 + e).normal()) for e in range(3)]
        assert first.state[:, 1].tolist() == expected
        assert first.reward.tolist() == [0.0] * 3 and not first.terminated.any()
        again = envs.reset(seed=10)
        assert torch.equal(again.state, first.state)
    finally:
        envs.close()


def test_final_obs_is_the_true_last_observation_and_obs_the_reset_one():
    envs = make_vec(num_envs=2, seed=0, episode_limit=3)
    try:
        start = envs.reset()
        for _ in range(2):
            mid = envs.step(box_actions(2, 0.5))
            assert not (mid.terminated | mid.truncated).any()
            for o, f in zip(mid.obs, mid.final_obs):
                assert torch.equal(o, f)
        last = envs.step(box_actions(2, 0.5))
        assert last.truncated.all() and not last.terminated.any()
        # the true s_T: step counter 3, the episode's x, the action just taken
        assert last.final_state[:, 0].tolist() == [3.0, 3.0]
        assert torch.equal(last.final_state[:, 1], start.state[:, 1])
        assert last.final_obs[1][:, 2:].tolist() == [[0.5, 0.5]] * 2
        # obs/state: the next episode's first observation (counter 0, a fresh x, no action)
        assert last.state[:, 0].tolist() == [0.0, 0.0]
        assert not torch.equal(last.state[:, 1], start.state[:, 1])
        assert last.obs[1][:, 2:].tolist() == [[0.0, 0.0]] * 2
        # episode statistics: reward t + x summed over t = 1..3
        rets = [ep.ret for ep in last.episodes]
        x = start.state[:, 1].double()
        np.testing.assert_allclose(rets, (6 + 3 * x).tolist(), rtol=1e-6)
        assert [ep.length for ep in last.episodes] == [3, 3]
    finally:
        envs.close()


def test_only_the_ended_env_gets_a_different_final_obs():
    fns = [
        functools.partial(make_fake, 0, terminate_at=2),
        functools.partial(make_fake, 1, terminate_at=5),
    ]
    envs = GymVectorEnv(fns, env="fake", task="pair", seed=0, asynchronous=False)
    try:
        envs.reset()
        envs.step(box_actions(2, 0.0))
        out = envs.step(box_actions(2, 0.0))
        assert out.terminated.tolist() == [True, False]
        assert out.final_state[:, 0].tolist() == [2.0, 2.0]
        assert out.state[:, 0].tolist() == [0.0, 2.0]
        assert len(out.episodes) == 1 and out.episodes[0].length == 2
    finally:
        envs.close()


def test_box_actions_are_clipped_and_discrete_sent_as_ints():
    envs = make_vec(num_envs=2)
    try:
        envs.reset()
        out = envs.step([torch.tensor([[5.0], [-0.25]]), torch.tensor([[-7.0, 0.5], [1.5, 2.0]])])
        assert out.obs[0][:, 2].tolist() == [1.0, -0.25]
        assert out.obs[1][:, 2:].tolist() == [[-1.0, 0.5], [1.0, 1.0]]
    finally:
        envs.close()
    envs = make_vec(num_envs=2, discrete=True)
    try:
        envs.reset()
        out = envs.step([torch.tensor([2, 0]), torch.tensor([1, 1])])
        assert out.obs[0][:, 2].tolist() == [2.0, 0.0]
    finally:
        envs.close()


def test_bad_actions_are_errors_naming_the_agent():
    envs = make_vec(num_envs=2)
    try:
        envs.reset()
        with pytest.raises(ValueError, match="one tensor per agent"):
            envs.step([torch.zeros(2, 1)])
        with pytest.raises(ValueError, match=r"actions\[1\] must have shape \[2, 2\]"):
            envs.step([torch.zeros(2, 1), torch.zeros(2, 3)])
    finally:
        envs.close()


def test_step_before_reset_is_an_error():
    envs = make_vec()
    try:
        with pytest.raises(RuntimeError, match="reset"):
            envs.step(box_actions(2, 0.0))
    finally:
        envs.close()


def _rollout(envs, steps, seed=None):
    out = [envs.reset(seed=seed)]
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        out.append(
            envs.step(
                [
                    torch.rand(envs.num_envs, 1, generator=g),
                    torch.rand(envs.num_envs, 2, generator=g),
                ]
            )
        )
    return out


def _assert_same_steps(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for name in ("state", "reward", "terminated", "truncated", "final_state"):
            assert torch.equal(getattr(x, name), getattr(y, name)), name
        for ox, oy in zip(x.obs + x.final_obs, y.obs + y.final_obs):
            assert torch.equal(ox, oy)
        assert x.episodes == y.episodes


def test_sync_and_async_give_identical_results():
    sync = make_vec(num_envs=2, asynchronous=False, seed=4, episode_limit=4, terminate_at=3)
    asyn = make_vec(num_envs=2, asynchronous=True, seed=4, episode_limit=4, terminate_at=3)
    try:
        _assert_same_steps(_rollout(sync, 9), _rollout(asyn, 9))
    finally:
        sync.close()
        asyn.close()


@pytest.mark.parametrize("asynchronous", [False, True])
def test_state_dict_round_trip_continues_bit_for_bit(asynchronous):
    kwargs = dict(num_envs=2, asynchronous=asynchronous, episode_limit=4)
    original = make_vec(seed=7, **kwargs)
    restored = make_vec(seed=99, **kwargs)
    try:
        _rollout(original, 6)  # mid-episode, after one automatic reset
        buffer = io.BytesIO()
        torch.save(original.state_dict(), buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)
        restored.reset()
        restored.load_state_dict(state)
        assert torch.equal(restored.current().state, original.current().state)
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        for _ in range(7):  # crosses episode ends: time-limit counters, returns and RNG restored
            a = original.step([torch.rand(2, 1, generator=g1), torch.rand(2, 2, generator=g1)])
            b = restored.step([torch.rand(2, 1, generator=g2), torch.rand(2, 2, generator=g2)])
            _assert_same_steps([a], [b])
    finally:
        original.close()
        restored.close()


def test_load_state_dict_rejects_another_task():
    envs = make_vec(num_envs=2)
    other = make_vec(num_envs=3)
    try:
        envs.reset()
        with pytest.raises(ValueError, match="2 envs"):
            other.load_state_dict(envs.state_dict())
    finally:
        envs.close()
        other.close()


def test_envs_without_hooks_say_they_cannot_be_saved():
    envs = make_vec(hooks=False)
    try:
        envs.reset()
        with pytest.raises(NotImplementedError):
            envs.state_dict()
    finally:
        envs.close()


# -- failures -----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")  # gymnasium logs the worker's traceback
@pytest.mark.parametrize("asynchronous", [False, True])
def test_exception_inside_an_env_step_is_a_clear_error(asynchronous):
    fns = [functools.partial(make_fake, 0), functools.partial(make_fake, 1, fail_at=2)]
    envs = GymVectorEnv(fns, env="fake", task="pair", seed=0, asynchronous=asynchronous)
    try:
        envs.reset()
        envs.step(box_actions(2, 0.0))
        with pytest.raises(EnvError, match=r"env 1\b.*ValueError: boom") as error:
            envs.step(box_actions(2, 0.0))
        if asynchronous:  # the worker's traceback is the cause, not printed
            assert 'raise ValueError("boom")' in str(error.value.__cause__.__cause__)
        with pytest.raises(RuntimeError, match="failed earlier"):
            envs.step(box_actions(2, 0.0))
    finally:
        envs.close()


def test_killed_worker_is_a_clear_error_not_a_hang():
    envs = make_vec(num_envs=2, asynchronous=True, step_timeout=20.0)
    try:
        envs.reset()
        victim = envs._vec.processes[1]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=5)
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=r"env 1 .*SIGKILL"):
            envs.step(box_actions(2, 0.0))
        assert time.monotonic() - start < 10
    finally:
        envs.close()


def test_stuck_worker_times_out_with_a_clear_error():
    fns = [functools.partial(make_fake, 0), functools.partial(make_fake, 1, hang_at=1)]
    envs = GymVectorEnv(fns, env="fake", task="pair", seed=0, asynchronous=True, step_timeout=0.5)
    try:
        envs.reset()
        start = time.monotonic()
        with pytest.raises(
            RuntimeError, match=r"no answer within step_timeout=0.5 s from env\(s\) \[1\]"
        ):
            envs.step(box_actions(2, 0.0))
        assert time.monotonic() - start < 10
        assert not any(process.is_alive() for process in envs._vec.processes)
    finally:
        envs.close()


_STOP_A_WORKER = r"""
import functools, os, signal, sys, time
sys.path.insert(0, {here!r})
from test_vector import box_actions, make_fake
from haml.envs.base import EnvError
from haml.envs.vector import GymVectorEnv

fns = [functools.partial(make_fake, e) for e in range(2)]
envs = GymVectorEnv(fns, env="fake", task="pair", seed=0, asynchronous=True,
                    step_timeout={step_timeout})
envs.reset()
state = envs.state_dict()
print("workers", *[process.pid for process in envs._vec.processes], flush=True)
os.kill(envs._vec.processes[1].pid, signal.SIGSTOP)
print("stopped at", time.monotonic(), flush=True)
try:
    if {what!r} == "step":
        envs.step(box_actions(2, 0.0))
    elif {what!r} == "load_state_dict":
        envs.load_state_dict(state)
    envs.close()
except EnvError as err:
    print("EnvError:", err, flush=True)
print("returned", flush=True)
"""


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP")
@pytest.mark.parametrize("what", ["step", "load_state_dict", "close"])
def test_a_stopped_worker_ends_the_process_in_bounded_time(what):
    """A SIGSTOPped worker (as one stuck in native code): the step or state load is an EnvError
    after the timeout, close() gives up on it after the timeout, and the process then exits;
    every worker is gone. Run in a subprocess with a hard limit, so that a hang fails the test
    instead of the suite."""
    step_timeout = 2.0
    script = _STOP_A_WORKER.format(here=str(Path(__file__).parent), step_timeout=step_timeout,
                                   what=what)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=120)
        exited = time.monotonic()
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the process did not exit:\n{output}")
    lines = output.splitlines()
    workers = next((list(map(int, line.split()[1:])) for line in lines
                    if line.startswith("workers")), [])
    try:
        assert proc.returncode == 0 and "returned" in lines, output
        stopped_at = float(next(ln for ln in lines if ln.startswith("stopped at")).split()[-1])
        assert exited - stopped_at < step_timeout + 15, output
        if what == "close":
            assert "EnvError" not in output, output
        else:
            assert f"no answer within step_timeout={step_timeout} s from env(s) [1]" in output
        assert all(_gone(pid, within=5) for pid in workers), output
    finally:
        for pid in workers:  # a regression must not leave a stopped worker behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_the_first_reset_may_take_first_reset_timeout_later_ones_step_timeout():
    fns = [functools.partial(make_fake, e, reset_seconds=1.0) for e in range(2)]
    envs = GymVectorEnv(fns, env="fake", task="pair", seed=0, asynchronous=True, step_timeout=0.5,
                        first_reset_timeout=10.0)
    try:
        envs.reset()  # 1 s: > step_timeout, < first_reset_timeout
        with pytest.raises(EnvError, match=r"no answer within step_timeout=0.5 s"):
            envs.reset()
    finally:
        envs.close()
    envs = GymVectorEnv(fns, env="fake", task="pair", seed=0, asynchronous=True, step_timeout=0.2,
                        first_reset_timeout=0.5)
    try:
        with pytest.raises(EnvError, match=r"no answer within 0.5 s \(first_reset_timeout\)"):
            envs.reset()
    finally:
        envs.close()


def _make_fake_that_starts_a_child(env_index, pid_file, main_pid):
    """A fake env whose worker starts a long-lived child process (as SMAC starts StarCraft II)
    and writes its pid to ``pid_file``; in the main process (spaces only) it starts none."""
    if os.getpid() != main_pid:
        child = subprocess.Popen(["sleep", "600"])
        Path(pid_file).write_text(str(child.pid))
    return make_fake(env_index, hang_at=1)


@pytest.mark.skipif(sys.platform == "win32", reason="process groups")
def test_a_failure_stops_the_worker_with_the_processes_it_started(tmp_path):
    pid_file = tmp_path / "child.pid"
    fns = [functools.partial(_make_fake_that_starts_a_child, 0, pid_file, os.getpid())]
    envs = GymVectorEnv(fns, env="fake", task="one", seed=0, asynchronous=True, step_timeout=0.5)
    try:
        worker = envs._vec.processes[0]
        assert os.getpgid(worker.pid) == worker.pid != os.getpgrp()  # its own group
        child = int(pid_file.read_text())
        envs.reset()
        with pytest.raises(EnvError, match="no answer within"):
            envs.step([torch.zeros(1, 1), torch.zeros(1, 2)])
        assert _gone(child, within=5)
    finally:
        envs.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _make_fake_stuck_building(env_index, main_pid):
    if os.getpid() != main_pid:
        time.sleep(60)
    return make_fake(env_index)


def test_a_worker_stuck_building_its_env_is_an_error_not_a_hang():
    fns = [functools.partial(_make_fake_stuck_building, e, os.getpid()) for e in range(2)]
    start = time.monotonic()
    with pytest.raises(EnvError, match=r"failed to start: no answer within 1.0 s \(build_timeout"):
        GymVectorEnv(fns, env="fake", task="pair", asynchronous=True, step_timeout=0.5,
                     build_timeout=1.0)
    assert time.monotonic() - start < 10
    assert not multiprocessing.active_children()


def test_workers_ignore_sigint_and_the_main_process_keeps_its_handler():
    handler = signal.getsignal(signal.SIGINT)
    envs = make_vec(num_envs=2, asynchronous=True)
    try:
        assert signal.getsignal(signal.SIGINT) is handler
        envs.reset()
        for process in envs._vec.processes:
            os.kill(process.pid, signal.SIGINT)
        time.sleep(0.2)
        out = envs.step(box_actions(2, 0.0))  # the workers are still there
        assert out.state[:, 0].tolist() == [1.0, 1.0]
        assert envs.state_dict()["num_envs"] == 2
    finally:
        envs.close()


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler for the test: a session started in the background by a
    non-interactive shell inherits an ignored SIGINT, under which a Ctrl-C test cannot fail."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_ctrl_c_during_a_step_leaves_the_envs_whole_and_saveable(asynchronous, python_sigint):
    envs = make_vec(num_envs=2, asynchronous=asynchronous, step_seconds=0.4)
    try:
        envs.reset()
        timer = threading.Timer(0.15, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            envs.step(box_actions(2, 0.5))
        timer.join()
        # the interrupted step finished in every env and was recorded before the interrupt
        assert envs.current().state[:, 0].tolist() == [1.0, 1.0]
        state = envs.state_dict()
        assert state["episode_length"].tolist() == [1, 1]
        assert envs.step(box_actions(2, 0.5)).state[:, 0].tolist() == [2.0, 2.0]
    finally:
        envs.close()


@pytest.mark.parametrize("asynchronous", [False, True])
def test_an_ignored_sigint_stays_ignored_during_a_step(asynchronous):
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    envs = make_vec(num_envs=2, asynchronous=asynchronous, step_seconds=0.4)
    try:
        envs.reset()
        # two signals: a deferred Ctrl-C would have raised at the second one
        timers = [threading.Timer(t, os.kill, (os.getpid(), signal.SIGINT)) for t in (0.1, 0.2)]
        for timer in timers:
            timer.start()
        assert envs.step(box_actions(2, 0.5)).state[:, 0].tolist() == [1.0, 1.0]
        for timer in timers:
            timer.join()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
        envs.close()


def test_a_second_ctrl_c_abandons_a_stuck_step(python_sigint):
    fns = [functools.partial(make_fake, 0), functools.partial(make_fake, 1, hang_at=1)]
    envs = GymVectorEnv(fns, env="fake", task="pair", seed=0, asynchronous=True)
    try:
        envs.reset()
        timers = [threading.Timer(t, os.kill, (os.getpid(), signal.SIGINT)) for t in (0.2, 0.4)]
        for timer in timers:
            timer.start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            envs.step(box_actions(2, 0.0))
        assert time.monotonic() - start < 10
        with pytest.raises(RuntimeError, match="interrupted"):
            envs.step(box_actions(2, 0.0))
        assert not any(process.is_alive() for process in envs._vec.processes)
    finally:
        for timer in timers:
            timer.join()
        envs.close()


# -- the one builder of the gymnasium-based families ---------------------------------------------


def _vector_options(vectorization, **extra):
    return types.SimpleNamespace(
        vectorization=vectorization, step_timeout=5.0, start_method=None, **extra
    )


@pytest.mark.parametrize(
    "vectorization, num_envs, cpus, asynchronous",
    [
        ("sync", 4, 64, False),
        ("async", 1, 1, True),
        ("auto", 4, 8, True),
        ("auto", 4, 4, False),  # fewer cores than the family asks for
        ("auto", 1, 64, False),  # one env: nothing to overlap
    ],
)
def test_make_gym_vector_env_picks_the_mode_and_builds_one_factory_per_env(
    monkeypatch, vectorization, num_envs, cpus, asynchronous
):
    built = {}

    def record(env_fns, **kwargs):
        built.update(env_fns=env_fns, **kwargs)
        return "envs"

    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    options = _vector_options(vectorization)
    envs = make_gym_vector_env(
        functools.partial(make_fake), num_envs, options, env="fake", task="pair", seed=3,
        episode_limit=7, auto_async_min_cpus=8, vector_class=record,
    )
    assert envs == "envs"
    assert built["asynchronous"] is asynchronous
    assert [fn.args[-1] for fn in built["env_fns"]] == list(range(num_envs))  # the env index
    assert (built["env"], built["task"], built["seed"], built["episode_limit"]) == ("fake", "pair", 3, 7)
    assert (built["step_timeout"], built["context"], built["max_concurrency"]) == (5.0, None, None)
    assert built["first_reset_timeout"] is None  # the option where the family has it


def test_make_gym_vector_env_passes_max_concurrency_where_the_family_has_it():
    built = {}
    make_gym_vector_env(
        make_fake, 2, _vector_options("async", max_concurrency=1), env="fake", task="pair",
        vector_class=lambda env_fns, **kwargs: built.update(kwargs),
    )
    assert built["max_concurrency"] == 1


def test_make_gym_vector_env_checks_num_envs_and_builds_working_envs():
    with pytest.raises(ValueError, match="num_envs"):
        make_gym_vector_env(make_fake, 0, _vector_options("sync"), env="fake", task="pair")
    envs = make_gym_vector_env(make_fake, 2, _vector_options("sync"), env="fake", task="pair", seed=0)
    try:
        assert isinstance(envs, GymVectorEnv) and not envs.asynchronous
        assert envs.reset().state.shape == (2, 2)
    finally:
        envs.close()
