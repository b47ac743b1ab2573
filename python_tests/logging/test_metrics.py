"""haml.logging.metrics: the fixed names, the per-agent variants, the CSV row they make."""

from __future__ import annotations

import math

import pytest

from haml.logging import metrics as M


def test_csv_header_is_step_wall_time_then_every_metric_in_order():
    assert M.CSV_COLUMNS[:2] == ("step", "wall_time")
    assert M.CSV_COLUMNS[2:] == tuple(M.METRICS)
    assert len(set(M.CSV_COLUMNS)) == len(M.CSV_COLUMNS)


def test_the_names_the_issue_asks_for_are_columns():
    for name in (
        "charts/train_return", "charts/eval_return", "charts/steps_per_second",
        "losses/policy_loss", "losses/value_loss", "losses/entropy",
        "ha/kl", "ha/factor_mean", "ha/factor_std", "ha/clip_fraction", "ha/step_fraction", "ha/accepted",
    ):
        assert name in M.CSV_COLUMNS


def test_every_metric_is_grouped_and_documented_in_one_line():
    for name, doc in M.METRICS.items():
        assert name.split("/")[0] in {"charts", "losses", "ha"}, name
        assert doc and "\n" not in doc, name
    assert M.PER_AGENT <= set(M.METRICS)
    assert M.describe(M.agent_metric(M.KL, 3)) == M.METRICS[M.KL]


def test_agent_metric_round_trips_and_rejects_what_has_no_agent_variant():
    assert M.agent_metric(M.KL, 2) == "ha/kl/agent_2"
    assert M.parse_agent_metric("ha/kl/agent_2") == ("ha/kl", 2)
    assert M.parse_agent_metric("ha/kl") is None
    assert M.parse_agent_metric("charts/eval_return/agent_0") is None  # not a per-agent metric
    with pytest.raises(ValueError, match="no per-agent variant"):
        M.agent_metric(M.EVAL_RETURN, 0)
    with pytest.raises(ValueError, match="'agent'"):
        M.agent_metric(M.KL, -1)


def test_validate_name_accepts_fixed_agent_and_env_names_only():
    M.validate_name(M.VALUE_LOSS)
    M.validate_name("ha/factor_mean/agent_0")
    M.validate_name("env/win")
    for bad in ("charts/eval_retrun", "env/", "kl", "ha/kl/agent_x"):
        with pytest.raises(ValueError, match="unknown metric name") as err:
            M.validate_name(bad)
        assert "charts/eval_return" in str(err.value)  # lists the valid names


def test_csv_row_takes_the_plain_value_else_the_mean_across_agents_else_empty():
    values = {
        M.VALUE_LOSS: 2.0,
        M.agent_metric(M.KL, 0): 0.1,
        M.agent_metric(M.KL, 1): 0.3,
        M.POLICY_LOSS: -1.0,  # the plain name wins over per-agent values
        M.agent_metric(M.POLICY_LOSS, 0): 5.0,
        M.agent_metric(M.ENTROPY, 0): math.nan,
        M.agent_metric(M.ENTROPY, 1): 1.0,
        "env/win": 1.0,
    }
    row = M.csv_row(10, 123.5, values)
    assert list(row) == list(M.CSV_COLUMNS)
    assert row["step"] == 10 and row["wall_time"] == 123.5
    assert row[M.VALUE_LOSS] == 2.0
    assert row[M.KL] == pytest.approx(0.2)
    assert row[M.POLICY_LOSS] == -1.0
    assert math.isnan(row[M.ENTROPY])  # a NaN agent stays visible
    assert row[M.EVAL_RETURN] == ""
    assert "env/win" not in row
