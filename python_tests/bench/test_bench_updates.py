"""``haml bench haddpg --algo <a>``: every off-policy update it times builds, runs both sides and
prints its rows."""

import pytest
import torch

from haml.bench.haddpg import ALGOS, haddpg_cases, main, matmul_flops, problem
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
    assert "products: fast" in out and "so ref/fast <=" in out
    assert cases[0].floor is not None
    flops = {}
    haddpg_cases(torch.device("cpu"), Options.make(quick=True, compile=False), algo, flops)[0].build()
    assert flops[2] == matmul_flops(2, algo)


def test_an_unknown_algorithm_is_refused():
    assert "haddpg" in ALGOS
    with pytest.raises(ValueError, match="this bench times"):
        problem(2, torch.device("cpu"), algo="happo")


@pytest.mark.parametrize("algo", ALGOS)
def test_the_products_bound_is_below_the_2x_goal_at_6_agents(algo):
    # What the BENCHMARKS note claims: with the update's mathematics fixed, the learner's matrix
    # products alone keep it from being 2x the reference. A learner change that removes products
    # breaks this test on purpose, so that the note and the goal are looked at again.
    flops = matmul_flops(6, algo)
    bound = flops["reference"] / flops["native"]
    assert flops["native"] > 1e9
    assert 1.2 < bound < 2.0


def test_the_counted_products_match_a_hand_count_of_haddpgs_update():
    # HADDPG's learner at 2 agents, counted by hand (2 B m n FLOPs for a B x m by m x n product;
    # a backward pass costs one such product for the weight gradient and one for the input
    # gradient where the input needs one). A counter that missed the backward passes would be
    # about 40 % short.
    from haml.bench.haddpg import ACTION_DIM, BATCH, HIDDEN, OBS_DIM

    n, b, o, a, h = 2, BATCH, OBS_DIM, ACTION_DIM, HIDDEN[0]
    state, joint_action = n * o, n * a

    def mm(m, k):
        return 2 * b * m * k

    actor = mm(o, h) + mm(h, h) + mm(h, a)
    critic = mm(state + joint_action, h) + mm(h, h) + mm(h, 1)
    critic_step = (
        n * actor  # the target actors at the next observations
        + critic  # the target critic
        + 2 * critic  # the critic's forward and its weight gradients
        + mm(h, h) + mm(h, 1)  # its input gradients past the first layer
    )
    per_agent = (
        actor + actor + mm(h, h) + mm(h, a)  # the actor's forward, weight and input gradients
        + mm(joint_action, h) + 2 * (mm(h, h) + mm(h, 1)) + mm(joint_action, h)
        # the critic on the new action: its action term, later layers there and back, and the
        # gradient to the joint action; no weight gradients
    )
    actor_phase = mm(state, h) + n * per_agent + (n - 1) * actor  # + the predecessors' actions
    expected = critic_step + actor_phase
    assert matmul_flops(2, "haddpg")["native"] == pytest.approx(expected, rel=0.01)


def test_the_smax_setting_times_discrete_hasac_with_input_norms(capsys):
    learner, batch = problem(3, torch.device("cpu"), algo="hasac", setting="smax")
    assert [p.kind for p in learner.policies] == ["categorical"] * 3
    assert learner.critic.input_norm and learner.cfg.auto_alpha
    assert batch.state.shape == (1000, 72) and batch.obs[0].shape == (1000, 75)
    for actions, mask in zip(batch.actions, batch.action_masks):
        assert mask.shape == (1000, 8) and mask[torch.arange(1000), actions].all()
    cases = haddpg_cases(torch.device("cpu"), Options.make(compile=False), "hasac", setting="smax")
    assert [c.shape["agents"] for c in cases] == [3] and not cases[0].targets
    assert main(["--algo", "hasac", "--setting", "smax", "--quick", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "--setting smax" in out and "smax agents=3" in out and "ref/fast" in out


def test_the_smax_setting_refuses_the_box_only_updates(capsys):
    with pytest.raises(ValueError, match="smax setting times"):
        problem(3, torch.device("cpu"), algo="hatd3", setting="smax")
    with pytest.raises(ValueError, match="smax setting times"):
        haddpg_cases(torch.device("cpu"), Options.make(compile=False), "hatd3", setting="smax")
    with pytest.raises(SystemExit) as err:
        main(["--algo", "haddpg", "--setting", "smax"])
    assert err.value.code == 2
    assert "--setting smax --algo haddpg: the smax setting times ['hasac'], not 'haddpg'" in (
        capsys.readouterr().err)
