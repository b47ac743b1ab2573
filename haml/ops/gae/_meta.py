"""Fake (meta) kernel of haml::gae, so that torch.compile and opcheck can trace the native op."""

from __future__ import annotations

import torch


@torch.library.register_fake("haml::gae")
def _gae_fake(rewards, values, next_values, terminated, truncated, gamma, lam):
    return torch.empty_like(rewards), torch.empty_like(rewards)
