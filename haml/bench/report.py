"""What a benchmark ran on, its table, and its JSON file."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import torch

import haml
from haml.bench.ops import BUSY, disturbed
from haml.bench.timing import format_seconds, others_busy
from haml.ops import _backend

__all__ = ["busy_warning", "cpu_name", "device_name", "environment", "print_table", "write_json"]


def cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def environment(devices: Sequence[torch.device]) -> dict[str, Any]:
    """Versions, build and machine: everything needed to read the numbers later."""
    return {
        "device_names": {device.type: device_name(device) for device in devices},
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "haml": haml.__version__,
        "haml_build_info": _backend.BUILD_INFO,
        "haml_backend": _backend.REQUESTED,
        "native_unavailable_reason": _backend.UNAVAILABLE_REASON,
        "num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        # Other work on the machine slows multi-threaded kernels most: note it beside the numbers.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "other_load_before_run": others_busy(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def busy_warning(busy: float | None, when: str) -> str | None:
    """A caution when other processes kept the CPUs busy ``when`` ("when the run started")."""
    if busy is None or busy < BUSY:
        return None
    return (
        f"caution: other processes used {busy:.0%} of the CPUs {when}; "
        "that slows multi-threaded kernels and copies most"
    )


def write_json(document: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _time_cell(record: dict[str, Any], name: str) -> str:
    timing = record["times"][name]
    if timing is not None:
        return format_seconds(timing["median"]) + ("*" if disturbed(timing) else "")
    if name == "native":
        return "n/a"
    return "skipped" if name in record["skipped"] else "-"


def _ratio_cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}×" if value < 1000 else f"{value:.0f}×"


def print_table(
    records: Sequence[dict[str, Any]],
    env: dict[str, Any],
    file: TextIO | None = None,
    settings: dict[str, Any] | None = None,
) -> None:
    """The results as one table, then targets and the reasons for every skipped column."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    stream = file if file is not None else sys.stdout
    # Piped output gets a width that fits the table instead of rich's 80-column default.
    console = Console(
        file=stream,
        width=None if stream.isatty() else 200,
        highlight=False,
        markup=False,
        emoji=False,
    )

    table = Table(box=box.SIMPLE_HEAVY, title="haml bench ops: times are medians per call")
    for header, justify in (
        ("op", "left"),
        ("shape", "left"),
        ("device", "left"),
        ("native", "right"),
        ("reference", "right"),
        ("ref/native", "right"),
        ("compiled ref", "right"),
        ("compiled/native", "right"),
        ("compile", "right"),
        ("floor", "right"),
        ("native/floor", "right"),
        ("pytorch", "right"),
        ("pytorch/native", "right"),
    ):
        table.add_column(header, justify=justify, no_wrap=True)
    for record in records:
        ratios = record["ratios"]
        compile_info = record["compile"]
        table.add_row(
            record["op"],
            record["label"],
            record["device"],
            _time_cell(record, "native"),
            _time_cell(record, "reference"),
            _ratio_cell(ratios["reference/native"]),
            _time_cell(record, "compiled"),
            _ratio_cell(ratios["compiled/native"]),
            "-" if compile_info is None else f"{compile_info['seconds']:.1f} s",
            _time_cell(record, "floor"),
            _ratio_cell(ratios["native/floor"]),
            _time_cell(record, "pytorch") if record["times"].get("pytorch") else "-",
            _ratio_cell(ratios.get("pytorch/native")),
        )
    console.print(table)

    names = ", ".join(f"{kind}: {name}" for kind, name in env["device_names"].items())
    console.print(
        f"haml {env['haml']} (HAML_BACKEND={env['haml_backend']}), torch {env['torch']}, "
        f"python {env['python']}, {env['num_threads']} threads; {names}"
    )
    marked = [
        f"{r['op']} {r['label']} {name} ({t['other_load']:.0%})"
        for r in records
        for name, t in r["times"].items()
        if disturbed(t)
    ]
    if marked:
        console.print(
            f"* measured while other processes used >= {BUSY:.0%} of the CPUs even after retries: "
            + ", ".join(marked)
        )
    for busy, when in (
        (env.get("other_load_before_run"), "when the run started"),
        (env.get("other_load_after_run"), "when it ended"),
    ):
        warning = busy_warning(busy, when)
        if warning:
            console.print(warning)
    compiled = [r for r in records if r["compile"] is not None]
    if compiled:
        states = {r["compile"]["inductor_cache"] for r in compiled}
        cache = (
            f"inductor cache {states.pop()} for all"
            if len(states) == 1
            else "inductor cache "
            + ", ".join(f"{r['op']} {r['label']}: {r['compile']['inductor_cache']}" for r in compiled)
        )
        console.print(
            f"compile = seconds of the first torch.compile call ({cache}); "
            "compiled ref times steady-state calls only"
        )
    floors = sorted({(r["op"], r["floor"]) for r in records if r["floor"]})
    for op, floor in dict(floors).items():
        console.print(f"floor ({op}) = {floor}, measured in this run")

    if settings is not None and settings.get("allocator_warmup_bytes"):
        console.print(
            "each case starts by freeing one 32 MiB block, so that glibc serves multi-MB outputs from "
            "its heap as in a long-running process (off: --no-allocator-warmup)"
        )

    targets = [(r, t) for r in records for t in r["targets"]]
    if targets:
        console.print("targets:")
        for record, target in targets:
            mark = {True: "met", False: "NOT MET", None: "not measured"}[target["met"]]
            measured = _ratio_cell(target["measured"])
            console.print(
                f"  {mark:>12}  {record['op']} {record['label']} {record['device']}: "
                f"{target['ratio']} = {measured} (goal {target['relation']} {target['bound']:g}×)"
            )

    reasons: dict[str, list[str]] = {}
    for record in records:
        for column, reason in record["skipped"].items():
            reasons.setdefault(f"{column}: {reason}", []).append(
                f"{record['op']} {record['label']} {record['device']}"
            )
    if reasons:
        console.print("not measured:")
        for reason, where in reasons.items():
            console.print(f"  {'; '.join(where)} — {reason}")
