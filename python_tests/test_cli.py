"""The ``haml`` command, called in-process through :func:`haml.cli.main`."""

from __future__ import annotations

import json

import pytest
import torch

from haml import bench, cli
from haml.ops import _backend


def test_info_names_every_op_and_the_backend(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out
    for kernel, public, native_op in (
        ("gae", "gae", "gae"),
        ("clip_surrogate", "clipped_surrogate", "clip_surrogate_fwd"),
    ):
        line = next(line for line in out.splitlines() if line.strip().startswith(kernel + " "))
        assert public in line and native_op in line
        cpu = "native" if _backend.has_native(native_op, "cpu") else "reference"
        assert line.split()[-2] == cpu
    assert f"HAML_BACKEND: {_backend.REQUESTED}" in out
    assert f"backend(cpu): {_backend.backend('cpu')}" in out
    if _backend.BUILD_INFO is None:
        assert _backend.UNAVAILABLE_REASON in out
    else:
        assert "haml._C: loaded" in out


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
