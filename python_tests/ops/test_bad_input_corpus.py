"""The bad-input corpus (:mod:`bad_input_corpus`): every public op and raw op × wrong shape, dtype,
device, type, NaN/inf, empty, non-contiguous, stride-0 and out-of-range scalars.

The cases run in subprocesses, one per kernel group, each printing one result line per case as it
ends. When a subprocess dies (a crash in native code), the first case it did not report is re-run
alone in a fresh subprocess and the rest together in another, so a crash fails exactly the case
that caused it and no other.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import haml.ops

CORPUS_PATH = Path(__file__).with_name("bad_input_corpus.py")
_spec = importlib.util.spec_from_file_location("bad_input_corpus", CORPUS_PATH)
corpus = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = corpus  # dataclasses look their module up there
_spec.loader.exec_module(corpus)

TIMEOUT_S = 300


def _keys(group: str) -> list[str]:
    return [
        f"{op}/{case}"
        for op, (g, _) in corpus.OPS.items()
        if g == group and (haml.ops.BUILD_INFO or not op.startswith("torch."))
        for case in corpus.case_names(op)
    ]


def _run(group: str, only: list[str] = ()) -> tuple[dict[str, dict], subprocess.CompletedProcess]:
    proc = subprocess.run(
        [sys.executable, str(CORPUS_PATH), group, *only],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=dict(os.environ),
    )
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            results[record["case"]] = record
    return results, proc


_RESULTS: dict[str, dict[str, dict]] = {}


def group_results(group: str) -> dict[str, dict]:
    if group not in _RESULTS:
        results, _ = _run(group)
        pending = [k for k in _keys(group) if k not in results]
        while pending:
            # The process died before this case reported: run it alone, then the rest together.
            first, rest = pending[0], pending[1:]
            single, proc = _run(group, [first])
            results[first] = single.get(first) or {
                "case": first,
                "ok": False,
                "detail": f"the process died (exit {proc.returncode}) running this case alone: "
                f"{proc.stderr[-800:]}",
            }
            if rest:
                results.update(_run(group, rest)[0])
            pending = [k for k in rest if k not in results]
        _RESULTS[group] = results
    return _RESULTS[group]


CASES = [(group, key) for group in corpus.GROUPS for key in _keys(group)]


@pytest.mark.parametrize("group,key", CASES, ids=[key for _, key in CASES])
def test_bad_input(group, key):
    result = group_results(group)[key]
    assert result["ok"], result["detail"]
