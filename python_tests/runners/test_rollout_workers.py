"""Rollout workers (``train.rollout_workers``, :mod:`haml.runners.rollout_workers`).

- one in-process worker holding every env collects exactly the rollout of in-process collection,
  and training with it reaches the same parameters bit for bit;
- several workers give a full batch in env order, each env seeded as in-process;
- the weights go out as one object per iteration;
- a worker that fails is replaced and its slice re-collected (a log line, a full batch); one that
  keeps failing stops the run instead of hanging;
- resume: the same workers continue exactly; a checkpoint they cannot continue says so;
- with Ray: two real workers on the toy game (each slice equals the worker class run here from
  the same seeds), a killed worker replaced within the iteration, one ``ray.put`` per iteration.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import pytest
import torch

from haml.config.loader import load_config
from haml.envs.registry import make_env
from haml.models.build import policy_state_dicts
from haml.runners import make_runner
from haml.runners.rollout_workers import (
    RolloutWorker,
    RolloutWorkerError,
    RolloutWorkers,
    worker_slices,
)
from haml.utils.seeding import rng_state, seed_everything, set_rng_state

TOY = ("toy", "heterogeneity-trap", ["train.num_envs=6", "train.rollout_length=4"])
MAMUJOCO = (
    "mamujoco",
    "HalfCheetah-2x3",
    [
        "train.num_envs=3",
        "train.rollout_length=12",
        "actor.hidden=[8]",
        "critic.network.hidden=[8]",
        "env.options.episode_limit=5",
        "env.options.vectorization=sync",
    ],
)


def _cfg(case, workers: int, *more: str):
    env, task, overrides = case
    return load_config("happo", env, task, overrides=[*overrides, f"train.rollout_workers={workers}", *more])


def _runner(cfg, remote: bool = False, log=print):
    """A runner seeded with the run's seed; with ``cfg.train.rollout_workers`` in-process (or
    Ray) workers."""
    seed_everything(cfg.seed)
    env = make_env(cfg.env.name, cfg.env.task, num_envs=cfg.train.num_envs, seed=cfg.seed,
                   **cfg.env.options)
    workers = None
    if cfg.train.rollout_workers > 0:
        workers = RolloutWorkers(cfg, torch.device("cpu"), remote=remote, log=log)
    return make_runner(cfg, env, rollout_workers=workers)


def _assert_same_buffer(a, b) -> None:
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, list):
            assert len(x) == len(y), field.name
            for i, (u, v) in enumerate(zip(x, y)):
                assert (u is None) == (v is None) and (u is None or torch.equal(u, v)), (field.name, i)
        else:
            assert (x is None) == (y is None) and (x is None or torch.equal(x, y)), field.name


def _params(runner) -> list[torch.Tensor]:
    return [p.detach().clone() for m in runner.modules() for p in m.parameters()]


def _cases():
    cases = [pytest.param(TOY, id="toy")]
    try:
        import gymnasium_robotics  # noqa: F401
    except ImportError:
        return cases
    return [*cases, pytest.param(MAMUJOCO, id="mamujoco")]


def _collect_and_update(runner, iterations: int = 2):
    """``iterations`` of collect then update; returns the rollouts and their episodes."""
    rollouts = []
    for _ in range(iterations):  # the second rollout acts with weights the first update changed
        buffer, episodes = runner.collect()
        rollouts.append((_copy(buffer), [(e.ret, e.length, e.env) for e in episodes]))
        runner.update(buffer)
        runner.iteration += 1
    return rollouts


def _copy(buffer):
    return copy.deepcopy(buffer)  # the runner refills its buffer in place


@pytest.mark.parametrize("case", _cases())
def test_one_in_process_worker_collects_exactly_todays_rollout(case):
    today = _runner(_cfg(case, 0))
    expected = _collect_and_update(today)
    worker = _runner(_cfg(case, 1))
    got = _collect_and_update(worker)
    for (a, episodes_a), (b, episodes_b) in zip(expected, got):
        _assert_same_buffer(a, b)
        assert episodes_a == episodes_b
    for p, q in zip(_params(today), _params(worker)):
        assert torch.equal(p, q)
    assert today.env_steps == worker.env_steps


@pytest.mark.parametrize("case", _cases())
def test_workers_split_the_envs_and_give_a_full_batch_in_env_order(case):
    cfg = _cfg(case, 2)
    today, split = _runner(_cfg(case, 0)), _runner(cfg)
    (a, _), (b, episodes) = today.collect(), split.collect()
    assert b.reward.shape == a.reward.shape == (cfg.train.rollout_length, cfg.train.num_envs)
    # Env e starts from the same seed, whichever worker holds it.
    torch.testing.assert_close(b.state[0], a.state[0], rtol=0, atol=0)
    assert {e.env for e in episodes} <= set(range(cfg.train.num_envs))
    assert worker_slices(7, 3) == [(0, 3), (3, 5), (5, 7)]
    with pytest.raises(ValueError, match="rollout_workers"):
        worker_slices(2, 3)


def test_the_weights_go_out_as_one_object_per_iteration():
    runner = _runner(_cfg(TOY, 3))
    for _ in range(3):
        runner.iterate()
    assert runner.rollout_workers._transport.puts == 3
    timing = runner.rollout_workers.last_timing
    assert timing["weight_bytes"] > 0 and timing["rollout_bytes"] > 0


def test_a_failed_worker_is_replaced_and_its_rollout_collected_again(monkeypatch):
    cfg = _cfg(TOY, 2)
    heard: list[str] = []
    runner = _runner(cfg, log=heard.append)
    collect = RolloutWorker.collect
    failures = []

    def fails_once(self, box):
        if self.index == 1 and not failures:
            failures.append(self.index)
            raise RuntimeError("simulated crash")
        return collect(self, box)

    monkeypatch.setattr(RolloutWorker, "collect", fails_once)
    buffer, _ = runner.collect()
    assert buffer.reward.shape == (cfg.train.rollout_length, cfg.train.num_envs)
    assert runner.rollout_workers.replacements == 1
    assert len(heard) == 1 and "rollout worker 1 (envs 3-5) lost (RuntimeError: simulated crash)" in heard[0]
    assert "re-collecting its rollout" in heard[0]
    # The replacement's envs are seeded anew (not the lost worker's seeds again).
    assert runner.rollout_workers.workers[1].seed == cfg.seed + 3 + cfg.train.num_envs


def test_a_worker_that_keeps_failing_stops_the_run(monkeypatch):
    runner = _runner(_cfg(TOY, 2), log=lambda _: None)

    def always_fails(self, box):
        raise RuntimeError("broken env")

    monkeypatch.setattr(RolloutWorker, "collect", always_fails)
    with pytest.raises(RolloutWorkerError, match="failed 4 times in a row, last: RuntimeError: broken env"):
        runner.collect()


def test_a_worker_that_does_not_start_is_an_error_at_once(monkeypatch):
    def broken(self):
        raise RuntimeError("no simulator here")

    monkeypatch.setattr(RolloutWorker, "ping", broken)
    with pytest.raises(RolloutWorkerError, match=r"rollout worker 0 \(envs 0-2\) did not start: RuntimeError"):
        _runner(_cfg(TOY, 2))


@pytest.mark.parametrize("case", _cases())
def test_resumed_workers_continue_exactly(case):
    cfg = _cfg(case, 2)
    straight = _runner(cfg)
    for _ in range(2):
        straight.iterate()
    state, rng = copy.deepcopy(straight.state_dict()), rng_state()  # a checkpoint: a copy
    for _ in range(2):
        straight.iterate()
    resumed = _runner(cfg)
    resumed.load_state_dict(state)
    set_rng_state(rng)
    for _ in range(2):
        resumed.iterate()
    for p, q in zip(_params(straight), _params(resumed)):
        assert torch.equal(p, q)


def test_a_checkpoint_of_another_split_restarts_the_envs_and_says_so():
    in_process = _runner(_cfg(TOY, 0))
    in_process.iterate()
    heard: list[str] = []
    workers = _runner(_cfg(TOY, 2))
    workers.load_state_dict(in_process.state_dict(), on_warning=heard.append)
    assert len(heard) == 1 and "in-process collection" in heard[0] and "freshly reset" in heard[0]
    assert workers.iteration == 1
    workers.iterate()


def test_rollout_workers_are_for_on_policy_algorithms_and_registered_envs():
    cfg = load_config("haddpg", "toy", "figure1", overrides=["train.num_envs=4", "train.rollout_workers=2"])
    env = make_env("toy", "figure1", num_envs=4)
    with pytest.raises(ValueError, match="only on-policy algorithms"):
        make_runner(cfg, env)
    with pytest.raises(ValueError, match="must not exceed train.num_envs"):
        _cfg(TOY, 7)


# ------------------------------------------------------------------------------------------------
# Ray


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already connected in this process")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        yield ray
    finally:
        ray.shutdown()


def test_two_ray_workers_collect_replace_a_killed_one_and_resume(local_ray, monkeypatch):
    from haml.runners.rollout_workers import _worker_rng_seed

    ray = local_ray
    cfg = _cfg(TOY, 2)
    heard: list[str] = []
    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value: puts.append(1) or real_put(value))
    runner = _runner(cfg, remote=True, log=heard.append)
    try:
        buffer, _ = runner.collect()
        # Each slice is what the worker class collects here from the same seeds.
        for k, (start, stop) in enumerate(worker_slices(cfg.train.num_envs, 2)):
            seed_everything(_worker_rng_seed(cfg.seed, k, 0))
            alone = RolloutWorker(cfg, k, start, stop)
            part = alone.collect([policy_state_dicts(runner.policies)])["buffer"]
            for i in range(len(buffer.actions)):
                assert torch.equal(buffer.actions[i][:, start:stop], part.actions[i])
                assert torch.equal(buffer.logp[i][:, start:stop], part.logp[i])
            alone.close()
        runner.update(buffer)
        runner.iteration += 1
        state, rng = copy.deepcopy(runner.state_dict()), rng_state()
        metrics = runner.iterate()
        second = _params(runner)
        # Kill worker 0 while its rollout is in flight (right after it was asked for it).
        transport = runner.rollout_workers._transport
        submit = transport.submit

        def submit_then_kill(worker, method, *args):
            future = submit(worker, method, *args)
            if method == "collect" and worker is runner.rollout_workers.workers[0] and not killed_once:
                killed_once.append(worker)
                ray.kill(worker, no_restart=True)
            return future

        killed_once: list = []
        monkeypatch.setattr(transport, "submit", submit_then_kill)
        shapes = []
        update = runner.update
        monkeypatch.setattr(runner, "update", lambda batch: shapes.append(batch.reward.shape) or update(batch))
        killed = runner.iterate()
        assert len(killed_once) == 1
        assert shapes == [(cfg.train.rollout_length, cfg.train.num_envs)]  # the whole batch
        assert set(killed) == set(metrics)
        assert len(heard) == 1 and "rollout worker 0 (envs 0-2) lost" in heard[0]
        assert runner.rollout_workers.replacements == 1
        assert len(puts) == runner.iteration == 3  # one object per iteration
    finally:
        runner.close()
    # Fresh workers resume from the checkpoint: the second iteration again, exactly.
    resumed = _runner(cfg, remote=True)
    try:
        resumed.load_state_dict(state)
        set_rng_state(rng)
        resumed.iterate()
        for p, q in zip(second, _params(resumed)):
            assert torch.equal(p, q)
    finally:
        resumed.close()


def test_more_ray_workers_than_free_cpus_is_an_error_at_once(local_ray, monkeypatch):
    # 3 workers on a 2-CPU Ray instance: refused when the pool starts (after the short wait for
    # CPUs being freed), not after train.rollout_timeout.
    from haml.runners import rollout_workers as RW

    monkeypatch.setattr(RW, "ROOM_WAIT_SECONDS", 0.5)
    cfg = _cfg(TOY, 3)
    start = time.monotonic()
    with pytest.raises(RolloutWorkerError, match="needs 3 free CPUs of the Ray cluster, which has 2"):
        _runner(cfg, remote=True)
    assert time.monotonic() - start < cfg.train.rollout_timeout
