"""haml.utils.checkpoint: atomic saves, clear load errors, naming, pruning, exact resume."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn

from haml.utils import rng_state, seed_everything, set_rng_state
from haml.utils.checkpoint import (
    CheckpointError,
    checkpoint_iteration,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_run_checkpoint,
)


def test_round_trip_with_weights_optimiser_rng_and_counters(tmp_path):
    model = nn.Linear(3, 2)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimiser.step()
    payload = {
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "rng": rng_state(),
        "counters": {"iteration": 7, "step": 28_000},
    }
    path = save_checkpoint(tmp_path / "c.pt", payload)
    loaded = load_checkpoint(path)  # weights_only=True by default
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded["model"][key], value)
    assert loaded["optimiser"]["state"][0]["step"] == optimiser.state_dict()["state"][0]["step"]
    assert loaded["counters"] == {"iteration": 7, "step": 28_000}


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch, failure):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"version": 1, "w": torch.ones(3)})

    def broken_save(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")  # some bytes reach the temp file, then the write dies
        raise failure

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(type(failure)):
        save_checkpoint(path, {"version": 2, "w": torch.zeros(3)})
    monkeypatch.undo()

    assert load_checkpoint(path)["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_saved_files_get_the_ordinary_mode_not_mkstemps_0600(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file at .*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    save_run_checkpoint(tmp_path, 3, {"a": 1})
    with pytest.raises(FileNotFoundError, match="checkpoints there: iter-000003.pt"):
        load_checkpoint(checkpoint_path(tmp_path, 4))

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt"):
        load_checkpoint(tmp_path / "empty.pt")

    whole = save_checkpoint(tmp_path / "whole.pt", {"w": torch.randn(1000)})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(cut)

    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint dict"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(TypeError, match="'payload' must be a dict"):
        save_checkpoint(tmp_path / "x.pt", [1, 2])


class Opaque:
    """An arbitrary class: weights_only loading refuses to unpickle it."""

    def __init__(self) -> None:
        self.x = 1


def test_weights_only_refusal_says_how_to_load_a_trusted_file(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"obj": Opaque()})
    with pytest.raises(CheckpointError, match="weights_only=False"):
        load_checkpoint(path)
    assert load_checkpoint(path, weights_only=False)["obj"].x == 1


def test_names_and_latest(tmp_path):
    assert checkpoint_path(tmp_path, 123) == tmp_path / "checkpoints" / "iter-000123.pt"
    assert checkpoint_iteration(checkpoint_path(tmp_path, 1_234_567)) == 1_234_567
    with pytest.raises(ValueError, match="iteration"):
        checkpoint_path(tmp_path, -1)
    with pytest.raises(ValueError, match="iter-<number>.pt"):
        checkpoint_iteration("last.pt")

    assert latest_checkpoint(tmp_path) is None
    for iteration in (999_999, 1_000_000, 5):  # numeric, not lexical, order
        save_checkpoint(checkpoint_path(tmp_path, iteration), {"iteration": iteration})
    (tmp_path / "checkpoints" / ".iter-2000000.pt.abc.tmp").write_bytes(b"")  # not a checkpoint
    assert [checkpoint_iteration(p) for p in list_checkpoints(tmp_path)] == [5, 999_999, 1_000_000]
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 1_000_000)


def test_save_run_checkpoint_keeps_the_last_k_and_cleans_stray_temp_files(tmp_path):
    stray = tmp_path / "checkpoints" / ".iter-000001.pt.zz.tmp"
    stray.parent.mkdir()
    stray.write_bytes(b"left by a killed process")
    for iteration in range(1, 6):
        save_run_checkpoint(tmp_path, iteration, {"iteration": iteration}, keep=2)
    assert [checkpoint_iteration(p) for p in list_checkpoints(tmp_path)] == [4, 5]
    assert not stray.exists()

    # the same iteration again (Ctrl-C right after a periodic save) replaces it
    save_run_checkpoint(tmp_path, 5, {"iteration": 5, "again": True}, keep=2)
    assert load_checkpoint(latest_checkpoint(tmp_path))["again"] is True
    # a checkpoint just written is never pruned, even with a lower number than older files
    written = save_run_checkpoint(tmp_path, 1, {"iteration": 1}, keep=1)
    assert written.exists()

    save_run_checkpoint(tmp_path / "all", 1, {}, keep=None)
    save_run_checkpoint(tmp_path / "all", 2, {}, keep=None)
    assert len(list_checkpoints(tmp_path / "all")) == 2
    with pytest.raises(ValueError, match="'keep'"):
        save_run_checkpoint(tmp_path, 9, {}, keep=0)


def train(model: nn.Module, optimiser: torch.optim.Optimizer, iterations: int) -> None:
    """A toy training loop that draws its minibatches and dropout masks from the global RNGs."""
    data = torch.linspace(-1, 1, 64).unsqueeze(1)
    for _ in range(iterations):
        index = torch.randint(0, 64, (8,))
        x = data[index]
        loss = (model(x) - x.sin()).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def make_model() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def test_interrupted_and_resumed_training_matches_an_uninterrupted_run(tmp_path):
    seed_everything(11)
    model, optimiser = make_model()
    train(model, optimiser, 20)
    uninterrupted = {k: v.clone() for k, v in model.state_dict().items()}

    seed_everything(11)
    model, optimiser = make_model()
    train(model, optimiser, 8)
    save_run_checkpoint(
        tmp_path, 8, {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "rng": rng_state()}
    )
    torch.manual_seed(999)  # the new process starts from some other state

    model, optimiser = make_model()
    payload = load_checkpoint(latest_checkpoint(tmp_path))
    model.load_state_dict(payload["model"])
    optimiser.load_state_dict(payload["optimiser"])
    set_rng_state(payload["rng"])
    train(model, optimiser, 12)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, uninterrupted[key], rtol=0, atol=0)
