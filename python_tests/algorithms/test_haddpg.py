"""haml.algorithms.haddpg: the config's checks, the critic target, what the critic sees in the HA
and MA actor phases, the fresh permutation, fast-vs-reference parity and exact resume."""

from __future__ import annotations

import copy
import dataclasses
import types

import pytest
import torch
from gymnasium import spaces

from haml.algorithms.haddpg import (
    DDPGLearner,
    DDPGMetrics,
    HADDPGConfig,
    reference_update,
)
from haml.models import DeterministicPolicy, QCritic
from offpolicy_checks import assert_target_critic_moves_by_tau, box_batch

OBS_DIMS = (4, 6, 3)
ACTION_DIMS = (2, 1, 3)
STATE_DIM = 5


def make_learner(
    sequential: bool = True,
    dtype: torch.dtype = torch.float32,
    hidden: tuple[int, ...] = (16, 16),
    seed: int = 0,
    critic_norms: bool = False,
    **cfg_overrides,
) -> DDPGLearner:
    torch.manual_seed(seed)
    policies = [
        DeterministicPolicy(o, spaces.Box(-1.0, 1.0, (d,)), hidden=hidden, dtype=dtype)
        for o, d in zip(OBS_DIMS, ACTION_DIMS)
    ]
    critic = QCritic(STATE_DIM, ACTION_DIMS, hidden=hidden, layer_norm=critic_norms,
                     input_norm=critic_norms, dtype=dtype)
    cfg = HADDPGConfig(**{"batch_size": 32, **cfg_overrides})
    return DDPGLearner(policies, critic, cfg, gamma=0.99, sequential=sequential)


def make_batch(
    B: int = 32, dtype: torch.dtype = torch.float32, seed: int = 1, active: bool = False
) -> types.SimpleNamespace:
    return box_batch(OBS_DIMS, ACTION_DIMS, STATE_DIM, n_step=3, B=B, dtype=dtype, seed=seed,
                     active=active)


def all_parameters(learner: DDPGLearner) -> list[torch.Tensor]:
    modules = [learner.critic, *learner.policies, learner.target_critic, *learner.target_policies]
    return [p.detach() for m in modules for p in m.parameters()]


# -- config -------------------------------------------------------------------------------------


def test_defaults_are_the_papers():
    cfg = HADDPGConfig()
    assert (cfg.actor_lr, cfg.critic_lr, cfg.tau) == (3e-4, 1e-3, 0.1)
    assert (cfg.batch_size, cfg.buffer_size, cfg.warmup_steps) == (1000, 1_000_000, 25_000)
    assert (cfg.updates_per_step, cfg.exploration_noise, cfg.n_step) == (0.025, 0.1, 1)
    assert (cfg.loss, cfg.successor_actions, cfg.max_grad_norm) == ("mse", "buffer", 0.0)
    for field in dataclasses.fields(HADDPGConfig):
        assert field.default is not dataclasses.MISSING


@pytest.mark.parametrize(
    "key, value",
    [
        ("tau", 0.0), ("tau", -0.5), ("tau", 1.5), ("n_step", 0), ("n_step", -2),
        ("actor_lr", 0.0), ("critic_lr", -1e-3), ("batch_size", 0), ("buffer_size", 0),
        ("buffer_size", 999), ("warmup_steps", -1), ("updates_per_step", 0.0),
        ("train_every", 0), ("exploration_noise", -0.1), ("huber_delta", 0.0),
        ("max_grad_norm", -1.0), ("loss", "l1"), ("successor_actions", "random"),
    ],
)
def test_bad_config_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=rf"algo\.{key}\b"):
        HADDPGConfig(**{key: value})


def test_edge_values_are_accepted():
    HADDPGConfig(tau=1.0, warmup_steps=0, exploration_noise=0.0, buffer_size=1000, loss="huber",
                 successor_actions="policy")


def test_learner_refuses_what_it_cannot_train():
    learner = make_learner()
    policies, critic, cfg = learner.policies, learner.critic, learner.cfg
    with pytest.raises(ValueError, match="own policy"):
        DDPGLearner([policies[0], policies[0], policies[2]], critic, cfg, 0.99)
    with pytest.raises(ValueError, match="twin"):
        DDPGLearner(policies, QCritic(STATE_DIM, ACTION_DIMS, twin=True), cfg, 0.99)
    with pytest.raises(ValueError, match="action_dims"):
        DDPGLearner(policies, QCritic(STATE_DIM, (2, 1, 2)), cfg, 0.99)
    with pytest.raises(ValueError, match="gamma"):
        DDPGLearner(policies, critic, cfg, 1.5)


# -- the critic ---------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_critic_target_against_a_hand_computation(loss):
    # Linear networks (no hidden layer) and an unbounded Box, so Q' and μ' are written out by hand.
    torch.manual_seed(4)
    dtype = torch.float64
    policies = [DeterministicPolicy(o, spaces.Box(-float("inf"), float("inf"), (d,)), hidden=(),
                                    dtype=dtype) for o, d in zip(OBS_DIMS, ACTION_DIMS)]
    critic = QCritic(STATE_DIM, ACTION_DIMS, hidden=(), dtype=dtype)
    learner = DDPGLearner(policies, critic, HADDPGConfig(loss=loss, huber_delta=0.5), 0.99)
    with torch.no_grad():  # targets that differ from the online networks
        for p in [*learner.target_critic.parameters(), *(p for t in learner.target_policies
                                                         for p in t.parameters())]:
            p.add_(0.3 * torch.randn(p.shape, dtype=dtype))
    batch = make_batch(dtype=dtype)

    def linear(module, x):
        return x @ module.weight.T + module.bias

    mu_next = [linear(t.head, o) for t, o in zip(learner.target_policies, batch.next_obs)]
    q_next = linear(learner.target_critic.nets[0][0], torch.cat([batch.next_state, *mu_next], -1))
    y = batch.reward + batch.discount * q_next.squeeze(-1)
    q = linear(critic.nets[0][0], torch.cat([batch.state, *batch.actions], -1)).squeeze(-1)
    err = q - y
    if loss == "mse":
        expected = (err**2).mean()
    else:
        expected = torch.where(err.abs() < 0.5, 0.5 * err**2, 0.5 * (err.abs() - 0.25)).mean()
    q_loss, q_mean = learner.critic_step(batch)
    torch.testing.assert_close(q_loss, expected.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(q_mean, q.mean().detach(), rtol=1e-12, atol=0)


def test_a_terminated_sample_does_not_bootstrap():
    learner = make_learner(dtype=torch.float64)
    batch = make_batch(dtype=torch.float64)
    batch.discount = torch.zeros_like(batch.discount)
    batch.next_obs = tuple(torch.full_like(o, 1e6) for o in batch.next_obs)  # ignored
    with torch.no_grad():
        q = learner.critic(batch.state, batch.actions)
    q_loss, _ = learner.critic_step(batch)
    torch.testing.assert_close(q_loss, ((q - batch.reward) ** 2).mean(), rtol=1e-12, atol=0)


# -- what the critic sees in the actor phase ----------------------------------------------------


class Recorder:
    """Wraps a critic method; records the joint action of every call (detached) and which entry
    carries a gradient."""

    def __init__(self, critic: QCritic, method: str) -> None:
        self.calls: list[tuple[list[torch.Tensor], list[bool]]] = []
        original = getattr(critic, method)

        def record(first, actions, **kwargs):
            joint = [a.detach().clone() for a in actions]
            self.calls.append((joint, [a.requires_grad for a in actions]))
            return original(first, actions, **kwargs)

        setattr(critic, method, record)


def check_critic_inputs(learner, batch, calls, order, before, mode):
    """Agent i_m's call: its own action μ^{i_m}(o) (before its step, with a gradient), its
    predecessors' new actions (HA), the others' buffer or pre-update policy actions."""
    n = learner.n_agents
    with torch.no_grad():
        after = [mu(o) for mu, o in zip(learner.policies, batch.obs)]
    assert len(calls) == n
    for m, (i, (joint, grads)) in enumerate(zip(order, calls)):
        assert grads == [j == i for j in range(n)]
        predecessors = set(order[:m]) if learner.sequential else set()
        for j in range(n):
            if j == i:
                expected = before[j]
            elif j in predecessors:
                expected = after[j]
            elif mode == "policy":
                expected = before[j]
            else:
                expected = batch.actions[j]
            torch.testing.assert_close(joint[j], expected, rtol=0, atol=1e-6,
                                       msg=lambda s: f"agent {j} in agent {i}'s call: {s}")
        for j in predecessors:  # a real change, so the check above tells new from old
            assert not torch.allclose(before[j], after[j], atol=1e-6)


@pytest.mark.parametrize("sequential", [True, False])
@pytest.mark.parametrize("mode", ["buffer", "policy"])
@pytest.mark.parametrize("path", ["fast", "reference"])
def test_critic_inputs_in_the_actor_phase(sequential, mode, path):
    learner = make_learner(sequential=sequential, successor_actions=mode, actor_lr=1e-2)
    batch = make_batch()
    recorder = Recorder(learner.critic, "q_from" if path == "fast" else "forward")
    with torch.no_grad():
        before = [mu(o) for mu, o in zip(learner.policies, batch.obs)]
    seen: list[tuple[int, int]] = []
    on_agent = lambda m, i, loss: seen.append((m, i))  # noqa: E731
    rng = torch.get_rng_state()
    if path == "fast":
        learner.update(batch, on_agent)
        calls = recorder.calls
    else:
        reference_update(learner, batch, on_agent)
        calls = recorder.calls[1:]  # the first is the critic step's Q(s, a)
        assert all(torch.equal(a, b) for a, b in zip(recorder.calls[0][0], batch.actions))
    assert [m for m, _ in seen] == list(range(3))
    order = [i for _, i in seen]
    assert sorted(order) == [0, 1, 2]
    if not sequential:
        assert order == [0, 1, 2]
        assert torch.equal(torch.get_rng_state(), rng)  # MA draws no permutation
    check_critic_inputs(learner, batch, calls, order, before, mode)


def test_the_permutation_is_fresh_every_update_from_the_global_rng():
    learner = make_learner()
    batch = make_batch()
    torch.manual_seed(123)
    orders = []
    for _ in range(12):
        seen: list[int] = []
        learner.update(batch, lambda m, i, loss: seen.append(i))
        orders.append(seen)
    torch.manual_seed(123)
    assert orders == [torch.randperm(3).tolist() for _ in range(12)]
    assert len({tuple(o) for o in orders}) > 2


def test_the_actor_step_ascends_q():
    learner = make_learner(sequential=False, actor_lr=1e-3)
    batch = make_batch()
    learner.critic_step(batch)

    def q_of(agent):
        with torch.no_grad():
            joint = list(batch.actions)
            joint[agent] = learner.policies[agent](batch.obs[agent])
            return learner.critic(batch.state, joint).mean()

    before = [q_of(i) for i in range(3)]
    losses = learner.actor_phase(batch)
    for i in range(3):
        torch.testing.assert_close(losses[i], -before[i])
        assert q_of(i) > before[i]


def test_inactive_samples_weigh_nothing():
    learner = make_learner(dtype=torch.float64)
    batch = make_batch(dtype=torch.float64, active=True)
    dead = torch.zeros_like(batch.active_masks[0])
    batch.active_masks = (dead, *batch.active_masks[1:])
    frozen = [p.detach().clone() for p in learner.policies[0].parameters()]
    metrics = learner.update(batch)
    assert metrics.actor_losses[0] == 0
    for p, q in zip(learner.policies[0].parameters(), frozen):
        assert torch.equal(p, q)


def test_metrics_are_detached_tensors():
    learner = make_learner()
    metrics = learner.update(make_batch())
    assert isinstance(metrics, DDPGMetrics)
    assert len(metrics.actor_losses) == 3
    for t in (metrics.q_loss, metrics.q_mean, *metrics.actor_losses):
        assert isinstance(t, torch.Tensor) and t.dim() == 0 and not t.requires_grad
    learner.set_progress(0.5)  # no schedule: accepted, changes nothing


def test_targets_move_by_tau():
    assert_target_critic_moves_by_tau(make_learner, make_batch())


# -- parity with the reference, resume ----------------------------------------------------------


# With the SMAX/SMAC/MPE critic (input and hidden LayerNorms) the state term is the input
# norm's split (haml.models.q_critic); the reference runs the whole critic.
@pytest.mark.parametrize("critic_norms", [False, True], ids=["plain", "norms"])
@pytest.mark.parametrize(
    "dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)], ids=["f32", "f64"]
)
@pytest.mark.parametrize(
    "sequential, overrides, active",
    [
        (True, {}, False),
        (True, {"successor_actions": "policy"}, False),
        (True, {"loss": "huber", "max_grad_norm": 0.5}, True),
        (False, {}, False),
        (False, {"successor_actions": "policy"}, True),
    ],
    ids=["ha", "ha-policy", "ha-huber-clip-masks", "ma", "ma-policy-masks"],
)
def test_fast_update_matches_the_reference(critic_norms, dtype, tol, sequential, overrides, active):
    fast = make_learner(sequential=sequential, dtype=dtype, hidden=(32, 32),
                        critic_norms=critic_norms, **overrides)
    slow = copy.deepcopy(fast)
    for step in range(3):
        batch = make_batch(dtype=dtype, seed=10 + step, active=active)
        torch.manual_seed(step)
        m_fast = fast.update(batch)
        torch.manual_seed(step)
        m_slow = reference_update(slow, batch)
        torch.testing.assert_close(m_fast.q_loss, m_slow.q_loss, rtol=0, atol=tol)
        torch.testing.assert_close(m_fast.q_mean, m_slow.q_mean, rtol=0, atol=tol)
        for a, b in zip(m_fast.actor_losses, m_slow.actor_losses):
            torch.testing.assert_close(a, b, rtol=0, atol=tol)
        for a, b in zip(all_parameters(fast), all_parameters(slow)):
            torch.testing.assert_close(a, b, rtol=0, atol=tol)
    # The reference leaves no gradient behind on the critic (its actor losses reached it).
    assert all(p.grad is None for p in slow.critic.parameters())


def test_state_dict_round_trip_gives_the_identical_next_update():
    first = make_learner(successor_actions="policy")
    for step in range(2):
        first.update(make_batch(seed=step))
    saved = copy.deepcopy(first.state_dict())
    policies = [copy.deepcopy(p.state_dict()) for p in first.policies]

    second = make_learner(successor_actions="policy", seed=99)  # other initial weights
    for policy, state in zip(second.policies, policies):
        policy.load_state_dict(state)
    second.load_state_dict(saved)

    batch = make_batch(seed=7)
    torch.manual_seed(5)
    a = first.update(batch)
    torch.manual_seed(5)
    b = second.update(batch)
    assert torch.equal(a.q_loss, b.q_loss)
    for x, y in zip(all_parameters(first), all_parameters(second)):
        assert torch.equal(x, y)
    for opt_a, opt_b in zip(first.actor_optimizers, second.actor_optimizers):
        for sa, sb in zip(opt_a.state.values(), opt_b.state.values()):
            assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_state_dict_refuses_another_agent_count():
    state = make_learner().state_dict()
    state["target_policies"] = state["target_policies"][:2]
    with pytest.raises(ValueError, match="2 agents"):
        make_learner().load_state_dict(state)


def test_the_bench_runs_both_updates(capsys):
    from haml.bench.haddpg import AGENTS, haddpg_cases, main
    from haml.bench.ops import Options

    cases = haddpg_cases(torch.device("cpu"), Options.make(compile=False))
    assert [c.shape["agents"] for c in cases] == list(AGENTS) == [2, 6]
    assert cases[1].targets and cases[1].targets[0].bound == 2.0
    assert main(["--quick", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "agents=2" in out and "ref/fast" in out


def test_haml_bench_haddpg_reaches_the_bench(monkeypatch):
    from haml import cli
    from haml.bench import haddpg

    seen = []
    monkeypatch.setattr(haddpg, "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["bench", "haddpg", "--quick", "--threads", "1"]) == 0
    assert seen == [["--quick", "--threads", "1"]]
