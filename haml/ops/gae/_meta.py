"""Fake (meta) kernel of haml::gae, so that torch.compile and opcheck can trace the native op."""

from __future__ import annotations

import torch


@torch.library.register_fake("haml::gae")
def _gae_fake(rewards, values, next_values, terminated, truncated, gamma, lam):
    # The kernels return contiguous tensors whatever the input strides (empty_like would not).
    return rewards.new_empty(rewards.shape), rewards.new_empty(rewards.shape)
