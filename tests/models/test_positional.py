"""strip_positional, hybrid RoPE/NoPE stacks and nope_layers: checked by what the model computes.

Two exact criteria:
* permutation: a block whose attention gets no positional signal (and whose input holds none)
  gives the same output at position t whatever the order of the tokens before t;
* rotation: in a NoPE block of a rotary model the attention scores are the *unrotated* q.k,
  read off the hooks (hook_q, hook_k, hook_attn_scores).
"""

from __future__ import annotations

import pytest
import torch


def _block0_last(model, tokens):
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post")
    return cache["blocks.0.hook_resid_post"][:, -1]


def _prefix_permuted(tokens, seed=0):
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(tokens.shape[1] - 1, generator=gen)
    return torch.cat([tokens[:, :-1][:, perm], tokens[:, -1:]], dim=1)


def _order_blind(model, tokens) -> bool:
    return torch.allclose(
        _block0_last(model, tokens), _block0_last(model, _prefix_permuted(tokens)), atol=1e-5
    )


def _unrotated_scores(model, tokens, layer):
    """Observed attention scores and q.k/sqrt(d_head) of the unrotated q and k (GQA expanded)."""
    names = [f"blocks.{layer}.attn.hook_{n}" for n in ("q", "k", "attn_scores")]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    q, k, scores = (cache[n] for n in names)
    k = k.repeat_interleave(q.shape[2] // k.shape[2], dim=2)
    plain = torch.einsum("bqhd,bkhd->bhqk", q, k) / model.cfg.attn_scale
    causal = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
    return scores[..., causal], plain[..., causal]


def _rope(n_layers=2, **kwargs):
    from nopelens import build_model

    return build_model(
        n_layers=n_layers, d_model=32, n_heads=4, d_vocab=40, n_ctx=32, positional="rotary",
        **kwargs,
    )  # fmt: skip


TOKENS = torch.randint(0, 40, (4, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_stripping_a_pretrained_model_leaves_only_the_causal_mask(hf_models, arch):
    from nopelens.models import is_nope, nope_layers, strip_positional

    model = hf_models[arch]
    tokens = TOKENS + 3  # ordinary BPE ids
    assert not _order_blind(model, tokens) and not is_nope(model)
    stripped = strip_positional(model)
    assert _order_blind(stripped, tokens)
    assert is_nope(stripped) and nope_layers(stripped) == (0, 1)
    assert not is_nope(model) and not _order_blind(model, tokens)  # the original is untouched
    assert stripped.tokenizer is model.tokenizer  # shared, not copied


def test_a_stripped_rotary_model_scores_unrotated_queries_and_keys(hf_models):
    from nopelens.models import strip_positional

    model = hf_models["llama"]
    observed, plain = _unrotated_scores(model, TOKENS + 3, layer=1)
    assert (observed - plain).abs().max() > 1e-3  # RoPE is on
    observed, plain = _unrotated_scores(strip_positional(model), TOKENS + 3, layer=1)
    torch.testing.assert_close(observed, plain, atol=1e-5, rtol=0)


def test_a_hybrid_stack_has_rope_exactly_where_asked():
    from nopelens.models import describe_model, is_nope, nope_layers

    model = _rope(n_layers=4, nope_layers=[1, 3])
    assert nope_layers(model) == (1, 3) and not is_nope(model)
    assert describe_model(model).startswith("RoPE+NoPE[1,3] causal L4")
    for layer in range(4):
        observed, plain = _unrotated_scores(model, TOKENS, layer)
        unrotated = bool(torch.allclose(observed, plain, atol=1e-5))
        assert unrotated == (layer in (1, 3)), layer


def test_a_nope_first_block_is_order_blind_and_a_rope_one_is_not():
    assert _order_blind(_rope(nope_layers=[0]), TOKENS)
    assert not _order_blind(_rope(nope_layers=[1]), TOKENS)


def test_the_nope_mark_survives_contexts_longer_than_the_rotary_cache():
    """TransformerLens rebuilds rotary_sin/cos past 2048 positions; a NoPE block must stay NoPE."""
    from nopelens import build_model

    model = build_model(n_layers=2, d_model=8, n_heads=1, d_vocab=7, n_ctx=2100,
                        positional="rotary", nope_layers=[0], attn_only=True)  # fmt: skip
    # Why the mark is not an identity rotation in the buffers: block 1's buffers, set to the
    # identity, are rebuilt by TransformerLens as soon as a sequence outgrows them.
    attn1 = model.blocks[1].attn
    with torch.no_grad():
        attn1.rotary_sin.zero_()
        attn1.rotary_cos.fill_(1.0)
    tokens = torch.randint(0, 7, (1, 2100), generator=torch.Generator().manual_seed(1))
    observed, plain = _unrotated_scores(model, tokens, layer=0)
    torch.testing.assert_close(observed, plain, atol=1e-4, rtol=0)
    assert attn1.rotary_cos.shape[0] >= 2100 and attn1.rotary_sin.abs().max() > 0.5


def test_a_stripped_learned_model_equals_the_same_weights_without_w_pos():
    from nopelens import build_model
    from nopelens.models import is_nope, strip_positional

    learned = build_model(n_layers=2, d_model=32, n_heads=4, d_vocab=40, n_ctx=32,
                          positional="learned", seed=3)  # fmt: skip
    stripped = strip_positional(learned)
    with torch.no_grad():
        zeroed = strip_positional(learned)
        manual = build_model(n_layers=2, d_model=32, n_heads=4, d_vocab=40, n_ctx=32,
                             positional="learned", seed=3)  # fmt: skip
        manual.pos_embed.W_pos.zero_()
        torch.testing.assert_close(stripped(TOKENS), manual(TOKENS), atol=0, rtol=0)
    assert is_nope(stripped) and not is_nope(learned)
    assert "pos_embed.W_pos" not in dict(zeroed.named_parameters())
    assert stripped._nopelens_spec.positional == "none"


def test_inplace_strips_the_model_itself():
    from nopelens.models import nope_layers, strip_positional

    model = _rope()
    assert strip_positional(model, layers=[0], inplace=True) is model
    assert nope_layers(model) == (0,)
    strip_positional(model, layers=1, inplace=True)
    assert nope_layers(model) == (0, 1) and model._nopelens_spec.nope_layers == (0, 1)


def test_a_hybrid_model_round_trips_through_a_checkpoint(tmp_path):
    from nopelens import load_model, save_model
    from nopelens.models import nope_layers, spec_of, strip_positional

    built = _rope(n_layers=3, nope_layers=[2])
    stripped = strip_positional(_rope(n_layers=3, seed=5), layers=[0, 2])
    for model in (built, stripped):
        loaded = load_model(save_model(model, tmp_path / "m.pt"))
        assert nope_layers(loaded) == nope_layers(model)
        with torch.no_grad():
            torch.testing.assert_close(loaded(TOKENS), model(TOKENS), atol=0, rtol=0)
    # A rotary model stripped everywhere is still described as rotary + nope_layers, so its
    # rotary buffers keep a place to load into.
    everywhere = strip_positional(_rope())
    assert spec_of(everywhere).positional == "rotary"
    assert spec_of(everywhere).nope_layers == (0, 1)


def test_a_foreign_rotary_model_reports_its_nope_layers_in_its_spec(hf_models):
    from nopelens.models import model_spec, strip_positional

    hybrid = strip_positional(hf_models["llama"], layers=[1])
    assert model_spec(hybrid)["nope_layers"] == [1]
    assert model_spec(hf_models["llama"])["nope_layers"] == []


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"positional": "none", "nope_layers": [1]}, r"cannot be used with positional='none'"),
        ({"positional": "learned", "nope_layers": [1]}, r"needs positional='rotary'"),
        ({"positional": "rotary", "nope_layers": [2]}, r"block indices in \[0, 1\].*Got \[2\]"),
        ({"positional": "rotary", "nope_layers": [0, 0]}, r"distinct block indices"),
        ({"positional": "rotary", "nope_layers": [-1]}, r"distinct block indices >= 0"),
    ],
)
def test_bad_nope_layers_are_refused_before_building(kwargs, match):
    from nopelens import build_model

    with pytest.raises(ValueError, match=match):
        build_model(n_layers=2, d_model=16, n_heads=2, d_vocab=10, n_ctx=8, **kwargs)


def test_strip_positional_refuses_what_it_cannot_do():
    from nopelens import build_model
    from nopelens.models import strip_positional

    kw = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_vocab": 10, "n_ctx": 8}
    with pytest.raises(ValueError, match="removes learned .* and rotary.*'alibi'"):
        strip_positional(build_model(**kw, positional="alibi"))
    with pytest.raises(ValueError, match="must be None for a learned positional embedding"):
        strip_positional(build_model(**kw, positional="learned"), layers=[0])
    with pytest.raises(ValueError, match=r"block indices in \[0, 1\].*Got \[5\]"):
        strip_positional(build_model(**kw, positional="rotary"), layers=[5])


def test_a_nope_model_is_returned_unchanged():
    from nopelens import build_model
    from nopelens.models import is_nope, strip_positional

    model = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=10, n_ctx=8)
    again = strip_positional(model)
    assert is_nope(again) and again is not model
    with torch.no_grad():
        torch.testing.assert_close(again(TOKENS % 10), model(TOKENS % 10), atol=0, rtol=0)
