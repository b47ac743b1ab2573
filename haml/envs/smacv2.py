"""SMACv2: oxwhirl's ``smacv2`` package, SMAC with procedurally generated scenarios.

A task is ``"<race>_<allies>_vs_<enemies>"`` (:data:`TASKS`: the 15 scenarios of the SMACv2 paper,
protoss/terran/zerg × 5v5, 10v10, 20v20, 10v11, 20v23). Every episode draws new teams and start
positions: the race's map ``10gen_<race>`` is played through smacv2's
``StarCraftCapabilityEnvWrapper`` with the scenario's ``capability_config``
(:func:`capability_config`), the one smacv2's own configs (and HARL's) use:

- ``team_gen``: ``weighted_teams``, each unit drawn from the race's three unit types with
  probabilities 0.45/0.45/0.1: protoss stalker/zealot/colossus, terran marine/marauder/medivac,
  zerg zergling/hydralisk/baneling; a team made only of the "exception" type (terran medivacs,
  zerg banelings) is drawn again; the agents observe the unit types (``observe: True``);
- ``start_positions``: ``surrounded_and_reflect`` with ``p = 0.5`` on the 32 × 32 map: half the
  episodes the allies start in the middle, surrounded by enemy groups, the other half the teams
  face each other, the enemies mirrored from the allies;
- ``n_units``/``n_enemies``: the scenario's team sizes (with more enemies than allies, the extra
  enemies are drawn on top of the mirrored team).

The StarCraft2Env arguments of those configs are :class:`Options`' defaults (``obs_own_pos``,
``use_unit_ranges``, ``min_attack_range=2``, no conic field of view); ``Options.capability_config``
replaces the scenario's config entirely (the task then picks only the race).

Everything else (observations with the agent id, available-action masks, alive flags from the
units' health, terminated vs truncated, the ``win`` metric, seeding, no exact resume) is the SMAC
adapter's, :mod:`haml.envs.smac`. One difference: SMACv2 draws teams and start positions from
unseeded random generators, so the seed fixes the StarCraft II game, not the scenarios drawn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from haml.envs import smac
from haml.envs.gym_adapter import ParallelEnvAdapter
from haml.envs.smac import StarCraftVectorEnv

__all__ = [
    "RACES",
    "TASKS",
    "TEAM_SIZES",
    "Options",
    "capability_config",
    "default_smacv2_env",
    "import_smacv2_env_class",
    "make_single_env",
    "make_vector_env",
    "map_name",
    "parse_task",
]

ENV_NAME = "smacv2"

RACES: tuple[str, ...] = ("protoss", "terran", "zerg")

TEAM_SIZES: tuple[tuple[int, int], ...] = ((5, 5), (10, 10), (20, 20), (10, 11), (20, 23))
"""(allies, enemies) of the SMACv2 paper's scenarios."""

TASKS: tuple[str, ...] = tuple(
    f"{race}_{allies}_vs_{enemies}" for allies, enemies in TEAM_SIZES for race in RACES
)

_UNIT_TYPES: dict[str, tuple[tuple[str, float], ...]] = {
    "protoss": (("stalker", 0.45), ("zealot", 0.45), ("colossus", 0.1)),
    "terran": (("marine", 0.45), ("marauder", 0.45), ("medivac", 0.1)),
    "zerg": (("zergling", 0.45), ("baneling", 0.1), ("hydralisk", 0.45)),
}
"""Each race's unit types and the probability of drawing each (smacv2's ``sc2_gen_*`` configs)."""

_EXCEPTION_UNIT_TYPES: dict[str, tuple[str, ...]] = {
    "protoss": (),
    "terran": ("medivac",),
    "zerg": ("baneling",),
}
"""Unit types a team may not consist of alone (medivacs cannot attack; banelings die on their
first attack)."""

MAP_SIZE = 32
"""Side of the ``10gen_*`` maps' playable square (the start-position distributions need it)."""


def parse_task(task: str) -> tuple[str, int, int]:
    """``"<race>_<allies>_vs_<enemies>"`` → ``(race, allies, enemies)``; one of :data:`TASKS`."""
    smac.check_task(task, TASKS, "SMACv2")
    match = re.fullmatch(r"([a-z]+)_(\d+)_vs_(\d+)", task)
    assert match is not None  # every name in TASKS has this form
    return match[1], int(match[2]), int(match[3])


def map_name(task: str) -> str:
    """The SMACv2 map a task is played on: ``10gen_<race>``."""
    return f"10gen_{parse_task(task)[0]}"


def capability_config(task: str) -> dict[str, Any]:
    """The standard ``capability_config`` of a SMACv2 scenario (a new dict every call)."""
    race, allies, enemies = parse_task(task)
    unit_types, weights = zip(*_UNIT_TYPES[race])
    team_gen: dict[str, Any] = {
        "dist_type": "weighted_teams",
        "unit_types": list(unit_types),
        "weights": list(weights),
        "observe": True,
    }
    if _EXCEPTION_UNIT_TYPES[race]:
        team_gen["exception_unit_types"] = list(_EXCEPTION_UNIT_TYPES[race])
    return {
        "n_units": allies,
        "n_enemies": enemies,
        "team_gen": team_gen,
        "start_positions": {
            "dist_type": "surrounded_and_reflect",
            "p": 0.5,
            "map_x": MAP_SIZE,
            "map_y": MAP_SIZE,
        },
    }


@dataclass(frozen=True)
class Options(smac.Options):
    """SMACv2 options: :class:`haml.envs.smac.Options` and SMACv2's own StarCraft2Env arguments
    (defaults: smacv2's scenario configs). ``env_factory`` None builds smacv2's
    ``StarCraftCapabilityEnvWrapper``."""

    obs_own_pos: bool = True
    """Observations include the agent's own position."""
    obs_timestep_number: bool = False
    """Observations include the episode's step number."""
    state_timestep_number: bool = False
    """The global state includes the episode's step number."""
    conic_fov: bool = False
    """Agents see a cone (turned by num_fov_actions extra actions) instead of a circle."""
    num_fov_actions: int = 12
    """With conic_fov: the number of directions the cone can face."""
    use_unit_ranges: bool = True
    """Each unit type has its own attack range (not SMAC's uniform 6)."""
    min_attack_range: int = 2
    """With use_unit_ranges: the shortest attack range (melee units)."""
    fully_observable: bool = False
    """Agents see every unit, not only those in sight range."""
    capability_config: dict[str, Any] | None = None
    """Replaces the task's capability_config (:func:`capability_config`); None: the task's."""

    _ENV_KWARG_FIELDS: ClassVar[tuple[str, ...]] = smac.Options._ENV_KWARG_FIELDS + (
        "obs_own_pos",
        "obs_timestep_number",
        "state_timestep_number",
        "conic_fov",
        "num_fov_actions",
        "use_unit_ranges",
        "min_attack_range",
        "fully_observable",
    )
    _SET_BY_FAMILY: ClassVar[tuple[str, ...]] = ("map_name", "seed", "capability_config")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_fov_actions < 1:
            raise ValueError(f"num_fov_actions must be >= 1, got {self.num_fov_actions}")
        if self.min_attack_range < 0:
            raise ValueError(f"min_attack_range must be >= 0, got {self.min_attack_range}")
        config = self.capability_config
        if config is not None and (
            not isinstance(config, dict) or not {"n_units", "n_enemies"} <= set(config)
        ):
            raise ValueError(
                "capability_config must be a dict with at least 'n_units' and 'n_enemies' (and "
                f"the distributions, see haml.envs.smacv2.capability_config), got {config!r}"
            )


def import_smacv2_env_class() -> type:
    """smacv2's ``StarCraftCapabilityEnvWrapper``, or an ``ImportError`` saying what to install."""
    return smac.import_oxwhirl_env_class(
        "smacv2", smac.SMACV2_GITHUB, "StarCraftCapabilityEnvWrapper"
    )


def default_smacv2_env(**kwargs: Any) -> Any:
    """``smacv2.env.StarCraftCapabilityEnvWrapper(**kwargs)`` (the default ``env_factory``)."""
    return smac.build_oxwhirl_env(import_smacv2_env_class(), kwargs)


def _check_options(options: Options | None) -> Options:
    if options is None:
        return Options()
    if not isinstance(options, Options):
        raise TypeError(
            f"options must be haml.envs.smacv2.Options, got {type(options).__module__}."
            f"{type(options).__qualname__}"
        )
    return options


def _env_kwargs(task: str, options: Options) -> dict[str, Any]:
    config = options.capability_config
    return {
        "map_name": map_name(task),
        "capability_config": capability_config(task) if config is None else config,
        **smac.env_kwargs(options),
    }


def make_single_env(
    task: str, options: Options | None = None, env_index: int = 0
) -> ParallelEnvAdapter:
    """One SMACv2 env as a gymnasium env (what each vector-env worker builds)."""
    options = _check_options(options)
    factory = options.env_factory or default_smacv2_env
    return smac.make_starcraft_adapter(
        ENV_NAME, task, _env_kwargs(task, options), factory, options, env_index
    )


def make_vector_env(
    task: str,
    num_envs: int,
    options: Options | None = None,
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> StarCraftVectorEnv:
    """``num_envs`` copies of a SMACv2 scenario as a :class:`~haml.envs.base.VectorMultiAgentEnv`.

    Env ``e`` is seeded with ``seed + e`` when its game is launched (the first reset).
    """
    options = _check_options(options)
    factory = options.env_factory or default_smacv2_env
    return smac.make_starcraft_vector_env(
        ENV_NAME, task, num_envs, options, _env_kwargs(task, options), factory, device, seed
    )
