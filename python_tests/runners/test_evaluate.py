"""Which episodes an evaluation averages: the same number from every env, so that short episodes
are not over-sampled (haml/runners/evaluate.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from gymnasium import spaces

from haml.envs.base import EnvSpec, EnvStep, EpisodeStats
from haml.models import MLPPolicy
from haml.runners.evaluate import evaluate


class UnevenEpisodes:
    """One agent; env ``e`` plays episodes of ``lengths[e]`` steps whose return is ``returns[e]``
    (the reward comes at the last step). ``report_env=False`` leaves ``EpisodeStats.env`` unset."""

    def __init__(self, lengths: list[int], returns: list[float], report_env: bool = True) -> None:
        self.lengths = lengths
        self.returns = returns
        self.report_env = report_env
        self.num_envs = len(lengths)
        self.device = torch.device("cpu")
        box = spaces.Box(-1.0, 1.0, (2,))
        self.spec = EnvSpec(
            env="test", task="uneven", n_agents=1, obs_spaces=(box,),
            action_spaces=(spaces.Discrete(2),), state_space=box, episode_limit=max(lengths),
        )
        self.t = [0] * self.num_envs

    def _step(self, reward: list[float], done: list[bool], episodes: list[EpisodeStats]) -> EnvStep:
        obs = torch.zeros(self.num_envs, 2)
        done_t = torch.tensor(done)
        return EnvStep(
            obs=(obs,), state=obs, reward=torch.tensor(reward), terminated=done_t,
            truncated=torch.zeros_like(done_t), final_obs=(obs,), final_state=obs,
            episodes=episodes,
        )

    def reset(self, seed: int | None = None) -> EnvStep:
        self.t = [0] * self.num_envs
        return self._step([0.0] * self.num_envs, [False] * self.num_envs, [])

    def step(self, actions: Any) -> EnvStep:
        reward, done, episodes = [], [], []
        for e in range(self.num_envs):
            self.t[e] += 1
            ended = self.t[e] == self.lengths[e]
            reward.append(self.returns[e] if ended else 0.0)
            done.append(ended)
            if ended:
                env = e if self.report_env else None
                episodes.append(EpisodeStats(self.returns[e], self.lengths[e], env=env))
                self.t[e] = 0
        return self._step(reward, done, episodes)

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _policy() -> MLPPolicy:
    return MLPPolicy(2, spaces.Discrete(2), hidden=(4,))


@pytest.mark.parametrize("episodes", [2, 6, 7])
def test_every_env_contributes_its_share(episodes: int) -> None:
    # Env 0 ends an episode every step (return 1), env 1 every 5 steps (return 0): the first
    # episodes to end would be nearly all env 0's.
    env = UnevenEpisodes([1, 5], [1.0, 0.0])
    result = evaluate([_policy()], env, episodes)
    counts = [sum(ep.env == e for ep in result.episodes) for e in range(2)]
    assert counts == [episodes - episodes // 2, episodes // 2]
    assert result.mean_return == pytest.approx(counts[0] / episodes)


def test_more_envs_than_episodes_takes_one_from_the_first_envs() -> None:
    env = UnevenEpisodes([3, 1, 2, 1], [0.0, 1.0, 2.0, 3.0])
    result = evaluate([_policy()], env, 2)
    assert sorted(ep.env for ep in result.episodes) == [0, 1]
    assert result.mean_return == pytest.approx(0.5)


def test_episodes_without_an_env_index_count_as_they_end() -> None:
    env = UnevenEpisodes([1, 5], [1.0, 0.0], report_env=False)
    result = evaluate([_policy()], env, 4)
    # Steps 1-4: env 0 ends four episodes before env 1 ends its first.
    assert [ep.ret for ep in result.episodes] == [1.0] * 4


def test_progress_is_reported_after_every_counted_episode() -> None:
    seen = []
    env = UnevenEpisodes([1, 3], [1.0, 3.0])
    evaluate([_policy()], env, 4, on_episode=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_eval_progress_lines_are_throttled_but_the_last_always_comes() -> None:
    import haml.evaluation as E

    clock = iter([0.0, 0.5, 1.0, 2.5, 2.6, 2.7])
    lines = []
    progress = E._Progress(lines.append, interval=2.0, clock=lambda: next(clock))
    for n in range(1, 6):
        progress(f"eval: {n}/6 episodes")
    progress("eval: 6/6 episodes", last=True)
    assert lines == ["eval: 1/6 episodes", "eval: 4/6 episodes", "eval: 6/6 episodes"]
    E._Progress(None)("nothing happens without a writer", last=True)


def test_render_progress_counts_the_frames_written() -> None:
    import haml.evaluation as E

    lines = []
    frames = list(E._counted(iter(["a", "b", "c"]), E._Progress(lines.append, interval=0.0)))
    assert frames == ["a", "b", "c"]
    assert lines == [f"render: {n} frames written" for n in (1, 2, 3)]  # the last not twice


def test_the_video_name_is_the_one_the_help_gives() -> None:
    from pathlib import Path

    from haml import cli
    from haml.evaluation import video_path

    assert video_path(Path("run"), 50) == Path("run/videos/eval-iter-000050.mp4")
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "eval" in a.choices)
    render = next(a for a in subparsers.choices["eval"]._actions if "--render" in a.option_strings)
    assert "RUN_DIR/videos/eval-iter-<iteration>.mp4" in render.help
    assert "eval-iter-000050.mp4" in render.help
