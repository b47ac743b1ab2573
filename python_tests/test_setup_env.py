"""scripts/setup.sh installs into a virtual environment, never into a system or global Python.

The scripts are copied into a temporary project, and ``setup.sh --print-python`` (which only
chooses and creates the environment) runs under a Python marked externally managed (PEP 668):
a copy of this interpreter whose standard library directory holds an ``EXTERNALLY-MANAGED`` file,
and the system's own ``/usr/bin/python3`` where it is marked so. The chosen environment's pip
(``haml_pip_install``, the function setup.sh installs with) then installs a tiny local wheel,
which must land in the project's ``.venv`` and not in the marked Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

_PROBE = "import sys, sysconfig; print(sys.prefix); print(sysconfig.get_path('purelib'))"


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    for name in ("setup.sh", "python_env.sh"):
        shutil.copy(ROOT / "scripts" / name, project / "scripts" / name)
    return project


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHON")}
    env.update(extra)
    return env


def _print_python(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/setup.sh", "--print-python"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )


def _externally_managed_copy(tmp_path: Path) -> Path:
    """A Python install of its own under tmp_path, marked externally managed: this interpreter's
    binary, its standard library linked entry by entry, an empty site-packages, the marker."""
    base_prefix = Path(sys.base_prefix)
    binary = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    stdlib = Path(sysconfig.get_path("stdlib"))
    prefix = tmp_path / "system-python"
    (prefix / "bin").mkdir(parents=True)
    python = prefix / "bin" / "python3"
    shutil.copy2(binary, python)
    fake_stdlib = prefix / stdlib.relative_to(base_prefix)
    fake_stdlib.mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name not in ("site-packages", "dist-packages", "EXTERNALLY-MANAGED"):
            (fake_stdlib / entry.name).symlink_to(entry)
    (fake_stdlib / "site-packages").mkdir()
    for lib in (base_prefix / "lib").glob("libpython*"):  # a shared libpython beside the stdlib
        (prefix / "lib" / lib.name).symlink_to(lib)
    (fake_stdlib / "EXTERNALLY-MANAGED").write_text(
        "[externally-managed]\nError=this Python is managed by the system (test)\n"
    )
    probe = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True)
    if probe.returncode != 0 or Path(probe.stdout.split()[0]) != prefix:
        pytest.skip(f"this interpreter cannot be copied into a prefix of its own: {probe.stderr}")
    return python


def _system_python() -> Path:
    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.skip("no /usr/bin/python3")
    probe = subprocess.run(
        [str(python), "-c", "import ensurepip, venv, sysconfig, os;"
         "print(os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))"],
        capture_output=True, text=True,
    )
    if probe.stdout.strip() != "True":
        pytest.skip("/usr/bin/python3 is not marked externally managed, or lacks venv/ensurepip")
    return python


def _tiny_wheel(where: Path) -> Path:
    wheel = where / "hamltiny-0.1-py3-none-any.whl"
    files = {
        "hamltiny/__init__.py": "",
        "hamltiny-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: hamltiny\nVersion: 0.1\n",
        "hamltiny-0.1.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{name},,\n" for name in files) + "hamltiny-0.1.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in {**files, "hamltiny-0.1.dist-info/RECORD": record}.items():
            archive.writestr(name, text)
    return wheel


@pytest.mark.parametrize("which", ["marked copy", "system python3"])
def test_externally_managed_python_installs_into_project_venv(tmp_path: Path, which: str) -> None:
    marked = _externally_managed_copy(tmp_path) if which == "marked copy" else _system_python()
    marked_purelib = subprocess.run(
        [str(marked), "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    project = _project(tmp_path)

    chosen = _print_python(project, _env(PYTHON=str(marked)))
    assert chosen.returncode == 0, chosen.stderr
    venv_python = project / ".venv" / "bin" / "python"
    assert chosen.stdout.strip() == str(venv_python)
    assert "creating the project environment .venv" in chosen.stderr

    # Install with setup.sh's own function, into the environment it chose.
    wheel = _tiny_wheel(tmp_path)
    script = (
        'set -e; source scripts/python_env.sh; haml_select_python; '
        f'haml_pip_install --no-index --no-deps "{wheel}"'
    )
    installed = subprocess.run(
        ["bash", "-c", script], cwd=project, env=_env(PYTHON=str(marked)),
        capture_output=True, text=True, timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    venv_purelib = subprocess.run(
        [str(venv_python), "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert Path(venv_purelib, "hamltiny", "__init__.py").exists()
    assert not Path(marked_purelib, "hamltiny").exists()
    # The second run finds the environment made by the first and does not make another.
    again = _print_python(project, _env(PYTHON=str(marked)))
    assert again.stdout.strip() == str(venv_python)
    assert "creating" not in again.stderr


def test_active_environment_is_used_as_it_is(tmp_path: Path) -> None:
    env_dir = tmp_path / "my-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    project = _project(tmp_path)
    env_python = env_dir / "bin" / "python"

    # Activated (its bin/ first on PATH, PYTHON unset) and named through PYTHON.
    activated = _env(PATH=f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(env_dir))
    for env in (activated, _env(PYTHON=str(env_python))):
        chosen = _print_python(project, env)
        assert chosen.returncode == 0, chosen.stderr
        assert Path(chosen.stdout.strip()).parent == env_python.parent
        assert "using the active venv environment" in chosen.stderr
    assert not (project / ".venv").exists()
