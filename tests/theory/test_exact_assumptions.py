"""The Gram model where its assumptions hold exactly, and the variance closed form's centring.

The construction (issue 14): every vector is built from an orthonormal basis so that the inner
products the Gram model assumes are not expectations but exact values. Token-specific parts are
orthonormal vectors ``f[t, k]`` and ``g[t]``; shared parts (``m_h``, ``m_E``, ``b_O`` and the
positional embedding) live in other basis vectors. Then

    u^h_t = m_h + sum_k C[h, k] f[t, k]          <u^h_t, u^h'_s> = <m_h, m_h'> + [t = s] (C C^T)_hh'
    x_t   = m_E + sum_k B[k] f[t, k] + c g[t]    <x_t, u^h_s>   = <m_E, m_h>  + [t = s] (C B)_h

so ``G = sigma^2 T + mu^2 1 1^T`` holds with no sampling error, every parameter is estimated
exactly (means over pairs of equal numbers), and the predicted Gram matrix must equal the Gram
matrix of the hidden states to rounding (1e-12), for any attention pattern (row sums below 1
included) and repeated tokens. Every term of the prediction is non-zero here: the shared value
component, the bias, the embedding-value cross terms, the positional embedding; a prediction that
drops any of them fails.
"""

from __future__ import annotations

import pytest
import torch

F64 = torch.float64


def _construction(seed=0, vocab=9, n_heads=3, batch=4, pos=8, d=80, repeats=True):
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    basis = basis.T  # rows are orthonormal
    k_dims = n_heads
    shared = basis[:6]  # means, bias and positional embedding live here
    f = basis[6 : 6 + vocab * k_dims].reshape(vocab, k_dims, d)  # f[t, k]
    e = basis[6 + vocab * k_dims : 6 + vocab * (k_dims + 1)]  # g[t]
    assert 6 + vocab * (k_dims + 1) <= d

    def in_shared(*shape):
        return torch.randn(*shape, 6, generator=g, dtype=F64) @ shared

    m_h, m_e, bias = in_shared(n_heads), in_shared(), in_shared()
    pos_embed = in_shared(pos)
    c_mix = torch.randn(n_heads, k_dims, generator=g, dtype=F64)
    b_mix = torch.randn(k_dims, generator=g, dtype=F64)
    values = m_h[None] + torch.einsum("hk,tkd->thd", c_mix, f)  # [vocab, head, d]
    embeds = m_e + torch.einsum("k,tkd->td", b_mix, f) + 0.7 * e  # [vocab, d]
    if repeats:
        tokens = torch.randint(0, vocab, (batch, pos), generator=g)
    else:
        tokens = torch.stack([torch.randperm(vocab, generator=g)[:pos] for _ in range(batch)])
    scores = torch.randn(batch, n_heads, pos, pos, generator=g, dtype=F64)
    causal = torch.ones(pos, pos, dtype=torch.bool).tril()
    pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    sinks = 0.5 + 0.5 * torch.rand(batch, n_heads, pos, 1, generator=g, dtype=F64)
    pattern = pattern * sinks  # row sums in [0.5, 1] (attention sinks)
    embed = embeds[tokens]
    head_values = values[tokens]  # [batch, pos, head, d]
    attn_out = torch.einsum("bhij,bjhd->bid", pattern, head_values) + bias
    resid_mid = embed + pos_embed + attn_out
    return {
        "tokens": tokens,
        "embed": embed,
        "pos_embed": pos_embed,
        "values": head_values,
        "bias": bias,
        "pattern": pattern,
        "attn_out": attn_out,
        "resid_mid": resid_mid,
    }


def _predict(case):
    from nopelens.theory import estimate_gram_parameters, predict_gram, same_token_matrix

    same = same_token_matrix(case["tokens"])
    params = estimate_gram_parameters(
        case["embed"],
        case["pos_embed"],
        case["values"],
        case["bias"],
        case["embed"] + case["pos_embed"],
        same,
    )
    return params, predict_gram(params, case["pattern"], same)


@pytest.mark.parametrize("repeats", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_prediction_is_the_true_gram_when_the_assumptions_hold_exactly(seed, repeats):
    from nopelens.theory import gram_to_cosine

    case = _construction(seed, repeats=repeats)
    params, grams = _predict(case)
    # every term is present: a prediction without one of them cannot match
    assert params.value_diff.abs().min() > 1e-3 and params.bias.norm() > 0.1  # shared, bias
    assert (params.cross_same - params.cross_diff).abs().min() > 1e-3  # token-specific cross
    assert params.cross_diff.abs().min() > 1e-3 and params.pos_embed.norm() > 0.1
    for site in ("attn_out", "resid_mid"):
        hidden = case[site]
        true = hidden @ hidden.transpose(-1, -2)
        scale = float(true.abs().max())
        torch.testing.assert_close(
            grams[site], true, rtol=0, atol=1e-12 * scale, msg=f"predicted vs true Gram ({site})"
        )
        torch.testing.assert_close(
            gram_to_cosine(grams[site]), gram_to_cosine(true), rtol=0, atol=1e-12
        )


def test_the_estimates_are_the_constructed_values():
    """The parameters are exact, not estimates, in this construction (the premise above)."""
    case = _construction(3)
    params, _ = _predict(case)
    values, embed = case["values"], case["embed"]
    tokens = case["tokens"]
    first = values[0, 0]  # [head, d] of token tokens[0, 0]
    other = next(values[b, j] for b in range(4) for j in range(8) if tokens[b, j] != tokens[0, 0])
    torch.testing.assert_close(params.value_same, first @ first.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(params.value_diff, first @ other.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        params.cross_diff, other @ embed[0, 0], rtol=0, atol=1e-12
    )  # <x_t, u^h_s>, t != s
    assert params.n_pairs > 0


# --------------------------------------------------------------------------------------------
# the variance closed form reads the hidden-dimension-centred parameters


def _offset_model(embed_offset, value_offset):
    """Uniform attention (W_Q = W_K = 0); token-specific components along the all-ones direction
    of the hidden dimensions, in the embeddings and in the value outputs. The variance across
    hidden dimensions does not see them; the uncentred Gram parameters do."""
    from nopelens import build_model

    model = build_model(
        n_layers=1, d_model=256, n_heads=4, d_vocab=2048, n_ctx=24, attn_only=True, seed=0
    )
    attn = model.blocks[0].attn
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in (attn.W_Q, attn.W_K, attn.b_Q, attn.b_K):
            param.zero_()
        w_e = model.embed.W_E  # [d_vocab, d_model]
        w_e.add_(embed_offset * float(w_e.std()) * torch.randn(2048, 1, generator=g))
        w_o = attn.W_O  # [head_index, d_head, d_model]
        w_o.add_(value_offset * float(w_o.std()) * torch.randn(*w_o.shape[:2], 1, generator=g))
    return model


@pytest.fixture(scope="module")
def offset_theory():
    from nopelens import random_tokens
    from nopelens.theory import first_layer_theory

    model = _offset_model(embed_offset=3.0, value_offset=3.0)
    return first_layer_theory(model, random_tokens(64, 24, 2048, seed=0, distinct=True))


def test_variance_closed_form_uses_centred_parameters(offset_theory):
    """var across hidden dims of attn_out_i and resid_mid_i is s^2 + a^2/i with s^2, a^2 of the
    centred vectors; the uncentred parameters are several times larger here."""
    theory = offset_theory
    gram = theory.gram.set_index(["centering", "parameter"]).value
    for name in ("s2", "a2"):
        raw = float(gram[("none", name)])
        centred = float(gram[("hidden_dims", name)])
        assert raw > 3 * centred, (name, raw, centred)  # the offsets matter
    var = theory.variance
    for site in ("attn_out", "resid_mid"):
        rows = var[var.site == site]
        rel = ((rows.closed_form - rows.observed) / rows.observed).abs()
        assert rel.max() < 0.08, (site, float(rel.max()))
        rel_pred = ((rows.predicted - rows.observed) / rows.observed).abs()
        assert rel_pred.max() < 0.08, (site, float(rel_pred.max()))
