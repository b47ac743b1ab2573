"""Every checkpoint carries a SHA-256 of its content: a changed byte anywhere is an error naming the
file, never a silently different run; resume and eval fall back to the newest file that verifies."""

from __future__ import annotations

import io

import pytest
import torch

import haml.training as T
from haml.evaluation import evaluate_run
from haml.utils.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

TOY = ["train.num_envs=64", "eval.every=0", "run.checkpoint_every=1", "run.keep_checkpoints=3"]


def _flip(path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def test_one_flipped_byte_anywhere_is_a_checkpoint_error_naming_the_file(tmp_path):
    payload = {"w": torch.arange(100.0), "optimiser": {"lr": 1e-3}, "rng": [1, 2, 3], "name": "x"}
    original = save_checkpoint(tmp_path / "c.pt", payload).read_bytes()
    header = original.index(b"\n", 10) + 1  # magic line + digest line
    positions = sorted({*range(header), *range(0, len(original), max(1, len(original) // 41))})
    assert len(positions) > 41
    for position in positions:
        (tmp_path / "c.pt").write_bytes(original)
        _flip(tmp_path / "c.pt", position)
        with pytest.raises(CheckpointError, match=r"c\.pt"):
            load_checkpoint(tmp_path / "c.pt")
    (tmp_path / "c.pt").write_bytes(original)
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["w"], payload["w"])


def test_a_file_written_before_checksums_still_loads(tmp_path):
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buffer)
    (tmp_path / "old.pt").write_bytes(buffer.getvalue())
    assert torch.equal(load_checkpoint(tmp_path / "old.pt")["w"], torch.ones(3))


def test_resume_sets_a_damaged_checkpoint_aside_and_continues_from_the_newest_good_one(tmp_path, capsys):
    T.train("happo", "toy", steps=64 * 3, out=tmp_path, quiet=True, overrides=TOY)
    newest = latest_checkpoint(tmp_path)
    assert newest.name == "iter-000003.pt"
    _flip(newest, newest.stat().st_size // 2)
    result = T.resume(tmp_path, steps=64 * 4, quiet=True)
    out = capsys.readouterr().out
    assert "iter-000003.pt is damaged" in out and "resuming from iter-000002.pt" in out
    assert (tmp_path / "checkpoints" / "iter-000003.pt.damaged").is_file()
    assert result.iterations == 4
    assert [p.name for p in list_checkpoints(tmp_path)][-1] == "iter-000004.pt"


def test_eval_falls_back_to_the_newest_good_checkpoint_and_says_so(tmp_path, capsys):
    T.train("happo", "toy", steps=64 * 2, out=tmp_path, quiet=True, overrides=TOY)
    _flip(latest_checkpoint(tmp_path), 20)
    report = evaluate_run(tmp_path, episodes=2)
    assert report.checkpoint.name == "iter-000001.pt"
    assert "iter-000002.pt is damaged" in capsys.readouterr().err
