"""``python -m haml.bench.rollout_workers``: training steps/s with remote rollout workers against
in-process collection, and what the weight broadcast and the rollout transfer cost.

One resolved config (:func:`haml.config.loader.load_config`, as ``haml train`` builds it; the
defaults unless ``--tuned``) is run with each ``train.rollout_workers`` of ``--workers`` (0: the
in-process vector env). Every runner is built first (the Ray workers on one local Ray instance
started here, a logical CPU per worker), warmed up with one iteration, then the runners take
turns, one iteration each, ``--iterations`` times, so that a change in the machine's load falls
on all of them. Per setting it records env steps/s of whole iterations (collection and update)
and of collection alone and, with workers, per iteration (means over the measured ones): the
bytes of the broadcast weights and of the returned rollouts, and the milliseconds of the
learner's one ``ray.put``, of the slowest worker's ``ray.get`` of it, of the rollouts' return
trip and scheduling (the learner's wait less the slowest worker's own time), and of joining the
slices on the training device (:attr:`haml.runners.rollout_workers.RolloutWorkers.last_timing`).

The CPU time that other processes used is sampled before anything starts; during the rounds the
workers are themselves other processes, so only the load average is recorded then.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["bench_rollout_workers", "main"]

DEFAULT_WORKERS = (0, 1, 2)
DEFAULT_ITERATIONS = 3
TIMING_KEYS = ("weight_bytes", "rollout_bytes", "put", "fetch", "worker", "transfer", "join")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _build_runner(cfg: Any) -> Any:
    """The env and runner as ``haml train`` builds them (with workers, a one-env spec env)."""
    from haml.envs.registry import make_env
    from haml.runners import make_runner
    from haml.utils.seeding import seed_everything

    seed_everything(cfg.seed)
    num_envs = cfg.train.num_envs if cfg.train.rollout_workers == 0 else 1
    env = make_env(cfg.env.name, cfg.env.task, num_envs=num_envs, seed=cfg.seed,
                   device=cfg.train.device, **cfg.env.options)
    return env, make_runner(cfg, env)


def _summary(rounds: list[dict[str, Any]], batch_steps: int) -> dict[str, Any]:
    seconds = sum(r["seconds"] for r in rounds)
    collect = sum(r["collect_seconds"] for r in rounds)
    out: dict[str, Any] = {
        "iterations": len(rounds),
        "steps": batch_steps * len(rounds),
        "seconds": seconds,
        "steps_per_second": batch_steps * len(rounds) / seconds,
        "collect_seconds": collect,
        "collect_steps_per_second": batch_steps * len(rounds) / collect,
        "update_seconds": sum(r["update_seconds"] for r in rounds),
        "load_average_1min": [r["load_average_1min"] for r in rounds],
        "rounds": rounds,
    }
    if "put" in rounds[0]:
        out["per_iteration"] = {key: sum(r[key] for r in rounds) / len(rounds) for key in TIMING_KEYS}
    return out


def bench_rollout_workers(
    algo: str = "happo",
    env: str = "mamujoco",
    task: str | None = "HalfCheetah-2x3",
    *,
    workers: Sequence[int] = DEFAULT_WORKERS,
    iterations: int = DEFAULT_ITERATIONS,
    tuned: bool = False,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure each ``train.rollout_workers`` of ``workers``; return the JSON document (also
    written to ``out``, default ``bench-results/rollout-workers-<env>-<task>-<algo>.json``)."""
    from haml.bench import report
    from haml.config.loader import load_config

    log = _stderr if progress else (lambda _: None)
    if iterations < 1 or not workers or min(workers) < 0:
        raise ValueError("--iterations must be >= 1 and --workers a list of integers >= 0")
    environment = report.environment([torch.device("cpu")])
    configs = [
        load_config(algo, env, task, overrides=[*overrides, f"train.rollout_workers={n}"], tuned=tuned)
        for n in workers
    ]
    cfg0 = configs[0]
    batch_steps = cfg0.train.num_envs * cfg0.train.rollout_length
    path = Path(out) if out is not None else Path("bench-results") / (
        f"rollout-workers-{cfg0.env.name}-{cfg0.env.task}-{cfg0.algo_name}.json"
    )
    ray = None
    if any(workers):
        import ray

        # A logical CPU per worker: the settings' workers all exist at once, taking turns.
        ray.init(num_cpus=max(sum(workers), os.cpu_count() or 1), include_dashboard=False,
                 logging_level="ERROR")
    built: list[tuple[Any, Any]] = []
    try:
        for cfg in configs:
            started = time.perf_counter()
            built.append(_build_runner(cfg))
            log(f"built rollout_workers={cfg.train.rollout_workers} in {time.perf_counter() - started:.1f} s")
        for (_, runner), cfg in zip(built, configs):
            runner.iterate()  # warm-up (first rollout, allocations)
        rounds: list[list[dict[str, Any]]] = [[] for _ in configs]
        for r in range(iterations):
            for k, ((_, runner), cfg) in enumerate(zip(built, configs)):
                started = time.perf_counter()
                runner.iterate()
                seconds = time.perf_counter() - started
                record = {"seconds": seconds, **runner.last_timing,
                          "load_average_1min": os.getloadavg()[0]}
                if runner.rollout_workers is not None:
                    record.update(runner.rollout_workers.last_timing)
                rounds[k].append(record)
                log(f"  round {r + 1}/{iterations}, rollout_workers={cfg.train.rollout_workers}: "
                    f"{batch_steps / seconds:,.0f} steps/s (collect {record['collect_seconds']:.2f} s, "
                    f"update {record['update_seconds']:.2f} s)")
    finally:
        for env_obj, runner in built:
            runner.close()
            env_obj.close()
        if ray is not None:
            ray.shutdown()
    environment["load_average_1min_after_run"] = os.getloadavg()[0]
    document = {
        "benchmark": "haml bench rollout-workers",
        "schema_version": 1,
        "environment": environment,
        "settings": {
            "algo": cfg0.algo_name, "env": cfg0.env.name, "task": cfg0.env.task, "tuned": tuned,
            "iterations": iterations, "overrides": list(overrides), "num_envs": cfg0.train.num_envs,
            "rollout_length": cfg0.train.rollout_length, "batch_steps": batch_steps,
        },
        "results": {
            str(cfg.train.rollout_workers): _summary(rounds[k], batch_steps) for k, cfg in enumerate(configs)
        },
    }
    report.write_json(document, path)
    _print(document)
    log(f"wrote {path}")
    return document


def _print(document: dict[str, Any]) -> None:
    settings = document["settings"]
    print(f"{settings['algo']} on {settings['env']}/{settings['task']}: {settings['num_envs']} envs x "
          f"{settings['rollout_length']} steps, {settings['iterations']} iteration(s) per setting")
    print(f"{'workers':>8} {'steps/s':>9} {'collect steps/s':>16} {'weights':>10} {'rollout':>10} "
          f"{'put ms':>7} {'get ms':>7} {'return ms':>10} {'join ms':>8}")
    for workers, result in document["results"].items():
        cells = [f"{workers:>8}", f"{result['steps_per_second']:>9,.0f}",
                 f"{result['collect_steps_per_second']:>16,.0f}"]
        per = result.get("per_iteration")
        if per is None:
            cells.append(f"{'(in-process vector env)':>28}")
        else:
            cells += [f"{per['weight_bytes'] / 1e3:>8.1f}kB", f"{per['rollout_bytes'] / 1e6:>8.2f}MB",
                      f"{per['put'] * 1e3:>7.1f}", f"{per['fetch'] * 1e3:>7.1f}",
                      f"{per['transfer'] * 1e3:>10.1f}", f"{per['join'] * 1e3:>8.1f}"]
        print(" ".join(cells))
    env = document["environment"]
    print(f"{env['cpu_count']} CPUs; other processes used "
          f"{(env['other_load_before_run'] or 0):.0%} of them before the run; load average "
          f"{env['load_average_1min']:.2f} at the start, {env['load_average_1min_after_run']:.2f} at the end")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m haml.bench.rollout_workers",
        description="Training steps/s with 0 (in-process), 1, 2, ... Ray rollout workers, and the "
        "per-iteration cost of the weight broadcast and the rollout transfer.",
    )
    parser.add_argument("--algo", default="happo")
    parser.add_argument("--env", default="mamujoco")
    parser.add_argument("--task", default="HalfCheetah-2x3")
    parser.add_argument("--workers", default=",".join(map(str, DEFAULT_WORKERS)),
                        help="comma-separated train.rollout_workers values (default: 0,1,2)")
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS,
                        help="measured iterations per setting, after one warm-up "
                        f"(default: {DEFAULT_ITERATIONS})")
    parser.add_argument("--tuned", action="store_true", help="the tuned settings instead of the defaults")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
        bench_rollout_workers(args.algo, args.env, args.task, workers=workers, iterations=args.iterations,
                              tuned=args.tuned, overrides=args.overrides, out=args.json)
    except (ValueError, ImportError) as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
