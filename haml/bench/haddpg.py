"""One HADDPG update, :class:`~haml.algorithms.haddpg.DDPGLearner` against its plain PyTorch
specification :func:`~haml.algorithms.haddpg.reference_update`, measured in one run.

An update is the critic step, every agent's actor step in a random order, and the target update,
at the sizes of one of two settings (:data:`SETTINGS`, ``--setting``):

- ``mamujoco`` (default): the authors' tuned MaMuJoCo runs, batch 1000, [256, 256] ReLU networks,
  2 and 6 agents with 17 observation and 3 action entries each, the state their concatenated
  observations;
- ``smax`` (HASAC only, the discrete variant): haml's SMAX 3m runs, batch 1000, 3 agents with 75
  observation entries, 8 actions (about 60 % available) and a 72-entry state, [64] ReLU networks
  with input and hidden LayerNorms, automatic temperature.

Both learners start from the same networks and update on the same batch; their calls are timed
with blocks interleaved (:func:`haml.bench.timing.measure_interleaved`), so the machine's drift
does not enter the ratio.

What the learner does that the reference does not: the critic's first-layer state term
(:meth:`~haml.models.QCritic.state_term`) computed once per actor phase instead of once per agent
(and, for a Discrete agent, once per candidate action); no gradient of the
critic's weights in the actor phase; each agent's new action computed once, after its step,
instead of by every successor; the targets updated by one multi-tensor lerp.

Each row also prints the update's matrix products (:mod:`haml.bench.products`): the FLOPs of the
learner's and of the reference's (whole updates; the mean over a policy-delay cycle for HATD3),
and the time the learner's products take replayed alone, the **floor**. The learner cannot be
faster than its floor, so reference / floor is the most that reference / learner can reach
without changing which products the update does.

``python -m haml.bench.haddpg`` (or ``python -m haml.bench haddpg``) prints the table; the cases
have the :class:`haml.bench.ops.Case` form, the "native" column being the learner.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from haml.bench import report
from haml.bench.ops import (
    Callables,
    Case,
    Options,
    Target,
    _generator,
    compile_skip_reason,
    run_case,
)
from haml.bench.products import Products, record_products
from haml.bench.timing import format_seconds

__all__ = ["AGENTS", "ALGOS", "SETTINGS", "TARGETS", "Setting", "haddpg_cases", "main",
           "matmul_flops"]

AGENTS = (2, 6)
OBS_DIM, ACTION_DIM, BATCH, HIDDEN = 17, 3, 1000, (256, 256)
TARGETS = {("mamujoco", "cpu", 6): (Target("reference/native", ">=", 2.0),)}
"""Issue 20's goal, by (setting, device, agents): at least twice the plain update's speed at 6
agents on the CPU, at the MaMuJoCo sizes."""

ALGOS = ("haddpg", "hatd3", "hasac")
"""The updates this bench times: HADDPG's; HATD3's (twin critic, smoothing, actors and targets
every 2nd update: one timed update is the mean of the two kinds); HASAC's (tanh-Gaussian actors,
soft twin critic, the authors' default fixed temperature)."""


@dataclass(frozen=True)
class Setting:
    """The sizes of one bench setting: agent counts, per-agent observation size, the state size
    (None: the agents' observations concatenated), the action space (``("box", d)`` or
    ``("discrete", n)``, the latter with action masks), the networks, and which updates apply."""

    agents: tuple[int, ...]
    obs_dim: int
    state_dim: int | None
    action: tuple[str, int]
    hidden: tuple[int, ...]
    norms: bool
    algos: tuple[str, ...]


SETTINGS = {
    "mamujoco": Setting(AGENTS, OBS_DIM, None, ("box", ACTION_DIM), HIDDEN, False, ALGOS),
    "smax": Setting((3,), 75, 72, ("discrete", 8), (64,), True, ("hasac",)),
}


def _check_pair(algo: str, setting: str) -> None:
    """ValueError unless this bench times ``algo`` at ``setting``."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; this bench times {list(ALGOS)}")
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; this bench has {list(SETTINGS)}")
    if algo not in SETTINGS[setting].algos:
        raise ValueError(f"the {setting} setting times {list(SETTINGS[setting].algos)}, "
                         f"not {algo!r}")


def problem(n_agents: int, device: torch.device, dtype: torch.dtype = torch.float32,
            algo: str = "haddpg", setting: str = "mamujoco"):
    """``(learner, batch)``: a fresh learner of ``algo`` (HA, buffer successors) at ``setting``'s
    sizes and one replay batch of random transitions, the same numbers on every device."""
    from gymnasium import spaces

    from haml.algorithms.haddpg import DDPGLearner, HADDPGConfig
    from haml.algorithms.hasac import HASACConfig, SACLearner
    from haml.algorithms.hatd3 import TD3Config, TD3Learner
    from haml.models import DeterministicPolicy, QCritic
    from haml.models.soft_policy import make_soft_policy

    _check_pair(algo, setting)
    size = SETTINGS[setting]
    twin = algo != "haddpg"
    kind, n_act = size.action
    discrete = kind == "discrete"
    space = spaces.Discrete(n_act) if discrete else spaces.Box(-1.0, 1.0, (n_act,))
    nets = {"hidden": size.hidden, "layer_norm": size.norms, "input_norm": size.norms}

    torch.manual_seed(n_agents)  # the networks' initial weights
    state_dim = size.state_dim or n_agents * size.obs_dim
    if algo == "hasac":
        policies = [make_soft_policy(size.obs_dim, space, **nets, dtype=dtype, device=device)
                    for _ in range(n_agents)]
    else:
        policies = [DeterministicPolicy(size.obs_dim, space, **nets, dtype=dtype, device=device)
                    for _ in range(n_agents)]
    critic = QCritic(state_dim, [n_act] * n_agents, twin=twin, dtype=dtype, device=device, **nets)
    if algo == "hasac":
        learner = SACLearner(policies, critic, HASACConfig(auto_alpha=discrete), gamma=0.99,
                             sequential=True)
    elif twin:
        learner = TD3Learner(policies, critic, TD3Config(), gamma=0.99, sequential=True)
    else:
        learner = DDPGLearner(policies, critic, HADDPGConfig(), gamma=0.99, sequential=True)

    gen = _generator(1000 + n_agents)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device)

    def masks() -> tuple[torch.Tensor, ...] | None:
        if not discrete:
            return None
        drawn = []
        for _ in range(n_agents):
            mask = torch.rand(BATCH, n_act, generator=gen) < 0.6
            mask[:, 0] = True  # SMAX's no-op: always one available action
            drawn.append(mask.to(device))
        return tuple(drawn)

    def actions(available: tuple[torch.Tensor, ...] | None) -> tuple[torch.Tensor, ...]:
        if available is None:
            return tuple(draw(BATCH, n_act).clamp(-1, 1) for _ in range(n_agents))
        return tuple(torch.multinomial(m.float().cpu(), 1, generator=gen).squeeze(1).to(device)
                     for m in available)

    obs = tuple(draw(BATCH, size.obs_dim) for _ in range(n_agents))
    next_obs = tuple(draw(BATCH, size.obs_dim) for _ in range(n_agents))
    action_masks, next_action_masks = masks(), masks()
    terminated = (torch.rand(BATCH, generator=gen) < 0.01).to(device=device, dtype=dtype)

    def state_of(per_agent: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat(per_agent, dim=-1) if size.state_dim is None else draw(BATCH, state_dim)

    batch = types.SimpleNamespace(  # the fields of haml.buffers.replay.ReplaySample
        obs=obs,
        state=state_of(obs),
        actions=actions(action_masks),
        action_masks=action_masks,
        active_masks=None,
        reward=draw(BATCH),
        discount=0.99 * (1 - terminated),
        next_obs=next_obs,
        next_state=state_of(next_obs),
        next_action_masks=next_action_masks,
        steps=torch.ones(BATCH, dtype=torch.int64, device=device),
    )
    return learner, batch


def _reference_update(algo: str):
    if algo == "hasac":
        from haml.algorithms.hasac import reference_update
    elif algo == "hatd3":
        from haml.algorithms.hatd3 import reference_update
    else:
        from haml.algorithms.haddpg import reference_update
    return reference_update


def updates_per_call(algo: str) -> int:
    """How many updates one timed call makes: a whole cycle of update kinds. HATD3 steps its
    actors every ``policy_delay``-th update only, so its single updates take two very different
    times, and a median over them would be that of whichever kind happened to be sampled more."""
    from haml.algorithms.hatd3 import TD3Config

    return TD3Config().policy_delay if algo == "hatd3" else 1


def _cycle(update, algo: str):
    updates = updates_per_call(algo)

    def run() -> None:
        for _ in range(updates):
            update()

    return run


def update_products(n_agents: int, algo: str = "haddpg", side: str = "native",
                    device: torch.device = torch.device("cpu"),
                    setting: str = "mamujoco") -> Products:
    """The matrix products of one cycle of updates (:func:`updates_per_call`) of the learner
    (``side="native"``) or of the reference, on a fresh problem, after one unrecorded cycle so
    that lazily built state (the optimisers' moments) is in place."""
    learner, batch = problem(n_agents, device, algo=algo, setting=setting)
    if side == "native":
        cycle = _cycle(lambda: learner.update(batch), algo)
    elif side == "reference":
        reference_update = _reference_update(algo)
        cycle = _cycle(lambda: reference_update(learner, batch), algo)
    else:
        raise ValueError(f"side must be 'native' or 'reference', got {side!r}")
    cycle()
    return record_products(cycle)


def _flops_per_update(products: dict[str, Products], algo: str) -> dict[str, float]:
    return {side: p.flops_per_run / updates_per_call(algo) for side, p in products.items()}


def matmul_flops(n_agents: int, algo: str = "haddpg",
                 device: torch.device = torch.device("cpu"),
                 setting: str = "mamujoco") -> dict[str, float]:
    """Matrix-product FLOPs of one update (the mean over a cycle): ``{"native": ...,
    "reference": ...}``."""
    return _flops_per_update(
        {side: update_products(n_agents, algo, side, device, setting)
         for side in ("native", "reference")},
        algo,
    )


def haddpg_cases(device: torch.device, options: Options, algo: str = "haddpg",
                 flops: dict[int, dict[str, float]] | None = None,
                 setting: str = "mamujoco") -> list[Case]:
    """One case per agent count: "native" is the learner's ``update``, "reference" is its
    module's ``reference_update``, each on its own copy of the same learner. Building a case
    records both sides' products once: the learner's become the floor, and their FLOPs per
    update (:func:`matmul_flops`'s numbers) go into ``flops`` under the agent count."""
    reference_update = _reference_update(algo)
    flops = {} if flops is None else flops
    _check_pair(algo, setting)
    size = SETTINGS[setting]

    cases = []
    for n_agents in size.agents[:1] if options.quick else size.agents:

        def build(n_agents=n_agents) -> Callables:
            products = {side: update_products(n_agents, algo, side, device, setting)
                        for side in ("native", "reference")}
            flops[n_agents] = _flops_per_update(products, algo)
            learner, batch = problem(n_agents, device, algo=algo, setting=setting)
            twin = copy.deepcopy(learner)
            return Callables(
                reference=_cycle(lambda: reference_update(twin, batch), algo),
                native=_cycle(lambda: learner.update(batch), algo),
                floor=products["native"].replay(),
            )

        cases.append(
            Case(
                op=f"{algo}_update",
                shape={"setting": setting, "agents": n_agents, "B": BATCH,
                       "hidden": "x".join(map(str, size.hidden)), "norms": size.norms,
                       "obs": size.obs_dim, "actions": "{}{}".format(*size.action),
                       "updates": updates_per_call(algo)},
                device=device,
                build=build,
                native_op=f"{algo}_update",
                compile_skip=compile_skip_reason(
                    options, "not compiled: an update is n + 1 optimiser steps"
                ),
                floor="the learner's matrix products alone, recorded from its update and replayed",
                targets=TARGETS.get((setting, device.type, n_agents), ()),
            )
        )
    return cases


def _line(record: dict[str, Any]) -> str:
    """One case's row, times per update (a timed call is a cycle of ``shape["updates"]``)."""
    fast, ref, floor = (record["times"][name] for name in ("native", "reference", "floor"))
    updates = record["shape"]["updates"]
    ratio = record["ratios"]["reference/native"]
    flops = record["matmul_flops"]
    met = "".join(
        f"  target ref/fast {t['relation']} {t['bound']:g}: {'met' if t['met'] else 'NOT met'}"
        for t in record["targets"]
    )
    load = fast.get("other_load")

    def per_update(t: dict[str, Any]) -> str:
        return (f"{format_seconds(t['median'] / updates)} "
                f"(IQR {format_seconds(t['iqr'] / updates)})")

    return (
        f"{record['device']:4} {record['shape']['setting']} agents={record['shape']['agents']}  "
        + ("" if updates == 1 else f"(per update, timed {updates} at a time)  ")
        + f"fast {per_update(fast)}  reference {per_update(ref)}  ref/fast {ratio:.2f}x{met}"
        + ("" if load is None else f"  (other processes: {load:.0%} of the CPUs)")
        + f"\n     products: fast {flops['native'] / 1e9:.2f} GFLOP, reference "
        f"{flops['reference'] / 1e9:.2f} GFLOP ({flops['reference'] / flops['native']:.2f}x); "
        f"fast's alone {format_seconds(floor['median'] / updates)}, so ref/fast <= "
        f"{ref['median'] / floor['median']:.2f}x (fast is {record['ratios']['native/floor']:.2f}x "
        "its products)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m haml.bench.haddpg [--algo haddpg|hatd3|hasac] [--setting mamujoco|smax]
    [--device cpu|cuda|all] [--quick] [--threads N] [--out PATH]``."""
    from haml.bench import (
        DEVICE_CHOICES,
        BenchUsageError,
        add_threads_and_out_arguments,
        apply_threads,
        resolve_devices,
    )

    parser = argparse.ArgumentParser(
        prog="python -m haml.bench.haddpg",
        description="Time one HADDPG (or HATD3, HASAC) update (batch 1000, [256, 256], 2 and 6 agents): "
        "the learner against the plain PyTorch reference update.",
    )
    parser.add_argument("--algo", choices=ALGOS, default="haddpg",
                        help="whose update to time (default haddpg)")
    parser.add_argument("--setting", choices=list(SETTINGS), default="mamujoco",
                        help="the sizes: mamujoco (batch 1000, [256, 256], 2 and 6 agents, Box "
                        "actions; default) or smax (discrete HASAC at SMAX 3m's sizes: 3 agents, "
                        "8 masked actions, [64] with LayerNorms)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="cpu")
    parser.add_argument("--quick", action="store_true",
                        help="the smallest agent count only, short timings")
    add_threads_and_out_arguments(parser)
    args = parser.parse_args(argv)
    try:
        _check_pair(args.algo, args.setting)
    except ValueError as err:
        parser.error(f"--setting {args.setting} --algo {args.algo}: {err}")
    apply_threads(parser, args)
    try:
        devices = resolve_devices(args.device)
    except BenchUsageError as err:
        parser.error(str(err))
    options = Options.make(quick=args.quick, compile=False)
    env = report.environment(devices)
    print(f"haml bench haddpg --algo {args.algo} --setting {args.setting}: "
          f"{env['num_threads']} threads, torch {env['torch']}, "
          + ", ".join(f"{d.type} ({env['device_names'][d.type]})" for d in devices), flush=True)
    start = time.perf_counter()
    records = []
    for device in devices:
        flops: dict[int, dict[str, float]] = {}
        for case in haddpg_cases(device, options, args.algo, flops, args.setting):
            record = run_case(case, options)
            record["matmul_flops"] = flops[case.shape["agents"]]
            records.append(record)
            print(_line(record), flush=True)
    if args.out is not None:
        report.write_json(
            {"benchmark": f"haml bench haddpg --algo {args.algo} --setting {args.setting}",
             "schema_version": 1, "environment": env,
             "cases": records, "total_seconds": time.perf_counter() - start},
            args.out,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
