"""collect_activations / iter_activations and token validation."""

from __future__ import annotations

import pytest
import torch


def test_shapes_per_site(tiny_model, tiny_tokens):
    from nopelens import collect_activations

    acts = collect_activations(
        tiny_model, tiny_tokens, sites=("embed", "resid_pre", "attn_out", "pattern", "v")
    )
    assert acts.layers == (0, 1)
    assert acts["embed"].shape == (1, 8, 16, 32)
    assert acts["resid_pre"].shape == (2, 8, 16, 32)
    assert acts["attn_out"].shape == (2, 8, 16, 32)
    assert acts["pattern"].shape == (2, 8, 4, 16, 16)
    assert acts["v"].shape == (2, 8, 16, 4, 8)
    with pytest.raises(KeyError, match="was not collected"):
        acts["resid_post"]


def test_matches_a_full_cache_and_only_requested_hooks_are_cached(tiny_model, tiny_tokens):
    from nopelens import collect_activations

    seen = []

    def spy(tensor, hook):
        seen.append(hook.name)

    _, cache = tiny_model.run_with_cache(tiny_tokens)
    acts = collect_activations(
        tiny_model, tiny_tokens, sites=("resid_post", "ln1_normalized"), layers=[1]
    )
    assert torch.equal(acts["resid_post"][0], cache["blocks.1.hook_resid_post"])
    assert torch.equal(acts["ln1_normalized"][0], cache["blocks.1.ln1.hook_normalized"])
    # the forward pass stops after the last block needed
    probes = {"blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "unembed.hook_in"}
    tiny_model.add_hook(lambda name: name in probes, spy)
    try:
        collect_activations(tiny_model, tiny_tokens, sites="resid_post", layers=[0])
    finally:
        tiny_model.reset_hooks()
    assert seen == ["blocks.0.hook_resid_post"]


def test_batching_does_not_change_results(tiny_model, tiny_tokens):
    from nopelens import collect_activations
    from nopelens.measure import iter_activations

    whole = collect_activations(tiny_model, tiny_tokens, sites=("resid_mid", "pattern"))
    batched = collect_activations(
        tiny_model, tiny_tokens, sites=("resid_mid", "pattern"), batch_size=3
    )
    for site in ("resid_mid", "pattern"):
        torch.testing.assert_close(batched[site], whole[site], atol=1e-6, rtol=1e-6)
    parts = list(iter_activations(tiny_model, tiny_tokens, sites="resid_mid", batch_size=3))
    assert [p["resid_mid"].shape[1] for p in parts] == [3, 3, 2]


def test_fwd_hooks_are_applied(tiny_model, tiny_tokens):
    from nopelens import collect_activations

    zero = [("hook_embed", lambda t, hook: torch.zeros_like(t))]
    acts = collect_activations(
        tiny_model, tiny_tokens, sites=("embed", "resid_post"), fwd_hooks=zero
    )
    assert torch.count_nonzero(acts["embed"]) == 0
    # the hook is gone afterwards
    assert torch.count_nonzero(collect_activations(tiny_model, tiny_tokens, sites="embed")["embed"])


def test_attention_only_models():
    from nopelens import build_model, collect_activations, random_tokens

    model = build_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8, attn_only=True)
    tokens = random_tokens(2, 8, 20)
    acts = collect_activations(model, tokens, sites=("resid_post", "attn_out"))
    torch.testing.assert_close(
        acts["resid_post"][0],
        collect_activations(model, tokens, sites="resid_pre", layers=[0])["resid_pre"][0]
        + acts["attn_out"][0],
    )
    for site in ("resid_mid", "mlp_out"):
        with pytest.raises(ValueError, match=rf"Site '{site}' does not exist .*attention-only"):
            collect_activations(model, tokens, sites=site)


def test_normalization_none_has_no_ln_sites():
    from nopelens import build_model, collect_activations, random_tokens

    model = build_model(
        n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8, normalization_type=None
    )
    with pytest.raises(ValueError, match=r"normalization_type=None"):
        collect_activations(model, random_tokens(1, 4, 20), sites="ln1_normalized")


def test_any_hooked_transformer_works():
    import warnings

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from nopelens import collect_activations

    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=16,
        n_heads=2,
        d_head=8,
        d_vocab=20,
        n_ctx=8,
        act_fn="relu",
        device="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg)
    acts = collect_activations(model, torch.tensor([[1, 2, 3]]), sites="hook_resid_post")
    assert acts["hook_resid_post"].shape == (1, 1, 3, 16)


@pytest.mark.parametrize(
    ("tokens", "match"),
    [
        (torch.tensor([[1, 50]]), r"ids in \[0, 50\) \(d_vocab=50\). Got ids from 1 to 50"),
        (torch.tensor([[-1, 2]]), r"Got ids from -1 to 2"),
        (torch.zeros(2, 33, dtype=torch.long), r"33 tokens but the model's n_ctx is 32"),
        (torch.zeros(0, 4, dtype=torch.long), r"at least one sequence .* Got shape \(0, 4\)"),
        (torch.zeros(2, 2, 2, dtype=torch.long), r"must have shape \[batch, pos\]"),
    ],
)
def test_bad_tokens(tiny_model, tokens, match):
    from nopelens import collect_activations

    with pytest.raises(ValueError, match=match):
        collect_activations(tiny_model, tokens)


@pytest.mark.parametrize(
    ("tokens", "match"),
    [
        (torch.rand(2, 4), r"'tokens' parameter of f must hold integer token ids"),
        ([[1, 2, 3]], r"must be an integer torch.Tensor \[batch, pos\]. Got list"),
        (torch.tensor([[True]]), r"Got dtype torch.bool"),
    ],
)
def test_wrong_token_types(tiny_model, tokens, match):
    from nopelens import collect_activations
    from nopelens.measure import check_tokens

    with pytest.raises(TypeError, match=match):  # InvalidParameterError is also a ValueError
        check_tokens(tiny_model, tokens, func="f")
    with pytest.raises(TypeError):  # under pytest the runtime type checker may answer first
        collect_activations(tiny_model, tokens)


def test_one_dimensional_tokens_are_one_sequence(tiny_model):
    from nopelens import collect_activations

    assert collect_activations(tiny_model, torch.tensor([1, 2, 3]))["resid_post"].shape[1] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(sites="resid_postt"), r"'sites' parameter of collect_activations must contain"),
        (dict(sites=()), r"must name at least one site"),
        (dict(layers=[2]), r"'layers' parameter .* block indices in \[0, 1\] .* Got \(2,\)"),
        (dict(layers=[-1]), r"'layers' parameter"),
        (dict(layers=[True]), r"'layers' parameter"),
        (dict(batch_size=0), r"'batch_size' parameter of collect_activations must be None or"),
        (dict(sites="result"), r"set_use_attn_result\(True\)"),
    ],
)
def test_bad_arguments(tiny_model, tiny_tokens, kwargs, match):
    from nopelens import collect_activations

    with pytest.raises(ValueError, match=match):
        collect_activations(tiny_model, tiny_tokens, **kwargs)


def test_hook_names():
    from nopelens.measure import hook_name

    assert hook_name("pattern", 3) == "blocks.3.attn.hook_pattern"
    assert hook_name("ln2_normalized", 1) == "blocks.1.ln2.hook_normalized"
    assert hook_name("pos_embed") == "hook_pos_embed"
    with pytest.raises(ValueError, match="pass a layer index"):
        hook_name("resid_pre")
