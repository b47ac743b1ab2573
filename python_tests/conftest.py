"""Fixtures shared by haml's test suite: devices, seeding, the native-build guard of CI.

- ``device``: every test that takes it runs on the CPU and, where torch sees one, on CUDA.
- Every test starts from the same global RNG state; tests that draw data use their own seeded
  ``torch.Generator`` so that a failure reproduces from its parameters alone.
- ``HAML_REQUIRE_NATIVE=1`` (set by CI after building the extension) ends the session before any
  test runs when ``haml._C`` is not loaded: otherwise every native-vs-reference test would skip or
  compare the reference with itself, and CI would pass without testing a single kernel.
- ``each_cpu_isa``: the native CPU parity tests that take it run once per instruction-set level
  of the CPU kernels that this CPU can run (baseline, x86-64-v3, x86-64-v4).
- Tests marked ``gpu`` skip without CUDA; nothing else is deselected.
"""

from __future__ import annotations

import os
import random

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_configure(config: pytest.Config) -> None:
    # Inductor caches compiled graphs across processes, keyed by the graph and not by the fake
    # kernels it was traced with: a changed fake kernel could be tested against a stale artifact.
    # Each session compiles into its own directory unless the caller chose one.
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        import tempfile

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="haml-inductor-")


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("HAML_REQUIRE_NATIVE") != "1":
        return
    import haml.ops
    from haml.ops import _backend

    if haml.ops.BUILD_INFO is None:
        pytest.exit(
            "HAML_REQUIRE_NATIVE=1 but the native extension haml._C is not in use "
            f"({_backend.UNAVAILABLE_REASON}); refusing to test only the reference implementations",
            returncode=1,
        )


def pytest_report_header(config: pytest.Config) -> str:
    """Which backend this session tests, first thing in the log."""
    try:
        import haml.ops
    except Exception as err:  # reported here; the tests that import haml fail on their own
        return f"haml: import failed: {err!r}"

    info = haml.ops.BUILD_INFO
    if info is None:
        return "haml: reference backend only (haml._C not loaded)"
    return (
        f"haml: native backend, haml._C {info['version']} built against torch "
        f"{info['torch_version']}, cuda={info['cuda']}, ops={', '.join(info['ops'])}"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; torch.cuda.is_available() is False")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """The same global RNG state at the start of every test, whatever ran before it."""
    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


def _cpu_isa_params() -> list[str]:
    import haml.ops

    # Without the extension there is one (reference) path to test, under a name that says so.
    return list(haml.ops.supported_cpu_isas()) or ["no-native-cpu-kernels"]


@pytest.fixture(params=_cpu_isa_params())
def each_cpu_isa(request: pytest.FixtureRequest):
    """Runs the test with the native CPU kernels at each level this CPU supports, then restores
    the level that was active."""
    import haml.ops

    if request.param not in haml.ops.CPU_ISAS:
        yield None
        return
    before = haml.ops.cpu_isa()
    haml.ops.set_cpu_isa(request.param)
    try:
        yield request.param
    finally:
        haml.ops.set_cpu_isa(before)


@pytest.fixture
def require_native():
    """``require_native(op, device)`` skips the test unless ``op`` runs natively on ``device``."""
    import haml.ops
    from haml.ops import _backend

    def check(op: str, device: torch.device | str) -> None:
        if not haml.ops.has_native(op, device):
            pytest.skip(f"no native {op} kernel for {device}: {_backend.UNAVAILABLE_REASON}")

    return check


class OpRecorder(TorchDispatchMode):
    """Records the name of every op dispatched while active (for example ``haml.gae.default``).

    Tells which implementation a façade used: the native path dispatches ``haml.*`` ops, the
    reference only ``aten.*`` ones.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))

    def called(self, name: str) -> bool:
        return any(op.startswith(name) for op in self.ops)


@pytest.fixture
def record_ops():
    """A fresh :class:`OpRecorder`; use it as ``with record_ops() as rec: ...``."""
    return OpRecorder


@pytest.fixture
def fresh_dynamo():
    """Clear torch.compile's caches so that each compile test traces from scratch."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def poison_happo(monkeypatch):
    """``poison_happo(after)``: from the ``after + 1``-th HAPPO actor update on, the updated policy's
    parameters turn NaN (a diverging run, for the guards' tests)."""
    from haml.algorithms.happo import PPOActorLearner

    update = PPOActorLearner.update
    calls = {"n": 0}

    def arm(after: int = 0) -> None:
        def poisoned(self, batch):
            calls["n"] += 1
            if calls["n"] > after:
                with torch.no_grad():
                    for p in self.policy.parameters():
                        p.fill_(float("nan"))
            return update(self, batch)

        monkeypatch.setattr(PPOActorLearner, "update", poisoned)

    return arm


TINY_MAMUJOCO = [
    "train.num_envs=2", "train.rollout_length=8", "actor.hidden=[8]", "critic.network.hidden=[8]",
    "eval.every=2", "eval.episodes=2", "eval.num_envs=2", "env.options.episode_limit=5",
    "env.options.vectorization=sync",
]


@pytest.fixture(scope="module")
def mamujoco_run(tmp_path_factory):
    """A finished 32-step HAPPO run on MaMuJoCo HalfCheetah-2x3 with tiny networks, 5-step
    episodes and sync envs (its checkpoint at iteration 2), for tests of what reads a run."""
    pytest.importorskip("gymnasium_robotics")
    from haml import cli

    run_dir = tmp_path_factory.mktemp("mamujoco") / "run"
    argv = ["train", "--algo", "happo", "--env", "mamujoco", "--task", "HalfCheetah-2x3",
            "--steps", "32", "--out", str(run_dir), "--quiet", *TINY_MAMUJOCO]
    assert cli.main(argv) == 0
    return run_dir
