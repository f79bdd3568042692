"""query_scale_hooks: every attention score times the scale, the ALiBi bias included (issue 14)."""

from __future__ import annotations

import math

import pytest
import torch

POSITIONAL = ("none", "learned", "rotary", "alibi")


def _model(positional, attention="causal", **kwargs):
    from nopelens import build_model

    return build_model(
        n_layers=1,
        d_model=32,
        n_heads=4,
        d_vocab=40,
        n_ctx=12,
        positional=positional,
        attention=attention,
        seed=1,
        **kwargs,
    )


def _patterns(model, tokens, hooks=()):
    from nopelens import collect_activations

    return collect_activations(model, tokens, sites="pattern", fwd_hooks=list(hooks))["pattern"][0]


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
@pytest.mark.parametrize("positional", POSITIONAL)
def test_scale_zero_gives_exactly_uniform_attention(positional, attention):
    from nopelens import random_tokens
    from nopelens.theory import query_scale_hooks, uniform_pattern

    model = _model(positional, attention)
    tokens = random_tokens(3, 10, 40, seed=2)
    pattern = _patterns(model, tokens, query_scale_hooks(0.0))
    expected = uniform_pattern(10, attention=attention).expand(3, 4, 10, 10)
    torch.testing.assert_close(pattern, expected, atol=1e-7, rtol=0)
    if positional == "alibi":  # the bias alone is far from uniform: the hook must scale it
        assert (_patterns(model, tokens) - expected).abs().max() > 0.1


@pytest.mark.parametrize("positional", ["none", "rotary"])
def test_scaling_scores_equals_scaling_w_q_and_b_q(positional):
    from nopelens import random_tokens
    from nopelens.theory import query_scale_hooks

    model = _model(positional)
    tokens = random_tokens(3, 10, 40, seed=3)
    scaled = _patterns(model, tokens, query_scale_hooks(2.5))
    with torch.no_grad():
        model.blocks[0].attn.W_Q.mul_(2.5)
        model.blocks[0].attn.b_Q.mul_(2.5)
    torch.testing.assert_close(scaled, _patterns(model, tokens), atol=1e-6, rtol=1e-5)


def test_alibi_scores_are_scaled_with_their_bias():
    """pattern(scale) = softmax(scale * (q.k / sqrt(d_head) + m_h (j - i))) over allowed keys."""
    from nopelens import random_tokens
    from nopelens.measure import hook_name
    from nopelens.theory import query_scale_hooks

    model = _model("alibi")
    tokens = random_tokens(2, 9, 40, seed=4)
    seen = {}

    def record(scores, hook):
        seen["scores"] = scores.detach().clone()

    _patterns(model, tokens, [(hook_name("attn_scores", 0), record)])
    scores = seen["scores"]  # after the ALiBi bias and the causal mask
    alibi = model.blocks[0].attn.alibi[:, :9, :9]
    assert torch.isinf(scores).any() and alibi.abs().max() > 1.0
    for scale in (0.5, 3.0):
        expected = torch.softmax(torch.where(torch.isinf(scores), scores, scale * scores), dim=-1)
        pattern = _patterns(model, tokens, query_scale_hooks(scale))
        torch.testing.assert_close(pattern, expected, atol=1e-6, rtol=1e-5)


def test_first_layer_theory_of_an_alibi_model_at_scale_zero_is_uniform():
    """What `nopelens theory --positional alibi --attention-scale 0` reports."""
    from nopelens import random_tokens
    from nopelens.theory import first_layer_theory, query_scale_hooks

    model = _model("alibi", attn_only=True)
    theory = first_layer_theory(
        model, random_tokens(4, 10, 40, seed=5, distinct=True), fwd_hooks=query_scale_hooks(0.0)
    )
    assert theory.sharpness["relative_entropy"] == pytest.approx(1.0, abs=1e-6)
    # the mean over queries of the largest weight: 1/i for uniform causal attention
    harmonic = sum(1 / i for i in range(1, 11)) / 10
    assert theory.sharpness["max_attention"] == pytest.approx(harmonic, abs=1e-6)
    assert math.isfinite(float(theory["attn_out"].observed.sum()))
