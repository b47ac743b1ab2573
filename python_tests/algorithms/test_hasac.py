"""haml.algorithms.hasac: the config's checks, the soft critic target, the temperatures' steps
toward the target entropy, the Discrete agent's exact expectation, what the critic sees in the
HA and MA actor phases (predecessors' re-sampled new actions), fast-vs-reference parity, exact
resume, and learning: a continuous coordination game and the heterogeneity trap."""

from __future__ import annotations

import copy
import dataclasses
import math
import types

import pytest
import torch
from gymnasium import spaces

from haml.algorithms.haddpg import DDPGMetrics
from haml.algorithms.hasac import HASACConfig, SACLearner, reference_update
from haml.logging import metrics as M
from haml.models import QCritic
from haml.models.soft_policy import SoftCategoricalPolicy, SquashedGaussianPolicy
from offpolicy_checks import assert_target_critic_moves_by_tau

OBS_DIMS = (4, 6, 3)
STATE_DIM = 5
BOX = "box"


def make_policies(kinds, dtype, hidden, log_std=(-20.0, 2.0)):
    """``kinds``: per agent ``("box", d)`` or ``("discrete", n)``."""
    policies = []
    for obs_dim, (kind, size) in zip(OBS_DIMS, kinds):
        if kind == BOX:
            policies.append(SquashedGaussianPolicy(
                obs_dim, spaces.Box(-1.0, 1.0, (size,)), hidden=hidden, log_std_min=log_std[0],
                log_std_max=log_std[1], dtype=dtype))
        else:
            policies.append(SoftCategoricalPolicy(obs_dim, spaces.Discrete(size), hidden=hidden,
                                                  dtype=dtype))
    return policies


CONTINUOUS = ((BOX, 2), (BOX, 1), (BOX, 3))
MIXED = ((BOX, 2), ("discrete", 4), ("discrete", 3))
DISCRETE = (("discrete", 3), ("discrete", 4), ("discrete", 2))


def make_learner(kinds=CONTINUOUS, sequential=True, dtype=torch.float32, hidden=(16, 16), seed=0,
                 log_std=(-20.0, 2.0), critic_norms=False, **cfg_overrides) -> SACLearner:
    torch.manual_seed(seed)
    policies = make_policies(kinds, dtype, hidden, log_std)
    critic = QCritic(STATE_DIM, [p.action_dim for p in policies], hidden=hidden, twin=True,
                     layer_norm=critic_norms, input_norm=critic_norms, dtype=dtype)
    cfg = HASACConfig(**{"batch_size": 32, "alpha": 0.05, **cfg_overrides})
    return SACLearner(policies, critic, cfg, gamma=0.99, sequential=sequential)


def make_batch(kinds=CONTINUOUS, B=32, dtype=torch.float32, seed=1, active=False, masks=False):
    """A hand-built batch with the fields of haml.buffers.replay.ReplaySample."""
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    def mask_for(n):
        m = torch.rand(B, n, generator=gen) < 0.6
        m[torch.arange(B), torch.randint(n, (B,), generator=gen)] = True  # one available at least
        return m

    actions, action_masks, next_masks = [], [], []
    for kind, size in kinds:
        if kind == BOX:
            actions.append(draw(B, size).clamp(-0.99, 0.99))
            action_masks.append(None)
        else:
            mask = mask_for(size)
            action_masks.append(mask)
            actions.append(torch.multinomial(mask.float(), 1, generator=gen).squeeze(1))
        next_masks.append(None if kind == BOX else mask_for(size))
    terminated = torch.rand(B, generator=gen) < 0.2
    active_masks = tuple(torch.rand(B, generator=gen) < 0.7 for _ in kinds) if active else None
    use_masks = masks and all(kind != BOX for kind, _ in kinds)
    return types.SimpleNamespace(
        obs=tuple(draw(B, o) for o in OBS_DIMS[:len(kinds)]),
        state=draw(B, STATE_DIM),
        actions=tuple(actions),
        action_masks=tuple(action_masks) if use_masks else None,
        active_masks=active_masks,
        reward=draw(B),
        discount=0.99**3 * (~terminated).to(dtype),
        next_obs=tuple(draw(B, o) for o in OBS_DIMS[:len(kinds)]),
        next_state=draw(B, STATE_DIM),
        next_action_masks=tuple(next_masks) if use_masks else None,
        steps=torch.full((B,), 3, dtype=torch.int64),
    )


def all_parameters(learner: SACLearner) -> list[torch.Tensor]:
    modules = [learner.critic, *learner.policies, learner.target_critic]
    return [p.detach() for m in modules for p in m.parameters()] + [
        a.detach() for a in learner.log_alphas]


# -- config -------------------------------------------------------------------------------------


def test_defaults_are_the_authors():
    cfg = HASACConfig()
    assert (cfg.actor_lr, cfg.critic_lr, cfg.tau, cfg.n_step) == (5e-4, 5e-4, 0.005, 20)
    assert (cfg.batch_size, cfg.buffer_size, cfg.warmup_steps) == (1000, 1_000_000, 10_000)
    assert (cfg.updates_per_step, cfg.train_every) == (0.05, 50)
    assert (cfg.alpha, cfg.auto_alpha, cfg.alpha_lr) == (0.001, False, 3e-4)
    assert (cfg.loss, cfg.huber_delta, cfg.log_std_min, cfg.log_std_max) == ("huber", 10.0, -20.0, 2.0)
    assert cfg.target_entropy_per_dim == -1.0 and 0 < cfg.target_entropy_ratio <= 1
    for field in dataclasses.fields(HASACConfig):
        assert field.default is not dataclasses.MISSING


@pytest.mark.parametrize(
    "key, value",
    [
        ("tau", 0.0), ("tau", 1.5), ("n_step", 0), ("actor_lr", 0.0), ("critic_lr", -1e-3),
        ("batch_size", 0), ("buffer_size", 999), ("warmup_steps", -1), ("updates_per_step", 0.0),
        ("train_every", 0), ("alpha", 0.0), ("alpha_lr", 0.0), ("huber_delta", 0.0),
        ("target_entropy_ratio", 0.0), ("target_entropy_ratio", 1.5),
        ("target_entropy_per_dim", math.inf), ("log_std_min", 3.0), ("max_grad_norm", -1.0),
        ("loss", "l1"),
    ],
)
def test_bad_config_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=rf"algo\.{key}\b"):
        HASACConfig(**{key: value})


def test_learner_refuses_what_it_cannot_train():
    learner = make_learner()
    policies, critic, cfg = learner.policies, learner.critic, learner.cfg
    with pytest.raises(ValueError, match="own policy"):
        SACLearner([policies[0], policies[0], policies[2]], critic, cfg, 0.99)
    with pytest.raises(ValueError, match="twin"):
        SACLearner(policies, QCritic(STATE_DIM, (2, 1, 3)), cfg, 0.99)
    with pytest.raises(ValueError, match="action_dims"):
        SACLearner(policies, QCritic(STATE_DIM, (2, 1, 2), twin=True), cfg, 0.99)
    with pytest.raises(ValueError, match="gamma"):
        SACLearner(policies, critic, cfg, 1.5)
    with pytest.raises(TypeError, match="SquashedGaussianPolicy"):
        SACLearner([torch.nn.Linear(2, 2), *policies[1:]], critic, cfg, 0.99)


# -- the soft critic ----------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["mse", "huber"])
@pytest.mark.parametrize("kinds", [CONTINUOUS, DISCRETE], ids=["box", "discrete"])
def test_critic_target_against_a_hand_computation(loss, kinds):
    """Linear critic networks (no hidden layer): y = R + γ^K(1-term)(min Q' - Σ α_i log π_i(a'))
    written out, with the next actions drawn as the learner draws them (same seed)."""
    dtype = torch.float64
    learner = make_learner(kinds, dtype=dtype, hidden=(), loss=loss, huber_delta=0.5)
    with torch.no_grad():
        for p in learner.target_critic.parameters():  # a target that differs from the critic
            p.add_(0.3 * torch.randn(p.shape, dtype=dtype))
        for i, log_alpha in enumerate(learner.log_alphas):  # a different α per agent
            log_alpha.fill_(math.log(0.1 * (i + 1)))
    batch = make_batch(kinds, dtype=dtype, masks=True, active=True)

    def linear(layer, x):
        return x @ layer.weight.T + layer.bias

    torch.manual_seed(11)
    with torch.no_grad():
        draws = [p.action_log_prob(o, None if batch.next_action_masks is None
                                   else batch.next_action_masks[i])
                 for i, (p, o) in enumerate(zip(learner.policies, batch.next_obs))]
    x_next = torch.cat([batch.next_state, *(p.critic_input(a) for p, (a, _) in
                                            zip(learner.policies, draws))], -1)
    q_next = torch.minimum(*(linear(net[0], x_next).squeeze(-1) for net in learner.target_critic.nets))
    entropy = sum(0.1 * (i + 1) * lp for i, (_, lp) in enumerate(draws))
    y = batch.reward + batch.discount * (q_next - entropy)
    x = torch.cat([batch.state, *(p.critic_input(a) for p, a in zip(learner.policies, batch.actions))], -1)
    qs = [linear(net[0], x).squeeze(-1) for net in learner.critic.nets]
    alive = torch.stack(batch.active_masks).any(0)

    def elementwise(err):
        if loss == "mse":
            return err**2
        return torch.where(err.abs() < 0.5, 0.5 * err**2, 0.5 * (err.abs() - 0.25))

    expected = sum(elementwise(q - y)[alive].mean() for q in qs)
    torch.manual_seed(11)
    q_loss, q_mean = learner.critic_step(batch)
    torch.testing.assert_close(q_loss, expected.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(q_mean, torch.minimum(*qs).mean().detach(), rtol=1e-12, atol=0)


# -- temperatures -------------------------------------------------------------------------------


def test_the_discrete_target_entropy_is_a_fraction_of_log_available_actions():
    learner = make_learner(DISCRETE, target_entropy_ratio=0.5)
    like = torch.zeros(())
    mask = torch.tensor([[True, True, False, False], [True, True, True, True],
                         [False, True, False, False]])
    torch.testing.assert_close(learner.target_entropy(1, mask, like),
                               0.5 * torch.log(torch.tensor([2.0, 4.0, 1.0])))
    torch.testing.assert_close(learner.target_entropy(1, None, like), 0.5 * torch.log(torch.tensor(4.0)))
    box = make_learner(CONTINUOUS, target_entropy_per_dim=-1.0)
    assert [float(box.target_entropy(i, None, like)) for i in range(3)] == [-2.0, -1.0, -3.0]


@pytest.mark.parametrize("kinds", [CONTINUOUS, DISCRETE], ids=["box", "discrete"])
@pytest.mark.parametrize("above", [True, False], ids=["entropy-above-target", "below"])
def test_automatic_alpha_moves_toward_the_target_entropy(kinds, above):
    """α falls while the policy is more random than the target and rises while it is less; the
    first Adam step moves log α by exactly alpha_lr against the sign of E[H - H̄]."""
    if kinds == CONTINUOUS:  # the initial σ ≈ 1 policies have an entropy of about +0.6 per dim
        target = {"target_entropy_per_dim": -5.0 if above else 5.0}
    else:  # near-uniform initial policies: H ≈ log n
        target = {"target_entropy_ratio": 0.2 if above else 1.0}
    learner = make_learner(kinds, auto_alpha=True, alpha=0.1, alpha_lr=0.01, actor_lr=1e-6,
                           **target)
    batch = make_batch(kinds)
    metrics = learner.update(batch)
    direction = -1.0 if above else 1.0
    for i in range(3):
        torch.testing.assert_close(learner.log_alphas[i].detach(),
                                   torch.tensor(math.log(0.1) + direction * 0.01), rtol=0, atol=1e-4)
        torch.testing.assert_close(metrics.extra[M.agent_metric(M.ALPHA, i)], learner.alpha(i))
    for _ in range(10):
        learner.update(batch)
    for i in range(3):
        assert (float(learner.alpha(i)) < 0.1 * math.exp(-0.08)) if above else (
            float(learner.alpha(i)) > 0.1 * math.exp(0.08))


def test_a_fixed_alpha_stays():
    learner = make_learner(alpha=0.2)
    learner.update(make_batch())
    assert learner.alpha_optimizers == []
    assert all(float(learner.alpha(i)) == pytest.approx(0.2) for i in range(3))


# -- the Discrete agent's loss: the exact expectation ---------------------------------------------


def test_discrete_actor_loss_against_an_explicit_sum_over_actions():
    """MA (no permutation, no re-sampling): agent i's loss is Σ_a π(a)(α log π(a) - min Q(s,
    a^{-i}, onehot(a))) over its *available* actions, the others at their current samples."""
    dtype = torch.float64
    learner = make_learner(DISCRETE, sequential=False, dtype=dtype)
    batch = make_batch(DISCRETE, dtype=dtype, masks=True)
    before = copy.deepcopy(learner)
    torch.manual_seed(5)
    losses, _ = learner.actor_phase(batch)

    torch.manual_seed(5)
    with torch.no_grad():
        samples = [p.critic_input(p.action_log_prob(o, m)[0]) for p, o, m in
                   zip(before.policies, batch.obs, batch.action_masks)]
    for i, policy in enumerate(before.policies):
        n_a, B = policy.action_dim, batch.state.shape[0]
        with torch.no_grad():
            logits = policy(batch.obs[i])
            mask = batch.action_masks[i]
            expected = torch.zeros(B, dtype=dtype)
            for b in range(B):
                available = [a for a in range(n_a) if mask[b, a]]
                z = torch.logsumexp(logits[b, available], 0)
                for a in available:
                    log_p = logits[b, a] - z
                    joint = [s[b:b + 1] for s in samples]
                    joint[i] = torch.nn.functional.one_hot(torch.tensor([a]), n_a).to(dtype)
                    q = torch.minimum(*before.critic(batch.state[b:b + 1], joint))[0]
                    expected[b] += log_p.exp() * (0.05 * log_p - q)
        torch.testing.assert_close(losses[i], expected.mean(), rtol=1e-10, atol=1e-10)


def test_masked_actions_are_never_explored_and_get_no_gradient():
    learner = make_learner(DISCRETE)
    obs = [torch.randn(500, o) for o in OBS_DIMS]
    masks = [torch.rand(500, p.action_dim) < 0.5 for p in learner.policies]
    for m in masks:
        m[:, 0] = True
    actions = learner.explore(obs, masks)
    for a, m in zip(actions, masks):
        assert a.dtype == torch.int64 and m.gather(1, a[:, None]).all()
    # Agent 1's action 3 is unavailable everywhere: its logit gets no gradient from the loss.
    batch = make_batch(DISCRETE, masks=True)
    batch.action_masks[1][:, 3] = False
    policy = learner.policies[1]
    before = policy.head.bias[3].item()
    learner.actor_phase(batch)
    assert policy.head.bias[3].item() == before and policy.head.weight.grad is not None
    assert torch.all(policy.head.weight.grad[3] == 0)


# -- what the critic sees in the actor phase ------------------------------------------------------


class Recorder:
    """Wraps ``critic.q_from``; records every call's joint action (detached) and which entry
    carries a gradient."""

    def __init__(self, critic: QCritic) -> None:
        self.calls: list[tuple[list[torch.Tensor], list[bool]]] = []
        original = critic.q_from

        def record(h_s, actions, *args, **kwargs):
            joint = [a.detach().clone() for a in actions]
            self.calls.append((joint, [a.requires_grad for a in actions]))
            return original(h_s, actions, *args, **kwargs)

        critic.q_from = record


@pytest.mark.parametrize("sequential", [True, False], ids=["ha", "ma"])
def test_predecessors_enter_with_their_new_resampled_actions(sequential):
    """Near-deterministic Box policies (σ ≤ e^-19.9), so a draw is the squashed mean: agent
    i_m's call holds its predecessors' actions from their *updated* policies (HA), the others'
    from their policies before the update, and its own (before its step) with a gradient."""
    learner = make_learner(sequential=sequential, actor_lr=3e-2, log_std=(-20.0, -19.9))
    batch = make_batch()
    recorder = Recorder(learner.critic)

    def means(policies):
        with torch.no_grad():
            return [p.squash(p(o)[0]) for p, o in zip(policies, batch.obs)]

    before = means(learner.policies)
    seen: list[int] = []
    learner.update(batch, lambda m, i, loss: seen.append(i))
    after = means(learner.policies)
    assert sorted(seen) == [0, 1, 2] and len(recorder.calls) == 3
    if not sequential:
        assert seen == [0, 1, 2]
    for m, (i, (joint, grads)) in enumerate(zip(seen, recorder.calls)):
        assert grads == [j == i for j in range(3)]
        predecessors = set(seen[:m]) if sequential else set()
        for j in range(3):
            expected = after[j] if j in predecessors else before[j]
            torch.testing.assert_close(joint[j], expected, rtol=0, atol=1e-6)
        for j in predecessors:  # a real change, so the check tells new from old
            assert not torch.allclose(before[j], after[j], atol=1e-4)


def test_predecessors_are_fresh_draws_from_the_updated_policy():
    """With real randomness: agent i_{m}'s predecessor entry is the draw made after that
    predecessor's step (its latest draw), not its first sample."""
    learner = make_learner(actor_lr=1e-2)
    batch = make_batch()
    recorder = Recorder(learner.critic)
    draws: dict[int, list[torch.Tensor]] = {0: [], 1: [], 2: []}
    for j, policy in enumerate(learner.policies):
        original = policy.action_log_prob

        def wrapped(obs, mask=None, deterministic=False, j=j, original=original):
            a, lp = original(obs, mask, deterministic)
            draws[j].append(a.detach().clone())
            return a, lp

        policy.action_log_prob = wrapped
    seen: list[int] = []
    learner.update(batch, lambda m, i, loss: seen.append(i))
    first, second, third = seen
    # Draws per agent: the critic target's, the phase's first sample, its own step's (with
    # gradient), then a re-sample after its step unless it is last.
    assert [len(draws[j]) for j in seen] == [4, 4, 3]
    joint_second, joint_third = recorder.calls[1][0], recorder.calls[2][0]
    assert torch.equal(joint_second[first], draws[first][3])
    assert torch.equal(joint_third[first], draws[first][3])
    assert torch.equal(joint_third[second], draws[second][3])
    assert torch.equal(joint_second[third], draws[third][1])  # successor: its first sample
    assert not torch.equal(draws[first][3], draws[first][1])


def test_the_permutation_is_fresh_every_update_from_the_global_rng():
    learner = make_learner()
    batch = make_batch()
    orders = []
    for step in range(8):
        torch.manual_seed(100 + step)
        seen: list[int] = []
        learner.update(batch, lambda m, i, loss: seen.append(i))
        orders.append(seen)
        torch.manual_seed(100 + step)
        # the critic step draws 3 next actions (one randn each) before the permutation
        for p, o in zip(learner.policies, batch.next_obs):
            torch.randn(o.shape[0], p.action_dim)
        assert seen == torch.randperm(3).tolist()
    assert len({tuple(o) for o in orders}) > 2


def test_inactive_samples_weigh_nothing():
    learner = make_learner(MIXED, dtype=torch.float64)
    batch = make_batch(MIXED, dtype=torch.float64, active=True)
    batch.active_masks = (torch.zeros_like(batch.active_masks[0]), *batch.active_masks[1:])
    frozen = [p.detach().clone() for p in learner.policies[0].parameters()]
    metrics = learner.update(batch)
    assert metrics.actor_losses[0] == 0
    for p, q in zip(learner.policies[0].parameters(), frozen):
        assert torch.equal(p, q)


def test_metrics_are_detached_tensors_with_fixed_names():
    learner = make_learner(MIXED)
    metrics = learner.update(make_batch(MIXED))
    assert isinstance(metrics, DDPGMetrics) and len(metrics.actor_losses) == 3
    assert set(metrics.extra) == {M.agent_metric(name, i) for name in (M.ALPHA, M.ENTROPY)
                                  for i in range(3)}
    for t in (metrics.q_loss, metrics.q_mean, *metrics.actor_losses, *metrics.extra.values()):
        assert isinstance(t, torch.Tensor) and t.dim() == 0 and not t.requires_grad
    for name in metrics.extra:
        M.validate_name(name)


def test_the_target_critic_moves_by_tau():
    assert_target_critic_moves_by_tau(make_learner, make_batch())


# -- parity with the reference, resume ----------------------------------------------------------


# With the SMAX/SMAC/MPE critic (input and hidden LayerNorms) the state term is the input
# norm's split (haml.models.q_critic); the reference runs the whole critic.
@pytest.mark.parametrize("critic_norms", [False, True], ids=["plain", "norms"])
@pytest.mark.parametrize(
    "dtype, tol", [(torch.float32, 2e-5), (torch.float64, 1e-10)], ids=["f32", "f64"]
)
@pytest.mark.parametrize(
    "kinds, sequential, overrides, active, masks",
    [
        (CONTINUOUS, True, {}, False, False),
        (CONTINUOUS, True, {"loss": "mse", "auto_alpha": True, "max_grad_norm": 0.5}, True, False),
        (MIXED, True, {"auto_alpha": True}, True, False),
        (DISCRETE, True, {"auto_alpha": True, "loss": "mse"}, True, True),
        (CONTINUOUS, False, {}, False, False),
        (DISCRETE, False, {"max_grad_norm": 0.5}, False, True),
    ],
    ids=["ha", "ha-mse-auto-clip-active", "ha-mixed-auto", "ha-discrete-masks", "ma",
         "ma-discrete-masks-clip"],
)
def test_fast_update_matches_the_reference(critic_norms, dtype, tol, kinds, sequential, overrides,
                                           active, masks):
    fast = make_learner(kinds, sequential=sequential, dtype=dtype, hidden=(32, 32),
                        critic_norms=critic_norms, **overrides)
    slow = copy.deepcopy(fast)
    for step in range(3):
        batch = make_batch(kinds, dtype=dtype, seed=10 + step, active=active, masks=masks)
        torch.manual_seed(step)
        m_fast = fast.update(batch)
        torch.manual_seed(step)
        m_slow = reference_update(slow, batch)
        torch.testing.assert_close(m_fast.q_loss, m_slow.q_loss, rtol=0, atol=tol)
        torch.testing.assert_close(m_fast.q_mean, m_slow.q_mean, rtol=0, atol=tol)
        for a, b in zip(m_fast.actor_losses, m_slow.actor_losses):
            torch.testing.assert_close(a, b, rtol=0, atol=tol)
        assert m_fast.extra.keys() == m_slow.extra.keys()
        for name in m_fast.extra:
            torch.testing.assert_close(m_fast.extra[name], m_slow.extra[name], rtol=0, atol=tol)
        for a, b in zip(all_parameters(fast), all_parameters(slow)):
            torch.testing.assert_close(a, b, rtol=0, atol=tol)
    assert all(p.grad is None for p in slow.critic.parameters())


def test_state_dict_round_trip_gives_the_identical_next_update():
    first = make_learner(MIXED, auto_alpha=True)
    for step in range(2):
        first.update(make_batch(MIXED, seed=step))
    saved = copy.deepcopy(first.state_dict())
    policies = [copy.deepcopy(p.state_dict()) for p in first.policies]

    second = make_learner(MIXED, auto_alpha=True, seed=99)  # other initial weights
    for policy, state in zip(second.policies, policies):
        policy.load_state_dict(state)
    second.load_state_dict(saved)

    batch = make_batch(MIXED, seed=7)
    torch.manual_seed(5)
    a = first.update(batch)
    torch.manual_seed(5)
    b = second.update(batch)
    assert torch.equal(a.q_loss, b.q_loss)
    for x, y in zip(all_parameters(first), all_parameters(second)):
        assert torch.equal(x, y)


def test_load_state_dict_refuses_another_agent_count_or_alpha_mode():
    state = make_learner().state_dict()
    state["log_alphas"] = state["log_alphas"][:2]
    with pytest.raises(ValueError, match="2 agents"):
        make_learner().load_state_dict(state)
    with pytest.raises(ValueError, match="auto_alpha"):
        make_learner(auto_alpha=True).load_state_dict(make_learner().state_dict())


# -- learning -------------------------------------------------------------------------------------


def coordination_reward(actions):
    """r = -(a1 - a2 - 1)^2 - (a1 + a2)^2: 0 at (0.5, -0.5), the optimum."""
    a1, a2 = actions[0][..., 0], actions[1][..., 0]
    return -((a1 - a2 - 1.0) ** 2) - ((a1 + a2) ** 2)


def test_continuous_hasac_solves_the_coordination_game(tmp_path):
    """Unbounded Box actions (plain Gaussian actors), 64 envs, 150 iterations (about 270 updates):
    the deterministic (mean) actions within 0.1 of the optimum 0 (measured: -0.016, -0.005,
    -0.016 at seeds 0-2). ReLU networks: a tanh critic flattens for large actions and lets an
    unbounded Gaussian widen without limit."""
    import haml
    from haml.envs.toy import DifferentiableGame

    overrides = [
        "algo.warmup_steps=1024", "algo.batch_size=256", "algo.train_every=1", "algo.n_step=1",
        "algo.updates_per_step=0.03125", "algo.buffer_size=20000", "algo.tau=0.05",
        "algo.actor_lr=2e-3", "algo.critic_lr=2e-3", "actor.hidden=[32]", "actor.activation=relu",
        "critic.network.hidden=[64,64]", "critic.network.activation=relu", "eval.every=50",
        "eval.episodes=64", "eval.num_envs=64", "train.torch_threads=1",
    ]
    game = DifferentiableGame(coordination_reward, (1, 1), num_envs=64)
    result = haml.train("hasac", game, steps=64 * 150, seed=0, out=tmp_path, quiet=True,
                        overrides=overrides)
    assert result.eval_return is not None and result.eval_return > -0.1, result.eval_return


def test_discrete_hasac_reaches_the_optimum_of_the_heterogeneity_trap(tmp_path):
    """The toy family's HASAC settings, 60 iterations of 1000 games (116 updates), seeds 0-9: the
    deterministic return is the optimum 2 on at least 9 seeds, and the learnt stochastic
    policies' exact J(π) is near it (measured: return 2 on 10 of 10 seeds, J 1.81-1.98; at 80
    iterations J ≥ 1.94 on all 10; a simultaneous greedy update would fall into r(1,1) = -1,
    [HAML] Proposition 2)."""
    import haml
    from haml.envs.registry import make_env
    from haml.envs.toy import expected_payoff
    from haml.evaluation import load_policies
    from haml.utils.checkpoint import latest_checkpoint, load_checkpoint

    env = make_env("toy", "heterogeneity-trap", num_envs=1)
    optimal, payoffs = 0, []
    for seed in range(10):
        out = tmp_path / str(seed)
        result = haml.train("hasac", "toy", "heterogeneity-trap", steps=60_000, seed=seed, out=out,
                            quiet=True, overrides=["train.torch_threads=1", "eval.every=1000"])
        optimal += result.eval_return == 2.0
        _, policies = load_policies(load_checkpoint(latest_checkpoint(out)), env.spec,
                                    torch.device("cpu"))
        with torch.no_grad():
            probs = [p.probs(torch.ones(1, 1))[0][0] for p in policies]
        payoffs.append(float(expected_payoff(env.payoff, probs)))
    assert optimal >= 9, optimal
    assert sum(j > 1.75 for j in payoffs) >= 9, payoffs
