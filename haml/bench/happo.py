"""One HAPPO actor update against the machine's limit, and the candidate routes to a faster one.

The update is :class:`~haml.algorithms.happo.PPOActorLearner`'s (``epochs`` passes over
``N = 4000`` samples, one minibatch, the clipped surrogate through :func:`haml.ops.clipped_surrogate`,
Adam, gradient-norm clipping) on an ``MLPPolicy`` of [128, 128, 128] with LayerNorm, as in the
tuned MaMuJoCo settings. Timed in one interleaved run (:func:`haml.bench.timing.measure_interleaved`):

- ``reference``: the learner's update with ``native_gradient=False``: autograd through the network;
- ``native``: the learner's update as training runs it, the gradient from the native Fisher
  operator's cached forward and one transposed pass
  (:meth:`haml.ops.FisherOperator.objective_gradient`, a fresh operator per epoch because the
  parameters move);
- ``compiled``: the same update with the surrogate's forward (policy, log-probability, surrogate)
  through ``torch.compile`` and its backward through the compiled graph;
- ``floor``: the update's matrix products alone, recorded from the autograd update
  (:mod:`haml.bench.products`: every product of the forward and backward passes of every epoch,
  and of the metrics' forward after them) and replayed on tensors of the same sizes and strides:
  what the update would cost at the machine's GEMM speed, the limit the issue measures against.

The table prints each route's time, ``reference/native`` and ``compiled/native``, the achieved
GFLOP/s of the autograd update (the GEMMs' FLOPs over its time) and that as a fraction of the
floor's GFLOP/s.

Then one critic update of the same settings (:class:`~haml.algorithms.critics.CriticLearner`: a
``VCritic`` of [128, 128, 128] with LayerNorm on inputs of the same two sizes, clipped Huber loss,
value normalisation, Adam, gradient-norm clipping), interleaved the same way: ``reference`` with
``critic.native_gradient=False`` (autograd through the network), ``native`` as training runs it
(:func:`haml.ops.value_gradient.value_loss_gradient`), and its GEMM floor.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from haml.bench import report
from haml.bench.ops import Callables, Case, Options, _generator, compile_skip_reason, run_case
from haml.bench.products import record_products
from haml.bench.timing import format_seconds

__all__ = ["SHAPES", "happo_cases", "critic_cases", "main"]

N, HIDDEN = 4000, (128, 128, 128)
SHAPES = ((17, 6), (113, 8))
"""(observation, action) sizes: HalfCheetah-2x3 agents' and Ant's (the issue's two)."""
EPOCHS = (5, 15)


def _floor(update: Any) -> tuple[Any, float]:
    """``(floor, flops)``: the matrix products of one call of ``update`` (an autograd update,
    recorded by :func:`haml.bench.products.record_products` after one unrecorded call), as a
    callable that replays them alone, and their FLOPs."""
    update()
    products = record_products(update)
    return products.replay(), products.flops_per_run


def _problem(obs_dim: int, action_dim: int):
    """A learner on a fresh policy and one batch of the tuned settings' size."""
    from gymnasium import spaces

    from haml.algorithms.base import ActorBatch
    from haml.algorithms.happo import PPOActorLearner, PPOConfig
    from haml.models import MLPPolicy, joint_log_prob

    torch.manual_seed(obs_dim)
    policy = MLPPolicy(obs_dim, spaces.Box(-1.0, 1.0, (action_dim,)), hidden=HIDDEN,
                       activation="relu", layer_norm=True, input_norm=True)
    gen = _generator(obs_dim)
    obs = torch.randn(N, obs_dim, generator=gen)
    with torch.no_grad():
        dist = policy.distribution(obs)
        actions = dist.sample()
        logp_old = joint_log_prob(dist, actions) + 0.05 * torch.randn(N, generator=gen)
    batch = ActorBatch(obs=obs, actions=actions, logp_old=logp_old,
                       advantages=torch.randn(N, generator=gen),
                       factor=torch.exp(0.1 * torch.randn(N, generator=gen)))
    return PPOActorLearner, PPOConfig, policy, batch


def _compiled_update(learner: Any, batch: Any) -> Any:
    """Returns a closure around the learner's update with a ``torch.compile``-d forward."""
    from torch import nn

    from haml.models import joint_log_prob
    from haml.ops import clipped_surrogate

    cfg, policy = learner.cfg, learner.policy

    def forward(obs, actions, logp_old, advantages, factor):
        dist = policy.distribution(obs)
        return clipped_surrogate(joint_log_prob(dist, actions), logp_old, advantages, cfg.clip,
                                 factor=factor).loss

    compiled = torch.compile(forward)

    def update() -> None:
        for _ in range(cfg.epochs):
            learner.optimizer.zero_grad(set_to_none=True)
            compiled(batch.obs, batch.actions, batch.logp_old, batch.advantages,
                     batch.factor).backward()
            if cfg.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            learner.optimizer.step()

    return lambda: update


def happo_cases(options: Options, flops: dict[tuple[int, int], float] | None = None) -> list[Case]:
    """One case per (observation, action) size and epoch count, on the CPU. Building a case
    records its floor's FLOPs in ``flops`` under (observation size, epochs)."""
    flops = {} if flops is None else flops
    cases = []
    device = torch.device("cpu")
    for obs_dim, action_dim in SHAPES[:1] if options.quick else SHAPES:
        for epochs in EPOCHS[:1] if options.quick else EPOCHS:

            def build(obs_dim=obs_dim, action_dim=action_dim, epochs=epochs) -> Callables:
                learner_cls, config_cls, policy, batch = _problem(obs_dim, action_dim)
                # lr 0: every route updates from the same parameters in every call.
                cfg = config_cls(lr=1e-30, epochs=epochs, clip=0.2)
                autograd, native, compiled, recorded = (
                    learner_cls(copy.deepcopy(policy), dataclasses.replace(cfg, native_gradient=flag))
                    for flag in (False, True, False, False)
                )
                floor, flops[(obs_dim, epochs)] = _floor(lambda: recorded.update(batch))
                return Callables(
                    reference=lambda: autograd.update(batch),
                    native=lambda: native.update(batch),
                    compile=_compiled_update(compiled, batch),
                    floor=floor,
                )

            cases.append(Case(
                op="happo_actor_update",
                shape={"N": N, "hidden": "x".join(map(str, HIDDEN)) + "+LN", "obs": obs_dim,
                       "actions": action_dim, "epochs": epochs},
                device=device,
                build=build,
                native_op="happo_actor_update",
                compile_skip=compile_skip_reason(options),
                floor="the autograd update's matrix products alone, recorded and replayed",
            ))
    return cases


def _critic_problem(in_dim: int):
    """A critic learner's inputs on a fresh ``VCritic`` and one batch of the tuned settings' size."""
    from haml.models.value import VCritic

    torch.manual_seed(in_dim)
    critic = VCritic(in_dim, HIDDEN, "relu", layer_norm=True, input_norm=True)
    gen = _generator(in_dim)
    inputs = torch.randn(N, in_dim, generator=gen)
    returns = 3.0 * torch.randn(N, generator=gen)
    with torch.no_grad():
        old_raw = critic(inputs)
    return critic, inputs, returns, old_raw


def critic_cases(options: Options, flops: dict[tuple[int, int], float] | None = None) -> list[Case]:
    """One critic-update case per input size and epoch count, on the CPU. Building a case
    records its floor's FLOPs in ``flops`` under (input size, epochs)."""
    from haml.algorithms.critics import CriticLearner
    from haml.config.schema import CriticConfig

    flops = {} if flops is None else flops
    cases = []
    for in_dim, _ in SHAPES[:1] if options.quick else SHAPES:
        for epochs in EPOCHS[:1] if options.quick else EPOCHS:

            def build(in_dim=in_dim, epochs=epochs) -> Callables:
                critic, inputs, returns, old_raw = _critic_problem(in_dim)
                # lr 0: both routes update from the same parameters in every call. The tuned
                # settings' loss: Huber δ 10, value clip 0.05, value normalisation, clip norm 10.
                cfg = CriticConfig(lr=1e-30, epochs=epochs, huber_delta=10.0, value_clip=0.05,
                                   value_norm=True, max_grad_norm=10.0)
                autograd, native, recorded = (
                    CriticLearner(copy.deepcopy(critic), dataclasses.replace(cfg, native_gradient=flag))
                    for flag in (False, True, False)
                )
                floor, flops[(in_dim, epochs)] = _floor(lambda: recorded.update(inputs, returns, old_raw))
                return Callables(
                    reference=lambda: autograd.update(inputs, returns, old_raw),
                    native=lambda: native.update(inputs, returns, old_raw),
                    floor=floor,
                )

            cases.append(Case(
                op="happo_critic_update",
                shape={"N": N, "hidden": "x".join(map(str, HIDDEN)) + "+LN", "obs": in_dim,
                       "actions": 1, "epochs": epochs},
                device=torch.device("cpu"),
                build=build,
                native_op="happo_critic_update",
                compile_skip="not timed for the critic",
                floor="the autograd update's matrix products alone, recorded and replayed",
            ))
    return cases


def _line(record: dict[str, Any]) -> str:
    shape, times, ratios = record["shape"], record["times"], record["ratios"]

    def show(name: str) -> str:
        t = times[name]
        return "skipped" if t is None else format_seconds(t["median"])

    flops = record["matmul_flops"]
    autograd, floor = times["reference"]["median"], times["floor"]["median"]
    compiled = ratios["compiled/native"]
    load = times["reference"].get("other_load")
    critic = record["op"] == "happo_critic_update"
    what = (
        f"critic: inputs={shape['obs']}" if critic
        else f"actor: obs={shape['obs']} actions={shape['actions']}"
    )
    return (
        f"{what} epochs={shape['epochs']}: "
        f"autograd {show('reference')} ({flops / autograd / 1e9:.0f} GFLOP/s, "
        f"{floor / autograd:.0%} of the GEMM floor's {flops / floor / 1e9:.0f} GFLOP/s)  "
        f"native gradient {show('native')} (autograd/native {ratios['reference/native']:.2f}x)"
        + ("" if critic else f"  compiled {show('compiled')}")
        + ("" if compiled is None else
           f" (autograd/compiled {ratios['reference/native'] / compiled:.2f}x)")
        + ("" if load is None else f"  (other processes: {load:.0%} of the CPUs)")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m haml.bench.happo [--quick] [--no-compile] [--threads N] [--out PATH]``."""
    from haml.bench import add_threads_and_out_arguments, apply_threads

    parser = argparse.ArgumentParser(
        prog="python -m haml.bench.happo",
        description="Time one HAPPO actor update (N 4000, [128]x3 + LayerNorm, observations 17 "
        "and 113, 5 and 15 epochs): today's autograd path, the native-gradient and compiled "
        "routes, and the update's matrix products alone (the GEMM floor); then one critic "
        "update of the same sizes, autograd against the native gradient.",
    )
    parser.add_argument("--quick", action="store_true", help="one shape, 5 epochs, short timings")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="do not time the torch.compile route")
    add_threads_and_out_arguments(parser)
    args = parser.parse_args(argv)
    apply_threads(parser, args)
    options = Options.make(quick=args.quick, compile=args.compile)
    env = report.environment([torch.device("cpu")])
    print(f"haml bench happo: {env['num_threads']} threads, torch {env['torch']}, "
          f"cpu ({env['device_names']['cpu']})", flush=True)
    start = time.perf_counter()
    records = []
    actor_flops: dict[tuple[int, int], float] = {}
    critic_flops: dict[tuple[int, int], float] = {}
    for case, flops in [*((c, actor_flops) for c in happo_cases(options, actor_flops)),
                        *((c, critic_flops) for c in critic_cases(options, critic_flops))]:
        record = run_case(case, options)
        record["matmul_flops"] = flops[(case.shape["obs"], case.shape["epochs"])]
        records.append(record)
        print(_line(record), flush=True)
    if args.out is not None:
        report.write_json({"benchmark": "haml bench happo", "schema_version": 1,
                           "environment": env, "cases": records,
                           "total_seconds": time.perf_counter() - start}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
