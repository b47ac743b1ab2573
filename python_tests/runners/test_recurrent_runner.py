"""Recurrent actors and critics in the on-policy runner, on the toy "memory" task.

- collection and training agree: replaying a rollout as chunks (from the hidden states stored at
  the chunks' first steps, with the episode starts inside them) gives exactly the log-probs and
  values recorded at collection, also when episodes begin mid-chunk and when the rollout continues
  an episode of the previous one;
- ``JointActor`` zeroes a policy's state at every episode start (a never-resetting actor fails);
- every algorithm runs with MLP and GRU networks and dying agents; the batches' ``mask`` is the
  agents' alive flags, per-agent critics are trained on their agent's active samples only, the HA
  factor M ignores dead agents' ratios, advantages are normalised over active samples only;
- a GRU run interrupted and resumed reaches bit-identical parameters (hidden states included in
  the checkpoint: without them it does not).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import haml.runners.on_policy as on_policy
import haml.training as T
from haml.algorithms import algo_spec, algos_for_action_kind
from haml.buffers.layout import ChunkLayout
from haml.config.loader import load_config
from haml.envs.toy import MemoryGame
from haml.models import joint_log_prob
from haml.models.recurrent import GRUPolicy
from haml.runners.acting import JointActor
from haml.runners.on_policy import OnPolicyRunner
from haml.runners.sequential import fold_factor
from haml.utils.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks: intra-op threads only add synchronisation on a shared 2-core machine (measured
    10-50x slower updates), so these tests run on one and restore the count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _overrides(rnn: str, critic_rnn: str | None = None, num_envs: int = 8, rollout: int = 12,
               chunk: int = 4, death_prob: float = 0.3) -> list[str]:
    critic_rnn = rnn if critic_rnn is None else critic_rnn
    return [
        f"train.num_envs={num_envs}",
        f"train.rollout_length={rollout}",
        f"train.chunk_length={chunk}",
        "actor.hidden=[16]",
        "critic.network.hidden=[16]",
        f"actor.rnn={rnn}",
        f"critic.network.rnn={critic_rnn}",
        f"env.options.death_prob={death_prob}",
        "eval.every=0",
    ]


def _runner(algo: str, rnn: str = "gru", env_cls: type[MemoryGame] = MemoryGame,
            extra: tuple[str, ...] = (), **kw) -> OnPolicyRunner:
    cfg = load_config(algo, "toy", "memory", overrides=[*_overrides(rnn, **kw), *extra])
    options = cfg.env.options
    env = env_cls(2, options["delay"], options["death_prob"], cfg.train.num_envs, seed=cfg.seed)
    return OnPolicyRunner(cfg, env)


class _Recorder:
    """Wraps the runner's actor learners and critics: records what each update receives (copies:
    the batches are views of the runner's rollout buffer, which the next collection overwrites)."""

    def __init__(self, runner: OnPolicyRunner) -> None:
        self.actor_calls: list[dict] = []
        self.critic_calls: list[dict] = []
        for g, learner in enumerate(runner.actor_learners):
            learner.update = self._wrap_actor(g, learner.update)
        for k, critic in enumerate(runner.critics):
            critic.update = self._wrap_critic(k, critic.update)

    def _wrap_actor(self, group, update):
        def recording(batch):
            self.actor_calls.append({"group": group, "batch": copy.deepcopy(batch)})
            return update(batch)

        return recording

    def _wrap_critic(self, k, update):
        def recording(inputs, returns, old_raw, mask=None, sequences=None):
            self.critic_calls.append(
                {"critic": k, "mask": None if mask is None else mask.clone(), "sequences": sequences}
            )
            return update(inputs, returns, old_raw, mask, sequences)

        return recording


# -- collection = chunked replay ----------------------------------------------------------------


@pytest.mark.parametrize("algo", ["happo", "mappo", "ippo"])
@pytest.mark.parametrize("continued", [False, True], ids=["first-rollout", "continued-rollout"])
def test_chunked_replay_reproduces_collection_exactly(algo, continued):
    """log π(a|o) of the chunks = the recorded log-probs; V of the chunks = the rollout values."""
    torch.manual_seed(0)
    # 12 steps: episodes (3 steps) begin at 0, 3, 6, 9, i.e. at step 3 of chunk 0 and mid-chunk
    # elsewhere. 8 steps after one iteration: the rollout begins in the middle of an episode,
    # from the hidden states the previous one ended with (and the policy has been updated).
    runner = _runner(algo, rollout=8 if continued else 12)
    if continued:
        runner.iterate()
    buffer, _ = runner.collect()
    T_, E = buffer.steps, runner.cfg.train.num_envs
    L = 4
    layout = ChunkLayout(L)
    chunk_starts = layout.to_samples(buffer.starts).view(L, -1)
    assert chunk_starts[1:].any(), "no episode starts inside a chunk: the test would not see it"
    assert not chunk_starts[0].all(), "every chunk starts an episode: stored states would not matter"
    if continued:
        assert not buffer.starts[0].any()

    adv, _, raw, readings = runner.advantages(buffer)
    factor = torch.ones(T_, E)
    for g, agents in enumerate(runner.groups):
        batch = runner._actor_batch(buffer, agents, adv, factor)
        policy = runner.policies[agents[0]]
        assert isinstance(policy, GRUPolicy)
        with torch.no_grad():
            logp = batch.view(policy).log_prob(batch.obs, batch.actions, batch.action_mask)
        torch.testing.assert_close(logp, batch.logp_old, rtol=0, atol=1e-5)
        # From zero states instead of the stored ones the replay is wrong (the test can fail).
        batch.sequences.h0 = torch.zeros_like(batch.sequences.h0)
        with torch.no_grad():
            stale = batch.view(policy).log_prob(batch.obs, batch.actions, batch.action_mask)
        assert (stale - batch.logp_old).abs().max() > 1e-4

    for k, critic in enumerate(runner.critics):
        inputs = runner._critic_inputs(buffer, k, final=False)
        h0 = layout.chunk_starts(readings[k].h_used)
        with torch.no_grad():
            values, _, _ = critic.critic.sequence(
                layout.to_samples(inputs).view(L, -1, inputs.shape[-1]), h0,
                layout.to_samples(buffer.starts).view(L, -1),
            )
        torch.testing.assert_close(values.flatten(), layout.to_samples(raw[..., k]), rtol=0, atol=1e-5)


# -- JointActor resets ------------------------------------------------------------------------------


class _AnyAction(MemoryGame):
    """MemoryGame with every action available at every step. In the plain game the first step of
    an episode allows only the wait, whose probability 1 is the same from any hidden state."""

    def _observe(self):
        obs, state, masks, active = super()._observe()
        return obs, state, tuple(torch.ones_like(m) for m in masks), active


def _start_step_errors(policies, env: MemoryGame, steps: int) -> list[float]:
    """For each step that begins an episode (step 0, and after the env reports an end): the largest
    difference between what the actor recorded (log-probs of its actions, the state it carries on
    with) and what the same policy gives from a zero state."""
    actor = JointActor(policies, env.num_envs)
    step = env.reset(seed=0)
    begins = torch.ones(env.num_envs, dtype=torch.bool)
    errors = []
    for _ in range(steps):
        actions, logps, _ = actor.act(step)
        if begins.any():
            worst = 0.0
            for i, policy in enumerate(policies):
                mask = step.action_masks[i]
                with torch.no_grad():
                    dist, h_next = policy.step(step.obs[i], policy.initial_state(env.num_envs),
                                               torch.zeros(env.num_envs, dtype=torch.bool), mask)
                fresh = joint_log_prob(dist, actions[i])
                worst = max(worst, float((fresh - logps[i])[begins].abs().max()),
                            float((h_next - actor.states[i])[begins].abs().max()))
            errors.append(worst)
        step = env.step(actions)
        actor.observe(step)
        begins = step.terminated | step.truncated
    return errors


def _memory_policies(env: MemoryGame, seed: int = 0) -> list[GRUPolicy]:
    g = torch.Generator().manual_seed(seed)
    policies = []
    for i in range(env.n_agents):
        policy = GRUPolicy(env.spec.obs_dim(i), env.spec.action_spaces[i], hidden=(8,))
        with torch.no_grad():
            for p in policy.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
        policies.append(policy)
    return policies


def test_joint_actor_acts_from_a_zero_state_at_every_episode_start():
    env = _AnyAction(n_agents=2, delay=2, num_envs=6, seed=0)
    errors = _start_step_errors(_memory_policies(env), env, steps=10)
    assert len(errors) == 4  # steps 0, 3, 6, 9
    assert max(errors) < 1e-6


def test_an_actor_that_never_resets_is_caught(monkeypatch):
    def never_reset(self, after):
        self.starts = torch.zeros_like(after.terminated)

    monkeypatch.setattr(JointActor, "observe", never_reset)
    env = _AnyAction(n_agents=2, delay=2, num_envs=6, seed=0)
    errors = _start_step_errors(_memory_policies(env), env, steps=10)
    assert errors[0] < 1e-6  # the first step still starts from zeros (after reset())
    assert min(errors[1:]) > 1e-3


def test_joint_actor_reports_the_states_it_acted_from_and_restores_them():
    env = MemoryGame(n_agents=2, delay=2, death_prob=0.3, num_envs=5, seed=1)
    policies = _memory_policies(env, seed=1)
    actor = JointActor(policies, env.num_envs)
    assert actor.recurrent and actor.starts.all()
    step = env.reset(seed=1)
    for t in range(4):
        before = [s.clone() for s in actor.states]
        starts = actor.starts.clone()
        actions, logps, used = actor.act(step)
        for i in range(2):
            expected = torch.where(starts[:, None, None], torch.zeros_like(before[i]), before[i])
            assert torch.equal(used[i], expected)
            # A dead agent's only action is the wait: probability 1.
            dead = ~step.active_masks[i]
            assert torch.equal(logps[i][dead], torch.zeros_like(logps[i][dead]))
        step = env.step(actions)
        actor.observe(step)
    # Saved and loaded mid-episode, an actor continues exactly as the original.
    saved = actor.state_dict()
    other = JointActor(policies, env.num_envs)
    other.load_state_dict(saved)
    assert not other.starts.any()
    torch.manual_seed(3)
    a, la, _ = actor.act(step)
    torch.manual_seed(3)
    b, lb, _ = other.act(step)
    for i in range(2):
        assert torch.equal(a[i], b[i]) and torch.equal(la[i], lb[i])
    other.reset()
    assert other.starts.all() and all(not s.any() for s in other.states)


# -- every algorithm, MLP and GRU, dying agents -------------------------------------------------------

ON_POLICY_DISCRETE = [a for a in algos_for_action_kind("discrete") if algo_spec(a).runner == "on_policy"]
"""The algorithms this module's runner trains (the off-policy ones meet dying agents in
python_tests/envs/test_smac_training.py and their own learner tests)."""


@pytest.mark.filterwarnings("ignore:haml.ops.FisherOperator.*SequenceView:RuntimeWarning")
@pytest.mark.parametrize("rnn", ["none", "gru"])
@pytest.mark.parametrize("algo", ON_POLICY_DISCRETE)
def test_every_algorithm_runs_with_dying_agents(algo, rnn):
    torch.manual_seed(0)
    runner = _runner(algo, rnn, extra=("critic.epochs=2",) + (() if algo == "hatrpo" else ("algo.epochs=2",)))
    recorder = _Recorder(runner)
    buffers = []
    collect = runner.collect

    def keep(*args):
        out = collect(*args)
        buffers.append({"active": [m.clone() for m in out[0].active_masks]})
        return out

    runner.collect = keep
    for _ in range(2):
        metrics = runner.iterate()
    assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics
    spec = algo_spec(algo)
    layout = runner._actor_layout
    assert isinstance(layout, ChunkLayout) == (rnn == "gru")
    per_iteration = len(runner.groups)
    assert len(recorder.actor_calls) == 2 * per_iteration
    dead_seen = False
    for n, call in enumerate(recorder.actor_calls):
        active = buffers[n // per_iteration]["active"]
        agents = runner.groups[call["group"]]
        expected = layout.concat([layout.to_samples(active[i]) for i in agents])
        assert torch.equal(call["batch"].mask, expected)
        dead_seen |= not bool(expected.all())
    assert dead_seen, "no agent died: the masks were never tested"
    # Per-agent critics (IPPO) skip their agent's dead samples; a central critic uses them all.
    critic_layout = runner._critic_layout
    for n, call in enumerate(recorder.critic_calls):
        if spec.critic == "local":
            active = buffers[n // len(runner.critics)]["active"][call["critic"]]
            assert torch.equal(call["mask"], critic_layout.to_samples(active))
        else:
            assert call["mask"] is None
        assert (call["sequences"] is not None) == (rnn == "gru")


@pytest.mark.parametrize("actor_rnn,critic_rnn", [("gru", "none"), ("none", "gru")])
def test_a_recurrent_actor_with_a_feed_forward_critic_and_the_reverse(actor_rnn, critic_rnn):
    torch.manual_seed(0)
    runner = _runner("happo", actor_rnn, critic_rnn=critic_rnn)
    assert isinstance(runner._actor_layout, ChunkLayout) == (actor_rnn == "gru")
    assert isinstance(runner._critic_layout, ChunkLayout) == (critic_rnn == "gru")
    metrics = runner.iterate()
    assert all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("actor_rnn,critic_rnn", [("gru", "gru"), ("gru", "none"), ("none", "gru")])
def test_a_rollout_not_divisible_into_chunks_is_refused_naming_train_chunk_length(actor_rnn, critic_rnn):
    with pytest.raises(ValueError, match="train.chunk_length=4") as err:
        _runner("happo", actor_rnn, critic_rnn=critic_rnn, rollout=10, chunk=4)
    assert "train.rollout_length=10" in str(err.value)


def test_the_chunk_length_does_not_matter_without_recurrent_networks():
    runner = _runner("happo", "none", rollout=10, chunk=4)
    assert all(math.isfinite(v) for v in runner.iterate().values())


# -- the HA factor and dead agents ----------------------------------------------------------------------


def test_fold_factor_leaves_the_factor_where_the_agent_is_dead():
    g = torch.Generator().manual_seed(0)
    factor = torch.rand(6, 5, generator=g) + 0.5
    before = torch.randn(6, 5, generator=g, requires_grad=True)
    after = before.detach() + 0.3 * torch.randn(6, 5, generator=g)
    active = torch.rand(6, 5, generator=g) < 0.6
    assert active.any() and not active.all()
    folded = fold_factor(factor, before, after, active)
    ratio = torch.exp(after - before.detach())
    assert not folded.requires_grad
    assert torch.equal(folded[~active], factor[~active])
    torch.testing.assert_close(folded[active], (factor * ratio)[active])
    torch.testing.assert_close(fold_factor(factor, before, after), factor * ratio)
    # All dead: M stays exactly as it was (1 for the first agent).
    ones = torch.ones(6, 5)
    assert torch.equal(fold_factor(ones, before, after, torch.zeros(6, 5, dtype=torch.bool)), ones)


class _DeadCanAct(MemoryGame):
    """MemoryGame whose dead agents may take any action (it changes nothing: the reward counts the
    living only). Their ratios then move with the update, so a factor that folded them in would
    leave 1 where they are dead; in the plain game their only action has probability 1."""

    def _observe(self):
        obs, state, masks, active = super()._observe()
        masks = tuple(m | ~a[:, None] for m, a in zip(masks, active))
        return obs, state, masks, active


def _factor_where_first_agent_dead(algo: str, rnn: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One iteration: the second updated agent's factor at the samples where the first updated
    agent is dead, and where it is alive."""
    torch.manual_seed(0)
    runner = _runner(algo, rnn, env_cls=_DeadCanAct)
    recorder = _Recorder(runner)
    buffer, _ = runner.collect()
    runner.collect = lambda: (buffer, [])
    runner.iterate()
    first, second = (recorder.actor_calls[m]["group"] for m in range(2))
    alive_first = runner._actor_layout.to_samples(buffer.active_masks[first])
    factor = recorder.actor_calls[1]["batch"].factor
    return factor[~alive_first], factor[alive_first]


@pytest.mark.filterwarnings("ignore:haml.ops.FisherOperator.*SequenceView:RuntimeWarning")
@pytest.mark.parametrize("rnn", ["none", "gru"])
@pytest.mark.parametrize("algo", [a for a in ON_POLICY_DISCRETE if algo_spec(a).sequential])
def test_the_runner_keeps_the_factor_at_one_where_the_updated_agent_was_dead(algo, rnn):
    dead, alive = _factor_where_first_agent_dead(algo, rnn)
    assert dead.numel() > 0
    assert torch.equal(dead, torch.ones_like(dead))
    assert (alive - 1).abs().max() > 1e-4  # the first agent's update moved its ratio


def test_a_factor_that_folds_in_dead_agents_is_caught(monkeypatch):
    monkeypatch.setattr(on_policy, "fold_factor", lambda f, b, a, active=None: fold_factor(f, b, a))
    dead, _ = _factor_where_first_agent_dead("happo", "gru")
    assert (dead - 1).abs().max() > 1e-4


# -- advantage normalisation --------------------------------------------------------------------------


@pytest.mark.parametrize("rnn", ["none", "gru"])
def test_advantages_are_normalised_over_active_samples_only(rnn):
    torch.manual_seed(0)
    runner = _runner("happo", rnn)
    buffer, _ = runner.collect()
    T_, E = buffer.steps, runner.cfg.train.num_envs
    g = torch.Generator().manual_seed(1)
    adv = torch.randn(T_, E, 1, generator=g) * 3 + 2
    factor = torch.ones(T_, E)
    layout = runner._actor_layout
    for i in range(runner.n_agents):
        active = buffer.active_masks[i]
        assert active.any() and not active.all()
        poisoned = torch.where(active[..., None], adv, torch.full_like(adv, 1e6))
        clean = runner._actor_batch(buffer, [i], adv, factor)
        dirty = runner._actor_batch(buffer, [i], poisoned, factor)
        mask = layout.to_samples(active)
        assert torch.equal(clean.mask, mask)
        torch.testing.assert_close(dirty.advantages[mask], clean.advantages[mask])
        normalised = clean.advantages[mask]
        assert abs(float(normalised.mean())) < 1e-5
        assert float(normalised.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)
        # The samples line up with the rollout: the active advantages are the affine image of Â.
        raw = layout.to_samples(adv[..., 0])[mask]
        expected = (raw - raw.mean()) / (raw.std(unbiased=False) + 1e-5)
        torch.testing.assert_close(normalised, expected)


# -- resume ---------------------------------------------------------------------------------------


RESUME = [
    *_overrides("gru", rollout=8, chunk=4),
    "eval.every=3",
    "eval.episodes=8",
    "eval.num_envs=8",
]
"""8-step rollouts of 3-step episodes: the interruption after 2 iterations (16 steps per env)
falls mid-episode."""
PER_ITERATION = 8 * 8


def _params(run_dir):
    state = load_checkpoint(latest_checkpoint(run_dir))
    return state["runner"]["policies"], state["runner"]["critics"]


def _same(a, b) -> bool:
    for x, y in zip(a[0], b[0]):
        if any(not torch.equal(x[key], y[key]) for key in x):
            return False
    for x, y in zip(a[1], b[1]):
        if any(not torch.equal(x["critic"][key], y["critic"][key]) for key in x["critic"]):
            return False
    return True


def test_a_resumed_gru_run_equals_an_uninterrupted_one_and_needs_its_hidden_states(tmp_path):
    steps = PER_ITERATION * 5

    def train(out: str, n: int):
        return T.train("happo", "toy", "memory", steps=n, seed=3, out=tmp_path / out, quiet=True,
                       overrides=RESUME)

    straight = train("a", steps)
    half = train("b", PER_ITERATION * 2)
    assert half.iterations == 2
    # The interruption falls mid-episode, with non-zero hidden states to carry over.
    path = latest_checkpoint(tmp_path / "b")
    state = load_checkpoint(path)
    saved = state["runner"]["env_step"]
    assert not saved["actor"]["starts"].any()
    assert all(s.abs().sum() > 0 for s in saved["actor"]["states"])
    assert all(s.abs().sum() > 0 for s in saved["critic_states"])
    # A copy of the interrupted run whose checkpoint lost the actors' hidden states.
    (tmp_path / "c" / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "metrics.csv"):
        (tmp_path / "c" / name).write_bytes((tmp_path / "b" / name).read_bytes())
    saved["actor"]["states"] = [torch.zeros_like(s) for s in saved["actor"]["states"]]
    save_checkpoint(tmp_path / "c" / "checkpoints" / path.name, state)

    resumed = T.resume(tmp_path / "b", steps=steps, quiet=True)
    assert resumed.iterations == straight.iterations == 5
    assert _same(_params(tmp_path / "a"), _params(tmp_path / "b"))
    assert resumed.eval_return == pytest.approx(straight.eval_return)
    # The test above could pass if the hidden states did not matter; they do.
    T.resume(tmp_path / "c", steps=steps, quiet=True)
    assert not _same(_params(tmp_path / "a"), _params(tmp_path / "c"))
