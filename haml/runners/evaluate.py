"""One evaluation loop for training runs and ``haml eval``: deterministic actions (the Gaussian's
mean, the categorical's mode) until a number of whole episodes have finished.

Which episodes count: each of the ``E`` envs contributes its first ``episodes // E`` episodes (the
first ``episodes % E`` envs one more). Taking the first ``episodes`` to end, whatever the env,
would over-sample short episodes: on SMAX 3m, won episodes are 1.4 to 2 steps shorter than lost
ones, which biases a win rate upwards. Episodes whose adapter does not report their env
(``EpisodeStats.env`` None) count in the order they end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from haml.envs.base import EpisodeStats, VectorMultiAgentEnv, episode_means
from haml.runners.acting import JointActor

__all__ = ["EvalResult", "evaluate"]

_DEFAULT_EPISODE_CAP = 100_000
"""Step cap per episode when the task declares no limit: an env that never ends an episode must
give an error, not hang the run."""


@dataclass
class EvalResult:
    mean_return: float
    std_return: float
    episodes: list[EpisodeStats] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        """Means of the env-specific episode metrics (e.g. win rate)."""
        return episode_means(self.episodes).metrics

    @property
    def mean_length(self) -> float:
        """Mean episode length in steps."""
        return episode_means(self.episodes).length


@torch.no_grad()
def evaluate(
    policies: Sequence[torch.nn.Module],
    env: VectorMultiAgentEnv,
    episodes: int,
    seed: int | None = None,
    deterministic: bool = True,
    on_episode: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Run ``policies`` (one per agent; the same module may repeat) on ``env`` until ``episodes``
    episodes have ended, the same number from every env (see the module doc), and average them.

    ``on_episode(done, episodes)`` is called after each episode that counts (progress reports)."""
    if episodes < 1:
        raise ValueError(f"evaluate: 'episodes' must be >= 1, got {episodes}")
    if len(policies) != env.spec.n_agents:
        raise ValueError(
            f"evaluate: got {len(policies)} policies for {env.spec.n_agents} agents"
        )
    num_envs = env.num_envs
    limit = env.spec.episode_limit or _DEFAULT_EPISODE_CAP
    max_steps = limit * (math.ceil(episodes / num_envs) + 1)
    share = [episodes // num_envs + (1 if e < episodes % num_envs else 0) for e in range(num_envs)]
    step = env.reset(seed=seed)
    actor = JointActor(policies, num_envs)
    finished: list[EpisodeStats] = []
    for _ in range(max_steps):
        actions, _, _ = actor.act(step, deterministic=deterministic)
        step = env.step(actions)
        actor.observe(step)
        for episode in step.episodes:
            if episode.env is not None:
                if share[episode.env] == 0:  # the env's share is full
                    continue
                share[episode.env] -= 1
            finished.append(episode)
            if on_episode is not None and len(finished) <= episodes:
                on_episode(len(finished), episodes)
        if len(finished) >= episodes:
            break
    else:
        raise RuntimeError(
            f"evaluate: only {len(finished)} of {episodes} episodes ended within {max_steps} steps"
        )
    counted = finished[:episodes]
    returns = torch.tensor([ep.ret for ep in counted], dtype=torch.float64)
    std = float(returns.std(unbiased=False)) if len(returns) > 1 else 0.0
    return EvalResult(episode_means(counted).ret, std, counted)
