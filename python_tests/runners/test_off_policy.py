"""The off-policy runner: HADDPG and MADDPG learn a cooperative continuous game, the warm-up and the
update schedule, exact resume, the keys it checks, and the same CLI/API as the on-policy runner."""

from __future__ import annotations

import pytest
import torch

import haml
from haml import cli
from haml.config.loader import load_config
from haml.envs.toy import DifferentiableGame, MatrixGame
from haml.logging import metrics as M
from haml.runners import make_runner
from haml.utils.checkpoint import latest_checkpoint, load_run_checkpoint

OPTIMUM = (0.5, -0.5)
"""The coordination game's best joint action: r = -(a1 - a2 - 1)^2 - (a1 + a2)^2, 0 there."""


def coordination_reward(actions):
    a1, a2 = actions[0][..., 0], actions[1][..., 0]
    return -((a1 - a2 - 1.0) ** 2) - ((a1 + a2) ** 2)


SMALL = [
    "algo.warmup_steps=1024", "algo.batch_size=256", "algo.train_every=1",
    "algo.updates_per_step=0.03125", "algo.buffer_size=20000", "algo.tau=0.05",
    "actor.hidden=[32]", "critic.network.hidden=[64,64]",
    "eval.every=50", "eval.episodes=64", "eval.num_envs=64",
]
"""A one-step game of 64 envs: 2 updates per vector step after 16 vector steps of warm-up."""


def _game(num_envs: int = 64) -> DifferentiableGame:
    return DifferentiableGame(coordination_reward, (1, 1), num_envs=num_envs)


DELAYED = ["algo.updates_per_step=0.0625"]
"""HATD3 / MATD3 step their actors every 2nd update: twice the updates give them HADDPG's number
of actor steps (and twice its critic steps)."""


@pytest.mark.parametrize(
    "algo, extra", [("haddpg", []), ("maddpg", []), ("hatd3", DELAYED), ("matd3", DELAYED)]
)
def test_the_coordination_game_is_solved_in_seconds(algo, extra, tmp_path):
    """Uniform random actions in [-1, 1]² score -2.3 on average and the untrained actors about -1;
    300 iterations (19,200 steps, ~600 actor steps) bring every algorithm within 0.1 of the optimum
    (measured at seed 0: HADDPG -0.025, MADDPG -0.027, HATD3 -0.0066, MATD3 -0.0050; HATD3 with
    its default update rate, 300 actor steps, -0.33). A one-step game has no successors' choice to
    coordinate on, so here the HA algorithms match the MA ones rather than beating them."""
    result = haml.train(algo, _game(), steps=64 * 300, seed=0, out=tmp_path, quiet=True,
                        overrides=[*SMALL, *extra])
    assert result.eval_return is not None and result.eval_return > -0.1, result.eval_return
    state = load_run_checkpoint(latest_checkpoint(tmp_path))["runner"]
    assert state["algo"] == algo and state["iteration"] == 300


def _runner(algo: str = "haddpg", *extra: str, num_envs: int = 64):
    cfg = load_config(algo, "toy", "figure1", overrides=["train.num_envs=64", "train.steps=100000",
                                                         *SMALL, *extra])
    return make_runner(cfg, _game(num_envs))


def test_no_update_before_the_warm_up_and_the_owed_updates_after_it():
    torch.manual_seed(0)
    runner = _runner()  # warm-up 1024 steps = 16 vector steps of 64; 2 updates per vector step
    calls = []
    update = runner.learner.update
    runner.learner.update = lambda batch, on_agent=None: (calls.append(1), update(batch, on_agent))[1]
    for _ in range(16):
        metrics = runner.iterate()
        assert M.VALUE_LOSS not in metrics
    assert calls == [] and len(runner.buffer) == 1024
    metrics = runner.iterate()
    assert len(calls) == 2 and M.VALUE_LOSS in metrics and M.Q_MEAN in metrics
    assert {M.agent_metric(M.POLICY_LOSS, i) for i in (0, 1)} <= metrics.keys()


def test_fractional_updates_carry_over_between_rounds():
    torch.manual_seed(0)
    runner = _runner("haddpg", "algo.updates_per_step=0.005", "algo.warmup_steps=64")  # 0.32 per round
    calls = []
    update = runner.learner.update
    runner.learner.update = lambda batch, on_agent=None: (calls.append(1), update(batch, on_agent))[1]
    for _ in range(1 + 25):
        runner.iterate()
    assert len(calls) == int(25 * 64 * 0.005)


def test_hooks_see_each_actor_step_in_the_learners_order():
    torch.manual_seed(0)
    runner = _runner("haddpg", "algo.warmup_steps=256")
    seen = []
    runner.add_update_hook(seen.append)
    for _ in range(5):
        runner.iterate()
    assert len(seen) == 2 * 2  # one vector step past the warm-up: 2 updates of 2 agents
    assert sorted(u.agents[0] for u in seen[:2]) == [0, 1]
    assert all(u.factor is None and "policy_loss" in u.metrics for u in seen)


@pytest.mark.parametrize("algo", ["haddpg", "hatd3"])
def test_resume_continues_exactly(algo, tmp_path):
    """Two iterations, a checkpoint file, two more, against four straight: every parameter, the
    buffer and the counters equal (CPU, bitwise; HATD3: its delay phase included)."""
    from haml.utils.checkpoint import load_checkpoint, save_checkpoint
    from haml.utils.seeding import rng_state, seed_everything, set_rng_state

    extra = ("algo.warmup_steps=64",)
    seed_everything(1)
    straight = _runner(algo, *extra)
    for _ in range(4):
        straight.iterate()

    seed_everything(1)
    first = _runner(algo, *extra)
    for _ in range(2):
        first.iterate()
    save_checkpoint(tmp_path / "c.pt", {"runner": first.state_dict(), "rng": rng_state()})
    seed_everything(99)  # the resumed run must not depend on the state it starts in
    resumed = _runner(algo, *extra)
    saved = load_checkpoint(tmp_path / "c.pt")
    resumed.load_state_dict(saved["runner"])
    set_rng_state(saved["rng"])
    for _ in range(2):
        resumed.iterate()

    expected, got = straight.state_dict(), resumed.state_dict()
    assert got["iteration"] == 4 and got["env_steps"] == expected["env_steps"] == 256
    assert got["updates_done"] == expected["updates_done"] > 0
    for a, b in zip(expected["policies"], got["policies"]):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(expected["critic"][k], got["critic"][k]) for k in expected["critic"])
    assert len(resumed.buffer) == len(straight.buffer) == 256


def test_a_discrete_task_names_the_algorithms_that_fit(tmp_path):
    game = MatrixGame(torch.eye(2), num_envs=8)
    with pytest.raises(ValueError, match=r"haddpg cannot act in discrete action spaces .*happo") as err:
        haml.train("haddpg", game, steps=64, out=tmp_path, quiet=True, overrides=["eval.every=0"])
    assert "switch" not in str(err.value)  # the toy family has no option that gives Box actions


def test_a_family_that_can_switch_its_action_kind_says_how(tmp_path):
    pytest.importorskip("mpe2")
    with pytest.raises(ValueError, match=r"hatd3 cannot act in discrete action spaces .*; or switch "
                       r"the env's actions with env\.options\.continuous_actions=true$"):
        haml.train("hatd3", "mpe", "simple_spread_v3", steps=64, out=tmp_path, quiet=True)


@pytest.mark.parametrize(
    "override, match",
    [
        ("algo.warmup_steps=100000", r"algo.warmup_steps \(100000\) must be smaller than train.steps"),
        ("algo.buffer_size=100", r"algo.buffer_size must be >= algo.batch_size"),
        ("algo.tau=1.5", r"algo.tau must be in \(0, 1\]"),
        ("algo.n_step=0", r"algo.n_step"),
        ("actor.rnn=gru", r"actor.rnn / critic.network.rnn"),
    ],
)
def test_bad_keys_are_named_and_nothing_is_written(tmp_path, override, match):
    with pytest.raises((ValueError, TypeError), match=match):
        haml.train("haddpg", _game(), steps=64 * 10, out=tmp_path / "r", quiet=True,
                   overrides=[*SMALL, override])
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_haddpg_trains_and_evaluates_on_mamujoco_through_the_cli(tmp_path, capsys):
    pytest.importorskip("gymnasium_robotics")
    run = tmp_path / "run"
    argv = ["train", "--algo", "haddpg", "--env", "mamujoco", "--task", "Reacher-2x1", "--steps", "400",
            "--out", str(run), "--quiet", "train.num_envs=2", "algo.warmup_steps=100", "algo.batch_size=32",
            "algo.train_every=10", "algo.updates_per_step=0.1", "env.options.vectorization=sync",
            "eval.every=5", "eval.episodes=2", "eval.num_envs=2", "env.options.episode_limit=20"]
    assert cli.main(argv) == 0
    assert (run / "curve.png").is_file()
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--episodes", "2"]) == 0
    assert "eval return over 2 episodes" in capsys.readouterr().out
