"""``haml bench happo``: the FLOP count of the GEMM floor, the routes it times do the learner's
update, and the command prints its rows."""

import copy
import dataclasses

import torch

from haml.bench.happo import (
    _gemm_floor,
    _native_gradient_update,
    _problem,
    happo_cases,
    linear_dims,
    main,
    update_gemm_flops,
)
from haml.bench.ops import Options


def test_gemm_flops_count_forward_weight_and_input_gradients():
    dims = linear_dims(3, (4, 5), 2)
    assert dims == [(3, 4), (4, 5), (5, 2)]
    n = 10
    forward = 2 * n * (3 * 4 + 4 * 5 + 5 * 2)
    weight_grads = forward
    input_grads = 2 * n * (4 * 5 + 5 * 2)  # none for the first layer's input, the observations
    assert update_gemm_flops(dims, n, epochs=3) == 3 * (forward + weight_grads + input_grads)


def test_gemm_floor_runs_one_mm_per_counted_product(monkeypatch):
    dims = linear_dims(3, (4, 5), 2)
    calls = []
    real_mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b, out: calls.append((a.shape, b.shape)) or real_mm(a, b, out=out))
    _gemm_floor(dims, 7, epochs=2)()
    flops = sum(2 * a[0] * a[1] * b[1] for a, b in calls)
    assert flops == update_gemm_flops(dims, 7, epochs=2)


def test_native_gradient_route_takes_the_learners_gradient():
    # One epoch: both leave the (clipped) gradient of the same surrogate in .grad, compared in
    # float64 (in float32 the surrogate's cancelling sums leave ~1e-4 relative between any two
    # summation orders). Parameters after Adam are no test: its normalisation amplifies rounding
    # in near-zero gradients.
    learner_cls, config_cls, policy, batch = _problem(17, 6)
    policy = policy.double()
    batch = dataclasses.replace(batch, **{
        name: getattr(batch, name).double() for name in ("obs", "actions", "logp_old", "advantages", "factor")
    })
    cfg = config_cls(lr=1e-3, epochs=1, clip=0.2)
    autograd, native = learner_cls(copy.deepcopy(policy), cfg), learner_cls(copy.deepcopy(policy), cfg)
    autograd.update(batch)
    _native_gradient_update(native, batch)()
    want = torch.cat([p.grad.reshape(-1) for p in autograd.policy.parameters()])
    got = torch.cat([p.grad.reshape(-1) for p in native.policy.parameters()])
    assert want.norm() > 0
    assert ((got - want).norm() / want.norm()).item() < 1e-10


def test_cases_and_command(capsys):
    cases = happo_cases(Options.make(quick=False, compile=False))
    assert [(c.shape["obs"], c.shape["epochs"]) for c in cases] == [(17, 5), (17, 15), (113, 5), (113, 15)]
    assert main(["--quick", "--no-compile", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "obs=17 actions=6 epochs=5: autograd" in out and "of the GEMM floor" in out
    assert "autograd/native" in out
