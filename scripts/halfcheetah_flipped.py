#!/usr/bin/env python3
"""How much of the time a HalfCheetah run's cheetah spends on its back: the share of steps at
which the torso's pitch (MuJoCo ``qpos[2]``) is past ±π/2, over deterministic episodes of a run's
latest checkpoint. A run that learned to move on its back (a known local optimum of HalfCheetah)
reads near 100 %, an upright one 0 %; docs/RESULTS.md uses it to tell that failure from a
divergence.

    python scripts/halfcheetah_flipped.py runs/results/offpolicy/mamujoco/HalfCheetah-2x3/*/seed-*

Works for MaMuJoCo HalfCheetah tasks (any agent split) of any algorithm.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from haml.config.loader import config_from_dict
from haml.envs.registry import make_env
from haml.evaluation import load_policies
from haml.logging.logger import CONFIG_FILE
from haml.logging.plot import run_key
from haml.runners.evaluate import JointActor
from haml.utils.checkpoint import load_latest_run_checkpoint


def _mujoco_data(env):
    """The MuJoCo ``data`` of the first env of a sync MaMuJoCo vector env."""
    return env._vec.envs[0].parallel_env.single_agent_env.unwrapped.data


def upside_down_share(run_dir: Path, episodes: int = 2, seed: int = 0) -> tuple[float, list[float], int]:
    """(share of steps with |pitch| > π/2, the episodes' returns, the checkpoint's env steps)."""
    # The run's kind from its config.yaml, before its checkpoint (an off-policy one holds the
    # replay buffer, about 1 GB) is read.
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    key = run_key(run_dir)
    if key.env != "mamujoco" or not key.task.startswith("HalfCheetah"):
        raise ValueError(f"{run_dir} is a {key.env}/{key.task} run, not a MaMuJoCo HalfCheetah one")
    _, state, _ = load_latest_run_checkpoint(run_dir)
    cfg = config_from_dict(state["config"])
    options = {k: v for k, v in dict(cfg.env.options).items() if k != "vectorization"}
    env = make_env(cfg.env.name, cfg.env.task, num_envs=1, seed=seed, device=torch.device("cpu"),
                   vectorization="sync", **options)
    try:
        _, policies = load_policies(state, env.spec, torch.device("cpu"), cfg)
        actor = JointActor(policies, 1)
        step = env.reset(seed=seed)
        data = _mujoco_data(env)  # reset and autoreset keep the object, only its values change
        upside_down = steps = 0
        returns: list[float] = []
        with torch.no_grad():
            while len(returns) < episodes:
                actions, _, _ = actor.act(step, deterministic=True)
                step = env.step(actions)
                actor.observe(step)
                upside_down += abs(float(data.qpos[2])) > math.pi / 2
                steps += 1
                returns += [float(episode.ret) for episode in step.episodes]
    finally:
        env.close()
    return upside_down / steps, returns[:episodes], int(state["runner"]["env_steps"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--episodes", type=int, default=2, help="deterministic episodes (default 2)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    torch.set_num_threads(1)
    status = 0
    for run in args.runs:
        try:
            share, returns, env_steps = upside_down_share(run, args.episodes)
        except (FileNotFoundError, ValueError) as err:
            print(f"{run}: {err}", file=sys.stderr)
            status = 2
            continue
        print(f"{run}: at {env_steps:,} steps, returns {', '.join(f'{r:.0f}' for r in returns)}, "
              f"on its back {share:.0%} of the time")
    return status


if __name__ == "__main__":
    sys.exit(main())
