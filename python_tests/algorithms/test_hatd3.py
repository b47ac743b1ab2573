"""haml.algorithms.hatd3: the config's checks, the twin-min target with clipped smoothing noise
against a hand computation, the delayed actor and target steps, parity with the plain reference
and exact resume of the learner's state."""

from __future__ import annotations

import copy

import pytest
import torch
from gymnasium import spaces

from haml.algorithms.hatd3 import TD3Config, TD3Learner, reference_update, smoothed_target_action
from haml.models import DeterministicPolicy, QCritic
from offpolicy_checks import box_batch

OBS_DIMS = (4, 6, 3)
ACTION_DIMS = (2, 1, 3)
STATE_DIM = 5
BOX = spaces.Box(-2.0, 1.0, (1,))


def make_learner(
    sequential: bool = True,
    dtype: torch.dtype = torch.float32,
    hidden: tuple[int, ...] = (16, 16),
    seed: int = 0,
    critic_norms: bool = False,
    **cfg_overrides,
) -> TD3Learner:
    torch.manual_seed(seed)
    # Boxes of different half-widths, so that the noise scaling by h shows.
    policies = [
        DeterministicPolicy(o, spaces.Box(-1.0 - i, 1.0 + 2 * i, (d,)), hidden=hidden, dtype=dtype)
        for i, (o, d) in enumerate(zip(OBS_DIMS, ACTION_DIMS))
    ]
    critic = QCritic(STATE_DIM, ACTION_DIMS, hidden=hidden, layer_norm=critic_norms,
                     input_norm=critic_norms, twin=True, dtype=dtype)
    cfg = TD3Config(**{"batch_size": 32, **cfg_overrides})
    return TD3Learner(policies, critic, cfg, gamma=0.99, sequential=sequential)


def make_batch(B: int = 32, dtype: torch.dtype = torch.float32, seed: int = 1, active: bool = False):
    return box_batch(OBS_DIMS, ACTION_DIMS, STATE_DIM, n_step=2, B=B, dtype=dtype, seed=seed,
                     active=active)


def actor_parameters(learner: TD3Learner) -> list[torch.Tensor]:
    return [p.detach().clone() for policy in learner.policies for p in policy.parameters()]


def target_parameters(learner: TD3Learner) -> list[torch.Tensor]:
    modules = [learner.target_critic, *learner.target_policies]
    return [p.detach().clone() for m in modules for p in m.parameters()]


# -- config -------------------------------------------------------------------------------------


def test_td3_keys_default_to_td3s_values_and_bad_ones_are_named():
    cfg = TD3Config()
    assert (cfg.policy_delay, cfg.target_noise, cfg.target_noise_clip) == (2, 0.2, 0.5)
    for key, value in [("policy_delay", 0), ("target_noise", -0.1), ("target_noise_clip", -1.0),
                       ("tau", 0.0)]:
        with pytest.raises(ValueError, match=f"algo.{key}"):
            TD3Config(**{key: value})


def test_the_learner_needs_a_twin_critic():
    torch.manual_seed(0)
    policies = [DeterministicPolicy(o, spaces.Box(-1.0, 1.0, (d,))) for o, d in zip(OBS_DIMS, ACTION_DIMS)]
    with pytest.raises(ValueError, match="twin=True"):
        TD3Learner(policies, QCritic(STATE_DIM, ACTION_DIMS), TD3Config(), 0.99)


# -- the critic ---------------------------------------------------------------------------------


def test_smoothing_noise_is_scaled_by_the_half_width_and_clipped():
    torch.manual_seed(0)
    policy = DeterministicPolicy(3, BOX, hidden=(8,))
    obs = torch.randn(4000, 3)
    mean = policy(obs).detach()
    torch.manual_seed(1)
    a = smoothed_target_action(policy, obs, sigma=10.0, clip=0.2)
    shift = a - mean
    h = 1.5  # the half-width of [-2, 1]
    assert bool((a >= -2).all() and (a <= 1).all())
    # Away from the bounds the noise is at most c·h, and exactly that for the clipped draws
    # (σ = 10: all but |ε| < 0.02, about 1.6 % of them).
    inside = ((mean - 0.3 * h > -2) & (mean + 0.3 * h < 1)).squeeze(-1)
    assert inside.sum() > 1000
    assert bool((shift[inside].abs() <= 0.2 * h + 1e-6).all())
    at_clip = (shift[inside].abs() - 0.2 * h).abs() < 1e-6
    assert 0.95 < at_clip.float().mean() < 1.0
    torch.manual_seed(1)
    assert torch.equal(smoothed_target_action(policy, obs, 0.0, 0.5), mean)


def test_twin_min_target_against_a_hand_computation():
    dtype = torch.float64
    learner = make_learner(dtype=dtype, target_noise=0.3, target_noise_clip=0.4)
    with torch.no_grad():  # targets that differ from the online networks
        for module in [learner.target_critic, *learner.target_policies]:
            for p in module.parameters():
                p.add_(0.2 * torch.randn(p.shape, dtype=dtype))
    batch = make_batch(dtype=dtype)

    torch.manual_seed(3)
    next_actions = []
    for mu, o in zip(learner.target_policies, batch.next_obs):
        a = mu(o).detach()
        eps = torch.randn(a.shape, dtype=dtype)
        h = (mu.action_high - mu.action_low) / 2
        next_actions.append(torch.minimum(torch.maximum(a + (0.3 * eps).clamp(-0.4, 0.4) * h,
                                                        mu.action_low), mu.action_high))
    x_next = torch.cat([batch.next_state, *next_actions], -1)
    q1n, q2n = (net(x_next).squeeze(-1) for net in learner.target_critic.nets)
    y = batch.reward + batch.discount * torch.where(q1n < q2n, q1n, q2n)
    x = torch.cat([batch.state, *batch.actions], -1)
    q1, q2 = (net(x).squeeze(-1) for net in learner.critic.nets)
    expected = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()

    torch.manual_seed(3)
    q_loss, q_mean = learner.critic_step(batch)
    torch.testing.assert_close(q_loss, expected.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(q_mean, q1.mean().detach(), rtol=1e-12, atol=0)


# -- the delay ----------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [1, 2, 3])
def test_actors_and_targets_move_only_every_policy_delay_th_update(delay):
    learner = make_learner(policy_delay=delay)
    critic_before = [p.detach().clone() for p in learner.critic.parameters()]
    for update in range(1, 7):
        actors, targets = actor_parameters(learner), target_parameters(learner)
        metrics = learner.update(make_batch(seed=update))
        moved_actors = any(not torch.equal(a, b) for a, b in zip(actors, actor_parameters(learner)))
        moved_targets = any(not torch.equal(a, b) for a, b in zip(targets, target_parameters(learner)))
        due = update % delay == 0
        assert moved_actors == due and moved_targets == due, update
        assert all((loss is not None) == due for loss in metrics.actor_losses)
    assert learner.updates == 6
    assert any(not torch.equal(a, b.detach()) for a, b in zip(critic_before, learner.critic.parameters()))


def test_the_actors_ascend_the_first_q_network_only():
    learner = make_learner(policy_delay=1)
    batch = make_batch()
    learner.critic_step(batch)
    # Make Q2 hugely different: the actor losses must not change.
    losses = learner.actor_phase(copy.deepcopy(batch))
    other = make_learner(policy_delay=1)
    other.critic_step(batch)
    with torch.no_grad():
        for p in other.critic.nets[1].parameters():
            p.mul_(-7.0)
    for a, b in zip(losses, other.actor_phase(copy.deepcopy(batch))):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


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
        (True, {"successor_actions": "policy", "policy_delay": 1}, True),
        (True, {"loss": "huber", "max_grad_norm": 0.5, "target_noise": 0.0}, False),
        (False, {"policy_delay": 3}, True),
    ],
    ids=["ha", "ha-policy-delay1-masks", "ha-huber-clip-nonoise", "ma-delay3-masks"],
)
def test_fast_update_matches_the_reference(critic_norms, dtype, tol, sequential, overrides, active):
    fast = make_learner(sequential=sequential, dtype=dtype, hidden=(32, 32),
                        critic_norms=critic_norms, **overrides)
    slow = copy.deepcopy(fast)
    for step in range(4):
        batch = make_batch(dtype=dtype, seed=10 + step, active=active)
        torch.manual_seed(step)
        m_fast = fast.update(batch)
        torch.manual_seed(step)
        m_slow = reference_update(slow, batch)
        torch.testing.assert_close(m_fast.q_loss, m_slow.q_loss, rtol=0, atol=tol)
        torch.testing.assert_close(m_fast.q_mean, m_slow.q_mean, rtol=0, atol=tol)
        for a, b in zip(m_fast.actor_losses, m_slow.actor_losses):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=0, atol=tol)
        modules = lambda l: [l.critic, *l.policies, l.target_critic, *l.target_policies]  # noqa: E731
        for a, b in zip((p for m in modules(fast) for p in m.parameters()),
                        (p for m in modules(slow) for p in m.parameters())):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=tol)
    assert fast.updates == slow.updates == 4


def test_state_dict_round_trip_keeps_the_delay_phase():
    first = make_learner(policy_delay=3)
    for step in range(2):
        first.update(make_batch(seed=step))
    saved = copy.deepcopy(first.state_dict())
    assert saved["updates"] == 2
    second = make_learner(policy_delay=3, seed=99)
    for policy, source in zip(second.policies, first.policies):
        policy.load_state_dict(copy.deepcopy(source.state_dict()))
    second.load_state_dict(saved)
    batch = make_batch(seed=7)
    torch.manual_seed(5)
    a = first.update(batch)  # the third update: actors step
    torch.manual_seed(5)
    b = second.update(batch)
    assert all(loss is not None for loss in b.actor_losses)
    for x, y in zip(actor_parameters(first), actor_parameters(second)):
        assert torch.equal(x, y)
    assert torch.equal(a.q_loss, b.q_loss)

