"""haml.models.recurrent: GRU policies and critics stepped with episode-start resets.

- ``GRUPolicy.sequence`` over L steps is L calls of ``step`` carrying the state;
- an episode start zeroes the state before its step (and that matters: without it the output
  differs), so the policy from there on equals a run from a zero state;
- ``SequenceView`` reads flattened time-major chunks as ``policy.sequence`` does, chunk by chunk,
  and its parameters are exactly the policy's;
- masks give unavailable actions probability 0; ``GRUCritic.next_values`` reads each true next
  input with the state after its step; bad shapes raise ``ValueError`` naming what is wrong.
"""

from __future__ import annotations

import pytest
import torch
from gymnasium import spaces
from torch.distributions import Categorical, Normal

from haml.models import MLPPolicy, joint_log_prob
from haml.models.recurrent import GRUCore, GRUCritic, GRUPolicy, SequenceView, is_recurrent
from haml.models.value import VCritic

BOX = spaces.Box(-1.0, 1.0, (3,))
DISCRETE = spaces.Discrete(4)
OBS_DIM = 5
HEADS = [pytest.param(BOX, id="gaussian"), pytest.param(DISCRETE, id="categorical")]


def perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere: at initialisation the head is nearly constant (gain 0.01) and the
    GRU's biases are zero, so differences in the hidden state would hardly show in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def make_policy(space, layers: int = 1, seed: int = 0) -> GRUPolicy:
    policy = GRUPolicy(OBS_DIM, space, hidden=(8,), rnn_layers=layers)
    perturb(policy, seed)
    return policy


def random_inputs(L: int, B: int, seed: int = 1, p_start: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(L, B, OBS_DIM, generator=g)
    starts = torch.rand(L, B, generator=g) < p_start
    return obs, starts, g


def random_mask(shape: tuple[int, ...], n: int, g: torch.Generator) -> torch.Tensor:
    """Random availability with at least one available action per row."""
    mask = torch.rand(*shape, n, generator=g) < 0.5
    first = torch.randint(0, n, shape, generator=g)
    mask.scatter_(-1, first[..., None], True)
    return mask


def params_of(dist: Normal | Categorical) -> torch.Tensor:
    """What determines the distribution: mean and std, or the (normalised) logits."""
    if isinstance(dist, Normal):
        return torch.cat([dist.loc, dist.scale], -1)
    return dist.logits


def nonzero_state(policy: GRUPolicy, B: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(policy.initial_state(B).shape, generator=g)


# -- sequence = steps -------------------------------------------------------------------------------


@pytest.mark.parametrize("space", HEADS)
@pytest.mark.parametrize("layers", [1, 2])
def test_sequence_equals_steps_carrying_the_state(space, layers):
    L, B = 7, 5
    policy = make_policy(space, layers)
    obs, starts, g = random_inputs(L, B)
    h0 = nonzero_state(policy, B)
    mask = random_mask((L, B), DISCRETE.n, g) if space is DISCRETE else None
    with torch.no_grad():
        dist, h_last = policy.sequence(obs, h0, starts, mask)
        h = h0
        stepped = []
        for t in range(L):
            d, h = policy.step(obs[t], h, starts[t], None if mask is None else mask[t])
            stepped.append(params_of(d))
    assert h.shape == (B, layers, 8)
    torch.testing.assert_close(params_of(dist), torch.cat(stepped, 0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_last, h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("space", HEADS)
def test_a_start_mid_sequence_equals_a_run_from_a_zero_state(space):
    L, B, k = 6, 4, 3
    policy = make_policy(space)
    obs, _, _ = random_inputs(L, B)
    h0 = nonzero_state(policy, B)
    starts = torch.zeros(L, B, dtype=torch.bool)
    starts[k, 1] = True  # env 1 begins a new episode at step k
    with torch.no_grad():
        out = params_of(policy.sequence(obs, h0, starts)[0]).view(L, B, -1)
        fresh = params_of(
            policy.sequence(obs[k:, 1:2], policy.initial_state(1), torch.zeros(L - k, 1, dtype=torch.bool))[0]
        )
        carried = params_of(policy.sequence(obs, h0, torch.zeros_like(starts))[0]).view(L, B, -1)
    torch.testing.assert_close(out[k:, 1], fresh, rtol=1e-5, atol=1e-6)
    # Without the reset the state of the earlier episode leaks in: the test can tell.
    assert (carried[k:, 1] - fresh).abs().max() > 1e-3
    # The other envs and the steps before k are untouched by env 1's reset.
    torch.testing.assert_close(out[:, [0, 2, 3]], carried[:, [0, 2, 3]])
    torch.testing.assert_close(out[:k, 1], carried[:k, 1])


def test_a_start_at_step_zero_ignores_h0():
    policy = make_policy(DISCRETE)
    obs, _, _ = random_inputs(4, 3)
    starts = torch.zeros(4, 3, dtype=torch.bool)
    starts[0] = True
    with torch.no_grad():
        a, ha = policy.sequence(obs, nonzero_state(policy, 3, seed=5), starts)
        b, hb = policy.sequence(obs, policy.initial_state(3), starts)
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(ha, hb)


def test_core_reports_the_state_each_step_used_and_left():
    core = GRUCore(3, 6, layers=2)
    perturb(core)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, 3, generator=g)
    h0 = torch.randn(2, 2, 6, generator=g)
    starts = torch.zeros(5, 2, dtype=torch.bool)
    starts[2, 0] = True
    with torch.no_grad():
        _, used, after = core(x, h0, starts)
    assert used.shape == after.shape == (5, 2, 2, 6)
    torch.testing.assert_close(used[0], h0)
    torch.testing.assert_close(used[1], after[0])
    assert torch.equal(used[2, 0], torch.zeros(2, 6))  # reset before step 2 of env 0
    torch.testing.assert_close(used[2, 1], after[1, 1])
    torch.testing.assert_close(used[3:], after[2:4])


# -- sample ------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", HEADS)
def test_sample_returns_the_step_state_and_the_log_prob_of_its_action(space):
    B = 6
    policy = make_policy(space)
    obs, starts, g = random_inputs(1, B)
    h = nonzero_state(policy, B)
    mask = random_mask((B,), DISCRETE.n, g) if space is DISCRETE else None
    actions, logp, h_next = policy.sample(obs[0], h, starts[0], mask)
    dist, h_step = policy.step(obs[0], h, starts[0], mask)
    torch.testing.assert_close(h_next, h_step)
    torch.testing.assert_close(logp, joint_log_prob(dist, actions))
    mode, _, _ = policy.sample(obs[0], h, starts[0], mask, deterministic=True)
    expected = dist.mean if space is BOX else dist.probs.argmax(-1)
    torch.testing.assert_close(mode, expected)


# -- masks --------------------------------------------------------------------------------------


def test_masked_actions_have_probability_zero_in_sequences_and_samples():
    L, B = 5, 64
    policy = make_policy(DISCRETE)
    obs, starts, g = random_inputs(L, B)
    mask = random_mask((L, B), DISCRETE.n, g)
    assert not mask.all()
    dist, _ = policy.sequence(obs, policy.initial_state(B), starts, mask)
    probs = dist.probs.view(L, B, -1)
    assert torch.equal(probs[~mask], torch.zeros_like(probs[~mask]))
    assert (probs[mask] > 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(L, B))
    actions, logp, _ = policy.sample(obs[0], policy.initial_state(B), starts[0], mask[0])
    assert mask[0].gather(1, actions[:, None]).all()
    assert torch.isfinite(logp).all()


def test_an_action_mask_on_a_gaussian_policy_is_an_error():
    policy = make_policy(BOX)
    obs, starts, _ = random_inputs(2, 3)
    with pytest.raises(ValueError, match="action_mask"):
        policy.sequence(obs, policy.initial_state(3), starts, torch.ones(2, 3, 3, dtype=torch.bool))


# -- SequenceView -------------------------------------------------------------------------------


@pytest.mark.parametrize("space", HEADS)
def test_sequence_view_reads_flattened_time_major_chunks(space):
    L, C = 4, 5
    policy = make_policy(space, layers=2)
    obs, starts, g = random_inputs(L, C)
    h0 = nonzero_state(policy, C)
    mask = random_mask((L, C), DISCRETE.n, g) if space is DISCRETE else None
    view = SequenceView(policy, h0, starts.flatten(), L)
    flat_mask = None if mask is None else mask.flatten(0, 1)
    with torch.no_grad():
        got = params_of(view.distribution(obs.flatten(0, 1), flat_mask))
        expected = params_of(policy.sequence(obs, h0, starts, mask)[0])
        torch.testing.assert_close(got, expected)
        # Sample n = j·C + c is step j of chunk c: each chunk alone gives the same numbers.
        got = got.view(L, C, -1)
        for c in range(C):
            alone = policy.sequence(
                obs[:, c : c + 1], h0[c : c + 1], starts[:, c : c + 1],
                None if mask is None else mask[:, c : c + 1],
            )[0]
            torch.testing.assert_close(got[:, c], params_of(alone), rtol=1e-5, atol=1e-6)
        actions = view.distribution(obs.flatten(0, 1), flat_mask).sample()
        torch.testing.assert_close(
            view.log_prob(obs.flatten(0, 1), actions, flat_mask),
            joint_log_prob(view(obs.flatten(0, 1), flat_mask), actions),
        )


def test_sequence_view_rejects_a_wrong_number_of_samples():
    policy = make_policy(DISCRETE)
    view = SequenceView(policy, policy.initial_state(3), torch.zeros(12, dtype=torch.bool), 4)
    with pytest.raises(ValueError, match="expected 12 samples"):
        view.distribution(torch.zeros(8, OBS_DIM))


def test_sequence_view_parameters_are_exactly_the_policys():
    policy = make_policy(BOX, layers=2)
    h0 = policy.initial_state(2)
    view = SequenceView(policy, h0, torch.zeros(6, dtype=torch.bool), 3)
    ours, theirs = list(view.parameters()), list(policy.parameters())
    assert len(ours) == len(theirs)
    assert all(a is b for a, b in zip(ours, theirs))
    # The chunks' stored states are data, not parameters or buffers of the module.
    assert [name for name, _ in view.named_parameters()] == [
        f"policy.{name}" for name, _ in policy.named_parameters()
    ]
    assert len(list(view.buffers())) == len(list(policy.buffers()))
    # Gradients of a loss through the view land on the policy's parameters.
    obs = torch.randn(6, OBS_DIM)
    view.distribution(obs).mean.sum().backward()
    assert all(p.grad is not None for p in policy.parameters() if p is not policy.log_std)


# -- critic ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layers", [1, 2])
def test_critic_next_values_step_the_gru_from_the_state_after_each_step(layers):
    L, B, D = 5, 3, 6
    critic = GRUCritic(D, hidden=(8,), rnn_layers=layers)
    perturb(critic)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(L, B, D, generator=g)
    final_x = torch.randn(L, B, D, generator=g)
    starts = torch.rand(L, B, generator=g) < 0.4
    h0 = torch.randn(B, layers, 8, generator=g)
    no_reset = torch.zeros(1, B, dtype=torch.bool)
    with torch.no_grad():
        values, used, after = critic.sequence(x, h0, starts)
        next_values = critic.next_values(final_x, after)
        assert values.shape == next_values.shape == (L, B)
        for t in range(L):
            # V(s_{t+1}) is one more GRU step on the true next input, never reset (even where
            # step t+1 begins a new episode: s_{t+1} is the last state of this one).
            v, _, _ = critic.sequence(final_x[t : t + 1], after[t], no_reset)
            torch.testing.assert_close(next_values[t], v[0], rtol=1e-5, atol=1e-6)
            # ... which equals V of the next step's own input whenever it continues the episode.
            if t + 1 < L:
                same = ~starts[t + 1]
                v_next, _, _ = critic.sequence(x[t + 1 : t + 2], after[t], no_reset)
                torch.testing.assert_close(values[t + 1][same], v_next[0][same], rtol=1e-5, atol=1e-6)
        # The state is carried: reading the next inputs from h0 instead gives other values.
        stale = torch.stack(
            [critic.sequence(final_x[t : t + 1], h0, no_reset)[0][0] for t in range(L)]
        )
        assert (stale - next_values).abs().max() > 1e-3


def test_critic_sequence_equals_a_manual_loop():
    critic = GRUCritic(4, hidden=(6,))
    perturb(critic)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 2, 4, generator=g)
    starts = torch.tensor([[True, False], [False, False], [True, True], [False, False]])
    h = torch.randn(2, 1, 6, generator=g)
    with torch.no_grad():
        values, _, after = critic.sequence(x, h, starts)
        for t in range(4):
            v, _, a = critic.sequence(x[t : t + 1], h, starts[t : t + 1])
            torch.testing.assert_close(values[t], v[0])
            h = a[0]
        torch.testing.assert_close(after[-1], h)


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "which,match",
    [
        ("obs_rank", r"inputs must be \[L, B, 5\]"),
        ("obs_dim", r"inputs must be \[L, B, 5\]"),
        ("h0_batch", r"hidden state must be \[3, 1, 8\]"),
        ("h0_rank", r"hidden state must be \[3, 1, 8\]"),
        ("starts_dtype", "'starts' must be bool"),
        ("starts_shape", "'starts' must be bool"),
    ],
)
def test_bad_shapes_raise_value_errors_naming_the_argument(which, match):
    policy = make_policy(DISCRETE)
    obs = torch.zeros(4, 3, OBS_DIM)
    h0 = policy.initial_state(3)
    starts = torch.zeros(4, 3, dtype=torch.bool)
    bad = {
        "obs_rank": dict(obs=obs[0]),
        "obs_dim": dict(obs=torch.zeros(4, 3, OBS_DIM + 1)),
        "h0_batch": dict(h0=policy.initial_state(2)),
        "h0_rank": dict(h0=h0[:, 0]),
        "starts_dtype": dict(starts=starts.float()),
        "starts_shape": dict(starts=starts[:, :2]),
    }[which]
    args = {"obs": obs, "h0": h0, "starts": starts, **bad}
    with pytest.raises(ValueError, match=match):
        policy.sequence(args["obs"], args["h0"], args["starts"])
    with pytest.raises(ValueError, match="GRUPolicy"):
        policy.sequence(args["obs"], args["h0"], args["starts"])


def test_critic_bad_shapes_raise_value_errors():
    critic = GRUCritic(4, hidden=(6,))
    x, h0 = torch.zeros(3, 2, 4), critic.initial_state(2)
    starts = torch.zeros(3, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"GRUCritic: inputs must be \[L, B, 4\]"):
        critic.sequence(torch.zeros(3, 2, 5), h0, starts)
    with pytest.raises(ValueError, match="GRUCritic: hidden state"):
        critic.sequence(x, critic.initial_state(3), starts)
    with pytest.raises(ValueError, match="GRUCritic: 'starts'"):
        critic.sequence(x, h0, starts[:2])


@pytest.mark.parametrize("layers", [0, -1, 1.5, True])
def test_rnn_layers_must_be_a_positive_int(layers):
    with pytest.raises(ValueError, match="'layers'"):
        GRUPolicy(OBS_DIM, DISCRETE, hidden=(8,), rnn_layers=layers)


def test_an_empty_trunk_is_an_error():
    with pytest.raises(ValueError, match="'hidden'"):
        GRUPolicy(OBS_DIM, DISCRETE, hidden=())
    with pytest.raises(ValueError, match="'hidden'"):
        GRUCritic(4, hidden=[])


def test_is_recurrent():
    assert is_recurrent(make_policy(DISCRETE))
    assert is_recurrent(GRUCritic(4, hidden=(6,)))
    assert not is_recurrent(MLPPolicy(OBS_DIM, DISCRETE, hidden=(8,)))
    assert not is_recurrent(VCritic(4, (6,)))
    # A view of a recurrent policy is already laid out as a feed-forward one.
    view = SequenceView(make_policy(DISCRETE), torch.zeros(1, 1, 8), torch.zeros(1, dtype=torch.bool), 1)
    assert not is_recurrent(view)
