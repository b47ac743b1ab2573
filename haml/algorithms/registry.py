"""The registered on-policy algorithms: name → what makes each one what it is.

Every algorithm runs through the one on-policy runner (:mod:`haml.runners.on_policy`); an entry
only says how its actors are updated and arranged (paper 000 §4, paper 001 §4):

- ``update``: the per-agent actor update, ``"ppo"`` (the factor-weighted clipped surrogate; with
  ``clip = 0`` the A2C objective) or ``"trpo"`` (the trust-region step);
- ``sequential``: agents update one after another in a fresh random order, each weighted by the
  factor M of those updated before it (HA), or all at once from the same data with M = 1 (MA);
- ``share_actors``: one policy for all agents (parameter sharing; needs equal spaces);
- ``critic``: ``"central"``, one V(s) on the global state, or ``"local"``, one V(o^i) per agent
  on its own observation (IPPO).
"""

from __future__ import annotations

from dataclasses import dataclass

from haml.config.schema import A2CConfig, PPOConfig, TRPOConfig

__all__ = ["AlgoSpec", "ALGORITHMS", "algo_names", "algo_spec"]


@dataclass(frozen=True)
class AlgoSpec:
    name: str
    config_cls: type
    update: str
    sequential: bool
    share_actors: bool
    critic: str
    summary: str


_ENTRIES = (
    AlgoSpec("happo", PPOConfig, "ppo", True, False, "central",
             "HAPPO (paper 000, Algorithm 3): sequential clipped updates weighted by M"),
    AlgoSpec("hatrpo", TRPOConfig, "trpo", True, False, "central",
             "HATRPO (paper 000, Algorithm 2): sequential trust-region steps weighted by M"),
    AlgoSpec("haa2c", A2CConfig, "ppo", True, False, "central",
             "HAA2C (paper 001): sequential factor-weighted A2C, several mini-epochs"),
    AlgoSpec("mappo", PPOConfig, "ppo", False, True, "central",
             "MAPPO with parameter sharing: one policy, simultaneous clipped updates"),
    AlgoSpec("mappo_ns", PPOConfig, "ppo", False, False, "central",
             "MAPPO without parameter sharing: one policy per agent, simultaneous updates"),
    AlgoSpec("ippo", PPOConfig, "ppo", False, False, "local",
             "IPPO: per-agent policies and per-agent critics V(o^i), simultaneous updates"),
    AlgoSpec("maa2c_s", A2CConfig, "ppo", False, True, "central",
             "MAA2C-S (paper 001): shared-parameter A2C, simultaneous updates"),
    AlgoSpec("maa2c_ns", A2CConfig, "ppo", False, False, "central",
             "MAA2C-NS (paper 001): per-agent A2C, simultaneous updates"),
)

ALGORITHMS: dict[str, AlgoSpec] = {spec.name: spec for spec in _ENTRIES}


def algo_names() -> list[str]:
    """The registered algorithm names."""
    return list(ALGORITHMS)


def algo_spec(name: str) -> AlgoSpec:
    """The entry of ``name``; an unknown name is an error listing the valid ones."""
    if not isinstance(name, str) or name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {algo_names()}")
    return ALGORITHMS[name]
