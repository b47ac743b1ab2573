"""The sequential update scheme of the on-policy runner ([HATRPO], eq. (10); Algorithms 2–3).

- agent i_m is weighted by M = Π_{j<m} π^{i_j}_new(a|o) / π^{i_j}_old(a|o), recomputed here from
  snapshots of the policies before and after their updates;
- HA algorithms draw a fresh permutation every iteration; MA algorithms keep M = 1;
- with one agent, HAPPO's update is PPO's and HATRPO's is TRPO's.
"""

from __future__ import annotations

import copy

import pytest
import torch

from haml.algorithms import algo_spec
from haml.config.schema import (
    ActorNetworkConfig,
    CriticConfig,
    ExperimentConfig,
    NetworkConfig,
    TrainConfig,
)
from haml.envs.toy import MatrixGame
from haml.models import joint_log_prob
from haml.runners.on_policy import OnPolicyRunner


def _config(algo: str, num_envs: int = 64, **algo_fields) -> ExperimentConfig:
    spec = algo_spec(algo)
    return ExperimentConfig(
        algo_name=algo,
        train=TrainConfig(steps=10**6, num_envs=num_envs, rollout_length=1),
        actor=ActorNetworkConfig(hidden=[8], layer_norm=False, input_norm=False),
        critic=CriticConfig(network=NetworkConfig(hidden=[8])),
        algo=spec.config_cls(**algo_fields),
    )


def _runner(algo: str, payoff: torch.Tensor, **algo_fields) -> OnPolicyRunner:
    cfg = _config(algo, **algo_fields)
    return OnPolicyRunner(cfg, MatrixGame(payoff, num_envs=cfg.train.num_envs))


class _Recorder:
    """Wraps each actor learner: records the batch, and the policy before and after its update."""

    def __init__(self, runner: OnPolicyRunner) -> None:
        self.calls: list[dict] = []
        for g, learner in enumerate(runner.actor_learners):
            self._wrap(g, learner)

    def _wrap(self, group: int, learner) -> None:
        update = learner.update

        def recording_update(batch):
            before = copy.deepcopy(learner.policy)
            metrics = update(batch)
            self.calls.append(
                {"group": group, "batch": batch, "before": before,
                 "after": copy.deepcopy(learner.policy)}
            )
            return metrics

        learner.update = recording_update


def _logp(policy, batch) -> torch.Tensor:
    with torch.no_grad():
        return joint_log_prob(policy.distribution(batch.obs), batch.actions)


@pytest.mark.parametrize("algo", ["happo", "haa2c", "hatrpo"])
def test_factor_is_the_product_of_the_ratios_of_the_agents_updated_before(algo):
    torch.manual_seed(0)
    payoff = torch.randn(3, 2, 4)
    fields = {"max_kl": 0.05} if algo == "hatrpo" else {"lr": 0.05}
    runner = _runner(algo, payoff, **fields)
    recorder = _Recorder(runner)
    runner.iterate()
    assert [c["group"] for c in recorder.calls] == runner.last_order
    expected = torch.ones(runner.cfg.train.num_envs)
    moved = False
    for call in recorder.calls:
        batch = call["batch"]
        torch.testing.assert_close(batch.factor, expected, rtol=1e-5, atol=1e-6)
        ratio = torch.exp(_logp(call["after"], batch) - _logp(call["before"], batch))
        moved |= not torch.allclose(ratio, torch.ones_like(ratio))
        expected = expected * ratio
    assert moved, "no agent's policy changed: the test would not see a wrong factor"


def test_permutation_changes_across_iterations():
    torch.manual_seed(0)
    runner = _runner("happo", torch.randn(2, 2, 2, 2))
    orders = set()
    for _ in range(12):
        runner.iterate()
        assert sorted(runner.last_order) == [0, 1, 2, 3]
        orders.add(tuple(runner.last_order))
    assert len(orders) > 3


@pytest.mark.parametrize("algo", ["mappo", "mappo_ns", "ippo", "maa2c_s", "maa2c_ns"])
def test_simultaneous_algorithms_keep_the_factor_at_one(algo):
    torch.manual_seed(0)
    runner = _runner(algo, torch.randn(3, 3), lr=0.05)
    recorder = _Recorder(runner)
    runner.iterate()
    shared = algo_spec(algo).share_actors
    assert len(recorder.calls) == (1 if shared else 2)
    for call in recorder.calls:
        assert torch.equal(call["batch"].factor, torch.ones_like(call["batch"].factor))
    if shared:  # one policy trained on both agents' samples
        assert call["batch"].obs.shape[0] == 2 * runner.cfg.train.num_envs


def test_happo_with_one_agent_is_ppo():
    """The whole update equals a hand-written PPO-clip loop with the same minibatch draws."""
    torch.manual_seed(0)
    runner = _runner("happo", torch.tensor([1.0, 0.0, 2.0]), lr=0.05, epochs=3, num_minibatches=2,
                     clip=0.2)
    recorder = _Recorder(runner)
    rng = None

    # Capture the RNG right before the actor update, to replay the same minibatch permutations.
    original = runner.actor_learners[0].update

    def capture(batch):
        nonlocal rng
        rng = torch.get_rng_state()
        return original(batch)

    runner.actor_learners[0].update = capture
    runner.iterate()
    call = recorder.calls[0]
    batch = call["batch"]
    assert torch.equal(batch.factor, torch.ones_like(batch.factor))

    policy = copy.deepcopy(call["before"])
    opt = torch.optim.Adam(policy.parameters(), lr=0.05, eps=1e-5)
    torch.set_rng_state(rng)
    n = batch.obs.shape[0]
    for _ in range(3):
        for idx in torch.randperm(n).chunk(2):
            logp = joint_log_prob(policy.distribution(batch.obs[idx]), batch.actions[idx])
            ratio = torch.exp(logp - batch.logp_old[idx])
            adv = batch.advantages[idx]
            pg_loss1 = ratio * adv
            pg_loss2 = ratio.clamp(0.8, 1.2) * adv
            loss = -torch.min(pg_loss1, pg_loss2).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
            opt.step()
    for p, q in zip(policy.parameters(), call["after"].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_hatrpo_with_one_agent_is_trpo():
    from haml.ops.line_search import reference

    torch.manual_seed(0)
    runner = _runner("hatrpo", torch.tensor([1.0, 0.0, 2.0]), max_kl=0.01)
    recorder = _Recorder(runner)
    runner.iterate()
    call = recorder.calls[0]
    batch = call["batch"]
    assert torch.equal(batch.factor, torch.ones_like(batch.factor))
    policy = copy.deepcopy(call["before"])
    info = reference.trust_region_step(
        policy, batch.obs, batch.actions, batch.logp_old, batch.advantages, None, None, 0.01
    )
    assert info.accepted
    for p, q in zip(policy.parameters(), call["after"].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
