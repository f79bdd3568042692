"""Shared fixtures. nopelens is imported inside fixtures, after the jaxtyping import hook."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("NOPELENS_SMALL", "1")


@pytest.fixture
def tiny_model():
    """A 2-layer random-init causal NoPE model (d_model 32, 4 heads, vocab 50, n_ctx 32)."""
    from nopelens import build_model

    return build_model(n_layers=2, d_model=32, n_heads=4, d_vocab=50, n_ctx=32, seed=0)


@pytest.fixture
def tiny_tokens():
    """8 random sequences of 16 tokens over a vocabulary of 50."""
    from nopelens import random_tokens

    return random_tokens(8, 16, 50, seed=0)


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread, then restore the caller's thread count.

    Tiny models train several times faster on one thread (and 2 threads spin on a busy box).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
