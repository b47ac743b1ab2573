"""docs/envs/custom.md, run as written.

Its example env is ``haml/envs/examples/meet.py`` verbatim; its Python example trains HAPPO and
HATRPO to a far better return than random actions and evaluates with ``haml.evaluate``; its
command lines train, evaluate and resume from the command line, importing ``my_env`` from the
current directory as a user's shell would. The code is taken from the page's marked blocks, so
the page cannot drift from what runs.
"""

from __future__ import annotations

import csv
import re
import shlex
import sys
from pathlib import Path

import pytest

pytest.importorskip("pettingzoo")

from haml import cli  # noqa: E402
from haml.config.loader import read_config  # noqa: E402
from haml.runners.env_position import NO_ENV_STATE_WARNING  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs/envs/custom.md"

RANDOM_RETURN = -10.0
"""Well above what random actions score on the example (about -15: the agents start 2/3 apart on
average and drift for 25 steps) and well below what meeting scores (about -1)."""


def _block(name: str) -> str:
    """The code of the fenced block after ``<!-- example: name -->`` in the page."""
    text = DOC.read_text(encoding="utf-8")
    marker = f"<!-- example: {name} -->"
    assert text.count(marker) == 1, f"{DOC.name} must mark one {name!r} block"
    match = re.match(r"\s*```\w*\n(.*?)^```", text.split(marker, 1)[1], re.S | re.M)
    assert match, f"no fenced block after {marker}"
    return match.group(1)


def _first_train_return(run_dir: Path) -> float:
    with open(run_dir / "metrics.csv") as f:
        return float(next(csv.DictReader(f))["charts/train_return"])


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding the page's ``my_env.py``, made the current one; ``sys.path`` (which
    the task import may extend by the current directory) and ``sys.modules`` restored after."""
    (tmp_path / "my_env.py").write_text(_block("env"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "my_env", raising=False)
    yield tmp_path
    sys.modules.pop("my_env", None)


def test_the_page_shows_the_shipped_example_verbatim() -> None:
    from haml.envs.examples import meet

    assert _block("env") == Path(meet.__file__).read_text(encoding="utf-8")


def test_the_python_example_trains_happo_and_hatrpo(user_dir: Path, capsys) -> None:
    sys.path.insert(0, str(user_dir))  # as running a script that sits beside my_env.py
    namespace: dict = {}
    exec(compile(_block("python"), str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    assert "the critic's global state is the env's state() (2 values)" in out
    for result in (namespace["happo"], namespace["hatrpo"]):
        algo = result.config.algo_name
        assert result.run_dir == Path("runs/pettingzoo/my_env_make_env") / algo / "seed-0"
        assert result.env_steps == 8000
        assert _first_train_return(result.run_dir) < RANDOM_RETURN
        assert result.eval_return > -3.0, result.config.algo_name
    evaluation = re.search(r"eval return over 10 episodes \(deterministic\): (-?[\d.]+)", out)
    assert evaluation and float(evaluation.group(1)) > -3.0


def test_the_command_lines_train_evaluate_and_resume(user_dir: Path, capsys) -> None:
    lines = [line for line in _block("cli").splitlines() if line.strip()]
    outputs = []
    for line in lines:
        args = shlex.split(line)
        assert args[0] == "haml"
        assert cli.main(args[1:]) == 0, line
        outputs.append(capsys.readouterr().out)
    happo = Path("runs/meet/happo")
    hatrpo = read_config(Path("runs/meet/hatrpo/config.yaml"))
    assert read_config(happo / "config.yaml").env.task == "my_env:make_env"
    assert (hatrpo.train.num_envs, hatrpo.env.options["episode_limit"]) == (16, 20)
    assert _first_train_return(happo) < RANDOM_RETURN
    evaluation = re.search(r"over 20 episodes \(deterministic\): (-?[\d.]+)", outputs[2])
    assert evaluation and float(evaluation.group(1)) > -3.0
    assert NO_ENV_STATE_WARNING in outputs[3]
    assert "done: 16000 steps" in outputs[3]
