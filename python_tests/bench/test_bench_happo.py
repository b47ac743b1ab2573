"""``haml bench happo``: the GEMM floor is the update's recorded products, the routes it times
are the learner's two gradient paths, and the command prints its rows."""

import pytest

from haml.bench.happo import HIDDEN, N, critic_cases, happo_cases, main
from haml.bench.ops import Options


def _hand_count(in_dim: int, out_dim: int, epochs: int, metrics_forward: bool) -> int:
    # The network [in, 128, 128, 128, out] with LayerNorm on its input: every epoch a forward
    # product, a weight gradient and an input gradient per Linear. The first Linear's input
    # gradient is needed too, since the input LayerNorm's scale and shift train (the bench's
    # earlier hand-written floor left it out). The actor learner's metrics add one forward after
    # the epochs; the critic learner's report only its mean loss.
    sizes = [in_dim, *HIDDEN, out_dim]
    forward = sum(2 * N * a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return epochs * 3 * forward + (forward if metrics_forward else 0)


@pytest.mark.parametrize("cases, out_dim, metrics_forward",
                         [(happo_cases, 6, True), (critic_cases, 1, False)])
def test_the_floor_is_the_updates_products_by_hand_count(cases, out_dim, metrics_forward):
    flops = {}
    (case,) = cases(Options.make(quick=True, compile=False), flops)
    fns = case.build()
    in_dim, epochs = case.shape["obs"], case.shape["epochs"]
    assert flops[(in_dim, epochs)] == _hand_count(in_dim, out_dim, epochs, metrics_forward)
    fns.floor()


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
