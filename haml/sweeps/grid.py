"""The grid of a sweep: algorithms × tasks × seeds × override sets, from flags or a YAML file.

A grid has *common* overrides, applied to every run, and *variants*: named override sets, each
a separate cell of the grid whose runs are kept apart in their own directory
``<algo>/<variant>/seed-<n>``. A variant given without a name is named after its overrides
(:func:`variant_name`), so the same overrides always land in the same directory.

The sweep file (``haml sweep --file sweep.yaml``) holds the same fields as the flags, and every
key is checked (an unknown key is an error, as in run configs)::

    env: mamujoco                       # one environment family
    tasks: [HalfCheetah-2x3, Walker2d-2x3]
    algos: [happo, mappo]
    seeds: [0, 1, 2]                    # or "0,1,2" or "0-2"
    steps: 1000000                      # optional: train.steps of every run
    tuned: true                         # optional: start from the tuned settings
    out: runs/halfcheetah-sweep         # optional: the root of the run directories
    overrides: {train.num_envs: 10}     # optional: for every run, not part of the names
    variants:                           # optional: a list (named after their overrides) ...
      - {algo.clip: 0.1}
      - {algo.clip: 0.2}
    # ... or a mapping of names: {small: {actor.hidden: [64, 64]}, wide: {...}}
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Cell",
    "SweepGrid",
    "Variant",
    "grid_from_file",
    "make_variants",
    "parse_overrides",
    "parse_seeds",
    "variant_name",
]

Override = tuple[str, Any]
"""A dotted config key and its value, e.g. ``("algo.clip", 0.1)``."""

_NAME_LIMIT = 40
"""Derived variant names longer than this are cut and end with a hash of the whole set."""

FILE_KEYS = ("env", "tasks", "algos", "seeds", "steps", "tuned", "out", "overrides", "variants")
"""The keys a sweep file may hold."""


@dataclass(frozen=True)
class Variant:
    """An override set of a sweep; ``name`` is its directory (``""``: the runs have no set)."""

    name: str
    overrides: tuple[Override, ...] = ()


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    algo: str
    task: str | None
    seed: int
    variant: Variant


@dataclass(frozen=True)
class SweepGrid:
    """What a sweep runs: every algo × task × variant × seed of one environment family.

    ``tasks`` may hold ``None`` (the family's default task); ``overrides`` apply to every run
    and are not part of any name; ``steps`` sets ``train.steps`` (None: the config's)."""

    env: str
    algos: tuple[str, ...]
    tasks: tuple[str | None, ...] = (None,)
    seeds: tuple[int, ...] = (0,)
    variants: tuple[Variant, ...] = (Variant(""),)
    overrides: tuple[Override, ...] = ()
    steps: int | None = None
    tuned: bool = False

    def __post_init__(self) -> None:
        for field in ("algos", "tasks", "seeds", "variants"):
            if not getattr(self, field):
                raise ValueError(f"sweep: the grid needs at least one of '{field}'")
        names = [v.name for v in self.variants]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"sweep: override sets named more than once: {', '.join(map(repr, repeated))}")
        for name in names:
            if name != _safe_name(name) or name in (".", ".."):
                raise ValueError(f"sweep: override set name {name!r} is not a plain directory name "
                                 "(letters, digits, '-', '_', '.', '+')")

    def cells(self) -> list[Cell]:
        """Every run, task by task, then algo, override set and seed."""
        return [
            Cell(algo, task, seed, variant)
            for task in self.tasks
            for algo in self.algos
            for variant in self.variants
            for seed in self.seeds
        ]


# ----------------------------------------------------------------------------------------------
# names


def _value_text(value: Any) -> str:
    """A value as canonical text: JSON without spaces (``0.0003``, ``[64,64]``, ``"tanh"``)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _safe_name(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._+-]`` as ``_``, runs of ``_`` as one."""
    safe = "".join(c if c.isalnum() and c.isascii() or c in "-_.+" else "_" for c in text)
    while "__" in safe:
        safe = safe.replace("__", "_")
    return safe


def variant_name(overrides: Iterable[Override]) -> str:
    """A short, stable directory name for an override set: ``algo.clip-0.1_train.lr-0.0003``.

    The keys are sorted and each value written canonically, so the same set gives the same name
    whatever its order or spelling (``3e-4`` and ``0.0003``). A name longer than 40 characters
    is cut and ends with 8 hex digits of the SHA-1 of the whole set, which keeps it unique."""
    items = sorted(overrides)
    if not items:
        return ""
    canonical = ",".join(f"{key}={_value_text(value)}" for key, value in items)
    readable = "_".join(
        f"{_safe_name(key)}-{_safe_name(value if isinstance(value, str) else _value_text(value)).strip('_')}"
        for key, value in items
    )
    if len(readable) <= _NAME_LIMIT:
        return readable
    digest = hashlib.sha1(canonical.encode()).hexdigest()[:8]
    return f"{readable[:_NAME_LIMIT - 9].rstrip('_.-')}-{digest}"


# ----------------------------------------------------------------------------------------------
# parsing


def parse_seeds(text: str | int | Sequence[int]) -> tuple[int, ...]:
    """``"0,1,2"``, ``"0-4"`` (inclusive), ``"0-2,7"``, an int or a list of ints → the seeds."""
    if isinstance(text, bool):
        raise ValueError(f"sweep: seeds must be integers, got {text!r}")
    if isinstance(text, int):
        return (text,)
    if not isinstance(text, str):
        seeds = tuple(text)
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ValueError(f"sweep: seeds must be integers, got {list(seeds)!r}")
        return seeds
    seeds: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            first, dash, last = part.partition("-")
            if dash and first:
                seeds.extend(range(int(first), int(last) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ValueError(f"sweep: seeds {text!r}: write them as 0,1,2 or 0-4") from None
    if not seeds:
        raise ValueError(f"sweep: seeds {text!r} name no seed")
    return tuple(seeds)


def parse_overrides(overrides: Sequence[str] | Mapping[str, Any] | None, where: str) -> tuple[Override, ...]:
    """``["algo.clip=0.1", ...]`` (values read as YAML, as ``haml train`` does) or
    ``{"algo.clip": 0.1}`` → ``(("algo.clip", 0.1), ...)``."""
    from haml.config.loader import parse_override

    if overrides is None:
        return ()
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    elif isinstance(overrides, str):
        items = [parse_override(part) for part in overrides.split()]
    else:
        items = [parse_override(o) if isinstance(o, str) else tuple(o) for o in overrides]
    for key, _ in items:
        if not isinstance(key, str) or not key:
            raise ValueError(f"sweep: {where}: {key!r} is not a dotted config key")
    keys = [key for key, _ in items]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"sweep: {where} sets {', '.join(repeated)} more than once")
    return tuple(items)


def make_variants(variants: Sequence[Any] | Mapping[str, Any] | None) -> tuple[Variant, ...]:
    """Variants from a list of override sets (named after their overrides) or a mapping
    name → override set; each set as :func:`parse_overrides` takes it, its keys sorted (a key
    appears once in a set, so their order means nothing)."""
    if not variants:
        return (Variant(""),)
    if isinstance(variants, Mapping):
        return tuple(
            Variant(str(name), tuple(sorted(parse_overrides(overrides, f"override set {name!r}"))))
            for name, overrides in variants.items()
        )
    made = []
    for i, overrides in enumerate(variants):
        parsed = tuple(sorted(parse_overrides(overrides, f"override set {i + 1}")))
        made.append(Variant(variant_name(parsed), parsed))
    return tuple(made)


def grid_from_file(path: str | os.PathLike[str]) -> tuple[SweepGrid, str | None]:
    """The grid of a sweep file (see the module docstring) and its ``out`` (None if unset)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep: no sweep file {path}")
    with open(path, encoding="utf-8") as file:
        data = yaml.safe_load(file) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"sweep: {path} must hold a mapping of {', '.join(FILE_KEYS)}")
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise ValueError(f"sweep: {path}: unknown key(s) {', '.join(map(str, unknown))}; "
                         f"a sweep file holds {', '.join(FILE_KEYS)}")
    for key in ("env", "algos"):
        if key not in data:
            raise ValueError(f"sweep: {path} needs '{key}'")

    def names(key: str) -> tuple[Any, ...]:
        value = data.get(key)
        return tuple(value) if isinstance(value, list) else (value,)

    out = data.get("out")
    grid = SweepGrid(
        env=str(data["env"]),
        algos=tuple(map(str, names("algos"))),
        tasks=tuple(None if t is None else str(t) for t in names("tasks")),
        seeds=parse_seeds(data.get("seeds", 0)),
        variants=make_variants(data.get("variants")),
        overrides=parse_overrides(data.get("overrides"), f"{path}: overrides"),
        steps=data.get("steps"),
        tuned=bool(data.get("tuned", False)),
    )
    return grid, None if out is None else str(out)
