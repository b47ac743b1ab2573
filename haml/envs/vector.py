"""gymnasium vector envs → :class:`~haml.envs.base.VectorMultiAgentEnv`: the numpy/torch boundary.

:class:`GymVectorEnv` steps ``E`` copies of a :class:`~haml.envs.gym_adapter.ParallelEnvAdapter`
with gymnasium's ``AsyncVectorEnv`` (one subprocess per env, observations in shared memory) or
``SyncVectorEnv`` (all in this process), and turns their numpy batches into torch tensors on the
training device. Nothing before this module sees torch; nothing after it sees numpy.

- **Autoreset** is gymnasium's ``SAME_STEP`` mode: an env that ends an episode is reset within the
  same step, its true last observation arrives in ``infos["final_obs"]`` and becomes that env's
  row of ``EnvStep.final_obs``/``final_state`` (the other rows equal ``obs``/``state``).
- **Seeding**: ``reset(seed)`` seeds env ``e`` with ``seed + e``; the ``seed`` given at
  construction is used by the first ``reset()`` that gives none. Later automatic resets draw from
  each env's own RNG, so a run is a function of the seed alone.
- **Episodes**: undiscounted team return and length are accumulated here, per env, and reported
  as :class:`~haml.envs.base.EpisodeStats` in the step where an episode ends.
- **Masks**: when the adapters' observation ``Dict`` has the ``action_mask_{i}`` / ``"active"``
  keys (:func:`~haml.envs.gym_adapter.action_mask_key`, :data:`~haml.envs.gym_adapter.ACTIVE_KEY`),
  they come out as ``EnvStep.action_masks`` (per agent ``[E, n_i]`` bool) and
  ``EnvStep.active_masks`` (per agent ``[E]`` bool), aligned with ``obs`` (after an autoreset: the
  next episode's first observation), and the spec says so. Without those keys both are ``None``.
- **Warnings** that an adapter reports in a step's info (:data:`~haml.envs.gym_adapter.WARNING_KEY`,
  e.g. that a user's env gives its agents different rewards) are issued here, in the main
  process, once per message and vector env (a ``UserWarning`` naming the env family and task).
- **Actions**: ``Box`` actions are clipped to the action space's bounds before they are sent (the
  policies are unsquashed Gaussians, as in the papers' code); ``Discrete`` ones are sent as int64.
- **Ctrl-C**: the workers ignore SIGINT (and each runs in its own process group, which a
  terminal's Ctrl-C does not reach), so it reaches only the main process, which can then
  checkpoint (this env's :meth:`GymVectorEnv.state_dict` included) while the workers are alive.
  A Ctrl-C during a step/reset is held back until every env has finished it and it has been
  recorded, then raised (the caller loses that step's :class:`EnvStep`, but the envs are
  consistent and can be saved); a second Ctrl-C interrupts at once and gives the envs up.
- **Failures**: an exception inside an env, a worker that dies (killed, crashed interpreter), or a
  worker that does not answer within ``step_timeout`` seconds raises an
  :class:`~haml.envs.base.EnvError` that names the env index and the cause, and stops every
  worker; it never hangs. Stopping means SIGTERM to each worker's process group (the worker and
  whatever it started, e.g. a StarCraft II game), then, after :data:`_STOP_GRACE` seconds,
  SIGKILL, which also ends a stopped (SIGSTOP) worker or one stuck in native code; no wait on a
  worker is unbounded, so the run ends and its checkpoints stay as they were. ``close()`` of
  healthy envs asks the workers to close and waits at most the step timeout before stopping them
  the same way. The family sets ``step_timeout`` from its step time (:data:`DEFAULT_STEP_TIMEOUT`,
  30 s, for sub-millisecond steps; SMAC's is longer). Building the envs in the workers may take
  up to ``build_timeout`` (:data:`DEFAULT_BUILD_TIMEOUT`) and the first reset up to
  ``first_reset_timeout`` (a family whose first reset launches a simulator; none by default)
  where those are longer. ``step_timeout=None`` waits forever.
- **Exact resume**: :meth:`GymVectorEnv.state_dict` gathers each env's ``resume_state`` (simulator
  state, RNG, time-limit counter) with ``get_attr`` and adds the running episode returns/lengths
  and the last observation; :meth:`GymVectorEnv.load_state_dict` puts them back with ``set_attr``.
  Everything in it is a torch tensor or a plain Python value, so ``torch.load(weights_only=True)``
  reads it.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import gymnasium
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.vector.async_vector_env import AsyncState

from haml.envs.base import EnvError, EnvSpec, EnvStep, EpisodeTracker, require_num_envs
from haml.envs.gym_adapter import ACTIVE_KEY, STATE_KEY, WARNING_KEY, action_mask_key, obs_key

__all__ = [
    "DEFAULT_BUILD_TIMEOUT",
    "DEFAULT_STEP_TIMEOUT",
    "GymVectorEnv",
    "check_vector_options",
    "make_gym_vector_env",
]

DEFAULT_STEP_TIMEOUT: float = 30.0
"""Seconds an async step/reset/call may take before the workers are declared stuck: the default
of the families whose step is well under a millisecond (MaMuJoCo, MPE). 30 s is tens of
thousands of steps, so a loaded machine does not trip it, yet a stuck worker is an error within
half a minute instead of a silent stall. A family with slower steps sets its own (SMAC: 120 s)."""

DEFAULT_BUILD_TIMEOUT: float = 300.0
"""Seconds the workers may take to build their envs, when longer than ``step_timeout``: every
worker imports the simulator at once (with the "spawn" and "forkserver" start methods, Python and
torch too), which on a machine with fewer cores than envs takes a minute rather than seconds.
Only construction gets it: a stall there is at start-up, where it is seen."""

_STOP_GRACE: float = 1.0
"""Seconds the workers' process groups get between SIGTERM and SIGKILL when they are stopped."""

_REAP_TIMEOUT: float = 5.0
"""Seconds to wait for SIGKILLed workers to exit. One in uninterruptible sleep (a hung disk) can
take longer; it is left behind rather than waited on."""

_STATE_FORMAT = "haml.envs.vector.GymVectorEnv/1"


def check_vector_options(
    vectorization: str,
    choices: tuple[str, ...],
    step_timeout: float | None,
    start_method: str | None,
    max_concurrency: int | None = None,
) -> None:
    """The checks of the vector-env options that every subprocess-backed family's ``Options``
    has (a ``ValueError`` naming the option and its valid values)."""
    if vectorization not in choices:
        raise ValueError(f"vectorization must be one of {list(choices)}, got {vectorization!r}")
    if step_timeout is not None and step_timeout <= 0:
        raise ValueError(f"step_timeout must be > 0 or None, got {step_timeout}")
    methods = multiprocessing.get_all_start_methods()
    if start_method is not None and start_method not in methods:
        raise ValueError(f"start_method must be one of {methods} or None, got {start_method!r}")
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1 or None, got {max_concurrency}")


class _WorkerSetup:
    """An env factory that, when called inside a worker process, first ignores SIGINT and makes
    the worker the leader of its own process group.

    The group holds the worker and whatever it starts (a StarCraft II game), so that stopping
    the worker (:func:`_stop_workers`) ends them together. A background group must not be
    stopped by the terminal either: SIGTTOU/SIGTTIN are ignored (a write to the terminal then
    proceeds, a read fails). ``AsyncVectorEnv`` also calls the first factory in the main process
    (to read the spaces): the process id tells the two apart, so the main process keeps its
    Ctrl-C handler and its group.
    """

    def __init__(self, make_env: Callable[[], gymnasium.Env]) -> None:
        self.make_env = make_env
        self.main_pid = os.getpid()

    def __call__(self) -> gymnasium.Env:
        if os.getpid() != self.main_pid:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if hasattr(os, "setpgid"):
                for stop_signal in (signal.SIGTTOU, signal.SIGTTIN):
                    signal.signal(stop_signal, signal.SIG_IGN)
                with contextlib.suppress(OSError):
                    os.setpgid(0, 0)
        return self.make_env()


def _signal_worker(process: multiprocessing.process.BaseProcess, signum: int) -> None:
    """Send ``signum`` to the worker's process group when it leads one (:class:`_WorkerSetup`),
    else to the worker alone. A worker that is gone (reaped) gets nothing: its pid may belong to
    another process by now."""
    pid = process.pid
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # getpgid answers for a live or exited-but-unreaped (zombie) worker, whose pid is still
        # its own; a zombie leader's group may still hold what it started.
        if hasattr(os, "killpg") and os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        elif process.exitcode is None:
            os.kill(pid, signum)


def _release_workers(vec: Any) -> None:
    """Stop an async vector env's workers (:func:`_stop_workers`), close its pipes and mark it
    closed, so that gymnasium's own ``close`` (which would wait on the workers) has nothing left
    to do."""
    _stop_workers(vec.processes)
    for index, pipe in enumerate(vec.parent_pipes):
        if pipe is not None:
            with contextlib.suppress(Exception):
                pipe.close()
            vec.parent_pipes[index] = None
    vec.closed = True


def _stop_workers(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """End the workers and their process groups in bounded time: SIGTERM, at most
    :data:`_STOP_GRACE` seconds for them to exit, SIGKILL (which a stopped or hung process cannot
    ignore), at most :data:`_REAP_TIMEOUT` seconds to reap them."""
    for process in processes:
        _signal_worker(process, signal.SIGTERM)
        if hasattr(signal, "SIGCONT"):  # a stopped process acts on SIGTERM only once continued
            _signal_worker(process, signal.SIGCONT)
    deadline = time.monotonic() + _STOP_GRACE
    for process in processes:
        if process.pid is not None:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        _signal_worker(process, getattr(signal, "SIGKILL", signal.SIGTERM))
    deadline = time.monotonic() + _REAP_TIMEOUT
    for process in processes:
        if process.pid is not None:
            process.join(timeout=max(0.0, deadline - time.monotonic()))


class _DeadlinePipe:
    """A worker's pipe whose ``recv`` waits until ``deadline`` (``time.monotonic()``) at most, then
    raises ``multiprocessing.TimeoutError``; everything else is the pipe's."""

    def __init__(self, pipe: Any, deadline: float | None) -> None:
        self._pipe = pipe
        self._deadline = deadline

    def recv(self) -> Any:
        if self._deadline is not None:
            remaining = max(0.0, self._deadline - time.monotonic())
            if not self._pipe.poll(remaining):
                raise multiprocessing.TimeoutError("no answer in time")
        return self._pipe.recv()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)


class _RemoteTraceback(Exception):
    """The traceback of an exception raised inside a worker, as text: the cause of the exception
    re-raised in the main process (as ``concurrent.futures`` does)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class _AsyncVectorEnv(AsyncVectorEnv):
    """gymnasium's ``AsyncVectorEnv`` whose start-up check does not wait forever, and which does
    not print the workers' tracebacks.

    The constructor sends every worker a check of its spaces and reads the answers without a time
    limit, so a worker stuck while building its env would hang it. Here the answers are awaited
    for ``build_timeout`` seconds at most (``None``: forever), and a failure stops the workers
    before it propagates (the half-built object is never handed out to be closed).
    """

    def _raise_if_errors(self, successes: Sequence[bool]) -> None:
        """gymnasium's, except that a worker's traceback becomes the cause of the exception
        raised here instead of being printed (as warnings) on stderr, where a command-line user
        would see a raw traceback before haml's one-line error."""
        if all(successes):
            return
        errors = [self.error_queue.get(timeout=5) for _ in range(len(successes) - sum(successes))]
        for index, *_ in errors:
            if self.parent_pipes[index] is not None:
                self.parent_pipes[index].close()
                self.parent_pipes[index] = None
        self._state = AsyncState.DEFAULT
        _, exc_type, value, trace = errors[-1]
        raise exc_type(value) from _RemoteTraceback(trace)

    def __init__(self, *args: Any, build_timeout: float | None, **kwargs: Any) -> None:
        self._build_timeout = build_timeout
        super().__init__(*args, **kwargs)

    def _check_spaces(self) -> None:
        pipes = self.parent_pipes
        deadline = (
            None if self._build_timeout is None else time.monotonic() + self._build_timeout
        )
        self.parent_pipes = [_DeadlinePipe(pipe, deadline) for pipe in pipes]
        try:
            super()._check_spaces()
        except BaseException:
            _stop_workers(self.processes)
            for pipe in pipes:
                with contextlib.suppress(Exception):
                    pipe.close()
            self.closed = True
            raise
        finally:
            # gymnasium sets a failed worker's entry to None
            self.parent_pipes = [
                None if wrapped is None else pipe for wrapped, pipe in zip(self.parent_pipes, pipes)
            ]


class _DeferredSigint:
    """Within ``with``: the first Ctrl-C (SIGINT) is only noted, a second one interrupts at once.

    :meth:`deliver`, called after the block, hands a noted Ctrl-C to the handler that was in
    place (Python's default raises ``KeyboardInterrupt``; a runner's own handler may set a stop
    flag instead). The Python-level handler is swapped rather than the signal masked: a process-
    directed signal may be delivered to any thread, and Python runs its handler in the main
    thread all the same. Outside the main thread (where Python runs no signal handlers) this does
    nothing, and so does a process that ignores SIGINT (a job started in the background by a
    non-interactive shell inherits that): its Ctrl-C stays ignored rather than becoming a
    deferred one.
    """

    def __init__(self) -> None:
        self._frames: list[Any] = []
        self._previous: Any = None
        self._active = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) != signal.SIG_IGN
        )

    def _note(self, signum: int, frame: Any) -> None:
        self._frames.append(frame)
        if len(self._frames) > 1:
            raise KeyboardInterrupt

    def __enter__(self) -> _DeferredSigint:
        if self._active:
            self._previous = signal.signal(signal.SIGINT, self._note)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._previous)

    def deliver(self) -> None:
        if len(self._frames) != 1:
            return
        if callable(self._previous):
            self._previous(signal.SIGINT, self._frames[0])
        elif self._previous != signal.SIG_IGN:
            raise KeyboardInterrupt


def _describe_exit(code: int) -> str:
    """A worker's exit code in words (negative: killed by that signal)."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def _peek_exit_code(process: multiprocessing.process.BaseProcess) -> int | None:
    """The worker's exit code (negative: the signal that killed it), or ``None`` while it runs.

    Where the platform can, the exited worker is left unreaped (``WNOWAIT``), so that its pid,
    and with it its process group, stays its own until :func:`_stop_workers` has signalled it.
    """
    pid = process.pid
    if pid is not None and hasattr(os, "waitid") and hasattr(os, "WNOWAIT"):
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # not our child (forkserver) or reaped already
            pass
        else:
            if info is None:
                return None
            if info.si_code == os.CLD_EXITED:
                return info.si_status
            return -info.si_status
    process.join(timeout=0)
    return process.exitcode


def _numpy_tree_to_torch(value: Any) -> Any:
    """numpy arrays (anywhere in dicts/lists/tuples) → CPU tensors, bit for bit."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, copy=True))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _numpy_tree_to_torch(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_numpy_tree_to_torch(item) for item in value)
    return value


def _torch_tree_to_numpy(value: Any) -> Any:
    """The inverse of :func:`_numpy_tree_to_torch`."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, dict):
        return {key: _torch_tree_to_numpy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_torch_tree_to_numpy(item) for item in value)
    return value


class GymVectorEnv:
    """``E`` :class:`~haml.envs.gym_adapter.ParallelEnvAdapter` envs stepped together, torch in/out.

    Args:
        env_fns: one factory per env, each returning a ``ParallelEnvAdapter`` (picklable for the
            async mode: module-level functions or ``functools.partial`` of them).
        env: the env family's registered name (for :class:`EnvSpec` and messages).
        task: the task name.
        device: where the returned tensors live.
        seed: used by the first :meth:`reset` that is given no seed.
        asynchronous: subprocesses (``AsyncVectorEnv``, shared memory) or this process
            (``SyncVectorEnv``).
        step_timeout: seconds an async reset/step/call may take (``None``: wait forever).
        build_timeout: seconds the async workers may take to build their envs, when longer
            than ``step_timeout``.
        first_reset_timeout: seconds the async workers may take to answer the first reset (or
            :meth:`load_state_dict`), when longer than ``step_timeout``: for a family whose first
            reset launches a simulator. ``None``: ``step_timeout``.
        context: the multiprocessing start method of the workers (``None``: the platform's).
        max_concurrency: at most this many workers simulate at once (gymnasium's option; for
            more envs than cores). ``None``: no limit.
        episode_limit: recorded in the spec.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gymnasium.Env]],
        *,
        env: str,
        task: str,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        asynchronous: bool = True,
        step_timeout: float | None = DEFAULT_STEP_TIMEOUT,
        build_timeout: float = DEFAULT_BUILD_TIMEOUT,
        first_reset_timeout: float | None = None,
        context: str | None = None,
        max_concurrency: int | None = None,
        episode_limit: int | None = None,
    ) -> None:
        if len(env_fns) < 1:
            raise ValueError("env_fns: need at least one env factory")
        if step_timeout is not None and step_timeout <= 0:
            raise ValueError(f"step_timeout must be positive or None, got {step_timeout}")
        if build_timeout <= 0:
            raise ValueError(f"build_timeout must be positive, got {build_timeout}")
        if first_reset_timeout is not None and first_reset_timeout <= 0:
            raise ValueError(
                f"first_reset_timeout must be positive or None, got {first_reset_timeout}"
            )
        self.num_envs = len(env_fns)
        self.device = torch.device(device)
        self.asynchronous = asynchronous
        self.step_timeout = step_timeout
        self.build_timeout = build_timeout
        self.first_reset_timeout = first_reset_timeout
        # what the workers are doing, for their time limit (_time_limit)
        self._phase: Literal["build", "first_reset", "run"] = "build"
        self._label = f"{env}/{task}"
        self._seed = seed
        self._failure: str | None = None
        self._closed = False

        self._vec: AsyncVectorEnv | SyncVectorEnv
        if asynchronous:
            try:
                # max_concurrency only where asked for: older gymnasium releases lack it
                extra = {} if max_concurrency is None else {"max_concurrency": max_concurrency}
                self._vec = _AsyncVectorEnv(
                    [_WorkerSetup(fn) for fn in env_fns],
                    shared_memory=True,
                    copy=False,  # rows are copied into tensors below; no second copy
                    context=context,
                    autoreset_mode=AutoresetMode.SAME_STEP,
                    build_timeout=self._time_limit(),
                    **extra,
                )
            except Exception as err:
                cause = (
                    f"no answer within {self._time_limit()} s (build_timeout); a worker is stuck "
                    "building its env"
                    if isinstance(err, multiprocessing.TimeoutError)
                    else f"{type(err).__name__}: {err}"
                )
                raise EnvError(f"{self._label}: the env workers failed to start: {cause}") from err
        else:
            self._vec = SyncVectorEnv(env_fns, copy=False, autoreset_mode=AutoresetMode.SAME_STEP)

        obs_space = self._vec.single_observation_space
        act_space = self._vec.single_action_space
        n_agents = len(act_space.spaces)
        self.spec = EnvSpec(
            env=env,
            task=task,
            n_agents=n_agents,
            obs_spaces=tuple(obs_space[obs_key(i)] for i in range(n_agents)),
            action_spaces=tuple(act_space.spaces),
            state_space=obs_space[STATE_KEY],
            action_masks=all(action_mask_key(i) in obs_space.spaces for i in range(n_agents)),
            active_masks=ACTIVE_KEY in obs_space.spaces,
            episode_limit=episode_limit,
        )
        # Clip bounds of Box actions, on the CPU where actions are clipped before they leave.
        self._action_bounds: list[tuple[torch.Tensor, torch.Tensor] | None] = [
            (
                torch.as_tensor(space.low, dtype=torch.float32),
                torch.as_tensor(space.high, dtype=torch.float32),
            )
            if isinstance(space, gymnasium.spaces.Box)
            else None
            for space in self.spec.action_spaces
        ]
        self._resumable = all(self._get_attr("resumable", "construction"))
        self._phase = "first_reset"

        self._episodes = EpisodeTracker(self.num_envs)
        self._last_obs: dict[str, np.ndarray] | None = None
        self._warned: set[str] = set()
        self._pending_warnings: list[str] = []

    # -- the protocol ---------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> EnvStep:
        """Reset every env (env ``e`` seeded with ``seed + e`` when a seed is given or pending)."""
        if seed is None and self._last_obs is None:
            seed = self._seed
        vec = self._vec
        if isinstance(vec, AsyncVectorEnv):
            self._exchange(
                "reset",
                send=lambda: vec.reset_async(seed=seed),
                receive=lambda: vec.reset_wait(timeout=self._time_limit()),
                record=self._record_reset,
            )
        else:
            self._exchange("reset", None, lambda: vec.reset(seed=seed), self._record_reset)
        return self.current()

    def step(self, actions: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> EnvStep:
        """Step every env with per-agent actions ``[E, d_i]`` (Box) or ``[E]`` (Discrete)."""
        if self._last_obs is None:
            raise RuntimeError(f"{self._label}: call reset() (or load_state_dict) before step()")
        np_actions = self._actions_to_numpy(actions)
        vec = self._vec
        if isinstance(vec, AsyncVectorEnv):
            recorded = self._exchange(
                "step",
                send=lambda: vec.step_async(np_actions),
                receive=lambda: vec.step_wait(timeout=self._time_limit()),
                record=self._record_step,
            )
        else:
            recorded = self._exchange("step", None, lambda: vec.step(np_actions), self._record_step)
        obs, final_obs, reward, terminated, truncated, episodes = recorded
        while self._pending_warnings:
            message = self._pending_warnings.pop(0)
            warnings.warn(f"{self._label}: {message}", UserWarning, stacklevel=2)
        obs_t, state_t = self._obs_to_torch(obs)
        action_masks, active_masks = self._masks_to_torch(obs)
        if final_obs is obs:  # no episode ended: s_{t+1} is the observation itself
            final_obs_t, final_state_t = tuple(o.clone() for o in obs_t), state_t.clone()
        else:
            final_obs_t, final_state_t = self._obs_to_torch(final_obs)
        return EnvStep(
            obs=obs_t,
            state=state_t,
            reward=self._to_device(reward.astype(np.float32)),
            terminated=self._to_device(terminated.astype(np.bool_)),
            truncated=self._to_device(truncated.astype(np.bool_)),
            final_obs=final_obs_t,
            final_state=final_state_t,
            action_masks=action_masks,
            active_masks=active_masks,
            episodes=episodes,
        )

    def _record_reset(self, result: tuple[dict[str, np.ndarray], dict[str, Any]]) -> None:
        obs, _ = result
        self._phase = "run"
        self._episodes.reset()
        self._last_obs = {key: np.array(value, copy=True) for key, value in obs.items()}

    def _record_step(self, result: tuple[Any, ...]) -> tuple[Any, ...]:
        """Book one vector step: episode returns/lengths, final observations, last observation."""
        obs, reward, terminated, truncated, infos = result
        # copies: with shared memory (copy=False) these arrays are overwritten by the next step
        obs = {key: np.array(value, copy=True) for key, value in obs.items()}
        final_obs = obs
        ended = np.logical_or(terminated, truncated)
        metrics = infos.get("final_info", {}).get("episode_metrics", {})

        def env_metrics(e: int) -> dict[str, float]:
            # gymnasium stacks the infos: key -> [E] values, "_key" -> [E] "env e has it"
            return {
                key: float(value[e])
                for key, value in metrics.items()
                if not key.startswith("_") and metrics[f"_{key}"][e]
            }

        episodes = self._episodes.step(reward, ended, env_metrics)
        self._note_warnings(infos)
        if ended.any():
            final_obs = {key: value.copy() for key, value in obs.items()}
            has_final = infos.get("_final_obs", np.zeros(self.num_envs, dtype=bool))
            for e in np.flatnonzero(ended):
                if not has_final[e]:
                    raise RuntimeError(f"{self._label}: env {e} ended without a final observation")
                for key, value in infos["final_obs"][e].items():
                    final_obs[key][e] = value
        self._last_obs = obs  # never written to: the tensors handed out are copies
        return obs, final_obs, reward, terminated, truncated, episodes

    def _note_warnings(self, infos: dict[str, Any]) -> None:
        """Keep the messages the adapters reported under ``WARNING_KEY`` (in the step's info, or
        in the final step's info where an episode ended) that were not given before; ``step``
        gives them once the step is recorded (a warnings filter set to "error" then raises from
        ``step`` and leaves the envs usable)."""
        for source in (infos, infos.get("final_info", {})):
            messages = source.get(WARNING_KEY)
            if messages is None:
                continue
            for e in np.flatnonzero(source[f"_{WARNING_KEY}"]):
                if messages[e] not in self._warned:
                    self._warned.add(messages[e])
                    self._pending_warnings.append(messages[e])

    def current(self) -> EnvStep:
        """The envs' current observation as an :class:`EnvStep` (reward 0, no episode ended).

        What :meth:`reset` returns; after :meth:`load_state_dict`, the observation to act on next
        (not part of the ``VectorMultiAgentEnv`` protocol: a runner that keeps its own last
        observation does not need it).
        """
        if self._last_obs is None:
            raise RuntimeError(f"{self._label}: no current observation; call reset() first")
        obs, state = self._obs_to_torch(self._last_obs)
        action_masks, active_masks = self._masks_to_torch(self._last_obs)
        zeros = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return EnvStep(
            obs=obs,
            state=state,
            reward=torch.zeros(self.num_envs, dtype=torch.float32, device=self.device),
            terminated=zeros,
            truncated=zeros.clone(),
            final_obs=tuple(o.clone() for o in obs),
            final_state=state.clone(),
            action_masks=action_masks,
            active_masks=active_masks,
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: per-env simulator/RNG/step-counter states, the
        running episode returns and lengths, and the current observation."""
        if not self._resumable:
            raise NotImplementedError(f"{self._label}: these envs cannot save their exact state")
        env_states = self._get_attr("resume_state", "state_dict")
        return {
            "format": _STATE_FORMAT,
            "label": self._label,
            "num_envs": self.num_envs,
            "envs": [_numpy_tree_to_torch(state) for state in env_states],
            **self._episodes.state_dict(),
            "obs": None if self._last_obs is None else _numpy_tree_to_torch(self._last_obs),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put every env back where :meth:`state_dict` found it."""
        if not self._resumable:
            raise NotImplementedError(f"{self._label}: these envs cannot restore an exact state")
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ValueError(
                f"{self._label}: not a {_STATE_FORMAT} state dict "
                f"(format={state.get('format') if isinstance(state, dict) else type(state)!r})"
            )
        if state["label"] != self._label or state["num_envs"] != self.num_envs:
            raise ValueError(
                f"state dict is for {state['num_envs']} envs of {state['label']}, "
                f"this is {self.num_envs} envs of {self._label}"
            )
        env_states = [_torch_tree_to_numpy(env_state) for env_state in state["envs"]]

        def restore_bookkeeping(_: Any) -> None:
            self._phase = "run"
            self._episodes.load_state_dict(state)
            self._last_obs = None if state["obs"] is None else _torch_tree_to_numpy(state["obs"])

        vec = self._vec
        if isinstance(vec, AsyncVectorEnv):
            # gymnasium's set_attr sends and then reads the answers without a time limit: send
            # its command here, so that the answers are awaited with the timeout first.
            if vec._state != AsyncState.DEFAULT:
                raise RuntimeError(f"{self._label}: a call to the envs is pending")

            def send() -> None:
                for pipe, env_state in zip(vec.parent_pipes, env_states, strict=True):
                    pipe.send(("_setattr", ("resume_state", env_state)))

            def receive() -> None:
                _, successes = zip(*[pipe.recv() for pipe in vec.parent_pipes], strict=True)
                vec._raise_if_errors(successes)

            self._exchange("load_state_dict", send, receive, restore_bookkeeping)
        else:
            self._exchange(
                "load_state_dict",
                None,
                lambda: vec.set_attr("resume_state", env_states),
                restore_bookkeeping,
            )

    def close(self) -> None:
        """Close the envs. Async workers are asked to close and given ``step_timeout`` seconds
        (:meth:`_time_limit`) to do so; any still there are then stopped
        (:func:`_stop_workers`), so this never waits on a stuck worker for longer. After a
        failure the workers are already stopped."""
        if self._closed:
            return
        self._closed = True
        vec = self._vec
        if self._failure is not None:
            return
        if not isinstance(vec, AsyncVectorEnv):
            vec.close()
            return
        limit = self._time_limit()
        deadline = None if limit is None else time.monotonic() + limit

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        try:
            live = [pipe for pipe in vec.parent_pipes if pipe is not None and not pipe.closed]
            for pipe in live:
                with contextlib.suppress(OSError):
                    pipe.send(("close", None))
            for pipe in live:
                with contextlib.suppress(OSError, EOFError):
                    if pipe.poll(remaining()):
                        pipe.recv()
            for process in vec.processes:
                process.join(timeout=remaining())
        finally:
            # whatever did not exit in time (and what the workers started) is stopped
            _release_workers(vec)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.close()

    # -- helpers ------------------------------------------------------------------------------

    def _get_attr(self, name: str, what: str) -> list[Any]:
        """Attribute ``name`` of every env (``get_attr``, with the step timeout when async)."""
        vec = self._vec
        if isinstance(vec, AsyncVectorEnv):
            return list(
                self._exchange(
                    what,
                    send=lambda: vec.call_async(name),
                    receive=lambda: vec.call_wait(timeout=self._time_limit()),
                    record=None,
                )
            )
        return list(self._exchange(what, None, lambda: vec.get_attr(name), None))

    def _exchange(
        self,
        what: str,
        send: Callable[[], None] | None,
        receive: Callable[[], Any],
        record: Callable[[Any], Any] | None,
    ) -> Any:
        """One command to every env, its answers collected and recorded, as one unit.

        ``send()`` starts the command in the async workers (``None``: ``receive()`` does it all);
        ``receive()`` collects the answers; ``record(answers)`` books them. Failures become an
        :class:`~haml.envs.base.EnvError` (:meth:`_guard`).

        A Ctrl-C during the exchange is held back until it is complete (so the envs are never left
        half-stepped with answers unread, which would make them unusable and unsaveable), then
        raised: the caller loses that step's result, but ``state_dict()`` works. A second Ctrl-C
        abandons the exchange at once, and with it the envs.
        """
        deferred = _DeferredSigint()
        with deferred, self._guard(what):
            if send is not None:
                send()
                self._wait_for_answers()
            answers = receive()
            result = answers if record is None else record(answers)
        deferred.deliver()
        return result

    def _time_limit(self) -> float | None:
        """Seconds the workers get to answer now: ``step_timeout``, or while the envs are being
        built ``build_timeout`` and until their first reset (or load) ``first_reset_timeout``,
        where longer; ``None``: no limit."""
        if self.step_timeout is None:
            return None
        allowance = {"build": self.build_timeout, "first_reset": self.first_reset_timeout}
        return max(self.step_timeout, allowance.get(self._phase) or 0.0)

    def _wait_for_answers(self) -> None:
        """Block until every async worker has answered, or raise ``TimeoutError`` after
        :meth:`_time_limit` seconds (gymnasium's own wait polls the same way)."""
        assert isinstance(self._vec, AsyncVectorEnv)
        limit = self._time_limit()
        deadline = None if limit is None else time.monotonic() + limit
        for pipe in self._vec.parent_pipes:
            if pipe is None:
                return  # a worker that failed before: receive() reports it
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not pipe.poll(remaining):
                raise multiprocessing.TimeoutError(f"no answer within {limit} s")

    def _actions_to_numpy(self, actions: Sequence[torch.Tensor]) -> tuple[np.ndarray, ...]:
        if len(actions) != self.spec.n_agents:
            raise ValueError(
                f"actions: expected one tensor per agent ({self.spec.n_agents}), got {len(actions)}"
            )
        out = []
        for agent, (action, bounds) in enumerate(zip(actions, self._action_bounds)):
            if not isinstance(action, torch.Tensor):
                raise TypeError(
                    f"actions[{agent}] must be a torch.Tensor, got {type(action).__name__}"
                )
            space = self.spec.action_spaces[agent]
            expected = (self.num_envs, *space.shape)
            if tuple(action.shape) != expected:
                raise ValueError(
                    f"actions[{agent}] must have shape {list(expected)}, got {list(action.shape)}"
                )
            action = action.detach().cpu()
            if bounds is not None:
                out.append(torch.clamp(action.float(), bounds[0], bounds[1]).numpy())
            else:
                out.append(action.to(torch.int64).numpy())
        return tuple(out)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        """A tensor on the env's device that owns its memory (``array`` is copied).

        ``torch.from_numpy`` of a copy: ``torch.tensor(array)`` costs several times more per
        call, which adds up over the few tensors of every step.
        """
        return torch.from_numpy(np.array(array, copy=True)).to(self.device)

    def _obs_to_torch(
        self, obs: dict[str, np.ndarray]
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        per_agent = tuple(
            self._to_device(obs[obs_key(i)].astype(np.float32, copy=False))
            for i in range(self.spec.n_agents)
        )
        return per_agent, self._to_device(obs[STATE_KEY].astype(np.float32, copy=False))

    def _masks_to_torch(
        self, obs: dict[str, np.ndarray]
    ) -> tuple[tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """Per-agent available-action masks ``[E, n_i]`` and alive flags ``[E]`` (bool), or
        ``None`` where the adapters give none."""
        n_agents = self.spec.n_agents
        action_masks = None
        if self.spec.action_masks:
            action_masks = tuple(
                self._to_device(obs[action_mask_key(i)].astype(np.bool_)) for i in range(n_agents)
            )
        active_masks = None
        if self.spec.active_masks:
            active = obs[ACTIVE_KEY].astype(np.bool_)
            active_masks = tuple(self._to_device(active[:, i]) for i in range(n_agents))
        return action_masks, active_masks

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn any failure of the workers into an :class:`~haml.envs.base.EnvError` naming the
        env and the cause (and stop the workers)."""
        if self._closed:
            raise RuntimeError(f"{self._label}: the vector env is closed")
        if self._failure is not None:
            raise EnvError(f"{self._label}: the vector env failed earlier: {self._failure}")
        try:
            yield
        except KeyboardInterrupt:
            self._failure = f"{what} was interrupted (Ctrl-C twice) before the envs finished it"
            self._shut_down_after_failure()
            raise
        except Exception as err:
            self._failure = f"{what}: {self._describe_failure(err)}"
            self._shut_down_after_failure()
            raise EnvError(f"{self._label}: {self._failure}") from err

    def _describe_failure(self, err: Exception) -> str:
        if not isinstance(self._vec, AsyncVectorEnv):
            return f"{type(err).__name__}: {err}"
        vec = self._vec
        # A dying worker's pipe can close before its process has exited: when the pipe broke,
        # poll the workers' exit codes for up to a second before concluding that none died.
        pipe_broke = isinstance(err, (EOFError, ConnectionError, OSError))
        deadline = time.monotonic() + (1.0 if pipe_broke else 0.0)
        while True:
            dead = []
            for index, process in enumerate(vec.processes):
                code = _peek_exit_code(process)
                if code is not None:
                    how = _describe_exit(code)
                    dead.append(f"env {index} (worker pid {process.pid}, {how})")
            if dead or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        raised = [index for index, pipe in enumerate(vec.parent_pipes) if pipe is None]
        if isinstance(err, multiprocessing.TimeoutError):
            busy = [
                index
                for index, pipe in enumerate(vec.parent_pipes)
                if pipe is not None and not pipe.closed and not pipe.poll()
            ]
            if self._time_limit() == self.step_timeout:
                limit = f"step_timeout={self.step_timeout} s"
            else:
                limit = f"{self._time_limit()} s ({self._phase}_timeout)"
            return (
                f"no answer within {limit} from env(s) {busy}; a worker is stuck (raise the "
                "step_timeout option if steps are really that slow); the workers were stopped"
            )
        if raised:
            return f"env(s) {raised} raised {type(err).__name__}: {err}"
        if dead:
            return f"env worker died: {', '.join(dead)} ({type(err).__name__}: {err})"
        return f"{type(err).__name__}: {err}"

    def _shut_down_after_failure(self) -> None:
        """Stop the workers (:func:`_stop_workers`) without waiting on pipes that may never
        answer."""
        if not isinstance(self._vec, AsyncVectorEnv):
            with contextlib.suppress(Exception):
                self._vec.close()
            return
        _release_workers(self._vec)


def make_gym_vector_env(
    make_one: Callable[[int], gymnasium.Env],
    num_envs: int,
    options: Any,
    *,
    env: str,
    task: str,
    device: torch.device | str = "cpu",
    seed: int | None = None,
    episode_limit: int | None = None,
    auto_async_min_cpus: int = 1,
    vector_class: type[GymVectorEnv] = GymVectorEnv,
) -> GymVectorEnv:
    """``num_envs`` envs ``make_one(e)`` as one :class:`GymVectorEnv`: the builder every
    gymnasium-based family's ``make_vector_env`` ends in, once it has checked its task and options.

    ``make_one`` must be picklable for async vectorisation (a ``functools.partial`` of a
    module-level function whose last argument is the env index). ``options`` is the family's
    ``Options``: ``vectorization`` ("sync", "async" or "auto": async when ``num_envs > 1`` and the
    machine has at least ``auto_async_min_cpus`` cores), ``step_timeout``, ``start_method`` and,
    where the family has them, ``max_concurrency`` and ``first_reset_timeout``. ``vector_class``:
    a subclass of :class:`GymVectorEnv` (e.g. one that cannot save its state).
    """
    require_num_envs(num_envs)
    asynchronous = options.vectorization == "async" or (
        options.vectorization == "auto"
        and num_envs > 1
        and (os.cpu_count() or 1) >= auto_async_min_cpus
    )
    return vector_class(
        [functools.partial(make_one, e) for e in range(num_envs)],
        env=env,
        task=task,
        device=device,
        seed=seed,
        asynchronous=asynchronous,
        step_timeout=options.step_timeout,
        first_reset_timeout=getattr(options, "first_reset_timeout", None),
        context=options.start_method,
        max_concurrency=getattr(options, "max_concurrency", None),
        episode_limit=episode_limit,
    )
