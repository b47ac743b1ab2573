"""Rollout workers: the on-policy collection spread over ``train.rollout_workers`` Ray actors.

With ``train.rollout_workers = N > 0`` the ``E = train.num_envs`` training envs are split into
``N`` contiguous slices; worker ``k`` builds its slice from the run's env config (env ``e`` of the
run seeded with ``seed + e``, as in-process), keeps a CPU copy of the acting policies, and
collects one rollout (``T`` steps of its envs) per iteration with the same loop as the runner's
in-process collection (:func:`~haml.runners.acting.collect_rollout`). One iteration:

1. the learner puts the new policy weights into Ray's object store **once** (one ``ray.put``
   of every policy's state dict together), and every worker fetches that one object
   (``ray.get``);
2. each worker loads them, steps its envs, and returns its rollout as tensors ``[T, E_k, ...]``
   with the episodes that ended;
3. the learner joins the slices along the env axis into one
   :class:`~haml.buffers.rollout.RolloutBuffer` ``[T, E, ...]`` on the training device.

:class:`RolloutWorkers` gives the runner what its in-process collection gives:
``collect(policies) -> (RolloutBuffer, episodes)`` of the same shapes, so the update does not know
where the rollout came from.

**Failures.** A worker that dies, raises, or does not answer within ``train.rollout_timeout``
seconds is killed and replaced by a fresh one (its envs reset and seeded anew, so that it does
not replay the lost episodes), and its slice of the rollout is collected again from the same
weights: a log line says so, the batch keeps its full size, nothing waits unboundedly. A slice
whose worker fails again after :data:`MAX_REPLACEMENTS` replacements within one iteration stops
the run with a :class:`RolloutWorkerError`; so does a worker that does not start.

**Checkpoints.** :meth:`RolloutWorkers.state_dict` gathers each worker's envs' state, the
observation it acts on next, its recurrent states and its process's random-generator states;
loading it into the same number of workers continues exactly. A checkpoint of another number of
workers (or of in-process collection) cannot be split across the workers: they then start from
freshly reset envs, and a log line says that the resumed run differs from an uninterrupted one.

**In-process workers.** ``RolloutWorkers(..., remote=False)`` runs the same
:class:`RolloutWorker` objects in this process, without Ray (what the tests use). Such workers
draw their actions from this process's torch generator and leave its state to the caller, so one
in-process worker holding every env collects exactly the rollout of in-process collection.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from haml.buffers.rollout import RolloutBuffer
from haml.config.schema import ExperimentConfig
from haml.envs.base import EpisodeStats
from haml.models.build import load_policy_weights, policy_state_dicts
from haml.runners.acting import JointActor, collect_rollout
from haml.runners.env_position import restore_env_position, save_env_position
from haml.runners.guards import single_thread

__all__ = [
    "MAX_REPLACEMENTS",
    "RolloutWorker",
    "RolloutWorkerError",
    "RolloutWorkers",
    "worker_slices",
]

MAX_REPLACEMENTS = 3
"""Replacements of one worker within one iteration before the run gives up."""

_CPU = torch.device("cpu")


ROOM_WAIT_SECONDS = 10.0
"""How long starting remote workers waits for enough free CPUs in the Ray cluster before refusing."""


class RolloutWorkerError(RuntimeError):
    """The rollout workers could not deliver a rollout (repeated failures, no resources)."""


def worker_slices(num_envs: int, workers: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each worker's envs: contiguous, in env order, sizes differing by at
    most one (the first ``num_envs % workers`` workers take one more)."""
    if workers < 1 or workers > num_envs:
        raise ValueError(f"train.rollout_workers must lie in [1, train.num_envs={num_envs}], got {workers}")
    size, extra = divmod(num_envs, workers)
    bounds = [0]
    for k in range(workers):
        bounds.append(bounds[-1] + size + (1 if k < extra else 0))
    return list(zip(bounds[:-1], bounds[1:]))


def _worker_rng_seed(seed: int, index: int, generation: int) -> int:
    """The torch/NumPy/Python seed of a remote worker process: distinct per worker and per
    replacement, a function of the run's seed alone."""
    return int(np.random.SeedSequence([seed, index, generation]).generate_state(1)[0])


class RolloutWorker:
    """Envs ``[start, stop)`` of the run and a CPU copy of its acting policies; collects one
    rollout per :meth:`collect` call.

    ``generation`` counts the replacements of this slice: generation 0 seeds env ``e`` with
    ``cfg.seed + e`` (as in-process collection does), a replacement with
    ``cfg.seed + e + generation * train.num_envs``. ``own_rng``: the worker is alone in its
    process (a Ray actor): it seeds the process's generators and saves them in :meth:`state_dict`;
    an in-process worker leaves them to the caller.
    """

    def __init__(
        self, cfg: ExperimentConfig, index: int, start: int, stop: int, generation: int = 0,
        own_rng: bool = False,
    ) -> None:
        from haml.envs.registry import make_env
        from haml.runners import acting_policies
        from haml.utils.seeding import seed_everything

        self.index, self.start, self.stop = index, start, stop
        self.own_rng = own_rng
        self.seed = cfg.seed + start + generation * cfg.train.num_envs
        if own_rng:
            torch.set_num_threads(1)
            seed_everything(_worker_rng_seed(cfg.seed, index, generation))
        # Building draws initial weights (replaced by the learner's before any act): in-process,
        # that must not move the caller's generator.
        with torch.random.fork_rng(devices=[]):
            self.env = make_env(
                cfg.env.name, cfg.env.task, num_envs=stop - start, seed=self.seed, device=_CPU,
                **cfg.env.options,
            )
            self.policies = acting_policies(cfg, self.env.spec, _CPU)
        self.actor = JointActor(self.policies, stop - start)
        self.rollout_length = cfg.train.rollout_length
        self._buffer: RolloutBuffer | None = None
        self._step = None

    def reset(self) -> None:
        """Fresh episodes in every env of the slice."""
        self._step = self.env.reset(seed=self.seed)
        self.actor.reset()

    @torch.no_grad()
    def collect(self, weights_box: list[Any]) -> dict[str, Any]:
        """Load the weights in ``weights_box`` (``[object-store reference]`` from Ray, or
        ``[weights]`` in-process), collect one rollout; returns ``{"buffer", "episodes",
        "timing"}`` (the buffer ``[T, E_k, ...]`` on the CPU, episode env indices of the run)."""
        started = time.perf_counter()
        (weights,) = weights_box
        if not isinstance(weights, list):  # an ObjectRef: the one broadcast object
            import ray

            weights = ray.get(weights)
        fetched = time.perf_counter()
        load_policy_weights(self.policies, weights)
        if self._step is None:
            self.reset()
        if self._buffer is None:
            self._buffer = RolloutBuffer.allocate(
                self.env.spec, self.rollout_length, self.stop - self.start, _CPU, self.actor.state_shapes()
            )
        with single_thread():
            self._step, episodes = collect_rollout(self.env, self.actor, self._buffer, self._step)
        for episode in episodes:
            if episode.env is not None:
                episode.env += self.start
        done = time.perf_counter()
        return {
            "buffer": self._buffer,
            "episodes": episodes,
            "timing": {"fetch_seconds": fetched - started, "worker_seconds": done - started},
        }

    def state_dict(self) -> dict[str, Any]:
        """The slice's envs, the observation to act on next, the recurrent states, and (a remote
        worker's) the process's random-generator states."""
        from haml.utils.seeding import rng_state

        env_state, position = save_env_position(self.env, self._step)
        if position is not None:
            position["actor"] = self.actor.state_dict()
        state = {"start": self.start, "stop": self.stop, "seed": self.seed, "env": env_state,
                 "env_step": position}
        if self.own_rng:
            state["rng"] = rng_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> list[str]:
        """Put the slice back where :meth:`state_dict` found it; returns the warnings (what
        could not be restored), for the learner to print."""
        from haml.utils.seeding import set_rng_state

        heard: list[str] = []
        self.seed = int(state["seed"])
        self.reset()
        step = restore_env_position(self.env, state["env"], state["env_step"], _CPU, heard.append)
        if step is not None:
            self._step = step
            self.actor.load_state_dict(state["env_step"]["actor"])
        if self.own_rng and "rng" in state:
            set_rng_state(state["rng"])
        return heard

    def ping(self) -> int:
        """The worker's slice start: an answer that says the worker is up."""
        return self.start

    def close(self) -> None:
        self.env.close()


class _WorkerLost(Exception):
    """A worker died, raised, or did not answer in time (the message says which)."""


class _InProcess:
    """Workers as plain objects in this process: calls run when submitted."""

    def __init__(self) -> None:
        self.puts = 0

    def start(self, *args: Any) -> RolloutWorker:
        return RolloutWorker(*args, own_rng=False)

    def put(self, value: Any) -> Any:
        self.puts += 1
        return value

    def submit(self, worker: RolloutWorker, method: str, *args: Any) -> Any:
        try:
            return True, getattr(worker, method)(*args)
        except Exception as err:  # noqa: BLE001 - a failed worker is replaced, whatever failed
            return False, err

    def result(self, future: Any, timeout: float) -> Any:
        ok, value = future
        if not ok:
            raise _WorkerLost(f"{type(value).__name__}: {value}")
        return value

    def stop(self, worker: RolloutWorker) -> None:
        try:
            worker.close()
        except Exception:  # noqa: BLE001 - a broken worker's envs may not close cleanly
            pass

    def close(self) -> None:
        pass


class _Ray:
    """Workers as Ray actors (one CPU each) on the Ray instance this process is connected to;
    one is started here (all local CPUs, no dashboard) when there is none, and shut down by
    :meth:`close`."""

    def __init__(self) -> None:
        import ray

        self.ray = ray
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            ray.init(include_dashboard=False, logging_level="WARNING")
        self.actor_class = ray.remote(num_cpus=1, max_restarts=0)(RolloutWorker)

    def check_room(self, workers: int) -> None:
        """Refuse at once when the cluster has fewer free CPUs than ``workers``: an actor that
        waits for a CPU would only fail after ``train.rollout_timeout``."""
        # CPUs of just-killed actors come back within moments: wait that long, no longer.
        deadline = time.monotonic() + ROOM_WAIT_SECONDS
        free = self.ray.available_resources().get("CPU", 0.0)
        while free < workers and time.monotonic() < deadline:
            time.sleep(0.2)
            free = self.ray.available_resources().get("CPU", 0.0)
        if free < workers:
            self.close()
            raise RolloutWorkerError(
                f"train.rollout_workers={workers} needs {workers} free CPUs of the Ray cluster, "
                f"which has {free:g}; inside haml sweep, each run's --cpus-per-run is reserved by "
                "the run itself, so leave CPUs free for its workers or set train.rollout_workers=0"
            )

    def start(self, *args: Any) -> Any:
        return self.actor_class.remote(*args, own_rng=True)

    def put(self, value: Any) -> Any:
        return self.ray.put(value)

    def submit(self, worker: Any, method: str, *args: Any) -> Any:
        return getattr(worker, method).remote(*args)

    def result(self, future: Any, timeout: float) -> Any:
        try:
            return self.ray.get(future, timeout=timeout)
        except self.ray.exceptions.GetTimeoutError:  # the worker is killed by its replacement
            raise _WorkerLost(
                f"no answer within {timeout:g} s (train.rollout_timeout; a worker also waits "
                "there for a free CPU of the Ray cluster)"
            ) from None
        except self.ray.exceptions.RayError as err:
            raise _WorkerLost(f"{type(err).__name__}: {str(err).splitlines()[0]}") from None

    def stop(self, worker: Any) -> None:
        self.ray.kill(worker, no_restart=True)

    def close(self) -> None:
        if self.owns_ray:
            self.ray.shutdown()


def _join_envs(parts: Sequence[RolloutBuffer], device: torch.device) -> RolloutBuffer:
    """The workers' slices ``[T, E_k, ...]`` joined along the env axis, on ``device``."""

    def join(values: list[Any]) -> Any:
        first = values[0]
        if first is None:
            return None
        if isinstance(first, list):
            return [join([v[i] for v in values]) for i in range(len(first))]
        return torch.cat(values, 1).to(device)

    return RolloutBuffer(**{
        f.name: join([getattr(part, f.name) for part in parts]) for f in dataclasses.fields(RolloutBuffer)
    })


def _nbytes(tree: Any) -> int:
    """The bytes of the tensors in a nest of lists, dicts and dataclasses."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(_nbytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(_nbytes(v) for v in tree)
    if dataclasses.is_dataclass(tree):
        return sum(_nbytes(getattr(tree, f.name)) for f in dataclasses.fields(tree))
    return 0


class RolloutWorkers:
    """``cfg.train.rollout_workers`` workers collecting the run's rollout together (Ray actors,
    or in this process with ``remote=False``); see the module's docstring.

    ``last_timing`` holds the latest iteration's costs: ``weight_bytes`` and ``rollout_bytes``
    (tensor payloads), and in seconds ``put`` (the learner's one ``ray.put``), ``fetch`` (the
    slowest worker's ``ray.get`` of it), ``worker`` (the slowest worker's whole call: fetch, load,
    stepping), ``wait`` (the learner's wait for every slice, from the first submission),
    ``transfer`` (``wait - worker``: scheduling and the rollouts' return trip) and ``join`` (joining
    the slices on the training device).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        device: torch.device,
        *,
        remote: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.slices = worker_slices(cfg.train.num_envs, cfg.train.rollout_workers)
        self.timeout = cfg.train.rollout_timeout
        self.log = log
        self.generations = [0] * len(self.slices)
        self.replacements = 0
        """Workers replaced so far (all slices, whole run)."""
        self.last_timing: dict[str, float] = {}
        self._transport: _InProcess | _Ray = _Ray() if remote else _InProcess()
        if isinstance(self._transport, _Ray):
            self._transport.check_room(len(self.slices))
        self.workers = [self._start(k) for k in range(len(self.slices))]
        # Fail at start-up, not in the first iteration, and without retrying: a worker that
        # cannot start (no free CPU in the Ray cluster, envs that cannot be built) would not
        # start the second time either.
        pings = [self._transport.submit(w, "ping") for w in self.workers]
        for k, future in enumerate(pings):
            try:
                self._transport.result(future, self.timeout)
            except _WorkerLost as err:
                self.close()
                raise RolloutWorkerError(f"{self._describe(k)} did not start: {err}") from None

    def _start(self, k: int) -> Any:
        start, stop = self.slices[k]
        return self._transport.start(self.cfg, k, start, stop, self.generations[k])

    def _describe(self, k: int) -> str:
        start, stop = self.slices[k]
        return f"rollout worker {k} (envs {start}-{stop - 1})"

    def _replace(self, k: int, why: str, redo: str) -> None:
        """Kill worker ``k`` and start a fresh one (its envs seeded anew), saying so."""
        self._transport.stop(self.workers[k])
        self.generations[k] += 1
        self.replacements += 1
        self.workers[k] = self._start(k)
        self.log(f"{self._describe(k)} lost ({why}); replaced by a new worker with freshly reset "
                 f"envs, {redo}")

    def _call(self, k: int, method: str, *args: Any, future: Any = None, redo: str = "retrying") -> Any:
        """Worker ``k``'s answer to ``method(*args)`` (already submitted as ``future``, if given),
        replacing the worker up to :data:`MAX_REPLACEMENTS` times."""
        if future is None:
            future = self._transport.submit(self.workers[k], method, *args)
        for attempt in range(MAX_REPLACEMENTS + 1):
            try:
                return self._transport.result(future, self.timeout)
            except _WorkerLost as err:
                if attempt == MAX_REPLACEMENTS:
                    raise RolloutWorkerError(
                        f"{self._describe(k)} failed {MAX_REPLACEMENTS + 1} times in a row, last: {err}"
                    ) from None
                self._replace(k, str(err), redo)
                future = self._transport.submit(self.workers[k], method, *args)
        raise AssertionError("unreachable")

    def collect(self, policies: Sequence[nn.Module]) -> tuple[RolloutBuffer, list[EpisodeStats]]:
        """One rollout of every env with ``policies``' current weights: the learner's
        :class:`RolloutBuffer` ``[T, E, ...]`` on its device and the episodes that ended."""
        weights = [{k: v.detach().to(_CPU) for k, v in sd.items()} for sd in policy_state_dicts(policies)]
        began = time.perf_counter()
        box = [self._transport.put(weights)]  # the one broadcast object of this iteration
        put = time.perf_counter()
        futures = [self._transport.submit(w, "collect", box) for w in self.workers]
        answers = [
            self._call(k, "collect", box, future=future, redo="re-collecting its rollout")
            for k, future in enumerate(futures)
        ]
        waited = time.perf_counter()
        buffer = _join_envs([a["buffer"] for a in answers], self.device)
        joined = time.perf_counter()
        worker = max(a["timing"]["worker_seconds"] for a in answers)
        self.last_timing = {
            "weight_bytes": float(_nbytes(weights)),
            "rollout_bytes": float(sum(_nbytes(a["buffer"]) for a in answers)),
            "put": put - began,
            "fetch": max(a["timing"]["fetch_seconds"] for a in answers),
            "worker": worker,
            "wait": waited - put,
            "transfer": max(0.0, waited - put - worker),
            "join": joined - waited,
        }
        return buffer, [episode for a in answers for episode in a["episodes"]]

    def reset(self) -> None:
        """Fresh episodes in every worker's envs."""
        for k in range(len(self.workers)):
            self._call(k, "reset")

    def state_dict(self) -> dict[str, Any]:
        """Every worker's :meth:`RolloutWorker.state_dict`, in slice order."""
        return {"workers": [self._call(k, "state_dict") for k in range(len(self.workers))]}

    def load_state_dict(
        self, state: dict[str, Any] | None, on_warning: Callable[[str], None] = print
    ) -> bool:
        """Restore :meth:`state_dict`'s output; ``None`` (a checkpoint of in-process collection)
        or another split of the envs leaves the workers' envs freshly reset, saying so. Returns
        whether the workers continue where the checkpoint left them."""
        saved = None if state is None else state["workers"]
        ours = [list(s) for s in self.slices]
        if saved is None or [[s["start"], s["stop"]] for s in saved] != ours:
            written = ("in-process collection" if saved is None
                       else f"{len(saved)} rollout worker(s)")
            on_warning(
                f"the checkpoint was written with {written}, this run has {len(self.slices)} "
                "rollout worker(s): their envs' states cannot be split anew, so the workers start "
                "from freshly reset envs (the resumed run differs from an uninterrupted one)"
            )
            self.reset()
            return False
        for k, worker_state in enumerate(saved):
            for message in self._call(k, "load_state_dict", worker_state):
                on_warning(f"{self._describe(k)}: {message}")
        return True

    def close(self) -> None:
        """Stop the workers (and the Ray instance, where this object started it)."""
        for worker in self.workers:
            self._transport.stop(worker)
        self.workers = []
        self._transport.close()
