"""Tiny Hugging Face model folders, written offline once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def hf_folders(tmp_path_factory):
    """``{"gpt2": Path, "llama": Path}``: random-init 2-layer models with a local BPE tokenizer."""
    from nopelens.models import write_tiny_hf_model

    root = tmp_path_factory.mktemp("hf")
    return {
        arch: write_tiny_hf_model(root / f"{arch}-tiny", architecture=arch, n_ctx=64, seed=1)
        for arch in ("gpt2", "llama")
    }


@pytest.fixture(scope="session")
def hf_models(hf_folders):
    """The folders loaded with ``load_pretrained`` (float32, CPU)."""
    from nopelens.models import load_pretrained

    return {arch: load_pretrained(folder) for arch, folder in hf_folders.items()}
