"""The fixed metric names of a training run, one documented constant each.

Every number a run logs has its name here, so that runners, TensorBoard, ``metrics.csv`` and
``haml plot`` agree on one spelling. The names are grouped by their prefix (TensorBoard shows each
prefix as a section):

- ``charts/*``: returns, episode lengths and throughput, the curves a reader looks at first;
- ``losses/*``: the objectives and diagnostics of the critic and of the actors' updates;
- ``ha/*``: the heterogeneous-agent sequential update: the KL each agent moved, the statistics of
  the factor M that weighted its advantages, HAPPO's clipping and HATRPO's line search.

Per-agent values. Metrics marked ``per_agent`` may also be logged once per agent under
:func:`agent_metric` (``"ha/kl/agent_0"``). TensorBoard receives every per-agent value; the CSV
has one column per metric, never per agent, so that its header is the same for every task: the
column holds the value logged under the plain name or, if only per-agent values were logged in
that call, their **mean across agents** (see :func:`csv_row`).

Environment-specific statistics (an adapter's ``episode_metrics()``) are logged under
``env/<name>``: TensorBoard only, never a CSV column.

The CSV header is :data:`CSV_COLUMNS`: ``step``, ``wall_time``, then every metric of this module
in the order it is defined below. A cell is empty when that metric was not logged in that row
(for example the evaluation return, which is measured every few iterations).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

__all__ = [
    "LEARNER_METRICS",
    "METRICS",
    "PER_AGENT",
    "CSV_COLUMNS",
    "csv_cell_value",
    "STEP",
    "WALL_TIME",
    "ENV_PREFIX",
    "describe",
    "agent_metric",
    "parse_agent_metric",
    "validate_name",
    "csv_row",
    # charts/*
    "TRAIN_RETURN",
    "TRAIN_EPISODE_LENGTH",
    "EVAL_RETURN",
    "EVAL_RETURN_STD",
    "EVAL_EPISODE_LENGTH",
    "EVAL_WIN_RATE",
    "TRAIN_WIN_RATE",
    "STEPS_PER_SECOND",
    "ACTOR_LR",
    "CRITIC_LR",
    # losses/*
    "POLICY_LOSS",
    "VALUE_LOSS",
    "ENTROPY",
    "EXPLAINED_VARIANCE",
    "ACTOR_GRAD_NORM",
    "CRITIC_GRAD_NORM",
    "ALPHA",
    # ha/*
    "KL",
    "FACTOR_MEAN",
    "FACTOR_STD",
    "FACTOR_MAX",
    "CLIP_FRACTION",
    "RATIO_MEAN",
    "STEP_FRACTION",
    "ACCEPTED",
    "IMPROVEMENT",
]

METRICS: dict[str, str] = {}
"""Every fixed metric name -> its one-line description, in CSV column order."""

PER_AGENT: frozenset[str]
"""The metrics that may also be logged per agent with :func:`agent_metric`."""

_per_agent: set[str] = set()


def _metric(name: str, doc: str, *, per_agent: bool = False) -> str:
    """Register ``name`` with its description; returns the name, so a constant reads as its value."""
    if name in METRICS:
        raise RuntimeError(f"metric {name!r} defined twice")
    METRICS[name] = doc
    if per_agent:
        _per_agent.add(name)
    return name


# ---------------------------------------------------------------------------------------------
# charts/*: what the run achieves and how fast

TRAIN_RETURN = _metric(
    "charts/train_return",
    "Mean undiscounted team return of the training episodes that ended since the previous row.",
)
TRAIN_EPISODE_LENGTH = _metric(
    "charts/train_episode_length",
    "Mean length (env steps) of the training episodes that ended since the previous row.",
)
TRAIN_WIN_RATE = _metric(
    "charts/train_win_rate",
    "Fraction of the training episodes that ended since the previous row and were won, on tasks "
    "that have a winner (StarCraft-style); else empty.",
)
EVAL_RETURN = _metric(
    "charts/eval_return",
    "Mean undiscounted team return over the evaluation episodes (deterministic policies).",
)
EVAL_RETURN_STD = _metric(
    "charts/eval_return_std",
    "Standard deviation of the team return across the evaluation episodes.",
)
EVAL_EPISODE_LENGTH = _metric(
    "charts/eval_episode_length",
    "Mean length (env steps) of the evaluation episodes.",
)
EVAL_WIN_RATE = _metric(
    "charts/eval_win_rate",
    "Fraction of evaluation episodes won, on tasks that have a winner (StarCraft-style); else empty.",
)
STEPS_PER_SECOND = _metric(
    "charts/steps_per_second",
    "Environment steps (summed over parallel envs) per wall-clock second since the previous row.",
)
ACTOR_LR = _metric(
    "charts/actor_lr",
    "Learning rate of the actors' optimisers after any schedule.",
)
CRITIC_LR = _metric(
    "charts/critic_lr",
    "Learning rate of the critic's optimiser after any schedule.",
)

# ---------------------------------------------------------------------------------------------
# losses/*: the objectives of this iteration's update

POLICY_LOSS = _metric(
    "losses/policy_loss",
    "Actor objective being minimised (factor-weighted surrogate; -Q for deterministic policies), "
    "mean over epochs and minibatches (or over the updates of an off-policy round).",
    per_agent=True,
)
VALUE_LOSS = _metric(
    "losses/value_loss",
    "Critic loss (V or Q), mean over epochs and minibatches.",
)
ENTROPY = _metric(
    "losses/entropy",
    "Mean entropy of the action distribution over the batch: after the update (on-policy), or "
    "at the actor step's samples, before the step (HASAC).",
    per_agent=True,
)
EXPLAINED_VARIANCE = _metric(
    "losses/explained_variance",
    "1 - Var[returns - V(s)] / Var[returns] of the critic's predictions on this batch.",
)
ACTOR_GRAD_NORM = _metric(
    "losses/actor_grad_norm",
    "Gradient norm of the actor before clipping, mean over its optimiser steps.",
    per_agent=True,
)
Q_MEAN = _metric(
    "losses/q_mean",
    "Off-policy: mean Q(s, a) of the sampled transitions (buffer actions), mean over the round's "
    "updates.",
)
CRITIC_GRAD_NORM = _metric(
    "losses/critic_grad_norm",
    "Gradient norm of the critic before clipping, mean over its optimiser steps.",
)
ALPHA = _metric(
    "losses/alpha",
    "Maximum-entropy algorithms (HASAC): the agent's temperature alpha after its update, mean "
    "over the round's updates.",
    per_agent=True,
)

# ---------------------------------------------------------------------------------------------
# ha/*: the sequential heterogeneous-agent update

KL = _metric(
    "ha/kl",
    "Mean KL(pi_old || pi_new) of the agent's policy over the batch after its update.",
    per_agent=True,
)
FACTOR_MEAN = _metric(
    "ha/factor_mean",
    "Mean of the factor M (product of earlier agents' ratios) weighting the agent's advantages.",
    per_agent=True,
)
FACTOR_STD = _metric(
    "ha/factor_std",
    "Standard deviation of the factor M over the batch (0 for the first agent of the order).",
    per_agent=True,
)
FACTOR_MAX = _metric(
    "ha/factor_max",
    "Largest factor M over the batch: M is never clipped, so this shows it blowing up.",
    per_agent=True,
)
CLIP_FRACTION = _metric(
    "ha/clip_fraction",
    "Fraction of samples whose ratio lay outside [1 - clip, 1 + clip] (HAPPO).",
    per_agent=True,
)
RATIO_MEAN = _metric(
    "ha/ratio_mean",
    "Mean ratio pi_new / pi_old of the agent over the batch after its update.",
    per_agent=True,
)
STEP_FRACTION = _metric(
    "ha/step_fraction",
    "Fraction alpha^j of the full trust-region step that the line search accepted; 0 if none (HATRPO).",
    per_agent=True,
)
ACCEPTED = _metric(
    "ha/accepted",
    "1 if HATRPO's line search accepted a step for the agent, else 0 (the CSV mean: share accepted).",
    per_agent=True,
)
IMPROVEMENT = _metric(
    "ha/improvement",
    "Surrogate improvement of the accepted trust-region step (HATRPO).",
    per_agent=True,
)

LEARNER_METRICS: dict[str, str] = {
    "policy_loss": POLICY_LOSS,
    "entropy": ENTROPY,
    "grad_norm": ACTOR_GRAD_NORM,
    "clip_fraction": CLIP_FRACTION,
    "approx_kl": KL,
    "kl": KL,
    "ratio_mean": RATIO_MEAN,
    "step_fraction": STEP_FRACTION,
    "accepted": ACCEPTED,
    "improvement": IMPROVEMENT,
}
"""An actor learner's own metric keys → the fixed names here (learners know nothing of logging;
the runners rename what they report)."""

PER_AGENT = frozenset(_per_agent)
del _per_agent

# ---------------------------------------------------------------------------------------------
# The CSV layout

STEP = "step"
"""CSV column: environment steps so far, summed over parallel envs (the x axis of every curve)."""
WALL_TIME = "wall_time"
"""CSV column: Unix time (seconds) at which the row was written."""

CSV_COLUMNS: tuple[str, ...] = (STEP, WALL_TIME, *METRICS)
"""The fixed header of ``metrics.csv``."""

ENV_PREFIX = "env/"
"""Prefix of environment-specific statistics: accepted by the logger, TensorBoard only."""

_AGENT_SUFFIX = re.compile(r"^(?P<name>.+)/agent_(?P<index>\d+)$")


def describe(name: str) -> str:
    """The one-line description of a fixed metric (per-agent names describe their metric)."""
    parsed = parse_agent_metric(name)
    base = parsed[0] if parsed is not None else name
    if base not in METRICS:
        raise KeyError(f"unknown metric {name!r}; the fixed metrics are {sorted(METRICS)}")
    return METRICS[base]


def agent_metric(name: str, agent: int) -> str:
    """The name under which agent ``agent`` logs ``name``: ``"ha/kl"``, 2 -> ``"ha/kl/agent_2"``."""
    if name not in PER_AGENT:
        raise ValueError(
            f"agent_metric: {name!r} has no per-agent variant; per-agent metrics are {sorted(PER_AGENT)}"
        )
    if isinstance(agent, bool) or not isinstance(agent, int) or agent < 0:
        raise ValueError(f"agent_metric: 'agent' must be a non-negative int, got {agent!r}")
    return f"{name}/agent_{agent}"


def parse_agent_metric(key: str) -> tuple[str, int] | None:
    """``"ha/kl/agent_2"`` -> ``("ha/kl", 2)``; ``None`` for a name that is not per-agent."""
    match = _AGENT_SUFFIX.match(key)
    if match is None or match["name"] not in PER_AGENT:
        return None
    return match["name"], int(match["index"])


def validate_name(key: str) -> None:
    """Raise ``ValueError`` unless ``key`` is a fixed metric, a per-agent variant or ``env/...``."""
    if key in METRICS or parse_agent_metric(key) is not None:
        return
    if key.startswith(ENV_PREFIX) and len(key) > len(ENV_PREFIX):
        return
    raise ValueError(
        f"unknown metric name {key!r}: use a name from haml.logging.metrics "
        f"({', '.join(METRICS)}), agent_metric(name, i) for one of {sorted(PER_AGENT)}, "
        f"or '{ENV_PREFIX}<name>' for an environment-specific statistic"
    )


def csv_row(step: int, wall_time: float, values: Mapping[str, float]) -> dict[str, float | int | str]:
    """One ``metrics.csv`` row (keyed by :data:`CSV_COLUMNS`) from one call's float ``values``.

    A metric's cell is its plain value when logged, otherwise the mean of its per-agent values
    (agents that logged NaN make the mean NaN: a NaN must stay visible), otherwise empty.
    ``env/*`` values are not CSV columns.
    """
    per_agent: dict[str, list[float]] = {}
    for key, value in values.items():
        parsed = parse_agent_metric(key)
        if parsed is not None:
            per_agent.setdefault(parsed[0], []).append(value)

    row: dict[str, float | int | str] = {STEP: step, WALL_TIME: wall_time}
    for name in METRICS:
        if name in values:
            row[name] = values[name]
        elif name in per_agent:
            agents = per_agent[name]
            row[name] = sum(agents) / len(agents)
        else:
            row[name] = ""
    return row


def csv_cell_value(cell: str | None) -> float:
    """A ``metrics.csv`` cell read back as a float: NaN where the cell is empty (the metric was not
    logged in that row), missing, or not a number."""
    try:
        return float(cell) if cell else math.nan
    except ValueError:
        return math.nan
