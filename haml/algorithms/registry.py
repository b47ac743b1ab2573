"""The registered algorithms: name → everything that makes each one what it is.

An entry (:class:`AlgoSpec`) is the one place an algorithm is described; the runners, the config
loader and the CLI read it and never test an algorithm's name. Adding an algorithm is one module
(its config dataclass and its learner) plus one entry here (plus its YAML defaults); see
docs/DESIGN.md, "Extending haml".
"""

from __future__ import annotations

from dataclasses import dataclass

from haml.algorithms.haa2c import A2CActorLearner, A2CConfig
from haml.algorithms.had3qn import HAD3QNConfig, HAD3QNLearner
from haml.algorithms.haddpg import DDPGLearner, HADDPGConfig
from haml.algorithms.happo import PPOActorLearner, PPOConfig
from haml.algorithms.hasac import HASACConfig, SACLearner
from haml.algorithms.hatd3 import TD3Config, TD3Learner
from haml.algorithms.hatrpo import TRPOActorLearner, TRPOConfig

__all__ = [
    "ACTION_KINDS",
    "ALGORITHMS",
    "AlgoSpec",
    "RUNNER_KINDS",
    "algo_names",
    "algo_spec",
    "algos_for_action_kind",
]

RUNNER_KINDS = ("on_policy", "off_policy")
"""The runner families (:func:`haml.runners.make_runner` maps each to its runner class)."""

ACTION_KINDS = ("continuous", "discrete")
"""``continuous``: every agent's action space is a Box; ``discrete``: a Discrete one."""

_BOTH = frozenset(ACTION_KINDS)
_CONTINUOUS = frozenset({"continuous"})
_DISCRETE = frozenset({"discrete"})


@dataclass(frozen=True)
class AlgoSpec:
    """What makes an algorithm ([HATRPO] §4, [HAML] §4 for the on-policy family)."""

    name: str
    config_cls: type
    """The dataclass of its ``algo:`` config section."""
    learner: type
    """What the runner trains with. On-policy: one agent's (or a shared policy's) actor update,
    ``learner(policy, cfg.algo)`` (:class:`~haml.algorithms.base.ActorLearner`); the runner keeps
    the V critic. Off-policy: every actor and the Q critic,
    ``learner(policies, critic, cfg.algo, gamma=..., sequential=...)``."""
    runner: str
    """Which runner trains it (one of :data:`RUNNER_KINDS`)."""
    sequential: bool
    """Agents update one after another in a fresh random order, each weighted by the factor M
    of those updated before it (HA); else all at once from the same data with M = 1 (MA)."""
    share_actors: bool
    """One policy for all agents (parameter sharing; needs equal spaces)."""
    critic: str
    """``"central"``, one critic on the global state (V(s) on-policy, Q(s, a¹..aⁿ) off-policy),
    or ``"local"``, one V(o^i) per agent on its own observation (IPPO)."""
    action_kinds: frozenset[str]
    """The kinds of action space it can act in (subset of :data:`ACTION_KINDS`)."""
    summary: str


_ENTRIES = (
    AlgoSpec("happo", PPOConfig, PPOActorLearner, "on_policy", True, False, "central", _BOTH,
             "HAPPO ([HATRPO], Algorithm 3): sequential clipped updates weighted by M"),
    AlgoSpec("hatrpo", TRPOConfig, TRPOActorLearner, "on_policy", True, False, "central", _BOTH,
             "HATRPO ([HATRPO], Algorithm 2): sequential trust-region steps weighted by M"),
    AlgoSpec("haa2c", A2CConfig, A2CActorLearner, "on_policy", True, False, "central", _BOTH,
             "HAA2C ([HAML]): sequential factor-weighted A2C, several mini-epochs"),
    AlgoSpec("mappo", PPOConfig, PPOActorLearner, "on_policy", False, True, "central", _BOTH,
             "MAPPO with parameter sharing: one policy, simultaneous clipped updates"),
    AlgoSpec("mappo_ns", PPOConfig, PPOActorLearner, "on_policy", False, False, "central", _BOTH,
             "MAPPO without parameter sharing: one policy per agent, simultaneous updates"),
    AlgoSpec("ippo", PPOConfig, PPOActorLearner, "on_policy", False, False, "local", _BOTH,
             "IPPO: per-agent policies and per-agent critics V(o^i), simultaneous updates"),
    AlgoSpec("maa2c_s", A2CConfig, A2CActorLearner, "on_policy", False, True, "central", _BOTH,
             "MAA2C-S ([HAML]): shared-parameter A2C, simultaneous updates"),
    AlgoSpec("maa2c_ns", A2CConfig, A2CActorLearner, "on_policy", False, False, "central", _BOTH,
             "MAA2C-NS ([HAML]): per-agent A2C, simultaneous updates"),
    AlgoSpec("haddpg", HADDPGConfig, DDPGLearner, "off_policy", True, False, "central", _CONTINUOUS,
             "HADDPG ([HAML], Algorithm 3): deterministic actors stepping in a random order on Q"),
    AlgoSpec("maddpg", HADDPGConfig, DDPGLearner, "off_policy", False, False, "central", _CONTINUOUS,
             "MADDPG ([HAML], eq. (3)): deterministic actors stepping at once on Q"),
    AlgoSpec("hasac", HASACConfig, SACLearner, "off_policy", True, False, "central", _BOTH,
             "HASAC ([HASAC]): stochastic actors stepping in a random order on a soft twin Q"),
    AlgoSpec("hatd3", TD3Config, TD3Learner, "off_policy", True, False, "central", _CONTINUOUS,
             "HATD3 ([HARL]): HADDPG with twin Q, target smoothing and delayed actor steps"),
    AlgoSpec("matd3", TD3Config, TD3Learner, "off_policy", False, False, "central", _CONTINUOUS,
             "MATD3: MADDPG with twin Q, target smoothing and delayed actor steps"),
    AlgoSpec("had3qn", HAD3QNConfig, HAD3QNLearner, "off_policy", True, False, "central", _DISCRETE,
             "HAD3QN ([HARL]): dueling agent Q networks regressed in a random order on a joint-action Q"),
)

for _entry in _ENTRIES:
    if _entry.runner not in RUNNER_KINDS or not _entry.action_kinds <= _BOTH:
        raise ValueError(f"registry entry {_entry.name!r}: unknown runner kind or action kind")

ALGORITHMS: dict[str, AlgoSpec] = {spec.name: spec for spec in _ENTRIES}


def algo_names() -> list[str]:
    """The registered algorithm names."""
    return list(ALGORITHMS)


def algo_spec(name: str) -> AlgoSpec:
    """The entry of ``name``; an unknown name is an error listing the valid ones."""
    if not isinstance(name, str) or name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {algo_names()}")
    return ALGORITHMS[name]


def algos_for_action_kind(kind: str) -> list[str]:
    """The registered algorithms that can act in ``kind`` action spaces."""
    return [name for name, spec in ALGORITHMS.items() if kind in spec.action_kinds]
