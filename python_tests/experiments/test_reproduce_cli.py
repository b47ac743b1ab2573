"""``haml reproduce``: the subcommand declared by haml.experiments.cli, and the registry."""

from __future__ import annotations

import argparse
import json

import pytest

from haml.experiments import experiment_names, get_experiment
from haml.experiments.cli import add_reproduce_parser


def _parse(argv):
    parser = argparse.ArgumentParser(prog="haml")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_reproduce_parser(subparsers)
    return parser.parse_args(argv)


def test_registry():
    assert experiment_names() == ["homogeneity-trap", "heterogeneity-trap", "figure1"]
    with pytest.raises(ValueError, match="figure1"):
        get_experiment("figure-1")


def test_reproduce_writes_the_files_and_reports(tmp_path, capsys):
    args = _parse(["reproduce", "figure1", "--seeds", "2", "--out", str(tmp_path)])
    assert args.handler(args, args.command_parser) == 0
    line = capsys.readouterr().out
    assert "figure1: claim held on 2/2 seeds" in line and "reproduced" in line
    data = json.loads((tmp_path / "figure1.json").read_text())
    assert data["num_seeds"] == 2 and data["command"] == "haml reproduce figure1"
    assert (tmp_path / "figure1.png").exists()


def test_reproduce_all_quick(tmp_path, capsys):
    args = _parse(["reproduce", "all", "--seeds", "1", "--quick", "--out", str(tmp_path)])
    assert args.handler(args, args.command_parser) == 0
    out = capsys.readouterr().out
    for name in experiment_names():
        assert f"{name}: claim held on 1/1" in out
        assert (tmp_path / f"{name}.json").exists() and not (tmp_path / f"{name}.png").exists()


@pytest.mark.parametrize("argv", [["reproduce", "nope"], ["reproduce", "figure1", "--seeds", "0"],
                                  ["reproduce", "figure1", "--seeds", "x"]])
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as err:
        _parse(argv)
    assert err.value.code == 2
