"""The memory guard: estimates against the real sizes, refusal before allocating."""

from __future__ import annotations

import subprocess
import sys

import pytest

SPECS = [
    {"n_layers": 2, "d_model": 64, "n_heads": 4, "d_vocab": 256, "n_ctx": 32},
    {"n_layers": 1, "d_model": 8, "n_heads": 2, "d_vocab": 5, "n_ctx": 4},
    {"n_layers": 3, "d_model": 32, "n_heads": 4, "d_vocab": 50, "n_ctx": 16,
     "positional": "learned"},
    {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_vocab": 50, "n_ctx": 16,
     "positional": "rotary"},
    {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_vocab": 50, "n_ctx": 16, "positional": "alibi"},
    {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_vocab": 50, "n_ctx": 16, "attn_only": True},
    {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_vocab": 50, "n_ctx": 16,
     "normalization_type": "RMS"},
    {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_vocab": 50, "n_ctx": 16,
     "normalization_type": None},
    {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_vocab": 50, "n_ctx": 16,
     "normalization_type": "LNPre", "d_mlp": 48, "d_head": 5},
    {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_vocab": 50, "n_ctx": 16,
     "n_key_value_heads": 2},
]  # fmt: skip


@pytest.mark.parametrize("kwargs", SPECS, ids=lambda k: "-".join(f"{a}{b}" for a, b in k.items()))
def test_model_bytes_is_the_size_of_the_built_model(kwargs):
    from nopelens.memory import model_bytes
    from nopelens.models import build_model

    model = build_model(**kwargs)
    tensors = [*model.parameters(), *model.buffers()]
    actual = sum(t.numel() * t.element_size() for t in tensors)
    spec = {**kwargs, "normalization_type": kwargs.get("normalization_type", "LN") or "none"}
    assert model_bytes(spec) == actual


def test_model_bytes_reads_a_model_spec_and_refuses_a_million_layers():
    from nopelens.memory import check_fits, format_bytes, model_bytes
    from nopelens.spec import ModelSpec

    spec = ModelSpec(n_layers=10**6, d_model=64, n_heads=4, d_vocab=256, n_ctx=32)
    needed = model_bytes(spec)
    per_block = model_bytes(ModelSpec(n_layers=2, d_model=64, n_heads=4, d_vocab=256, n_ctx=32))
    per_block -= model_bytes(ModelSpec(n_layers=1, d_model=64, n_heads=4, d_vocab=256, n_ctx=32))
    assert per_block == 4 * 49_985  # Q, K, V, O with biases, the MLP, two LayerNorms, IGNORE
    assert needed > 10**6 * per_block
    with pytest.raises(ValueError) as info:
        check_fits(needed, what="the model's weights", func="build_model", available=2**34)
    message = str(info.value)
    assert message.startswith(f"build_model would need about {format_bytes(needed)} for ")
    assert "but only 16.0 GiB of memory is available" in message


def test_closed_forms_of_the_estimates():
    from nopelens.memory import activation_bytes, forward_bytes, similarity_bytes

    assert similarity_bytes(batch=3, pos=7) == 3 * 49 * 4
    assert activation_bytes(batch=2, pos=5, width=8, tensors=3, itemsize=2) == 2 * 5 * 8 * 3 * 2
    dims = {"n_layers": 1, "d_model": 16, "n_heads": 2, "d_vocab": 10}
    # quadratic in pos through the attention patterns, linear in batch for large pos
    small, large = forward_bytes(dims, batch=1, pos=1000), forward_bytes(dims, batch=1, pos=2000)
    assert 3.9 < large / small < 4.0
    assert forward_bytes(dims, batch=4, pos=4000) > 3.9 * forward_bytes(dims, batch=1, pos=4000)
    assert forward_bytes({**dims, "dtype": "float64"}, batch=1, pos=1000) > 1.9 * small


def test_available_bytes_reads_meminfo_and_the_override(monkeypatch):
    from nopelens.memory import AVAILABLE_ENV, available_bytes

    monkeypatch.delenv(AVAILABLE_ENV, raising=False)
    with open("/proc/meminfo") as handle:
        kib = next(int(line.split()[1]) for line in handle if line.startswith("MemAvailable:"))
    assert abs(available_bytes() - kib * 1024) < 2**30  # it moves a little between the reads
    monkeypatch.setenv(AVAILABLE_ENV, "12345")
    assert available_bytes() == 12345


def test_collect_activations_refuses_before_the_forward_pass(monkeypatch):
    from nopelens.measure import collect_activations, iter_activations, random_tokens
    from nopelens.memory import AVAILABLE_ENV
    from nopelens.models import build_model

    model = build_model(n_layers=2, d_model=32, n_heads=4, d_vocab=50, n_ctx=64)
    tokens = random_tokens(16, 64, 50, seed=0)
    baseline = collect_activations(model, tokens)["resid_post"]
    monkeypatch.setenv(AVAILABLE_ENV, str(2**20))  # 1 MiB
    calls = []
    monkeypatch.setattr(model, "run_with_cache", lambda *a, **k: calls.append(1))
    for func in (collect_activations, iter_activations):
        with pytest.raises(ValueError) as info:
            func(model, tokens, sites=("resid_post", "attn_out"))
        message = str(info.value)
        assert message.startswith(f"{func.__name__} would need about ")
        assert (
            "the activations of 16 sequences x 64 positions at 2 site(s) and 2 layer(s)" in message
        )
        assert "but only 1.0 MiB of memory is available" in message
    assert calls == []  # refused before any forward pass
    monkeypatch.undo()
    assert collect_activations(model, tokens)["resid_post"].shape == baseline.shape


def test_the_guard_does_not_import_torch():
    code = "import sys, nopelens.memory; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
