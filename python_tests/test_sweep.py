"""``haml sweep`` / ``haml.sweep``: the grid and its directories, flags against a sweep file,
skip and resume on re-launch, the summary, the in-process path, and (when Ray is installed) the
sweep on a local Ray instance of 2 CPUs, with a worker killed mid-run.

Every run is a few iterations of a toy game (under a second each)."""

from __future__ import annotations

import csv
import io
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

import haml
import haml.sweeps as S
from haml import cli
from haml.logging.plot import run_key
from haml.sweeps import runs
from haml.sweeps.grid import (SweepGrid, Variant, grid_from_file, make_variants, parse_overrides,
                              parse_seeds, variant_name)
from haml.sweeps.progress import read_progress
from haml.sweeps.runs import plan_runs, read_record
from haml.training import _Checkpointer
from haml.utils.checkpoint import latest_checkpoint, load_checkpoint

TASK = "heterogeneity-trap"
TOY = ["train.num_envs=64", "eval.every=1", "eval.episodes=4", "eval.num_envs=4",
       "run.checkpoint_every=1"]
"""64 env steps an iteration, an evaluation and a checkpoint after each."""


def _sweep(out, **kwargs):
    """A toy-game sweep in this process, nothing printed unless ``stream`` is given."""
    kwargs.setdefault("overrides", TOY)
    kwargs.setdefault("use_ray", False)
    kwargs.setdefault("quiet", "stream" not in kwargs)
    return S.sweep(env="toy", tasks=TASK, out=out, **kwargs)


def _rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def _policies(run_dir):
    return load_checkpoint(latest_checkpoint(run_dir))["runner"]["policies"]


def _assert_same_policies(a, b):
    for x, y in zip(_policies(a), _policies(b), strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


# ----------------------------------------------------------------------------------------------
# the grid


def test_variant_names_are_short_stable_and_unique():
    assert variant_name([]) == ""
    assert variant_name([("algo.clip", 0.1)]) == "algo.clip-0.1"
    # Same set, other order and spelling of the numbers: same name.
    assert variant_name([("train.lr", 3e-4), ("algo.clip", 0.1)]) == \
        variant_name([("algo.clip", 0.1), ("train.lr", 0.0003)]) == "algo.clip-0.1_train.lr-0.0003"
    assert variant_name([("actor.hidden", [64, 64])]) == "actor.hidden-64_64"
    long_a = variant_name([("actor.hidden", [256, 256, 256]), ("critic.network.hidden", [64])])
    long_b = variant_name([("actor.hidden", [256, 256, 256]), ("critic.network.hidden", [32])])
    assert len(long_a) <= 40 and len(long_b) <= 40 and long_a != long_b
    with pytest.raises(ValueError, match="more than once"):
        SweepGrid("toy", ("happo",), variants=(Variant("a"), Variant("a")))
    with pytest.raises(ValueError, match="plain directory name"):
        SweepGrid("toy", ("happo",), variants=(Variant("a/b"),))


def test_the_grid_has_every_cell_in_its_own_directory(tmp_path):
    grid = SweepGrid("toy", ("happo", "mappo"), (TASK,), parse_seeds("0-1"),
                     make_variants([{"algo.clip": 0.1}, ["algo.clip=0.3"]]),
                     parse_overrides(TOY, "overrides"), steps=128)
    plans = plan_runs(grid, tmp_path, threads=1)
    assert len(plans) == 2 * 2 * 2
    assert [p.label for p in plans[:4]] == [
        f"toy/{TASK}/happo/algo.clip-0.1/seed-0", f"toy/{TASK}/happo/algo.clip-0.1/seed-1",
        f"toy/{TASK}/happo/algo.clip-0.3/seed-0", f"toy/{TASK}/happo/algo.clip-0.3/seed-1",
    ]
    assert all(p.run_dir == tmp_path.resolve() / p.label for p in plans)
    assert all(p.action == "train" and p.steps == 128 for p in plans)
    # The threads per run follow the CPUs per run, unless an override sets them.
    assert ("train.torch_threads", 1) in plans[0].overrides
    grid = SweepGrid("toy", ("happo",), (TASK,), overrides=(("train.torch_threads", 3),))
    (plan,) = plan_runs(grid, tmp_path, threads=1)
    assert plan.label == f"toy/{TASK}/happo/seed-0" and plan.resume_overrides == ()


def test_flags_and_a_sweep_file_give_the_same_grid(tmp_path, monkeypatch):
    grids = []

    def plan_nothing(grid, out, threads):
        grids.append((grid, out))
        return []

    monkeypatch.setattr(runs, "plan_runs", plan_nothing)
    assert 0 == cli.main(["sweep", "--algo", "happo", "--algo", "mappo", "--env", "toy", "--task", TASK,
                          "--seeds", "0,1,2", "--steps", "128", "--variant", "algo.clip=0.1",
                          "--variant", "algo.clip=0.2 train.gamma=0.9", "--out", str(tmp_path),
                          "--quiet", "train.num_envs=64", "eval.every=1"])
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"""
env: toy
tasks: [{TASK}]
algos: [happo, mappo]
seeds: [0, 1, 2]
steps: 128
out: {tmp_path}
overrides: {{train.num_envs: 64, eval.every: 1}}
variants:
  - {{algo.clip: 0.1}}
  - {{train.gamma: 0.9, algo.clip: 0.2}}
""")
    assert 0 == cli.main(["sweep", "--file", str(sweep_file), "--quiet"])
    from_flags, from_file = grids
    assert from_flags == from_file
    assert from_file[0].variants[1] == Variant("algo.clip-0.2_train.gamma-0.9",
                                               (("algo.clip", 0.2), ("train.gamma", 0.9)))
    # Named override sets.
    sweep_file.write_text("env: toy\nalgos: happo\nvariants: {small: {actor.hidden: [8]}}\n")
    grid, _ = grid_from_file(sweep_file)
    assert grid.variants == (Variant("small", (("actor.hidden", [8]),)),)


def test_bad_sweep_input_is_an_error_before_anything_runs(tmp_path, capsys):
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("env: toy\nalgos: [happo]\nseed: [0]\n")
    with pytest.raises(ValueError, match="unknown key"):
        grid_from_file(sweep_file)
    with pytest.raises(SystemExit) as usage:
        cli.main(["sweep", "--file", str(sweep_file), "--algo", "happo"])
    assert usage.value.code == 2 and "drop --algo" in capsys.readouterr().err
    assert cli.main(["sweep", "--algo", "happo", "--env", "toy", "--no-ray", "--out", str(tmp_path),
                     "algo.no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err
    assert not list(tmp_path.rglob("metrics.csv"))


# ----------------------------------------------------------------------------------------------
# running, skipping, resuming, the summary


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """2 override sets x 2 seeds of HAPPO, 2 iterations each, run where Ray is missing."""
    out = tmp_path_factory.mktemp("sweep")
    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(S, "ray_available", lambda: False)
        result = _sweep(out, algos="happo", seeds=[0, 1], steps=128, stream=stream, use_ray=None,
                        variants={"clip1": {"algo.clip": 0.1}, "clip3": {"algo.clip": 0.3}})
    return out, result, stream.getvalue()


def test_without_ray_the_runs_go_one_by_one_in_this_process(finished_sweep):
    out, result, printed = finished_sweep
    assert not result.used_ray and result.ok and result.count("done") == 4
    assert printed.count("pip install 'haml[ray]'") == 1
    for run in result.runs:
        record = read_record(run.plan.run_dir)
        assert record["variant"] == run.plan.cell.variant.name
        assert [s["pid"] for s in record["sessions"]] == [os.getpid()]
        assert record["finished"]["env_steps"] == 128 and record["finished"]["iterations"] == 2
        assert run_key(run.plan.run_dir).label == f"happo [{run.plan.cell.variant.name}]"
    assert (out / "toy" / TASK / "happo" / "clip3" / "seed-1" / "metrics.csv").is_file()
    assert result.plots == [out / "toy" / TASK / "curves.png"] and result.plots[0].is_file()


def test_the_summary_holds_each_runs_final_evaluation(finished_sweep):
    out, result, _ = finished_sweep
    rows = _rows(result.summary)
    assert result.summary == out / "sweep-summary.csv"
    assert [(r["algo"], r["variant"], r["overrides"]) for r in rows] == [
        ("happo", "clip1", "algo.clip=0.1"), ("happo", "clip3", "algo.clip=0.3")]
    for row in rows:
        finals = []
        for seed in (0, 1):
            run_dir = out / "toy" / TASK / "happo" / row["variant"] / f"seed-{seed}"
            finals.append(float(_rows(run_dir / "metrics.csv")[-1]["charts/eval_return"]))
        assert row["runs"] == "2" and row["seeds"] == "0 1" and row["missing_seeds"] == ""
        assert [float(v) for v in row["eval_returns"].split()] == finals
        assert float(row["eval_return_mean"]) == pytest.approx(sum(finals) / 2)
        assert float(row["eval_return_std"]) == pytest.approx(abs(finals[0] - finals[1]) / 2)
        assert row["env_steps"] == "128 128"
        assert all(float(w) > 0 for w in row["wall_seconds"].split())


def test_a_finished_sweep_runs_nothing_when_launched_again(finished_sweep):
    out, first, _ = finished_sweep
    before = {run.plan.label: (run.plan.run_dir / "metrics.csv").read_bytes() for run in first.runs}
    sweep_file = out / "again.yaml"
    sweep_file.write_text(f"env: toy\ntasks: [{TASK}]\nalgos: [happo]\nseeds: 0-1\nsteps: 128\n"
                          f"overrides: [{', '.join(TOY)}]\n"
                          "variants: {clip1: {algo.clip: 0.1}, clip3: {algo.clip: 0.3}}\n")
    assert cli.main(["sweep", "--file", str(sweep_file), "--out", str(out), "--no-ray", "--quiet"]) == 0
    again = _sweep(out, algos="happo", seeds=[0, 1], steps=128,
                   variants={"clip1": {"algo.clip": 0.1}, "clip3": {"algo.clip": 0.3}})
    assert again.count("skipped") == 4
    for run in again.runs:
        assert (run.plan.run_dir / "metrics.csv").read_bytes() == before[run.plan.label]
        assert len(read_record(run.plan.run_dir)["sessions"]) == 1
    assert _rows(again.summary) == _rows(first.summary)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_read_from_the_run_directories(finished_sweep):
    out, result, printed = finished_sweep
    plans = [run.plan for run in result.runs]
    for plan in plans:
        last = _rows(plan.run_dir / "metrics.csv")[-1]
        step, eval_return, eta = read_progress(plan.run_dir, plan.steps)
        assert (step, eval_return) == (128, float(last["charts/eval_return"]))
        assert eta == 0.0  # at its last step
    # Plain lines (not a terminal): one per change of state.
    assert printed.count(f"{plans[0].label}: running") == 1
    assert printed.count(f"{plans[0].label}: done (128/128 steps, eval return") == 1
    # On a terminal: the table.
    terminal = _Terminal()
    again = _sweep(out, algos="happo", seeds=[0, 1], steps=128, stream=terminal,
                   variants={"clip1": {"algo.clip": 0.1}, "clip3": {"algo.clip": 0.3}})
    assert again.count("skipped") == 4
    table = terminal.getvalue()
    assert "haml sweep: 4 skipped" in table and "eval return" in table and "ETA" in table
    last_frame = table.rsplit("haml sweep: 4 skipped", 1)[1].split("sweep: 4 skipped;")[0]
    assert last_frame.count("128/128") == 4 and last_frame.count("skipped") == 4


def test_a_run_stopped_after_a_checkpoint_resumes_from_it(tmp_path, monkeypatch):
    save = _Checkpointer.save

    def save_then_die(self):  # the process "dies" right after the checkpoint of iteration 2
        path = save(self)
        if self.runner.iteration == 2:
            raise RuntimeError("killed")
        return path

    monkeypatch.setattr(_Checkpointer, "save", save_then_die)
    crashed = _sweep(tmp_path / "sweep", algos="happo", steps=256)
    assert crashed.count("failed") == 1 and "killed" in crashed.runs[0].error
    monkeypatch.setattr(_Checkpointer, "save", save)

    resumed = _sweep(tmp_path / "sweep", algos="happo", steps=256)
    (run,) = resumed.runs
    assert run.status == "done" and run.plan.action == "resume"
    assert run.outcome.iterations == 4 and run.outcome.env_steps == 256
    record = read_record(run.plan.run_dir)
    assert [s["from_iteration"] for s in record["sessions"]] == [0, 2]
    assert [int(r["step"]) for r in _rows(run.plan.run_dir / "metrics.csv")] == [64, 128, 192, 256]
    # The same parameters as a run never stopped.
    whole = haml.train("happo", "toy", TASK, steps=256, out=tmp_path / "whole", quiet=True,
                       overrides=[*TOY, "train.torch_threads=1"])
    assert whole.eval_return == run.outcome.eval_return
    _assert_same_policies(whole.run_dir, run.plan.run_dir)


def test_a_run_of_another_config_in_the_way_is_refused(finished_sweep):
    out, _, _ = finished_sweep
    with pytest.raises(ValueError, match="another config .*algo.clip"):
        _sweep(out, algos="happo", seeds=[0], steps=128, variants={"clip1": {"algo.clip": 0.2}})


def test_a_run_from_before_a_config_key_existed_is_taken_over(tmp_path):
    # A run started by an older haml has no entry for a key added since: the sweep resumes it
    # (resume takes the key's default) rather than refusing it; a key it does have must match.
    import yaml

    first = _sweep(tmp_path / "sweep", algos="happo", steps=128)
    (run,) = first.runs
    config_path = run.plan.run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    del config["train"]["gae_lambda"]
    config_path.write_text(yaml.safe_dump(config))
    (again,) = _sweep(tmp_path / "sweep", algos="happo", steps=128).runs
    assert again.plan.action == "skip"
    config["train"]["gamma"] = 0.5
    config_path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="another config .*train.gamma"):
        _sweep(tmp_path / "sweep", algos="happo", steps=128)


def _sigterm_sweep_after_rows(
    tmp_path, flags: list[str], overrides: list[str], rows: int, before_signal=None
) -> tuple[int, str, Path]:
    """``haml sweep`` of one toy HAPPO run in a subprocess, sent SIGTERM once its metrics.csv has
    ``rows`` rows (``before_signal(run_dir)`` runs just before); returns the exit status, the
    output and the run directory."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "haml.cli", "sweep", *flags, "--quiet", "--algo", "happo",
            "--env", "toy", "--task", TASK, "--steps", "100000000", "--out", str(out), *overrides]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = out / "toy" / TASK / "happo" / "seed-0"
    try:
        deadline = time.monotonic() + 180
        while not (run_dir / "metrics.csv").is_file() or len(_rows(run_dir / "metrics.csv")) < rows:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.05)
        if before_signal is not None:
            before_signal(run_dir)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, output, run_dir


def test_sigterm_on_a_background_sweep_ends_it_like_ctrl_c(tmp_path):
    # A sweep started with `&` ignores Ctrl-C; SIGTERM (kill, a job scheduler) is how it is
    # stopped: the current run checkpoints, the exit status is 130, and the same command resumes.
    from haml.utils.checkpoint import latest_checkpoint

    code, output, run_dir = _sigterm_sweep_after_rows(tmp_path, ["--no-ray"], TOY, rows=1)
    assert code == 130, output
    assert latest_checkpoint(run_dir) is not None
    assert read_record(run_dir).get("finished") is None


# ----------------------------------------------------------------------------------------------
# Ray


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance of 2 CPUs for this module's Ray tests, shut down after them."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_a_two_run_sweep_on_local_ray(local_ray, tmp_path):
    result = _sweep(tmp_path, algos=["happo", "mappo"], steps=128, use_ray=True)
    assert result.used_ray and result.ok and result.count("done") == 2
    for run in result.runs:
        (session,) = read_record(run.plan.run_dir)["sessions"]
        assert session["pid"] != os.getpid()  # a Ray worker ran it
        assert run.outcome.iterations == 2
    assert [r["algo"] for r in _rows(result.summary)] == ["happo", "mappo"]
    assert result.plots[0].is_file()
    assert _sweep(tmp_path, algos=["happo", "mappo"], steps=128, use_ray=True).count("skipped") == 2


def _kill_after_checkpoint(run_dir, at_iteration, killed):
    """Kill the worker running ``run_dir`` (SIGKILL) once it has written a checkpoint at
    ``at_iteration`` or later."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sessions = read_record(run_dir).get("sessions", []) if run_dir.is_dir() else []
        latest = latest_checkpoint(run_dir) if sessions else None
        if latest is not None and int(latest.stem.split("-")[1]) >= at_iteration:
            os.kill(sessions[-1]["pid"], signal.SIGKILL)
            killed.append(int(latest.stem.split("-")[1]))
            return
        time.sleep(0.02)


def test_a_killed_ray_worker_is_retried_and_resumes(local_ray, tmp_path):
    steps = 64 * 20
    grid = SweepGrid("toy", ("happo",), (TASK,), overrides=parse_overrides(TOY, ""), steps=steps)
    (plan,) = plan_runs(grid, tmp_path / "sweep", threads=1)
    killed: list[int] = []
    killer = threading.Thread(target=_kill_after_checkpoint, args=(plan.run_dir, 2, killed))
    killer.start()
    result = _sweep(tmp_path / "sweep", algos="happo", steps=steps, max_retries=1, use_ray=True)
    killer.join()
    (run,) = result.runs
    assert killed and killed[0] < 20, "the run ended before it could be killed"
    assert run.status == "done" and run.outcome.iterations == 20
    sessions = read_record(plan.run_dir)["sessions"]
    assert len(sessions) == 2 and sessions[1]["from_iteration"] >= killed[0]
    whole = haml.train("happo", "toy", TASK, steps=steps, out=tmp_path / "whole", quiet=True,
                       overrides=[*TOY, "train.torch_threads=1"])
    _assert_same_policies(whole.run_dir, plan.run_dir)


def test_sigterm_on_a_ray_sweep_stops_its_runs_with_a_checkpoint(tmp_path):
    # ray.init replaces the driver's SIGTERM handler with an immediate exit; haml sweep keeps its
    # own, and stops each Ray task as Ctrl-C stops haml train: it finishes its iteration and
    # writes a checkpoint. The run checkpoints only on that stop (checkpoint_every is huge), so a
    # checkpoint proves it.
    pytest.importorskip("ray")
    from haml.utils.checkpoint import latest_checkpoint

    def no_checkpoint_yet(run_dir):
        assert latest_checkpoint(run_dir) is None

    code, output, run_dir = _sigterm_sweep_after_rows(
        tmp_path, [], [*TOY[:-1], "run.checkpoint_every=1000000"], rows=2,
        before_signal=no_checkpoint_yet,
    )
    assert code == 130, output
    assert latest_checkpoint(run_dir) is not None, output
