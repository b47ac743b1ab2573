"""Rollout storage of the on-policy runner and the replay buffer of the off-policy one."""

from haml.buffers.replay import ReplayBuffer, ReplaySample, bytes_per_transition

__all__ = ["ReplayBuffer", "ReplaySample", "bytes_per_transition"]
