"""haml.logging.RunLogger: config.yaml, metrics.csv (and resuming it), TensorBoard, progress output."""

from __future__ import annotations

import csv
import dataclasses
import io
import sys
from pathlib import Path

import pytest
import torch
import yaml

from haml.logging import logger as logger_module
from haml.logging import metrics as M
from haml.logging.logger import RunLogger

CONFIG = {"env": {"name": "toy", "task": "matrix"}, "algo": {"name": "happo"}, "seed": 1}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def open_logger(run_dir: Path, **kwargs) -> RunLogger:
    kwargs.setdefault("total_steps", 1000)
    kwargs.setdefault("tensorboard", False)
    kwargs.setdefault("stream", io.StringIO())
    return RunLogger(run_dir, CONFIG, **kwargs)


def test_rows_have_the_fixed_header_and_are_flushed_at_once(tmp_path):
    with open_logger(tmp_path) as logger:
        logger.log(100, {M.TRAIN_RETURN: 1.5, M.VALUE_LOSS: torch.tensor(0.25)})
        logger.log(
            200,
            {M.EVAL_RETURN: torch.tensor([7.0]), M.agent_metric(M.KL, 0): 0.1, M.agent_metric(M.KL, 1): 0.3},
        )
        # read while the logger is open: nothing may wait in a buffer
        header, rows = read_rows(tmp_path / "metrics.csv")
    assert header == list(M.CSV_COLUMNS)
    assert [int(r["step"]) for r in rows] == [100, 200]
    assert float(rows[0][M.TRAIN_RETURN]) == 1.5
    assert float(rows[0][M.VALUE_LOSS]) == 0.25
    assert rows[0][M.EVAL_RETURN] == ""
    assert float(rows[1][M.EVAL_RETURN]) == 7.0
    assert float(rows[1][M.KL]) == pytest.approx(0.2)
    assert rows[1][M.TRAIN_RETURN] == ""
    assert float(rows[1]["wall_time"]) > 1e9
    assert logger.last_eval_return == 7.0


def test_steps_per_second_is_measured_between_rows_unless_given(tmp_path):
    clock = FakeClock()
    with open_logger(tmp_path, clock=clock) as logger:
        clock.now = 10.0
        logger.log(100, {})
        clock.now = 12.0
        logger.log(300, {})
        logger.log(300, {M.STEPS_PER_SECOND: 5.0})
    _, rows = read_rows(tmp_path / "metrics.csv")
    assert [float(r[M.STEPS_PER_SECOND]) for r in rows] == [10.0, 100.0, 5.0]


def test_bad_input_is_refused_with_the_name(tmp_path):
    with open_logger(tmp_path) as logger:
        with pytest.raises(ValueError, match="charts/eval_retrun"):
            logger.log(1, {"charts/eval_retrun": 1.0})
        with pytest.raises(ValueError, match="shape"):
            logger.log(1, {M.VALUE_LOSS: torch.ones(3)})
        with pytest.raises(TypeError, match="losses/value_loss"):
            logger.log(1, {M.VALUE_LOSS: "high"})
        logger.log(10, {})
        with pytest.raises(ValueError, match="before the previous step"):
            logger.log(5, {})
    with pytest.raises(RuntimeError, match="closed"):
        logger.log(20, {})
    with pytest.raises(ValueError, match="'start_step'"):
        open_logger(tmp_path / "x", start_step=-1)
    with open_logger(tmp_path / "y") as logger, pytest.raises(ValueError, match="'step'"):
        logger.log(1.5, {})


def test_resume_drops_rows_after_the_checkpoint_step_and_appends(tmp_path):
    with open_logger(tmp_path) as logger:
        for step in (100, 200, 300, 400, 500):
            logger.log(step, {M.TRAIN_RETURN: step / 100})
    # a crash in the middle of a line leaves a partial row
    with open(tmp_path / "metrics.csv", "a") as file:
        file.write("600,17")

    with open_logger(tmp_path, start_step=300) as logger:
        _, rows = read_rows(tmp_path / "metrics.csv")
        assert [int(r["step"]) for r in rows] == [100, 200, 300]
        logger.log(400, {M.TRAIN_RETURN: 40.0})
    header, rows = read_rows(tmp_path / "metrics.csv")
    assert header == list(M.CSV_COLUMNS)
    assert [int(r["step"]) for r in rows] == [100, 200, 300, 400]
    assert float(rows[-1][M.TRAIN_RETURN]) == 40.0
    assert float(rows[1][M.TRAIN_RETURN]) == 2.0


def test_resume_keeps_known_columns_of_an_older_header(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,charts/eval_return,old/metric\n10,3.5,1\n20,4.5,2\n")
    with pytest.warns(RuntimeWarning, match="old/metric"):
        open_logger(tmp_path, start_step=10).close()
    header, rows = read_rows(tmp_path / "metrics.csv")
    assert header == list(M.CSV_COLUMNS)
    assert len(rows) == 1 and rows[0]["step"] == "10" and rows[0][M.EVAL_RETURN] == "3.5"


def test_a_fresh_run_starts_a_new_csv(tmp_path):
    with open_logger(tmp_path) as logger:
        logger.log(100, {})
    with open_logger(tmp_path) as logger:
        logger.log(50, {})
    _, rows = read_rows(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [50]


@dataclasses.dataclass
class TrainConfig:
    lr: float = 3e-4
    hidden: tuple[int, ...] = (64, 64)
    out: Path = Path("runs")


def test_config_yaml_holds_the_resolved_config(tmp_path):
    config = {"env": {"name": "toy", "task": "matrix"}, "train": TrainConfig(), "device": torch.device("cpu")}
    RunLogger(tmp_path, config, 10, tensorboard=False, quiet=True).close()
    loaded = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert loaded == {
        "env": {"name": "toy", "task": "matrix"},
        "train": {"lr": 3e-4, "hidden": [64, 64], "out": "runs"},
        "device": "cpu",
    }
    with pytest.raises(TypeError, match=r"config\.train\.opt"):
        RunLogger(tmp_path / "bad", {"train": {"opt": object()}}, 10, tensorboard=False, quiet=True)


def test_tensorboard_events_hold_per_agent_values_and_their_mean(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with open_logger(tmp_path, tensorboard=True) as logger:
        logger.log(10, {M.agent_metric(M.KL, 0): 0.1, M.agent_metric(M.KL, 1): 0.3, "env/win": 1.0})
        logger.log(20, {M.EVAL_RETURN: 5.0})
    assert list(tmp_path.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"ha/kl/agent_0", "ha/kl/agent_1", "ha/kl", "env/win", M.EVAL_RETURN} <= tags
    assert events.Scalars("ha/kl")[0].value == pytest.approx(0.2)
    assert events.Scalars(M.EVAL_RETURN)[0].step == 20


def test_without_tensorboard_it_warns_once_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    monkeypatch.setattr(logger_module, "_warned_no_tensorboard", False)
    with pytest.warns(RuntimeWarning, match="TensorBoard"):
        with open_logger(tmp_path / "a", tensorboard=True) as logger:
            logger.log(1, {M.VALUE_LOSS: 1.0})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_logger(tmp_path / "b", tensorboard=True).close()
    assert not list((tmp_path / "a").glob("events.out.tfevents.*"))
    _, rows = read_rows(tmp_path / "a" / "metrics.csv")
    assert len(rows) == 1


def test_plain_progress_lines_when_not_a_terminal(tmp_path):
    clock, out = FakeClock(), io.StringIO()
    with open_logger(tmp_path, stream=out, clock=clock, line_interval_s=30) as logger:
        clock.now = 10.0
        logger.log(100, {})  # first row: a line
        clock.now = 20.0
        logger.log(200, {M.EVAL_RETURN: 12.345})  # 10 s later: no line
        clock.now = 45.0
        logger.log(450, {})  # 35 s after the last line: a line
        logger.info("checkpoint written")
    lines = out.getvalue().splitlines()
    assert lines[0] == "[haml] step 100/1,000 (10.0%) | 10 steps/s | eval return - | ETA 0:01:30"
    assert lines[1] == "[haml] step 450/1,000 (45.0%) | 10 steps/s | eval return 12.35 | ETA 0:00:55"
    assert lines[2] == "[haml] checkpoint written"
    assert lines[3].startswith("[haml] step 450/1,000") and lines[3].endswith("elapsed 0:00:45")
    assert len(lines) == 4


def test_progress_after_resume_counts_only_the_new_steps(tmp_path):
    clock, out = FakeClock(), io.StringIO()
    with open_logger(tmp_path, stream=out, clock=clock, start_step=500, line_interval_s=0) as logger:
        clock.now = 10.0
        logger.log(600, {})
    assert out.getvalue().splitlines()[0] == (
        "[haml] step 600/1,000 (60.0%) | 10 steps/s | eval return - | ETA 0:00:40"
    )


def test_a_resumed_run_shows_the_last_kept_evaluation_until_its_next_one(tmp_path):
    with open_logger(tmp_path) as logger:
        logger.log(100, {M.EVAL_RETURN: 7.5})
        logger.log(200, {})
        logger.log(300, {M.EVAL_RETURN: 9.0})  # after the checkpoint: dropped on resume
    clock, out = FakeClock(), io.StringIO()
    with open_logger(tmp_path, stream=out, clock=clock, start_step=200, line_interval_s=0) as logger:
        assert logger.last_eval_return == 7.5
        clock.now = 10.0
        logger.log(400, {})
    assert "eval return 7.50" in out.getvalue().splitlines()[0]


def test_a_run_past_its_budget_shows_no_negative_eta(tmp_path):
    clock, out = FakeClock(), io.StringIO()
    with open_logger(tmp_path, stream=out, clock=clock, start_step=1000, line_interval_s=0) as logger:
        clock.now = 1.0
        logger.log(1040, {})
    assert out.getvalue().splitlines()[0] == (
        "[haml] step 1,040/1,000 (104.0%) | 40 steps/s | eval return - | ETA 0:00:00"
    )


def test_quiet_prints_nothing(tmp_path):
    out = io.StringIO()
    with open_logger(tmp_path, stream=out, quiet=True, line_interval_s=0) as logger:
        logger.log(1, {})
        logger.info("hello")
    assert out.getvalue() == ""


def test_a_terminal_gets_a_progress_bar(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich's width when the "terminal" reports none

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    with open_logger(tmp_path, stream=out) as logger:
        logger.log(500, {M.EVAL_RETURN: 3.0})
    text = out.getvalue()
    assert "[haml]" not in text
    assert "500/1,000 steps" in text and "eval return 3.00" in text and "ETA" in text


def test_tensorboard_on_resume_discards_events_after_the_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with open_logger(tmp_path, tensorboard=True) as logger:
        for step in (100, 200, 300):
            logger.log(step, {M.TRAIN_RETURN: 1.0})
    with open_logger(tmp_path, tensorboard=True, start_step=100) as logger:
        logger.log(200, {M.TRAIN_RETURN: 2.0})
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars(M.TRAIN_RETURN)] == [(100, 1.0), (200, 2.0)]
