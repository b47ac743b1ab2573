"""The trap of homogeneity ([HATRPO]/[HAML] Proposition 1) with haml's MAPPO, HAPPO and HATRPO.

The claim is checked on the *measured* exact returns of 10 seeds against the proposition's
numbers (n = 4: J*_share = 2 / 2^4 = 0.125, J* = 1), not on the experiment's own verdict.
"""

from __future__ import annotations

import json

import pytest
import torch

from haml.experiments import homogeneity_trap
from haml.envs.toy import expected_payoff
from haml.envs.toy.presets import homogeneity_trap_payoff

N_AGENTS = 4
BOUND = 2.0 / 2.0**N_AGENTS  # [HATRPO] Proposition 1: J*_share = 2 / 2^n
OPTIMUM = 1.0
SEEDS = 10
NEEDED = 9


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("homogeneity")
    return homogeneity_trap.run(seeds=SEEDS, out_dir=out, quick=True)


def test_shared_mappo_never_exceeds_the_bound(result):
    stayed = [max(s["mappo"]["J_curve"]) <= BOUND + 1e-6 for s in result["seeds"]]
    assert sum(stayed) >= NEEDED, [s["mappo"]["J_curve"] for s in result["seeds"]]


def test_happo_and_hatrpo_reach_the_optimum(result):
    for algo in ("happo", "hatrpo"):
        finals = [s[algo]["J"] for s in result["seeds"]]
        assert sum(J >= 0.95 * OPTIMUM for J in finals) >= NEEDED, (algo, finals)


def test_all_methods_start_at_the_bound(result):
    # The near-uniform initial policy is the best shared one: every method starts at J*_share,
    # so the HA methods' gain is learnt, not inherited from the initialisation.
    for s in result["seeds"]:
        for algo in ("mappo", "happo", "hatrpo"):
            assert s[algo]["J_curve"][0] == pytest.approx(BOUND, abs=1e-3)


def test_shared_policy_is_one_policy_and_ha_policies_split_the_agents(result):
    half = N_AGENTS // 2
    for s in result["seeds"]:
        shared = s["mappo"]["pi_action0"]
        assert max(shared) - min(shared) < 1e-6  # every agent acts with the same probabilities
    split = 0
    for s in result["seeds"]:
        p = s["happo"]["pi_action0"]
        first, second = p[:half], p[half:]
        # The optimum (0^{n/2}, 1^{n/2}) or (1^{n/2}, 0^{n/2}): halves deterministic and opposite.
        split += (min(first) > 0.95 and max(second) < 0.05) or (max(first) < 0.05 and min(second) > 0.95)
    assert split >= NEEDED


def test_reported_J_is_the_exact_return_of_the_reported_policies(result):
    payoff = homogeneity_trap_payoff(N_AGENTS).double()
    for s in result["seeds"]:
        for algo in ("mappo", "happo", "hatrpo"):
            probs = [torch.tensor([p, 1 - p], dtype=torch.float64) for p in s[algo]["pi_action0"]]
            assert float(expected_payoff(payoff, probs)) == pytest.approx(s[algo]["J"], abs=1e-6)


def test_summary_and_json_file(result):
    assert result["num_seeds"] == SEEDS and result["required_count"] == NEEDED
    assert result["held_count"] == sum(s["held"] for s in result["seeds"])
    assert result["reproduced"] is (result["held_count"] >= NEEDED)
    assert result["bound_J_share"] == pytest.approx(BOUND)
    assert result["figure"] is None  # quick: numbers only
    written = json.loads(open(result["json"]).read())
    assert written == json.loads(json.dumps(result))


def test_figure_is_written(tmp_path):
    result = homogeneity_trap.run(seeds=1, out_dir=tmp_path, iterations=1)
    png = tmp_path / "homogeneity-trap.png"
    assert result["figure"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "kwargs, match",
    [({"seeds": 0}, "seeds"), ({"n_agents": 3}, "n_agents"), ({"iterations": 0}, "iterations")],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        homogeneity_trap.run(out_dir=tmp_path, quick=True, **kwargs)
