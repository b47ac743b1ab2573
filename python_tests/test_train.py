"""``haml.train`` end to end: every algorithm on two tasks, outputs, resume, bad input, NaN stop.

The toy game runs in milliseconds; the MaMuJoCo runs use the sync vectoriser, tiny rollouts and
tiny networks, so that each takes about a second.
"""

from __future__ import annotations

import csv

import pytest
import torch

import haml.training as T
from haml.algorithms import algo_names, algo_spec, algos_for_action_kind
from haml.config.loader import ConfigError
from haml.runners import TrainingDiverged
from haml.utils.checkpoint import latest_checkpoint, load_checkpoint

TOY = ["train.num_envs=64", "eval.every=1", "eval.episodes=4", "eval.num_envs=4"]
TOY_OFF_POLICY = ["algo.warmup_steps=64", "algo.batch_size=64", "algo.train_every=1",
                  "algo.updates_per_step=0.03125"]
"""An off-policy algorithm on the toy game: one vector step of warm-up, then 2 updates."""
MAMUJOCO = [
    "train.num_envs=2",
    "train.rollout_length=16",
    "actor.hidden=[8]",
    "critic.network.hidden=[8]",
    "eval.every=2",
    "eval.episodes=2",
    "eval.num_envs=2",
    "env.options.episode_limit=20",
    "env.options.vectorization=sync",
]


ON_POLICY = [a for a in algo_names() if algo_spec(a).runner == "on_policy"]


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("algo", algos_for_action_kind("discrete"))
def test_every_algorithm_trains_two_iterations_on_a_toy_game(algo, tmp_path):
    off_policy = TOY_OFF_POLICY if algo_spec(algo).runner == "off_policy" else []
    result = T.train(algo, "toy", "heterogeneity-trap", steps=128, out=tmp_path, quiet=True,
                     overrides=[*TOY, *off_policy])
    assert result.iterations == 2 and result.env_steps == 128
    assert result.eval_return is not None
    rows = _rows(tmp_path)
    assert [int(r["step"]) for r in rows] == [64, 128]
    assert all(r["charts/eval_return"] != "" for r in rows)
    assert (tmp_path / "config.yaml").is_file()
    assert (tmp_path / "curve.png").is_file()
    assert list(tmp_path.glob("events.out.tfevents.*"))
    assert latest_checkpoint(tmp_path).name == "iter-000002.pt"


@pytest.mark.parametrize("algo", ON_POLICY)
def test_every_algorithm_trains_two_iterations_on_mamujoco(algo, tmp_path):
    pytest.importorskip("gymnasium_robotics")
    result = T.train(algo, "mamujoco", "HalfCheetah-2x3", steps=64, out=tmp_path, quiet=True,
                     overrides=MAMUJOCO)
    assert result.iterations == 2 and result.env_steps == 64
    rows = _rows(tmp_path)
    assert rows[-1]["charts/eval_return"] != ""
    assert float(rows[-1]["losses/value_loss"]) >= 0


def _params(run_dir):
    state = load_checkpoint(latest_checkpoint(run_dir))
    return state["runner"]["policies"], state["runner"]["critics"]


def _assert_same(a, b):
    for x, y in zip(a[0], b[0]):
        for key in x:
            assert torch.equal(x[key], y[key]), key
    for x, y in zip(a[1], b[1]):
        for key in x["critic"]:
            assert torch.equal(x["critic"][key], y["critic"][key]), key


@pytest.mark.parametrize(
    "algo,env,task,overrides,steps",
    [
        ("happo", "toy", "heterogeneity-trap", TOY, 64 * 6),
        ("hatrpo", "mamujoco", "Hopper-3x1", MAMUJOCO, 32 * 6),
    ],
)
def test_resumed_run_equals_an_uninterrupted_one(algo, env, task, overrides, steps, tmp_path):
    if env == "mamujoco":
        pytest.importorskip("gymnasium_robotics")
    straight = T.train(algo, env, task, steps=steps, seed=3, out=tmp_path / "a", quiet=True,
                       overrides=overrides)
    half = T.train(algo, env, task, steps=steps // 2, seed=3, out=tmp_path / "b", quiet=True,
                   overrides=overrides)
    assert half.iterations == 3
    resumed = T.resume(tmp_path / "b", steps=steps, quiet=True)
    assert resumed.iterations == straight.iterations == 6
    _assert_same(_params(tmp_path / "a"), _params(tmp_path / "b"))
    # The CSV of the resumed run has each step once.
    steps_logged = [int(r["step"]) for r in _rows(tmp_path / "b")]
    assert steps_logged == sorted(set(steps_logged))
    assert resumed.eval_return == pytest.approx(straight.eval_return)


def test_a_changed_seed_changes_the_parameters(tmp_path):
    """The resume test above could pass if training ignored its data; this one shows it does not."""
    T.train("happo", "toy", steps=128, seed=0, out=tmp_path / "a", quiet=True, overrides=TOY)
    T.train("happo", "toy", steps=128, seed=1, out=tmp_path / "b", quiet=True, overrides=TOY)
    with pytest.raises(AssertionError):
        _assert_same(_params(tmp_path / "a"), _params(tmp_path / "b"))


def test_existing_run_directory_is_not_overwritten(tmp_path):
    T.train("happo", "toy", steps=64, out=tmp_path, quiet=True, overrides=TOY)
    with pytest.raises(FileExistsError, match="--resume"):
        T.train("happo", "toy", steps=64, out=tmp_path, quiet=True, overrides=TOY)
    T.train("happo", "toy", steps=64, out=tmp_path, quiet=True, overrides=TOY, overwrite=True)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"algo": "hapo"}, "happo"),
        ({"env": "mujoco"}, "mamujoco"),
        ({"task": "nope"}, "heterogeneity-trap"),
        ({"overrides": ["algo.clipp=0.1"]}, "clip"),
        ({"overrides": ["train.num_envs=many"]}, "train.num_envs"),
    ],
)
def test_bad_names_and_keys_list_the_valid_choices(kwargs, match, tmp_path):
    args = {"algo": "happo", "env": "toy", "task": None, "overrides": TOY, **kwargs}
    with pytest.raises((ConfigError, ValueError, TypeError), match=match):
        T.train(args.pop("algo"), args.pop("env"), args.pop("task"), steps=64, out=tmp_path,
                quiet=True, **args)


def test_nan_loss_stops_the_run_naming_the_iteration_and_keeps_the_last_checkpoint(
    tmp_path, poison_happo
):
    poison_happo(after=4)  # iteration 3 (two agents per iteration)
    with pytest.raises(TrainingDiverged, match="iteration 3"):
        T.train("happo", "toy", steps=64 * 5, out=tmp_path, quiet=True,
                overrides=[*TOY, "run.checkpoint_every=1"])
    last = latest_checkpoint(tmp_path)
    assert last.name == "iter-000002.pt"
    policies, _ = _params(tmp_path)
    assert all(torch.isfinite(v).all() for p in policies for v in p.values())


def test_train_accepts_an_environment_object(tmp_path):
    from haml.envs.toy import MatrixGame

    game = MatrixGame(torch.tensor([[1.0, 0.0], [0.0, 3.0]]), num_envs=128)
    result = T.train("happo", game, steps=128 * 3, out=tmp_path, quiet=True,
                     overrides=["eval.every=1"])
    assert result.config.train.num_envs == 128
    assert result.eval_return is not None
