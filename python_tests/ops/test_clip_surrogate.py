"""haml.ops.clipped_surrogate: native forward and fused backward against the reference, every
branch of the clipped min by hand, masks, broadcasting, routing to the reference, gradcheck,
opcheck, torch.compile and bad input.

The reference (:func:`haml.ops.clip_surrogate.reference.clipped_surrogate`) is the oracle for the
random cases; the hand-computed cases check both against formulas written out here.
"""

from __future__ import annotations

import math
import zlib
from typing import NamedTuple

import pytest
import torch
from torch.library import opcheck

import haml.ops
from haml.ops import SurrogateOut, clipped_surrogate
from haml.ops.clip_surrogate import reference

OP = "clip_surrogate_fwd"
# The native kernel accumulates in double and the reference in the input dtype, so float32 sums
# over thousands of samples differ by a few ulps of the largest partial sum.
TOL = {
    torch.float32: dict(rtol=2e-5, atol=2e-6),
    torch.float64: dict(rtol=1e-11, atol=1e-13),
}
GRAD_TOL = {
    torch.float32: dict(rtol=2e-5, atol=1e-8),
    torch.float64: dict(rtol=1e-11, atol=1e-15),
}


class Inputs(NamedTuple):
    logp_new: torch.Tensor
    logp_old: torch.Tensor
    advantages: torch.Tensor
    factor: torch.Tensor
    mask_bool: torch.Tensor
    mask_float: torch.Tensor
    entropy: torch.Tensor


def make_inputs(shape, dtype=torch.float64, device="cpu", seed=0, spread=0.4) -> Inputs:
    """Random inputs whose ratios fall both inside and far outside a clip range of 0.05 to 0.2."""
    g = torch.Generator().manual_seed(seed)

    def randn():
        return torch.randn(shape, generator=g, dtype=dtype)

    def rand():
        return torch.rand(shape, generator=g, dtype=dtype)

    logp_old = -0.5 - 2.0 * rand()
    logp_new = logp_old + spread * randn()
    advantages = randn()
    factor = torch.exp(0.3 * randn())
    mask_bool = rand() < 0.7
    mask_float = rand() * mask_bool  # weights in [0, 1), zero where masked out
    entropy = 2.0 * rand()
    return Inputs(*(t.to(device) for t in (logp_new, logp_old, advantages, factor, mask_bool,
                                           mask_float, entropy)))


def run(fn, logp_new, logp_old, advantages, clip, factor=None, mask=None, entropy=None,
        entropy_coef=0.0):
    """(SurrogateOut, d loss / d logp_new, d loss / d entropy or None) on fresh leaves."""
    logp_new = logp_new.detach().clone().requires_grad_()
    leaves = [logp_new]
    if entropy is not None:
        entropy = entropy.detach().clone().requires_grad_()
        leaves.append(entropy)
    out = fn(logp_new, logp_old, advantages, clip, factor, mask, entropy, entropy_coef)
    grads = torch.autograd.grad(out.loss, leaves, allow_unused=True)
    return out, grads[0], (grads[1] if entropy is not None else None)


# The façade (on whichever backend serves it) and the reference: behaviour both must share.
IMPLEMENTATIONS = {"facade": clipped_surrogate, "reference": reference.clipped_surrogate}


def assert_out_close(got: SurrogateOut, want: SurrogateOut, dtype):
    assert isinstance(got, SurrogateOut)
    for name in SurrogateOut._fields:
        g, w = getattr(got, name), getattr(want, name)
        assert g.shape == () and g.dtype == dtype, name
        torch.testing.assert_close(g, w.detach(), **TOL[dtype], msg=lambda m: f"{name}: {m}")


# --------------------------------------------------------------------------------------------
# Parity with the reference, forward and gradients

SHAPES = [(1,), (7,), (16, 3), (9, 4, 3), (3, 6000)]  # the last spans several parallel chunks
EXTRAS = {
    "plain": dict(),
    "factor": dict(factor=True),
    "mask_bool": dict(mask="bool"),
    "mask_float": dict(mask="float"),
    "entropy": dict(entropy_coef=0.01),
    "all": dict(factor=True, mask="float", entropy_coef=-0.05),
}


@pytest.mark.parametrize("extras", list(EXTRAS))
@pytest.mark.parametrize("clip", [0.05, 0.2, None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(shape, dtype, clip, extras, device, require_native, record_ops,
                            each_cpu_isa):
    require_native(OP, device)
    x = make_inputs(shape, dtype, device, seed=zlib.crc32(repr((shape, dtype, clip, extras)).encode()))
    spec = EXTRAS[extras]
    kwargs = dict(
        factor=x.factor if spec.get("factor") else None,
        mask={None: None, "bool": x.mask_bool, "float": x.mask_float}[spec.get("mask")],
        entropy=x.entropy if "entropy_coef" in spec else None,
        entropy_coef=spec.get("entropy_coef", 0.0),
    )
    with record_ops() as rec:
        got, g_new, g_ent = run(clipped_surrogate, x.logp_new, x.logp_old, x.advantages, clip, **kwargs)
    assert rec.called("haml.clip_surrogate_fwd") and rec.called("haml.clip_surrogate_bwd"), rec.ops
    want, w_new, w_ent = run(reference.clipped_surrogate, x.logp_new, x.logp_old, x.advantages,
                             clip, **kwargs)
    assert_out_close(got, want, dtype)
    torch.testing.assert_close(g_new, w_new, **GRAD_TOL[dtype])
    if kwargs["entropy"] is not None:
        torch.testing.assert_close(g_ent, w_ent, **GRAD_TOL[dtype])
    if clip == 0.2 and x.logp_new.numel() > 10:
        # The inputs must exercise the clip, or this test would not cover the min's other branch.
        assert 0.2 < want.clip_fraction < 0.95


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_direct_op_outputs(dtype, require_native):
    """The raw op's extra outputs: weight_sum = Σ mask and ratio = exp(logp_new - logp_old)."""
    require_native(OP, "cpu")
    x = make_inputs((5, 4), dtype, seed=3)
    loss, clip_fraction, approx_kl, ratio_mean, weight_sum, ratio = torch.ops.haml.clip_surrogate_fwd(
        x.logp_new, x.logp_old, x.advantages, x.factor, x.mask_float, x.entropy, 0.2, 0.01)
    want = reference.clipped_surrogate(x.logp_new, x.logp_old, x.advantages, 0.2, x.factor,
                                       x.mask_float, x.entropy, 0.01)
    assert_out_close(SurrogateOut(loss, clip_fraction, approx_kl, ratio_mean), want, dtype)
    torch.testing.assert_close(weight_sum, x.mask_float.sum(), **TOL[dtype])
    torch.testing.assert_close(ratio, torch.exp(x.logp_new - x.logp_old), **TOL[dtype])


@pytest.mark.parametrize("impl", ["facade", "reference"])
def test_statistics_are_detached(impl):
    """Only ``loss`` carries a gradient (SurrogateOut's contract): a statistic that requires grad
    would let a caller backpropagate through it and silently get zeros or garbage."""
    fn = IMPLEMENTATIONS[impl]
    x = make_inputs((6, 2), seed=1)
    logp_new = x.logp_new.clone().requires_grad_()
    entropy = x.entropy.clone().requires_grad_()
    out = fn(logp_new, x.logp_old, x.advantages, 0.2, x.factor, x.mask_bool, entropy, 0.01)
    assert out.loss.requires_grad
    assert [getattr(out, f).requires_grad for f in SurrogateOut._fields[1:]] == [False] * 3


# --------------------------------------------------------------------------------------------
# Every branch of the clipped min, by hand

# ε = 0.2 and ratios on both sides of [0.8, 1.2], far from the kinks, with advantages of both signs.
#   Â > 0: min(r Â, clip(r) Â) = r Â for r < 1.2 (gradient r Â), 1.2 Â for r > 1.2 (gradient 0)
#   Â < 0: min(r Â, clip(r) Â) = 0.8 Â for r < 0.8 (gradient 0), r Â for r > 0.8 (gradient r Â)
BRANCH_RATIOS = [0.05, 0.5, 0.79, 0.95, 1.0, 1.1, 1.21, 2.0, 20.0]
BRANCH_ADVANTAGES = [1.5, -0.75]


def _hand_objective(r, a, eps):
    """(objective, d objective / d logp_new, clipped?) of one sample, unweighted (M = 1)."""
    if eps is None:
        return r * a, r * a, 0.0
    lo, hi = 1.0 - eps, 1.0 + eps
    if a > 0:
        obj, grad = (r * a, r * a) if r < hi else (hi * a, 0.0)
    else:
        obj, grad = (r * a, r * a) if r > lo else (lo * a, 0.0)
    return obj, grad, float(abs(r - 1.0) > eps)


@pytest.mark.parametrize("clip", [0.2, None])
@pytest.mark.parametrize("impl", ["facade", "reference"])
def test_all_branches_by_hand(impl, clip):
    fn = IMPLEMENTATIONS[impl]
    pairs = [(r, a) for r in BRANCH_RATIOS for a in BRANCH_ADVANTAGES]
    n = len(pairs)
    ratio = torch.tensor([r for r, _ in pairs], dtype=torch.float64)
    advantages = torch.tensor([a for _, a in pairs], dtype=torch.float64)
    logp_old = torch.full((n,), -1.3, dtype=torch.float64)
    logp_new = logp_old + torch.log(ratio)
    out, grad, _ = run(fn, logp_new, logp_old, advantages, clip)
    hand = [_hand_objective(r, a, clip) for r, a in pairs]
    want_loss = -sum(h[0] for h in hand) / n
    want_grad = torch.tensor([-h[1] / n for h in hand], dtype=torch.float64)
    assert out.loss.item() == pytest.approx(want_loss, rel=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-12, atol=1e-15)
    assert out.clip_fraction.item() == pytest.approx(sum(h[2] for h in hand) / n, abs=1e-15)
    assert out.ratio_mean.item() == pytest.approx(sum(BRANCH_RATIOS) / len(BRANCH_RATIOS), rel=1e-12)
    want_kl = sum((r - 1.0) - math.log(r) for r, _ in pairs) / n
    assert out.approx_kl.item() == pytest.approx(want_kl, rel=1e-12)
    if clip is not None:
        # Each of the four (sign, side) branches holds at least two samples.
        assert sum(h[1] == 0.0 for h in hand) >= 4 and out.clip_fraction.item() > 0.4


@pytest.mark.parametrize("dtype,limit", [(torch.float32, 60.0), (torch.float64, 600.0)])
def test_extreme_ratios(dtype, limit, require_native):
    """Log-ratios up to ±limit (ratios near the dtype's range, not overflowing): the native exp
    and branch choices agree with the reference, forward and gradient."""
    require_native(OP, "cpu")
    log_ratio = torch.linspace(-limit, limit, 41, dtype=dtype).repeat_interleave(2)
    advantages = torch.tensor([1.0, -1.0], dtype=dtype).repeat(41)
    logp_old = torch.full_like(log_ratio, -3.0)
    got, g_got, _ = run(clipped_surrogate, logp_old + log_ratio, logp_old, advantages, 0.2)
    want, g_want, _ = run(reference.clipped_surrogate, logp_old + log_ratio, logp_old, advantages, 0.2)
    assert torch.isfinite(want.loss) and torch.isfinite(g_want).all()
    assert_out_close(got, want, dtype)
    torch.testing.assert_close(g_got, g_want, **GRAD_TOL[dtype])


def test_factor_weights_the_advantage():
    """With M, the objective is min(r M Â, clip(r) M Â): a negative M flips which side clips."""
    ratio = torch.tensor([0.5, 1.5], dtype=torch.float64)
    logp_new = torch.log(ratio)
    logp_old = torch.zeros(2, dtype=torch.float64)
    advantages = torch.tensor([1.0, 1.0], dtype=torch.float64)
    factor = torch.tensor([-2.0, 0.5], dtype=torch.float64)
    out, grad, _ = run(clipped_surrogate, logp_new, logp_old, advantages, 0.2, factor)
    # Sample 0: M Â = -2, r = 0.5 < 0.8: min(-1, -1.6) = -1.6, clipped, gradient 0.
    # Sample 1: M Â = 0.5, r = 1.5 > 1.2: min(0.75, 0.6) = 0.6, clipped, gradient 0.
    assert out.loss.item() == pytest.approx(-(-1.6 + 0.6) / 2, rel=1e-12)
    assert grad.tolist() == [0.0, 0.0]
    assert out.clip_fraction.item() == 1.0


# --------------------------------------------------------------------------------------------
# Masks


@pytest.mark.parametrize("mask_kind", ["bool", "float"])
@pytest.mark.parametrize("impl", ["facade", "reference"])
def test_all_masked_gives_zeros(impl, mask_kind):
    """No active sample: loss and statistics are 0 (not 0/0), and so are the gradients."""
    fn = IMPLEMENTATIONS[impl]
    x = make_inputs((4, 3), seed=6)
    mask = torch.zeros(4, 3, dtype=torch.bool if mask_kind == "bool" else torch.float64)
    out, g_new, g_ent = run(fn, x.logp_new, x.logp_old, x.advantages, 0.2, x.factor, mask,
                            x.entropy, 0.1)
    assert [getattr(out, f).item() for f in SurrogateOut._fields] == [0.0] * 4
    assert not g_new.any() and not g_ent.any()


@pytest.mark.parametrize("mask_kind", ["bool", "float"])
@pytest.mark.parametrize("impl", ["facade", "reference"])
def test_masked_non_finite_entries_are_excluded(impl, mask_kind):
    """Masked-out samples (dead agents, padding) may hold inf or NaN log-probabilities,
    advantages or entropies: they change nothing, and their gradient is exactly 0 (a NaN there
    would reach the policy's parameters through backprop)."""
    fn = IMPLEMENTATIONS[impl]
    x = make_inputs((10,), seed=7, spread=0.5)
    active = torch.tensor([1, 1, 0, 1, 0, 1, 1, 0, 1, 0], dtype=torch.bool)
    mask = active if mask_kind == "bool" else active * (0.5 + torch.rand(10, dtype=torch.float64))
    logp_new, logp_old = x.logp_new.clone(), x.logp_old.clone()
    advantages, entropy = x.advantages.clone(), x.entropy.clone()
    logp_new[2] = math.nan
    logp_new[4] = math.inf  # ratio inf
    logp_old[7] = -math.inf  # ratio inf, log ratio inf
    logp_new[9] = -math.inf  # ratio 0, log ratio -inf
    advantages[7] = math.nan
    entropy[4] = math.inf
    entropy[9] = math.nan
    out, g_new, g_ent = run(fn, logp_new, logp_old, advantages, 0.2, x.factor, mask, entropy, 0.01)
    # The oracle: the reference on the active samples alone, all finite.
    want, w_new, w_ent = run(reference.clipped_surrogate, x.logp_new[active], x.logp_old[active],
                             x.advantages[active], 0.2, x.factor[active], mask[active],
                             x.entropy[active], 0.01)
    assert_out_close(out, want, torch.float64)
    assert g_new[~active].tolist() == [0.0] * 4
    assert g_ent[~active].tolist() == [0.0] * 4
    torch.testing.assert_close(g_new[active], w_new, **GRAD_TOL[torch.float64])
    torch.testing.assert_close(g_ent[active], w_ent, **GRAD_TOL[torch.float64])


def test_float_mask_weights():
    """A float mask weighs samples: weight 2 counts a sample twice (same as duplicating it)."""
    x = make_inputs((6,), seed=8)
    weights = torch.tensor([2.0, 1.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    out, _, _ = run(clipped_surrogate, x.logp_new, x.logp_old, x.advantages, 0.2, None, weights)
    idx = torch.tensor([0, 0, 1, 3, 4, 5])
    want, _, _ = run(clipped_surrogate, x.logp_new[idx], x.logp_old[idx], x.advantages[idx], 0.2)
    assert_out_close(out, want, torch.float64)


def test_entropy_bonus():
    """loss = surrogate loss - entropy_coef · mean(H): the bonus is exactly that offset, and its
    gradient is -entropy_coef · w / Σw."""
    x = make_inputs((12,), seed=9)
    coef = 0.3
    base, _, _ = run(clipped_surrogate, x.logp_new, x.logp_old, x.advantages, 0.2, None, x.mask_float)
    out, _, g_ent = run(clipped_surrogate, x.logp_new, x.logp_old, x.advantages, 0.2, None,
                        x.mask_float, x.entropy, coef)
    weight_sum = x.mask_float.sum()
    mean_entropy = (x.mask_float * x.entropy).sum() / weight_sum
    torch.testing.assert_close(out.loss, base.loss - coef * mean_entropy)
    torch.testing.assert_close(g_ent, -coef * x.mask_float / weight_sum)
    for name in SurrogateOut._fields[1:]:
        assert torch.equal(getattr(out, name), getattr(base, name)), name


# --------------------------------------------------------------------------------------------
# Broadcasting and layouts


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_broadcasting(dtype, require_native, record_ops):
    """advantages [T,1,1], factor [1,E,1], mask [T,1,1] and entropy [T,1,1] against logp [T,E,1]:
    the same as the reference on explicitly expanded copies, with the entropy gradient summed
    back to its own shape."""
    require_native(OP, "cpu")
    T, E = 6, 4
    x = make_inputs((T, E, 1), dtype, seed=10)
    advantages, factor = x.advantages[:, :1], x.factor[:1]
    mask, entropy = x.mask_bool[:, :1], x.entropy[:, :1]
    with record_ops() as rec:
        out, g_new, g_ent = run(clipped_surrogate, x.logp_new, x.logp_old, advantages, 0.2,
                                factor, mask, entropy, 0.02)
    assert rec.called("haml.clip_surrogate_fwd")
    assert g_ent.shape == (T, 1, 1)
    shape = x.logp_new.shape
    full = lambda t: t.expand(shape).contiguous()  # noqa: E731
    entropy_leaf = entropy.clone().requires_grad_()
    logp_leaf = x.logp_new.clone().requires_grad_()
    want = reference.clipped_surrogate(logp_leaf, x.logp_old, full(advantages), 0.2, full(factor),
                                       full(mask), entropy_leaf.expand(shape), 0.02)
    w_new, w_ent = torch.autograd.grad(want.loss, (logp_leaf, entropy_leaf))
    assert_out_close(out, want, dtype)
    torch.testing.assert_close(g_new, w_new, **GRAD_TOL[dtype])
    torch.testing.assert_close(g_ent, w_ent, **GRAD_TOL[dtype])


@pytest.mark.parametrize("layout", ["transposed", "strided", "expanded_advantages"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_contiguous(layout, dtype, require_native):
    """Strided views give the reference's answer and gradients land in the viewed leaf."""
    require_native(OP, "cpu")
    x = make_inputs((8, 10), dtype, seed=11)
    if layout == "transposed":
        view = lambda t: t.t()  # noqa: E731   [10, 8] with strides (1, 10)
    elif layout == "strided":
        view = lambda t: t[::2, 1::3]  # noqa: E731
    else:
        view = lambda t: t  # noqa: E731
    base_new = x.logp_new.clone().requires_grad_()
    base_ent = x.entropy.clone().requires_grad_()
    logp_old, factor, mask = view(x.logp_old), view(x.factor), view(x.mask_float)
    advantages = view(x.advantages)
    if layout == "expanded_advantages":
        advantages = x.advantages[:, :1].expand(8, 10)
    logp_new = view(base_new)
    assert not logp_new.is_contiguous() or not advantages.is_contiguous()
    out = clipped_surrogate(logp_new, logp_old, advantages, 0.2, factor, mask, view(base_ent), 0.05)
    g_new, g_ent = torch.autograd.grad(out.loss, (base_new, base_ent))
    ref_new = x.logp_new.clone().requires_grad_()
    ref_ent = x.entropy.clone().requires_grad_()
    want = reference.clipped_surrogate(view(ref_new).contiguous(), logp_old.contiguous(),
                                       advantages.contiguous(), 0.2, factor.contiguous(),
                                       mask.contiguous(), view(ref_ent).contiguous(), 0.05)
    w_new, w_ent = torch.autograd.grad(want.loss, (ref_new, ref_ent))
    assert_out_close(out, want, dtype)
    torch.testing.assert_close(g_new, w_new, **GRAD_TOL[dtype])
    torch.testing.assert_close(g_ent, w_ent, **GRAD_TOL[dtype])


# --------------------------------------------------------------------------------------------
# Gradients: gradcheck, routing to the reference


def _away_from_kinks(n, seed):
    """float64 (logp_new, logp_old, advantages) whose ratios keep ≥ 0.03 from 1 ± 0.2."""
    g = torch.Generator().manual_seed(seed)
    choices = torch.tensor([0.4, 0.7, 0.9, 1.0, 1.05, 1.15, 1.3, 2.5], dtype=torch.float64)
    ratio = choices[torch.randint(len(choices), (n,), generator=g)]
    logp_old = -1.0 - torch.rand(n, generator=g, dtype=torch.float64)
    advantages = torch.randn(n, generator=g, dtype=torch.float64)
    return logp_old + torch.log(ratio), logp_old, advantages


@pytest.mark.parametrize("clip", [0.2, None])
@pytest.mark.parametrize("with_mask_factor", [False, True])
def test_gradcheck_native(clip, with_mask_factor, require_native, record_ops):
    require_native(OP, "cpu")
    logp_new, logp_old, advantages = _away_from_kinks(12, seed=12)
    g = torch.Generator().manual_seed(13)
    factor = torch.exp(0.3 * torch.randn(12, generator=g, dtype=torch.float64)) if with_mask_factor else None
    mask = (torch.rand(12, generator=g, dtype=torch.float64) * 2).round() if with_mask_factor else None
    entropy = torch.rand(12, generator=g, dtype=torch.float64)

    def loss(lp, ent):
        return clipped_surrogate(lp, logp_old, advantages, clip, factor, mask, ent, 0.07).loss

    inputs = (logp_new.requires_grad_(), entropy.requires_grad_())
    with record_ops() as rec:
        assert torch.autograd.gradcheck(loss, inputs)
    assert rec.called("haml.clip_surrogate_bwd")


@pytest.mark.parametrize("needs_grad", ["logp_old", "advantages", "factor", "mask"])
def test_constants_requiring_grad_route_to_reference(needs_grad, record_ops):
    """The native backward only differentiates logp_new and entropy; when another input requires
    grad the façade must take the reference, so that the gradient reaches it, and correctly."""
    logp_new, logp_old, advantages = _away_from_kinks(10, seed=14)
    g = torch.Generator().manual_seed(15)
    tensors = dict(logp_new=logp_new, logp_old=logp_old, advantages=advantages,
                   factor=torch.exp(0.3 * torch.randn(10, generator=g, dtype=torch.float64)),
                   mask=0.5 + torch.rand(10, generator=g, dtype=torch.float64))
    tensors[needs_grad] = tensors[needs_grad].clone().requires_grad_()
    with record_ops() as rec:
        out = clipped_surrogate(tensors["logp_new"], tensors["logp_old"], tensors["advantages"],
                                0.2, tensors["factor"], tensors["mask"])
    assert not rec.called("haml.clip_surrogate_fwd")
    (grad,) = torch.autograd.grad(out.loss, tensors[needs_grad])
    assert grad.abs().sum() > 0

    names = ["logp_new", needs_grad]

    def loss(*xs):
        t = tensors | dict(zip(names, xs))
        return clipped_surrogate(t["logp_new"], t["logp_old"], t["advantages"], 0.2, t["factor"],
                                 t["mask"]).loss

    inputs = tuple(tensors[n].detach().clone().requires_grad_() for n in names)
    assert torch.autograd.gradcheck(loss, inputs)


def test_logp_old_gradient_is_minus_logp_new_gradient():
    """The loss depends on logp_new - logp_old only: the two gradients are opposite."""
    logp_new, logp_old, advantages = _away_from_kinks(9, seed=16)
    logp_new.requires_grad_()
    logp_old.requires_grad_()
    out = clipped_surrogate(logp_new, logp_old, advantages, 0.2)
    g_new, g_old = torch.autograd.grad(out.loss, (logp_new, logp_old))
    assert g_new.abs().sum() > 0
    torch.testing.assert_close(g_old, -g_new, rtol=0, atol=1e-15)


def test_no_grad_logp_old_still_native_under_no_grad(record_ops, require_native):
    """Under torch.no_grad nothing will be differentiated, so the native kernel serves even an
    input that requires grad."""
    require_native(OP, "cpu")
    logp_new, logp_old, advantages = _away_from_kinks(6, seed=17)
    logp_old.requires_grad_()
    with torch.no_grad(), record_ops() as rec:
        out = clipped_surrogate(logp_new, logp_old, advantages, 0.2)
    assert rec.called("haml.clip_surrogate_fwd")
    want = reference.clipped_surrogate(logp_new, logp_old.detach(), advantages, 0.2)
    assert_out_close(out, want, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_runs_reference(dtype, record_ops):
    x = make_inputs((5, 3), seed=18)
    cast = [t.to(dtype) for t in (x.logp_new, x.logp_old, x.advantages)]
    with record_ops() as rec:
        out, grad, _ = run(clipped_surrogate, *cast, 0.2)
    assert not rec.called("haml.clip_surrogate_fwd")
    assert out.loss.dtype == dtype and grad.dtype == dtype
    want, w_grad, _ = run(reference.clipped_surrogate, *(t.double() for t in cast), 0.2)
    torch.testing.assert_close(out.loss.double(), want.loss, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(grad.double(), w_grad, rtol=2e-2, atol=2e-3)


# --------------------------------------------------------------------------------------------
# opcheck


def _fwd_args(case):
    x = make_inputs((5, 3), torch.float64, seed=19)
    logp_new = x.logp_new.clone().requires_grad_()
    entropy = x.entropy.clone().requires_grad_()
    return {
        "plain": (logp_new, x.logp_old, x.advantages, None, None, None, 0.2, 0.0),
        "all_optionals": (logp_new, x.logp_old, x.advantages, x.factor, x.mask_float, entropy, 0.1, 0.01),
        "unclipped": (logp_new, x.logp_old, x.advantages, x.factor, None, entropy, None, 0.01),
        "all_masked": (logp_new, x.logp_old, x.advantages, None, torch.zeros_like(x.mask_float),
                       None, 0.2, 0.0),
        "float32": (x.logp_new.float().requires_grad_(), x.logp_old.float(), x.advantages.float(),
                    None, x.mask_float.float(), None, 0.2, 0.0),
        # Strided inputs ([5, 3] with strides (1, 5)): the fake kernel must promise the strides
        # that the real kernel returns.
        "transposed": (x.logp_new.t().contiguous().t().detach().requires_grad_(),
                       x.logp_old.t().contiguous().t(), x.advantages, None, None, None, 0.2, 0.0),
    }[case]


@pytest.mark.parametrize("case", ["plain", "all_optionals", "unclipped", "all_masked", "float32",
                                  "transposed"])
def test_opcheck_fwd(case, require_native):
    require_native(OP, "cpu")
    args = _fwd_args(case)
    opcheck(torch.ops.haml.clip_surrogate_fwd.default, args)


@pytest.mark.parametrize("entropy_grad", [False, True])
@pytest.mark.parametrize("optionals", [False, True])
@pytest.mark.parametrize("clip", [0.2, None])
def test_opcheck_bwd(entropy_grad, optionals, clip, require_native):
    require_native("clip_surrogate_bwd", "cpu")
    x = make_inputs((4, 6), torch.float64, seed=20)
    ratio = torch.exp(x.logp_new - x.logp_old)
    factor, mask = (x.factor, x.mask_float) if optionals else (None, None)
    weight_sum = x.mask_float.sum() if optionals else torch.tensor(24.0, dtype=torch.float64)
    args = (torch.tensor(1.5, dtype=torch.float64), ratio, x.advantages, factor, mask, weight_sum,
            clip, 0.01, entropy_grad)
    opcheck(torch.ops.haml.clip_surrogate_bwd.default, args)


# --------------------------------------------------------------------------------------------
# torch.compile


def _loss(logp_new, logp_old, advantages, factor, mask, entropy):
    out = clipped_surrogate(logp_new, logp_old, advantages, 0.2, factor, mask, entropy, 0.01)
    return out.loss, out.clip_fraction, out.approx_kl


def _compile_inputs(dtype=torch.float32):
    x = make_inputs((32, 4), dtype, seed=21)
    return (x.logp_new.clone().requires_grad_(), x.logp_old, x.advantages[:, :1], x.factor,
            x.mask_bool, x.entropy.clone().requires_grad_())


def _eager_and_compiled(compiled):
    args = _compile_inputs()
    got = compiled(*args)
    g_got = torch.autograd.grad(got[0], (args[0], args[5]))
    args2 = _compile_inputs()
    want = _loss(*args2)
    g_want = torch.autograd.grad(want[0], (args2[0], args2[5]))
    torch.testing.assert_close(tuple(t.detach() for t in got), tuple(t.detach() for t in want),
                               **TOL[torch.float32])
    torch.testing.assert_close(g_got, g_want, **GRAD_TOL[torch.float32])


def test_compile_traces_native_forward_and_backward(require_native, fresh_dynamo):
    """fullgraph: one graph, the native forward in it, the native backward in AOTAutograd's
    backward graph."""
    require_native(OP, "cpu")
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = {"forward": [], "backward": []}

    def recorder(kind):
        def compiler(gm, example_inputs):
            graphs[kind].append(str(gm.graph))
            return make_boxed_func(gm.forward)
        return compiler

    backend = aot_autograd(fw_compiler=recorder("forward"), bw_compiler=recorder("backward"))
    _eager_and_compiled(torch.compile(_loss, fullgraph=True, backend=backend))
    assert len(graphs["forward"]) == 1 and len(graphs["backward"]) == 1
    assert "haml.clip_surrogate_fwd" in graphs["forward"][0]
    assert "haml.clip_surrogate_bwd" in graphs["backward"][0]


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_backends(backend, require_native, fresh_dynamo):
    require_native(OP, "cpu")
    _eager_and_compiled(torch.compile(_loss, fullgraph=True, backend=backend))


def test_compile_loss_and_backward_in_one_graph(require_native, fresh_dynamo):
    """The whole step, forward and torch.autograd.grad, inside one fullgraph function."""
    require_native(OP, "cpu")
    if not hasattr(torch._dynamo.config, "trace_autograd_ops"):
        pytest.skip("this torch cannot trace torch.autograd.grad inside a compiled graph")

    def step(logp_new, logp_old, advantages, factor, mask, entropy):
        loss = _loss(logp_new, logp_old, advantages, factor, mask, entropy)[0]
        grads = torch.autograd.grad(loss, (logp_new, entropy))
        return loss.detach(), grads

    with torch._dynamo.config.patch(trace_autograd_ops=True):
        loss, grads = torch.compile(step, fullgraph=True, backend="aot_eager")(*_compile_inputs())
    want_loss, want_grads = step(*_compile_inputs())
    torch.testing.assert_close(loss, want_loss, **TOL[torch.float32])
    torch.testing.assert_close(grads, want_grads, **GRAD_TOL[torch.float32])


# --------------------------------------------------------------------------------------------
# Bad input


def _valid(dtype=torch.float32):
    x = make_inputs((4, 3), dtype, seed=0)
    return dict(logp_new=x.logp_new, logp_old=x.logp_old, advantages=x.advantages, clip=0.2,
                factor=x.factor, mask=x.mask_bool, entropy=x.entropy, entropy_coef=0.01)


def _call(**overrides):
    return clipped_surrogate(**(_valid() | overrides))


BAD_INPUTS = {
    "empty_logp_new": (dict(logp_new=torch.zeros(0), logp_old=torch.zeros(0), advantages=torch.zeros(0),
                            factor=None, mask=None, entropy=None), ValueError, "'logp_new'"),
    "list_logp_new": (dict(logp_new=[[0.0] * 3] * 4), TypeError, "'logp_new'"),
    "int_logp_new": (dict(logp_new=torch.zeros(4, 3, dtype=torch.int64)), TypeError, "'logp_new'"),
    "float_logp_old": (dict(logp_old=-1.0), TypeError, "'logp_old'"),
    "float64_logp_old": (dict(logp_old=torch.zeros(4, 3, dtype=torch.float64)), TypeError, "'logp_old'"),
    "logp_old_shape": (dict(logp_old=torch.zeros(4, 1)), ValueError, "'logp_old'"),
    "advantages_shape": (dict(advantages=torch.zeros(4, 2)), ValueError, "'advantages'"),
    "advantages_more_dims": (dict(advantages=torch.zeros(4, 3, 2)), ValueError, "'advantages'"),
    "advantages_float64": (dict(advantages=torch.zeros(4, 3, dtype=torch.float64)), TypeError,
                           "'advantages'"),
    "advantages_none": (dict(advantages=None), TypeError, "'advantages'"),
    "factor_shape": (dict(factor=torch.ones(2, 3)), ValueError, "'factor'"),
    "factor_float": (dict(factor=1.0), TypeError, "'factor'"),
    "factor_float64": (dict(factor=torch.ones(4, 3, dtype=torch.float64)), TypeError, "'factor'"),
    "mask_int": (dict(mask=torch.ones(4, 3, dtype=torch.int32)), TypeError, "'mask'"),
    "mask_shape": (dict(mask=torch.ones(5, 3, dtype=torch.bool)), ValueError, "'mask'"),
    "entropy_float64": (dict(entropy=torch.ones(4, 3, dtype=torch.float64)), TypeError, "'entropy'"),
    "entropy_shape": (dict(entropy=torch.ones(4)), ValueError, "'entropy'"),
    "clip_negative": (dict(clip=-0.1), ValueError, "'clip'"),
    "clip_nan": (dict(clip=math.nan), ValueError, "'clip'"),
    "clip_str": (dict(clip="0.2"), TypeError, "'clip'"),
    "clip_bool": (dict(clip=True), TypeError, "'clip'"),
    "entropy_coef_none": (dict(entropy_coef=None), TypeError, "'entropy_coef'"),
    "entropy_coef_nan": (dict(entropy_coef=math.nan), ValueError, "'entropy_coef'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_argument(case):
    overrides, exc, name = BAD_INPUTS[case]
    with pytest.raises(exc, match=name):
        _call(**overrides)


@pytest.mark.parametrize("other", ["meta", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("name", ["logp_old", "advantages", "factor", "mask", "entropy"])
def test_different_devices(name, other):
    """A tensor on another device than 'logp_new' is an error naming it (meta runs everywhere)."""
    with pytest.raises(ValueError, match=f"'{name}'"):
        _call(**{name: _valid()[name].to(other)})


def test_infinite_clip_same_on_every_backend(require_native):
    """clip=inf passes the façade's range check; whatever it means (the unclipped objective, or
    an error naming 'clip'), it must mean the same on the native path as on the reference path,
    and never surface as the kernel's RuntimeError."""
    require_native(OP, "cpu")
    logp_new, logp_old, advantages = _away_from_kinks(8, seed=22)

    def outcome(logp_old):
        try:
            return clipped_surrogate(logp_new, logp_old, advantages, math.inf).loss.item()
        except ValueError as err:
            assert "'clip'" in str(err)
            return "ValueError"

    native = outcome(logp_old)  # raises RuntimeError today: the kernel rejects a non-finite clip
    via_reference = outcome(logp_old.clone().requires_grad_())
    if native == "ValueError" or via_reference == "ValueError":
        assert native == via_reference
    else:
        assert native == pytest.approx(via_reference, rel=1e-12)
    if native != "ValueError":
        unclipped = clipped_surrogate(logp_new, logp_old, advantages, None).loss.item()
        assert native == pytest.approx(unclipped, rel=1e-12)


DIRECT_BAD_INPUTS = {
    "int_logp_new": (dict(logp_new=torch.zeros(4, 3, dtype=torch.int64)), "'logp_new'"),
    "logp_old_shape": (dict(logp_old=torch.zeros(4, 1)), "'logp_old'"),
    "advantages_unexpanded": (dict(advantages=torch.zeros(4, 1)), "'advantages'"),
    "factor_float64": (dict(factor=torch.ones(4, 3, dtype=torch.float64)), "'factor'"),
    "mask_bool": (dict(mask=torch.ones(4, 3, dtype=torch.bool)), "'mask'"),
    "entropy_shape": (dict(entropy=torch.ones(12)), "'entropy'"),
    "clip_negative": (dict(clip=-0.5), "'clip'"),
}


@pytest.mark.parametrize("case", list(DIRECT_BAD_INPUTS))
def test_direct_fwd_bad_input_raises_runtime_error(case, require_native):
    require_native(OP, "cpu")
    overrides, name = DIRECT_BAD_INPUTS[case]
    kwargs = _valid() | dict(mask=_valid()["mask"].float()) | overrides
    with pytest.raises(RuntimeError, match=name):
        torch.ops.haml.clip_surrogate_fwd(
            kwargs["logp_new"], kwargs["logp_old"], kwargs["advantages"], kwargs["factor"],
            kwargs["mask"], kwargs["entropy"], kwargs["clip"], kwargs["entropy_coef"])


@pytest.mark.parametrize("case", ["grad_loss_two_elements", "weight_sum_float64", "int_ratio",
                                  "advantages_shape", "clip_negative"])
def test_direct_bwd_bad_input_raises_runtime_error(case, require_native):
    require_native("clip_surrogate_bwd", "cpu")
    ratio = torch.rand(4, 3) + 0.5
    args = dict(grad_loss=torch.tensor(1.0), ratio=ratio, advantages=torch.randn(4, 3),
                factor=None, mask=None, weight_sum=torch.tensor(12.0), clip=0.2,
                entropy_coef=0.0, entropy_grad=False)
    overrides, name = {
        "grad_loss_two_elements": (dict(grad_loss=torch.ones(2)), "'grad_loss'"),
        "weight_sum_float64": (dict(weight_sum=torch.tensor(12.0, dtype=torch.float64)), "'weight_sum'"),
        "int_ratio": (dict(ratio=torch.ones(4, 3, dtype=torch.int64)), "'ratio'"),
        "advantages_shape": (dict(advantages=torch.randn(4, 1)), "'advantages'"),
        "clip_negative": (dict(clip=-1.0), "'clip'"),
    }[case]
    with pytest.raises(RuntimeError, match=name):
        torch.ops.haml.clip_surrogate_bwd(*(args | overrides).values())


def test_direct_fwd_empty_is_zero(require_native):
    """Zero samples reach the kernel only when called directly: zeros, not 0/0."""
    require_native(OP, "cpu")
    empty = torch.zeros(0, 3)
    loss, clip_fraction, approx_kl, ratio_mean, weight_sum, ratio = torch.ops.haml.clip_surrogate_fwd(
        empty, empty, empty, None, None, None, 0.2, 0.0)
    assert [t.item() for t in (loss, clip_fraction, approx_kl, ratio_mean, weight_sum)] == [0.0] * 5
    assert ratio.shape == (0, 3)


# --------------------------------------------------------------------------------------------
# CPU vs CUDA


@pytest.mark.gpu
@pytest.mark.parametrize("clip", [0.2, None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1,), (64, 8), (4, 70001)], ids=str)
def test_cpu_cuda_parity(shape, dtype, clip):
    x = make_inputs(shape, dtype, "cpu", seed=23)
    args = (x.logp_new, x.logp_old, x.advantages, clip, x.factor, x.mask_float, x.entropy, 0.01)
    want, w_new, w_ent = run(clipped_surrogate, *args)
    cuda_args = tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in args)
    got, g_new, g_ent = run(clipped_surrogate, *cuda_args)
    assert haml.ops.has_native(OP, "cuda")
    assert got.loss.is_cuda and g_new.is_cuda
    assert_out_close(SurrogateOut(*(t.cpu() for t in got)), want, dtype)
    torch.testing.assert_close(g_new.cpu(), w_new, **GRAD_TOL[dtype])
    torch.testing.assert_close(g_ent.cpu(), w_ent, **GRAD_TOL[dtype])


# --------------------------------------------------------------------------------------------
# Higher derivatives and the raw op's non-differentiable inputs


@pytest.mark.parametrize("clip", [0.2, None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_double_backward_through_the_native_op_matches_the_reference(clip, dtype, require_native,
                                                                      record_ops):
    """create_graph=True through the native forward gives the reference's second derivatives
    (not a silent 0)."""
    require_native(OP, "cpu")
    x = make_inputs((6, 5), dtype, seed=41)
    results = []
    for fn in (clipped_surrogate, reference.clipped_surrogate):
        logp_new = x.logp_new.clone().requires_grad_()
        entropy = x.entropy.clone().requires_grad_()
        with record_ops() as rec:
            out = fn(logp_new, x.logp_old, x.advantages, clip, x.factor, x.mask_float, entropy, 0.01)
        if fn is clipped_surrogate:
            assert rec.called("haml.clip_surrogate_fwd")
        g_new, g_ent = torch.autograd.grad(out.loss, (logp_new, entropy), create_graph=True)
        probe = torch.linspace(-1.0, 1.0, g_new.numel(), dtype=dtype).view_as(g_new)
        (hvp,) = torch.autograd.grad((g_new * probe).sum(), logp_new)
        results.append((g_new.detach(), g_ent.detach(), hvp))
    (g, ge, h), (g_ref, ge_ref, h_ref) = results
    torch.testing.assert_close(g, g_ref, **GRAD_TOL[dtype])
    torch.testing.assert_close(ge, ge_ref, **GRAD_TOL[dtype])
    torch.testing.assert_close(h, h_ref, **GRAD_TOL[dtype])
    assert h_ref.abs().max() > 0  # the second derivative is not trivially 0 here


@pytest.mark.parametrize("name", ["logp_old", "advantages", "factor", "mask"])
def test_raw_fwd_refuses_constant_inputs_that_require_grad(name, require_native):
    """The raw op differentiates only logp_new and entropy: a constant that requires grad is an
    error naming it, not a gradient that is silently None."""
    require_native(OP, "cpu")
    x = make_inputs((4, 3), torch.float64, seed=42)
    args = dict(logp_new=x.logp_new.clone().requires_grad_(), logp_old=x.logp_old,
                advantages=x.advantages, factor=x.factor, mask=x.mask_float,
                entropy=None, clip=0.2, entropy_coef=0.0)
    args[name] = args[name].clone().requires_grad_()
    with pytest.raises(RuntimeError, match=f"'{name}'"):
        torch.ops.haml.clip_surrogate_fwd(*args.values())
    with torch.no_grad():  # no gradient asked for: nothing to refuse
        torch.ops.haml.clip_surrogate_fwd(*args.values())


@pytest.mark.parametrize("coef", [math.inf, -math.inf, math.nan])
def test_raw_fwd_refuses_a_non_finite_entropy_coef(coef, require_native):
    """The raw op checks entropy_coef itself, as the public op does."""
    require_native(OP, "cpu")
    x = make_inputs((4, 3), torch.float64, seed=43)
    with pytest.raises(RuntimeError, match="'entropy_coef' must be finite"):
        torch.ops.haml.clip_surrogate_fwd(x.logp_new, x.logp_old, x.advantages, x.factor,
                                          x.mask_float, None, 0.2, coef)
