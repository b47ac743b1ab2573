"""haml.ops.line_search: the backtracking rule on constructed cases, HATRPO steps on random problems."""

from __future__ import annotations

import copy

import pytest
import torch
from gymnasium import spaces
from torch import nn

from haml.models import MLPPolicy
from haml.ops.fvp import FisherOperator
from haml.ops.fvp import reference as reference_fvp
from haml.ops.line_search import TrustRegionInfo, backtracking_line_search, trust_region_step
from haml.ops.line_search import reference

DELTA = 0.01


# -- constructed cases for the backtracking rule ----------------------------------------------------


class Problem:
    """θ ∈ R^5 (arbitrary float32 values), a step s, and scripted L(θ), KL(θ).

    ``objective(t)`` and ``kl(t)`` give L and KL as functions of the fraction t of the step that
    θ currently holds (recovered from θ itself, so the evaluation sees the real parameters).
    """

    def __init__(self, objective, kl, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.theta = nn.Parameter(torch.randn(5, generator=gen) * 3.7)
        self.theta0 = self.theta.detach().clone()
        self.step = torch.randn(5, generator=gen) * 0.37
        self.objective, self.kl = objective, kl
        self.fractions: list[float] = []

    def evaluate(self):
        moved = self.theta.detach() - self.theta0
        t = (torch.dot(moved, self.step) / torch.dot(self.step, self.step)).item()
        nearest = min((0.8**j for j in range(20)), key=lambda a: abs(a - t))
        assert abs(t - nearest) < 1e-4  # θ is on the ray at a backtracking fraction ...
        t = nearest  # ... read exactly, so that scripted values hit the bounds exactly
        self.fractions.append(t)
        return torch.tensor(self.objective(t)), torch.tensor(self.kl(t))

    def search(self, expected=1.0, **kwargs):
        settings = dict(max_kl=DELTA, backtrack_coef=0.8, max_backtracks=10, accept_ratio=0.5)
        settings.update(kwargs)
        return backtracking_line_search([self.theta], self.step, torch.tensor(expected),
                                        self.evaluate, torch.tensor(0.0), **settings)

    def assert_at(self, fraction):
        assert torch.equal(self.theta.detach(), self.theta0 + fraction * self.step)

    def assert_restored(self):
        assert torch.equal(self.theta.detach(), self.theta0)


def test_accepts_the_full_step_when_it_qualifies():
    prob = Problem(objective=lambda t: 1.0 * t, kl=lambda t: 0.5 * DELTA * t * t)
    info = prob.search(expected=1.0)
    assert isinstance(info, TrustRegionInfo)
    assert info.accepted and info.step_fraction == 1.0
    assert len(prob.fractions) == 1  # early exit
    prob.assert_at(1.0)
    assert info.kl.item() == pytest.approx(0.5 * DELTA)
    assert info.improvement.item() == pytest.approx(1.0)
    assert info.expected_improvement.item() == 1.0


def test_accepts_at_j3_after_three_kl_violations():
    # KL(α) = (δ / 0.3) α²: α = 1, 0.8, 0.64 exceed δ; α = 0.512 gives 0.874 δ
    prob = Problem(objective=lambda t: t, kl=lambda t: DELTA / 0.3 * t * t)
    info = prob.search(expected=1.0)
    assert info.accepted and info.step_fraction == 0.8**3
    assert prob.fractions == [1.0, 0.8, 0.8**2, 0.8**3]
    prob.assert_at(0.8**3)
    assert info.kl.item() <= DELTA


def test_a_step_that_breaks_the_kl_bound_is_rejected():
    # improves the objective at every α, but breaks the bound at every α
    prob = Problem(objective=lambda t: t, kl=lambda t: 2.0 * DELTA)
    info = prob.search(expected=1.0, max_backtracks=6)
    assert not info.accepted and info.step_fraction == 0.0
    assert len(prob.fractions) == 6
    prob.assert_restored()
    assert info.kl.item() == 0.0 and info.improvement.item() == 0.0
    # breaking it only at the full step: the next fraction is taken
    prob = Problem(objective=lambda t: t, kl=lambda t: DELTA * 1.3 * t * t)
    info = prob.search(expected=1.0)
    assert info.accepted and info.step_fraction == 0.8
    prob.assert_at(0.8)


def test_a_step_that_worsens_the_objective_is_rejected():
    prob = Problem(objective=lambda t: -t, kl=lambda t: 0.0)
    info = prob.search(expected=1.0)
    assert not info.accepted
    assert len(prob.fractions) == 10
    prob.assert_restored()


def test_improvement_below_the_accept_ratio_is_rejected():
    # the real improvement is 0.3 × the predicted one at every α
    prob = Problem(objective=lambda t: 0.3 * t, kl=lambda t: 0.0)
    assert not prob.search(expected=1.0).accepted
    prob.assert_restored()
    prob = Problem(objective=lambda t: 0.3 * t, kl=lambda t: 0.0)
    info = prob.search(expected=1.0, accept_ratio=0.25)
    assert info.accepted and info.step_fraction == 1.0
    # the prediction shrinks with α: a concave objective passes once α is small enough
    prob = Problem(objective=lambda t: t - 0.9 * t * t, kl=lambda t: 0.0)
    info = prob.search(expected=1.0)
    assert info.accepted
    j = round(torch.log(torch.tensor(info.step_fraction)).item() / torch.log(torch.tensor(0.8)).item())
    # first α with 1 - 0.9 α ≥ 0.5, that is α ≤ 5/9
    assert 0.8**j <= 5 / 9 < 0.8 ** (j - 1)


def test_bounds_are_inclusive_and_improvement_must_be_positive():
    # KL exactly δ and improvement exactly accept_ratio × expected: accepted (≤ and ≥)
    prob = Problem(objective=lambda t: 0.5 * t, kl=lambda t: 0.25)
    info = prob.search(expected=1.0, max_kl=0.25)
    assert info.accepted and info.step_fraction == 1.0
    # zero improvement is never accepted, whatever the ratio test says
    prob = Problem(objective=lambda t: 0.0, kl=lambda t: 0.0)
    assert not prob.search(expected=-1.0, accept_ratio=0.0).accepted
    prob.assert_restored()
    # NaN in the evaluation rejects the candidate
    prob = Problem(objective=lambda t: float("nan") if t > 0.9 else t, kl=lambda t: 0.0)
    info = prob.search(expected=1.0)
    assert info.accepted and info.step_fraction == 0.8


def test_none_accepted_restores_parameters_bitwise_in_place():
    module = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    before = [p.detach().clone() for p in module.parameters()]
    storage = [p.data_ptr() for p in module.parameters()]
    n = sum(p.numel() for p in module.parameters())
    step = torch.randn(n, generator=torch.Generator().manual_seed(3)) * 0.123
    seen = []

    def evaluate():
        seen.append(torch.cat([p.detach().reshape(-1) for p in module.parameters()]))
        return torch.tensor(-1.0), torch.tensor(0.0)  # always worse

    info = backtracking_line_search(module, step, 1.0, evaluate, 0.0, max_kl=DELTA)
    assert not info.accepted
    assert all(torch.equal(p.detach(), b) for p, b in zip(module.parameters(), before))
    assert [p.data_ptr() for p in module.parameters()] == storage
    flat0 = torch.cat([b.reshape(-1) for b in before])
    assert len(seen) == 10
    for j, theta in enumerate(seen):  # every candidate is θ0 + α s from the saved θ0
        assert torch.equal(theta, flat0 + 0.8**j * step)


def test_bad_line_search_arguments():
    theta = nn.Parameter(torch.zeros(3))

    def evaluate():
        return torch.tensor(1.0), torch.tensor(0.0)

    with pytest.raises(ValueError, match="'max_kl'"):
        backtracking_line_search([theta], torch.ones(3), 1.0, evaluate, 0.0, max_kl=-0.01)
    with pytest.raises(ValueError, match="'full_step'"):
        backtracking_line_search([theta], torch.ones(4), 1.0, evaluate, 0.0, max_kl=0.01)
    with pytest.raises(TypeError, match="'full_step'"):
        backtracking_line_search([theta], torch.ones(3, dtype=torch.float64), 1.0, evaluate, 0.0,
                                 max_kl=0.01)
    with pytest.raises(TypeError, match="'evaluate'"):
        backtracking_line_search([theta], torch.ones(3), 1.0, None, 0.0, max_kl=0.01)
    with pytest.raises(ValueError, match="'backtrack_coef'"):
        backtracking_line_search([theta], torch.ones(3), 1.0, evaluate, 0.0, max_kl=0.01,
                                 backtrack_coef=1.0)
    with pytest.raises(ValueError, match="'max_backtracks'"):
        backtracking_line_search([theta], torch.ones(3), 1.0, evaluate, 0.0, max_kl=0.01,
                                 max_backtracks=0)
    with pytest.raises(TypeError, match="'params'"):
        backtracking_line_search("theta", torch.ones(3), 1.0, evaluate, 0.0, max_kl=0.01)
    assert torch.count_nonzero(theta) == 0


# -- trust_region_step on random problems -------------------------------------------------------------


def make_batch(head, dtype=torch.float64, n=256, obs_dim=6, hidden=(16, 16), activation="tanh",
               layer_norm=True, seed=0, with_factor=True, with_mask=True):
    gen = torch.Generator().manual_seed(seed)
    space = spaces.Box(-1, 1, (3,)) if head == "gaussian" else spaces.Discrete(6)
    torch.manual_seed(seed)
    policy = MLPPolicy(obs_dim, space, hidden=hidden, activation=activation,
                       layer_norm=layer_norm, input_norm=layer_norm, dtype=dtype)
    obs = torch.randn(n, obs_dim, generator=gen, dtype=dtype)
    action_mask = None
    if head == "categorical":
        action_mask = torch.rand(n, 6, generator=gen) < 0.6
        action_mask[torch.arange(n), torch.randint(0, 6, (n,), generator=gen)] = True
    actions, logp_old = policy.sample(obs, action_mask)
    advantages = torch.randn(n, generator=gen, dtype=dtype)
    factor = (0.5 + torch.rand(n, generator=gen, dtype=dtype)) if with_factor else None
    mask = (torch.rand(n, generator=gen) < 0.8) if with_mask else None
    return dict(policy=policy, obs=obs, actions=actions, logp_old=logp_old,
                advantages=advantages, factor=factor, mask=mask, action_mask=action_mask)


def surrogate_and_kl(batch, before, kl="exact", mask_kl=True):
    """L(θ) of the current policy and the mean KL from the policy ``before``, by hand."""
    policy = batch["policy"]
    with torch.no_grad():
        logp = policy.log_prob(batch["obs"], batch["actions"], batch["action_mask"])
        ratio = torch.exp(logp - batch["logp_old"])
        m = 1.0 if batch["factor"] is None else batch["factor"]
        w = torch.ones_like(ratio) if batch["mask"] is None else batch["mask"].to(ratio.dtype)
        surrogate = (w * ratio * m * batch["advantages"]).sum() / w.sum()
        old = before.distribution(batch["obs"], batch["action_mask"])
        new = policy.distribution(batch["obs"], batch["action_mask"])
        per_sample = reference.per_sample_kl(old, new, kl)
        kw = w if mask_kl else torch.ones_like(w)
        return surrogate, (kw * per_sample).sum() / kw.sum()


@pytest.mark.parametrize(
    "head,dtype,activation,layer_norm,seed",
    [
        ("gaussian", torch.float64, "tanh", True, 0),
        ("gaussian", torch.float32, "relu", False, 1),
        ("categorical", torch.float64, "relu", True, 2),
        ("categorical", torch.float32, "tanh", True, 3),
    ],
)
def test_step_respects_the_trust_region_and_improves(head, dtype, activation, layer_norm, seed):
    batch = make_batch(head, dtype, activation=activation, layer_norm=layer_norm, seed=seed)
    before = copy.deepcopy(batch["policy"])
    surrogate_before, _ = surrogate_and_kl(batch, before)
    info = trust_region_step(max_kl=DELTA, **batch)
    assert info.accepted
    surrogate_after, kl_after = surrogate_and_kl(batch, before)
    assert kl_after <= DELTA
    assert surrogate_after >= surrogate_before
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(info.kl, kl_after, **tol)
    torch.testing.assert_close(info.improvement, surrogate_after - surrogate_before, **tol)
    assert info.improvement >= 0.5 * info.step_fraction * info.expected_improvement > 0
    # a quadratic model near its trust-region boundary: the KL is of order δ, not much smaller
    assert kl_after > 0.1 * DELTA


@pytest.mark.parametrize("kl,mask_kl", [("harl", True), ("exact", False)])
def test_step_options_respect_their_own_constraint(kl, mask_kl):
    batch = make_batch("categorical", seed=4)
    before = copy.deepcopy(batch["policy"])
    info = trust_region_step(max_kl=DELTA, kl=kl, mask_kl=mask_kl, **batch)
    assert info.accepted
    _, kl_after = surrogate_and_kl(batch, before, kl=kl, mask_kl=mask_kl)
    assert kl_after <= DELTA
    torch.testing.assert_close(info.kl, kl_after, rtol=1e-10, atol=1e-14)


def test_step_direction_is_the_natural_gradient():
    """With CG run to convergence, θ_new − θ_old = α sqrt(2δ / gᵀA⁻¹g) A⁻¹g, A = H + damping I."""
    batch = make_batch("gaussian", n=64, obs_dim=3, hidden=(4,), seed=5)
    policy = batch["policy"]
    params = [p for p in policy.parameters()]
    theta_old = torch.cat([p.detach().reshape(-1) for p in params])
    logp = policy.log_prob(batch["obs"], batch["actions"])
    w = batch["mask"].double()
    surrogate = (w * torch.exp(logp - batch["logp_old"]) * batch["factor"] * batch["advantages"]).sum() / w.sum()
    g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(surrogate, params)])
    operator = FisherOperator(policy, batch["obs"], batch["mask"], 0.1)
    a = torch.stack([operator(e) for e in torch.eye(g.numel(), dtype=torch.float64)], dim=1)
    natural = torch.linalg.solve(a, g)
    full_step = torch.sqrt(2 * DELTA / torch.dot(g, natural)) * natural
    del operator
    info = trust_region_step(max_kl=DELTA, cg_iters=3 * g.numel(), residual_tol=1e-30, **batch)
    assert info.accepted
    theta_new = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close((theta_new - theta_old) / info.step_fraction, full_step,
                               rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(info.expected_improvement, torch.dot(g, full_step), rtol=1e-7,
                               atol=1e-12)


def test_reference_step_on_the_recomputed_operator_takes_the_same_step():
    """The benchmark's authors'-way baseline (graph rebuilt per product) is the same algorithm."""
    steps = []
    for operator in (reference_fvp.FisherOperator, reference_fvp.recomputed_fisher_operator):
        batch = make_batch("categorical", seed=7)
        info = reference.trust_region_step(max_kl=DELTA, operator=operator, **batch)
        assert info.accepted
        steps.append((info, torch.cat([p.detach().reshape(-1)
                                       for p in batch["policy"].parameters()])))
    (info, theta), (info_recomputed, theta_recomputed) = steps
    assert info_recomputed.step_fraction == info.step_fraction
    torch.testing.assert_close(theta_recomputed, theta, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(info_recomputed.kl, info.kl, rtol=1e-10, atol=1e-14)


def test_no_acceptable_step_leaves_the_policy_bitwise_unchanged():
    batch = make_batch("categorical", dtype=torch.float32, seed=6)
    before = [p.detach().clone() for p in batch["policy"].parameters()]
    # an unreachable acceptance ratio rejects every candidate
    info = trust_region_step(max_kl=DELTA, accept_ratio=1e6, max_backtracks=3, **batch)
    assert not info.accepted and info.step_fraction == 0.0
    assert all(torch.equal(p.detach(), b) for p, b in zip(batch["policy"].parameters(), before))
    # zero advantages: g = 0, no direction, no step
    batch["advantages"] = torch.zeros_like(batch["advantages"])
    info = trust_region_step(max_kl=DELTA, **batch)
    assert not info.accepted
    assert info.expected_improvement.item() == 0.0
    assert all(torch.equal(p.detach(), b) for p, b in zip(batch["policy"].parameters(), before))


def test_column_shaped_inputs_and_no_factor_or_mask():
    batch = make_batch("gaussian", seed=7, with_factor=False, with_mask=False)
    twin = copy.deepcopy(batch)
    info = trust_region_step(max_kl=DELTA, **batch)
    twin.update(logp_old=twin["logp_old"][:, None], advantages=twin["advantages"][:, None],
                factor=torch.ones_like(twin["advantages"])[:, None],
                mask=torch.ones_like(twin["advantages"], dtype=torch.bool)[:, None])
    info_twin = trust_region_step(max_kl=DELTA, **twin)
    assert info.accepted and info_twin.accepted and info.step_fraction == info_twin.step_fraction
    for p, q in zip(batch["policy"].parameters(), twin["policy"].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


# -- bad input -------------------------------------------------------------------------------------


def test_bad_trust_region_arguments_are_rejected_by_name():
    batch = make_batch("gaussian", n=32, seed=8)
    before = [p.detach().clone() for p in batch["policy"].parameters()]

    def call(**changes):
        args = dict(batch, max_kl=DELTA)
        args.update(changes)
        return trust_region_step(**args)

    with pytest.raises(ValueError, match="'max_kl'"):
        call(max_kl=-0.01)
    with pytest.raises(ValueError, match="'max_kl'"):
        call(max_kl=0.0)
    nan_adv = batch["advantages"].clone()
    nan_adv[5] = float("nan")
    with pytest.raises(ValueError, match="'advantages'"):
        call(advantages=nan_adv)
    with pytest.raises(ValueError, match="'logp_old'"):
        call(logp_old=batch["logp_old"][:-1])
    with pytest.raises(TypeError, match="'advantages'"):
        call(advantages=batch["advantages"].float())
    with pytest.raises(ValueError, match="'actions'"):
        call(actions=batch["actions"][:-1])
    with pytest.raises(ValueError, match="'mask'"):
        call(mask=torch.ones(31, dtype=torch.bool))
    with pytest.raises(ValueError, match="'factor'"):
        call(factor=torch.ones(32, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="'backtrack_coef'"):
        call(backtrack_coef=1.5)
    with pytest.raises(ValueError, match="'max_backtracks'"):
        call(max_backtracks=0)
    with pytest.raises(ValueError, match="'cg_iters'"):
        call(cg_iters=0)
    with pytest.raises(ValueError, match="'damping'"):
        call(damping=-1.0)
    with pytest.raises(ValueError, match="'kl'"):
        call(kl="forward")
    with pytest.raises(TypeError, match="'policy'"):
        call(policy=nn.Linear(6, 3).double())
    with pytest.raises(TypeError, match="'obs'"):
        call(obs=batch["obs"].float())
    assert all(torch.equal(p.detach(), b) for p, b in zip(batch["policy"].parameters(), before))


# -- devices ------------------------------------------------------------------------------------


def test_step_on_each_device_matches_the_cpu_step(device):
    cpu = make_batch("categorical", n=128, seed=9)
    moved = {k: (v.to(device) if v is not None else None) for k, v in copy.deepcopy(cpu).items()}
    before = copy.deepcopy(cpu["policy"])
    info_cpu = trust_region_step(max_kl=DELTA, **cpu)
    info = trust_region_step(max_kl=DELTA, **moved)
    assert info.accepted and info.step_fraction == info_cpu.step_fraction
    assert info.kl.device.type == device.type and info.kl <= DELTA
    torch.testing.assert_close(info.kl.cpu(), info_cpu.kl, rtol=1e-8, atol=1e-12)
    for p, q in zip(moved["policy"].parameters(), cpu["policy"].parameters()):
        torch.testing.assert_close(p.cpu(), q, rtol=1e-8, atol=1e-10)
    _, kl_after = surrogate_and_kl(cpu, before)
    assert kl_after <= DELTA


# -- native and reference steps ---------------------------------------------------------------------


@pytest.mark.parametrize("head", ["gaussian", "categorical"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_native_and_reference_steps_accept_the_same_fraction(head, seed):
    """On random data the full step lands within a few percent of δ, so the two implementations
    must agree closely enough to take the same backtracking decision and the same parameters."""
    from haml.ops import _backend

    if not _backend.has_native_class("FisherOperator"):
        pytest.skip("the native FisherOperator is not built or not in use")
    gen = torch.Generator().manual_seed(seed)
    n, obs_dim = 300, 11
    space = spaces.Box(-1, 1, (3,)) if head == "gaussian" else spaces.Discrete(6)
    policy = MLPPolicy(obs_dim, space, hidden=(32, 32), activation="relu", layer_norm=True,
                       input_norm=True, dtype=torch.float64)
    obs = torch.randn(n, obs_dim, generator=gen, dtype=torch.float64)
    action_mask = None
    if head == "categorical":
        action_mask = torch.rand(n, 6, generator=gen) < 0.7
        action_mask[:, 0] = True
    with torch.no_grad():
        actions, logp_old = policy.sample(obs, action_mask)
    advantages = torch.randn(n, generator=gen, dtype=torch.float64)
    factor = 0.5 + torch.rand(n, generator=gen, dtype=torch.float64)
    mask = torch.rand(n, generator=gen) < 0.9
    twin = copy.deepcopy(policy)
    args = (obs, actions, logp_old, advantages, factor, mask, DELTA)
    native = trust_region_step(policy, *args, action_mask=action_mask)
    ref = reference.trust_region_step(twin, *args, action_mask=action_mask)
    assert native.accepted == ref.accepted
    assert native.step_fraction == ref.step_fraction
    torch.testing.assert_close(native.kl, ref.kl, rtol=1e-7, atol=1e-12)
    for p, q in zip(policy.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-7, atol=1e-10)


# -- the ops' rules: weight-0 samples, errors by name ----------------------------------------------


@pytest.mark.parametrize("head", ["gaussian", "categorical"])
@pytest.mark.parametrize("mask_kl", [True, False])
def test_non_finite_inputs_of_weight_0_samples_take_no_part(head, mask_kl):
    """NaN/inf in the observations, actions, logp_old, advantages and factor of masked-out
    samples: the same step as with finite values there (native and reference operators)."""
    clean = make_batch(head, n=64, seed=21, layer_norm=False)
    out = torch.nonzero(~clean["mask"]).flatten()[:3]
    assert len(out) == 3
    dirty = dict(clean, obs=clean["obs"].clone(), logp_old=clean["logp_old"].clone(),
                 advantages=clean["advantages"].clone(), factor=clean["factor"].clone())
    dirty["obs"][out[0]] = float("nan")
    dirty["obs"][out[1], 0] = float("inf")
    dirty["logp_old"][out[1]] = float("-inf")
    dirty["advantages"][out[2]] = float("nan")
    dirty["factor"][out[0]] = float("inf")
    if head == "gaussian":
        dirty["actions"] = clean["actions"].clone()
        dirty["actions"][out[2]] = float("nan")
    if not mask_kl:  # the KL then averages over every sample: non-finite entries read as 0
        zeroed = dict(clean, obs=clean["obs"].clone())
        zeroed["obs"][out[0]] = 0.0
        zeroed["obs"][out[1], 0] = 0.0
        clean = zeroed
    for step in (trust_region_step,
                 lambda **kw: reference.trust_region_step(**kw, operator=reference_fvp.FisherOperator)):
        results = []
        for batch in (clean, dirty):
            policy = copy.deepcopy(clean["policy"])
            info = step(**dict(batch, policy=policy), max_kl=DELTA, mask_kl=mask_kl)
            results.append((info, torch.cat([p.detach().flatten() for p in policy.parameters()])))
        (info_c, theta_c), (info_d, theta_d) = results
        assert info_d.accepted == info_c.accepted and info_d.step_fraction == info_c.step_fraction
        assert torch.isfinite(theta_d).all()
        torch.testing.assert_close(theta_d, theta_c, rtol=1e-9, atol=1e-12)


def test_nan_advantage_of_an_active_sample_is_still_refused():
    batch = make_batch("gaussian", n=32, seed=8)
    active = int(torch.nonzero(batch["mask"])[0])
    nan_adv = batch["advantages"].clone()
    nan_adv[active] = float("nan")
    with pytest.raises(ValueError, match="'advantages'"):
        trust_region_step(**dict(batch, advantages=nan_adv), max_kl=DELTA)


def test_actions_and_action_mask_that_do_not_fit_the_policy_are_rejected_by_name():
    gaussian = make_batch("gaussian", n=32, seed=8)
    categorical = make_batch("categorical", n=32, seed=8)
    before = [p.detach().clone() for b in (gaussian, categorical) for p in b["policy"].parameters()]

    def call(batch, **changes):
        return trust_region_step(**dict(batch, max_kl=DELTA) | changes)

    with pytest.raises(ValueError, match="'actions'"):
        call(gaussian, actions=gaussian["actions"][:, :2])
    with pytest.raises(ValueError, match="'actions'"):
        call(gaussian, actions=gaussian["actions"][:, :1].squeeze(1))
    with pytest.raises(TypeError, match="'actions'"):
        call(gaussian, actions=gaussian["actions"].long())
    with pytest.raises(ValueError, match="'obs'"):
        call(gaussian, obs=gaussian["obs"][:, :5])
    with pytest.raises(ValueError, match="'action_mask'"):
        call(gaussian, action_mask=torch.ones(32, 3, dtype=torch.bool))
    bad = categorical["actions"].clone()
    bad[4] = 6
    with pytest.raises(ValueError, match="'actions'"):
        call(categorical, actions=bad)
    bad[4] = -1
    with pytest.raises(ValueError, match="'actions'"):
        call(categorical, actions=bad)
    with pytest.raises(TypeError, match="'actions'"):
        call(categorical, actions=categorical["actions"].double())
    with pytest.raises(ValueError, match="'actions'"):
        call(categorical, actions=categorical["actions"][:, None].expand(32, 2))
    with pytest.raises(ValueError, match="'action_mask'"):
        call(categorical, action_mask=categorical["action_mask"][:, :5])
    with pytest.raises(TypeError, match="'action_mask'"):
        call(categorical, action_mask=categorical["action_mask"].long())
    after = [p.detach() for b in (gaussian, categorical) for p in b["policy"].parameters()]
    assert all(torch.equal(a, b) for a, b in zip(after, before))
