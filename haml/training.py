"""``haml.train`` and ``haml.resume``: a whole training run, from config to curve.

A run directory (``runs/<env>/<task>/<algo>/seed-<n>/`` unless ``out`` is given) receives:

- ``config.yaml``: the resolved configuration (what ``resume`` reads back);
- ``metrics.csv`` and TensorBoard events (``haml.logging``);
- ``checkpoints/iter-<n>.pt``: every ``run.checkpoint_every`` iterations, at the end, and on
  Ctrl-C; each holds everything needed to continue exactly (weights, optimisers, value
  normalisers, RNG states, counters, the envs' states);
- ``curve.png``: the learning curve, written at the end.

A NaN/inf loss or parameter stops the run with :class:`~haml.runners.TrainingDiverged` naming the
iteration and the last good checkpoint, which stays.

The loop here is the same for every algorithm: :func:`haml.runners.make_runner` picks the runner
from the algorithm's registry entry, and the loop talks to it through
:class:`haml.runners.Runner` only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from haml.config.schema import ExperimentConfig
from haml.envs.base import WIN_METRIC, VectorMultiAgentEnv

__all__ = ["Result", "train", "resume", "default_run_dir"]


@dataclass
class Result:
    """What a finished (or interrupted) run returns."""

    run_dir: Path
    eval_return: float | None
    """Mean return of the final deterministic evaluation (None if evaluation is off)."""
    eval_std: float | None
    env_steps: int
    iterations: int
    wall_seconds: float
    interrupted: bool
    config: ExperimentConfig


def _safe(part: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in part)


def default_run_dir(cfg: ExperimentConfig, root: str | Path = "runs") -> Path:
    """``<root>/<env>/<task>/<algo>/seed-<n>`` (characters unsafe in paths, like ``|``, become ``_``)."""
    return (
        Path(root) / _safe(cfg.env.name) / _safe(cfg.env.task) / _safe(cfg.algo_name)
        / f"seed-{cfg.seed}"
    )


def _kwarg_overrides(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Python keyword overrides → dotted keys: ``algo__clip=0.1`` or ``algo={"clip": 0.1}``."""
    dotted: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, Mapping):
            for sub, v in value.items():
                dotted[f"{key}.{sub}"] = v
        else:
            dotted[key.replace("__", ".")] = value
    return dotted


def _check_fresh(run_dir: Path, overwrite: bool) -> None:
    """Refuse a directory that holds a run, unless ``overwrite``: then clear the old run's
    checkpoints, TensorBoard events and curve (``metrics.csv`` and ``config.yaml`` are rewritten
    by the logger). A stale checkpoint of a longer earlier run would otherwise stay the
    "latest" one, and ``resume``/``haml eval`` would load it instead of the new run's."""
    from haml.logging.plot import CURVE_FILE
    from haml.utils.checkpoint import latest_checkpoint, list_checkpoints

    if not run_dir.exists():
        return
    if not overwrite:
        if (run_dir / "metrics.csv").exists() or latest_checkpoint(run_dir) is not None:
            raise FileExistsError(
                f"{run_dir} already holds a run; continue it with `haml train --resume {run_dir}` "
                f"(haml.resume), choose another --out, or pass overwrite=True / --overwrite"
            )
        return
    for old in [*list_checkpoints(run_dir), *run_dir.glob("events.out.tfevents.*"),
                run_dir / CURVE_FILE]:
        old.unlink(missing_ok=True)


def train(
    algo: str,
    env: str | VectorMultiAgentEnv,
    task: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    *,
    tuned: bool = False,
    config_file: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    eval_env: VectorMultiAgentEnv | None = None,
    quiet: bool = False,
    overwrite: bool = False,
    **kwargs: Any,
) -> Result:
    """Train ``algo`` on ``env`` and return a :class:`Result`.

    Args:
        algo: a registered algorithm (``haml.algorithms.algo_names()``).
        env: a registered environment family (``haml.envs.env_names()``) with ``task``, or an
            environment object following :class:`haml.envs.VectorMultiAgentEnv` (its ``spec``
            names the family and task; ``train.num_envs`` becomes its ``num_envs``).
        task: the task of a registered family (its default task when None).
        steps: total environment steps (``train.steps``).
        seed: seeds torch, numpy, Python and the envs.
        out: the run directory (default :func:`default_run_dir` under ``./runs``).
        tuned: start from the tuned settings of ``haml/config/tuned/<env>/<task>/<algo>.yaml``.
        config_file: a YAML file of overrides, applied after the defaults.
        overrides: ``["algo.clip=0.1", ...]`` or ``{"algo.clip": 0.1}``.
        eval_env: evaluation envs for an env object (default: evaluate on ``env`` itself, which
            then restarts its episodes).
        quiet: no progress output.
        overwrite: start afresh in a run directory that already holds a run (its checkpoints,
            TensorBoard events and curve are deleted first).
        **kwargs: more overrides, ``algo__clip=0.1`` or ``algo={"clip": 0.1}``.
    """
    from haml.config.loader import load_config

    dotted: dict[str, Any] = {}
    if isinstance(overrides, Mapping):
        dotted.update(overrides)
        extra: list[str] = []
    else:
        extra = list(overrides)
    dotted.update(_kwarg_overrides(kwargs))
    dotted["seed"] = seed
    if steps is not None:
        dotted["train.steps"] = steps
    if isinstance(env, str):
        env_name, env_obj = env, None
    else:
        if not isinstance(env, VectorMultiAgentEnv):
            raise TypeError(
                "train: 'env' must be a registered environment name or an object following "
                f"haml.envs.VectorMultiAgentEnv, got {type(env).__name__}"
            )
        if tuned:
            raise ValueError("train: tuned settings are per registered task; an environment object has none")
        env_name, env_obj = env.spec.env, env
        task = env.spec.task
        dotted["train.num_envs"] = env.num_envs
        dotted["train.device"] = str(env.device)
    cfg = load_config(
        algo,
        env_name,
        task,
        overrides=[*extra, *dotted.items()],
        tuned=tuned,
        config_file=config_file,
        external_env=env_obj is not None,
    )
    if env_obj is not None and cfg.train.rollout_workers > 0:
        raise ValueError(
            "train: train.rollout_workers needs a registered environment (each worker builds its "
            "envs from env.name, env.task and env.options), not an environment object"
        )
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
    _check_fresh(run_dir, overwrite)
    return _run(cfg, run_dir, env_obj, eval_env, checkpoint=None, quiet=quiet)


def resume(
    run_dir: str | Path,
    steps: int | None = None,
    overrides: Sequence[str] = (),
    quiet: bool = False,
) -> Result:
    """Continue the run in ``run_dir`` from its latest checkpoint, to ``steps`` total steps
    (default: the run's own ``train.steps``). The same seed on CPU gives the same parameters as
    a run that was never interrupted (with a constant learning rate, or the same ``steps``).

    A checkpoint that fails its checksum or cannot be read is set aside (renamed
    ``<name>.damaged``, with a message saying so) and the run continues from the newest one
    that reads."""
    from haml.config.loader import apply_overrides, config_from_dict
    from haml.utils.checkpoint import load_latest_run_checkpoint

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"resume: no run directory {run_dir}")
    try:
        path, checkpoint, skipped = load_latest_run_checkpoint(run_dir)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"resume: {err}") from None
    for damaged, why in skipped:
        aside = damaged.with_name(damaged.name + ".damaged")
        damaged.replace(aside)
        print(f"resume: {why}; set aside as {aside.name}, resuming from {path.name}", flush=True)
    cfg = config_from_dict(checkpoint["config"])
    more = list(overrides)
    if steps is not None:
        more.append(f"train.steps={int(steps)}")
    if more:
        cfg = apply_overrides(cfg, more)
    return _run(cfg, run_dir, None, None, checkpoint=checkpoint, quiet=quiet)


def _make_envs(cfg: ExperimentConfig):
    from haml.envs.registry import make_env

    # Rollout workers build and step their own envs: the runner's gives only the spec.
    num_envs = cfg.train.num_envs if cfg.train.rollout_workers == 0 else 1
    env = make_env(
        cfg.env.name, cfg.env.task, num_envs=num_envs, seed=cfg.seed,
        device=cfg.train.device, **cfg.env.options,
    )
    eval_env = None
    if cfg.eval.every > 0:
        eval_env = make_env(
            cfg.env.name, cfg.env.task, num_envs=cfg.eval.num_envs, seed=cfg.seed + 1_000_000,
            device=cfg.train.device, **cfg.env.options,
        )
    return env, eval_env


def _eval_seed(cfg: ExperimentConfig, iteration: int) -> int:
    """Evaluation envs are reseeded from the iteration: evaluations do not depend on history."""
    return (cfg.seed * 1_000_003 + 7_919 * iteration + 17) % (2**31)


def _evaluate(runner: Any, cfg: ExperimentConfig, metrics: dict[str, float]) -> None:
    """Run the scheduled evaluation and add its metrics to ``metrics``."""
    from haml.envs.base import episode_means
    from haml.logging import metrics as M

    result = runner.run_eval(cfg.eval.episodes, _eval_seed(cfg, runner.iteration))
    metrics[M.EVAL_RETURN] = result.mean_return
    metrics[M.EVAL_RETURN_STD] = result.std_return
    means = episode_means(result.episodes)
    metrics[M.EVAL_EPISODE_LENGTH] = means.length
    for key, value in means.metrics.items():
        metrics[f"{M.ENV_PREFIX}eval_{key}"] = value
    if WIN_METRIC in means.metrics:
        metrics[M.EVAL_WIN_RATE] = means.metrics[WIN_METRIC]


class _Checkpointer:
    """Writes the run's checkpoints and remembers the last one (for the divergence message)."""

    def __init__(self, run_dir: Path, cfg: ExperimentConfig, runner: Any) -> None:
        from haml.config.loader import config_to_dict
        from haml.utils.checkpoint import latest_checkpoint

        self.run_dir, self.cfg, self.runner = run_dir, cfg, runner
        self.config = config_to_dict(cfg)
        self.last: Path | None = latest_checkpoint(run_dir)

    def save(self) -> Path:
        from haml.utils.checkpoint import run_checkpoint, save_run_checkpoint
        from haml.utils.seeding import rng_state

        last_eval = self.runner.last_eval
        payload = run_checkpoint(
            self.config, self.runner.state_dict(), rng_state(),
            None if last_eval is None else last_eval.mean_return,
        )
        self.last = save_run_checkpoint(
            self.run_dir, self.runner.iteration, payload, keep=self.cfg.run.keep_checkpoints
        )
        return self.last

    def diverged(self, err: Exception) -> Exception:
        """``err`` with what the run keeps."""
        from haml.runners import TrainingDiverged

        kept = (f"the run stops and keeps its last good checkpoint {self.last}" if self.last
                else "the run stops; it had written no checkpoint yet")
        return TrainingDiverged(f"{err}; {kept}")


def _open_envs(cfg: ExperimentConfig, env_obj: VectorMultiAgentEnv | None,
               eval_env_obj: VectorMultiAgentEnv | None):
    """``(env, eval_env, owned)``: the caller's env objects, or the registered family's envs,
    which the run then closes (``owned``)."""
    if env_obj is not None:
        return env_obj, (eval_env_obj if eval_env_obj is not None else env_obj), False
    env, eval_env = _make_envs(cfg)
    return env, eval_env, True


def _train_loop(runner: Any, cfg: ExperimentConfig, run_dir: Path, logger: Any,
                checkpoints: _Checkpointer, shares_eval_env: bool) -> bool:
    """Iterate until ``train.steps``, evaluating, logging and checkpointing on schedule;
    returns whether a Ctrl-C stopped it."""
    from haml.runners import TrainingDiverged
    from haml.runners.guards import InterruptFlag

    with InterruptFlag() as flag:
        while runner.env_steps < cfg.train.steps:
            try:
                metrics = runner.iterate()
            except TrainingDiverged as err:  # nothing of the diverged iteration is saved
                raise checkpoints.diverged(err) from None
            last = runner.env_steps >= cfg.train.steps
            if cfg.eval.every > 0 and (runner.iteration % cfg.eval.every == 0 or last):
                _evaluate(runner, cfg, metrics)
                if shares_eval_env:
                    runner.reset_envs()
            if runner.iteration % cfg.run.log_every == 0 or last:
                logger.log(runner.env_steps, metrics)
            if flag.requested:
                path = checkpoints.save()
                print(f"interrupted: checkpoint {path}; continue with "
                      f"`haml train --resume {run_dir}`", flush=True)
                return True
            if runner.iteration % cfg.run.checkpoint_every == 0 or last:
                checkpoints.save()
    return False


def _run(
    cfg: ExperimentConfig,
    run_dir: Path,
    env_obj: VectorMultiAgentEnv | None,
    eval_env_obj: VectorMultiAgentEnv | None,
    checkpoint: dict[str, Any] | None,
    quiet: bool,
) -> Result:
    from haml.logging.logger import RunLogger
    from haml.runners import make_runner
    from haml.utils.device import usable_device
    from haml.utils.seeding import seed_everything, set_rng_state

    usable_device(cfg.train.device)
    if cfg.train.torch_threads > 0:
        torch.set_num_threads(cfg.train.torch_threads)
    seed_everything(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    env, eval_env, owns_envs = _open_envs(cfg, env_obj, eval_env_obj)
    started = time.perf_counter()
    interrupted = False
    runner = None
    try:
        runner = make_runner(cfg, env, eval_env if cfg.eval.every > 0 else None)
        if checkpoint is not None:
            runner.load_state_dict(checkpoint["runner"])
            set_rng_state(checkpoint["rng"])
        checkpoints = _Checkpointer(run_dir, cfg, runner)
        with RunLogger(run_dir, checkpoints.config, cfg.train.steps, start_step=runner.env_steps,
                       quiet=quiet) as logger:
            if runner.env_steps >= cfg.train.steps and not quiet:
                print(f"{run_dir}: already at {runner.env_steps} of {cfg.train.steps} steps")
            shares_eval_env = env_obj is not None and eval_env is env
            interrupted = _train_loop(runner, cfg, run_dir, logger, checkpoints, shares_eval_env)
        if not interrupted:
            _write_curve(run_dir, quiet)
    finally:
        if runner is not None:
            runner.close()
        if owns_envs:
            env.close()
            if eval_env is not None:
                eval_env.close()
    last_eval = runner.last_eval
    return Result(
        run_dir=run_dir,
        eval_return=None if last_eval is None else last_eval.mean_return,
        eval_std=None if last_eval is None else last_eval.std_return,
        env_steps=runner.env_steps,
        iterations=runner.iteration,
        wall_seconds=time.perf_counter() - started,
        interrupted=interrupted,
        config=cfg,
    )


def _write_curve(run_dir: Path, quiet: bool) -> None:
    from haml.logging.plot import plot_run

    try:
        path = plot_run(run_dir)
    except Exception as err:  # a curve is a convenience: never lose a finished run over it
        path = None
        print(f"note: no learning curve written ({type(err).__name__}: {err})")
    if not quiet:
        print(f"logs: {run_dir}  (metrics.csv, config.yaml, TensorBoard events, checkpoints/)")
        print(f"curve: {path}" if path is not None else "curve: none (no evaluation rows)")
