"""``haml bench ops`` in quick mode, in-process: the JSON it writes and the timer under it."""

from __future__ import annotations

import copy
import importlib
import io
import json
import math
import pkgutil
import time

import pytest
import torch

from haml.bench import BenchUsageError, bench_ops, report
from haml.bench import ops as bench_cases
from haml.bench.ops import REGISTRY, Callables, Case, Options, Target, cases_for, run_case
from haml.bench.timing import (
    TimerSettings,
    format_seconds,
    measure,
    measure_interleaved,
    others_busy,
)
from haml.ops import has_native
from haml.ops._backend import has_native_class

_POLICY = {"policy": "halfcheetah 2x64", "N": 4000, "obs": 17, "actions": 6}
QUICK_SHAPES = {
    "gae": [{"T": 200, "B": 20}],
    "clip_surrogate": [{"N": 4000}],
    "layer_norm": [{"rows": 1000, "width": 64}],
    "fvp": [_POLICY],
    "fvp[recomputed]": [_POLICY],
    "fvp[torch.func]": [_POLICY],
    "trust_region_step": [_POLICY],
    "trust_region_step[recomputed]": [_POLICY],
    "value_gradient": [{"critic": "halfcheetah 3x128 LN", "N": 4000, "inputs": 17}],
}
"""The rows of a quick run: one per op (the trust-region kernels' registry entries give several)."""
KERNELS = {
    module.name for module in pkgutil.iter_modules(importlib.import_module("haml.ops").__path__)
    if module.ispkg
}
"""Every op package under haml/ops: each must have a benchmark entry (docs/DESIGN.md, item 5)."""
NATIVE_OPS = {"gae": "gae", "clip_surrogate": "clip_surrogate_fwd", "layer_norm": "layer_norm_fwd"}


def native_in_use(op: str) -> bool:
    if op in NATIVE_OPS:
        return has_native(NATIVE_OPS[op], "cpu")
    return has_native_class("FisherOperator")  # fvp rows and trust_region_step
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "nested" / "ops.json"
    document = bench_ops(quick=True, compile=False, out=out, show=False, progress=False)
    return document, out


def test_quick_run_writes_the_json_it_returns(quick_run):
    document, out = quick_run
    assert json.loads(out.read_text()) == json.loads(json.dumps(document))
    env = document["environment"]
    for key in ("torch", "haml", "haml_build_info", "num_threads", "python", "timestamp"):
        assert key in env
    assert env["device_names"]["cpu"]
    assert env["num_threads"] == torch.get_num_threads()


def test_every_op_and_quick_shape_is_measured(quick_run):
    document, _ = quick_run
    assert KERNELS == {"gae", "clip_surrogate", "fvp", "layer_norm", "line_search", "value_gradient"}
    assert KERNELS <= set(REGISTRY)
    measured = {}
    for case in document["cases"]:
        measured.setdefault(case["op"], []).append(case["shape"])
    assert measured == QUICK_SHAPES


def test_times_are_positive_and_ratios_follow_from_them(quick_run):
    document, _ = quick_run
    for case in document["cases"]:
        times, ratios = case["times"], case["ratios"]
        assert case["device"] == "cpu"
        assert times["reference"]["median"] > 0
        assert times["reference"]["iqr"] >= 0
        assert times["compiled"] is None and case["skipped"]["compiled"] == "--no-compile"
        if native_in_use(case["op"]):
            assert case["backend"] == "native"
            assert times["native"]["median"] > 0
            assert ratios["reference/native"] == pytest.approx(
                times["reference"]["median"] / times["native"]["median"]
            )
        else:
            assert times["native"] is None and case["skipped"]["native"]
            assert ratios["reference/native"] is None
        if case["op"] == "layer_norm":
            assert times["pytorch"]["median"] > 0
            if times["native"] is not None:
                assert ratios["pytorch/native"] == pytest.approx(
                    times["pytorch"]["median"] / times["native"]["median"]
                )
        if case["op"] in ("gae", "layer_norm"):
            assert times["floor"]["median"] > 0
            if times["native"] is not None:
                assert ratios["native/floor"] == pytest.approx(
                    times["native"]["median"] / times["floor"]["median"]
                )
        for target in case["targets"]:
            assert target["measured"] == ratios[target["ratio"]]


def test_table_names_every_column(tmp_path, capsys):
    bench_ops(ops="gae", quick=True, compile=False, out=tmp_path / "t.json", progress=False)
    table = capsys.readouterr().out
    for header in ("native", "reference", "ref/native", "compiled ref", "compiled/native",
                   "floor", "native/floor", "pytorch", "pytorch/native", "T=200, B=20", "skipped"):
        assert header in table


def test_full_case_table_and_compile_limit():
    cases = cases_for(list(REGISTRY), [CPU], Options.make(compile=True, compile_max_t=200))
    shapes = {(c.op, tuple(c.shape.values())): c for c in cases}
    policies = {
        ("halfcheetah 2x64", 4000, 17, 6), ("ant 3x128 LN", 4000, 113, 8),
        ("smac 2x64", 3200, 80, 10), ("smac 3x128 LN", 3200, 150, 20),
    }
    trust_region_ops = (
        "fvp", "fvp[recomputed]", "fvp[torch.func]", "trust_region_step",
        "trust_region_step[recomputed]",
    )
    assert set(shapes) == {
        ("gae", (200, 20)), ("gae", (1000, 1024)), ("gae", (128, 4096)),
        ("clip_surrogate", (4000,)), ("clip_surrogate", (65536,)),
        ("layer_norm", (1000, 64)), ("layer_norm", (8000, 64)), ("layer_norm", (1000, 256)),
    } | {(op, policy) for op in trust_region_ops for policy in policies} | {
        ("value_gradient", ("halfcheetah 3x128 LN", 4000, 17)),
        ("value_gradient", ("ant 3x128 LN", 4000, 113)),
        ("value_gradient", ("default 1x64 LN", 4000, 17)),
    }
    for policy in policies:
        assert shapes[("fvp", policy)].targets == (
            Target("reference/native", ">=", 1.5), Target("native/floor", "<=", 1.5)
        )
        assert shapes[("fvp[recomputed]", policy)].targets == (
            Target("reference/native", ">=", 4.0),
        )
        for step in ("trust_region_step", "trust_region_step[recomputed]"):
            assert shapes[(step, policy)].targets == (Target("reference/native", ">=", 3.0),)
    assert shapes[("gae", (200, 20))].compile_skip is None
    assert "T=1000" in shapes[("gae", (1000, 1024))].compile_skip
    assert shapes[("gae", (1000, 1024))].targets == (
        Target("reference/native", ">=", 20.0), Target("native/floor", "<=", 3.0)
    )
    assert shapes[("clip_surrogate", (65536,))].targets == (Target("reference/native", ">=", 3.0),)


def _toy_case(compile_fn) -> Case:
    x = torch.arange(1000.0)
    return Case(
        op="toy",
        shape={"N": 1000},
        device=CPU,
        build=lambda: Callables(
            reference=lambda: (x * 2).sum(), native=lambda: x.sum(), compile=compile_fn
        ),
        native_op="toy",
        targets=(Target("reference/native", ">=", 0.0),),
    )


def test_compiled_column_records_compile_time_and_steady_state():
    x = torch.arange(1000.0)

    def compile_fn():  # stands in for torch.compile: a first call that is slow, then fast ones
        return lambda: x.sum()

    record = run_case(_toy_case(compile_fn), Options.make(quick=True))
    assert record["compile"]["seconds"] >= 0
    assert record["times"]["compiled"]["median"] > 0
    assert record["ratios"]["compiled/native"] == pytest.approx(
        record["times"]["compiled"]["median"] / record["times"]["native"]["median"]
    )
    assert record["targets"][0]["met"] is True


def test_a_failing_compile_is_a_skip_reason_not_a_crash():
    def compile_fn():
        raise RuntimeError("no C++ compiler\nmore detail")

    record = run_case(_toy_case(compile_fn), Options.make(quick=True))
    assert record["times"]["compiled"] is None
    assert record["skipped"]["compiled"] == "torch.compile failed: RuntimeError: no C++ compiler"


def test_a_new_kernel_is_one_registry_entry(monkeypatch, tmp_path):
    monkeypatch.setitem(REGISTRY, "toy", lambda device, options: [_toy_case(None)])
    document = bench_ops(ops="toy", quick=True, out=tmp_path / "toy.json", show=False, progress=False)
    (case,) = document["cases"]
    assert case["op"] == "toy" and case["times"]["native"]["median"] > 0
    assert case["skipped"]["compiled"] == "no compiled variant"


def test_usage_errors():
    with pytest.raises(BenchUsageError, match="choose from gae, clip_surrogate"):
        bench_ops(ops="gae,nope", quick=True, show=False, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(BenchUsageError, match="CUDA is not available"):
            bench_ops(device="cuda", quick=True, show=False, progress=False)


def test_gae_floor_copies_the_input_bytes():
    inputs = bench_cases._gae_inputs(10, 3, CPU)
    floor = bench_cases._copy_floor(inputs)
    copied = floor()
    assert copied.dtype == torch.uint8 and copied.numel() == 10 * 3 * (3 * 4 + 2)


def test_measure_and_format():
    timing = measure(lambda: None, CPU, TimerSettings(min_time=0.01, min_blocks=4, max_time=1.0,
                                                      warmup_time=0.0, warmup_calls=2))
    assert timing.blocks >= 4 and timing.calls_per_block >= 1
    assert 0 < timing.median < 1e-3 and timing.iqr >= 0 and math.isfinite(timing.iqr)
    assert format_seconds(1.5) == "1.5 s"
    assert format_seconds(0.0123) == "12.3 ms"
    assert format_seconds(0.9997e-3) == "1000 µs"
    assert format_seconds(4.2e-8) == "42 ns"
    assert format_seconds(None) == "-"


def _spin(seconds):
    # Busy-waits on the wall clock: the same wall time however loaded the machine is.
    def run():
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    return run


def test_interleaved_blocks_alternate_and_each_callable_gets_its_own_timing():
    calls = []

    def logged(name, seconds):
        spin = _spin(seconds)

        def run():
            calls.append(name)
            spin()

        return run

    settings = TimerSettings(min_time=0.05, min_blocks=5, max_time=2.0, warmup_time=0.0,
                             warmup_calls=2)
    timings = measure_interleaved({"fast": logged("fast", 2e-4), "slow": logged("slow", 1e-3)},
                                  CPU, settings)
    assert set(timings) == {"fast", "slow"}
    for timing in timings.values():
        assert timing.blocks >= 5 and timing.other_load == timings["fast"].other_load
    assert 3.0 < timings["slow"].median / timings["fast"].median < 7.0
    # After the warm-ups the blocks take turns: the first measured call of each callable comes
    # before the last of the other.
    timed = sum(t.blocks * t.calls_per_block for t in timings.values())
    measured = calls[len(calls) - timed:]
    first = {name: measured.index(name) for name in ("fast", "slow")}
    last = {name: len(measured) - 1 - measured[::-1].index(name) for name in ("fast", "slow")}
    assert first["fast"] < last["slow"] and first["slow"] < last["fast"]
    with pytest.raises(ValueError, match="no callable"):
        measure_interleaved({}, CPU, settings)


def test_timings_disturbed_by_other_processes_are_marked(quick_run):
    document, _ = quick_run
    record = copy.deepcopy(document["cases"][0])
    record["times"]["reference"]["other_load"] = 0.5
    record["times"]["native"] = None
    record["skipped"]["native"] = "pretend: not built"
    out = io.StringIO()
    report.print_table([record], document["environment"], file=out)
    text = out.getvalue()
    assert format_seconds(record["times"]["reference"]["median"]) + "*" in text
    assert "other processes used >= 20% of the CPUs" in text and "reference (50%)" in text
    assert "n/a" in text and "pretend: not built" in text
    assert others_busy(0.01) is None or 0.0 <= others_busy(0.01) <= 1.0
