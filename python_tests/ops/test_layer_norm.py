"""haml.ops.layer_norm and haml.models.layer_norm.LayerNorm: the native forward against the
reference and against PyTorch's LayerNorm, its statistics against ``native_layer_norm``'s,
gradients of every order, opcheck / torch.compile, and the module that the networks use.

Row counts that are not a multiple of the kernel's block of rows (8 in float32, 4 in float64) and
widths that are not a multiple of its vector width exercise the kernel's remainder loops.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import haml.ops
from haml.models import layer_norm as layer_norm_module
from haml.models.layer_norm import LayerNorm
from haml.models.mlp import MLP
from haml.ops import layer_norm
from haml.ops.layer_norm import reference

TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
}
SHAPES = [(1, 1), (3, 5), (8, 64), (13, 67), (2, 9, 64), (37, 256), (4, 3, 2, 16), (7,)]


def make_inputs(shape, dtype=torch.float64, device="cpu", seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    width = shape[-1]
    x = torch.randn(shape, generator=g, dtype=dtype) + offset
    weight = torch.randn(width, generator=g, dtype=dtype)
    bias = torch.randn(width, generator=g, dtype=dtype)
    return tuple(t.to(device) for t in (x, weight, bias))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference_and_pytorch(shape, dtype, device, each_cpu_isa, record_ops):
    x, weight, bias = make_inputs(shape, dtype, device, seed=len(shape) + shape[-1])
    with record_ops() as rec:
        got = layer_norm(x, weight, bias)
    assert rec.called("haml.layer_norm_fwd") == haml.ops.has_native("layer_norm_fwd", device)
    assert got.shape == x.shape and got.dtype == dtype and got.device == x.device
    torch.testing.assert_close(got, reference.layer_norm(x, weight, bias), **TOL[dtype])
    torch.testing.assert_close(got, F.layer_norm(x, (shape[-1],), weight, bias), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_statistics_are_native_layer_norms(dtype, device, each_cpu_isa, require_native):
    """The saved mean and 1/σ are what PyTorch's backward kernel expects: its own forward's."""
    require_native("layer_norm_fwd", device)
    x, weight, bias = make_inputs((21, 5, 40), dtype, device, seed=3)
    out, mean, rstd = torch.ops.haml.layer_norm_fwd(x, weight, bias, 1e-5)
    want_out, want_mean, want_rstd = torch.ops.aten.native_layer_norm(x, [40], weight, bias, 1e-5)
    for got, want in ((out, want_out), (mean, want_mean), (rstd, want_rstd)):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, **TOL[dtype])


def test_large_mean_small_spread_keeps_precision(each_cpu_isa):
    """Two passes (x − μ)² rather than mean(x²) − μ²: rows far from zero, with a spread 1e4 times
    smaller than their mean, still normalise to float32 precision."""
    x, weight, bias = make_inputs((19, 64), torch.float32, offset=1e4, seed=5)
    want = reference.layer_norm(x.double(), weight.double(), bias.double()).float()
    torch.testing.assert_close(layer_norm(x, weight, bias), want, rtol=1e-3, atol=2e-3)


def test_non_contiguous_and_expanded_inputs(device, each_cpu_isa):
    x, weight, bias = make_inputs((12, 2, 33), torch.float64, device, seed=6)
    strided = x.transpose(0, 1)
    assert not strided.is_contiguous()
    torch.testing.assert_close(layer_norm(strided, weight, bias),
                               reference.layer_norm(strided, weight, bias), **TOL[torch.float64])
    wide = torch.stack([weight, weight], -1)[:, 0]
    assert not wide.is_contiguous()
    torch.testing.assert_close(layer_norm(x, wide, bias[:1].expand(33)),
                               reference.layer_norm(x, weight, bias[:1].expand(33)),
                               **TOL[torch.float64])


def test_no_row_gives_an_empty_result(device):
    x, weight, bias = make_inputs((0, 4, 8), torch.float32, device)
    out = layer_norm(x, weight, bias)
    assert out.shape == (0, 4, 8)


def test_constant_row_is_beta():
    """σ = 0: x̂ = 0 and y = β, as PyTorch gives (eps keeps 1/σ finite)."""
    x = torch.full((9, 16), 3.0)
    weight, bias = torch.randn(16), torch.randn(16)
    torch.testing.assert_close(layer_norm(x, weight, bias), bias.expand(9, 16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_match_reference(dtype, device, each_cpu_isa):
    x, weight, bias = make_inputs((11, 3, 24), dtype, device, seed=8)
    grad_out = torch.randn_like(x)
    got = torch.autograd.grad(layer_norm(*(t.requires_grad_() for t in (x, weight, bias))),
                              (x, weight, bias), grad_out)
    want = torch.autograd.grad(reference.layer_norm(x, weight, bias), (x, weight, bias), grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL[dtype])


def test_gradient_to_the_input_only():
    x, weight, bias = make_inputs((10, 12), torch.float64, seed=9)
    x.requires_grad_()
    (grad,) = torch.autograd.grad(layer_norm(x, weight, bias).square().sum(), x)
    x_ref = x.detach().clone().requires_grad_()
    (want,) = torch.autograd.grad(reference.layer_norm(x_ref, weight, bias).square().sum(), x_ref)
    torch.testing.assert_close(grad, want, **TOL[torch.float64])


def test_gradcheck_and_gradgradcheck(require_native):
    require_native("layer_norm_fwd", "cpu")
    x, weight, bias = make_inputs((5, 7), torch.float64, seed=10)
    inputs = tuple(t.requires_grad_() for t in (x, weight, bias))
    fn = lambda *a: torch.ops.haml.layer_norm_fwd(*a, 1e-5)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("shape, dtype", [((6, 16), torch.float32), ((3, 4, 9), torch.float64),
                                          ((0, 8), torch.float32)], ids=str)
def test_opcheck(shape, dtype, device, require_native):
    require_native("layer_norm_fwd", device)
    x, weight, bias = make_inputs(shape, dtype, device, seed=11)
    opcheck(torch.ops.haml.layer_norm_fwd.default, (x, weight, bias, 1e-5))
    opcheck(torch.ops.haml.layer_norm_fwd.default,
            (x.requires_grad_(), weight.requires_grad_(), bias, 1e-5))


def test_compile_fullgraph_traces_native_op(device, require_native, fresh_dynamo):
    require_native("layer_norm_fwd", device)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    def net(x, weight, bias):
        return layer_norm(torch.relu(x), weight, bias).sum(-1)

    x, weight, bias = make_inputs((16, 32), torch.float32, device, seed=12)
    got = torch.compile(net, fullgraph=True, backend=backend)(x, weight, bias)
    torch.testing.assert_close(got, net(x, weight, bias), **TOL[torch.float32])
    assert len(graphs) == 1 and "haml.layer_norm_fwd" in graphs[0]


def test_other_float_dtypes_run_pytorchs(record_ops):
    x, weight, bias = (t.to(torch.bfloat16) for t in make_inputs((4, 8), torch.float32))
    with record_ops() as rec:
        got = layer_norm(x, weight, bias)
    assert not rec.called("haml.layer_norm_fwd")
    torch.testing.assert_close(got, F.layer_norm(x, (8,), weight, bias))


@pytest.mark.parametrize("mutate, named", [
    (lambda a: dict(a, weight=a["weight"][:-1]), "weight"),
    (lambda a: dict(a, bias=a["bias"].float()), "bias"),
    (lambda a: dict(a, input=a["input"].long()), "input"),
    (lambda a: dict(a, input=a["input"][..., :0]), "input"),
    (lambda a: dict(a, input=torch.tensor(1.0, dtype=torch.float64)), "input"),
    (lambda a: dict(a, eps=-1.0), "eps"),
    (lambda a: dict(a, eps=float("nan")), "eps"),
    (lambda a: dict(a, weight=[1.0] * 8), "weight"),
])
def test_bad_input_names_the_argument(mutate, named):
    x, weight, bias = make_inputs((3, 8), torch.float64)
    args = mutate(dict(input=x, weight=weight, bias=bias, eps=1e-5))
    with pytest.raises((TypeError, ValueError), match=f"'{named}'"):
        layer_norm(**args)


# -- the module ------------------------------------------------------------------------------------


def _pair(width, dtype=torch.float32):
    ours, theirs = LayerNorm(width).to(dtype), torch.nn.LayerNorm(width).to(dtype)
    with torch.no_grad():
        for p in (*ours.parameters(), *theirs.parameters()):
            p.copy_(torch.randn_like(p))
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize("rows", [3, layer_norm_module.NATIVE_MIN_ELEMENTS // 64 + 5])
def test_module_is_nn_layer_norm(rows, record_ops):
    """Below the size threshold PyTorch's kernel runs, above it (without a gradient) the native
    one; both give nn.LayerNorm's output and gradients, with its parameter names."""
    ours, theirs = _pair(64)
    assert isinstance(ours, torch.nn.LayerNorm)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(rows, 64)
    big = rows * 64 >= layer_norm_module.NATIVE_MIN_ELEMENTS
    with torch.no_grad(), record_ops() as rec:
        out = ours(x)
    assert rec.called("haml.layer_norm_fwd") == (big and haml.ops.has_native("layer_norm_fwd", "cpu"))
    torch.testing.assert_close(out, theirs(x), **TOL[torch.float32])
    # Wanting a gradient (here of the input and, in grad mode, of the weights) sends every size to
    # PyTorch's kernel, whose backward is the cheaper to reach; the gradients are nn.LayerNorm's.
    x.requires_grad_()
    with record_ops() as rec:
        out = ours(x)
    assert not rec.called("haml.layer_norm_fwd")
    want = theirs(x)
    torch.testing.assert_close(out, want, **TOL[torch.float32])
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, ours.weight, ours.bias), grad_out)
    wanted = torch.autograd.grad(want, (x, theirs.weight, theirs.bias), grad_out)
    for g, w in zip(got, wanted):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


def test_module_takes_the_native_kernel_for_frozen_weights_in_grad_mode(record_ops):
    """What needs a gradient decides, not grad mode: a frozen network's large evaluation (a
    critic during its actors' step) runs natively with grad mode on."""
    ours, theirs = _pair(64)
    ours.requires_grad_(False)
    x = torch.randn(layer_norm_module.NATIVE_MIN_ELEMENTS // 64, 64)
    with record_ops() as rec:
        out = ours(x)
    assert rec.called("haml.layer_norm_fwd") == haml.ops.has_native("layer_norm_fwd", "cpu")
    torch.testing.assert_close(out, theirs(x), **TOL[torch.float32])


def test_module_keeps_pytorchs_kernel_for_a_reference_backend(monkeypatch, record_ops):
    monkeypatch.setattr(layer_norm_module, "_native_cpu", lambda: False)
    ours, theirs = _pair(64)
    x = torch.randn(layer_norm_module.NATIVE_MIN_ELEMENTS // 64, 64)
    with torch.no_grad(), record_ops() as rec:
        out = ours(x)
    assert not rec.called("haml.layer_norm_fwd")
    torch.testing.assert_close(out, theirs(x))


def test_module_native_dtypes_are_the_ops():
    from haml.ops import _validate

    assert layer_norm_module._NATIVE_DTYPES == _validate.NATIVE_DTYPES


def test_mlp_normalises_with_the_module():
    mlp = MLP(10, (64, 64), "relu", layer_norm=True, input_norm=True)
    norms = [m for m in mlp.layers if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 3 and all(isinstance(m, LayerNorm) for m in norms)
