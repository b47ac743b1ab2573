"""The cases of HATRPO's trust-region kernels in ``haml bench ops``: the Fisher-vector product and
the whole ``trust_region_step``, native against the references, at the papers' sizes.

For each policy shape, the ``fvp`` rows time one product (H + 0.1·I)v of the native operator
(``haml.ops.FisherOperator`` on an ``MLPPolicy``) against:

- ``fvp``: double backward with the first-order graph built once (the library's reference), with
  one forward+backward of the policy on the same batch as the floor column (for scale);
- ``fvp[recomputed]``: double backward with the KL and its gradient rebuilt for every product (the
  authors' implementation's way);
- ``fvp[torch.func]``: the Gauss–Newton form with ``torch.func`` jvp + vjp.

The ``line_search`` rows time one whole ``trust_region_step`` (gradient, 10 CG iterations, step
size, line search), each starting from the same parameters, native against:

- ``trust_region_step``: the library's reference step (:mod:`haml.ops.line_search.reference`: the
  double-backward operator built once per step, candidates tried one by one with early exit);
- ``trust_region_step[recomputed]``: the same reference step on the operator that rebuilds the
  double-backward graph for every product (the authors' implementation's way, as
  ``fvp[recomputed]``).

In the ``fvp`` rows operators are built outside the timed call, as the ~11 products of a step
share one; the ``line_search`` rows time everything a step does.

The ``value_gradient`` rows time one critic step's gradient (the clipped Huber loss of a
``VCritic`` on N = 4000 inputs) through :func:`haml.ops.value_loss_gradient`, whose native form
is the same class with a linear head, against autograd through the network (its reference).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import torch

from haml.bench.ops import (
    Callables,
    Case,
    Options,
    Target,
    _generator,
    _native_skip,
    compile_skip_reason,
)

__all__ = ["CRITICS", "POLICIES", "fvp_cases", "trust_region_cases", "value_gradient_cases"]

# (name, obs_dim, hidden, n_actions, head, N): MaMuJoCo-like Gaussian policies (obs 17-113,
# actions 3-8; HARL's tuned 3x128 with LayerNorm, and the papers' 2x64), and SMAC-like categorical
# ones (N=3200 = 20 envs x 160 steps, 10-20 actions).
POLICIES = (
    ("halfcheetah 2x64", 17, (64, 64), 6, "gaussian", 4000),
    ("ant 3x128 LN", 113, (128, 128, 128), 8, "gaussian", 4000),
    ("smac 2x64", 80, (64, 64), 10, "categorical", 3200),
    ("smac 3x128 LN", 150, (128, 128, 128), 20, "categorical", 3200),
)
FVP_TARGETS = {
    "fvp": (Target("reference/native", ">=", 1.5), Target("native/floor", "<=", 1.5)),
    "fvp[recomputed]": (Target("reference/native", ">=", 4.0),),
}
STEP_TARGETS = (Target("reference/native", ">=", 3.0),)
MAX_KL, DAMPING = 0.01, 0.1


def _problem(spec, device: torch.device):
    from gymnasium import spaces

    from haml.models import MLPPolicy

    name, obs_dim, hidden, n_actions, head, n = spec
    torch.manual_seed(obs_dim)  # the policy's initial weights
    space = spaces.Box(-1, 1, (n_actions,)) if head == "gaussian" else spaces.Discrete(n_actions)
    layer_norm = "LN" in name
    policy = MLPPolicy(obs_dim, space, hidden=hidden, activation="relu", layer_norm=layer_norm,
                       input_norm=layer_norm, device=device)
    gen = _generator(obs_dim * 7 + n)
    obs = torch.randn(n, obs_dim, generator=gen).to(device)
    action_mask = None
    if head == "categorical":
        action_mask = torch.rand(n, n_actions, generator=gen) < 0.8
        action_mask[:, 0] = True
        action_mask = action_mask.to(device)
    return policy, obs, action_mask


def _shape(spec) -> dict[str, int | str]:
    name, obs_dim, hidden, n_actions, head, n = spec
    return {"policy": name, "N": n, "obs": obs_dim, "actions": n_actions}


def fvp_cases(device: torch.device, options: Options) -> list[Case]:
    from haml.ops import fvp
    from haml.ops.fvp import reference

    policies = POLICIES[:1] if options.quick else POLICIES
    native_skip = _native_skip("FisherOperator", device)
    variants: dict[str, Callable] = {
        "fvp": lambda p, o, a: reference.FisherOperator(p, o, None, DAMPING, a),
        "fvp[recomputed]": lambda p, o, a: reference.recomputed_fisher_operator(p, o, None, DAMPING, a),
        "fvp[torch.func]": lambda p, o, a: reference.GaussNewtonFisherOperator(p, o, None, DAMPING, a),
    }
    cases = []
    for spec in policies:
        for op, make_reference in variants.items():

            def build(spec=spec, op=op, make_reference=make_reference) -> Callables:
                policy, obs, action_mask = _problem(spec, device)
                params = [p for p in policy.parameters() if p.requires_grad]
                v = torch.randn(sum(p.numel() for p in params), generator=_generator(1)).to(device)
                reference_op = make_reference(policy, obs, action_mask)
                native_op = fvp.FisherOperator(policy, obs, None, DAMPING, action_mask)
                floor = None
                if op == "fvp":
                    with torch.no_grad():
                        actions, _ = policy.sample(obs, action_mask)

                    def forward_backward() -> object:
                        loss = policy.log_prob(obs, actions, action_mask).mean()
                        return torch.autograd.grad(loss, params)

                    floor = forward_backward
                return Callables(
                    reference=lambda: reference_op(v),
                    native=None if native_skip else (lambda: native_op(v)),
                    floor=floor,
                )

            cases.append(
                Case(
                    op=op,
                    shape=_shape(spec),
                    device=device,
                    build=build,
                    native_op="FisherOperator",
                    compile_skip=compile_skip_reason(
                        options, "not compiled: torch.compile does not trace the double backward"
                    ),
                    floor="one forward+backward of the policy's log-likelihood" if op == "fvp" else None,
                    targets=FVP_TARGETS.get(op, ()),
                )
            )
    return cases


def trust_region_cases(device: torch.device, options: Options) -> list[Case]:
    import haml.ops
    from haml.ops.fvp.reference import (
        assign_flat_parameters_,
        flat_parameters,
        recomputed_fisher_operator,
    )
    from haml.ops.line_search import reference

    policies = POLICIES[:1] if options.quick else POLICIES
    native_skip = _native_skip("FisherOperator", device)
    variants: dict[str, Callable] = {
        "trust_region_step": reference.trust_region_step,
        "trust_region_step[recomputed]": functools.partial(
            reference.trust_region_step, operator=recomputed_fisher_operator
        ),
    }
    cases = []
    for spec, (op, reference_step) in itertools.product(policies, variants.items()):

        def build(spec=spec, reference_step=reference_step) -> Callables:
            policy, obs, action_mask = _problem(spec, device)
            params = [p for p in policy.parameters() if p.requires_grad]
            theta0 = flat_parameters(params)
            gen = _generator(2)
            with torch.no_grad():
                actions, logp_old = policy.sample(obs, action_mask)
            n = obs.shape[0]
            advantages = torch.randn(n, generator=gen).to(device)
            factor = torch.exp(0.1 * torch.randn(n, generator=gen)).to(device)
            mask = (torch.rand(n, generator=gen) < 0.95).to(device)
            args = (obs, actions, logp_old, advantages, factor, mask, MAX_KL)

            def step(fn: Callable) -> Callable[[], object]:
                def run() -> object:
                    assign_flat_parameters_(params, theta0)  # every call steps from θk
                    return fn(policy, *args, action_mask=action_mask)

                return run

            return Callables(
                reference=step(reference_step),
                native=None if native_skip else step(haml.ops.trust_region_step),
            )

        cases.append(
            Case(
                op=op,
                shape=_shape(spec),
                device=device,
                build=build,
                native_op="FisherOperator",
                compile_skip=compile_skip_reason(
                    options, "not compiled: the line search's accept decisions are data-dependent"
                ),
                targets=STEP_TARGETS,
            )
        )
    return cases


# (name, input size, hidden, N): the tuned MaMuJoCo critics (a state of 17 or 113 features), and
# the papers' default [64].
CRITICS = (
    ("halfcheetah 3x128 LN", 17, (128, 128, 128), 4000),
    ("ant 3x128 LN", 113, (128, 128, 128), 4000),
    ("default 1x64 LN", 17, (64,), 4000),
)


def value_gradient_cases(device: torch.device, options: Options) -> list[Case]:
    """One critic step's gradient (:func:`haml.ops.value_loss_gradient`, the clipped Huber loss of
    :mod:`haml.algorithms.critics`) against autograd through the network (its reference)."""
    from haml.algorithms.critics import clipped_value_loss
    from haml.models.value import VCritic
    from haml.ops import value_gradient
    from haml.ops.value_gradient import reference

    native_skip = _native_skip("FisherOperator", device)
    cases = []
    for name, in_dim, hidden, n in CRITICS[:1] if options.quick else CRITICS:

        def build(in_dim=in_dim, hidden=hidden, n=n) -> Callables:
            torch.manual_seed(in_dim)
            critic = VCritic(in_dim, hidden, "relu", layer_norm=True, input_norm=True).to(device)
            gen = _generator(in_dim + n)
            inputs = torch.randn(n, in_dim, generator=gen).to(device)
            target = torch.randn(n, generator=gen).to(device)
            with torch.no_grad():
                old = critic(inputs)

            loss = functools.partial(clipped_value_loss, target=target, old=old, value_clip=0.2,
                                     huber_delta=10.0)

            return Callables(
                reference=lambda: reference.value_loss_gradient(critic, inputs, loss),
                native=None if native_skip else (
                    lambda: value_gradient.value_loss_gradient(critic, inputs, loss)
                ),
            )

        cases.append(Case(
            op="value_gradient",
            shape={"critic": name, "N": n, "inputs": in_dim},
            device=device,
            build=build,
            native_op="FisherOperator",
            compile_skip=compile_skip_reason(options, "not compiled: the reference is autograd itself"),
        ))
    return cases
