"""[HATRPO] Figure 1: from μ = (-0.25, 0.25), σ = 1, δ = 0.5, the sequential trust-region iteration
(HATRPO) raises J = μ^1 μ^2 and the simultaneous one lowers it."""

from __future__ import annotations

import math

import pytest

from haml.experiments import figure1

SEEDS = 10
NEEDED = 9
J0 = -0.25 * 0.25
RADIUS = math.sqrt(2 * 0.5)  # KL(N(μ,1) || N(μ',1)) = (μ - μ')² / 2 ≤ δ  ⇔  |μ - μ'| ≤ 1


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return figure1.run(seeds=SEEDS, out_dir=tmp_path_factory.mktemp("figure1"), quick=True)


def test_sequential_improves_and_simultaneous_decreases(result):
    seq = [s["sequential"]["J"][1] for s in result["seeds"]]
    sim = [s["simultaneous"]["J"][1] for s in result["seeds"]]
    assert sum(J > J0 for J in seq) >= NEEDED, seq
    assert sum(J < J0 for J in sim) >= NEEDED, sim


def test_each_step_stays_in_its_kl_ball_and_moves(result):
    for s in result["seeds"]:
        for scheme in ("sequential", "simultaneous"):
            start, after = s[scheme]["means"][0], s[scheme]["means"][1]
            assert start == pytest.approx([-0.25, 0.25])
            for agent in range(2):
                step = abs(after[agent] - start[agent])
                assert 0.5 * RADIUS <= step <= RADIUS + 1e-6
            assert s[scheme]["J"][1] == pytest.approx(after[0] * after[1], abs=1e-9)
            assert s[scheme]["std_after"] == pytest.approx([1.0, 1.0])  # σ is not learnt


def test_simultaneous_steps_follow_each_agents_own_gradient(result):
    # ∂J/∂μ^1 = μ^2 > 0 and ∂J/∂μ^2 = μ^1 < 0: alone, each step helps; together they reach the
    # quadrant μ^1 > 0 > μ^2 where J < 0.
    for s in result["seeds"]:
        mu1, mu2 = s["simultaneous"]["means"][1]
        assert mu1 > 0 > mu2


def test_sequential_second_agent_is_weighted_and_simultaneous_is_not(result):
    for s in result["seeds"]:
        seq, sim = s["sequential"]["factor_std"], s["simultaneous"]["factor_std"]
        assert seq[0::2] == [0.0] * len(seq[0::2])  # the first agent of each iteration: M = 1
        assert all(v > 0.1 for v in seq[1::2])  # the second: M = π_new/π_old of the first
        assert sim == [0.0] * len(sim)


def test_sequential_keeps_improving(result):
    improving = [all(b > a for a, b in zip(s["sequential"]["J"], s["sequential"]["J"][1:]))
                 for s in result["seeds"]]
    assert sum(improving) >= NEEDED


def test_exact_paths():
    assert figure1.exact_path(True, 1, (0, 1)) == [[-0.25, 0.25], [0.75, 1.25]]
    assert figure1.exact_path(True, 1, (1, 0)) == [[-0.25, 0.25], [-1.25, -0.75]]
    assert figure1.exact_path(False, 2) == [[-0.25, 0.25], [0.75, -0.75], [-0.25, 0.25]]


def test_figure_is_written(tmp_path):
    result = figure1.run(seeds=1, out_dir=tmp_path, iterations=1)
    assert (tmp_path / "figure1.png").read_bytes()[:4] == b"\x89PNG"
    assert result["figure"] == str(tmp_path / "figure1.png")
