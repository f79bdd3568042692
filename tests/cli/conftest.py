"""Shared argv of the CLI tests: one tiny training run, used by every test that trains."""

from __future__ import annotations

import pytest

#: `nopelens train TASK --out DIR` flags of a run that takes about a second: a 1-layer d16
#: model, 6 steps, no progress output.
TINY_TRAIN: tuple[str, ...] = (
    "--n-layers",
    "1",
    "--d-model",
    "16",
    "--n-heads",
    "2",
    "--steps",
    "6",
    "--eval-every",
    "3",
    "--eval-batches",
    "1",
    "--batch-size",
    "8",
    "--quiet",
)


@pytest.fixture(scope="session")
def tiny_train() -> tuple[str, ...]:
    """The flags of a tiny ``nopelens train`` run (see :data:`TINY_TRAIN`)."""
    return TINY_TRAIN
