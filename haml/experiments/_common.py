"""What the experiments share: the toy-game runner, exact initial policies, the result file.

Every experiment trains with the library's own machinery: :func:`load_config` for the toy family
(``haml/config/defaults/envs/toy.yaml``) plus the experiment's overrides, the registered env
(:func:`haml.envs.registry.make_env`) and the algorithm's runner (:func:`haml.runners.make_runner`). What
is measured is the *exact* expected return J of the policies after training
(:func:`haml.envs.toy.expected_payoff` for matrix games, μ^1 μ^2 for the game of [HATRPO]
Figure 1), never a noisy mean of sampled rewards.

Settings common to all experiments (:data:`COMMON_OVERRIDES`):

- ``actor.hidden=[]``: the observation is the constant ``[1.0]``, so a hidden layer adds no
  expressiveness; the policy is then one linear layer whose bias *is* the logits (categorical) or
  the mean (Gaussian), and an exact initial policy is set by writing the bias
  (:func:`set_categorical_policy`, :func:`set_gaussian_policy`);
- ``eval.every=0``, ``env.options.episode_stats_limit=0``: J is computed exactly, so neither the
  evaluation envs nor the per-episode statistics (Python objects, costly per env) are needed;
- ``critic.epochs=1``: one state, so V is a constant, which the per-agent advantage
  normalisation removes (Â = (A − mean A) / std A); the critic's training cannot change any
  update and only costs time.

Runs use one torch thread (:func:`quiet_torch`): the networks are tiny, so every op is dispatch
overhead, which more intra-op threads only add synchronisation to (docs/BENCHMARKS.md, "Threads
for small networks").
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from haml.config.loader import load_config
from haml.config.schema import ExperimentConfig
from haml.experiments import DEFAULT_OUT_DIR, REQUIRED_FRACTION
from haml.runners import AgentUpdate, Runner

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "COMMON_OVERRIDES",
    "REQUIRED_FRACTION",
    "DEFAULT_OUT_DIR",
    "check_run_args",
    "toy_config",
    "make_runner",
    "record_updates",
    "quiet_torch",
    "constant_obs",
    "categorical_probs",
    "set_categorical_policy",
    "gaussian_mean",
    "set_gaussian_policy",
    "required_seeds",
    "summarise",
    "write_outputs",
]

COMMON_OVERRIDES: tuple[str, ...] = (
    "actor.hidden=[]",
    "eval.every=0",
    "env.options.episode_stats_limit=0",
    "critic.epochs=1",
)
"""Overrides every experiment applies to the toy family's defaults (see the module doc)."""


def check_run_args(name: str, seeds: Any, out_dir: Any) -> Path:
    """Validate ``run()``'s common arguments; returns ``out_dir`` as a Path."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"{name}: 'seeds' must be a positive int (the number of seeds), got {seeds!r}")
    if not isinstance(out_dir, (str, Path)):
        raise TypeError(f"{name}: 'out_dir' must be a str or Path, got {type(out_dir).__name__}")
    return Path(out_dir)


def toy_config(algo: str, task: str, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The toy family's config of ``algo`` on ``task`` with :data:`COMMON_OVERRIDES`, then
    ``overrides`` (``key=value`` strings, as on the command line)."""
    return load_config(algo, "toy", task, overrides=[*COMMON_OVERRIDES, *overrides])


def make_runner(cfg: ExperimentConfig, seed: int, **options: Any) -> Runner:
    """A fresh runner for ``cfg`` with seed ``seed`` (global generators seeded first, as
    :func:`haml.train` (:mod:`haml.training`) does, so the networks' initial weights depend on the
    seed); ``options`` go to :func:`haml.runners.make_runner`."""
    from haml.envs.registry import make_env
    from haml.runners import make_runner as make_algorithm_runner
    from haml.utils.seeding import seed_everything

    cfg = dataclasses.replace(cfg, seed=seed)
    seed_everything(seed)
    env = make_env(
        cfg.env.name, cfg.env.task, num_envs=cfg.train.num_envs, seed=seed,
        device=cfg.train.device, **cfg.env.options,
    )
    return make_algorithm_runner(cfg, env, **options)


def record_updates(runner: Runner) -> list[AgentUpdate]:
    """A list that receives the runner's :class:`~haml.runners.AgentUpdate` of every agent's
    update from now on (the order agents were updated in, each one's policy and factor M)."""
    updates: list[AgentUpdate] = []
    runner.add_update_hook(updates.append)
    return updates


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """One torch thread and the caller's global RNG states restored afterwards (an experiment
    seeds the global generators per run; whoever called it should not notice)."""
    from haml.utils.seeding import rng_state, set_rng_state

    threads = torch.get_num_threads()
    saved = rng_state()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            # A policy with a frozen log σ ([HATRPO] Figure 1: "unit variance") makes
            # FisherOperator fall back from the native product to the double-backward reference,
            # which it announces; that is expected here and exact either way.
            warnings.filterwarnings(
                "ignore", message=r".*frozen parameters.*", category=RuntimeWarning
            )
            yield
    finally:
        torch.set_num_threads(threads)
        set_rng_state(saved)


def constant_obs(policy: nn.Module) -> torch.Tensor:
    """The toy games' single observation ``[[1.0]]`` on the policy's device and dtype."""
    ref = next(policy.parameters())
    return torch.ones(1, 1, dtype=ref.dtype, device=ref.device)


def categorical_probs(policy: nn.Module) -> torch.Tensor:
    """π(·) of a categorical policy at the constant observation, ``[n_actions]``."""
    with torch.no_grad():
        return policy.distribution(constant_obs(policy)).probs[0].detach().cpu().double()


def _linear_head(policy: nn.Module, what: str) -> nn.Linear:
    # With actor.hidden=[] (and no input LayerNorm) the policy is body = identity, head = Linear,
    # so at the observation [1.0] the head's output is weight[:, 0] + bias.
    body = getattr(policy, "body", None)
    if body is None or len(getattr(body, "hidden", (0,))) != 0 or getattr(body, "input_norm", True):
        raise ValueError(
            f"{what}: the policy must be a linear head (actor.hidden=[], no input_norm) to set an "
            "exact initial policy"
        )
    return policy.head


def set_categorical_policy(policy: nn.Module, probs: Sequence[float]) -> None:
    """Make a linear categorical policy output exactly ``probs`` at the constant observation
    (weight 0, bias = log π)."""
    head = _linear_head(policy, "set_categorical_policy")
    p = torch.as_tensor(list(probs), dtype=torch.float64)
    if p.shape != (head.out_features,) or bool((p <= 0).any()) or abs(float(p.sum()) - 1) > 1e-9:
        raise ValueError(
            f"set_categorical_policy: 'probs' must be {head.out_features} positive numbers summing "
            f"to 1, got {list(probs)}"
        )
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(p.log().to(head.bias.dtype))


def gaussian_mean(policy: nn.Module) -> float:
    """μ of a one-dimensional Gaussian policy at the constant observation."""
    with torch.no_grad():
        return float(policy.distribution(constant_obs(policy)).loc[0, 0])


def set_gaussian_policy(policy: nn.Module, mean: float, std: float, learn_std: bool) -> None:
    """Make a linear 1-D Gaussian policy N(``mean``, ``std``²) at the constant observation;
    ``learn_std=False`` freezes log σ (``requires_grad`` off: the updates then move only μ)."""
    head = _linear_head(policy, "set_gaussian_policy")
    if head.out_features != 1 or getattr(policy, "log_std", None) is None:
        raise ValueError("set_gaussian_policy: the policy must be a 1-D Gaussian")
    if not (std > 0 and math.isfinite(std)):
        raise ValueError(f"set_gaussian_policy: 'std' must be positive, got {std}")
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(float(mean))
        policy.log_std.fill_(math.log(std))
    policy.log_std.requires_grad_(learn_std)


def required_seeds(num_seeds: int) -> int:
    """How many seeds a claim must hold on: ⌈:data:`REQUIRED_FRACTION` · seeds⌉ (9 of 10)."""
    return math.ceil(REQUIRED_FRACTION * num_seeds - 1e-9)


def summarise(
    name: str,
    claim: str,
    paper: str,
    settings: dict[str, Any],
    per_seed: list[dict[str, Any]],
    started: float,
    **extra: Any,
) -> dict[str, Any]:
    """The result dict every experiment returns and writes as ``<name>.json``.

    Each entry of ``per_seed`` carries its own ``"held"`` (bool); the summary counts them.
    """
    held = sum(bool(s["held"]) for s in per_seed)
    need = required_seeds(len(per_seed))
    return {
        "name": name,
        "paper": paper,
        "claim": claim,
        "command": f"haml reproduce {name}",
        "num_seeds": len(per_seed),
        "held_count": held,
        "required_count": need,
        "reproduced": held >= need,
        "settings": settings,
        **extra,
        "seeds": per_seed,
        "seconds": round(time.perf_counter() - started, 3),
    }


def write_outputs(
    result: dict[str, Any],
    out_dir: Path,
    draw: Callable[[dict[str, Any]], Figure] | None,
) -> dict[str, Any]:
    """Write ``<out>/<name>.json`` and, when ``draw`` is given, ``<out>/<name>.png``; returns
    ``result`` with ``"json"`` and ``"figure"`` (paths as strings, or None)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = result["name"]
    figure_path = None
    if draw is not None:
        figure = draw(result)
        figure_path = out_dir / f"{name}.png"
        figure.savefig(figure_path, dpi=110, bbox_inches="tight")
    json_path = out_dir / f"{name}.json"
    result = {**result, "json": str(json_path), "figure": None if figure_path is None else str(figure_path)}
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result
