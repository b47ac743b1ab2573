"""haml.logging.plot: finding runs, grouping them, mean ± std across seeds, the PNGs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from haml.config import config_to_dict, load_config
from haml.logging import metrics as M
from haml.logging import plot
from haml.logging.plot import NoDataError, aggregate_seeds, plot_run, plot_runs, read_curve, run_key

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(
    root: Path,
    env: str,
    task: str,
    algo: str,
    seed: int,
    evals: dict[int, float],
    train: dict[int, float] | None = None,
    with_config: bool = True,
) -> Path:
    """A synthetic run directory runs/<env>/<task>/<algo>/seed-<n> with metrics.csv (and config)."""
    run_dir = root / env / task / algo / f"seed-{seed}"
    run_dir.mkdir(parents=True)
    train = train or {}
    with open(run_dir / "metrics.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=M.CSV_COLUMNS, restval="")
        writer.writeheader()
        for step in sorted(set(evals) | set(train)):
            row = {"step": step, "wall_time": 1.0}
            if step in evals:
                row[M.EVAL_RETURN] = evals[step]
            if step in train:
                row[M.TRAIN_RETURN] = train[step]
            writer.writerow(row)
    if with_config:
        # The keys of haml's resolved config that name the run (algo_name at the top level).
        config = {"algo_name": algo, "seed": seed, "env": {"name": env, "task": task}}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


# ------------------------------------------------------------------------------------------------
# aggregation, by hand


def test_mean_and_std_of_seeds_at_shared_steps():
    agg = aggregate_seeds([([0, 10, 20], [0.0, 2.0, 4.0]), ([0, 10, 20], [2.0, 4.0, 9.0])])
    np.testing.assert_array_equal(agg.x, [0, 10, 20])
    np.testing.assert_allclose(agg.mean, [1.0, 3.0, 6.5])
    np.testing.assert_allclose(agg.std, [1.0, 1.0, 2.5])  # population std: |a - b| / 2
    assert agg.n_runs == 2


def test_seeds_at_different_steps_are_interpolated_inside_the_shared_range():
    # run b has no point at 10 (interpolated: 4.0) and ends at 20 (the grid stops there)
    agg = aggregate_seeds([([0, 10, 20, 30], [0.0, 2.0, 4.0, 6.0]), ([0, 20], [2.0, 6.0])])
    np.testing.assert_array_equal(agg.x, [0, 10, 20])
    np.testing.assert_allclose(agg.mean, [1.0, 3.0, 5.0])
    np.testing.assert_allclose(agg.std, [1.0, 1.0, 1.0])


def test_three_seeds_std_is_the_population_std():
    agg = aggregate_seeds([([5], [1.0]), ([5], [2.0]), ([5], [6.0])])
    assert agg.mean[0] == pytest.approx(3.0)
    assert agg.std[0] == pytest.approx(np.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 3))


def test_one_seed_has_zero_std_and_bad_input_is_refused():
    agg = aggregate_seeds([([1, 2], [3.0, 4.0])])
    np.testing.assert_array_equal(agg.std, [0.0, 0.0])
    with pytest.raises(NoDataError, match="no range"):
        aggregate_seeds([([0, 10], [1.0, 1.0]), ([20, 30], [1.0, 1.0])])
    with pytest.raises(NoDataError):
        aggregate_seeds([])
    with pytest.raises(ValueError, match="strictly increasing"):
        aggregate_seeds([([0, 0], [1.0, 2.0])])
    with pytest.raises(ValueError, match="curve 0"):
        aggregate_seeds([([0, 1], [1.0])])


# ------------------------------------------------------------------------------------------------
# reading runs


def test_read_curve_skips_empty_cells_and_cut_lines(tmp_path):
    run = make_run(tmp_path, "toy", "matrix", "happo", 0, {100: 1.0, 300: 3.0}, train={200: 9.0})
    with open(run / "metrics.csv", "a") as file:
        file.write("400,1.0,2")  # a crash mid-line
    curve = read_curve(run)
    np.testing.assert_array_equal(curve.x, [100, 300])
    np.testing.assert_array_equal(curve.y, [1.0, 3.0])
    with pytest.raises(ValueError, match="columns"):
        read_curve(run, metric="charts/nope")


def test_groups_come_from_config_else_from_directory_names(tmp_path):
    with_config = make_run(tmp_path / "a", "mamujoco", "Ant-4x2", "hatrpo", 3, {1: 1.0})
    assert run_key(with_config) == plot.RunKey("mamujoco", "Ant-4x2", "hatrpo", "3")
    # a run directory named freely (haml train --out) with the config haml writes: it decides
    free = tmp_path / "my-ant-run"
    with_config.rename(free)
    real = config_to_dict(load_config("hatrpo", "mamujoco", "Ant-4x2", overrides=["seed=3"]))
    (free / "config.yaml").write_text(yaml.safe_dump(real))
    assert run_key(free) == plot.RunKey("mamujoco", "Ant-4x2", "hatrpo", "3")
    free.rename(with_config)
    # a config with another layout: the directory names decide
    (with_config / "config.yaml").write_text(yaml.safe_dump({"algo": "x"}))
    assert run_key(with_config) == plot.RunKey("mamujoco", "Ant-4x2", "hatrpo", "3")
    without = make_run(tmp_path / "b", "smax", "3m", "happo", 1, {1: 1.0}, with_config=False)
    assert run_key(without) == plot.RunKey("smax", "3m", "happo", "1")


def test_find_run_dirs_searches_below_parents(tmp_path):
    runs = [make_run(tmp_path, "toy", "t", algo, seed, {1: 1.0}) for algo in ("a", "b") for seed in (0, 1)]
    assert sorted(plot.find_run_dirs([tmp_path])) == sorted(runs)
    assert plot.find_run_dirs([runs[0], tmp_path / "toy"])[0] == runs[0]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot.find_run_dirs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoDataError, match="no run directory"):
        plot.find_run_dirs([tmp_path / "empty"])


# ------------------------------------------------------------------------------------------------
# images


def test_plot_run_writes_curve_png(tmp_path):
    run = make_run(tmp_path, "toy", "matrix", "happo", 0, {100: 1.0, 200: 2.0}, train={100: 0.5, 200: 1.5})
    assert plot_run(run) == run / "curve.png"
    assert is_png(run / "curve.png")


def test_plot_run_with_training_rows_only_still_plots(tmp_path):
    run = make_run(tmp_path, "toy", "matrix", "happo", 0, {}, train={100: 0.5, 200: 1.5})
    assert is_png(plot_run(run))


def test_plot_run_without_rows_warns_and_writes_nothing(tmp_path):
    run = make_run(tmp_path, "toy", "matrix", "happo", 0, {})
    with pytest.warns(UserWarning, match="no charts/eval_return or charts/train_return rows"):
        assert plot_run(run) is None
    assert not (run / "curve.png").exists()


def test_plot_runs_three_seeds_two_algos(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    steps = [0, 1000, 2000, 3000]
    for algo in ("happo", "hatrpo"):
        for seed in range(3):
            make_run(tmp_path / "runs", "mamujoco", "HalfCheetah-2x3", algo, seed,
                     {s: float(v) for s, v in zip(steps, rng.normal(size=4).cumsum())})

    calls: list[int] = []
    original = plot.aggregate_seeds

    def spy(curves):
        calls.append(len(curves))
        return original(curves)

    monkeypatch.setattr(plot, "aggregate_seeds", spy)
    out = plot_runs([tmp_path / "runs"], tmp_path / "figs", note=plot.MAMUJOCO_NOTE)
    assert out == tmp_path / "figs" / "charts_eval_return.png"
    assert is_png(out)
    assert calls == [3, 3]  # one curve per algo, each over its three seeds


def test_plot_runs_draws_the_note_and_a_panel_per_task(tmp_path, monkeypatch):
    make_run(tmp_path, "mamujoco", "Ant-4x2", "happo", 0, {0: 1.0, 10: 2.0})
    make_run(tmp_path, "mamujoco", "Hopper-3x1", "happo", 0, {0: 1.0, 10: 2.0})
    seen = {}
    original = plot._save

    def capture(figure, path, note):
        written = original(figure, path, note)
        seen["titles"] = [ax.get_title() for ax in figure.axes if ax.get_visible()]
        seen["texts"] = [t.get_text() for t in figure.texts]
        return written

    monkeypatch.setattr(plot, "_save", capture)
    out = plot_runs([tmp_path], tmp_path / "cmp.png", note=plot.MAMUJOCO_NOTE)
    assert is_png(out) and out == tmp_path / "cmp.png"
    assert seen["titles"] == ["mamujoco/Ant-4x2", "mamujoco/Hopper-3x1"]
    assert seen["texts"] == ["gymnasium-robotics MaMuJoCo (MuJoCo v5) is not the papers' v2 environment"]


def test_mamujoco_figures_carry_the_v5_caveat_by_default(tmp_path, monkeypatch):
    figures = _capture_figures(monkeypatch)
    mujoco = make_run(tmp_path, "mamujoco", "Ant-4x2", "happo", 0, {0: 1.0, 10: 2.0})
    toy = make_run(tmp_path, "toy", "matrix", "happo", 0, {0: 1.0, 10: 2.0})
    plot_runs([tmp_path], tmp_path / "both.png")  # a MaMuJoCo panel beside a toy one
    plot_runs([toy], tmp_path / "toy.png")
    plot_runs([mujoco], tmp_path / "none.png", note=None)
    plot_run(mujoco)
    plot_run(toy)
    texts = [[t.get_text() for t in figure.texts] for figure in figures]
    assert texts == [[plot.MAMUJOCO_NOTE], [], [], [plot.MAMUJOCO_NOTE], []]


def test_plot_runs_skips_runs_without_eval_rows_and_says_when_none_has_any(tmp_path):
    make_run(tmp_path / "runs", "toy", "t", "happo", 0, {0: 1.0, 10: 2.0})
    make_run(tmp_path / "runs", "toy", "t", "happo", 1, {}, train={10: 1.0})
    with pytest.warns(UserWarning, match="seed-1 has no charts/eval_return rows yet"):
        assert is_png(plot_runs([tmp_path / "runs"], tmp_path / "out.png"))

    make_run(tmp_path / "empty", "toy", "t", "happo", 0, {})
    with pytest.warns(UserWarning), pytest.raises(NoDataError, match="has charts/eval_return rows yet"):
        plot_runs([tmp_path / "empty"], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


# ------------------------------------------------------------------------------------------------
# what a reader sees: labels, legends and tick labels, read back from the figure


def _capture_figures(monkeypatch) -> list:
    figures = []
    original = plot._save

    def capture(figure, path, note):
        written = original(figure, path, note)  # savefig draws, which sets the tick labels
        figures.append(figure)
        return written

    monkeypatch.setattr(plot, "_save", capture)
    return figures


def _visible_xtick_labels(ax) -> list[str]:
    lo, hi = ax.get_xlim()
    return [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]


def _with_eval_episodes(run_dir: Path, episodes: int) -> Path:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["eval"] = {"episodes": episodes}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (500, "500"), (20_000, "20k"), (120_000, "120k"), (1_000_000, "1M"),
     (1_500_000, "1.5M"), (2_250_000, "2.25M"), (-3000, "-3k"), (12.5, "12.5")],
)
def test_compact_number(value, text):
    assert plot.compact_number(value) == text


def test_metric_labels_are_words():
    assert plot.metric_label(M.EVAL_RETURN, 40) == "evaluation return, mean of 40 deterministic episodes"
    assert plot.metric_label(M.EVAL_RETURN) == "evaluation return, mean of deterministic episodes"
    assert plot.metric_label(M.STEP) == "environment steps"
    assert plot.metric_label(M.VALUE_LOSS) == "value loss"
    for metric in M.METRICS:
        assert "/" not in plot.metric_label(metric) and "_" not in plot.metric_label(metric)


def test_curve_png_says_what_it_shows(tmp_path, monkeypatch):
    steps = range(20_000, 140_001, 20_000)  # a short run: raw step numbers would run together
    run = _with_eval_episodes(
        make_run(tmp_path, "mamujoco", "HalfCheetah-2x3", "happo", 0,
                 {s: s / 1e3 for s in steps}, train={s: s / 2e3 for s in steps}),
        5,
    )
    figures = _capture_figures(monkeypatch)
    assert plot_run(run) == run / "curve.png"
    (ax,) = figures[0].axes
    assert ax.get_title() == "mamujoco/HalfCheetah-2x3: happo, seed 0"
    assert ax.get_xlabel() == "environment steps"
    assert ax.get_ylabel() == "episode return (undiscounted)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "evaluation return, mean of 5 deterministic episodes",
        "training return, mean of the episodes ended since the previous point",
    ]
    ticks = _visible_xtick_labels(ax)
    assert "100k" in ticks and all(t.endswith("k") for t in ticks), ticks
    assert not any("000" in t for t in ticks)


def test_haml_plot_says_what_it_shows(tmp_path, monkeypatch):
    from haml import cli

    steps = range(0, 2_000_001, 250_000)
    for algo in ("happo", "hatrpo"):
        for seed in range(3):
            _with_eval_episodes(
                make_run(tmp_path / "runs", "mamujoco", "HalfCheetah-2x3", algo, seed,
                         {s: s / 1e5 + seed for s in steps}),
                40,
            )
    figures = _capture_figures(monkeypatch)
    assert cli.main(["plot", str(tmp_path / "runs"), "--out", str(tmp_path / "cmp.png")]) == 0
    ax = next(ax for ax in figures[0].axes if ax.get_visible())
    assert ax.get_xlabel() == "environment steps"
    assert ax.get_ylabel() == "evaluation return, mean of 40 deterministic episodes"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "happo, mean ± std of 3 seeds", "hatrpo, mean ± std of 3 seeds",
    ]
    ticks = _visible_xtick_labels(ax)
    assert {"1M", "2M"} <= set(ticks) and not any("000" in t for t in ticks), ticks


def test_training_hours_sum_step_over_rate_and_skip_rows_a_resume_repeats(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # (step, steps/s, eval return): 1000 steps at 100/s, 1000 at 50/s; a resume then repeats
    # step 2000 (no time added) before 2000 more steps at 200/s.
    rows = [(1000, 100.0, 1.0), (2000, 50.0, 2.0), (2000, 40.0, 2.5), (4000, 200.0, 4.0)]
    with open(run_dir / "metrics.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=M.CSV_COLUMNS, restval="")
        writer.writeheader()
        for step, rate, value in rows:
            writer.writerow({"step": step, "wall_time": 1.0, M.STEPS_PER_SECOND: rate,
                             M.EVAL_RETURN: value})
    curve = read_curve(run_dir, x=plot.TRAINING_HOURS)
    np.testing.assert_allclose(curve.x * 3600, [10.0, 30.0, 40.0])
    np.testing.assert_array_equal(curve.y, [1.0, 2.5, 4.0])  # the repeated row's value wins
    assert plot.metric_label(plot.TRAINING_HOURS).startswith("training time (hours")


def test_haml_plot_against_training_time(tmp_path, monkeypatch):
    from haml import cli

    run = make_run(tmp_path / "runs", "toy", "matrix", "happo", 0, {100: 1.0, 200: 2.0})
    with pytest.raises(NoDataError):
        read_curve(run, x=plot.TRAINING_HOURS)  # make_run logs no steps/s: no time to sum
    with open(run / "metrics.csv", "a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=M.CSV_COLUMNS, restval="")
        writer.writerow({"step": 300, "wall_time": 1.0, M.STEPS_PER_SECOND: 10.0, M.EVAL_RETURN: 3.0})
    figures = _capture_figures(monkeypatch)
    assert cli.main(["plot", str(run), "--x", "training_hours", "--out", str(tmp_path / "t.png")]) == 0
    ax = next(ax for ax in figures[0].axes if ax.get_visible())
    assert ax.get_xlabel().startswith("training time (hours")
