"""The CLI's help names exactly the registered algorithms."""

from __future__ import annotations

import re

import pytest

from haml import cli
from haml.algorithms import algo_names


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit):
        cli.main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("argv", [(), ("train",)])
def test_help_lists_the_registered_algorithms_and_no_other(capsys, argv):
    text = _help(capsys, *argv)
    listed = re.search(r"(?:Algorithms: |Train an algorithm \()([a-z0-9_, ]+)", text)
    assert listed is not None, text
    assert [name.strip() for name in listed.group(1).split(",")] == algo_names()
    for planned in ("haddpg", "hatd3", "hasac", "had3qn", "maddpg", "matd3"):
        if planned not in algo_names():
            assert planned not in text.lower()
