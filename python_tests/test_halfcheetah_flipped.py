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


def test_an_upright_cheetah_reads_zero(mamujoco_run, capsys):
    share, returns, env_steps = flipped.upside_down_share(mamujoco_run, episodes=2)
    assert share == 0.0 and len(returns) == 2 and env_steps == 32
    assert flipped.main([str(mamujoco_run)]) == 0
    assert "on its back 0% of the time" in capsys.readouterr().out


def test_a_cheetah_turned_over_for_its_first_episode_reads_four_tenths(mamujoco_run, monkeypatch):
    reads = flipped._mujoco_data

    def turned_over(env):
        data = reads(env)
        data.qpos[2] = math.pi  # the torso's pitch: on its back until the autoreset
        return data

    monkeypatch.setattr(flipped, "_mujoco_data", turned_over)
    share, returns, _ = flipped.upside_down_share(mamujoco_run, episodes=2)
    # episodes of 5 steps: 4 read on its back (the 5th is read after the autoreset), 5 upright
    assert share == pytest.approx(0.4) and len(returns) == 2


def test_runs_that_are_not_halfcheetah_or_have_no_checkpoint_are_errors(tmp_path, capsys):
    toy = tmp_path / "toy"
    assert cli.main(["train", "--algo", "happo", "--env", "toy", "--steps", "64", "--out", str(toy),
                     "--quiet"]) == 0
    assert flipped.main([str(toy), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "not a MaMuJoCo HalfCheetah one" in err
    assert f"{tmp_path / 'missing'} is not a run directory (no config.yaml)" in err
