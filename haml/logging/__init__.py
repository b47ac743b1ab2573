"""What a training run writes: fixed metric names (:mod:`.metrics`), the run logger
(:mod:`.logger`: config.yaml, metrics.csv, TensorBoard, progress), learning curves
(:mod:`.plot`) and where runs ended (:mod:`.summary`). matplotlib, TensorBoard and rich are
imported only when used."""

from haml.logging import metrics
from haml.logging.logger import (
    CONFIG_FILE,
    METRICS_FILE,
    RunLogger,
)
from haml.logging.metrics import agent_metric
from haml.logging.plot import (
    CURVE_FILE,
    MAMUJOCO_NOTE,
    NoDataError,
    aggregate_seeds,
    find_run_dirs,
    plot_run,
    plot_runs,
)
from haml.logging.summary import final_values, format_table

__all__ = [
    "CONFIG_FILE",
    "CURVE_FILE",
    "MAMUJOCO_NOTE",
    "METRICS_FILE",
    "NoDataError",
    "RunLogger",
    "agent_metric",
    "aggregate_seeds",
    "final_values",
    "find_run_dirs",
    "format_table",
    "metrics",
    "plot_run",
    "plot_runs",
]
