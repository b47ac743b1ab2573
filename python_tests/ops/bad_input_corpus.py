"""The bad-input corpus of haml's ops, run by ``test_bad_input_corpus.py`` in subprocesses.

Every public op and raw op (``torch.ops.haml.*``, the native ``FisherOperator`` class) gets the
same systematic mutations of one valid call, argument by argument:

- wrong shape, wrong dtype (an integer one, and the other float width), wrong device (``meta``),
  not a tensor, and, for a scalar, out-of-range or non-finite values and wrong types: the call
  must raise an exception naming the argument (``TypeError``/``ValueError`` from a public op,
  ``RuntimeError`` also from a raw op, whose C++ checks raise ``c10::Error``);
- NaN and inf in one entry, a non-contiguous view and a stride-0 (expanded) tensor: the call
  must succeed; non-contiguous and stride-0 inputs must give what their contiguous copies give,
  and a NaN/inf input what the op's reference gives (NaN where it gives NaN);
- no sample at all (empty): an error naming the argument, or an empty result where documented.

Run as ``python bad_input_corpus.py GROUP [CASE ...]``: one JSON line per case on stdout,
``{"case", "ok", "detail"}``, each printed as soon as the case ends, so that a crash loses only
the case it happened in.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

OK = None  # the expected outcome "succeeds" (and, where the case says so, matches)
ANY = "any result"  # succeeds; the value is unspecified (a garbage-in weight, for example)
# A second real device for the device cases: the raw ops run on it (meta tensors would dispatch
# them to their fake kernels, which is torch's rule, not an error); the façades reject meta too.
OTHER_DEVICE = "cuda" if torch.cuda.is_available() else None
DTYPE = torch.float64


@dataclass
class OpSpec:
    """One op's valid call and how to mutate it."""

    call: Callable[[dict], Any]
    valid: Callable[[], dict]
    floats: tuple[str, ...] = ()  # floating tensors of the valid call's dtype
    flags: tuple[str, ...] = ()  # bool tensors (bool or floating accepted by the public op)
    others: tuple[str, ...] = ()  # other tensors (indices, flat vectors): shape/device/type only
    anchor: str = ""  # the tensor the others are checked against (its errors may name them)
    scalars: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)
    reference: Callable[[dict], Any] | None = None  # for NaN/inf parity
    raw: bool = False
    empty: Callable[[dict], dict] | None = None  # the valid call with no sample
    expect: dict[str, Any] = field(default_factory=dict)  # per-case overrides


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out.detach()]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, (bool, int, float)):
        return [torch.tensor(float(out), dtype=torch.float64)]
    return []


def _assert_same(got: Any, want: Any) -> None:
    got, want = _tensors(got), _tensors(want)
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12, equal_nan=True, check_stride=False)


def _non_contiguous(t: torch.Tensor) -> torch.Tensor:
    view = torch.stack([t, t], -1)[..., 0]
    assert not view.is_contiguous() or t.numel() <= 1
    return view


def _stride0(t: torch.Tensor) -> torch.Tensor:
    return t[:1].expand_as(t)


# -- the ops --------------------------------------------------------------------------------------


def _gae_valid(flags_as_bool: bool = True) -> dict:
    g = torch.Generator().manual_seed(0)
    shape = (5, 3)
    return dict(
        rewards=torch.randn(shape, generator=g, dtype=DTYPE),
        values=torch.randn(shape, generator=g, dtype=DTYPE),
        next_values=torch.randn(shape, generator=g, dtype=DTYPE),
        terminated=torch.rand(shape, generator=g) < 0.2,
        truncated=torch.rand(shape, generator=g) < 0.2,
        gamma=0.99,
        lam=0.95,
    )


def _gae_call(a: dict) -> Any:
    from haml.ops import gae

    return gae(*a.values())


def _gae_raw(a: dict) -> Any:
    return torch.ops.haml.gae(*a.values())


def _gae_reference(a: dict) -> Any:
    from haml.ops.gae import reference

    return reference.gae(*a.values())


def _all_empty(a: dict) -> dict:
    return {k: v[:0] if isinstance(v, torch.Tensor) else v for k, v in a.items()}


_DISCOUNT = [("nan", math.nan), ("inf", math.inf), ("negative", -0.5), ("above_1", 1.5),
             ("str", "0.9"), ("none", None)]


def _clip_valid(float_mask: bool = False) -> dict:
    g = torch.Generator().manual_seed(1)
    shape = (4, 3)
    logp_old = -0.5 - torch.rand(shape, generator=g, dtype=DTYPE)
    mask = torch.rand(shape, generator=g) < 0.7
    return dict(
        logp_new=logp_old + 0.3 * torch.randn(shape, generator=g, dtype=DTYPE),
        logp_old=logp_old,
        advantages=torch.randn(shape, generator=g, dtype=DTYPE),
        factor=torch.exp(0.2 * torch.randn(shape, generator=g, dtype=DTYPE)),
        mask=mask.to(DTYPE) if float_mask else mask,
        entropy=torch.rand(shape, generator=g, dtype=DTYPE),
        clip=0.2,
        entropy_coef=0.01,
    )


def _clip_call(a: dict) -> Any:
    from haml.ops import clipped_surrogate

    return clipped_surrogate(**a)


def _clip_reference(a: dict) -> Any:
    from haml.ops.clip_surrogate import reference

    return reference.clipped_surrogate(**a)


def _clip_raw(a: dict) -> Any:
    return torch.ops.haml.clip_surrogate_fwd(
        a["logp_new"], a["logp_old"], a["advantages"], a["factor"], a["mask"], a["entropy"],
        a["clip"], a["entropy_coef"])


def _clip_bwd_valid() -> dict:
    g = torch.Generator().manual_seed(2)
    shape = (4, 3)
    return dict(
        grad_loss=torch.tensor(1.0, dtype=DTYPE),
        ratio=0.5 + torch.rand(shape, generator=g, dtype=DTYPE),
        advantages=torch.randn(shape, generator=g, dtype=DTYPE),
        factor=torch.exp(0.2 * torch.randn(shape, generator=g, dtype=DTYPE)),
        mask=(torch.rand(shape, generator=g) < 0.7).to(DTYPE),
        weight_sum=torch.tensor(8.0, dtype=DTYPE),
        clip=0.2,
        entropy_coef=0.01,
        entropy_grad=True,
    )


def _clip_bwd_raw(a: dict) -> Any:
    return torch.ops.haml.clip_surrogate_bwd(*a.values())


def _policy(head: str) -> torch.nn.Module:
    from gymnasium import spaces

    from haml.models import MLPPolicy

    torch.manual_seed(3)
    space = spaces.Box(-1, 1, (2,)) if head == "gaussian" else spaces.Discrete(4)
    return MLPPolicy(3, space, hidden=(8,), dtype=DTYPE)


def _fisher_valid() -> dict:
    g = torch.Generator().manual_seed(4)
    policy = _policy("categorical")
    n = 6
    action_mask = torch.rand(n, 4, generator=g) < 0.7
    action_mask[:, 0] = True
    num = sum(p.numel() for p in policy.parameters())
    return dict(
        policy=policy,
        obs=torch.randn(n, 3, generator=g, dtype=DTYPE),
        mask=torch.rand(n, generator=g) < 0.7,
        damping=0.1,
        action_mask=action_mask,
        vector=torch.randn(num, generator=g, dtype=DTYPE),
    )


def _fisher_call(a: dict) -> Any:
    from haml.ops import FisherOperator

    op = FisherOperator(a["policy"], a["obs"], a["mask"], a["damping"], a["action_mask"])
    return op(a["vector"])


def _fisher_reference(a: dict) -> Any:
    from haml.ops.fvp import reference

    op = reference.FisherOperator(a["policy"], a["obs"], a["mask"], a["damping"], a["action_mask"])
    return op(a["vector"])


def _fisher_raw(a: dict) -> Any:
    policy = a["policy"]
    spec = policy.spec()
    params = [p for p in policy.parameters() if p.requires_grad]
    op = torch.classes.haml.FisherOperator(
        a["obs"], params, a["mask"], a["action_mask"], spec.head, spec.activation,
        spec.input_norm, spec.layer_norm, spec.layer_norm_eps, a["damping"])
    return op.apply(a["vector"])


def _per_sample_empty(a: dict) -> dict:
    out = dict(a)
    for k in ("obs", "mask", "action_mask", "actions", "logp_old", "advantages", "factor"):
        if isinstance(out.get(k), torch.Tensor):
            out[k] = out[k][:0]
    return out


def _cg_valid() -> dict:
    from haml.ops import FisherOperator

    a = _fisher_valid()
    return dict(matvec=FisherOperator(a["policy"], a["obs"], a["mask"], 0.1, a["action_mask"]),
                b=a["vector"], iters=5, residual_tol=1e-10)


def _cg_call(a: dict) -> Any:
    from haml.ops import conjugate_gradient

    return conjugate_gradient(**a)


def _trust_valid(head: str = "gaussian") -> dict:
    g = torch.Generator().manual_seed(5)
    policy = _policy(head)
    n = 16
    obs = torch.randn(n, 3, generator=g, dtype=DTYPE)
    with torch.no_grad():
        actions, logp_old = policy.sample(obs)
    return dict(
        policy=policy, obs=obs, actions=actions, logp_old=logp_old,
        advantages=torch.randn(n, generator=g, dtype=DTYPE),
        factor=torch.exp(0.2 * torch.randn(n, generator=g, dtype=DTYPE)),
        mask=torch.rand(n, generator=g) < 0.8,
        max_kl=0.01, cg_iters=5, damping=0.1, backtrack_coef=0.8, max_backtracks=5,
        accept_ratio=0.5, residual_tol=1e-10,
    )


def _trust_call(a: dict) -> Any:
    from haml.ops import trust_region_step

    a = dict(a, policy=copy.deepcopy(a["policy"]))
    info = trust_region_step(**a)
    theta = torch.cat([p.detach().flatten() for p in a["policy"].parameters()])
    assert torch.isfinite(theta).all(), "the step left non-finite parameters"
    return info.accepted, info.step_fraction, info.kl, info.improvement, theta


def _line_search_valid() -> dict:
    theta = torch.nn.Parameter(torch.randn(5, dtype=DTYPE))
    return dict(
        params=[theta], full_step=0.1 * torch.ones(5, dtype=DTYPE),
        expected_improvement=torch.tensor(1.0, dtype=DTYPE),
        evaluate=lambda: (theta.detach().sum() * 0 + 1.0, theta.detach().sum() * 0),
        surrogate_before=torch.tensor(0.0, dtype=DTYPE), max_kl=0.01,
        backtrack_coef=0.8, max_backtracks=5, accept_ratio=0.5,
    )


def _line_search_call(a: dict) -> Any:
    from haml.ops import backtracking_line_search

    a = dict(a, params=[p.detach().clone().requires_grad_() for p in a["params"]])
    info = backtracking_line_search(**a)
    return info.accepted, info.step_fraction, info.kl, info.improvement


def _layer_norm_valid() -> dict:
    g = torch.Generator().manual_seed(0)
    return dict(input=torch.randn(11, 9, generator=g, dtype=DTYPE),
                weight=torch.randn(9, generator=g, dtype=DTYPE),
                bias=torch.randn(9, generator=g, dtype=DTYPE), eps=1e-5)


def _layer_norm_call(a: dict) -> Any:
    from haml.ops import layer_norm

    return layer_norm(**a)


def _layer_norm_raw(a: dict) -> Any:
    return torch.ops.haml.layer_norm_fwd(a["input"], a["weight"], a["bias"], a["eps"])[0]


def _layer_norm_reference(a: dict) -> Any:
    from haml.ops.layer_norm import reference

    return reference.layer_norm(**a)


def _no_row(a: dict) -> dict:
    return dict(a, input=a["input"][:0])


# More rows, or a batch dimension, are valid LayerNorm inputs.
_LAYER_NORM_EXPECT = {"input:shape": OK, "input:extra_dim": OK, "empty": OK}
_EPS = [("nan", math.nan), ("inf", math.inf), ("negative", -1.0)]


_POSITIVE = [("nan", math.nan), ("inf", math.inf), ("negative", -1.0), ("str", "1"), ("none", None)]
_COUNT = [("negative", -1), ("float", 2.5), ("bool", True), ("none", None)]

OPS: dict[str, tuple[str, OpSpec]] = {
    # name: (group, spec); one subprocess runs one group
    "gae": ("gae", OpSpec(
        _gae_call, _gae_valid, floats=("rewards", "values", "next_values"),
        flags=("terminated", "truncated"), anchor="rewards",
        scalars={"gamma": _DISCOUNT, "lam": _DISCOUNT}, reference=_gae_reference,
        empty=_all_empty)),
    "torch.ops.haml.gae": ("gae", OpSpec(
        _gae_raw, _gae_valid, floats=("rewards", "values", "next_values"),
        flags=("terminated", "truncated"), anchor="rewards",
        scalars={"gamma": _DISCOUNT[:4], "lam": _DISCOUNT[:4]}, reference=_gae_reference,
        raw=True, empty=_all_empty, expect={"empty": OK})),
    "clipped_surrogate": ("clip_surrogate", OpSpec(
        _clip_call, _clip_valid,
        floats=("logp_new", "logp_old", "advantages", "factor", "entropy"), flags=("mask",),
        anchor="logp_new",
        scalars={"clip": [("nan", math.nan), ("negative", -0.1), ("str", "0.2")],
                 "entropy_coef": [("nan", math.nan), ("inf", math.inf), ("none", None)]},
        reference=_clip_reference, empty=_all_empty)),
    "torch.ops.haml.clip_surrogate_fwd": ("clip_surrogate", OpSpec(
        _clip_raw, lambda: _clip_valid(float_mask=True),
        floats=("logp_new", "logp_old", "advantages", "factor", "mask", "entropy"),
        anchor="logp_new", scalars={"clip": [("nan", math.nan), ("negative", -0.1)]},
        raw=True)),
    "torch.ops.haml.clip_surrogate_bwd": ("clip_surrogate", OpSpec(
        _clip_bwd_raw, _clip_bwd_valid,
        floats=("ratio", "advantages", "factor", "mask"), anchor="ratio", scalars={"clip": [("nan", math.nan), ("negative", -0.1)]}, raw=True)),
    "layer_norm": ("layer_norm", OpSpec(
        _layer_norm_call, _layer_norm_valid, floats=("input", "weight", "bias"), anchor="input",
        scalars={"eps": _EPS + [("str", "1e-5")]}, reference=_layer_norm_reference,
        empty=_no_row, expect=_LAYER_NORM_EXPECT)),
    "torch.ops.haml.layer_norm_fwd": ("layer_norm", OpSpec(
        _layer_norm_raw, _layer_norm_valid, floats=("input", "weight", "bias"), anchor="input",
        scalars={"eps": _EPS}, reference=_layer_norm_reference, raw=True, empty=_no_row,
        expect=_LAYER_NORM_EXPECT)),
    "FisherOperator": ("fvp", OpSpec(
        _fisher_call, _fisher_valid, floats=("obs",), flags=("mask", "action_mask"),
        others=("vector",), anchor="obs",
        scalars={"damping": _POSITIVE}, reference=_fisher_reference, empty=_per_sample_empty)),
    "torch.classes.haml.FisherOperator": ("fvp", OpSpec(
        _fisher_raw, lambda: dict(_fisher_valid(), mask=_fisher_valid()["mask"].to(DTYPE)),
        floats=("obs", "mask"), flags=("action_mask",), others=("vector",), anchor="obs",
        scalars={"damping": _POSITIVE[:3]}, reference=_fisher_reference, raw=True,
        empty=_per_sample_empty,
        # the raw class converts any numeric mask to weights (the façade admits bool/floating)
        expect={"mask:dtype_int": OK, "mask:dtype_float32": OK, "action_mask:dtype_int": OK,
                "mask:nan": ANY, "mask:inf": ANY})),
    "conjugate_gradient": ("fvp", OpSpec(
        _cg_call, _cg_valid, others=("b",), anchor="b",
        scalars={"iters": _COUNT, "residual_tol": _POSITIVE[::2] + [("str", "1")]})),
    "trust_region_step": ("line_search", OpSpec(
        _trust_call, _trust_valid, floats=("obs", "logp_old", "advantages", "factor"),
        flags=("mask",), others=("actions",), anchor="obs",
        scalars={"max_kl": _POSITIVE + [("zero", 0.0)], "cg_iters": _COUNT + [("zero", 0)],
                 "damping": _POSITIVE, "backtrack_coef": [("one", 1.0), ("zero", 0.0), ("nan", math.nan)],
                 "max_backtracks": _COUNT, "accept_ratio": _POSITIVE[:3] + [("negative", -1.0)],
                 "residual_tol": [("nan", math.nan), ("negative", -1.0)]},
        empty=_per_sample_empty,
        # the op's rule: a NaN advantage in an active sample is refused
        expect={"advantages:nan": "advantages"})),
    "backtracking_line_search": ("line_search", OpSpec(
        _line_search_call, _line_search_valid, others=("full_step",), anchor="full_step",
        scalars={"max_kl": _POSITIVE, "backtrack_coef": [("one", 1.0), ("nan", math.nan)],
                 "max_backtracks": _COUNT, "accept_ratio": [("nan", math.nan), ("negative", -1.0)]})),
}

GROUPS = sorted({group for group, _ in OPS.values()})


# -- the cases ------------------------------------------------------------------------------------


def _cases(spec: OpSpec) -> dict[str, tuple[Callable[[dict], dict], Any]]:
    """case name -> (mutation of the valid args, expected: OK, a name, or a set of names)."""
    names = {k for k, v in spec.valid().items() if isinstance(v, torch.Tensor)}
    cases: dict[str, tuple[Callable[[dict], dict], Any]] = {}

    def named(arg: str) -> Any:
        # The anchor's own errors may name any tensor checked against it.
        return names if arg == spec.anchor else arg

    def mutate(arg: str, fn: Callable[[torch.Tensor], Any]) -> Callable[[dict], dict]:
        return lambda a: dict(a, **{arg: fn(a[arg])})

    for arg in (*spec.floats, *spec.flags, *spec.others):
        cases[f"{arg}:not_tensor"] = (mutate(arg, lambda t: t.tolist()), arg)
        device = OTHER_DEVICE if spec.raw else (OTHER_DEVICE or "meta")
        if device is not None:
            cases[f"{arg}:device"] = (mutate(arg, lambda t, d=device: t.to(d)), named(arg))
        cases[f"{arg}:shape"] = (mutate(arg, lambda t: torch.cat([t, t[:1]])), named(arg))
        cases[f"{arg}:extra_dim"] = (mutate(arg, lambda t: t.unsqueeze(0)), named(arg))
        cases[f"{arg}:non_contiguous"] = (mutate(arg, _non_contiguous), OK)
        cases[f"{arg}:stride0"] = (mutate(arg, _stride0), OK)
        if arg in spec.others and arg not in ("actions",):
            cases[f"{arg}:dtype_float32"] = (mutate(arg, lambda t: t.float()), named(arg))
    for arg in spec.floats:
        cases[f"{arg}:dtype_int"] = (mutate(arg, lambda t: t.long()), named(arg))
        cases[f"{arg}:dtype_float32"] = (mutate(arg, lambda t: t.float()), named(arg))
        cases[f"{arg}:nan"] = (mutate(arg, lambda t: t.flatten().index_fill(0, torch.tensor([1]), math.nan).view_as(t)), OK)
        cases[f"{arg}:inf"] = (mutate(arg, lambda t: t.flatten().index_fill(0, torch.tensor([1]), math.inf).view_as(t)), OK)
    for arg in spec.flags:
        cases[f"{arg}:dtype_int"] = (mutate(arg, lambda t: t.to(torch.int32)), arg)
    for arg, values in spec.scalars.items():
        for label, value in values:
            cases[f"{arg}:{label}"] = ((lambda arg, value: lambda a: dict(a, **{arg: value}))(arg, value), arg)
    if spec.empty is not None:
        cases["empty"] = (spec.empty, names)
    for name, expected in spec.expect.items():
        cases[name] = (cases[name][0], expected)
    return cases


def _contiguous(a: dict) -> dict:
    return {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in a.items()}


def run_case(op: str, case: str) -> tuple[bool, str]:
    """(passed, detail) of one case."""
    _, spec = OPS[op]
    mutation, expected = _cases(spec)[case]
    args = mutation(spec.valid())
    try:
        out = spec.call(args)
    except Exception as err:  # noqa: BLE001 - what it raised is the result
        message = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        if expected is OK or expected is ANY:
            return False, f"expected success, got {message}"
        allowed = (TypeError, ValueError) + ((RuntimeError,) if spec.raw else ())
        if not isinstance(err, allowed) or isinstance(err, NotImplementedError):
            return False, f"expected TypeError/ValueError naming it, got {message}"
        wanted = expected if isinstance(expected, set) else {expected}
        if not any(f"'{name}'" in str(err) for name in wanted):
            return False, f"the error names none of {sorted(wanted)}: {message}"
        return True, message
    if expected is ANY:
        return True, "ok (value unspecified)"
    if expected is not OK:
        return False, f"expected an error naming {expected!r}, got a result"
    kind = case.split(":")[-1]
    if kind in ("non_contiguous", "stride0"):
        _assert_same(out, spec.call(_contiguous(args)))
    elif kind in ("nan", "inf") and spec.reference is not None:
        want = spec.reference(args)
        got = _tensors(out)[: len(_tensors(want))]
        _assert_same(got, want)
    return True, "ok"


def case_names(op: str) -> list[str]:
    return list(_cases(OPS[op][1]))


def main(argv: list[str]) -> None:
    import warnings

    import haml.ops  # noqa: F401 - registers the ops' fake kernels and autograd formulas

    warnings.simplefilter("ignore")
    group, only = argv[0], set(argv[1:])
    for op, (g, _) in OPS.items():
        if g != group:
            continue
        if op.startswith("torch.") and not haml.ops.BUILD_INFO:
            continue
        for case in case_names(op):
            key = f"{op}/{case}"
            if only and key not in only:
                continue
            try:
                ok, detail = run_case(op, case)
            except Exception:  # noqa: BLE001 - a failed comparison or a bug in the case
                ok, detail = False, traceback.format_exc(limit=3)[-600:]
            print(json.dumps({"case": key, "ok": ok, "detail": detail}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
