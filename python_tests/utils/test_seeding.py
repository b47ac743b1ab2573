"""haml.utils.seeding: seeding and the RNG states a checkpoint carries."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from haml.utils import load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state


def draws() -> tuple:
    """One draw from each global generator, normal draws included (they cache a second value)."""
    return (
        random.random(),
        random.gauss(0.0, 1.0),
        np.random.rand(),
        np.random.randn(),
        torch.rand(3).tolist(),
        torch.randn(2).tolist(),
    )


def test_seed_everything_makes_draws_repeat_and_differs_by_seed():
    seed_everything(5)
    first = draws()
    seed_everything(5)
    assert draws() == first
    seed_everything(6)
    assert draws() != first


def test_captured_state_reproduces_the_next_draws():
    seed_everything(1)
    random.gauss(0.0, 1.0)  # leaves a cached second normal in Python's generator
    np.random.randn()  # and in NumPy's
    state = rng_state()
    expected = draws()
    draws()  # move on
    set_rng_state(state)
    assert draws() == expected


def test_state_survives_a_weights_only_checkpoint(tmp_path):
    seed_everything(2)
    np.random.randn()
    path = save_checkpoint(tmp_path / "c.pt", {"rng": rng_state()})
    expected = draws()
    seed_everything(3)
    set_rng_state(load_checkpoint(path)["rng"])  # weights_only=True
    assert draws() == expected


def test_state_keys_and_bad_input():
    state = rng_state()
    assert {"python", "numpy", "torch"} <= set(state)
    assert ("torch_cuda" in state) == torch.cuda.is_available()
    with pytest.raises(ValueError, match="missing: \\['numpy'\\]"):
        set_rng_state({k: v for k, v in state.items() if k != "numpy"})
    with pytest.raises(ValueError, match="unknown: \\['jax'\\]"):
        set_rng_state({**state, "jax": 0})
    with pytest.raises(TypeError, match="'state'"):
        set_rng_state([1, 2])
    for bad in (-1, 2**32, 1.5, True, "3"):
        with pytest.raises(ValueError, match="'seed'"):
            seed_everything(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_cuda_states_on_a_cpu_machine_warn_and_the_rest_is_restored():
    state = rng_state()
    expected = draws()
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        set_rng_state({**state, "torch_cuda": [torch.zeros(16, dtype=torch.uint8)]})
    assert draws() == expected


@pytest.mark.gpu
def test_cuda_generator_state_round_trips():
    state = rng_state()
    expected = torch.rand(4, device="cuda").tolist()
    set_rng_state(state)
    assert torch.rand(4, device="cuda").tolist() == expected
