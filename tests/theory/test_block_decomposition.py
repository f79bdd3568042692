"""The exact decomposition at every block: non-zero biases, every normalisation, grouped queries."""

from __future__ import annotations

import pytest
import torch


def _randomise_biases(model, seed=0):
    """Every bias and every norm gain/bias set to random non-zero values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("b") or leaf in ("_b_K", "_b_V"):
                param.copy_(0.3 * torch.randn(param.shape, generator=g) + 0.1)
            elif leaf == "w":  # LN / RMS gain
                param.copy_(1.0 + 0.3 * torch.randn(param.shape, generator=g))
    return model


CONFIGS = {
    "LN": {"normalization_type": "LN"},
    "LNPre": {"normalization_type": "LNPre"},
    "RMS": {"normalization_type": "RMS"},
    "RMSPre": {"normalization_type": "RMSPre"},
    "none": {"normalization_type": None},
    "gqa": {"normalization_type": "LN", "n_key_value_heads": 2},
    "gqa_attn_only_rms": {"normalization_type": "RMS", "n_key_value_heads": 1, "attn_only": True},
}


@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
def test_identity_at_every_block_with_nonzero_biases(config):
    from nopelens import build_model, random_tokens
    from nopelens.theory import decompose_blocks

    model = build_model(
        n_layers=3, d_model=32, n_heads=4, d_vocab=40, n_ctx=12, seed=1, act_fn="gelu", **config
    )
    _randomise_biases(model)
    assert float(model.b_O.detach().abs().min()) > 0 and float(model.b_V.detach().abs().min()) > 0
    tokens = random_tokens(4, 10, 40, seed=2)
    blocks = decompose_blocks(model, tokens)
    assert [b.layer for b in blocks] == [0, 1, 2]
    for block in blocks:
        assert block.heads.shape == (4, 4, 10, 32)
        for site, rebuilt, hooked in (
            ("attn_out", block.attn_out_rebuilt(), block.attn_out),
            ("resid_mid", block.resid_mid_rebuilt(), block.resid_mid),
        ):
            torch.testing.assert_close(
                rebuilt,
                hooked,
                atol=2e-5,
                rtol=1e-5,
                msg=f"rebuilt {site} vs {block.resid_mid_hook if site != 'attn_out' else 'hook'} "
                f"at block {block.layer} ({config})",
            )
        assert block.head_labels() == [f"L{block.layer}H{h}" for h in range(4)]
        assert f"layer={block.layer}" in repr(block)


def test_heads_match_transformer_lens_per_head_results():
    """``pattern @ v @ W_O`` per head vs TransformerLens' own ``attn.hook_result`` (GQA, biases)."""
    from nopelens import build_model, random_tokens
    from nopelens.measure import hook_name
    from nopelens.theory import decompose_blocks

    model = build_model(
        n_layers=2, d_model=24, n_heads=6, d_vocab=30, n_ctx=8, seed=0, n_key_value_heads=3
    )
    _randomise_biases(model, seed=3)
    model.set_use_attn_result(True)
    tokens = random_tokens(3, 8, 30, seed=0)
    blocks = decompose_blocks(model, tokens)
    _, cache = model.run_with_cache(tokens)
    for block in blocks:
        result = cache[hook_name("result", block.layer)]  # [batch, pos, head_index, d_model]
        torch.testing.assert_close(
            block.heads,
            result.permute(0, 2, 1, 3),
            atol=2e-5,
            rtol=1e-5,
            msg=f"decompose_blocks vs hook_result at block {block.layer}",
        )


def test_decompose_blocks_selected_layers_and_errors(tiny_model, tiny_tokens):
    from nopelens.theory import decompose_blocks

    (block,) = decompose_blocks(tiny_model, tiny_tokens, layers=1)
    assert block.layer == 1 and block.resid_post is not None
    with pytest.raises(ValueError, match="'layers' parameter of decompose_blocks"):
        decompose_blocks(tiny_model, tiny_tokens, layers=5)
    with pytest.raises(ValueError, match="'batch_size' parameter of decompose_blocks"):
        decompose_blocks(tiny_model, tiny_tokens, batch_size=0)
    with pytest.raises(TypeError):  # the tests' runtime type checker
        decompose_blocks(object(), tiny_tokens)
    unchecked = getattr(decompose_blocks, "__wrapped__", decompose_blocks)
    with pytest.raises(ValueError, match="'model' parameter of decompose_blocks"):
        unchecked(object(), tiny_tokens)
