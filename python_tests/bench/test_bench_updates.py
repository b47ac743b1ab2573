"""``haml bench haddpg --algo <a>``: every off-policy update it times builds, runs both sides and
prints its rows."""

import pytest
import torch

from haml.bench.haddpg import ALGOS, haddpg_cases, main, problem
from haml.bench.ops import Options


@pytest.mark.parametrize("algo", ["hatd3", "hasac"])
def test_the_bench_times_the_update_of(algo, capsys):
    cases = haddpg_cases(torch.device("cpu"), Options.make(compile=False), algo)
    assert [c.op for c in cases] == [f"{algo}_update"] * 2
    assert cases[1].targets and cases[1].targets[0].bound == 2.0
    learner, _ = problem(2, torch.device("cpu"), algo=algo)
    assert learner.critic.twin
    assert main(["--algo", algo, "--quick", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert f"--algo {algo}" in out and "agents=2" in out and "ref/fast" in out


def test_an_unknown_algorithm_is_refused():
    assert "haddpg" in ALGOS
    with pytest.raises(ValueError, match="this bench times"):
        problem(2, torch.device("cpu"), algo="happo")
