"""``haml bench happo``: the FLOP count of the GEMM floor, the routes it times are the learner's
two gradient paths, and the command prints its rows."""


import torch

from haml.bench.happo import (
    _gemm_floor,
    critic_cases,
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


def test_the_native_route_is_the_learners_native_gradient_and_the_reference_autograd(monkeypatch):
    # The routes are the learner itself, so the learner's parity tests
    # (python_tests/algorithms/test_ppo_native_gradient.py) cover what the bench times.
    from haml.ops import FisherOperator

    calls = []
    real = FisherOperator.objective_gradient
    monkeypatch.setattr(FisherOperator, "objective_gradient",
                        lambda op, objective: calls.append(1) or real(op, objective))
    (case,) = happo_cases(Options.make(quick=True, compile=False))
    fns = case.build()
    fns.reference()
    assert calls == []
    fns.native()
    assert len(calls) == case.shape["epochs"]


def test_the_critic_routes_are_the_critic_learners_two_gradient_paths(monkeypatch):
    # As for the actor: the critic learner's parity tests
    # (python_tests/algorithms/test_critic_native_gradient.py) cover what the bench times.
    import haml.algorithms.critics as critics

    calls = []
    real = critics.value_loss_gradient
    monkeypatch.setattr(critics, "value_loss_gradient", lambda *a: calls.append(1) or real(*a))
    (case,) = critic_cases(Options.make(quick=True, compile=False))
    fns = case.build()
    fns.reference()
    assert calls == []
    fns.native()
    from haml.ops import _backend

    served = _backend.has_native_class("FisherOperator")  # a VCritic on float32 [N, in]
    assert len(calls) == (case.shape["epochs"] if served else 0)


def test_cases_and_command(capsys):
    cases = happo_cases(Options.make(quick=False, compile=False))
    assert [(c.shape["obs"], c.shape["epochs"]) for c in cases] == [(17, 5), (17, 15), (113, 5), (113, 15)]
    assert main(["--quick", "--no-compile", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "actor: obs=17 actions=6 epochs=5: autograd" in out and "of the GEMM floor" in out
    assert "critic: inputs=17 epochs=5: autograd" in out
    assert out.count("autograd/native") == 2
    assert [(c.shape["obs"], c.shape["epochs"]) for c in critic_cases(Options.make(quick=False, compile=False))] == [
        (17, 5), (17, 15), (113, 5), (113, 15)]
