"""Backend selection: HAML_BACKEND, a missing or mismatched haml._C, and build info.

The backend is chosen once, at import, from the environment and from whether ``haml._C`` loads,
so each scenario runs in a fresh interpreter (``sys.executable -c ...``). The child saves what it
computed with ``torch.save``; the parent compares it with the native results computed here, so the
fallback is checked against the kernels and not only against itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import haml
import haml.ops
from haml.ops import _backend

# Makes ``import haml._C`` fail as it does when the extension was never built. Installed before
# haml is imported; haml itself must still import.
_HIDE_EXTENSION = """
import importlib.abc, sys
class _NoExtension(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "haml._C":
            raise ModuleNotFoundError("No module named 'haml._C'", name=name)
        return None
sys.meta_path.insert(0, _NoExtension())
"""

# Imports haml recording every warning, then reports what the child saw as JSON on the last line
# of stdout, and computes both ops on the parent's inputs if asked.
_IMPORT_AND_REPORT = """
import json, sys, warnings
import torch
report = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        import haml
        import haml.ops
    except BaseException as err:
        report["import_error"] = {
            "type": type(err).__name__,
            "is_import_error": isinstance(err, ImportError),
            "is_value_error": isinstance(err, ValueError),
            "message": str(err),
        }
report["runtime_warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
if "import_error" not in report:
    report["backend"] = haml.ops.backend()
    report["backend_cpu"] = haml.ops.backend("cpu")
    report["has_native_gae"] = haml.ops.has_native("gae", "cpu")
    report["build_info"] = haml.ops.BUILD_INFO
    inputs_path = sys.argv[1] if len(sys.argv) > 1 else None
    if inputs_path:
        inputs = torch.load(inputs_path)
        adv, ret = haml.ops.gae(*inputs["gae"], 0.99, 0.95)
        s = inputs["surrogate"]
        logp_new = s["logp_new"].clone().requires_grad_()
        out = haml.ops.clipped_surrogate(logp_new, s["logp_old"], s["advantages"], 0.2,
                                         s["factor"], s["mask"], None, 0.0)
        (grad,) = torch.autograd.grad(out.loss, logp_new)
        torch.save({"gae": (adv, ret), "surrogate": [t.detach() for t in out], "grad": grad},
                   sys.argv[2])
print(json.dumps(report))
"""


def run_child(tmp_path: Path, env: dict[str, str | None], prelude: str = "", compute: bool = False):
    """Run the report script in a fresh interpreter; returns (report, outputs or None)."""
    child_env = {k: v for k, v in os.environ.items() if k != "HAML_BACKEND"}
    for key, value in env.items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    argv = []
    if compute:
        inputs_path, outputs_path = tmp_path / "inputs.pt", tmp_path / "outputs.pt"
        torch.save(_inputs(), inputs_path)
        argv = [str(inputs_path), str(outputs_path)]
    code = textwrap.dedent(prelude) + textwrap.dedent(_IMPORT_AND_REPORT)
    proc = subprocess.run([sys.executable, "-c", code, *argv], env=child_env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    outputs = torch.load(tmp_path / "outputs.pt") if compute and "import_error" not in report else None
    return report, outputs


def _inputs():
    g = torch.Generator().manual_seed(0)
    shape = (24, 3, 2)

    def randn():
        return torch.randn(shape, generator=g, dtype=torch.float64)

    flags = (torch.rand(shape, generator=g) < 0.1, torch.rand(shape, generator=g) < 0.1)
    logp_old = -1.0 - torch.rand(shape, generator=g, dtype=torch.float64)
    return {
        "gae": (randn(), randn(), randn(), *flags),
        "surrogate": {
            "logp_new": logp_old + 0.3 * randn(), "logp_old": logp_old, "advantages": randn(),
            "factor": torch.exp(0.2 * randn()), "mask": torch.rand(shape, generator=g) < 0.8,
        },
    }


def _native_outputs():
    """What the native kernels of this process give on the same inputs."""
    inputs = _inputs()
    adv, ret = haml.ops.gae(*inputs["gae"], 0.99, 0.95)
    s = inputs["surrogate"]
    logp_new = s["logp_new"].clone().requires_grad_()
    out = haml.ops.clipped_surrogate(logp_new, s["logp_old"], s["advantages"], 0.2, s["factor"],
                                     s["mask"], None, 0.0)
    (grad,) = torch.autograd.grad(out.loss, logp_new)
    return {"gae": (adv, ret), "surrogate": [t.detach() for t in out], "grad": grad}


def assert_same_as_native(outputs):
    want = _native_outputs()
    tol = dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(outputs["gae"], want["gae"], **tol)
    torch.testing.assert_close(outputs["surrogate"], want["surrogate"], **tol)
    torch.testing.assert_close(outputs["grad"], want["grad"], **tol)


@pytest.fixture
def native_here(require_native):
    """The parent's results are the native ones: skip where this process has no extension."""
    require_native("gae", "cpu")
    require_native("clip_surrogate_fwd", "cpu")
    assert _backend.REQUESTED != "reference"


# --------------------------------------------------------------------------------------------


def test_reference_backend_matches_native(tmp_path, native_here):
    report, outputs = run_child(tmp_path, {"HAML_BACKEND": "reference"}, compute=True)
    assert report["backend"] == "reference" and report["backend_cpu"] == "reference"
    assert report["has_native_gae"] is False
    assert report["build_info"] is None
    # Asking for the reference is not a failure: nothing to warn about.
    assert report["runtime_warnings"] == []
    assert_same_as_native(outputs)


def test_backend_name_is_case_and_space_insensitive(tmp_path):
    report, _ = run_child(tmp_path, {"HAML_BACKEND": "  Reference "})
    assert report["backend"] == "reference"


def test_extension_absent_falls_back_with_one_warning(tmp_path, native_here):
    report, outputs = run_child(tmp_path, {"HAML_BACKEND": None}, prelude=_HIDE_EXTENSION,
                                compute=True)
    assert "import_error" not in report
    warnings = report["runtime_warnings"]
    assert len(warnings) == 1, warnings
    assert "haml._C" in warnings[0]
    assert report["backend"] == "reference"
    assert report["has_native_gae"] is False
    assert report["build_info"] is None
    assert_same_as_native(outputs)


def test_native_requested_but_absent_is_import_error(tmp_path):
    report, _ = run_child(tmp_path, {"HAML_BACKEND": "native"}, prelude=_HIDE_EXTENSION)
    err = report.get("import_error")
    assert err is not None, report
    assert err["is_import_error"], err
    assert "haml._C" in err["message"] and "HAML_BACKEND=native" in err["message"]


def test_bogus_backend_is_value_error(tmp_path):
    report, _ = run_child(tmp_path, {"HAML_BACKEND": "bogus"})
    err = report.get("import_error")
    assert err is not None, report
    assert err["is_value_error"], err
    assert "HAML_BACKEND" in err["message"] and "bogus" in err["message"]


def test_extension_built_for_another_torch_falls_back(tmp_path):
    """An extension whose build_info names another torch release is not used (its ABI would not
    match): one warning that names both versions, then the reference."""
    fake = """
    import sys, types
    _fake = types.ModuleType("haml._C")
    _fake.build_info = lambda: {"version": "0.1.0", "torch_version": "1.0.0+cpu", "cuda": False,
                                "cuda_version": None, "devices": ["cpu"], "ops": ["gae"]}
    sys.modules["haml._C"] = _fake
    """
    report, _ = run_child(tmp_path, {"HAML_BACKEND": None}, prelude=fake)
    warnings = report["runtime_warnings"]
    assert len(warnings) == 1, warnings
    assert "1.0.0" in warnings[0] and torch.__version__ in warnings[0]
    assert report["backend"] == "reference" and report["build_info"] is None


# --------------------------------------------------------------------------------------------


def test_build_info(native_here):
    info = haml.ops.BUILD_INFO
    assert {"version", "torch_version", "cuda", "ops"} <= set(info)
    assert info["version"] == haml.__version__
    release = lambda v: v.split("+")[0]  # noqa: E731   "2.13.0+cpu" -> "2.13.0"
    assert release(info["torch_version"]) == release(torch.__version__)
    assert isinstance(info["cuda"], bool)
    assert {"gae", "clip_surrogate_fwd", "clip_surrogate_bwd"} <= set(info["ops"])
    # Every op it lists is really in the dispatcher.
    for op in info["ops"]:
        assert hasattr(torch.ops.haml, op), op
    assert haml.ops.backend("cpu") == "native"
