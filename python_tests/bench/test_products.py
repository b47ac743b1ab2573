"""``haml.bench.products``: the matrix products of a callable, recorded and replayed alone."""

import pytest
import torch

from haml.bench.products import record_products


def test_a_linear_layers_forward_and_backward_are_three_products_of_known_size():
    layer = torch.nn.Linear(5, 7)
    x = torch.randn(11, 5, requires_grad=True)

    def step():
        layer(x).sum().backward()

    products = record_products(step, runs=2)
    # Per run: the forward (addmm), the weight gradient and the input gradient, each 2*11*5*7.
    assert len(products.calls) == 6
    assert products.flops_per_run == 3 * 2 * 11 * 5 * 7
    # The gradient of the sum is a broadcast view (stride 0): the replay keeps that layout.
    assert any(0 in a.stride for c in products.calls for a in c.args if hasattr(a, "stride"))
    replayed = record_products(products.replay())
    assert [(c.op, c.args) for c in replayed.calls] == [(c.op, c.args) for c in products.calls]


def test_batched_products_count_their_batch():
    a, b = torch.randn(4, 3, 6), torch.randn(4, 6, 2)
    products = record_products(lambda: torch.bmm(a, b))
    assert products.flops_per_run == 4 * 2 * 3 * 6 * 2


def test_the_replay_runs_the_same_products_with_the_same_layouts():
    a = torch.randn(8, 3)
    w = torch.randn(5, 3)
    products = record_products(lambda: a @ w.t())  # a transposed operand
    replay = products.replay()
    again = record_products(replay)
    assert [(c.op, c.args) for c in again.calls] == [(c.op, c.args) for c in products.calls]


def test_only_products_are_recorded():
    x = torch.randn(10)
    assert record_products(lambda: (x.relu() + 1).sum()).calls == ()


def test_runs_below_one_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        record_products(lambda: None, runs=0)
