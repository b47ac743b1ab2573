"""The runner protocol: make_runner picks the runner from the registry, update hooks see every
agent's update, the sequential override, the run checkpoint's one format number, and what a
diverged run says it keeps."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import haml.training as T
from haml.algorithms import algos_for_action_kind, registry
from haml.config.loader import load_config
from haml.envs.toy import MatrixGame
from haml.runners import AgentUpdate, Runner, TrainingDiverged, make_runner
from haml.utils.checkpoint import (
    RUN_CHECKPOINT_FORMAT,
    CheckpointError,
    load_run_checkpoint,
    run_checkpoint,
    save_checkpoint,
)

PAYOFF = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[0.5, 0.0], [0.0, 3.0]]])  # three agents


def _runner(algo: str, **options) -> Runner:
    cfg = load_config(algo, "toy", "heterogeneity-trap",
                      overrides=["train.num_envs=32", "actor.hidden=[8]", "critic.network.hidden=[8]"])
    torch.manual_seed(0)
    return make_runner(cfg, MatrixGame(PAYOFF, num_envs=32), **options)


@pytest.mark.parametrize("algo", algos_for_action_kind("discrete"))
def test_make_runner_builds_the_registered_runner_for_every_algorithm(algo):
    runner = _runner(algo)
    assert isinstance(runner, Runner)
    metrics = runner.iterate()
    assert runner.iteration == 1 and runner.env_steps == 32
    assert isinstance(metrics, dict) and all(isinstance(v, float) for v in metrics.values())
    runner.close()


def test_an_algorithm_that_cannot_act_in_the_action_space_is_refused_naming_those_that_can(monkeypatch):
    continuous_only = dataclasses.replace(registry.ALGORITHMS["happo"], action_kinds=frozenset({"continuous"}))
    monkeypatch.setitem(registry.ALGORITHMS, "happo", continuous_only)
    with pytest.raises(ValueError, match=r"happo cannot act in discrete action spaces .*can: hatrpo, haa2c"):
        _runner("happo")


@pytest.mark.parametrize("algo", ["happo", "hatrpo", "haa2c"])
def test_hooks_see_each_agent_once_per_iteration_with_the_factor_it_was_weighted_by(algo):
    runner = _runner(algo)
    seen: list[AgentUpdate] = []
    runner.add_update_hook(seen.append)
    runner.iterate()
    runner.iterate()
    assert [u.iteration for u in seen] == [0, 0, 0, 1, 1, 1]
    assert [u.position for u in seen] == [0, 1, 2, 0, 1, 2]
    for k in (0, 1):
        updates = seen[3 * k: 3 * k + 3]
        assert sorted(u.agents[0] for u in updates) == [0, 1, 2]
        assert all(u.policy is runner.policies[u.agents[0]] for u in updates)
        assert torch.equal(updates[0].factor, torch.ones_like(updates[0].factor))
        # Later agents are weighted by their predecessors' ratios (this game moves every policy).
        assert not torch.equal(updates[2].factor, torch.ones_like(updates[2].factor))


def test_the_sequential_override_gives_simultaneous_updates_with_m_one():
    runner = _runner("happo", sequential=False)
    seen: list[AgentUpdate] = []
    runner.add_update_hook(seen.append)
    runner.iterate()
    assert [u.agents for u in seen] == [[0], [1], [2]]
    assert all(torch.equal(u.factor, torch.ones_like(u.factor)) for u in seen)


def test_a_shared_policy_is_one_update_of_all_agents():
    runner = _runner("mappo")
    seen: list[AgentUpdate] = []
    runner.add_update_hook(seen.append)
    runner.iterate()
    assert [u.agents for u in seen] == [[0, 1, 2]]


def test_a_hook_must_be_callable():
    with pytest.raises(TypeError, match="'hook' must be callable"):
        _runner("happo").add_update_hook(3)


# ------------------------------------------------------------------------------------------------
# the run checkpoint's format


def _format_1(runner: Runner, drop: tuple[str, ...] = ()) -> dict:
    state = {**runner.state_dict(), "format": 1}
    state["env_step"] = {k: v for k, v in state["env_step"].items() if k not in drop}
    return {"config": {"algo_name": "happo"}, "runner": state, "rng": {}, "eval_return": None}


def test_a_run_checkpoint_carries_one_format_number(tmp_path):
    runner = _runner("happo")
    runner.iterate()
    payload = run_checkpoint({"algo_name": "happo"}, runner.state_dict(), {}, None)
    assert payload["format"] == RUN_CHECKPOINT_FORMAT == 2
    assert "format" not in payload["runner"]
    save_checkpoint(tmp_path / "a.pt", payload)
    assert load_run_checkpoint(tmp_path / "a.pt")["format"] == 2


def test_format_1_is_upgraded_and_resumes_into_the_same_state(tmp_path):
    runner = _runner("happo")
    runner.iterate()
    save_checkpoint(tmp_path / "old.pt", _format_1(runner))
    upgraded = load_run_checkpoint(tmp_path / "old.pt")
    assert upgraded["format"] == 2 and "format" not in upgraded["runner"]
    fresh = _runner("happo")
    fresh.load_state_dict(upgraded["runner"])
    assert fresh.iteration == 1
    for a, b in zip(fresh.modules(), runner.modules()):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize(
    "payload, match",
    [
        ({"format": 99, "config": {}, "runner": {}, "rng": {}}, r"format 99; this haml reads 1 to 2"),
        ({"config": {}, "runner": {}, "rng": {}}, r"format None"),
        ({"format": 2, "runner": {}, "rng": {}}, r"lacks config"),
    ],
)
def test_a_file_of_no_known_format_is_a_checkpoint_error_naming_it(tmp_path, payload, match):
    save_checkpoint(tmp_path / "bad.pt", payload)
    with pytest.raises(CheckpointError, match=rf"bad\.pt .*{match}"):
        load_run_checkpoint(tmp_path / "bad.pt")


def test_a_format_1_file_without_acting_state_cannot_be_resumed(tmp_path):
    runner = _runner("happo")
    runner.iterate()
    save_checkpoint(tmp_path / "older.pt", _format_1(runner, drop=("actor", "critic_states")))
    with pytest.raises(CheckpointError, match="older than recurrent policies"):
        load_run_checkpoint(tmp_path / "older.pt")


# ------------------------------------------------------------------------------------------------
# divergence


def test_a_run_diverging_before_its_first_checkpoint_says_it_has_none(tmp_path, poison_happo):
    poison_happo(after=0)
    with pytest.raises(TrainingDiverged, match="iteration 1: .*it had written no checkpoint yet"):
        T.train("happo", "toy", steps=128, out=tmp_path, quiet=True,
                overrides=["train.num_envs=64", "eval.every=0"])


def test_a_run_diverging_later_names_the_checkpoint_it_keeps(tmp_path, poison_happo):
    poison_happo(after=2)  # iteration 2 (two agents per iteration)
    with pytest.raises(TrainingDiverged, match=r"iteration 2: .*keeps its last good checkpoint .*iter-000001\.pt"):
        T.train("happo", "toy", steps=64 * 3, out=tmp_path, quiet=True,
                overrides=["train.num_envs=64", "eval.every=0", "run.checkpoint_every=1"])
