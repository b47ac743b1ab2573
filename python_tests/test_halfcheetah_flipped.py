"""scripts/halfcheetah_flipped.py: the share of steps a HalfCheetah run spends on its back."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from haml import cli

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "halfcheetah_flipped.py"
_spec = importlib.util.spec_from_file_location("halfcheetah_flipped", SCRIPT)
flipped = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flipped)

TINY = ["train.num_envs=2", "train.rollout_length=8", "actor.hidden=[8]", "critic.network.hidden=[8]",
        "eval.every=2", "eval.episodes=2", "eval.num_envs=2", "env.options.episode_limit=40",
        "env.options.vectorization=sync"]


@pytest.fixture(scope="module")
def cheetah_run(tmp_path_factory) -> Path:
    pytest.importorskip("gymnasium_robotics")
    run_dir = tmp_path_factory.mktemp("cheetah") / "run"
    argv = ["train", "--algo", "happo", "--env", "mamujoco", "--task", "HalfCheetah-2x3",
            "--steps", "32", "--out", str(run_dir), "--quiet", *TINY]
    assert cli.main(argv) == 0
    return run_dir


def test_an_upright_cheetah_reads_zero(cheetah_run, capsys):
    share, returns, env_steps = flipped.upside_down_share(cheetah_run, episodes=2)
    assert share == 0.0 and len(returns) == 2 and env_steps == 32
    assert flipped.main([str(cheetah_run)]) == 0
    assert "on its back 0% of the time" in capsys.readouterr().out


def test_a_cheetah_turned_over_for_the_first_episode_reads_about_half(cheetah_run, monkeypatch):
    reads = flipped._mujoco_data

    def turned_over(env):
        data = reads(env)
        data.qpos[2] = math.pi  # the torso's pitch: on its back until the autoreset
        return data

    monkeypatch.setattr(flipped, "_mujoco_data", turned_over)
    share, returns, _ = flipped.upside_down_share(cheetah_run, episodes=2)
    # 40 steps on its back (the last one read after the autoreset), 40 upright
    assert 0.45 <= share <= 0.55 and len(returns) == 2


def test_runs_that_are_not_halfcheetah_or_have_no_checkpoint_are_errors(tmp_path, capsys):
    toy = tmp_path / "toy"
    assert cli.main(["train", "--algo", "happo", "--env", "toy", "--steps", "64", "--out", str(toy),
                     "--quiet"]) == 0
    assert flipped.main([str(toy), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "not a MaMuJoCo HalfCheetah one" in err and "missing" in err
