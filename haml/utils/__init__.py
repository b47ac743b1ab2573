"""Run utilities: seeding and RNG states (:mod:`.seeding`), checkpoints (:mod:`.checkpoint`),
atomic file writes (:mod:`.files`). Light to import: torch and numpy only."""

from haml.utils.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    checkpoint_iteration,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_run_checkpoint,
)
from haml.utils.files import atomic_write, atomic_write_text
from haml.utils.seeding import RNG_KEYS, rng_state, seed_everything, set_rng_state

__all__ = [
    "CHECKPOINT_DIR",
    "CheckpointError",
    "RNG_KEYS",
    "atomic_write",
    "atomic_write_text",
    "checkpoint_iteration",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "save_run_checkpoint",
    "seed_everything",
    "set_rng_state",
]
