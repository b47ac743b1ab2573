"""The cases of ``haml bench ops``: each op's native kernel against its reference, measured in one run.

Every case times up to four callables on the same inputs:

- **native**: the public façade (``haml.ops.gae``, ``haml.ops.clipped_surrogate``), which dispatches
  to ``torch.ops.haml.*``; "n/a" where the extension has no kernel for the device;
- **reference**: ``haml.ops.<op>.reference``, the pure-PyTorch specification, run eagerly;
- **compiled**: ``torch.compile`` of that reference (static shapes, compiled afresh per case; the
  compile time is reported apart and only steady-state calls are timed);
- **floor** (where it applies): a bandwidth floor, e.g. one copy of the op's inputs;
- **pytorch** (where it applies): PyTorch's own fused kernel of the same function, which the native
  one replaces (``torch.nn.functional.layer_norm`` for ``layer_norm``).

The native, reference and floor columns of a case are timed together, their blocks interleaved
(:func:`haml.bench.timing.measure_interleaved`), so that the machine's drift does not enter their
ratios; the compiled column is timed after compiling. A timing taken while other processes load
the CPUs is measured again (:data:`QUIET`) and, if the load persists, marked in the table
(:data:`BUSY`).

A kernel joins the benchmark with one more entry in :data:`REGISTRY`: a function from
``(device, options)`` to its list of :class:`Case`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

import haml.ops
from haml.bench.timing import (
    QUICK,
    TimerSettings,
    Timing,
    format_seconds,
    measure_interleaved,
    synchronizer,
)
from haml.ops import _backend

__all__ = [
    "Options",
    "Target",
    "Callables",
    "Case",
    "REGISTRY",
    "QUIET",
    "BUSY",
    "cases_for",
    "disturbed",
    "warm_up_allocator",
    "run_case",
    "run_ops",
]


@dataclass(frozen=True)
class Options:
    """What ``haml bench ops`` measures and for how long."""

    quick: bool = False
    """Only the smallest shape of each op, with short timings (for tests and smoke runs)."""
    compile: bool = True
    """Also time ``torch.compile`` of each reference."""
    compile_max_t: int = 200
    """GAE's reference is a Python loop over T that ``torch.compile`` unrolls: compile it up to this T."""
    timer: TimerSettings = field(default_factory=TimerSettings)
    retries: int = 2
    """Measure again (up to this many times) while other processes use the CPUs, see :data:`QUIET`."""
    allocator_warmup: bool = True
    """Before each case, put the C allocator in a long-running process's state: see
    :func:`warm_up_allocator`."""
    isa_levels: bool = False
    """Also time the native CPU kernel at every instruction-set level this CPU runs
    (``haml.ops.supported_cpu_isas``), interleaved with the rest."""

    @classmethod
    def make(
        cls,
        quick: bool = False,
        compile: bool = True,
        compile_max_t: int = 200,
        allocator_warmup: bool = True,
        isa_levels: bool = False,
    ) -> Options:
        timer, retries = (QUICK, 0) if quick else (TimerSettings(), 2)
        return cls(quick, compile, compile_max_t, timer, retries, allocator_warmup, isa_levels)


QUIET = 0.1
"""A timing during which other processes used less than this share of the CPUs is kept as is."""
BUSY = 0.2
"""A timing during which other processes used at least this share is marked in the table."""


@dataclass(frozen=True)
class Target:
    """A stated performance goal for one ratio of a case, e.g. reference/native >= 100."""

    ratio: str
    """A key of the case's ratios: ``reference/native``, ``compiled/native`` or ``native/floor``."""
    relation: str
    """``>=`` or ``<=``."""
    bound: float

    def check(self, ratios: dict[str, float | None]) -> dict[str, Any]:
        measured = ratios.get(self.ratio)
        met = None
        if measured is not None:
            met = measured >= self.bound if self.relation == ">=" else measured <= self.bound
        return {
            "ratio": self.ratio,
            "relation": self.relation,
            "bound": self.bound,
            "measured": measured,
            "met": met,
        }


@dataclass
class Callables:
    """The zero-argument callables of one case, closed over inputs already on the device."""

    reference: Callable[[], object]
    native: Callable[[], object] | None = None
    compile: Callable[[], Callable[[], object]] | None = None
    """Returns a steady-state closure around ``torch.compile(reference)``; its first call compiles."""
    floor: Callable[[], object] | None = None
    pytorch: Callable[[], object] | None = None


@dataclass(frozen=True)
class Case:
    """One op at one shape on one device. ``build`` allocates the inputs just before timing."""

    op: str
    shape: dict[str, int]
    device: torch.device
    build: Callable[[], Callables]
    native_op: str
    """The dispatcher op (``haml::<native_op>``) that the façade calls: what ``has_native`` checks."""
    compile_skip: str | None = None
    """Why the compiled reference is not timed (None: it is)."""
    floor: str | None = None
    """What the floor column measures (None: no floor for this op)."""
    targets: tuple[Target, ...] = ()

    @property
    def label(self) -> str:
        return ", ".join(f"{name}={size}" for name, size in self.shape.items())


def compile_skip_reason(options: Options, why_not: str | None = None) -> str | None:
    """A case's ``compile_skip``: ``--no-compile`` when compiling is off, else ``why_not`` (None:
    the reference is compiled and timed)."""
    return "--no-compile" if not options.compile else why_not


def _reference(kernel: str) -> Any:
    # haml.ops.gae is the function (re-exported), so the module is reached by its import path.
    return importlib.import_module(f"haml.ops.{kernel}.reference")


def _native_skip(native_op: str, device: torch.device) -> str | None:
    """None if the façade runs ``native_op`` (an op, or a class of torch.classes.haml) natively on
    ``device``, else why not."""
    if _backend.has_native(native_op, device) or _backend.has_native_class(native_op):
        return None
    if _backend.BUILD_INFO is None:
        return _backend.UNAVAILABLE_REASON or "haml._C is not loaded"
    built = ", ".join(_backend.BUILD_INFO.get("devices", []))
    return f"haml._C has no {device.type.upper()} kernel for haml::{native_op} (built for: {built})"


def _generator(seed: int) -> torch.Generator:
    # Inputs are drawn on the CPU and moved, so every device benchmarks the same numbers.
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# GAE


GAE_SHAPES = ((200, 20), (1000, 1024), (128, 4096))
"""(T, B): the papers' default rollout (T=200 steps of 20 environments), then two large batches."""
GAE_SHAPES_CUDA = ((1000, 4096),)
GAE_TARGETS: dict[tuple[str, int, int], tuple[Target, ...]] = {
    ("cpu", 200, 20): (Target("reference/native", ">=", 100.0),),
    ("cpu", 1000, 1024): (
        Target("reference/native", ">=", 20.0),
        Target("native/floor", "<=", 3.0),
    ),
    ("cuda", 1000, 4096): (Target("reference/native", ">=", 100.0),),
}
GAMMA, LAM = 0.99, 0.95
TERMINATION_RATE = TRUNCATION_RATE = 1 / 400
"""Per-step probabilities: an episode ends about every 200 steps, half by a time limit."""


def _gae_inputs(T: int, B: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    gen = _generator(T * 100_003 + B)
    rewards = torch.randn(T, B, generator=gen)
    values = torch.randn(T, B, generator=gen)
    next_values = torch.randn(T, B, generator=gen)
    terminated = torch.rand(T, B, generator=gen) < TERMINATION_RATE
    truncated = torch.rand(T, B, generator=gen) < TRUNCATION_RATE
    return tuple(x.to(device) for x in (rewards, values, next_values, terminated, truncated))


def _copy_floor(inputs: Sequence[torch.Tensor]) -> Callable[[], object]:
    """One ``copy_`` of as many bytes as ``inputs`` hold, into a preallocated buffer: one read and
    one write of every input byte, the least any kernel that reads them all must move."""
    source = torch.cat([x.contiguous().reshape(-1).view(torch.uint8) for x in inputs])
    destination = torch.empty_like(source)
    return lambda: destination.copy_(source)


def gae_cases(device: torch.device, options: Options) -> list[Case]:
    shapes = GAE_SHAPES[:1] if options.quick else GAE_SHAPES
    if device.type == "cuda" and not options.quick:
        shapes = shapes + GAE_SHAPES_CUDA
    reference = _reference("gae")
    native_skip = _native_skip("gae", device)
    cases = []
    for T, B in shapes:

        def build(T: int = T, B: int = B) -> Callables:
            inputs = _gae_inputs(T, B, device)
            args = (*inputs, GAMMA, LAM)

            def compile_reference() -> Callable[[], object]:
                compiled = torch.compile(reference.gae, dynamic=False)
                return lambda: compiled(*args)

            return Callables(
                reference=lambda: reference.gae(*args),
                native=None if native_skip else (lambda: haml.ops.gae(*args)),
                compile=compile_reference,
                floor=_copy_floor(inputs),
            )

        too_long = None
        if T > options.compile_max_t:
            too_long = (
                f"torch.compile unrolls the reference's loop over T; T={T} > --compile-max-t="
                f"{options.compile_max_t} would take minutes to compile"
            )
        n_bytes = T * B * (3 * 4 + 2 * 1)  # three float32 arrays, two bool arrays
        cases.append(
            Case(
                op="gae",
                shape={"T": T, "B": B},
                device=device,
                build=build,
                native_op="gae",
                compile_skip=compile_skip_reason(options, too_long),
                floor=f"one copy_ of the 5 inputs' {n_bytes / 1e6:.3g} MB",
                targets=GAE_TARGETS.get((device.type, T, B), ()),
            )
        )
    return cases


# ----------------------------------------------------------------------------------------------
# Clipped surrogate


SURROGATE_SIZES = (4000, 65536)
"""N samples of one agent's minibatch: a small HAPPO minibatch, then a large one."""
SURROGATE_TARGETS: dict[tuple[str, int], tuple[Target, ...]] = {
    ("cpu", 65536): (Target("reference/native", ">=", 3.0),),
}
CLIP, ENTROPY_COEF = 0.2, 0.01
MASK_ACTIVE_RATE = 0.9


def _surrogate_inputs(N: int, device: torch.device) -> dict[str, torch.Tensor]:
    gen = _generator(N)
    logp_old = -torch.rand(N, generator=gen) * 3.0
    # A policy a few epochs into its update: ratios spread enough that some get clipped.
    logp_new = logp_old + 0.15 * torch.randn(N, generator=gen)
    inputs = {
        "logp_new": logp_new,
        "logp_old": logp_old,
        "advantages": torch.randn(N, generator=gen),
        "factor": torch.exp(0.1 * torch.randn(N, generator=gen)),
        "mask": (torch.rand(N, generator=gen) < MASK_ACTIVE_RATE).float(),
        "entropy": torch.rand(N, generator=gen) + 0.5,
    }
    inputs = {name: x.to(device) for name, x in inputs.items()}
    inputs["logp_new"].requires_grad_(True)
    inputs["entropy"].requires_grad_(True)
    return inputs


def _forward_backward(fn: Callable[..., Any], inputs: dict[str, torch.Tensor]) -> Callable[[], object]:
    leaves = (inputs["logp_new"], inputs["entropy"])

    def step() -> object:
        for leaf in leaves:
            leaf.grad = None
        out = fn(
            inputs["logp_new"],
            inputs["logp_old"],
            inputs["advantages"],
            CLIP,
            inputs["factor"],
            inputs["mask"],
            inputs["entropy"],
            ENTROPY_COEF,
        )
        out.loss.backward()
        return out

    return step


def clip_surrogate_cases(device: torch.device, options: Options) -> list[Case]:
    sizes = SURROGATE_SIZES[:1] if options.quick else SURROGATE_SIZES
    reference = _reference("clip_surrogate")
    native_skip = _native_skip("clip_surrogate_fwd", device)
    cases = []
    for N in sizes:

        def build(N: int = N) -> Callables:
            inputs = _surrogate_inputs(N, device)

            def compile_reference() -> Callable[[], object]:
                compiled = torch.compile(reference.clipped_surrogate, dynamic=False)
                return _forward_backward(compiled, inputs)

            return Callables(
                reference=_forward_backward(reference.clipped_surrogate, inputs),
                native=None if native_skip else _forward_backward(haml.ops.clipped_surrogate, inputs),
                compile=compile_reference,
            )

        cases.append(
            Case(
                op="clip_surrogate",
                shape={"N": N},
                device=device,
                build=build,
                native_op="clip_surrogate_fwd",
                compile_skip=compile_skip_reason(options),
                targets=SURROGATE_TARGETS.get((device.type, N), ()),
            )
        )
    return cases


# ----------------------------------------------------------------------------------------------
# LayerNorm


LAYER_NORM_SHAPES = ((1000, 64), (8000, 64), (1000, 256))
"""(rows, width): a [64] network's hidden layer at batch 1000; the same at each of 8 candidate
actions (a discrete HASAC critic at SMAX 3m's sizes); a [256] layer at batch 1000."""
LAYER_NORM_TARGETS: dict[tuple[str, int, int], tuple[Target, ...]] = {
    ("cpu", 8000, 64): (Target("pytorch/native", ">=", 2.0),),
}
"""The native CPU forward at least twice PyTorch's at SMAX's critic sizes (the reason it exists)."""


def layer_norm_cases(device: torch.device, options: Options) -> list[Case]:
    shapes = LAYER_NORM_SHAPES[:1] if options.quick else LAYER_NORM_SHAPES
    reference = _reference("layer_norm")
    native_skip = _native_skip("layer_norm_fwd", device)
    cases = []
    for rows, width in shapes:

        def build(rows: int = rows, width: int = width) -> Callables:
            gen = _generator(7)
            x, weight, bias = (torch.randn(*shape, generator=gen).to(device)
                               for shape in ((rows, width), (width,), (width,)))
            x = torch.relu(x)  # as the networks normalise it: after the activation

            def compile_reference() -> Callable[[], object]:
                compiled = torch.compile(reference.layer_norm, dynamic=False)
                return lambda: compiled(x, weight, bias)

            return Callables(
                reference=lambda: reference.layer_norm(x, weight, bias),
                native=None if native_skip else (lambda: haml.ops.layer_norm(x, weight, bias)),
                compile=compile_reference,
                floor=_copy_floor((x,)),
                pytorch=lambda: torch.nn.functional.layer_norm(x, (width,), weight, bias),
            )

        cases.append(
            Case(
                op="layer_norm",
                shape={"rows": rows, "width": width},
                device=device,
                build=build,
                native_op="layer_norm_fwd",
                compile_skip=compile_skip_reason(options),
                floor=f"one copy_ of the input's {rows * width * 4 / 1e6:.3g} MB",
                targets=LAYER_NORM_TARGETS.get((device.type, rows, width), ()),
            )
        )
    return cases


# ----------------------------------------------------------------------------------------------
# Registry and runner


CaseFactory = Callable[[torch.device, Options], list[Case]]

def _trust_region_factories() -> dict[str, CaseFactory]:
    from haml.bench import fvp  # imports haml.models (gymnasium): only when registered here

    return {"fvp": fvp.fvp_cases, "line_search": fvp.trust_region_cases,
            "value_gradient": fvp.value_gradient_cases}


REGISTRY: dict[str, CaseFactory] = {
    "gae": gae_cases,
    "clip_surrogate": clip_surrogate_cases,
    "layer_norm": layer_norm_cases,
    **_trust_region_factories(),
}
"""Kernel name (as in ``csrc/<k>`` and ``haml/ops/<k>``) -> the cases that benchmark it."""


def cases_for(ops: Sequence[str], devices: Sequence[torch.device], options: Options) -> list[Case]:
    unknown = [op for op in ops if op not in REGISTRY]
    if unknown:
        raise ValueError(
            f"unknown op(s) {', '.join(unknown)}; choose from {', '.join(REGISTRY)}"
        )
    return [case for device in devices for op in ops for case in REGISTRY[op](device, options)]


def _ratio(numerator: Timing | None, denominator: Timing | None) -> float | None:
    if numerator is None or denominator is None:
        return None
    return numerator.median / denominator.median


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _compile_and_time(
    case: Case, fns: Callables, options: Options, log: Callable[[str], None]
) -> tuple[Timing | None, dict[str, Any] | None, str | None]:
    """(steady-state timing, compile info, skip reason) of the compiled reference."""
    if case.compile_skip is not None or fns.compile is None:
        return None, None, case.compile_skip or "no compiled variant"
    from torch._dynamo.utils import counters

    log(f"  compiling the {case.op} reference for {case.label} on {case.device.type} ...")
    torch._dynamo.reset()  # each case compiles afresh: its compile time is its own
    hits_before = counters["inductor"]["fxgraph_cache_hit"]
    misses_before = counters["inductor"]["fxgraph_cache_miss"]
    sync = synchronizer(case.device)
    start = time.perf_counter()
    try:
        compiled = fns.compile()
        compiled()  # the first call traces and compiles
        sync()
    except Exception as err:  # a machine without a working compiler toolchain, for example
        return None, None, f"torch.compile failed: {_first_line(err)}"
    seconds = time.perf_counter() - start
    hits = counters["inductor"]["fxgraph_cache_hit"] - hits_before
    misses = counters["inductor"]["fxgraph_cache_miss"] - misses_before
    cache = "miss" if misses else ("hit" if hits else "unknown")
    info = {"seconds": seconds, "inductor_cache": cache}
    return _measure({"compiled": compiled}, case.device, options)["compiled"], info, None


def _measure(
    fns: dict[str, Callable[[], object]], device: torch.device, options: Options
) -> dict[str, Timing]:
    """:func:`measure_interleaved`, repeated while other processes load the CPUs; keeps the least
    disturbed run.

    The choice is made by the other processes' load, never by the time, so it picks no favourable
    outliers: it only avoids reporting a neighbour's compile job as this kernel's speed.
    """
    def load(timings: dict[str, Timing]) -> float | None:
        return next(iter(timings.values())).other_load  # one run: the same for every callable

    best = measure_interleaved(fns, device, options.timer)
    for _ in range(options.retries):
        if load(best) is None or load(best) < QUIET:
            break
        time.sleep(1.0)  # let a short burst of other work pass
        timings = measure_interleaved(fns, device, options.timer)
        if load(timings) is not None and load(timings) < load(best):
            best = timings
    return best


def disturbed(timing: dict[str, Any] | None) -> bool:
    """Whether a recorded timing ran while other processes used at least :data:`BUSY` of the CPUs."""
    return timing is not None and (timing.get("other_load") or 0.0) >= BUSY


ALLOCATOR_WARMUP_BYTES = 32 * 2**20 - 2**16
"""Just under glibc's largest dynamic mmap threshold (32 MiB on 64-bit systems)."""


def warm_up_allocator() -> None:
    """Allocate and free one block of just under 32 MiB, as a long-running process does.

    glibc serves every allocation above its mmap threshold (128 KiB when a process starts) with a
    fresh ``mmap``, so an op that returns multi-MB tensors pays a page fault per 4 KiB on every call
    (about 2,400 for GAE's two 4 MB outputs at T=1000, B=1024, which quadruples its time) until the
    process frees an mmapped block larger than those, which raises the threshold to that block's
    size (up to 32 MiB). A training loop frees such tensors within its first iteration; a benchmark
    process may or may not have, depending on the order of its earlier allocations, so without this
    the same call measures 2 ms or 8 ms. It changes nothing where the allocator is another (CUDA's
    caching allocator, macOS, Windows), and it applies to every column alike.
    """
    block = torch.empty(ALLOCATOR_WARMUP_BYTES, dtype=torch.uint8)
    del block


def _at_isa_level(fn: Callable[[], object], level: str) -> Callable[[], object]:
    """``fn`` with the native CPU kernels at ``level``, restoring the level after each call.
    Every level is timed through this wrapper, so its cost (two calls into the extension) is the
    same for all of them."""

    def call() -> object:
        before = haml.ops.cpu_isa()
        haml.ops.set_cpu_isa(level)
        try:
            return fn()
        finally:
            haml.ops.set_cpu_isa(before)

    return call


def _isa_levels(case: Case, fns: Callables, options: Options) -> tuple[str, ...]:
    """The levels to time the native kernel at: none unless asked for, on the CPU, with a native
    callable, and more than one level to compare."""
    if not options.isa_levels or case.device.type != "cpu" or fns.native is None:
        return ()
    levels = haml.ops.supported_cpu_isas()
    return levels if len(levels) > 1 else ()


def run_case(
    case: Case, options: Options, log: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Time one case; returns its JSON record."""
    start = time.perf_counter()
    fns = case.build()
    if options.allocator_warmup:
        warm_up_allocator()
    skipped: dict[str, str] = {}
    callables = {"reference": fns.reference}
    if fns.native is None:
        skipped["native"] = _native_skip(case.native_op, case.device) or "no native callable"
    else:
        callables["native"] = fns.native
    if fns.floor is not None:
        callables["floor"] = fns.floor
    if fns.pytorch is not None:
        callables["pytorch"] = fns.pytorch
    levels = _isa_levels(case, fns, options)
    for level in levels:
        callables[f"native@{level}"] = _at_isa_level(fns.native, level)
    timings = _measure(callables, case.device, options)
    at_level = {level: timings[f"native@{level}"] for level in levels}
    native, reference, floor, pytorch = (
        timings.get(name) for name in ("native", "reference", "floor", "pytorch")
    )
    compiled, compile_info, compile_skip = _compile_and_time(case, fns, options, log)
    if compile_skip is not None:
        skipped["compiled"] = compile_skip
    del fns  # free the inputs before the next case allocates its own

    ratios = {
        "reference/native": _ratio(reference, native),
        "compiled/native": _ratio(compiled, native),
        "native/floor": _ratio(native, floor),
        "pytorch/native": _ratio(pytorch, native),
        # How much slower the baseline build of the kernel is than the highest level run here.
        "baseline/best_isa": _ratio(at_level["baseline"], at_level[levels[-1]]) if levels else None,
    }
    times = {"native": native, "reference": reference, "compiled": compiled, "floor": floor,
             "pytorch": pytorch}
    return {
        "op": case.op,
        "shape": dict(case.shape),
        "label": case.label,
        "device": case.device.type,
        "native_op": case.native_op,
        "backend": "reference" if native is None else "native",
        "times": {name: None if t is None else t.to_dict() for name, t in times.items()},
        "isa_times": {level: t.to_dict() for level, t in at_level.items()},
        "floor": case.floor,
        "compile": compile_info,
        "ratios": ratios,
        "skipped": skipped,
        "targets": [target.check(ratios) for target in case.targets],
        "seconds": time.perf_counter() - start,
    }


def _progress_line(index: int, total: int, record: dict[str, Any]) -> str:
    times = record["times"]

    def show(name: str) -> str:
        t = times[name]
        return "skipped" if t is None else format_seconds(t["median"]) + "*" * disturbed(t)

    native = show("native") if times["native"] else "n/a"
    parts = [f"native {native}", f"reference {show('reference')}"]
    ratio = record["ratios"]["reference/native"]
    if ratio is not None:
        parts[-1] += f" ({ratio:.3g}x)"
    parts.append(f"compiled {show('compiled')}")
    if times["floor"] is not None:
        parts.append(f"floor {show('floor')}")
    if times.get("pytorch") is not None:
        parts.append(f"pytorch {show('pytorch')}")
        if record["ratios"].get("pytorch/native") is not None:
            parts[-1] += f" ({record['ratios']['pytorch/native']:.3g}x)"
    for level, t in record.get("isa_times", {}).items():
        parts.append(f"native@{level} {format_seconds(t['median'])}" + "*" * disturbed(t))
    if record["ratios"].get("baseline/best_isa") is not None:
        parts[-1] += f" (baseline {record['ratios']['baseline/best_isa']:.3g}x)"
    return (
        f"[{index}/{total}] {record['op']} {record['label']} {record['device']}: "
        + ", ".join(parts)
        + f"  ({record['seconds']:.1f} s)"
    )


def run_ops(
    ops: Sequence[str],
    devices: Sequence[torch.device],
    options: Options,
    log: Callable[[str], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """Run every case of ``ops`` on ``devices``; ``log`` gets one line per finished case."""
    cases = cases_for(ops, devices, options)
    records = []
    for index, case in enumerate(cases, start=1):
        record = run_case(case, options, log)
        records.append(record)
        log(_progress_line(index, len(cases), record))
    return records
