"""Stopping a run: Ctrl-C on ``haml train`` (checkpoint, exit 130, resume); env workers that fail.

The Ctrl-C tests start ``python -m haml.cli train`` in its own process group and send SIGINT to
the whole group, as a terminal does on Ctrl-C: the async env workers receive it too and must
survive it, since the checkpoint written after the interrupt asks them for their state.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import haml.training as T
from haml import cli
from haml.utils.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")

MAMUJOCO = [
    "train.num_envs=2",
    "train.rollout_length=16",
    "actor.hidden=[8]",
    "critic.network.hidden=[8]",
    "eval.every=2",
    "eval.episodes=2",
    "eval.num_envs=2",
    "env.options.episode_limit=20",
    "env.options.step_timeout=60",
]
"""test_train.py's tiny MaMuJoCo settings, the vectoriser left to each test; a stuck worker
fails within a minute instead of hanging the suite."""


def _logged_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("step")]


def _interrupt_after_first_row(
    argv: list[str], run_dir: Path, log: Path, signum: int = signal.SIGINT
) -> tuple[int, str]:
    """Start ``haml train argv`` in a new process group, wait for its first metrics row, Ctrl-C
    the group (or send it ``signum``); returns (exit code, output)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "haml.cli", "train", *argv],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 120
            while not _logged_steps(run_dir):
                assert proc.poll() is None, f"the run ended before its first row:\n{log.read_text()}"
                assert time.monotonic() < deadline, "no metrics row within 120 s"
                time.sleep(0.05)
            os.killpg(proc.pid, signum)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    # Nothing of the group outlives the run (async workers included).
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "processes of the run's group are still alive"
        time.sleep(0.1)
    return code, log.read_text()


def _check_interrupted(run_dir: Path, code: int, output: str, batch: int) -> int:
    """Exit 130, the --resume hint, one checkpoint at the last finished (= last logged) iteration."""
    assert code == 130, output
    assert f"haml train --resume {run_dir}" in output
    steps = _logged_steps(run_dir)
    assert steps == sorted(set(steps)) and steps[-1] % batch == 0
    iteration = steps[-1] // batch
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.name == f"iter-{iteration:06d}.pt", output
    assert f"checkpoint {checkpoint}" in output
    assert not (run_dir / "curve.png").exists()  # the run did not finish
    return iteration


def test_ctrl_c_checkpoints_the_last_iteration_exits_130_and_resumes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    # 1000 games per iteration (the toy defaults), far more iterations than the test waits for;
    # no periodic checkpoint: the one found afterwards is the interrupt's.
    argv = ["--algo", "happo", "--env", "toy", "--steps", "10000000", "--out", str(run_dir),
            "run.checkpoint_every=100000", "eval.every=1", "train.torch_threads=1"]
    code, output = _interrupt_after_first_row(argv, run_dir, tmp_path / "log.txt")
    iteration = _check_interrupted(run_dir, code, output, batch=1000)
    assert load_checkpoint(latest_checkpoint(run_dir))["runner"]["iteration"] == iteration

    target = (iteration + 2) * 1000
    assert cli.main(["train", "--resume", str(run_dir), "--steps", str(target), "--quiet"]) == 0
    assert f"done: {target} steps, {iteration + 2} iterations" in capsys.readouterr().out
    assert latest_checkpoint(run_dir).name == f"iter-{iteration + 2:06d}.pt"
    steps = _logged_steps(run_dir)
    assert steps == sorted(set(steps)) and steps[-1] == target
    assert (run_dir / "curve.png").is_file()


def test_sigterm_stops_like_ctrl_c_with_a_checkpoint(tmp_path):
    # What a job scheduler or `kill` sends: the run ends after its iteration, checkpointed.
    run_dir = tmp_path / "run"
    argv = ["--algo", "happo", "--env", "toy", "--steps", "10000000", "--out", str(run_dir),
            "run.checkpoint_every=100000", "eval.every=1", "train.torch_threads=1"]
    code, output = _interrupt_after_first_row(argv, run_dir, tmp_path / "log.txt", signal.SIGTERM)
    assert "interrupt (SIGTERM): finishing this iteration" in output
    iteration = _check_interrupted(run_dir, code, output, batch=1000)
    assert load_checkpoint(latest_checkpoint(run_dir))["runner"]["iteration"] == iteration


def test_ctrl_c_with_async_mamujoco_workers(tmp_path, capsys):
    """The workers ignore the group's SIGINT, so the checkpoint holds their exact state."""
    pytest.importorskip("gymnasium_robotics")
    run_dir = tmp_path / "run"
    argv = ["--algo", "happo", "--env", "mamujoco", "--task", "HalfCheetah-2x3", "--steps",
            "1000000", "--out", str(run_dir), *MAMUJOCO, "env.options.vectorization=async",
            "run.checkpoint_every=100000", "train.torch_threads=1"]
    code, output = _interrupt_after_first_row(argv, run_dir, tmp_path / "log.txt")
    iteration = _check_interrupted(run_dir, code, output, batch=2 * 16)
    state = load_checkpoint(latest_checkpoint(run_dir))["runner"]
    assert state["env"] is not None and len(state["env"]["envs"]) == 2

    target = (iteration + 2) * 32
    assert cli.main(["train", "--resume", str(run_dir), "--steps", str(target), "--quiet"]) == 0
    assert f"done: {target} steps, {iteration + 2} iterations" in capsys.readouterr().out
    assert _logged_steps(run_dir)[-1] == target


# ----------------------------------------------------------------------------------------------
# env failures during training


@pytest.fixture
def failing_mamujoco_step(monkeypatch):
    """``how`` = "raise" or "exit": MaMuJoCo's step fails from its 21st call on (per process);
    patched before the run forks its workers, so the workers inherit it."""
    mujoco_multi = pytest.importorskip("gymnasium_robotics.envs.multiagent_mujoco.mujoco_multi")
    step = mujoco_multi.MultiAgentMujocoEnv.step

    def install(how: str) -> None:
        calls = {"n": 0}

        def failing(self, actions):
            calls["n"] += 1
            if calls["n"] > 20:
                if how == "exit":
                    os._exit(3)  # the worker process dies without a word
                raise ValueError("simulated physics failure")
            return step(self, actions)

        monkeypatch.setattr(mujoco_multi.MultiAgentMujocoEnv, "step", failing)

    return install


@pytest.mark.parametrize(
    "vectorization,how,cause",
    [
        ("sync", "raise", "raised inside step: ValueError: simulated physics failure"),
        ("async", "raise", "raised inside step: ValueError: simulated physics failure"),
        ("async", "exit", "env worker died"),
    ],
)
def test_a_failing_env_stops_training_with_an_error_naming_it(
    vectorization, how, cause, failing_mamujoco_step, tmp_path
):
    overrides = [*MAMUJOCO, f"env.options.vectorization={vectorization}"]
    if vectorization == "async":
        if "fork" not in multiprocessing.get_all_start_methods():
            pytest.skip("the patched step reaches the workers only when they are forked")
        overrides.append("env.options.start_method=fork")
    failing_mamujoco_step(how)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="mamujoco/HalfCheetah-2x3") as error:
        T.train("happo", "mamujoco", "HalfCheetah-2x3", steps=32 * 4, out=tmp_path, quiet=True,
                overrides=overrides)
    message = str(error.value)
    assert cause in message
    assert "env " in message  # which env failed
    assert time.monotonic() - started < 30  # an error, not a wait for the step timeout
    # The iteration that failed wrote nothing; nothing was checkpointed before it.
    assert list_checkpoints(tmp_path) == []


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_haml_train_reports_a_failing_env_in_one_line_and_keeps_the_checkpoint(
    how, failing_mamujoco_step, tmp_path, capsys
):
    """An async worker that raises or dies in iteration 2: `haml train` prints one line naming
    the env and the run's latest checkpoint (iteration 1's), exits 1, and the checkpoint loads."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("the patched step reaches the workers only when they are forked")
    failing_mamujoco_step(how)  # each worker fails at its 21st step: iteration 2 of 16 steps
    run_dir = tmp_path / "run"
    code = cli.main(["train", "--algo", "happo", "--env", "mamujoco", "--task", "HalfCheetah-2x3",
                     "--steps", "128", "--out", str(run_dir), "--quiet", *MAMUJOCO,
                     "env.options.vectorization=async", "env.options.start_method=fork",
                     "run.checkpoint_every=1"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("haml train: error: mamujoco/HalfCheetah-2x3: step: "), err
    cause = "ValueError: simulated physics failure" if how == "raise" else "env worker died"
    assert cause in line
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.name == "iter-000001.pt"
    assert line.endswith(f"its latest checkpoint is {checkpoint}; continue with "
                         f"`haml train --resume {run_dir}`")
    assert load_checkpoint(checkpoint)["runner"]["iteration"] == 1


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")
def test_stopped_env_workers_end_haml_train_in_bounded_time_keeping_the_checkpoint(tmp_path):
    """Every env worker of a `haml train` run SIGSTOPped (as if stuck in native code) after its
    first checkpoint: the run ends within step_timeout + 15 s with one line naming the stuck env
    and the checkpoint, exit code 1; the checkpoint loads; no worker is left."""
    pytest.importorskip("gymnasium_robotics")
    step_timeout = 5
    run_dir = tmp_path / "run"
    argv = ["--algo", "happo", "--env", "mamujoco", "--task", "HalfCheetah-2x3", "--steps",
            "1000000", "--out", str(run_dir), "--quiet", *MAMUJOCO,
            "env.options.vectorization=async", f"env.options.step_timeout={step_timeout}",
            "run.checkpoint_every=1", "train.torch_threads=1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "haml.cli", "train", *argv], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while latest_checkpoint(run_dir) is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        workers = _children(proc.pid)
        assert len(workers) == 4  # 2 training + 2 evaluation envs
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        out, err = proc.communicate(timeout=step_timeout + 60)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        for pid in workers:  # a regression must not leave stopped workers behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode == 1, err
    assert took < step_timeout + 15, err
    assert "Traceback" not in err and "Warning" not in err, err
    line = err.strip().splitlines()[-1]  # (after gymnasium_robotics' import-time notice)
    assert line.startswith("haml train: error: mamujoco/HalfCheetah-2x3: "), err
    assert f"no answer within step_timeout={float(step_timeout)} s" in line
    checkpoint = latest_checkpoint(run_dir)
    assert f"its latest checkpoint is {checkpoint}; continue with" in line
    assert load_checkpoint(checkpoint)["runner"]["iteration"] >= 1


def test_an_env_error_names_the_default_run_directory(tmp_path, monkeypatch, capsys):
    """Without --out, the one-line error names the run directory that train() resolved."""
    from haml.envs.base import EnvError

    def failing_train(*args, **kwargs):
        raise EnvError("toy/heterogeneity-trap: step: env(s) [0] raised ValueError: boom")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(T, "train", failing_train)
    assert cli.main(["train", "--algo", "happo", "--env", "toy", "--seed", "3"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "haml train: error: toy/heterogeneity-trap: step: env(s) [0] raised ValueError: boom; "
        "runs/toy/heterogeneity-trap/happo/seed-3 holds no checkpoint yet\n"
    )


def test_haml_eval_reports_an_env_error_in_one_line(tmp_path, monkeypatch, capsys):
    import haml.evaluation
    from haml.envs.base import EnvError

    def failing_eval(*args, **kwargs):
        raise EnvError("mpe/simple_spread: reset: env worker died: env 1 (worker pid 7, "
                       "exit code 3)")

    monkeypatch.setattr(haml.evaluation, "evaluate_run", failing_eval)
    assert cli.main(["eval", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        "haml eval: error: mpe/simple_spread: reset: env worker died: env 1 (worker pid 7, "
        "exit code 3)\n"
    )
