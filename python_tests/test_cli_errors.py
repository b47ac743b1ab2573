"""Bad input on the command line ends in one line naming what is wrong (exit 2), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from haml import cli

TOY = ["train.num_envs=64", "eval.every=0"]


def _train(out: Path, *extra: str) -> list[str]:
    return ["train", "--algo", "happo", "--env", "toy", "--steps", "64", "--out", str(out), "--quiet",
            *extra]


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_misspelt_device_is_named(tmp_path, capsys):
    assert cli.main(_train(tmp_path / "r", *TOY, "train.device=banana")) == 2
    assert "train.device must be a torch device such as cpu, cuda or cuda:1, got 'banana'" in _error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable GPU")
def test_cuda_on_a_machine_without_it_is_named(tmp_path, capsys):
    assert cli.main(_train(tmp_path / "r", *TOY, "train.device=cuda")) == 2
    assert "train.device='cuda' cannot be used here" in _error(capsys)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_evaluating_on_a_device_that_is_not_there_names_it(tmp_path):
    from haml.evaluation import evaluate_run

    assert cli.main(_train(tmp_path / "r", *TOY)) == 0
    with pytest.raises(ValueError, match="device must be a torch device .* got 'banana'"):
        evaluate_run(tmp_path / "r", episodes=1, device="banana")


def test_a_binary_config_file_is_named(tmp_path, capsys):
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(bytes(range(256)) * 4)
    assert cli.main(_train(tmp_path / "r", "--config", str(garbage), *TOY)) == 2
    err = _error(capsys)
    assert "garbage.yaml" in err and "not a YAML text file" in err


def test_overrides_are_accepted_after_options(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["train", "--algo", "happo", "--env", "toy", "train.num_envs=64", "--seed", "1",
            "eval.every=0", "--steps", "64", "algo.clip=0.1", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["seed"] == 1 and saved["algo"]["clip"] == 0.1 and saved["eval"]["every"] == 0
    assert saved["train"]["num_envs"] == 64


def test_an_unknown_option_is_still_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(_train(tmp_path / "r", *TOY, "--no-such-flag"))
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
