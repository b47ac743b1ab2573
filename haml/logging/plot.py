"""Learning curves from run directories: ``haml plot`` and the ``curve.png`` of each run.

Runs are grouped by (env, task, algo), read from each run's ``config.yaml``
(``config["env"]["name"]``, ``config["env"]["task"]``, ``config["algo"]["name"]``). Where the config
is missing or laid out differently, they come from the directory names
``.../<env>/<task>/<algo>/seed-<n>``. A run started by ``haml sweep`` with an override set also
names that set in its :data:`SWEEP_RUN_FILE`; runs of one algorithm with different sets are
different curves, labelled ``<algo> [<set>]``.

Across seeds (:func:`aggregate_seeds`): the curves of one group are interpolated linearly onto a
common grid, the union of all their x values inside the range that *every* run covers (from the
latest first x to the earliest last x). Nothing is extrapolated, so a group is drawn only as far as
its shortest run, and when all seeds evaluated at the same steps (the usual case: same config,
different seed) the grid is exactly those steps and nothing is interpolated. The band is mean ± the
population standard deviation (``ddof=0``) across the runs at each grid point.

:func:`plot_runs` draws one panel per (env, task), titled ``env/task``, with one curve per algo (and override set).
Axes and legends say in words what is drawn (:func:`metric_label`: "evaluation return, mean of 40
deterministic episodes", not ``charts/eval_return``), and step ticks are compact (200k, 1M).
A note can be set under the figure. By default (``note="auto"``) a figure with a MaMuJoCo run
carries :data:`MAMUJOCO_NOTE`, so that no MaMuJoCo curve is read against the papers' v2 figures
without the caveat; ``note=None`` draws none. Figures are built on matplotlib's object API
(``Figure``), never through pyplot, so no global backend is chosen and nothing opens a window;
matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from haml.logging import metrics as M
from haml.logging.logger import CONFIG_FILE, METRICS_FILE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CURVE_FILE",
    "AUTO_NOTE",
    "MAMUJOCO_NOTE",
    "Curve",
    "NoDataError",
    "RunKey",
    "SWEEP_RUN_FILE",
    "SeedAggregate",
    "aggregate_seeds",
    "compact_number",
    "find_run_dirs",
    "metric_label",
    "note_for",
    "plot_run",
    "plot_runs",
    "read_curve",
    "read_run_config",
    "run_key",
    "TRAINING_HOURS",
]

SWEEP_RUN_FILE = "sweep-run.yaml"
"""What ``haml sweep`` records in a run directory (:mod:`haml.sweeps.runs`); here only its
``variant``, the name of the run's override set, is read."""

CURVE_FILE = "curve.png"
"""The single-run learning curve written into the run directory at the end of training."""

MAMUJOCO_NOTE = "gymnasium-robotics MaMuJoCo (MuJoCo v5) is not the papers' v2 environment"
"""The caption for MaMuJoCo curves, which are not comparable one-to-one with the papers' figures."""

AUTO_NOTE = "auto"
"""``note`` of :func:`plot_runs` and :func:`plot_run`: the caption the runs need
(:func:`note_for`)."""


def note_for(envs: Iterable[str]) -> str | None:
    """The caption a figure of runs of these env families needs: :data:`MAMUJOCO_NOTE` if one
    of them is MaMuJoCo, else none."""
    return MAMUJOCO_NOTE if "mamujoco" in set(envs) else None


TRAINING_HOURS = "training_hours"
"""A derived x for :func:`read_curve` and :func:`plot_runs`: hours spent in training iterations
(collection and updates, evaluation excluded) up to each row, summed over the rows as
Δstep / steps-per-second. Unlike ``wall_time`` it is not broken by the pauses of a resumed run."""

METRIC_LABELS: dict[str, str] = {
    TRAINING_HOURS: "training time (hours; collection and updates, evaluation excluded)",
    M.EVAL_RETURN: "evaluation return",
    M.EVAL_RETURN_STD: "evaluation return, std across episodes",
    M.EVAL_EPISODE_LENGTH: "evaluation episode length (steps)",
    M.EVAL_WIN_RATE: "evaluation win rate",
    M.TRAIN_RETURN: "training return",
    M.TRAIN_EPISODE_LENGTH: "training episode length (steps)",
    M.TRAIN_WIN_RATE: "training win rate",
    M.STEPS_PER_SECOND: "environment steps per second",
    M.STEP: "environment steps",
    M.WALL_TIME: "wall-clock time (s)",
}
"""Words for the metrics a reader plots most; other metrics get their name without the prefix."""


def metric_label(metric: str, eval_episodes: int | None = None) -> str:
    """What ``metric`` is, in words, for an axis or a legend.

    The evaluation metrics say how they were measured: "evaluation return, mean of 40
    deterministic episodes" when ``eval_episodes`` is known; the training return is the mean of the
    training episodes that ended since the previous point.
    """
    if metric == M.EVAL_RETURN:
        episodes = f"{eval_episodes} " if eval_episodes else ""
        return f"evaluation return, mean of {episodes}deterministic episodes"
    if metric == M.TRAIN_RETURN:
        return "training return, mean of the episodes ended since the previous point"
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]
    return metric.split("/", 1)[-1].replace("_", " ")


def compact_number(value: float, _position: object = None) -> str:
    """Tick text for a step count: 0, 500, 20k, 1.5M, 2M (matplotlib FuncFormatter signature)."""
    magnitude = abs(value)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


class NoDataError(ValueError):
    """There is nothing to plot: no run directory, or no rows of the metric yet."""


@dataclass(frozen=True)
class RunKey:
    """What a run is a seed of: runs with equal (env, task, algo) are averaged together."""

    env: str
    task: str
    algo: str
    seed: str | None = None
    variant: str | None = None
    """The override set of a sweep's run (:data:`SWEEP_RUN_FILE`), None for a plain run."""

    @property
    def label(self) -> str:
        """What a curve of these runs is called: the algo, and the override set if any."""
        return self.algo if not self.variant else f"{self.algo} [{self.variant}]"


@dataclass(frozen=True)
class Curve:
    """One run's metric against x, sorted by x, one point per x, finite values only."""

    run_dir: Path
    key: RunKey
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class SeedAggregate:
    """Mean and population std across ``n_runs`` runs at each point of the common grid ``x``."""

    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n_runs: int


# ----------------------------------------------------------------------------------------------
# finding and reading runs


def find_run_dirs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Every run directory (one holding ``metrics.csv``) given or below the given paths, in order.

    Raises ``FileNotFoundError`` for a path that does not exist and :class:`NoDataError` for one
    with no run below it.
    """
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"plot: {path} does not exist")
        if (path / METRICS_FILE).is_file():
            found[path] = None
            continue
        below = sorted(p.parent for p in path.rglob(METRICS_FILE) if p.is_file())
        if not below:
            raise NoDataError(f"plot: no run directory (one holding {METRICS_FILE}) in or below {path}")
        found.update(dict.fromkeys(below))
    return list(found)


def run_key(run_dir: str | os.PathLike[str]) -> RunKey:
    """(env, task, algo, seed) of a run, from its config.yaml or else from its directory names."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    seed = config.get("seed") if isinstance(config, dict) else None
    try:
        # The layout haml writes (haml.config.config_to_dict): algo_name at the top level.
        env, task, algo = config["env"]["name"], config["env"]["task"], config["algo_name"]
    except (KeyError, TypeError):
        # The layout runs/<env>/<task>/<algo>/seed-<n>; "?" where the path is too short.
        parents = [p.name for p in run_dir.resolve().parents][:3]
        algo, task, env = (parents + ["?", "?", "?"])[:3]
    if seed is None and run_dir.name.startswith("seed-"):
        seed = run_dir.name[len("seed-"):]
    variant = _read_yaml(run_dir / SWEEP_RUN_FILE).get("variant") or None
    return RunKey(str(env), str(task), str(algo), None if seed is None else str(seed),
                  None if variant is None else str(variant))


def _eval_episodes(run_dir: Path) -> int | None:
    """``eval.episodes`` of a run's config.yaml, or None where it is not there."""
    config = read_run_config(run_dir)
    try:
        episodes = config["eval"]["episodes"]
    except (KeyError, TypeError):
        return None
    return episodes if isinstance(episodes, int) else None


def read_run_config(run_dir: str | os.PathLike[str]) -> Any:
    """A run's config.yaml as plain data ({} where it is missing, empty or unreadable)."""
    return _read_yaml(Path(run_dir) / CONFIG_FILE)


def _read_yaml(path: Path) -> Any:
    """A run's YAML file as data ({} where it is missing, empty or unreadable, with a warning)."""
    if not path.is_file():
        return {}
    import yaml

    try:
        with open(path, encoding="utf-8") as file:
            data = yaml.safe_load(file)
    except yaml.YAMLError as err:
        warnings.warn(f"plot: cannot read {path} ({err}); going without it", stacklevel=3)
        return {}
    return data if isinstance(data, dict) else {}


def read_curve(
    run_dir: str | os.PathLike[str], metric: str = M.EVAL_RETURN, x: str = M.STEP
) -> Curve:
    """The (x, metric) points of one run's ``metrics.csv`` where both are finite numbers.

    Raises ``ValueError`` naming the available columns when ``metric`` or ``x`` is not one, and
    :class:`NoDataError` when the run has no row with that metric yet. Lines cut short by a crash
    are skipped. Where x repeats, the last row wins.
    """
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None:
            raise NoDataError(f"plot: {path} is empty (the run has not logged anything yet)")
        derived = x == TRAINING_HOURS
        columns = (metric, M.STEP, M.STEPS_PER_SECOND) if derived else (metric, x)
        for column in columns:
            if column not in header:
                what = "x" if column == x else "metric" if column == metric else f"{x} needs"
                raise ValueError(f"plot: {what} {column!r} is not a column of {path}; columns: {header}")
        i_y = header.index(metric)
        i_x = header.index(M.STEP if derived else x)
        i_rate = header.index(M.STEPS_PER_SECOND) if derived else -1
        points: dict[float, float] = {}
        seconds, last_step = 0.0, 0.0
        for cells in reader:
            if len(cells) != len(header):
                continue
            xv, yv = M.csv_cell_value(cells[i_x]), M.csv_cell_value(cells[i_y])
            if derived and math.isfinite(xv):
                # Rows repeated by a resume (steps not beyond the last counted) add no time; a
                # row past it without a rate has no known time.
                rate = M.csv_cell_value(cells[i_rate])
                if xv > last_step and math.isfinite(rate) and rate > 0:
                    seconds += (xv - last_step) / rate
                    last_step = xv
                xv = seconds / 3600.0 if xv <= last_step else math.nan
            if math.isfinite(xv) and math.isfinite(yv):
                points[xv] = yv
    if not points:
        raise NoDataError(f"plot: {run_dir} has no {metric} rows yet; nothing to plot for it")
    xs = np.array(sorted(points), dtype=np.float64)
    ys = np.array([points[v] for v in xs], dtype=np.float64)
    return Curve(run_dir, run_key(run_dir), xs, ys)


# ----------------------------------------------------------------------------------------------
# across seeds


def aggregate_seeds(curves: Sequence[tuple[Sequence[float], Sequence[float]]]) -> SeedAggregate:
    """Mean ± std across runs on a common grid (see the module docstring for the grid).

    ``curves`` is one ``(x, y)`` pair per run, each x increasing. Raises :class:`NoDataError`
    when there is no run or when the runs share no x range.
    """
    if not curves:
        raise NoDataError("aggregate_seeds: no curves given")
    pairs = []
    for i, (cx, cy) in enumerate(curves):
        cx, cy = np.asarray(cx, dtype=np.float64), np.asarray(cy, dtype=np.float64)
        if cx.ndim != 1 or cx.shape != cy.shape or cx.size == 0:
            raise ValueError(
                f"aggregate_seeds: curve {i} needs non-empty 1-D x and y of one length, "
                f"got shapes {cx.shape} and {cy.shape}"
            )
        if np.any(np.diff(cx) <= 0):
            raise ValueError(f"aggregate_seeds: the x values of curve {i} must be strictly increasing")
        pairs.append((cx, cy))

    lo = max(cx[0] for cx, _ in pairs)
    hi = min(cx[-1] for cx, _ in pairs)
    if lo > hi:
        raise NoDataError(
            f"aggregate_seeds: the runs share no range of x (latest start {lo:g} is after the "
            f"earliest end {hi:g})"
        )
    union = np.unique(np.concatenate([cx for cx, _ in pairs]))
    grid = union[(union >= lo) & (union <= hi)]
    values = np.stack([np.interp(grid, cx, cy) for cx, cy in pairs])
    return SeedAggregate(grid, values.mean(axis=0), values.std(axis=0, ddof=0), len(pairs))


# ----------------------------------------------------------------------------------------------
# figures


def plot_runs(
    run_dirs: Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    metric: str = M.EVAL_RETURN,
    x: str = M.STEP,
    note: str | None = AUTO_NOTE,
) -> Path:
    """One image of ``metric`` vs ``x``: a panel per (env, task), a mean ± std curve per algo.

    ``run_dirs`` may be run directories or parents of them (searched recursively). ``out`` is the
    image file, or a directory (no suffix) that receives ``<metric>.png``. Runs without rows of
    ``metric`` yet are skipped with a warning; if no run has any, :class:`NoDataError` says so.
    ``note`` is the caption under the figure: by default the one the runs' env families need
    (:func:`note_for`), None for none. Returns the path written.
    """
    paths = list(map(Path, run_dirs))
    dirs = find_run_dirs(paths)
    curves: list[Curve] = []
    for run_dir in dirs:
        try:
            curves.append(read_curve(run_dir, metric, x))
        except NoDataError as err:
            warnings.warn(f"{err}; skipping it", stacklevel=2)
    if not curves:
        raise NoDataError(
            f"plot: none of the {len(dirs)} run(s) found in {', '.join(map(str, paths))} "
            f"has {metric} rows yet"
        )

    panels: dict[tuple[str, str], dict[str, list[Curve]]] = {}
    for curve in curves:
        panels.setdefault((curve.key.env, curve.key.task), {}).setdefault(curve.key.label, []).append(curve)
    algos = sorted({curve.key.label for curve in curves})

    # The evaluation's episode count, where every run used the same one.
    episodes = {_eval_episodes(curve.run_dir) for curve in curves}
    ylabel = metric_label(metric, episodes.pop() if len(episodes) == 1 else None)

    figure = _new_figure(len(panels))
    axes = figure.axes
    for ax, ((env, task), by_algo) in zip(axes, sorted(panels.items())):
        for algo in sorted(by_algo):
            agg = aggregate_seeds([(c.x, c.y) for c in by_algo[algo]])
            color = f"C{algos.index(algo) % 10}"
            label = f"{algo}, 1 seed" if agg.n_runs == 1 else f"{algo}, mean ± std of {agg.n_runs} seeds"
            ax.plot(agg.x, agg.mean, color=color, label=label)
            ax.fill_between(agg.x, agg.mean - agg.std, agg.mean + agg.std, color=color, alpha=0.2, lw=0)
        _decorate(ax, f"{env}/{task}", ylabel, x)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if note == AUTO_NOTE:
        note = note_for(env for env, _ in panels)
    return _save(figure, _output_path(Path(out), metric), note)


def plot_run(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    metric: str = M.EVAL_RETURN,
    x: str = M.STEP,
    note: str | None = AUTO_NOTE,
) -> Path | None:
    """The learning curve of one run (``metric``, plus the training return), ``curve.png`` by default.

    ``note`` as in :func:`plot_runs`. Returns the path written, or ``None`` with a warning when the
    run has neither ``metric`` nor training-return rows (a run stopped before its first iteration
    must not fail at the plot).
    """
    run_dir = Path(run_dir)
    # The training return beside the evaluation return: a run with no evaluation yet still has a curve.
    shown = [metric, M.TRAIN_RETURN] if metric == M.EVAL_RETURN else [metric]
    curves: dict[str, Curve] = {}
    for name in shown:
        try:
            curves[name] = read_curve(run_dir, name, x)
        except NoDataError:
            pass
    if not curves:
        what = " or ".join(shown)
        warnings.warn(f"plot_run: {run_dir} has no {what} rows yet; no curve written", stacklevel=2)
        return None

    episodes = _eval_episodes(run_dir)
    figure = _new_figure(1)
    ax = figure.axes[0]
    for i, (name, curve) in enumerate(curves.items()):
        primary = name == metric
        ax.plot(
            curve.x, curve.y, color=f"C{i}", label=metric_label(name, episodes),
            marker="o" if primary else None, markersize=3, alpha=1.0 if primary else 0.6,
            lw=1.5 if primary else 1.0,
        )
    key = next(iter(curves.values())).key
    seed = f", seed {key.seed}" if key.seed is not None else ""
    # Both returns share the axis: name what they have in common; the legend says which is which.
    ylabel = "episode return (undiscounted)" if len(curves) > 1 else metric_label(metric, episodes)
    _decorate(ax, f"{key.env}/{key.task}: {key.algo}{seed}", ylabel, x, legend_below=True)
    if note == AUTO_NOTE:
        note = note_for([key.env])
    return _save(figure, Path(out) if out is not None else run_dir / CURVE_FILE, note)


def _new_figure(n_panels: int) -> Figure:
    from matplotlib.figure import Figure

    ncols = min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    figure = Figure(figsize=(5.5 * ncols, 4.0 * nrows), layout="constrained")
    figure.subplots(nrows, ncols, squeeze=False)
    return figure


def _decorate(ax: Any, title: str, ylabel: str, x: str, legend_below: bool = False) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_title(title)
    ax.set_xlabel(metric_label(x))
    ax.set_ylabel(ylabel)
    if x == M.STEP:  # 200k, 1M rather than 200000, 1000000, which run together
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        ax.xaxis.set_major_formatter(FuncFormatter(compact_number))
    ax.grid(alpha=0.3)
    if legend_below:  # long labels: under the axes, where they hide no curve
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    else:
        ax.legend(fontsize="small")


def _output_path(out: Path, metric: str) -> Path:
    if out.suffix:
        return out
    return out / f"{metric.replace('/', '_')}.png"


def _save(figure: Figure, path: Path, note: str | None) -> Path:
    if note:
        # Below the axes, as a caption; bbox_inches="tight" grows the image to include it.
        figure.text(0.5, 0.0, note, ha="center", va="top", fontsize="small", style="italic", wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path
