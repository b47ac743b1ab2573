"""haml.ops.gae: the native kernel against the reference loop, hand-computed trajectories,
torch.compile / opcheck support, and bad input.

The reference (:func:`haml.ops.gae.reference.gae`) is the oracle. Each parity case compares it both
with the façade ``haml.ops.gae`` (checking that the façade did dispatch to the native op) and with
``torch.ops.haml.gae`` called directly, so that neither a routing mistake nor a kernel mistake can
hide behind the other.
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch
from torch.library import opcheck

import haml.ops
from haml.ops import gae
from haml.ops.gae import reference

# The float32 kernel multiplies in float32 while the reference mixes in Python doubles, and a long
# trajectory accumulates the difference: a few ulps per step.
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
}
GAMMA, LAM = 0.99, 0.95


def make_inputs(shape, dtype=torch.float64, device="cpu", seed=0, p_term=0.1, p_trunc=0.1):
    """Random (rewards, values, next_values, terminated, truncated) of ``shape`` = [T, *batch]."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(shape, generator=g, dtype=dtype)
    values = torch.randn(shape, generator=g, dtype=dtype)
    next_values = torch.randn(shape, generator=g, dtype=dtype)
    terminated = torch.rand(shape, generator=g) < p_term
    truncated = torch.rand(shape, generator=g) < p_trunc
    return tuple(t.to(device) for t in (rewards, values, next_values, terminated, truncated))


def assert_matches_reference(args, gamma, lam, record_ops, expect_native=True):
    """Façade and direct op both equal the reference on ``args`` (flags bool)."""
    rewards = args[0]
    tol = TOL[rewards.dtype]
    want_adv, want_ret = reference.gae(*args, gamma, lam)
    with record_ops() as rec:
        adv, ret = gae(*args, gamma, lam)
    assert rec.called("haml.gae") == expect_native, rec.ops
    for got, want in ((adv, want_adv), (ret, want_ret)):
        assert got.shape == rewards.shape and got.dtype == rewards.dtype
        assert got.device == rewards.device
        torch.testing.assert_close(got, want, **tol)
    if expect_native:
        d_adv, d_ret = torch.ops.haml.gae(*args, gamma, lam)
        torch.testing.assert_close(d_adv, want_adv, **tol)
        torch.testing.assert_close(d_ret, want_ret, **tol)


def implementation(name, device, require_native):
    """The function under test: the façade (on whichever backend serves it), the raw native op,
    or the reference."""
    if name == "direct":
        require_native("gae", device)
        return torch.ops.haml.gae
    return {"facade": gae, "reference": reference.gae}[name]


# --------------------------------------------------------------------------------------------
# Parity with the reference


SHAPES = [
    (1,),  # T=1, no batch dims
    (1, 1),  # T=1, B=1
    (1, 7),  # T=1, several columns
    (9,),  # [T]
    (12, 1),  # B=1
    (16, 5),  # [T, E]
    (9, 4, 3),  # [T, E, A]
    (6, 2, 3, 2),  # [T, E, A, 2]
    (33, 1000),  # enough columns for at::parallel_for to split the batch across threads
]


@pytest.mark.parametrize("flags", ["random", "none_done", "all_terminated", "all_truncated", "all_both"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(shape, dtype, flags, device, require_native, record_ops, each_cpu_isa):
    require_native("gae", device)
    seed = zlib.crc32(repr((shape, dtype, flags)).encode())  # stable across runs, unlike hash()
    p = {"random": (0.15, 0.15), "none_done": (0.0, 0.0), "all_terminated": (1.0, 0.0),
         "all_truncated": (0.0, 1.0), "all_both": (1.0, 1.0)}[flags]
    args = make_inputs(shape, dtype, device, seed, *p)
    assert_matches_reference(args, GAMMA, LAM, record_ops)


@pytest.mark.parametrize("gamma,lam", [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0), (0.5, 0.9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gamma_lam_extremes(gamma, lam, dtype, device, require_native, record_ops, each_cpu_isa):
    require_native("gae", device)
    args = make_inputs((20, 6), dtype, device, seed=3)
    assert_matches_reference(args, gamma, lam, record_ops)
    rewards, values, next_values, terminated, _ = args
    adv, _ = gae(*args, gamma, lam)
    tol = TOL[dtype]
    if gamma == 0.0:
        # Nothing is discounted into the past: A_t = r_t - V(s_t).
        torch.testing.assert_close(adv, rewards - values, **tol)
    elif lam == 0.0:
        # GAE(γ, 0) is the one-step TD error δ_t.
        delta = rewards + gamma * (~terminated).to(dtype) * next_values - values
        torch.testing.assert_close(adv, delta, **tol)


def test_no_done_is_discounted_sum_of_deltas():
    """Without dones, A_t = Σ_k (γλ)^k δ_{t+k}: the closed form, independent of the loop."""
    rewards, values, next_values, _, _ = make_inputs((15, 4), seed=11)
    never = torch.zeros(15, 4, dtype=torch.bool)
    gamma, lam = 0.9, 0.8
    delta = rewards + gamma * next_values - values
    t = torch.arange(15, dtype=torch.float64)
    # weights[t, s] = (γλ)^(s - t) for s >= t
    weights = torch.where(t[None, :] >= t[:, None], (gamma * lam) ** (t[None, :] - t[:, None]), 0.0)
    want = weights @ delta
    adv, ret = gae(rewards, values, next_values, never, never, gamma, lam)
    torch.testing.assert_close(adv, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ret, want + values, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Termination vs truncation, by hand

# One trajectory of T=3, γ = λ = 0.5 (γλ = 0.25); every number is exact in binary floating point.
#   r = [1, 2, 3], V(s_t) = [0.5, 1, 1.5], V(s_{t+1}) = [1, 1.5, 4]
# Bootstrapped TD errors δ_t = r_t + γ V(s_{t+1}) - V(s_t):
#   δ_0 = 1 + 0.5 - 0.5 = 1,  δ_1 = 2 + 0.75 - 1 = 1.75,  δ_2 = 3 + 2 - 1.5 = 3.5
# A terminated step drops the bootstrap: δ_1' = 2 - 1 = 1,  δ_2' = 3 - 1.5 = 1.5.
HAND_R = [1.0, 2.0, 3.0]
HAND_V = [0.5, 1.0, 1.5]
HAND_NV = [1.0, 1.5, 4.0]
HAND_CASES = {
    # no flag: A_2 = 3.5, A_1 = 1.75 + 0.25 * 3.5 = 2.625, A_0 = 1 + 0.25 * 2.625 = 1.65625
    "none": ([0, 0, 0], [0, 0, 0], [1.65625, 2.625, 3.5]),
    # truncated at the end: still bootstraps from V(s_3) = 4, and A_3 = 0 anyway: same as "none"
    "truncated_last": ([0, 0, 0], [0, 0, 1], [1.65625, 2.625, 3.5]),
    # terminated at the end: A_2 = δ_2' = 1.5, A_1 = 1.75 + 0.25 * 1.5 = 2.125,
    # A_0 = 1 + 0.25 * 2.125 = 1.53125
    "terminated_last": ([0, 0, 1], [0, 0, 0], [1.53125, 2.125, 1.5]),
    # terminated at t=1: A_1 = δ_1' = 1 (no bootstrap, no carry), A_0 = 1 + 0.25 * 1 = 1.25
    "terminated_mid": ([0, 1, 0], [0, 0, 0], [1.25, 1.0, 3.5]),
    # truncated at t=1: A_1 = δ_1 = 1.75 (bootstraps, no carry), A_0 = 1 + 0.25 * 1.75 = 1.4375
    "truncated_mid": ([0, 0, 0], [0, 1, 0], [1.4375, 1.75, 3.5]),
    # both at t=1: termination wins the bootstrap, the carry is cut: as "terminated_mid"
    "both_mid": ([0, 1, 0], [0, 1, 0], [1.25, 1.0, 3.5]),
}


@pytest.mark.parametrize("impl", ["facade", "direct", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(HAND_CASES))
def test_hand_computed(case, dtype, impl, device, require_native):
    term, trunc, want_adv = HAND_CASES[case]
    tensor = lambda x: torch.tensor(x, dtype=dtype, device=device)  # noqa: E731
    args = (tensor(HAND_R), tensor(HAND_V), tensor(HAND_NV),
            torch.tensor(term, dtype=torch.bool, device=device),
            torch.tensor(trunc, dtype=torch.bool, device=device))
    fn = implementation(impl, device, require_native)
    adv, ret = fn(*args, 0.5, 0.5)
    assert adv.tolist() == want_adv
    assert ret.tolist() == [a + v for a, v in zip(want_adv, HAND_V)]


def test_truncation_bootstraps_termination_does_not():
    """The same last step, terminated vs truncated, differs by exactly γ V(s_T) at that step."""
    rewards, values, next_values, _, _ = make_inputs((8, 3), seed=5)
    none = torch.zeros(8, 3, dtype=torch.bool)
    last = none.clone()
    last[-1] = True
    gamma, lam = 0.97, 0.9
    adv_term, _ = gae(rewards, values, next_values, last, none, gamma, lam)
    adv_trunc, _ = gae(rewards, values, next_values, none, last, gamma, lam)
    torch.testing.assert_close(adv_trunc[-1] - adv_term[-1], gamma * next_values[-1])
    # ... and that difference reaches earlier steps discounted by (γλ)^k.
    k = torch.arange(7, -1, -1, dtype=torch.float64)[:, None]
    torch.testing.assert_close(adv_trunc - adv_term, (gamma * lam) ** k * gamma * next_values[-1])


# --------------------------------------------------------------------------------------------
# Layout, dtype and flag variants


@pytest.mark.parametrize("T", [1, 4])
@pytest.mark.parametrize("batch", [(0,), (3, 0), (0, 2)], ids=str)
@pytest.mark.parametrize("impl", ["facade", "direct", "reference"])
def test_empty_batch(T, batch, impl, device, require_native):
    """B = 0 with T >= 1 is valid and gives empty outputs of the same shape."""
    args = make_inputs((T, *batch), torch.float32, device)
    fn = implementation(impl, device, require_native)
    adv, ret = fn(*args, GAMMA, LAM)
    for out in (adv, ret):
        assert out.shape == (T, *batch)
        assert out.dtype == torch.float32
        assert out.device.type == torch.device(device).type


def _transposed(shape, make):
    """A [T, B] view of a [B, T] tensor: strides (1, T)."""
    T, B = shape
    return make((B, T)).t()


@pytest.mark.parametrize("layout", ["transposed", "time_strided", "batch_sliced", "expanded_values", "mixed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_contiguous(layout, dtype, device, require_native, record_ops):
    require_native("gae", device)
    T, B = 10, 7
    g = torch.Generator().manual_seed(17)

    def make(shape, flag=False):
        x = torch.rand(shape, generator=g) < 0.2 if flag else torch.randn(shape, generator=g, dtype=dtype)
        return x.to(device)

    if layout == "transposed":
        args = [_transposed((T, B), lambda s, f=f: make(s, f)) for f in (False, False, False, True, True)]
    elif layout == "time_strided":
        args = [make((2 * T, B), f)[::2] for f in (False, False, False, True, True)]
    elif layout == "batch_sliced":
        args = [make((T, 3 * B), f)[:, 1::3] for f in (False, False, False, True, True)]
    elif layout == "expanded_values":
        # Zero strides: one value per step broadcast over the batch.
        args = [make((T, B)), make((T, 1)).expand(T, B), make((1, B)).expand(T, B),
                make((T, B), True), make((T, 1), True).expand(T, B)]
    else:
        args = [make((T, B)), _transposed((T, B), make), make((T, 2 * B))[:, ::2],
                make((T, B), True), _transposed((T, B), lambda s: make(s, True))]
    assert not all(a.is_contiguous() for a in args)
    assert_matches_reference(tuple(args), GAMMA, LAM, record_ops)


@pytest.mark.parametrize("flag_dtype", [torch.float32, torch.float64, torch.float16])
def test_float_flags_read_as_nonzero(flag_dtype, device):
    """Floating flags mean nonzero = True, the same answer as the bool flags (any backend)."""
    rewards, values, next_values, terminated, truncated = make_inputs((12, 5), device=device, seed=8)
    # Nonzero values other than 1 must also count as True.
    f_term = terminated.to(flag_dtype) * 2.5
    f_trunc = truncated.to(flag_dtype) * -1.0
    want = gae(rewards, values, next_values, terminated, truncated, GAMMA, LAM)
    got = gae(rewards, values, next_values, f_term, f_trunc, GAMMA, LAM)
    assert terminated.any() and truncated.any()
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_runs_reference(dtype, record_ops):
    """Dtypes without a native kernel take the reference and stay close to the float64 answer."""
    args64 = make_inputs((10, 4), seed=21)
    args = tuple(a.to(dtype) if a.is_floating_point() else a for a in args64)
    with record_ops() as rec:
        adv, ret = gae(*args, GAMMA, LAM)
    assert not rec.called("haml.gae")
    assert adv.dtype == dtype and ret.dtype == dtype
    want_adv, _ = reference.gae(*(a.to(dtype).double() if a.is_floating_point() else a for a in args64),
                                GAMMA, LAM)
    torch.testing.assert_close(adv.double(), want_adv, rtol=5e-2, atol=5e-2)


def test_requires_grad_runs_reference_with_correct_gradient(record_ops):
    """Inputs that require grad go to the differentiable reference; its gradient is right."""
    rewards, values, next_values, terminated, truncated = make_inputs((6, 3), seed=4)
    values.requires_grad_()
    with record_ops() as rec:
        adv, ret = gae(rewards, values, next_values, terminated, truncated, GAMMA, LAM)
    assert not rec.called("haml.gae")
    assert adv.requires_grad and ret.requires_grad

    def fn(r, v, nv):
        return gae(r, v, nv, terminated, truncated, GAMMA, LAM)

    inputs = tuple(t.detach().requires_grad_() for t in (rewards, values, next_values))
    assert torch.autograd.gradcheck(fn, inputs)


# --------------------------------------------------------------------------------------------
# NaN


# One column with a NaN reward at t=4 and a termination at t=2, one clean column. The NaN belongs
# to the episode that covers steps 3..5: it reaches A_4 and, through the carry, A_3 (when γλ > 0),
# never A_5 (later) nor A_0..A_2 (an earlier episode, cut off by the termination), nor column 1.
@pytest.mark.parametrize("lam", [0.95, 0.0])
@pytest.mark.parametrize("boundary", ["terminated", "truncated"])
@pytest.mark.parametrize("impl", ["facade", "reference"])
def test_nan_reward_stays_in_its_episode(impl, boundary, lam, device, require_native):
    T = 6
    rewards = torch.ones(T, 2, dtype=torch.float64, device=device)
    rewards[4, 0] = math.nan
    values = torch.full_like(rewards, 0.5)
    next_values = torch.full_like(rewards, 0.25)
    terminated = torch.zeros(T, 2, dtype=torch.bool, device=device)
    truncated = torch.zeros_like(terminated)
    (terminated if boundary == "terminated" else truncated)[2, 0] = True
    fn = implementation(impl, device, require_native)
    adv, ret = fn(rewards, values, next_values, terminated, truncated, 0.9, lam)
    want_nan = torch.zeros(T, 2, dtype=torch.bool)
    want_nan[4, 0] = True
    if lam > 0:
        want_nan[3, 0] = True
    # Compared as nested lists so that a failure prints which steps are NaN.
    assert adv.isnan().cpu().tolist() == want_nan.tolist()
    assert ret.isnan().cpu().tolist() == want_nan.tolist()


@pytest.mark.parametrize("impl", ["facade", "reference"])
def test_nan_next_value_at_termination_is_ignored(impl, device, require_native):
    """A terminated step does not bootstrap, so V(s_{t+1}) there is never read (it may be garbage,
    e.g. the value of a terminal observation that was never computed)."""
    rewards, values, next_values, _, _ = make_inputs((5, 3), device=device, seed=9)
    terminated = torch.zeros(5, 3, dtype=torch.bool, device=device)
    terminated[2, 1] = True
    never = torch.zeros_like(terminated)
    fn = implementation(impl, device, require_native)
    want, _ = fn(rewards, values, next_values, terminated, never, GAMMA, LAM)
    poisoned = next_values.clone()
    poisoned[2, 1] = math.nan
    got, _ = fn(rewards, values, poisoned, terminated, never, GAMMA, LAM)
    assert got.isnan().cpu().tolist() == torch.zeros(5, 3, dtype=torch.bool).tolist()
    torch.testing.assert_close(got, want, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# opcheck and torch.compile


OPCHECK_CASES = {
    "T1": ((1, 4), torch.float32),
    "TE": ((7, 5), torch.float32),
    "TEA": ((5, 3, 2), torch.float64),
    "vector": ((6,), torch.float64),
    "empty_batch": ((3, 0), torch.float32),
}


@pytest.mark.parametrize("case", list(OPCHECK_CASES))
def test_opcheck(case, device, require_native):
    require_native("gae", device)
    shape, dtype = OPCHECK_CASES[case]
    args = make_inputs(shape, dtype, device, seed=2, p_term=0.3, p_trunc=0.3)
    opcheck(torch.ops.haml.gae.default, (*args, GAMMA, LAM))


def test_opcheck_non_contiguous(device, require_native):
    """The fake kernel must describe the real outputs, strides included, for strided inputs too:
    inductor asserts them at run time."""
    require_native("gae", device)
    args = [_transposed((6, 4), lambda s, f=f: make_inputs(s, torch.float32, device, seed=1)[f])
            for f in (0, 1, 2, 3, 4)]
    opcheck(torch.ops.haml.gae.default, (*args, GAMMA, LAM))


class GraphRecorder:
    """A torch.compile backend that keeps each Dynamo graph's text and runs it eagerly."""

    def __init__(self):
        self.graphs: list[str] = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(str(gm.graph))
        return gm.forward


def _normalised_advantages(rewards, values, next_values, terminated, truncated):
    adv, ret = gae(rewards, values, next_values, terminated, truncated, GAMMA, LAM)
    return (adv - adv.mean()) / (adv.std() + 1e-8), ret


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compile_fullgraph_traces_native_op(dtype, device, require_native, fresh_dynamo):
    require_native("gae", device)
    recorder = GraphRecorder()
    compiled = torch.compile(_normalised_advantages, fullgraph=True, backend=recorder)
    args = make_inputs((16, 4, 2), dtype, device, seed=13)
    got = compiled(*args)
    want = _normalised_advantages(*args)
    torch.testing.assert_close(got, want, **TOL[dtype])
    assert len(recorder.graphs) == 1
    assert "haml.gae" in recorder.graphs[0]


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_compile_backends(backend, layout, device, require_native, fresh_dynamo):
    """End to end through AOTAutograd (and inductor, whose generated code asserts the output
    strides that the fake kernel promised)."""
    require_native("gae", device)
    if layout == "contiguous":
        args = make_inputs((12, 5), torch.float32, device, seed=14)
    else:
        args = [_transposed((12, 5), lambda s, f=f: make_inputs(s, torch.float32, device, seed=14)[f])
                for f in range(5)]
    compiled = torch.compile(_normalised_advantages, fullgraph=True, backend=backend)
    got = compiled(*args)
    torch.testing.assert_close(got, _normalised_advantages(*args), **TOL[torch.float32])


# --------------------------------------------------------------------------------------------
# Bad input


def _valid(dtype=torch.float32):
    return dict(zip(("rewards", "values", "next_values", "terminated", "truncated"),
                    make_inputs((4, 3), dtype, seed=0)), gamma=GAMMA, lam=LAM)


def _call(**overrides):
    kwargs = _valid() | overrides
    return gae(kwargs.pop("rewards"), kwargs.pop("values"), kwargs.pop("next_values"),
               kwargs.pop("terminated"), kwargs.pop("truncated"), kwargs.pop("gamma"),
               kwargs.pop("lam"))


BAD_INPUTS = {
    "int_rewards": (dict(rewards=torch.ones(4, 3, dtype=torch.int64)), TypeError, "'rewards'"),
    "bool_rewards": (dict(rewards=torch.ones(4, 3, dtype=torch.bool)), TypeError, "'rewards'"),
    "float64_values": (dict(values=torch.zeros(4, 3, dtype=torch.float64)), TypeError, "'values'"),
    "float64_next_values": (dict(next_values=torch.zeros(4, 3, dtype=torch.float64)), TypeError,
                            "'next_values'"),
    "values_shape": (dict(values=torch.zeros(4, 2)), ValueError, "'values'"),
    "next_values_shape": (dict(next_values=torch.zeros(3, 3)), ValueError, "'next_values'"),
    "next_values_broadcastable": (dict(next_values=torch.zeros(4, 1)), ValueError, "'next_values'"),
    "terminated_shape": (dict(terminated=torch.zeros(4, 3, 1, dtype=torch.bool)), ValueError,
                         "'terminated'"),
    "truncated_shape": (dict(truncated=torch.zeros(3, dtype=torch.bool)), ValueError, "'truncated'"),
    "T0": (dict(rewards=torch.zeros(0, 3), values=torch.zeros(0, 3), next_values=torch.zeros(0, 3),
                terminated=torch.zeros(0, 3, dtype=torch.bool),
                truncated=torch.zeros(0, 3, dtype=torch.bool)), ValueError, "'rewards'"),
    "0d": (dict(rewards=torch.tensor(1.0), values=torch.tensor(1.0), next_values=torch.tensor(1.0),
                terminated=torch.tensor(False), truncated=torch.tensor(False)), ValueError,
           "'rewards'"),
    "list_rewards": (dict(rewards=[[1.0] * 3] * 4), TypeError, "'rewards'"),
    "float_values": (dict(values=0.5), TypeError, "'values'"),
    "numpy_next_values": (dict(next_values=torch.zeros(4, 3).numpy()), TypeError, "'next_values'"),
    "list_terminated": (dict(terminated=[[False] * 3] * 4), TypeError, "'terminated'"),
    "int_terminated": (dict(terminated=torch.zeros(4, 3, dtype=torch.int64)), TypeError,
                       "'terminated'"),
    "uint8_truncated": (dict(truncated=torch.zeros(4, 3, dtype=torch.uint8)), TypeError,
                        "'truncated'"),
    "gamma_above_1": (dict(gamma=1.5), ValueError, "'gamma'"),
    "gamma_negative": (dict(gamma=-0.1), ValueError, "'gamma'"),
    "gamma_nan": (dict(gamma=math.nan), ValueError, "'gamma'"),
    "lam_above_1": (dict(lam=1.0001), ValueError, "'lam'"),
    "lam_negative": (dict(lam=-1), ValueError, "'lam'"),
    "gamma_str": (dict(gamma="0.99"), TypeError, "'gamma'"),
    "gamma_none": (dict(gamma=None), TypeError, "'gamma'"),
    "lam_bool": (dict(lam=True), TypeError, "'lam'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_argument(case):
    overrides, exc, name = BAD_INPUTS[case]
    with pytest.raises(exc, match=name):
        _call(**overrides)


@pytest.mark.parametrize("other", ["meta", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("name", ["values", "next_values", "terminated", "truncated"])
def test_different_devices(name, other):
    """A tensor on another device than 'rewards' is an error naming it (meta runs everywhere)."""
    moved = _valid()[name].to(other)
    with pytest.raises(ValueError, match=f"'{name}'"):
        _call(**{name: moved})


DIRECT_BAD_INPUTS = {
    "int_rewards": (dict(rewards=torch.ones(4, 3, dtype=torch.int64)), "'rewards'"),
    "float64_values": (dict(values=torch.zeros(4, 3, dtype=torch.float64)), "'values'"),
    "float_terminated": (dict(terminated=torch.zeros(4, 3)), "'terminated'"),
    "float_truncated": (dict(truncated=torch.zeros(4, 3)), "'truncated'"),
    "values_shape": (dict(values=torch.zeros(4, 2)), "'values'"),
    "next_values_shape": (dict(next_values=torch.zeros(3, 3)), "'next_values'"),
    "truncated_shape": (dict(truncated=torch.zeros(4, dtype=torch.bool)), "'truncated'"),
    "0d": (dict(rewards=torch.tensor(1.0), values=torch.tensor(1.0), next_values=torch.tensor(1.0),
                terminated=torch.tensor(False), truncated=torch.tensor(False)), "'rewards'"),
}


@pytest.mark.parametrize("case", list(DIRECT_BAD_INPUTS))
def test_direct_op_bad_input_raises_runtime_error(case, require_native):
    """The op's own checks (for callers that bypass the façade) raise, never crash."""
    require_native("gae", "cpu")
    overrides, name = DIRECT_BAD_INPUTS[case]
    kwargs = _valid() | overrides
    with pytest.raises(RuntimeError, match=name):
        torch.ops.haml.gae(*kwargs.values())


def test_direct_op_T0_is_empty(require_native):
    """T = 0 reaches the kernel only when called directly: an empty result, not a division by 0."""
    require_native("gae", "cpu")
    args = make_inputs((0, 3), torch.float32)
    adv, ret = torch.ops.haml.gae(*args, GAMMA, LAM)
    assert adv.shape == ret.shape == (0, 3)


# --------------------------------------------------------------------------------------------
# CPU vs CUDA


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1), (64, 16), (200, 8, 3), (5, 4097)], ids=str)
def test_cpu_cuda_parity(shape, dtype):
    args = make_inputs(shape, dtype, "cpu", seed=31)
    want = gae(*args, GAMMA, LAM)
    got = gae(*(a.cuda() for a in args), GAMMA, LAM)
    assert haml.ops.backend("cuda") == "native"
    for g, w in zip(got, want):
        assert g.is_cuda
        torch.testing.assert_close(g.cpu(), w, **TOL[dtype])


# --------------------------------------------------------------------------------------------
# The raw op validates its scalars and refuses to be differentiated


@pytest.mark.parametrize("gamma,lam,name", [
    (5.0, 0.95, "'gamma'"), (-0.1, 0.95, "'gamma'"), (math.nan, 0.95, "'gamma'"),
    (0.99, -1.0, "'lam'"), (0.99, 1.5, "'lam'"), (0.99, math.nan, "'lam'"),
])
def test_direct_op_rejects_out_of_range_discounts(gamma, lam, name, require_native):
    """The raw op agrees with the façade: γ and λ must lie in [0, 1]."""
    require_native("gae", "cpu")
    args = make_inputs((4, 3), torch.float32)
    with pytest.raises(RuntimeError, match=name):
        torch.ops.haml.gae(*args, gamma, lam)
    with pytest.raises(ValueError, match=name):
        gae(*args, gamma, lam)


@pytest.mark.parametrize("name", ["rewards", "values", "next_values"])
def test_direct_op_refuses_inputs_that_require_grad(name, require_native):
    """The native op has no gradient: asking for one is an error naming the input, not a
    gradient that is silently None (the façade runs the differentiable reference instead)."""
    require_native("gae", "cpu")
    args = list(make_inputs((4, 3), torch.float64))
    index = ["rewards", "values", "next_values"].index(name)
    args[index] = args[index].clone().requires_grad_()
    with pytest.raises(RuntimeError, match=f"'{name}'"):
        torch.ops.haml.gae(*args, GAMMA, LAM)
    with torch.no_grad():
        torch.ops.haml.gae(*args, GAMMA, LAM)
    adv, _ = gae(*args, GAMMA, LAM)
    assert adv.requires_grad
