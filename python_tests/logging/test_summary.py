"""haml.logging.summary: where runs ended, per curve of ``haml plot``, and the printed table."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from haml.logging import metrics as M
from haml.logging.plot import NoDataError
from haml.logging.summary import final_values, format_table


def write_run(root: Path, algo: str, seed: int, rows: list[tuple[int, float | None, float | None]]) -> Path:
    """runs/toy/matrix/<algo>/seed-<n> whose metrics.csv has (step, steps/s, eval return) rows."""
    from yaml import safe_dump

    run_dir = root / "toy" / "matrix" / algo / f"seed-{seed}"
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=M.CSV_COLUMNS, restval="")
        writer.writeheader()
        for step, rate, value in rows:
            row = {"step": step, "wall_time": 1.0}
            if rate is not None:
                row[M.STEPS_PER_SECOND] = rate
            if value is not None:
                row[M.EVAL_RETURN] = value
            writer.writerow(row)
    config = {"algo_name": algo, "seed": seed, "env": {"name": "toy", "task": "matrix"}}
    (run_dir / "config.yaml").write_text(safe_dump(config))
    return run_dir


def test_final_values_per_seed_and_across_seeds(tmp_path):
    # hatd3: 3 seeds ending at 4, 6, 11; seed 2 is still going (its last evaluation at step 200,
    # its last row at 300). 100 steps at 50/s then 200 at 100/s: 4 s of training.
    for seed, final in ((0, 4.0), (1, 6.0)):
        write_run(tmp_path, "hatd3", seed, [(100, 50.0, 1.0), (300, 100.0, final)])
    write_run(tmp_path, "hatd3", 2, [(100, 50.0, 2.0), (200, 25.0, 11.0), (300, 200.0, None)])
    write_run(tmp_path, "happo", 0, [(100, 10.0, 0.5), (300, 30.0, 7.0)])

    groups = final_values([tmp_path])
    assert [g.label for g in groups] == ["happo", "hatd3"]
    hatd3 = groups[1]
    assert [r.key.seed for r in hatd3.runs] == ["0", "1", "2"]
    assert [r.value for r in hatd3.runs] == [4.0, 6.0, 11.0]
    assert [r.step for r in hatd3.runs] == [300.0, 300.0, 200.0]
    assert hatd3.mean == pytest.approx(7.0)
    assert hatd3.std == pytest.approx(math.sqrt((9 + 1 + 16) / 3))  # population std, ddof=0
    # seed 2: 100/50 + 100/25 + 100/200 = 6.5 s of training; median of 50, 25, 200 = 50
    assert hatd3.runs[2].training_hours * 3600 == pytest.approx(6.5)
    assert hatd3.runs[2].median_steps_per_second == 50.0
    assert hatd3.runs[0].training_hours * 3600 == pytest.approx(4.0)

    table = format_table(groups)
    lines = table.splitlines()
    assert len(lines) == 4 and lines[1].startswith("|---")
    assert "| toy/matrix | hatd3 | 4 (seed 0, 300), 6 (seed 1, 300), 11 (seed 2, 200) | 7 ± 2.94 | 0.00111, 0.00111, 0.00181 | 75, 75, 50 |" in table
    assert "| toy/matrix | happo | 7 (seed 0, 300) | 1 seed |" in table


def test_runs_without_rates_or_rows(tmp_path):
    write_run(tmp_path, "maddpg", 0, [(100, None, 3.0)])
    write_run(tmp_path, "maddpg", 1, [(100, 20.0, None)])  # no evaluation yet: left out
    (group,) = final_values([tmp_path])
    (run,) = group.runs
    assert math.isnan(run.training_hours) and math.isnan(run.median_steps_per_second)
    assert "| 3 (seed 0, 100) | 1 seed | – | – |" in format_table([group])
    with pytest.raises(NoDataError):
        final_values([tmp_path / "toy" / "matrix" / "maddpg" / "seed-1"])


def test_haml_plot_prints_the_table(tmp_path, capsys):
    from haml import cli

    write_run(tmp_path, "hasac", 0, [(1000, 100.0, 1.0), (2_000_000, 100.0, 0.8)])
    assert cli.main(["plot", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "| toy/matrix | hasac | 0.8 (seed 0, 2M) | 1 seed | 5.56 | 100 |" in out
