"""Pinned results: two short real runs must end with the very parameters they ended with when pinned.

A refactor of the runner, the registry, the model builders or the env adapters must not move the
on-policy results. Each case trains from a fixed seed on the CPU with one torch thread and compares
a SHA-256 of every policy and critic parameter (their bytes, in build order) against the value
recorded here. Where torch's CPU kernels or haml's differ from the pinning machine's
(``torch.backends.cpu.get_cpu_capability()``, ``haml.ops.cpu_isa()``), bitwise equality is not
promised: the test then compares each module's parameter sum to ``rtol = 1e-4`` instead.

To re-pin after a change that is meant to move results, run this file with ``HAML_PRINT_PINS=1``
and copy what it prints (and say why in the commit).
"""

from __future__ import annotations

import hashlib
import math
import os

import pytest
import torch

import haml
import haml.ops

PIN_CAPABILITY = "AVX2"
"""``torch.backends.cpu.get_cpu_capability()`` on the machine the pins were taken on."""
PIN_ISA = "x86-64-v3"
"""``haml.ops.cpu_isa()``, the instruction-set level of haml's CPU kernels, there."""

CASES = {
    "happo-halfcheetah-2x3": dict(
        algo="happo", env="mamujoco", task="HalfCheetah-2x3", tuned=True, steps=200,
        overrides=[
            "train.num_envs=2", "train.rollout_length=50", "train.torch_threads=1",
            "eval.every=0", "env.options.vectorization=sync",
        ],
        package="gymnasium_robotics",
    ),
    "hatrpo-smax-3m": dict(
        algo="hatrpo", env="smax", task="3m", tuned=False, steps=128,
        overrides=[
            "train.num_envs=2", "train.rollout_length=32", "train.torch_threads=1",
            "eval.every=0",
        ],
        package="jaxmarl",
    ),
}

PINS: dict[str, tuple[str, list[float]]] = {
    "happo-halfcheetah-2x3": (
        "0ce9df8ec16a1fe5b1da93253ace0f8d51c5fec06ab32a1040a4102410ae99a9",
        [439.0470222892109, 340.7809540329936, 372.6715466332462],
    ),
    "hatrpo-smax-3m": (
        "4360e55dbb6bc61b2182e81c32f7ef5629cefda974c917c9fde312e1b31eba95",
        [145.27937282556923, 133.62763839598483, 144.47615019234127, 172.4486661789997],
    ),
}
"""case → (SHA-256 of the parameters' bytes, each module's parameter sum)."""


def _trained_modules(case: dict, out) -> list[torch.nn.Module]:
    """Train the case, then rebuild its policies and critics from the last checkpoint."""
    from haml.utils.checkpoint import latest_checkpoint, load_checkpoint

    threads = torch.get_num_threads()
    try:
        result = haml.train(
            case["algo"], case["env"], case["task"], steps=case["steps"], seed=3, out=out,
            tuned=case["tuned"], overrides=case["overrides"], quiet=True,
        )
    finally:
        torch.set_num_threads(threads)
    state = load_checkpoint(latest_checkpoint(result.run_dir))["runner"]
    return [*state["policies"], *(c["critic"] for c in state["critics"])]


def _fingerprint(state_dicts: list[dict[str, torch.Tensor]]) -> tuple[str, list[float]]:
    digest = hashlib.sha256()
    sums = []
    for state in state_dicts:
        total = 0.0
        for name in sorted(state):
            tensor = state[name].detach().cpu().contiguous()
            digest.update(name.encode())
            digest.update(tensor.numpy().tobytes())
            if tensor.is_floating_point():
                total += float(tensor.double().sum())
        sums.append(total)
    return digest.hexdigest(), sums


@pytest.mark.parametrize("name", sorted(CASES))
def test_short_run_ends_with_the_pinned_parameters(name, tmp_path):
    case = CASES[name]
    pytest.importorskip(case["package"])
    digest, sums = _fingerprint(_trained_modules(case, tmp_path))
    if os.environ.get("HAML_PRINT_PINS") == "1":
        print(f"\n    {name!r}: ({digest!r}, {sums!r}),")
    pinned_digest, pinned_sums = PINS[name]
    if (torch.backends.cpu.get_cpu_capability(), haml.ops.cpu_isa()) == (PIN_CAPABILITY, PIN_ISA):
        assert digest == pinned_digest, f"{name}: parameters moved (sums {sums} vs {pinned_sums})"
    else:
        assert len(sums) == len(pinned_sums)
        for got, want in zip(sums, pinned_sums):
            assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6), (sums, pinned_sums)
