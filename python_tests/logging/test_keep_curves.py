"""scripts/keep_curves.py: the cut-down copy of a run draws the same curves as the run."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import yaml

from haml.logging import metrics as M
from haml.logging import plot
from haml.logging.plot import read_curve, run_key

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "keep_curves.py"
_spec = importlib.util.spec_from_file_location("keep_curves", SCRIPT)
keep_curves = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(keep_curves)


def _run(root: Path, algo: str, seed: int, variant: str | None = None) -> Path:
    """A run with every metric column, eval rows every 3rd step, a resume's repeated row and a
    line cut short by a crash at the end."""
    run_dir = root / "mamujoco" / "HalfCheetah-2x3" / algo / f"seed-{seed}"
    run_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    with open(run_dir / "metrics.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=M.CSV_COLUMNS, restval="")
        writer.writeheader()
        for step in [1000, 2000, 3000, 3000, 4000, 5000, 6000]:
            row = {c: f"{rng.normal():.6g}" for c in M.CSV_COLUMNS}
            row.update({"step": step, M.STEPS_PER_SECOND: f"{rng.uniform(50, 200):.6g}"})
            if step % 3000:
                row[M.EVAL_RETURN] = ""
            writer.writerow(row)
    with open(run_dir / "metrics.csv", "a") as file:
        file.write("7000,12.5,")
    config = {"algo_name": algo, "seed": seed, "env": {"name": "mamujoco", "task": "HalfCheetah-2x3"},
              "eval": {"episodes": 40}, "train": {"steps": 6000 if seed == 0 else 10000}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if variant:
        (run_dir / plot.SWEEP_RUN_FILE).write_text(yaml.safe_dump({"variant": variant}))
    return run_dir


def test_copies_draw_the_same_curves_with_fewer_columns(tmp_path, capsys):
    runs = [_run(tmp_path / "runs", "hatd3", 0), _run(tmp_path / "runs", "hatd3", 1),
            _run(tmp_path / "runs", "hasac", 0, variant="delay-1")]
    kept_root = tmp_path / "kept"
    assert keep_curves.main([str(tmp_path / "runs"), "--to", str(kept_root)]) == 0
    copies = {run: kept_root / run_key(run).algo / (run_key(run).variant or "") / run.name
              for run in runs}
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    # the seed-1 run planned 10,000 steps and logged 6,000; the seed-0 runs planned 6,000
    unfinished = [line for line in lines if "unfinished" in line]
    assert len(unfinished) == 1
    assert str(runs[1]) in unfinished[0] and "(unfinished: 6,000 of 10,000 steps)" in unfinished[0]
    for run, copy in copies.items():
        assert run_key(copy) == run_key(run)
        with open(copy / "metrics.csv", newline="") as file:
            header = next(csv.reader(file))
        assert header == [c for c in keep_curves.KEPT_COLUMNS if c in M.CSV_COLUMNS]
        assert len(header) < len(M.CSV_COLUMNS)
        for metric, x in [(M.EVAL_RETURN, M.STEP), (M.TRAIN_RETURN, M.STEP),
                          (M.EVAL_RETURN, plot.TRAINING_HOURS), (M.Q_MEAN, M.WALL_TIME)]:
            original, kept = read_curve(run, metric, x), read_curve(copy, metric, x)
            np.testing.assert_array_equal(kept.x, original.x)
            np.testing.assert_array_equal(kept.y, original.y)
        assert plot._eval_episodes(copy) == 40
    assert not list(kept_root.rglob("*.partial"))


def test_a_path_without_runs_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert keep_curves.main([str(tmp_path / "empty"), "--to", str(tmp_path / "kept")]) == 2
    assert "no run directory" in capsys.readouterr().err
    assert keep_curves.main([str(tmp_path / "missing"), "--to", str(tmp_path / "kept")]) == 2
    assert not (tmp_path / "kept").exists()
