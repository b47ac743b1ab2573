"""haml.envs.base: the one episode tracker of the host-side adapters and the one episode mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from haml.envs.base import EpisodeStats, EpisodeTracker, episode_means


def test_episode_means_average_return_length_and_every_metric():
    episodes = [
        EpisodeStats(ret=1.0, length=2, metrics={"win": 1.0}),
        EpisodeStats(ret=3.0, length=4, metrics={"win": 0.0, "dead_allies": 2.0}),
    ]
    means = episode_means(episodes)
    assert means.ret == 2.0 and means.length == 3.0
    # a metric an episode lacks counts 0.0 for it; keys come sorted
    assert means.metrics == {"dead_allies": 1.0, "win": 0.5}
    assert list(means.metrics) == ["dead_allies", "win"]


def test_episode_means_of_no_episode_is_an_error():
    with pytest.raises(ValueError, match="no episodes"):
        episode_means([])


def test_tracker_reports_ended_episodes_in_env_order_and_starts_them_anew():
    tracker = EpisodeTracker(3)
    assert tracker.step(np.array([1.0, 2.0, 3.0]), np.array([False, False, False])) == []
    ended = tracker.step(
        np.array([1.0, 1.0, 1.0]), np.array([True, False, True]), lambda e: {"env_twice": 2.0 * e}
    )
    assert [(ep.env, ep.ret, ep.length, ep.metrics) for ep in ended] == [
        (0, 2.0, 2, {"env_twice": 0.0}),
        (2, 4.0, 2, {"env_twice": 4.0}),
    ]
    (last,) = tracker.step(np.array([0.5, 0.5, 0.5]), np.array([False, True, False]))
    assert (last.env, last.ret, last.length, last.metrics) == (1, 3.5, 3, {})
    tracker.reset()
    (fresh,) = tracker.step(np.array([0.0, 0.0, 7.0]), np.array([False, False, True]))
    assert (fresh.ret, fresh.length) == (7.0, 1)


def test_tracker_state_round_trips_the_running_episodes():
    tracker = EpisodeTracker(2)
    tracker.step(np.array([1.5, 2.5], dtype=np.float32), np.array([False, False]))
    state = tracker.state_dict()
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    other = EpisodeTracker(2)
    other.load_state_dict(state)
    tracker.returns[:] = 0.0  # the state is a copy, not a view
    (episode,) = other.step(np.array([1.0, 1.0]), np.array([False, True]))
    assert (episode.env, episode.ret, episode.length) == (1, 3.5, 2)
