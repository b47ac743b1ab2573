"""The ``haml`` command, called in-process through :func:`haml.cli.main`."""

from __future__ import annotations

import importlib
import json
import re
import warnings

import pytest
import torch

from haml import bench, cli
from haml.ops import _backend


def _info_rows(capsys) -> dict[str, list[str]]:
    """`haml info`'s op table: kernel -> [public names, native implementation, cpu, cuda]."""
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ops (")) + 2
    rows = {}
    for line in lines[start:]:
        if not line.startswith("  ") or line.startswith("  ["):
            break
        cells = [cell.strip() for cell in re.split(r"\s{2,}", line.strip())]
        rows[cells[0]] = cells[1:]
    return rows


def test_info_names_every_op_and_the_backend(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out
    rows = _info_rows(capsys)
    assert set(rows) == {"gae", "clip_surrogate", "fvp", "layer_norm", "line_search",
                         "value_gradient"}
    for kernel, public, native in (
        ("gae", "gae", "torch.ops.haml.gae"),
        ("clip_surrogate", "clipped_surrogate", "torch.ops.haml.clip_surrogate_fwd"),
        ("fvp", "FisherOperator", "torch.classes.haml.FisherOperator"),
        ("layer_norm", "layer_norm", "torch.ops.haml.layer_norm_fwd"),
        ("line_search", "trust_region_step", "torch.classes.haml.FisherOperator"),
        ("value_gradient", "value_loss_gradient", "torch.classes.haml.FisherOperator"),
    ):
        assert public in rows[kernel][0] and rows[kernel][1] == native
    assert f"HAML_BACKEND: {_backend.REQUESTED}" in out
    assert f"backend(cpu): {_backend.backend('cpu')}" in out
    if _backend.BUILD_INFO is None:
        assert _backend.UNAVAILABLE_REASON in out
    else:
        assert "haml._C: loaded" in out


class _Sentinel(Exception):
    pass


def _raise(*args, **kwargs):
    raise _Sentinel


def test_info_says_what_dispatch_runs(capsys, monkeypatch):
    """Each op's cpu cell in `haml info` against what the op's call actually runs."""
    from gymnasium import spaces
    from torch import nn

    from haml.models import MLPPolicy
    from haml.ops import FisherOperator, clipped_surrogate, gae, layer_norm, trust_region_step

    # The packages (haml.ops re-exports functions of the same names).
    gae_package, clip_package, line_search_package, layer_norm_package = (
        importlib.import_module(f"haml.ops.{name}")
        for name in ("gae", "clip_surrogate", "line_search", "layer_norm")
    )
    rows = _info_rows(capsys)
    says_native = {kernel: row[2].startswith("native") for kernel, row in rows.items()}

    # gae, the clipped surrogate and layer_norm: native means the reference (PyTorch's own kernel
    # for layer_norm) is never called.
    monkeypatch.setattr(gae_package.reference, "gae", _raise)
    monkeypatch.setattr(clip_package.reference, "clipped_surrogate", _raise)
    monkeypatch.setattr(layer_norm_package.torch.nn.functional, "layer_norm", _raise)
    x = torch.randn(5, 3)
    flags = torch.zeros(5, 3, dtype=torch.bool)
    logp = torch.randn(5, 3, requires_grad=True)
    for kernel, call in (
        ("gae", lambda: gae(x, x, x, flags, flags, gamma=0.99, lam=0.95)),
        ("clip_surrogate", lambda: clipped_surrogate(logp, logp.detach(), x, clip=0.2)),
        ("layer_norm", lambda: layer_norm(x, x[0], x[0])),
    ):
        try:
            call()
            ran_native = True
        except _Sentinel:
            ran_native = False
        assert ran_native == says_native[kernel], kernel
    monkeypatch.undo()

    # The Fisher operator: native for an MLPPolicy (as the note says), the reference for others.
    obs = torch.randn(16, 3)
    mlp = MLPPolicy(3, spaces.Box(-1, 1, (2,)), hidden=(8,))
    assert (FisherOperator(mlp, obs).backend == "native") == says_native["fvp"]
    if says_native["fvp"]:
        note = _info_text(capsys).split("[1] native for:")[1]
        assert "MLPPolicy" in note and "other policies" in note and "reference" in note

    class OtherPolicy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(3, 2)

        def distribution(self, obs, action_mask=None):
            return torch.distributions.Normal(self.net(obs), 1.0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the fallback's one warning
        assert FisherOperator(OtherPolicy(), obs).backend == "reference"

    # trust_region_step builds its operators through haml.ops.FisherOperator: the same choice.
    backends = []

    class Spy(FisherOperator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            backends.append(self.backend)

    monkeypatch.setattr(line_search_package, "FisherOperator", Spy)
    with torch.no_grad():
        actions = mlp.distribution(obs).sample()
        logp_old = mlp.distribution(obs).log_prob(actions).sum(-1)
    trust_region_step(mlp, obs, actions, logp_old, torch.randn(16), None, None, max_kl=0.01)
    assert backends and all((b == "native") == says_native["line_search"] for b in backends)

    # The value gradient: native (the reference never called) for a VCritic, as the row says.
    from haml.models.value import VCritic
    from haml.ops import value_gradient

    monkeypatch.setattr(value_gradient.reference, "value_loss_gradient", _raise)
    try:
        value_gradient.value_loss_gradient(VCritic(3, (8,)), obs, lambda v: v.square().mean())
        ran_native = True
    except _Sentinel:
        ran_native = False
    assert ran_native == says_native["value_gradient"]


def _info_text(capsys) -> str:
    assert cli.main(["info"]) == 0
    return capsys.readouterr().out


def test_unknown_subcommand_exits_2_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'frobnicate'" in err and "info" in err and "bench" in err


def test_bench_needs_a_benchmark_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench"])
    assert exit_info.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
@pytest.mark.parametrize("entry", ["haml", "python -m haml.bench"])
def test_device_cuda_without_cuda_exits_2(entry, capsys):
    argv = ["--device", "cuda", "--quick"]
    with pytest.raises(SystemExit) as exit_info:
        if entry == "haml":
            cli.main(["bench", "ops", *argv])
        else:
            bench.main(["ops", *argv])
    assert exit_info.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_bad_ops_filter_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "ops", "--ops", "gae,nope", "--quick"])
    assert exit_info.value.code == 2
    assert "choose from gae, clip_surrogate" in capsys.readouterr().err


def test_bench_ops_through_the_cli(tmp_path, capsys):
    out = tmp_path / "ops.json"
    assert cli.main(["bench", "ops", "--quick", "--no-compile", "--ops", "gae", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert [case["op"] for case in document["cases"]] == ["gae"]
    captured = capsys.readouterr()
    assert "ref/native" in captured.out
    assert "[1/1] gae T=200, B=20 cpu" in captured.err
