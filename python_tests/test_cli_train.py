"""``haml train``, ``haml eval`` and ``haml plot``, called in-process through :func:`haml.cli.main`.

Runs use the toy game with the fast settings of ``test_train.py`` (milliseconds per iteration);
the MaMuJoCo rendering tests use a run of two tiny iterations with 5-step episodes.
"""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

import pytest

from haml import cli
from haml.utils.checkpoint import latest_checkpoint

TOY = ["train.num_envs=64", "eval.every=1", "eval.episodes=4", "eval.num_envs=4"]
"""As in test_train.py: 64 games per iteration, an evaluation after every one."""


def _train(out: Path, *extra: str, steps: int = 128) -> list[str]:
    return ["train", "--algo", "happo", "--env", "toy", "--steps", str(steps), "--out", str(out),
            *extra, *TOY]


def _steps(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    """A finished two-iteration toy run (read-only for the tests that use it)."""
    run_dir = tmp_path_factory.mktemp("toy") / "run"
    assert cli.main(_train(run_dir, "--quiet")) == 0
    return run_dir


# ----------------------------------------------------------------------------------------------
# haml train


def test_train_writes_a_run_and_says_where_the_logs_and_curve_are(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(_train(run_dir)) == 0
    out = capsys.readouterr().out
    assert f"logs: {run_dir}" in out
    assert f"curve: {run_dir / 'curve.png'}" in out
    assert re.search(r"done: 128 steps, 2 iterations .* final eval return -?\d+\.\d+ ± \d+\.\d+", out)
    assert (run_dir / "curve.png").is_file() and (run_dir / "config.yaml").is_file()
    assert latest_checkpoint(run_dir).name == "iter-000002.pt"
    assert _steps(run_dir) == [64, 128]


def test_resume_continues_a_run_to_more_steps(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(_train(run_dir, "--quiet")) == 0
    assert cli.main(["train", "--resume", str(run_dir), "--steps", "256", "--quiet"]) == 0
    assert "done: 256 steps, 4 iterations" in capsys.readouterr().out
    assert latest_checkpoint(run_dir).name == "iter-000004.pt"
    assert _steps(run_dir) == [64, 128, 192, 256]


@pytest.mark.parametrize(
    "extra", [["--algo", "happo"], ["--env", "toy"], ["--seed", "1"], ["--tuned"], ["--overwrite"]]
)
def test_resume_with_a_config_option_is_a_usage_error(extra, toy_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--resume", str(toy_run), *extra])
    assert exit_info.value.code == 2
    assert f"drop {extra[0]}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,choices",
    [
        (["--algo", "hapo", "--env", "toy"], ["happo", "hatrpo", "haa2c"]),
        (["--algo", "happo", "--env", "mujoco"], ["mamujoco", "toy"]),
        (["--algo", "happo", "--env", "toy", "--task", "nope"], ["heterogeneity-trap", "figure1"]),
        (["--algo", "happo", "--env", "toy", "algo.clipp=0.1"], ["algo.clipp", "clip", "epochs"]),
        (["--algo", "happo", "--env", "toy", "nokey=1"], ["nokey", "train", "critic"]),
    ],
)
def test_unknown_names_and_keys_exit_2_listing_the_valid_choices(args, choices, tmp_path, capsys):
    assert cli.main(["train", *args, "--steps", "64", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("haml train: error: ")
    for word in choices:
        assert word in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["--env", "toy"], ["--algo", "happo"], []])
def test_missing_algo_or_env_is_a_usage_error(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *args])
    assert exit_info.value.code == 2
    assert "--algo and --env are required" in capsys.readouterr().err


def test_an_existing_run_directory_needs_overwrite_and_suggests_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(_train(run_dir, "--quiet", steps=256)) == 0
    capsys.readouterr()
    assert cli.main(_train(run_dir, "--quiet")) == 2
    assert f"--resume {run_dir}" in capsys.readouterr().err
    # --overwrite starts afresh: the longer run's checkpoint must not stay the "latest" one.
    assert cli.main(_train(run_dir, "--quiet", "--overwrite")) == 0
    assert latest_checkpoint(run_dir).name == "iter-000002.pt"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert _steps(run_dir) == [64, 128]


def test_a_diverged_run_exits_1_naming_the_iteration(tmp_path, poison_happo, capsys):
    poison_happo(after=0)
    assert cli.main(_train(tmp_path / "run", "--quiet")) == 1
    err = capsys.readouterr().err
    assert "haml train: training diverged at iteration 1" in err


# ----------------------------------------------------------------------------------------------
# haml eval


def test_eval_prints_the_mean_and_std_of_the_return(toy_run, capsys):
    assert cli.main(["eval", str(toy_run), "--episodes", "3"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint iter-000002.pt (iteration 2, 128 steps)" in out
    match = re.search(r"over 3 episodes \(deterministic\): (-?\d+\.\d+) ± (\d+\.\d+)", out)
    assert match is not None, out
    # Deterministic actions in a one-step game: every episode has the same return, one of the
    # payoffs [[0, 2], [2, -1]].
    assert float(match[1]) in (0.0, 2.0, -1.0) and float(match[2]) == 0.0


def test_eval_shows_its_progress_on_stderr(toy_run, capsys):
    assert cli.main(["eval", str(toy_run), "--episodes", "3"]) == 0
    captured = capsys.readouterr()
    assert "eval: 3/3 episodes" in captured.err
    assert "eval: " not in captured.out  # the report alone on stdout


def test_eval_without_checkpoints_exits_2_with_a_clear_message(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["eval", str(tmp_path / "empty")]) == 2
    assert "holds no checkpoint (checkpoints/iter-*.pt)" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "missing")]) == 2
    assert "no run directory" in capsys.readouterr().err


def test_eval_of_a_corrupt_checkpoint_exits_2_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "run" / "checkpoints" / "iter-000001.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    assert cli.main(["eval", str(tmp_path / "run")]) == 2
    assert "iter-000001.pt" in capsys.readouterr().err


def test_eval_render_on_the_toy_env_says_it_cannot_render(toy_run, capsys):
    assert cli.main(["eval", str(toy_run), "--episodes", "2", "--render"]) == 0
    out = capsys.readouterr().out
    assert "over 2 episodes" in out  # the evaluation itself still runs
    assert "no video: the toy environment cannot render" in out
    assert "rendering is available for: mamujoco" in out
    assert not (toy_run / "videos").exists()


def test_mamujoco_render_on_a_headless_machine_uses_egl_or_says_why_not(
    mamujoco_run, monkeypatch
):
    """No display, MUJOCO_GL unset: haml tries EGL; either the episode's frames come out (here
    through a stand-in writer, so that no ffmpeg is needed) or the note explains."""
    import haml.evaluation as E

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    frames = []

    def collect(path, episode, fps):
        frames.extend(episode)
        path.write_bytes(b"video")
        assert fps == 20  # HalfCheetah: dt = 0.05 s

    monkeypatch.setattr(E, "_write_video", collect)
    monkeypatch.setattr(E, "_video_writer_note", lambda: None)
    report = E.evaluate_run(mamujoco_run, episodes=2, render=True)
    assert len(report.result.episodes) == 2
    if report.video is not None:
        assert report.video == mamujoco_run / "videos" / "eval-iter-000002.mp4"
        assert len(frames) == 6  # the reset state and 5 steps
        assert frames[0].shape[-1] == 3 and frames[0].dtype.name == "uint8"
        assert frames[0].std() > 0  # a picture, not a blank
    else:
        assert "EGL was tried" in report.video_note and "MUJOCO_GL=egl" in report.video_note
    import os

    assert "MUJOCO_GL" not in os.environ  # the EGL default is not left behind


def test_mamujoco_render_with_a_bad_mujoco_gl_says_why_no_video(mamujoco_run, monkeypatch, capsys):
    monkeypatch.setenv("MUJOCO_GL", "glfw")
    monkeypatch.delenv("DISPLAY", raising=False)
    assert cli.main(["eval", str(mamujoco_run), "--episodes", "2", "--render"]) == 0
    out = capsys.readouterr().out
    assert "over 2 episodes" in out
    assert "no video: MuJoCo's offscreen renderer failed" in out
    assert "MUJOCO_GL='glfw' does not work here" in out and "MUJOCO_GL=egl" in out


def test_mamujoco_render_writes_an_mp4_or_names_the_missing_encoder(mamujoco_run, monkeypatch):
    import haml.evaluation as E

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    report = E.evaluate_run(mamujoco_run, episodes=1, render=True)
    if report.video is not None:
        assert report.video.stat().st_size > 0
    elif importlib.util.find_spec("imageio_ffmpeg") is None:
        assert "pip install imageio imageio-ffmpeg" in report.video_note
    else:  # an encoder, but no OpenGL
        assert "MuJoCo's offscreen renderer failed" in report.video_note


# ----------------------------------------------------------------------------------------------
# haml plot


def test_plot_writes_a_png(toy_run, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert cli.main(["plot", str(toy_run), str(toy_run), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in capsys.readouterr().out


def test_plot_of_a_directory_without_runs_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["plot", str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no run directory" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
