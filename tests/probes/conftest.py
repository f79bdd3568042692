"""Synthetic hidden states with known position information, and a frame-row lookup."""

from __future__ import annotations

import pytest
import torch


def _linear_position_features(n_seq=64, pos=16, d_model=8, noise=0.05, seed=0):
    """Hidden states whose first coordinate is the position, plus small noise elsewhere."""
    g = torch.Generator().manual_seed(seed)
    hidden = noise * torch.randn(n_seq, pos, d_model, generator=g)
    hidden[..., 0] += torch.arange(pos, dtype=torch.float32)
    return hidden


def _cesaro(n_seq=48, pos=16, d_model=256, seed=0):
    """Running means of i.i.d. standard normal vectors: var(h_i) = 1/i (1-indexed)."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(n_seq, pos, d_model, generator=g)
    return values.cumsum(dim=1) / torch.arange(1, pos + 1)[:, None], values


def _row(frame, **where):
    """The one row of ``frame`` matching every ``column=value``."""
    sel = frame
    for key, value in where.items():
        sel = sel[sel[key] == value]
    assert len(sel) == 1, (where, len(sel))
    return sel.iloc[0]


@pytest.fixture
def linear_features():
    """``(n_seq=64, pos=16, d_model=8, noise=0.05, seed=0) -> [n_seq, pos, d_model]``."""
    return _linear_position_features


@pytest.fixture
def cesaro_states():
    """``(n_seq=48, pos=16, d_model=256, seed=0) -> (running means, i.i.d. values)``."""
    return _cesaro


@pytest.fixture
def row():
    """``(frame, **where) -> the single matching row``."""
    return _row
