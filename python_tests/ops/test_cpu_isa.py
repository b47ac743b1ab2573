"""The run-time choice of instruction set for the native CPU kernels (csrc/include/haml/cpu_isa.h).

The per-kernel parity tests (test_gae, test_clip_surrogate, test_fvp) run at every level this CPU
supports through the ``each_cpu_isa`` fixture; this file tests the choice itself, and the kernels
at each level on shapes wide enough that the vector loops, not only their scalar tails, run.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from gymnasium import spaces

import haml.ops
from haml.models import MLPPolicy
from haml.ops import CPU_ISAS, cpu_isa, gae, set_cpu_isa, supported_cpu_isas
from haml.ops.fvp import FisherOperator
from haml.ops.fvp import reference as fvp_reference
from haml.ops.gae import reference as gae_reference


def _require_extension():
    if haml.ops.BUILD_INFO is None:
        pytest.skip("the native extension is not built or not in use")


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_levels_are_reported_in_order():
    _require_extension()
    supported = supported_cpu_isas()
    assert supported[0] == "baseline"
    assert list(supported) == [level for level in CPU_ISAS if level in supported]
    assert set(supported) <= set(haml.ops.BUILD_INFO["cpu_isas"])
    # By default the kernels run at the highest level the CPU supports.
    assert cpu_isa() == supported[-1]


def test_set_cpu_isa_switches_and_refuses_what_cannot_run(each_cpu_isa):
    _require_extension()
    assert cpu_isa() == each_cpu_isa
    with pytest.raises(ValueError, match="unknown CPU instruction-set level 'avx9'.*baseline"):
        set_cpu_isa("avx9")
    unsupported = [level for level in CPU_ISAS if level not in supported_cpu_isas()]
    for level in unsupported:
        with pytest.raises(ValueError, match=f"cannot run the '{level}' kernels; it runs: baseline"):
            set_cpu_isa(level)
    assert cpu_isa() == each_cpu_isa  # a refused change leaves the level as it was


def test_environment_variable_caps_the_level_and_rejects_bad_values():
    _require_extension()
    capped = _python("import haml.ops; print(haml.ops.cpu_isa())", HAML_CPU_ISA="baseline")
    assert capped.returncode == 0, capped.stderr
    assert capped.stdout.strip() == "baseline"
    # A cap above what the CPU runs leaves the highest supported level.
    above = _python("import haml.ops; print(haml.ops.cpu_isa())", HAML_CPU_ISA="x86-64-v4")
    assert above.stdout.strip() == supported_cpu_isas()[-1]
    bad = _python("import haml.ops", HAML_CPU_ISA="sse9")
    assert bad.returncode != 0
    assert "HAML_CPU_ISA='sse9' is not one of baseline, x86-64-v3, x86-64-v4" in bad.stderr


def test_haml_info_names_the_level():
    _require_extension()
    out = _python("from haml.cli import info; info()", HAML_CPU_ISA="baseline")
    assert out.returncode == 0, out.stderr
    assert "CPU kernels run at: baseline (this CPU runs: " in out.stdout


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gae_on_wide_batches_matches_reference(dtype, each_cpu_isa):
    # 1000 columns: full vectors of every width, tiles of 512 and a ragged last tile.
    gen = torch.Generator().manual_seed(7)
    T, B = 37, 1000
    rewards = torch.randn(T, B, generator=gen, dtype=dtype)
    values = torch.randn(T, B, generator=gen, dtype=dtype)
    next_values = torch.randn(T, B, generator=gen, dtype=dtype)
    terminated = torch.rand(T, B, generator=gen) < 0.05
    truncated = torch.rand(T, B, generator=gen) < 0.05
    args = (rewards, values, next_values, terminated, truncated)
    got = gae(*args, gamma=0.99, lam=0.95)
    want = gae_reference.gae(*args, gamma=0.99, lam=0.95)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("head", ["gaussian", "categorical"])
def test_fisher_product_of_a_wide_policy_matches_double_backward(head, dtype, each_cpu_isa):
    if not haml.ops._backend.has_native_class("FisherOperator"):
        pytest.skip("the native FisherOperator is not built or not in use")
    gen = torch.Generator().manual_seed(11)
    space = spaces.Box(-1, 1, (6,)) if head == "gaussian" else spaces.Discrete(11)
    # Widths that are not multiples of any vector width, LayerNorm on, 300 samples.
    policy = MLPPolicy(17, space, hidden=(67, 129), activation="tanh", layer_norm=True,
                       input_norm=True).to(dtype)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=dtype))
    obs = torch.randn(300, 17, generator=gen, dtype=dtype)
    mask = (torch.rand(300, generator=gen) < 0.8).to(dtype)
    native = FisherOperator(policy, obs, mask, 0.1)
    assert native.backend == "native"
    oracle = fvp_reference.FisherOperator(policy, obs, mask, 0.1)
    v = torch.randn(sum(p.numel() for p in policy.parameters()), generator=gen, dtype=dtype)
    got, want = native(v), oracle(v)
    bound = 1e-10 if dtype == torch.float64 else 1e-5
    assert ((got - want).norm() / want.norm()).item() <= bound
