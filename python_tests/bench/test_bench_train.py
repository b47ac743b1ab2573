"""``haml bench train`` on the toy env, in-process: the JSON it writes and how its numbers relate.

No timing is asserted (the numbers depend on the machine and its load), only that both phases
were measured over the same number of steps and that the ratio and shares follow from them.
"""

from __future__ import annotations

import copy
import io
import json
import types

import numpy as np
import pytest
import torch
from gymnasium import spaces

from haml.bench import main as bench_main
from haml.bench.train import (
    TARGET_RATIO,
    BenchTrainError,
    bench_train,
    print_train_table,
    random_action_sampler,
)
from haml.cli import main as cli_main
from haml.envs import registry

NUM_ENVS = 16
ITERATIONS = 2
TOY = ["train.num_envs=16", "train.torch_threads=1"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "nested" / "train.json"
    threads = torch.get_num_threads()
    document = bench_train(
        "happo", "toy", iterations=ITERATIONS, overrides=TOY, out=out, show=False, progress=False
    )
    return document, out, threads


def test_writes_the_json_it_returns_with_machine_and_versions(toy_run):
    document, out, _ = toy_run
    assert json.loads(out.read_text()) == json.loads(json.dumps(document))
    assert document["benchmark"] == "haml bench train"
    env = document["environment"]
    assert env["device_names"]["cpu"] and env["cpu_count"] >= 1
    for package in ("haml", "torch", "mujoco", "gymnasium_robotics"):
        assert package in env["versions"]
    assert env["versions"]["haml"] and env["versions"]["torch"] == torch.__version__
    assert document["settings"] == {
        "algo": "happo", "env": "toy", "task": "heterogeneity-trap", "tuned": False,
        "iterations": ITERATIONS, "overrides": TOY,
    }


def test_config_summary_is_the_training_config(toy_run):
    config = toy_run[0]["config"]
    assert config["num_envs"] == NUM_ENVS
    assert config["rollout_length"] == 1  # the toy games are one step long
    assert config["batch_steps"] == NUM_ENVS
    assert config["torch_threads"] == 1
    assert config["actor_hidden"] == [16] and config["n_agents"] == 2
    assert config["algo_settings"]["epochs"] == 5


def test_both_phases_cover_the_same_steps_and_the_ratio_follows(toy_run):
    document = toy_run[0]
    env_only, training = document["env_only"], document["training"]
    steps = ITERATIONS * NUM_ENVS
    assert env_only["steps"] == training["steps"] == steps
    assert len(env_only["rounds"]) == len(training["rounds"]) == ITERATIONS
    for phase in (env_only, training):
        assert phase["seconds"] > 0
        assert phase["steps_per_second"] == pytest.approx(steps / phase["seconds"])
        assert phase["seconds"] == pytest.approx(sum(r["seconds"] for r in phase["rounds"]))
    assert document["ratio"] == pytest.approx(
        training["steps_per_second"] / env_only["steps_per_second"]
    )
    target = document["target"]
    assert target["bound"] == TARGET_RATIO and target["measured"] == document["ratio"]
    assert target["met"] == (document["ratio"] >= TARGET_RATIO)


def test_iterations_split_into_collection_and_update(toy_run):
    training = toy_run[0]["training"]
    collect, update = training["collect_seconds"], training["update_seconds"]
    assert collect > 0 and update > 0
    # The runner's split lies inside the iteration as timed from outside.
    assert collect + update <= training["seconds"] * (1 + 1e-9)
    assert training["collect_share"] + training["update_share"] == pytest.approx(1.0)
    assert training["collect_share"] == pytest.approx(collect / (collect + update))
    for record in training["rounds"]:
        assert record["collect_seconds"] + record["update_seconds"] <= record["seconds"] * (1 + 1e-9)


def test_torch_threads_are_restored(toy_run):
    assert torch.get_num_threads() == toy_run[2]


def test_command_lines_print_the_table_and_write_json(tmp_path, capsys):
    path = tmp_path / "cli.json"
    args = ["--env", "toy", "--iterations", "1", "--json", str(path), "train.num_envs=8"]
    assert cli_main(["bench", "train", *args]) == 0
    table = capsys.readouterr().out
    for text in ("env only (random actions)", "training (collect + update)", "collect", "update",
                 "training / env only", "goal >= 0.7"):
        assert text in table
    assert json.loads(path.read_text())["config"]["num_envs"] == 8

    path2 = tmp_path / "module.json"
    assert bench_main(["train", *args[:4], "--json", str(path2), "train.num_envs=4"]) == 0
    assert json.loads(path2.read_text())["config"]["num_envs"] == 4


def test_usage_errors(tmp_path, capsys):
    with pytest.raises(BenchTrainError, match="--iterations must be an integer >= 1"):
        bench_train("happo", "toy", iterations=0, show=False, progress=False)
    with pytest.raises(ValueError, match="no tuned config"):
        bench_train("happo", "toy", tuned=True, out=tmp_path / "x.json", show=False, progress=False)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "train", "--env", "nope", "--json", str(tmp_path / "y.json")])
    assert exit_info.value.code == 2
    assert "unknown env 'nope'" in capsys.readouterr().err


def test_random_actions_follow_the_spaces():
    E = 500
    box = spaces.Box(low=np.array([-1.0, 0.0], dtype=np.float32), high=np.array([1.0, 5.0], dtype=np.float32))
    unbounded = spaces.Box(low=np.array([-np.inf, 2.0], dtype=np.float32), high=np.array([np.inf, 3.0], dtype=np.float32))
    discrete = spaces.Discrete(4)
    sample = random_action_sampler([box, unbounded, discrete], E, torch.device("cpu"), seed=3)
    a_box, a_unbounded, a_discrete = sample(None)
    assert a_box.shape == (E, 2) and a_box.dtype == torch.float32
    assert bool((a_box[:, 0] >= -1).all() and (a_box[:, 0] <= 1).all())
    assert bool((a_box[:, 1] >= 0).all() and (a_box[:, 1] <= 5).all())
    assert a_box[:, 1].max() > 4  # spread over the whole interval, not squeezed near one end
    assert bool(torch.isfinite(a_unbounded).all()) and a_unbounded[:, 0].min() < 0
    assert bool((a_unbounded[:, 1] >= 2).all() and (a_unbounded[:, 1] <= 3).all())
    assert a_discrete.shape == (E,) and a_discrete.dtype == torch.int64
    assert set(a_discrete.tolist()) == {0, 1, 2, 3}

    only = torch.zeros(E, 4, dtype=torch.bool)
    only[:, 2] = True
    only[: E // 2, 0] = True
    masks = (None, None, only)
    picked = sample(masks)[2]
    assert set(picked[E // 2:].tolist()) == {2}
    assert set(picked[: E // 2].tolist()) == {0, 2}

    again = random_action_sampler([box, unbounded, discrete], E, torch.device("cpu"), seed=3)(None)
    assert torch.equal(again[0], a_box)  # its own seeded generator

    with pytest.raises(BenchTrainError, match="neither Box nor Discrete"):
        random_action_sampler([spaces.MultiBinary(3)], E, torch.device("cpu"))


# -- the JAX-only row (families with a JAX simulator: SMAX) ------------------------------------------

JAX_ROW = "JAX only (random actions, no torch)"


def test_other_families_have_no_jax_only_row(toy_run, capsys):
    document = toy_run[0]
    assert "jax_only" not in document and "ratio_jax_only" not in document
    print_train_table(document)
    out = capsys.readouterr().out
    assert JAX_ROW not in out and "JAX only =" not in out


@pytest.fixture
def toy_with_jax_stepping(monkeypatch):
    """The toy family, as if its module offered ``jax_random_steps_per_second`` (a fake that
    records its calls and reports a fixed rate)."""
    calls = []
    toy = registry.env_module("toy")

    def fake_rate(task, num_envs, steps, seed=0, options=None):
        calls.append({"task": task, "num_envs": num_envs, "steps": steps, "seed": seed, "options": options})
        return 1000.0

    patched = types.SimpleNamespace(**vars(toy), jax_random_steps_per_second=fake_rate)
    real = registry.env_module
    monkeypatch.setattr(
        registry, "env_module", lambda name, **kw: patched if name == "toy" else real(name, **kw)
    )
    return calls


def test_jax_only_row_alternates_with_the_other_phases(toy_with_jax_stepping, tmp_path):
    document = bench_train(
        "happo", "toy", iterations=ITERATIONS, overrides=TOY, out=tmp_path / "jax.json", show=False,
        progress=False,
    )
    calls = toy_with_jax_stepping
    assert len(calls) == 1 + ITERATIONS  # the warm-up, then one per round
    assert calls[0] == {
        "task": "heterogeneity-trap", "num_envs": NUM_ENVS, "steps": 1, "seed": document["config"]["seed"],
        "options": document["config"]["env_options"],
    }
    jax_only, training = document["jax_only"], document["training"]
    assert jax_only["steps"] == training["steps"] == ITERATIONS * NUM_ENVS
    assert len(jax_only["rounds"]) == ITERATIONS
    assert jax_only["steps_per_second"] == pytest.approx(1000.0)
    assert jax_only["seconds"] == pytest.approx(ITERATIONS * NUM_ENVS / 1000.0)
    assert document["ratio_jax_only"] == pytest.approx(training["steps_per_second"] / 1000.0)
    env_rate = document["env_only"]["steps_per_second"]
    assert document["ratio"] == pytest.approx(training["steps_per_second"] / env_rate)
    assert json.loads((tmp_path / "jax.json").read_text())["jax_only"]["steps"] == jax_only["steps"]

    table = io.StringIO()
    print_train_table(document, file=table)
    out = table.getvalue()
    for text in ("env only (random actions)", JAX_ROW, "training (collect + update)", "training / env only"):
        assert text in out
    assert f"training / JAX only = {document['ratio_jax_only']:.3g}" in out
    phases = ("env only", "JAX only", "training (")
    rows = [line for line in out.splitlines() if line.strip().startswith(phases)]
    assert [row.strip().split("  ")[0] for row in rows] == [
        "env only (random actions)", JAX_ROW, "training (collect + update)",
    ]

    altered = copy.deepcopy(document)
    del altered["jax_only"]  # an old document (or another family) prints as before
    table = io.StringIO()
    print_train_table(altered, file=table)
    assert JAX_ROW not in table.getvalue()


@pytest.mark.slow  # JAX compiles SMAX's program first (10-20 s on 2 cores), then trains
def test_smax_bench_reports_jax_only_stepping(tmp_path):
    pytest.importorskip("jaxmarl")
    overrides = ["train.num_envs=8", "train.rollout_length=10", "train.torch_threads=1"]
    document = bench_train(
        "happo", "smax", "3m", iterations=1, overrides=overrides, out=tmp_path / "smax.json",
        show=False, progress=False,
    )
    jax_only = document["jax_only"]
    assert jax_only["steps"] == document["training"]["steps"] == 80
    assert jax_only["steps_per_second"] > 0
    assert document["ratio_jax_only"] == pytest.approx(
        document["training"]["steps_per_second"] / jax_only["steps_per_second"]
    )


def test_off_policy_iterations_are_timed_after_the_warm_up(tmp_path):
    """An off-policy iteration is train_every × E steps, and the timed ones update: the runner's
    warm-up of random actions runs untimed first."""
    overrides = ["train.num_envs=16", "train.torch_threads=1", "algo.warmup_steps=320",
                 "algo.train_every=4", "algo.batch_size=32", "algo.updates_per_step=0.125",
                 "actor.hidden=[16]", "critic.network.hidden=[16]"]
    document = bench_train("haddpg", "toy", task="figure1", iterations=2, overrides=overrides,
                           out=tmp_path / "t.json", show=False, progress=False)
    steps = 4 * 16
    assert document["config"]["batch_steps"] == steps
    assert document["env_only"]["steps"] == document["training"]["steps"] == 2 * steps
    for record in document["training"]["rounds"]:  # 8 updates against 4 toy steps
        assert record["update_seconds"] > 0.3 * record["seconds"], record
