"""Property tests: the native gae and clipped_surrogate equal their references on inputs that
hypothesis draws (shapes, float32/float64, done patterns, clip ranges, masks, odd memory layouts),
values and, for the surrogate, gradients. ``max_examples`` stays small so that CI stays fast; a
failure prints the drawn example, which reproduces alone."""

from __future__ import annotations

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from haml.ops import clipped_surrogate, gae  # noqa: E402
from haml.ops.clip_surrogate import reference as clip_reference  # noqa: E402
from haml.ops.gae import reference as gae_reference  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
DTYPES = st.sampled_from([torch.float32, torch.float64])
LAYOUTS = st.sampled_from(["contiguous", "transposed", "strided", "expanded"])
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t``'s values in another memory layout: a transposed copy, every other element of a
    larger tensor, or (stride 0) its first column repeated along the last dimension."""
    if layout == "transposed" and t.dim() >= 2:
        return t.transpose(0, -1).contiguous().transpose(0, -1)
    if layout == "strided":
        return torch.stack([t, torch.full_like(t, 7.0)], -1)[..., 0]
    if layout == "expanded" and t.dim() >= 2:
        return t[..., :1].expand_as(t)
    return t


def native(op: str) -> None:
    import haml.ops

    if not haml.ops.has_native(op, "cpu"):
        pytest.skip(f"{op} has no native CPU kernel in this build")


shapes = st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple)


@SETTINGS
@given(shape=shapes, dtype=DTYPES, layout=LAYOUTS, seed=st.integers(0, 2**31 - 1),
       gamma=st.floats(0.0, 1.0), lam=st.floats(0.0, 1.0),
       p_done=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_gae_native_equals_reference(shape, dtype, layout, seed, gamma, lam, p_done):
    native("gae")
    g = torch.Generator().manual_seed(seed)
    floats = [laid_out(torch.randn(shape, generator=g, dtype=dtype), layout) for _ in range(3)]
    flags = [laid_out(torch.rand(shape, generator=g) < p_done, layout) for _ in range(2)]
    got = gae(*floats, *flags, gamma, lam)
    want = gae_reference.gae(*floats, *flags, gamma, lam)
    direct = torch.ops.haml.gae(*floats, *flags, gamma, lam)
    for a, b, c in zip(got, want, direct):
        torch.testing.assert_close(a, b, **TOL[dtype])
        torch.testing.assert_close(c, b, **TOL[dtype])


def _away_from_kinks(ratio: torch.Tensor, clip: float | None) -> torch.Tensor:
    """Nudge ratios off 1 ± clip, where min/clamp are not differentiable and the two sides of a
    tie may pick different subgradients."""
    if clip is None:
        return ratio
    for edge in (1.0 - clip, 1.0 + clip):
        near = (ratio - edge).abs() < 1e-3
        ratio = torch.where(near, ratio + 3e-3, ratio)
    return ratio


@SETTINGS
@given(shape=shapes, dtype=DTYPES, layout=LAYOUTS, seed=st.integers(0, 2**31 - 1),
       clip=st.one_of(st.none(), st.floats(0.01, 0.5)),
       with_factor=st.booleans(), mask_kind=st.sampled_from([None, "bool", "float", "none_active"]),
       entropy_coef=st.sampled_from([0.0, 0.01, -0.3]))
def test_clipped_surrogate_native_equals_reference(shape, dtype, layout, seed, clip, with_factor,
                                                   mask_kind, entropy_coef):
    native("clip_surrogate_fwd")
    g = torch.Generator().manual_seed(seed)
    logp_old = -0.2 - torch.rand(shape, generator=g, dtype=torch.float64)
    ratio = _away_from_kinks(torch.exp(0.5 * torch.randn(shape, generator=g, dtype=torch.float64)), clip)
    logp_new = (logp_old + torch.log(ratio)).to(dtype)
    logp_old = logp_old.to(dtype)
    advantages = laid_out(torch.randn(shape, generator=g, dtype=dtype), layout)
    factor = torch.exp(0.3 * torch.randn(shape, generator=g, dtype=dtype)) if with_factor else None
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(shape, generator=g) < 0.6
    elif mask_kind == "float":
        mask = torch.rand(shape, generator=g, dtype=dtype) * (torch.rand(shape, generator=g) < 0.7)
    elif mask_kind == "none_active":
        mask = torch.zeros(shape, dtype=torch.bool)
    entropy = torch.rand(shape, generator=g, dtype=dtype)
    if mask is not None:
        mask = laid_out(mask, layout)

    results = []
    for fn in (clipped_surrogate, clip_reference.clipped_surrogate):
        new = laid_out(logp_new.clone(), layout).requires_grad_()
        ent = entropy.clone().requires_grad_()
        out = fn(new, laid_out(logp_old, layout), advantages, clip, factor, mask, ent, entropy_coef)
        grads = torch.autograd.grad(out.loss, (new, ent))
        results.append((*out, *grads))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, **TOL[dtype])
