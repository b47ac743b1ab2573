"""Every discrete-action algorithm trains through the SMAC adapter (on the StarCraft2Env fake):
masks, dying agents, wins and recurrent policies, end to end through its runner."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from fake_starcraft import FakeStarCraft2Env

from haml.algorithms import algo_spec, algos_for_action_kind
from haml.config.loader import load_config
from haml.envs import smac
from haml.runners import Runner
from haml.runners import make_runner as make_algo_runner

# Agent 1 dies at step 2 and every episode is won at step 4: masks change, active masks turn off,
# and the win rate is 1.
SCRIPT = {"ally_deaths": {1: 2}, "win_at": 4, "episode_limit": 6}


# Off-policy: an iteration is 10 vector steps of the 2 envs; the first is the warm-up, the
# second stores enough for a batch and updates twice.
OFF_POLICY = ["algo.warmup_steps=20", "algo.train_every=10", "algo.batch_size=16",
              "algo.updates_per_step=0.1", "algo.buffer_size=1000"]


def make_runner(algo: str, rnn: str = "none") -> Runner:
    off_policy = algo_spec(algo).runner == "off_policy"
    cfg = load_config(
        algo,
        "smac",
        "3m",
        overrides=[
            "train.num_envs=2",
            "train.rollout_length=10",
            "train.chunk_length=5",
            "actor.hidden=[16]",
            "critic.network.hidden=[16]",
            f"actor.rnn={rnn}",
            f"critic.network.rnn={rnn}",
            *(OFF_POLICY if off_policy else []),
        ],
    )
    options = smac.Options(env_factory=functools.partial(FakeStarCraft2Env, **SCRIPT),
                           vectorization="sync")
    env = smac.make_vector_env("3m", 2, options, seed=0)
    return make_algo_runner(cfg, env)


@pytest.mark.parametrize("algo", algos_for_action_kind("discrete"))
def test_every_algorithm_runs_on_the_smac_fake(algo):
    runner = make_runner(algo)
    try:
        before = [p.detach().clone() for p in runner.policies[0].parameters()]
        for _ in range(2):
            metrics = runner.iterate()
        assert all(math.isfinite(v) for v in metrics.values())
        assert metrics["charts/train_win_rate"] == 1.0
        after = list(runner.policies[0].parameters())
        assert any(not torch.equal(b, a) for b, a in zip(before, after)), "the policy did not move"
    finally:
        runner.env.close()


@pytest.mark.parametrize("algo", ["happo", "hatrpo", "mappo"])
def test_recurrent_policies_run_on_the_smac_fake(algo):
    runner = make_runner(algo, rnn="gru")
    try:
        for _ in range(2):
            metrics = runner.iterate()
        assert all(math.isfinite(v) for v in metrics.values())
    finally:
        runner.env.close()


def test_dead_agents_only_take_the_noop_and_are_inactive_in_the_batch():
    runner = make_runner("happo")
    try:
        buffer, _ = runner.collect()
        active = buffer.active_masks[1]
        assert (~active).any() and active.any()
        # The fake's dead agent may only no-op (action 0): the masked policy never picks another.
        assert (buffer.actions[1][~active] == 0).all()
        adv, _, _, _ = runner.advantages(buffer)
        batch = runner._actor_batch(buffer, [1], adv, torch.ones_like(buffer.reward))
        assert torch.equal(batch.mask, active.reshape(-1))
    finally:
        runner.env.close()
