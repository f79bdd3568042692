"""Pure attention maths: uniform patterns, per-head decomposition, entropy and sharpness."""

from __future__ import annotations

import math

import pytest
import torch


def test_uniform_causal_pattern_is_one_over_i():
    from nopelens.theory import uniform_pattern

    a = uniform_pattern(6)
    assert torch.allclose(a.sum(-1), torch.ones(6))
    assert torch.equal(a.triu(1), torch.zeros(6, 6))
    i = torch.arange(1, 7, dtype=torch.float32)
    assert torch.allclose(a.diagonal(), 1.0 / i)
    assert torch.allclose(a[:, 0], 1.0 / i)


def test_uniform_bidirectional_pattern_is_constant():
    from nopelens.theory import uniform_pattern

    a = uniform_pattern(5, attention="bidirectional")
    assert torch.allclose(a, torch.full((5, 5), 0.2))


def test_uniform_pattern_equals_the_pattern_of_a_model_with_zero_queries():
    from nopelens import build_model, collect_activations, random_tokens
    from nopelens.theory import query_scale_hooks, uniform_pattern

    for attention in ("causal", "bidirectional"):
        model = build_model(
            n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8, attention=attention
        )
        acts = collect_activations(
            model, random_tokens(2, 7, 20), sites="pattern", fwd_hooks=query_scale_hooks(0.0)
        )
        expected = uniform_pattern(7, attention=attention).expand(2, 2, 7, 7)
        assert torch.allclose(acts["pattern"][0], expected, atol=1e-6), attention


def _loop_head_outputs(pattern, v, w_o):
    batch, n_heads, n_query, _ = pattern.shape
    out = torch.zeros(batch, n_heads, n_query, w_o.shape[-1])
    for b in range(batch):
        for h in range(n_heads):
            for i in range(n_query):
                z = sum(pattern[b, h, i, j] * v[b, j, h] for j in range(v.shape[1]))
                out[b, h, i] = z @ w_o[h]
    return out


def test_head_outputs_agree_with_a_loop():
    from nopelens.theory import head_outputs, value_outputs

    g = torch.Generator().manual_seed(0)
    pattern = torch.rand(2, 3, 4, 4, generator=g).softmax(-1)
    v = torch.randn(2, 4, 3, 5, generator=g)
    w_o = torch.randn(3, 5, 6, generator=g)
    vectorised = head_outputs(pattern, v, w_o)
    torch.testing.assert_close(
        vectorised, _loop_head_outputs(pattern, v, w_o), msg="head_outputs vs loop"
    )
    u = value_outputs(v, w_o)  # pattern-weighted sums of u give the same heads
    torch.testing.assert_close(torch.einsum("bhqk,bkhm->bhqm", pattern, u), vectorised)


def test_head_outputs_agree_with_transformer_lens_head_results(tiny_model, tiny_tokens):
    from nopelens.theory import head_outputs

    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(tiny_tokens)
    ours = head_outputs(cache["pattern", 0], cache["v", 0], tiny_model.W_O[0])
    tl = cache.stack_head_results(layer=1)  # [head_index, batch, pos, d_model]
    torch.testing.assert_close(
        ours,
        tl.permute(1, 0, 2, 3),
        atol=1e-5,
        rtol=1e-5,
        msg="head_outputs vs ActivationCache.stack_head_results",
    )


def test_head_outputs_rejects_mismatched_shapes():
    from nopelens.theory.attention import _check_heads

    with pytest.raises(ValueError, match=r"batch, head_index, key_pos=pos and d_head must agree"):
        _check_heads(torch.rand(1, 2, 3, 3), torch.rand(1, 4, 2, 5), torch.rand(2, 5, 6), "f")
    with pytest.raises(ValueError, match=r"'pattern' parameter of f must have shape"):
        _check_heads(torch.rand(2, 3, 3), torch.rand(1, 3, 2, 5), torch.rand(2, 5, 6), "f")


def test_entropy_of_uniform_and_one_hot_patterns():
    from nopelens.theory import (
        attention_entropy,
        max_attention,
        uniform_entropy,
        uniform_pattern,
    )

    torch.testing.assert_close(attention_entropy(uniform_pattern(8)), uniform_entropy(8))
    bidir = uniform_pattern(8, attention="bidirectional")
    torch.testing.assert_close(
        attention_entropy(bidir), uniform_entropy(8, attention="bidirectional")
    )
    one_hot = torch.eye(8)
    assert torch.equal(attention_entropy(one_hot), torch.zeros(8))  # 0 log 0 = 0, no NaN
    assert torch.equal(max_attention(one_hot), torch.ones(8))
    g = torch.Generator().manual_seed(1)
    random = torch.rand(3, 8, 8, generator=g).tril().clamp_min(0)
    random = random / random.sum(-1, keepdim=True)
    assert (attention_entropy(random) <= uniform_entropy(8) + 1e-5).all()
    assert math.isclose(float(uniform_entropy(8)[-1]), math.log(8), rel_tol=1e-6)


def test_sharpness_summary_runs_from_uniform_to_one_hot():
    from nopelens.theory import sharpness_summary, uniform_pattern

    uniform = sharpness_summary(uniform_pattern(6).expand(2, 3, 6, 6))
    assert uniform["relative_entropy"] == pytest.approx(1.0)
    assert uniform["max_attention"] == pytest.approx(uniform["uniform_max_attention"])
    sharp = sharpness_summary(torch.eye(6).expand(2, 3, 6, 6))
    assert sharp["relative_entropy"] == pytest.approx(0.0)
    assert sharp["max_attention"] == pytest.approx(1.0)
    assert sharp["attention_entropy"] < uniform["attention_entropy"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda f: f.uniform_pattern(0), r"'n' parameter of uniform_pattern must be an int >= 1"),
        (lambda f: f.uniform_entropy(-2), r"'n' parameter of uniform_entropy must be an int >= 1"),
    ],
)
def test_bad_sizes(call, match):
    from nopelens.theory import attention

    with pytest.raises(ValueError, match=match):
        call(attention)


def test_bad_attention_direction():
    from nopelens.theory import uniform_pattern

    # InvalidParameterError is a ValueError and a TypeError; under pytest the runtime type checker
    # (Literal annotation) may answer first with its own TypeError.
    with pytest.raises(TypeError, match=r"sideways"):
        uniform_pattern(4, attention="sideways")
