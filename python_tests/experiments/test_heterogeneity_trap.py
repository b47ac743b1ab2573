"""The trap of heterogeneity ([HAML] Proposition 2): simultaneous greedy updates fall to J = -1,
sequential (HA) ones reach J = 2, exactly and with haml's MAA2C-NS / HAA2C."""

from __future__ import annotations

import pytest
import torch

from haml.experiments import heterogeneity_trap as het

SEEDS = 10
NEEDED = 9
PAYOFF = torch.tensor([[0.0, 2.0], [2.0, -1.0]])  # r(0,0)=0, r(0,1)=r(1,0)=2, r(1,1)=-1


def J(p1: float, p2: float) -> float:
    """J of π^1(0) = p1, π^2(0) = p2, written out from the payoff table."""
    return 2 * p1 * (1 - p2) + 2 * (1 - p1) * p2 - (1 - p1) * (1 - p2)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return het.run(seeds=SEEDS, out_dir=tmp_path_factory.mktemp("heterogeneity"), quick=True)


def test_initial_policies_satisfy_the_proposition(result):
    for s in result["seeds"]:
        p1, p2 = s["pi_old_action0"]
        assert 0.6 < p1 < 1 and 0.6 < p2 < 1
        assert s["J_old"] == pytest.approx(J(p1, p2), abs=1e-9)
    # The learned runs start from the same π_old, written into the networks.
    for s in result["seeds"]:
        for algo in (het.SIMULTANEOUS, het.SEQUENTIAL):
            assert s[algo]["J_old"] == pytest.approx(s["J_old"], abs=1e-5)


def test_exact_greedy_updates(result):
    for s in result["seeds"]:
        assert s["exact"]["simultaneous"]["J_new"] == -1.0 < s["J_old"]
        assert s["exact"]["simultaneous"]["pi_new_action0"] == [0.0, 0.0]  # both play action 1
        assert s["exact"]["sequential"]["J_new"] == 2.0


def test_learned_simultaneous_update_falls_into_the_trap(result):
    fell = [s[het.SIMULTANEOUS]["J_new"] < s["J_old"] and s[het.SIMULTANEOUS]["J_new"] <= -0.9
            for s in result["seeds"]]
    assert sum(fell) >= NEEDED, [s[het.SIMULTANEOUS] for s in result["seeds"]]


def test_learned_sequential_update_reaches_the_optimum(result):
    reached = [s[het.SEQUENTIAL]["J_new"] >= 1.9 for s in result["seeds"]]
    assert sum(reached) >= NEEDED, [s[het.SEQUENTIAL] for s in result["seeds"]]
    for s in result["seeds"]:
        p1, p2 = s[het.SEQUENTIAL]["pi_new_action0"]
        assert s[het.SEQUENTIAL]["J_new"] == pytest.approx(J(p1, p2), abs=1e-5)


def test_summary_counts_the_checks(result):
    assert result["held_count"] == sum(all(s["checks"].values()) for s in result["seeds"])
    assert result["reproduced"] and result["held_count"] >= NEEDED


@pytest.mark.parametrize(
    "other_p0, expected_action",
    [(0.7, 1), (0.9, 1), (0.5, 0), (0.3, 0)],  # Q(0) = 2(1 - p), Q(1) = 3p - 1: action 1 iff p > 0.6
)
def test_best_response(other_p0, expected_action):
    probs = [torch.tensor([0.5, 0.5], dtype=torch.float64),
             torch.tensor([other_p0, 1 - other_p0], dtype=torch.float64)]
    response = het.best_response(PAYOFF, 0, probs)
    assert response.tolist() == [1.0 - expected_action, float(expected_action)]


def test_exact_sequential_update_answers_the_new_policy():
    old = [torch.tensor([0.7, 0.3], dtype=torch.float64)] * 2
    new = het.exact_sequential_update(PAYOFF, old, order=[1, 0])
    assert new[1].tolist() == [0.0, 1.0]  # agent 2 first: greedy action 1
    assert new[0].tolist() == [1.0, 0.0]  # agent 1 answers it with action 0
    sim = het.exact_simultaneous_update(PAYOFF, old)
    assert [p.tolist() for p in sim] == [[0.0, 1.0], [0.0, 1.0]]


def test_figure_is_written(tmp_path):
    result = het.run(seeds=1, out_dir=tmp_path)
    assert (tmp_path / "heterogeneity-trap.png").read_bytes()[:4] == b"\x89PNG"
    assert result["figure"] == str(tmp_path / "heterogeneity-trap.png")
