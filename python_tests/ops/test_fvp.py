"""haml.ops.fvp: the Fisher-vector product against two independent oracles, CG, bad input.

Oracles for (H + damping·I)v, H the Hessian of the mean KL at θ_old:
- an explicit Hessian of a hand-written mean KL, from ``torch.autograd.functional.hessian``;
- the Gauss–Newton form Jᵀ M J with ``torch.func`` (``reference.GaussNewtonFisherOperator``).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from gymnasium import spaces
from torch import nn

from haml.models import MLPPolicy
from haml.ops.fvp import FisherOperator, conjugate_gradient, fisher_vector_product, reference

# (head, hidden, activation, layer_norm, input_norm)
CONFIGS = [
    ("gaussian", (6,), "tanh", False, False),
    ("gaussian", (5, 4), "relu", True, True),
    ("gaussian", (4, 4, 3), "tanh", True, False),
    ("categorical", (), "tanh", False, True),
    ("categorical", (5, 4, 3), "tanh", True, False),
    ("categorical", (6,), "relu", True, True),
]
CONFIG_IDS = ["-".join(map(str, c)) for c in CONFIGS]

# torch.func.jvp loads torch's forward-AD decompositions through torch.jit.script on first use
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
MASKS = [None, "bool", "float"]


def make_problem(config, dtype=torch.float64, n=12, obs_dim=3, seed=0, sample_mask=None):
    """A policy with random (non-initial) weights, observations, action and sample masks."""
    head, hidden, activation, layer_norm, input_norm = config
    gen = torch.Generator().manual_seed(seed)
    space = spaces.Box(-1, 1, (2,)) if head == "gaussian" else spaces.Discrete(4)
    policy = MLPPolicy(obs_dim, space, hidden=hidden, activation=activation,
                       layer_norm=layer_norm, input_norm=input_norm)
    with torch.no_grad():
        for p in policy.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=gen))
    policy = policy.to(dtype)
    obs = torch.randn(n, obs_dim, generator=gen, dtype=dtype)
    action_mask = None
    if head == "categorical":
        action_mask = torch.rand(n, 4, generator=gen) < 0.6
        action_mask[torch.arange(n), torch.randint(0, 4, (n,), generator=gen)] = True
        action_mask[0] = torch.tensor([False, True, False, False])
    mask = None
    if sample_mask == "bool":
        mask = torch.rand(n, generator=gen) < 0.6
        mask[0] = True
    elif sample_mask == "float":
        mask = 2.0 * torch.rand(n, generator=gen, dtype=dtype)
        mask[torch.rand(n, generator=gen) < 0.3] = 0.0
    return policy, obs, action_mask, mask


def num_params(policy):
    return sum(p.numel() for p in policy.parameters() if p.requires_grad)


def hand_kl(old, new, kl):
    """Per-sample divergence written from its definition."""
    if isinstance(old, torch.distributions.Normal):
        mu0, s0, mu1, s1 = old.loc, old.scale, new.loc, new.scale
        return (torch.log(s1 / s0) + (s0**2 + (mu0 - mu1) ** 2) / (2 * s1**2) - 0.5).sum(-1)
    if kl == "exact":  # Σ_a p_old (log p_old - log p_new) over available actions
        p0 = old.probs
        return torch.where(p0 > 0, p0 * (old.logits - new.logits), 0.0).sum(-1)
    delta = new.logits - old.logits  # HARL: Σ_a e^Δ - 1 - Δ over all actions
    return (torch.exp(delta) - 1 - delta).sum(-1)


def explicit_hessian(policy, obs, mask, action_mask, kl="exact"):
    """∇²_θ of the (masked) mean KL at θ_old, as a dense [P, P] matrix."""
    named = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
    theta0 = torch.cat([p.detach().reshape(-1) for _, p in named])
    with torch.no_grad():
        old = policy.distribution(obs, action_mask)

    def mean_kl(theta):
        params, offset = {}, 0
        for name, p in named:
            params[name] = theta[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        new = torch.func.functional_call(policy, params, (obs,), {"action_mask": action_mask})
        per_sample = hand_kl(old, new, kl)
        if mask is None:
            return per_sample.mean()
        w = mask.to(per_sample.dtype)
        return (w * per_sample).sum() / w.sum()

    return torch.autograd.functional.hessian(mean_kl, theta0, vectorize=True)


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


# -- against the oracles ------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("sample_mask", MASKS)
def test_matches_explicit_hessian_float64(config, sample_mask):
    policy, obs, action_mask, mask = make_problem(config, sample_mask=sample_mask)
    hessian = explicit_hessian(policy, obs, mask, action_mask)
    operator = FisherOperator(policy, obs, mask, damping=0.1, action_mask=action_mask)
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        v = torch.randn(num_params(policy), generator=gen, dtype=torch.float64)
        expected = hessian @ v + 0.1 * v
        torch.testing.assert_close(operator(v), expected, rtol=0, atol=1e-10 * expected.abs().max())


@pytest.mark.parametrize("config", [c for c in CONFIGS if c[0] == "categorical"],
                         ids=[i for i in CONFIG_IDS if i.startswith("categorical")])
@pytest.mark.parametrize("sample_mask", [None, "bool"])
def test_harl_kl_matches_its_explicit_hessian_and_is_not_the_fisher(config, sample_mask):
    policy, obs, action_mask, mask = make_problem(config, sample_mask=sample_mask)
    hessian = explicit_hessian(policy, obs, mask, action_mask, kl="harl")
    v = torch.randn(num_params(policy), generator=torch.Generator().manual_seed(8),
                    dtype=torch.float64)
    got = fisher_vector_product(policy, obs, v, damping=0.0, mask=mask, action_mask=action_mask,
                                kl="harl")
    torch.testing.assert_close(got, hessian @ v, rtol=0, atol=1e-10 * got.abs().max())
    exact = fisher_vector_product(policy, obs, v, damping=0.0, mask=mask, action_mask=action_mask)
    assert rel_err(got, exact) > 0.05  # the HARL divergence's Hessian is not the Fisher


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("sample_mask", MASKS)
@pytest.mark.parametrize("kl", ["exact", "harl"])
def test_matches_gauss_newton_oracle_float64(config, sample_mask, kl):
    policy, obs, action_mask, mask = make_problem(config, n=64, obs_dim=7, seed=1,
                                                  sample_mask=sample_mask)
    operator = FisherOperator(policy, obs, mask, damping=0.05, action_mask=action_mask, kl=kl)
    oracle = reference.GaussNewtonFisherOperator(policy, obs, mask, 0.05, action_mask, kl)
    gen = torch.Generator().manual_seed(9)
    for _ in range(3):
        v = torch.randn(num_params(policy), generator=gen, dtype=torch.float64)
        got, expected = operator(v), oracle(v)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10 * expected.abs().max())


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("sample_mask", [None, "float"])
def test_float32_matches_float64_oracles(config, sample_mask):
    policy64, obs64, action_mask, mask64 = make_problem(config, n=64, obs_dim=7, seed=2,
                                                        sample_mask=sample_mask)
    policy32 = copy.deepcopy(policy64).float()
    obs32 = obs64.float()
    mask32 = None if mask64 is None else mask64.float()
    v64 = torch.randn(num_params(policy64), generator=torch.Generator().manual_seed(10),
                      dtype=torch.float64)
    expected = reference.GaussNewtonFisherOperator(policy64, obs64, mask64, 0.1, action_mask)(v64)
    got = FisherOperator(policy32, obs32, mask32, 0.1, action_mask)(v64.float())
    assert got.dtype == torch.float32
    assert rel_err(got.double(), expected) < 1e-5
    got_func = reference.GaussNewtonFisherOperator(policy32, obs32, mask32, 0.1, action_mask)(
        v64.float()
    )
    assert rel_err(got_func.double(), expected) < 1e-5


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[5]], ids=[CONFIG_IDS[1], CONFIG_IDS[5]])
def test_recomputed_and_one_off_forms_equal_the_operator(config):
    policy, obs, action_mask, mask = make_problem(config, n=32, sample_mask="bool")
    v = torch.randn(num_params(policy), generator=torch.Generator().manual_seed(11),
                    dtype=torch.float64)
    expected = FisherOperator(policy, obs, mask, 0.1, action_mask)(v)
    recomputed = reference.recomputed_fisher_operator(policy, obs, mask, 0.1, action_mask)
    torch.testing.assert_close(recomputed(v), expected, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(
        fisher_vector_product(policy, obs, v, 0.1, mask, action_mask), expected,
        rtol=1e-13, atol=1e-13,
    )
    torch.testing.assert_close(
        reference.fisher_vector_product_func(policy, obs, v, 0.1, mask, action_mask), expected,
        rtol=1e-10, atol=1e-12,
    )


# -- structure of the operator --------------------------------------------------------------------


class ForwardCounter:
    def __init__(self, module: nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(self)

    def __call__(self, *args) -> None:
        self.calls += 1


def test_first_order_graph_is_built_once_per_operator():
    policy, obs, action_mask, mask = make_problem(CONFIGS[5], n=32)
    counter = ForwardCounter(policy.head)
    # The double-backward operator's structure (the native one keeps no graph at all).
    operator = reference.FisherOperator(policy, obs, mask, 0.1, action_mask)
    assert counter.calls == 2  # π_old without gradient, π_θ with it
    v = torch.randn(num_params(policy), dtype=torch.float64)
    first = operator(v)
    for _ in range(4):
        assert torch.equal(operator(v), first)
    assert counter.calls == 2  # products run no forward pass
    recomputed = reference.recomputed_fisher_operator(policy, obs, mask, 0.1, action_mask)
    for _ in range(3):
        recomputed(v)
    assert counter.calls == 2 + 3 * 2  # the authors' way rebuilds it every product


def test_operator_is_symmetric_positive_definite():
    for config in (CONFIGS[1], CONFIGS[5]):
        policy, obs, action_mask, mask = make_problem(config, n=16, sample_mask="bool")
        p = num_params(policy)
        for damping in (0.0, 0.1):
            operator = FisherOperator(policy, obs, mask, damping, action_mask)
            matrix = torch.stack([operator(e) for e in torch.eye(p, dtype=torch.float64)], dim=1)
            torch.testing.assert_close(matrix, matrix.T, rtol=0, atol=1e-12 * matrix.abs().max())
            eigenvalues = torch.linalg.eigvalsh(matrix)
            assert eigenvalues.min() > damping - 1e-10 * eigenvalues.max()
            gen = torch.Generator().manual_seed(12)
            for _ in range(5):
                v = torch.randn(p, generator=gen, dtype=torch.float64)
                assert torch.dot(v, operator(v)) > 0


def test_gaussian_log_std_block_is_two_identity():
    """With exp(log_std), the Fisher block of the log-stds is exactly 2·I (per-sample mean)."""
    policy, obs, _, _ = make_problem(CONFIGS[0], n=16)
    operator = FisherOperator(policy, obs, damping=0.0)
    names = [n for n, p in policy.named_parameters()]
    assert names[0] == "log_std"
    e = torch.zeros(num_params(policy), dtype=torch.float64)
    e[1] = 1.0  # second log-std
    column = operator(e)
    torch.testing.assert_close(column[:2], torch.tensor([0.0, 2.0], dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_sample_mask_selects_and_weights_samples():
    policy, obs, action_mask, _ = make_problem(CONFIGS[4], n=24)
    v = torch.randn(num_params(policy), generator=torch.Generator().manual_seed(13),
                    dtype=torch.float64)
    keep = torch.zeros(24, dtype=torch.bool)
    keep[::3] = True
    masked = fisher_vector_product(policy, obs, v, 0.0, keep, action_mask)
    subset = fisher_vector_product(policy, obs[keep], v, 0.0, None, action_mask[keep])
    torch.testing.assert_close(masked, subset, rtol=1e-12, atol=1e-14)
    # float weights: a weighted mean, scale-free
    w = torch.rand(24, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    torch.testing.assert_close(
        fisher_vector_product(policy, obs, v, 0.0, w, action_mask),
        fisher_vector_product(policy, obs, v, 0.0, 3.0 * w, action_mask),
        rtol=1e-12, atol=1e-14,
    )
    # no active sample: F = 0, only damping remains
    none = torch.zeros(24, dtype=torch.bool)
    torch.testing.assert_close(fisher_vector_product(policy, obs, v, 0.25, none, action_mask),
                               0.25 * v)


def test_operator_works_under_no_grad_and_refuses_stale_parameters():
    policy, obs, action_mask, _ = make_problem(CONFIGS[3], n=16)
    v = torch.randn(num_params(policy), dtype=torch.float64)
    expected = FisherOperator(policy, obs, None, 0.1, action_mask)(v)
    with torch.no_grad():
        operator = FisherOperator(policy, obs, None, 0.1, action_mask)
        torch.testing.assert_close(operator(v), expected, rtol=0, atol=0)
        policy.head.weight.add_(0.1)  # the operator's graph is now stale
    with pytest.raises(RuntimeError):
        operator(v)


# -- conjugate gradient ---------------------------------------------------------------------------


def random_spd(n, gen, dtype=torch.float64, condition=50.0):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=dtype))
    eigenvalues = torch.logspace(0, math.log10(condition), n, dtype=dtype)
    return (q * eigenvalues) @ q.T


@pytest.mark.parametrize("n", [1, 5, 30])
def test_cg_solves_random_spd_systems(n):
    gen = torch.Generator().manual_seed(n)
    for _ in range(3):
        a = random_spd(n, gen)
        b = torch.randn(n, generator=gen, dtype=torch.float64)
        x = conjugate_gradient(lambda p: a @ p, b, iters=4 * n, residual_tol=1e-24)
        torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-9, atol=1e-10)
        assert (a @ x - b).norm() < 1e-10 * b.norm()


def test_cg_stops_at_residual_tolerance_and_iteration_cap():
    gen = torch.Generator().manual_seed(20)
    a = random_spd(40, gen, condition=1e4)
    b = torch.randn(40, generator=gen, dtype=torch.float64)
    calls = []

    def matvec(p):
        calls.append(1)
        return a @ p

    for tol in (1e-2, 1e-6, 1e-12):
        calls.clear()
        x = conjugate_gradient(matvec, b, iters=200, residual_tol=tol)
        r = b - a @ x
        assert torch.dot(r, r) < tol  # stopped because r·r fell below the tolerance ...
        k = len(calls)
        calls.clear()
        x_prev = conjugate_gradient(matvec, b, iters=k - 1, residual_tol=tol)
        r_prev = b - a @ x_prev
        assert torch.dot(r_prev, r_prev) >= tol  # ... and not one product later than needed
    calls.clear()
    conjugate_gradient(matvec, b, iters=10, residual_tol=0.0)
    assert len(calls) == 10  # the cap
    # An exactly solved system stops (r·r = 0 ≤ 0) instead of dividing 0 by 0 on the next step.
    x = conjugate_gradient(lambda p: 2.0 * p, b, iters=10, residual_tol=0.0)
    assert torch.equal(x, b / 2.0)
    calls.clear()
    x = conjugate_gradient(matvec, torch.zeros(40, dtype=torch.float64), iters=10)
    assert len(calls) == 0 and torch.count_nonzero(x) == 0
    # the identity converges in one product
    calls.clear()
    conjugate_gradient(lambda p: (calls.append(1), p)[1], b, iters=10)
    assert len(calls) == 1


def test_cg_with_fisher_operator_solves_the_damped_system():
    policy, obs, action_mask, mask = make_problem(CONFIGS[5], n=48, sample_mask="bool")
    operator = FisherOperator(policy, obs, mask, 0.1, action_mask)
    p = num_params(policy)
    g = torch.randn(p, generator=torch.Generator().manual_seed(21), dtype=torch.float64)
    x = conjugate_gradient(operator, g, iters=4 * p, residual_tol=1e-26)
    matrix = torch.stack([operator(e) for e in torch.eye(p, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(x, torch.linalg.solve(matrix, g), rtol=1e-7, atol=1e-9)


# -- bad input ---------------------------------------------------------------------------------------


def test_bad_vector_is_rejected_by_name():
    policy, obs, action_mask, _ = make_problem(CONFIGS[3], n=8)
    operator = FisherOperator(policy, obs, action_mask=action_mask)
    p = num_params(policy)
    with pytest.raises(ValueError, match="'vector'"):
        operator(torch.zeros(p + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="'vector'"):
        operator(torch.zeros(1, p, dtype=torch.float64))
    with pytest.raises(TypeError, match="'vector'"):
        operator(torch.zeros(p, dtype=torch.float32))
    with pytest.raises(ValueError, match="'vector'"):
        operator(torch.zeros(p, dtype=torch.float64, device="meta"))
    with pytest.raises(TypeError, match="'vector'"):
        operator([0.0] * p)
    with pytest.raises(ValueError, match="'vector'"):
        fisher_vector_product(policy, obs, torch.zeros(p - 1, dtype=torch.float64),
                              action_mask=action_mask)


def test_bad_operator_arguments_are_rejected_by_name():
    policy, obs, action_mask, _ = make_problem(CONFIGS[0], n=8)
    with pytest.raises(ValueError, match="'damping'"):
        FisherOperator(policy, obs, damping=-0.1)
    with pytest.raises(ValueError, match="'damping'"):
        FisherOperator(policy, obs, damping=float("nan"))
    with pytest.raises(ValueError, match="'kl'"):
        FisherOperator(policy, obs, kl="reverse")
    with pytest.raises(TypeError, match="'policy'"):
        FisherOperator(nn.Linear(3, 2).double(), obs)
    with pytest.raises(TypeError, match="'obs'"):
        FisherOperator(policy, obs.float())
    with pytest.raises(ValueError, match="'obs'"):
        FisherOperator(policy, obs[:0])
    with pytest.raises(ValueError, match="'mask'"):
        FisherOperator(policy, obs, mask=torch.ones(7, dtype=torch.bool))
    with pytest.raises(TypeError, match="'mask'"):
        FisherOperator(policy, obs, mask=torch.ones(8, dtype=torch.int64))
    frozen = copy.deepcopy(policy).requires_grad_(False)
    with pytest.raises(ValueError, match="'policy'"):
        FisherOperator(frozen, obs)


def test_bad_cg_arguments_are_rejected_by_name():
    b = torch.ones(3, dtype=torch.float64)
    with pytest.raises(TypeError, match="'matvec'"):
        conjugate_gradient(None, b)
    with pytest.raises(ValueError, match="'b'"):
        conjugate_gradient(lambda v: v, b[None])
    with pytest.raises(TypeError, match="'b'"):
        conjugate_gradient(lambda v: v, torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="'iters'"):
        conjugate_gradient(lambda v: v, b, iters=-1)
    with pytest.raises(TypeError, match="'iters'"):
        conjugate_gradient(lambda v: v, b, iters=2.0)
    with pytest.raises(ValueError, match="'residual_tol'"):
        conjugate_gradient(lambda v: v, b, residual_tol=-1.0)


# -- devices ------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [CONFIGS[2], CONFIGS[5]], ids=[CONFIG_IDS[2], CONFIG_IDS[5]])
def test_operator_on_each_device(config, device):
    policy, obs, action_mask, mask = make_problem(config, n=48, sample_mask="bool")
    v = torch.randn(num_params(policy), generator=torch.Generator().manual_seed(30),
                    dtype=torch.float64)
    expected = reference.GaussNewtonFisherOperator(policy, obs, mask, 0.1, action_mask)(v)
    moved = copy.deepcopy(policy).to(device)
    on = (lambda t: None if t is None else t.to(device))
    operator = FisherOperator(moved, obs.to(device), on(mask), 0.1, on(action_mask))
    got = operator(v.to(device))
    assert got.device.type == device.type
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=1e-10 * expected.abs().max())
    x = conjugate_gradient(operator, v.to(device), iters=10)
    assert torch.dot(x, operator(x)) > 0


# -- the native operator ----------------------------------------------------------------------------


def _require_native_fvp():
    from haml.ops import _backend

    if not _backend.has_native_class("FisherOperator"):
        pytest.skip("the native FisherOperator is not built or not in use")


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("sample_mask", MASKS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_native_product_matches_double_backward(config, sample_mask, dtype, each_cpu_isa):
    """The issue's bound: ≤ 1e-10 relative in float64, ≤ 1e-5 in float32, on MLPPolicy of several
    depths, activations and LayerNorm layouts, Gaussian and masked categorical."""
    _require_native_fvp()
    policy, obs, action_mask, mask = make_problem(config, dtype=dtype, n=40, sample_mask=sample_mask)
    native = FisherOperator(policy, obs, mask, 0.1, action_mask)
    assert native.backend == "native"
    double_backward = reference.FisherOperator(policy, obs, mask, 0.1, action_mask)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(num_params(policy), generator=gen, dtype=dtype)
        bound = 1e-10 if dtype == torch.float64 else 1e-5
        assert rel_err(native(v), double_backward(v)) <= bound


def test_native_product_with_no_active_sample_is_damping_only():
    _require_native_fvp()
    policy, obs, action_mask, _ = make_problem(CONFIGS[1], n=10)
    mask = torch.zeros(10, dtype=torch.bool)
    v = torch.randn(num_params(policy), dtype=torch.float64)
    torch.testing.assert_close(FisherOperator(policy, obs, mask, 0.25)(v), 0.25 * v)


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[4]], ids=[CONFIG_IDS[1], CONFIG_IDS[4]])
def test_native_cg_is_the_python_iteration_on_the_native_product(config):
    _require_native_fvp()
    policy, obs, action_mask, mask = make_problem(config, n=30, sample_mask="float")
    operator = FisherOperator(policy, obs, mask, 0.1, action_mask)
    b = torch.randn(num_params(policy), dtype=torch.float64)
    from haml.ops.fvp.cg import conjugate_gradient as python_cg

    for iters, tol in [(10, 1e-10), (3, 1e-10), (50, 1e-6)]:
        native_x = conjugate_gradient(operator, b, iters, tol)
        python_x = python_cg(operator, b, iters, tol)
        torch.testing.assert_close(native_x, python_x, rtol=1e-9, atol=1e-12)
    x = conjugate_gradient(operator, b, 200, 1e-24)
    torch.testing.assert_close(operator(x), b, rtol=1e-8, atol=1e-10)


def test_native_operator_refuses_parameters_changed_in_place():
    _require_native_fvp()
    policy, obs, action_mask, _ = make_problem(CONFIGS[0], n=8)
    operator = FisherOperator(policy, obs)
    v = torch.randn(num_params(policy), dtype=torch.float64)
    operator(v)
    with torch.no_grad():
        policy.head.bias.add_(0.1)
    with pytest.raises(RuntimeError, match="modified in place"):
        operator(v)
    with pytest.raises(RuntimeError, match="modified in place"):
        conjugate_gradient(operator, v)


def test_unsupported_policies_fall_back_saying_so_once(recwarn):
    """A policy the native path does not cover runs the double-backward reference, with one
    RuntimeWarning per reason, however many operators are built."""
    _require_native_fvp()
    from haml.ops import fvp

    fvp._FALLBACKS_SAID.clear()

    class Wrapped(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def distribution(self, obs, action_mask=None):
            return self.inner.distribution(obs, action_mask)

    policy, obs, action_mask, _ = make_problem(CONFIGS[0], n=8)
    v = torch.randn(num_params(policy), dtype=torch.float64)
    expected = FisherOperator(policy, obs)(v)
    for _ in range(3):
        wrapped = FisherOperator(Wrapped(policy), obs)
        assert wrapped.backend == "reference"
        torch.testing.assert_close(wrapped(v), expected, rtol=1e-12, atol=1e-14)
    harl = [FisherOperator(policy, obs, kl="harl") for _ in range(2)]
    assert {op.backend for op in harl} == {"reference"}
    messages = [str(w.message) for w in recwarn.list if issubclass(w.category, RuntimeWarning)]
    assert sum("Wrapped has no native Fisher product" in m for m in messages) == 1
    assert sum("kl='harl'" in m for m in messages) == 1


@pytest.mark.gpu
def test_native_product_on_cuda_matches_cpu():
    _require_native_fvp()
    for config in CONFIGS:
        policy, obs, action_mask, mask = make_problem(config, n=64, sample_mask="float")
        v = torch.randn(num_params(policy), dtype=torch.float64)
        cpu = FisherOperator(policy, obs, mask, 0.1, action_mask)(v)
        on = (lambda t: None if t is None else t.cuda())
        gpu_policy = copy.deepcopy(policy).cuda()
        gpu = FisherOperator(gpu_policy, obs.cuda(), on(mask), 0.1, on(action_mask))
        assert gpu.backend == "native"
        torch.testing.assert_close(gpu(v.cuda()).cpu(), cpu, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[4]], ids=[CONFIG_IDS[1], CONFIG_IDS[4]])
def test_quadratic_form_of_the_cg_solution_matches_a_product(config):
    """xᵀ(H + λI)x read off the CG recurrence equals one more product, for the native operator's
    last solution; any other vector (or that solution modified in place) takes the product."""
    policy, obs, action_mask, mask = make_problem(config, n=30, sample_mask="float")
    operator = FisherOperator(policy, obs, mask, 0.1, action_mask)
    b = torch.randn(num_params(policy), dtype=torch.float64)
    x = conjugate_gradient(operator, b, 10, 1e-10)
    by_product = torch.dot(x, operator(x))
    torch.testing.assert_close(operator.quadratic_form(x), by_product, rtol=1e-9, atol=1e-12)
    y = x.clone()
    torch.testing.assert_close(operator.quadratic_form(y), by_product, rtol=1e-12, atol=1e-14)
    x.mul_(2.0)
    torch.testing.assert_close(operator.quadratic_form(x), 4 * by_product, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n", [70, 1100], ids=["one-block", "five-blocks"])
def test_native_blocked_cpu_product_matches_the_aten_product(config, dtype, n):
    """On the CPU the native product runs block by block of samples (fisher_cpu.h); the ATen
    sequence over all samples (what other devices run) gives the same product and head
    vector-Jacobian product."""
    _require_native_fvp()
    policy, obs, action_mask, mask = make_problem(config, dtype=dtype, n=n, sample_mask="float")
    operator = FisherOperator(policy, obs, mask, 0.1, action_mask)
    impl = operator._impl
    assert impl.blocked_cpu_product()
    v = torch.randn(num_params(policy), generator=torch.Generator().manual_seed(4), dtype=dtype)
    g = torch.randn(impl.head_output().shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
    blocked = impl.apply(v), impl.output_vjp(g)
    impl.set_blocked_cpu_product(False)
    aten = impl.apply(v), impl.output_vjp(g)
    bound = 1e-12 if dtype == torch.float64 else 1e-5
    for got, expected in zip(blocked, aten):
        assert rel_err(got, expected) <= bound


@pytest.mark.parametrize("config", CONFIGS[1::3], ids=CONFIG_IDS[1::3])
def test_native_cpu_product_does_not_depend_on_the_thread_count(config):
    """The blocked product sums its blocks in fixed groups, in a fixed order: one thread and two
    give the same bits."""
    _require_native_fvp()
    policy, obs, action_mask, mask = make_problem(config, dtype=torch.float32, n=2100)
    operator = FisherOperator(policy, obs, mask, 0.1, action_mask)
    v = torch.randn(num_params(policy), generator=torch.Generator().manual_seed(6))
    g = torch.randn(operator._impl.head_output().shape, generator=torch.Generator().manual_seed(7))
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append((operator(v), operator._impl.output_vjp(g)))
    finally:
        torch.set_num_threads(threads)
    (one_product, one_vjp), (two_product, two_vjp) = results
    assert torch.equal(one_product, two_product)
    assert torch.equal(one_vjp, two_vjp)


def _surrogate_objective(actions, advantages, mask):
    from haml.models.policies import joint_log_prob
    from haml.ops.line_search.reference import surrogate

    def objective(dist):
        logp = joint_log_prob(dist, actions)
        return surrogate(logp, logp.detach() - 0.1, advantages, None, mask)

    return objective


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("sample_mask", MASKS)
def test_native_objective_gradient_matches_autograd_through_the_policy(config, sample_mask):
    """The native operator's value, gradient and π_θ of an objective of the distribution (from its
    cached forward and one transposed pass) equal autograd through the whole policy."""
    _require_native_fvp()
    policy, obs, action_mask, mask = make_problem(config, n=40, sample_mask=sample_mask)
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        actions, _ = policy.sample(obs, action_mask)
    objective = _surrogate_objective(actions, torch.randn(40, generator=gen, dtype=obs.dtype), mask)
    native = FisherOperator(policy, obs, mask, 0.1, action_mask)
    assert native.backend == "native"
    value, gradient, old = native.objective_gradient(objective)
    ref_value, ref_gradient, ref_old = reference.objective_gradient(policy, obs, action_mask, objective)
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-14)
    assert rel_err(gradient, ref_gradient) <= 1e-10
    assert not gradient.requires_grad and not value.requires_grad
    assert type(old) is type(ref_old)
    for name in ("loc", "scale") if isinstance(old, torch.distributions.Normal) else ("logits",):
        torch.testing.assert_close(getattr(old, name), getattr(ref_old, name), rtol=1e-12, atol=0)
        assert not getattr(old, name).requires_grad


@pytest.mark.parametrize("backend_policy", ["native", "reference"])
def test_objective_gradient_rejects_bad_objectives_by_name(backend_policy):
    policy, obs, action_mask, _ = make_problem(CONFIGS[0], n=8)
    if backend_policy == "reference":
        operator = FisherOperator(policy, obs, kl="harl")
        assert operator.backend == "reference"
    else:
        _require_native_fvp()
        operator = FisherOperator(policy, obs)
    with pytest.raises(TypeError, match="'objective' must be callable"):
        operator.objective_gradient(3.0)
    with pytest.raises(TypeError, match="0-d floating tensor"):
        operator.objective_gradient(lambda dist: dist.mean)
    with pytest.raises(ValueError, match="does not depend"):
        operator.objective_gradient(lambda dist: torch.zeros((), dtype=obs.dtype))


# -- the ops' rules: weight-0 samples, rows with no available action, errors by name -----------


def _operators(policy, obs, mask, damping, action_mask):
    """The façade's operator (native for an MLPPolicy when built) and both reference forms."""
    return {
        "facade": FisherOperator(policy, obs, mask, damping, action_mask),
        "double_backward": reference.FisherOperator(policy, obs, mask, damping, action_mask),
        "gauss_newton": reference.GaussNewtonFisherOperator(policy, obs, mask, damping, action_mask),
    }


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[4]], ids=[CONFIG_IDS[1], CONFIG_IDS[4]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_no_active_sample_gives_the_damping_in_every_dtype(config, dtype, kind):
    """All-zero mask: F = 0, so (F + damping·I)v = damping·v (float32 included) and CG is finite."""
    policy, obs, action_mask, _ = make_problem(config, dtype=dtype, n=10)
    mask = torch.zeros(10, dtype=torch.bool if kind == "bool" else dtype)
    v = torch.randn(num_params(policy), generator=torch.Generator().manual_seed(1), dtype=dtype)
    for name, operator in _operators(policy, obs, mask, 0.25, action_mask).items():
        torch.testing.assert_close(operator(v), 0.25 * v, rtol=0, atol=0, msg=name)
        x = conjugate_gradient(operator, v, iters=5)
        torch.testing.assert_close(x, 4.0 * v, msg=name)


@pytest.mark.parametrize("config", [CONFIGS[3], CONFIGS[5]], ids=[CONFIG_IDS[3], CONFIG_IDS[5]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_row_with_no_available_action_adds_nothing_on_every_backend(config, dtype):
    """Such a row is uniform over all actions whatever θ is (the policy's rule): every backend
    gives the operator of the other rows, weighted by the full sample count."""
    n = 12
    policy, obs, action_mask, _ = make_problem(config, dtype=dtype, n=n)
    action_mask[3] = False
    action_mask[7] = False
    without = torch.ones(n, dtype=dtype)
    without[[3, 7]] = 0.0
    v = torch.randn(num_params(policy), generator=torch.Generator().manual_seed(2), dtype=dtype)
    expected = reference.GaussNewtonFisherOperator(policy, obs, without, 0.0, action_mask)(v) * (n - 2) / n
    bound = 1e-10 if dtype == torch.float64 else 1e-5
    for name, operator in _operators(policy, obs, None, 0.0, action_mask).items():
        assert rel_err(operator(v), expected) <= bound, name


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[5]], ids=[CONFIG_IDS[1], CONFIG_IDS[5]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_non_finite_observation_of_a_weight_0_sample_is_excluded(config, dtype):
    """A NaN or inf observation in a sample of weight 0 changes nothing, on every backend."""
    policy, obs, action_mask, mask = make_problem(config, dtype=dtype, n=12, sample_mask="float")
    mask[[2, 9]] = 0.0
    bad = obs.clone()
    bad[2] = float("nan")
    bad[9, 0] = float("inf")
    v = torch.randn(num_params(policy), generator=torch.Generator().manual_seed(3), dtype=dtype)
    clean = _operators(policy, obs, mask, 0.1, action_mask)
    dirty = _operators(policy, bad, mask, 0.1, action_mask)
    bound = 1e-10 if dtype == torch.float64 else 1e-5
    for name in clean:
        got = dirty[name](v)
        assert torch.isfinite(got).all(), name
        assert rel_err(got, clean[name](v)) <= bound, name


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[3]], ids=[CONFIG_IDS[0], CONFIG_IDS[3]])
def test_bad_observation_width_and_action_mask_are_rejected_by_name(config):
    policy, obs, action_mask, _ = make_problem(config, n=8)
    with pytest.raises(ValueError, match="'obs'"):
        FisherOperator(policy, obs[:, :2])
    with pytest.raises(ValueError, match="'obs'"):
        FisherOperator(policy, torch.cat([obs, obs], 1))
    if config[0] == "gaussian":
        with pytest.raises(ValueError, match="'action_mask'"):
            FisherOperator(policy, obs, action_mask=torch.ones(8, 2, dtype=torch.bool))
        return
    with pytest.raises(ValueError, match="'action_mask'"):
        FisherOperator(policy, obs, action_mask=action_mask[:, :3])
    with pytest.raises(ValueError, match="'action_mask'"):
        FisherOperator(policy, obs, action_mask=action_mask[:7])
    with pytest.raises(ValueError, match="'action_mask'"):
        FisherOperator(policy, obs, action_mask=action_mask[None])
    with pytest.raises(TypeError, match="'action_mask'"):
        FisherOperator(policy, obs, action_mask=action_mask.long())
    with pytest.raises(TypeError, match="'action_mask'"):
        FisherOperator(policy, obs, action_mask=action_mask.tolist())
    with pytest.raises(ValueError, match="'action_mask'"):
        FisherOperator(policy, obs, action_mask=action_mask.to("meta"))


def test_cg_on_a_native_operator_names_b():
    policy, obs, action_mask, _ = make_problem(CONFIGS[1], n=8)
    operator = FisherOperator(policy, obs)
    p = num_params(policy)
    with pytest.raises(ValueError, match="'b'"):
        conjugate_gradient(operator, torch.zeros(p + 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="'b'"):
        conjugate_gradient(operator, torch.zeros(p, dtype=torch.float32))
