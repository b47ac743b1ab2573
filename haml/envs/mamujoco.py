"""Multi-agent MuJoCo (MaMuJoCo) through ``gymnasium_robotics.mamujoco_v1``.

A task is ``"<Scenario>-<agent_conf>"``: a Gymnasium MuJoCo robot (v5 models) split into agents,
each controlling some of its joints, e.g. ``"HalfCheetah-2x3"`` (two agents of three joints) or
``"Humanoid-9|8"`` (upper and lower body: 9 and 8 joints). Agents share one team reward; per-agent
observation and action sizes may differ (Hopper-3x1: 8/9/8 observations; Humanoid-9|8: 9 and 8
actions). The global state is ``state()``: the single-agent robot's observation.

What agents observe (:class:`Options`):

- ``fully_observable=True`` (the default): every agent observes the global state followed by its
  one-hot agent id. This is what the papers' code fed every actor (HATRPO/HAPPO's and HARL's
  MaMuJoCo wrappers build ``concat(state, one_hot(i))`` and ignore ``agent_obsk``; HARL's config
  says "we use the fully observable setting"), and what the published results (docs/REFERENCE.md)
  were obtained with. Those wrappers also standardised each observation and state vector by its
  own mean and std; haml does not, because the models' input LayerNorm (on by default, as in
  HARL) computes that same standardisation before its learned scale and shift.
- ``fully_observable=False``: MaMuJoCo's partial observations: an agent observes its own joints
  and those up to ``agent_obsk`` hops away in the robot's joint graph (``agent_obsk=1``, the
  default, is gymnasium_robotics' default and MaMuJoCo's usual setting). ``agent_obsk=None``
  gives every agent the global state without an id.

Episodes are truncated after ``episode_limit`` steps (1000, the papers' episode length); a robot
that falls (Hopper, Walker2d, Ant, Humanoid unhealthy) terminates. The robots come from
``gymnasium.make("<Scenario>-v5")`` without gymnasium's own time limit: the adapter counts the
steps, so that the counter is part of the exact resume state, together with the MuJoCo state and
the env's ``np_random`` (reset noise); see :func:`_get_sim_state`. (The papers ran the v2 robots
of ``gym``/``mujoco-py``; v5 differs in details, so returns are close but not identical.)

``gymnasium_robotics`` and ``mujoco`` are imported only when an env is built.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from haml.envs.gym_adapter import ParallelEnvAdapter, SimStateHooks
from haml.envs.vector import (
    DEFAULT_STEP_TIMEOUT,
    GymVectorEnv,
    check_vector_options,
    make_gym_vector_env,
)

__all__ = [
    "AGENT_CONFS",
    "PAPER_TASKS",
    "TASKS",
    "Options",
    "episode_frames",
    "make_single_env",
    "make_vector_env",
    "parse_task",
]

ENV_NAME = "mamujoco"

PAPER_TASKS: tuple[str, ...] = (
    "HalfCheetah-2x3",
    "HalfCheetah-6x1",
    "Walker2d-2x3",
    "Ant-4x2",
    "Hopper-3x1",
    "Humanoid-9|8",
    "Swimmer-2x1",
    "Reacher-2x1",
    "ManyAgentSwimmer-10x2",
)
"""The MaMuJoCo tasks of the two papers ([HATRPO]: Figure 3, Table 6; [HAML]: Figures 2-3, Table 4)."""

AGENT_CONFS: dict[str, tuple[str, ...]] = {
    "HalfCheetah": ("2x3", "6x1"),
    "Ant": ("2x4", "2x4d", "4x2"),
    "Hopper": ("3x1",),
    "Humanoid": ("9|8",),
    "HumanoidStandup": ("9|8",),
    "Reacher": ("2x1",),
    "Pusher": ("3p",),
    "Swimmer": ("2x1",),
    "Walker2d": ("2x3",),
    # Any "<agents>x<segments per agent>": the robot is generated with agents x segments links.
    "ManySegmentSwimmer": ("10x2",),
    "ManySegmentAnt": ("2x3",),
}
"""The multi-agent factorisations gymnasium_robotics 1.4 defines, per scenario (the two
``ManySegment*`` scenarios take any ``NxK``; the confs listed are the usual ones)."""

_SCENARIO_ALIASES = {"ManyAgentSwimmer": "ManySegmentSwimmer", "ManyAgentAnt": "ManySegmentAnt"}
"""The papers' (and HARL's) names for gymnasium_robotics' many-segment robots."""

_GENERATED_ROBOTS = {"ManySegmentSwimmer": "Swimmer", "ManySegmentAnt": "Ant"}

TASKS: tuple[str, ...] = PAPER_TASKS + (
    "Ant-2x4",
    "Ant-2x4d",
    "HumanoidStandup-9|8",
    "Pusher-3p",
    "ManyAgentAnt-2x3",
)
"""Known task names, the papers' first. Any ``"<Scenario>-<agent_conf>"`` that gymnasium_robotics
can factorise is accepted too (``ManyAgentSwimmer-4x2``, ``ManySegmentAnt-3x2``, ...)."""

_VECTORIZATIONS = ("auto", "async", "sync")

AUTO_ASYNC_MIN_CPUS = 8
"""Cores from which ``vectorization="auto"`` steps envs in subprocesses: the training process
itself keeps about two busy, and a MuJoCo step is short, so below this the IPC costs more than
the parallel simulation saves."""


@dataclass(frozen=True)
class Options:
    """MaMuJoCo options (``haml.envs.make_env("mamujoco", task, **options)``)."""

    fully_observable: bool = True
    """Each agent observes the global state + its one-hot id (the papers' setting); False: the
    partial ``agent_obsk`` observations."""
    agent_obsk: int | None = 1
    """With ``fully_observable=False``: an agent sees the joints up to this many hops from its
    own (gymnasium_robotics' default 1); None: every agent sees the global state (no id)."""
    episode_limit: int = 1000
    """Steps after which an episode is truncated (the papers: 1000)."""
    vectorization: Literal["auto", "async", "sync"] = "auto"
    """"async": one subprocess per env (shared memory); "sync": all envs in this process;
    "auto": async when num_envs > 1 and the machine has at least :data:`AUTO_ASYNC_MIN_CPUS`
    cores. Async pays off only with cores to spare: each step then costs IPC and process
    switches that parallel simulation must repay (docs/BENCHMARKS.md, "Environment adapters")."""
    step_timeout: float | None = DEFAULT_STEP_TIMEOUT
    """Seconds an async step/reset may take before the workers are declared stuck (None: wait
    forever): 30 s, where a step takes well under a millisecond, so only a stuck worker trips
    it. Building the envs in the workers (importing MuJoCo) may take up to 300 s."""
    start_method: str | None = None
    """multiprocessing start method of the async workers ("fork", "forkserver", "spawn"; None:
    the platform's default)."""
    max_concurrency: int | None = None
    """Async only: at most this many workers simulate at once (None: all)."""

    def __post_init__(self) -> None:
        if self.agent_obsk is not None and self.agent_obsk < 0:
            raise ValueError(f"agent_obsk must be >= 0 or None, got {self.agent_obsk}")
        if self.episode_limit < 1:
            raise ValueError(f"episode_limit must be >= 1, got {self.episode_limit}")
        check_vector_options(
            self.vectorization, _VECTORIZATIONS, self.step_timeout, self.start_method,
            self.max_concurrency,
        )

    @property
    def agent_view(self) -> str:
        """The adapter's ``agent_view`` for these options."""
        if self.fully_observable:
            return "state_id"
        return "state" if self.agent_obsk is None else "local"


# -- task names -------------------------------------------------------------------------------


def _unknown_task(task: str, why: str) -> ValueError:
    return ValueError(
        f"unknown MaMuJoCo task {task!r} ({why}); known tasks: {', '.join(TASKS)}; "
        "ManyAgentSwimmer/ManyAgentAnt take any '<agents>x<segments per agent>', e.g. "
        "'ManyAgentSwimmer-4x2'"
    )


def parse_task(task: str) -> tuple[str, str]:
    """``"<Scenario>-<agent_conf>"`` → ``(gymnasium_robotics scenario, agent_conf)``, validated.

    Known factorisations are checked without importing anything; for others, gymnasium_robotics
    is asked (a newer version may define more).
    """
    if not isinstance(task, str) or "-" not in task:
        raise _unknown_task(str(task), "expected '<Scenario>-<agent_conf>'")
    name, conf = task.split("-", 1)
    scenario = _SCENARIO_ALIASES.get(name, name)
    if scenario in _GENERATED_ROBOTS:
        match = re.fullmatch(r"(\d+)x(\d+)", conf)
        if match is None or int(match[1]) < 1 or int(match[2]) < 1:
            raise _unknown_task(task, f"{name} takes '<agents>x<segments per agent>'")
        return scenario, conf
    if conf in AGENT_CONFS.get(scenario, ()):
        return scenario, conf
    try:
        mamujoco = _import_mamujoco()
        mamujoco.get_parts_and_edges(scenario, conf)
    except ImportError:
        raise
    except Exception as err:  # gymnasium_robotics raises a bare Exception for unknown confs
        raise _unknown_task(task, f"gymnasium_robotics: {err}") from None
    return scenario, conf


# -- building one env (runs in the worker processes) ------------------------------------------


def _import_mamujoco() -> Any:
    """``gymnasium_robotics``' MaMuJoCo module, with a clear error when it is not installed."""
    captured = io.StringIO()
    try:
        # gymnasium_robotics prints a notice about its Adroit envs to stderr on import, once per
        # process (so once per env worker): unrelated to MaMuJoCo, so it is dropped; anything
        # else it prints is passed on.
        with contextlib.redirect_stderr(captured):
            from gymnasium_robotics.envs.multiagent_mujoco import mujoco_multi
    except ImportError as err:
        raise ImportError(
            f"MaMuJoCo needs gymnasium-robotics and mujoco ({err}): " 'pip install "haml[mamujoco]"'
        ) from err
    except AttributeError as err:
        # mujoco's OpenGL setup fails inside `import mujoco` when MUJOCO_GL names a backend whose
        # library is missing (MUJOCO_GL=osmesa without libOSMesa: "'NoneType' ... glGetError").
        backend = os.environ.get("MUJOCO_GL")
        if backend is None:
            raise
        raise ImportError(
            f"importing mujoco failed with MUJOCO_GL={backend} ({err}): that OpenGL backend is "
            "not installed here; unset MUJOCO_GL, or use MUJOCO_GL=egl"
        ) from err
    finally:
        for line in captured.getvalue().splitlines():
            if "Adroit" not in line:
                print(line, file=sys.stderr)
    return mujoco_multi


_KNOWN_MODEL_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)
"""Warnings MuJoCo's model compiler prints for gymnasium's own robot files (MuJoCo >= 4 with the
v5 HalfCheetah), once per env: nothing a user can act on, and 20 copies of it buried the
training progress. Other warnings still print."""


@contextlib.contextmanager
def _quiet_known_model_warnings():
    import mujoco

    previous = mujoco.get_mju_user_warning()

    def handler(message: str) -> None:
        if any(known in message for known in _KNOWN_MODEL_WARNINGS):
            return
        if previous is not None:
            previous(message)
        else:
            print(f"MuJoCo warning: {message}", file=sys.stderr)

    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def _make_robot(scenario: str, agent_conf: str) -> Any:
    """The single-agent MuJoCo env to factorise, without a time limit (the adapter counts)."""
    with _quiet_known_model_warnings():
        return _build_robot(scenario, agent_conf)


def _build_robot(scenario: str, agent_conf: str) -> Any:
    import gymnasium

    _import_mamujoco()  # a missing package fails with the pip hint, not deep in an import
    if scenario in _GENERATED_ROBOTS:
        from gymnasium_robotics.envs.multiagent_mujoco import many_segment_ant, many_segment_swimmer

        generator = many_segment_swimmer if scenario == "ManySegmentSwimmer" else many_segment_ant
        n_agents, per_agent = (int(x) for x in agent_conf.split("x"))
        # A private file per env: gymnasium_robotics writes the generated model into its own
        # package directory under a fixed name, which races between concurrent workers.
        fd, path = tempfile.mkstemp(prefix=f"haml-{scenario}-", suffix=".xml")
        os.close(fd)
        try:
            generator.gen_asset(n_segs=n_agents * per_agent, asset_path=path)
            robot = gymnasium.make(
                f"{_GENERATED_ROBOTS[scenario]}-v5", xml_file=path, disable_env_checker=True
            )
        finally:
            os.remove(path)
        return robot.unwrapped
    if scenario == "CoupledHalfCheetah":
        from gymnasium_robotics.envs.multiagent_mujoco.coupled_half_cheetah import (
            CoupledHalfCheetahEnv,
        )

        return CoupledHalfCheetahEnv()
    return gymnasium.make(f"{scenario}-v5", disable_env_checker=True).unwrapped


@functools.cache
def _global_view_class() -> type:
    """MaMuJoCo whose per-agent observations are never used (agents see the global state)."""
    mamujoco = _import_mamujoco()

    class GlobalViewMaMuJoCo(mamujoco.MultiAgentMujocoEnv):
        """Skips building the unused local observations (10-25% of a step's time)."""

        def _get_obs(self) -> dict[str, Any]:
            return {}

    return GlobalViewMaMuJoCo


_FLAG_FIELDS = (
    "flg_energypos",
    "flg_energyvel",
    "flg_subtreevel",
    "flg_rnepost",
    "ntree_awake",
    "nbody_awake",
    "nparent_awake",
    "nv_awake",
)
"""Scalar mjData fields that say which derived quantities are current (and, with sleeping
enabled, what is awake); set back with the arrays they describe."""


@functools.cache
def _fixed_size_data_fields() -> tuple[str, ...]:
    """mjData's fixed-size arrays: its ``buffer`` section (``qpos`` up to the arena-allocated
    ``contact``, in declaration order), plus ``energy``, less ``plugin_data`` (pointers)."""
    from mujoco.introspect import structs

    names = [field.name for field in structs.STRUCTS["mjData"].fields]
    section = names[names.index("qpos") : names.index("contact")]
    return tuple(name for name in (*section, "energy") if name != "plugin_data")


def _get_sim_state(parallel_env: Any) -> dict[str, Any]:
    """The robot's MuJoCo state, the derived quantities of its last step, and its RNG.

    ``mj_getState(mjSTATE_INTEGRATION)`` holds everything the *dynamics* depend on (positions,
    velocities, controls, warm start, time, ...). But the Gymnasium robots also read derived
    quantities before they step (Humanoid's centre of mass ``xipos``, Ant's torso ``xpos``): those
    were computed inside the previous ``mj_step`` from the state before its last substep and
    cannot be recomputed from the current state. So every fixed-size array of mjData is saved too
    (a few thousand numbers); the arena (contacts, constraint rows) is rebuilt by every step.
    """
    import mujoco

    robot = parallel_env.single_agent_env.unwrapped
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    integration = np.empty(mujoco.mj_stateSize(robot.model, spec), dtype=np.float64)
    mujoco.mj_getState(robot.model, robot.data, integration, spec)
    data = robot.data
    return {
        "integration": integration,
        "arrays": {
            name: np.array(getattr(data, name), copy=True)
            for name in _fixed_size_data_fields()
            if isinstance(getattr(data, name, None), np.ndarray)
        },
        "flags": {name: getattr(data, name) for name in _FLAG_FIELDS if hasattr(data, name)},
        "np_random": robot.np_random.bit_generator.state,
    }


def _set_sim_state(parallel_env: Any, state: dict[str, Any]) -> None:
    import mujoco

    robot = parallel_env.single_agent_env.unwrapped
    data = robot.data
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    integration = np.ascontiguousarray(state["integration"], dtype=np.float64)
    expected = mujoco.mj_stateSize(robot.model, spec)
    if integration.shape != (expected,):
        raise ValueError(
            f"MuJoCo state of size {integration.shape} does not fit this model (needs {expected})"
        )
    for name, value in state["arrays"].items():
        target = getattr(data, name)
        if target.shape != value.shape:
            raise ValueError(f"mjData.{name}: saved shape {value.shape}, model has {target.shape}")
        target[...] = value
    for name, value in state["flags"].items():
        setattr(data, name, value)
    mujoco.mj_setState(robot.model, data, integration, spec)
    robot.np_random.bit_generator.state = state["np_random"]


MUJOCO_STATE_HOOKS = SimStateHooks(get=_get_sim_state, set=_set_sim_state)


def make_single_env(
    task: str, options: Options | None = None, env_index: int = 0
) -> ParallelEnvAdapter:
    """One MaMuJoCo env as a gymnasium env (what each vector-env worker builds)."""
    options = options or Options()
    scenario, agent_conf = parse_task(task)
    mamujoco = _import_mamujoco()
    agent_view = options.agent_view
    # With a global view the local observations go unused: agent_obsk=0 is the cheapest graph
    # (None would make MaMuJoCo single-agent).
    env_class = mamujoco.MultiAgentMujocoEnv if agent_view == "local" else _global_view_class()
    agent_obsk = options.agent_obsk if agent_view == "local" else 0
    try:
        parallel_env = env_class(
            scenario, agent_conf, agent_obsk=agent_obsk, gym_env=_make_robot(scenario, agent_conf)
        )
    except Exception as err:
        # e.g. CoupledHalfCheetah-1p1, whose observations gymnasium_robotics 1.4 cannot build
        # with mujoco >= 3 (it indexes the tendon Jacobian as a dense matrix)
        raise RuntimeError(
            f"gymnasium_robotics could not build MaMuJoCo task {task!r}: "
            f"{type(err).__name__}: {err}"
        ) from err
    return ParallelEnvAdapter(
        parallel_env,
        episode_limit=options.episode_limit,
        agent_view=agent_view,
        sim_state=MUJOCO_STATE_HOOKS,
        env_index=env_index,
        name=f"{ENV_NAME}/{task}",
    )


def make_vector_env(
    task: str,
    num_envs: int,
    options: Options | None = None,
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> GymVectorEnv:
    """``num_envs`` copies of a MaMuJoCo task as a :class:`~haml.envs.base.VectorMultiAgentEnv`.

    Env ``e`` is seeded with ``seed + e`` on the first reset (see :class:`GymVectorEnv`).
    """
    options = options or Options()
    parse_task(task)  # a bad name fails here, not in every worker
    _import_mamujoco()  # a missing package fails here with the pip hint
    return make_gym_vector_env(
        functools.partial(make_single_env, task, options), num_envs, options,
        env=ENV_NAME, task=task, device=device, seed=seed, episode_limit=options.episode_limit,
        auto_async_min_cpus=AUTO_ASYNC_MIN_CPUS,
    )


def episode_frames(
    task: str,
    options: Options,
    act: Callable[[Sequence[torch.Tensor]], Sequence[torch.Tensor]],
    seed: int,
) -> Iterator[Any]:
    """The family's render hook (:mod:`haml.envs.registry`): one episode of ``task`` in this
    process, on one env built from ``options``, drawn by MuJoCo's offscreen renderer
    (:func:`haml.envs.mujoco_render.render_episode`: the frame rate, then the frames)."""
    from haml.envs.mujoco_render import render_episode

    return render_episode(make_single_env(task, options), act, seed)
