"""A recurrent policy learns what a memoryless one cannot: HAPPO on the toy "memory" task.

Each agent sees its cue only at the first step of a 3-step episode and must answer it at the last
(20% of the agents are dead for the whole episode). A memoryless policy earns 0.5 in expectation
whatever it learns; one that remembers its cue earns 1. HAPPO with GRU actors must reach an
evaluation return of 0.9 within 40k steps; the same run with MLP actors, given the same number of
steps, must stay at most 0.75 (the 64-episode mean of a memoryless policy is 0.5 ± 0.05).
"""

from __future__ import annotations

import pytest
import torch

from haml.config.loader import load_config
from haml.envs.registry import make_env
from haml.runners.on_policy import OnPolicyRunner

BUDGET = 40_000
TARGET = 0.9
MEMORYLESS_MAX = 0.75
EVAL_EVERY = 4
"""Iterations between evaluations (4 × 64 envs × 30 steps = 7680 steps)."""


@pytest.fixture(autouse=True)
def _one_thread():
    """Small networks and 64 envs: one intra-op thread is several times faster than two on a
    shared 2-core machine; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _runner(rnn: str, seed: int = 0) -> OnPolicyRunner:
    cfg = load_config(
        "happo", "toy", "memory",
        overrides=[
            f"seed={seed}",
            "env.options.death_prob=0.2",
            "env.options.delay=2",
            "train.num_envs=64",
            "train.rollout_length=30",
            "train.chunk_length=10",
            f"train.steps={BUDGET}",
            "actor.hidden=[32]",
            "critic.network.hidden=[32]",
            f"actor.rnn={rnn}",
        ],
    )
    torch.manual_seed(cfg.seed)
    options = cfg.env.options
    env = make_env("toy", "memory", num_envs=cfg.train.num_envs, seed=cfg.seed, **options)
    eval_env = make_env("toy", "memory", num_envs=64, seed=cfg.seed + 1, **options)
    return OnPolicyRunner(cfg, env, eval_env)


def _train(runner: OnPolicyRunner, max_iterations: int, stop_at: float | None) -> list[float]:
    """Evaluations (64 episodes, deterministic) every EVAL_EVERY iterations, until ``stop_at`` is
    reached or ``max_iterations`` have run."""
    returns = []
    while runner.iteration < max_iterations:
        runner.iterate()
        if runner.iteration % EVAL_EVERY == 0 or runner.iteration == max_iterations:
            returns.append(runner.run_eval(64, seed=runner.iteration).mean_return)
            if stop_at is not None and returns[-1] >= stop_at:
                break
    return returns


def test_a_gru_policy_learns_to_recall_its_cue_and_an_mlp_cannot():
    gru = _runner("gru")
    gru_returns = _train(gru, gru.total_iterations, stop_at=TARGET)
    assert gru_returns[-1] >= TARGET, (
        f"HAPPO with GRU actors did not reach {TARGET} within {gru.env_steps} steps: {gru_returns}"
    )
    assert gru.env_steps <= BUDGET + gru.batch_steps

    # The same number of steps without memory: the task needs it.
    mlp = _runner("none")
    mlp_returns = _train(mlp, max(gru.iteration, 2 * EVAL_EVERY), stop_at=None)
    assert max(mlp_returns) <= MEMORYLESS_MAX, (
        f"a memoryless policy scored {max(mlp_returns)} (> {MEMORYLESS_MAX}): the task does not "
        f"test memory; returns {mlp_returns}"
    )
