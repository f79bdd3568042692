"""Ablations through hooks: each hook does exactly what it says, and nothing else."""

from __future__ import annotations

import pytest
import torch

SITES = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")


@pytest.fixture(scope="module")
def model():
    from nopelens import build_model

    return build_model(n_layers=2, d_model=32, n_heads=4, d_vocab=50, n_ctx=32, seed=0)


@pytest.fixture(scope="module")
def tokens():
    from nopelens import random_tokens

    return random_tokens(4, 12, 50, seed=1)


def _collect(model, tokens, hooks=(), sites=SITES):
    from nopelens import collect_activations

    return collect_activations(model, tokens, sites=sites, fwd_hooks=hooks)


def test_remove_residual_both_makes_block_outputs_exact(model, tokens):
    from nopelens.measure import remove_residual_hooks

    plain = _collect(model, tokens)
    acts = _collect(model, tokens, remove_residual_hooks(model, 0))
    # layer 0: resid_mid is attn_out and resid_post is mlp_out, bit for bit
    assert torch.equal(acts["resid_mid"][0], acts["attn_out"][0])
    assert torch.equal(acts["resid_post"][0], acts["mlp_out"][0])
    # ... which is not what the unablated model computes
    assert not torch.allclose(plain["resid_mid"][0], plain["attn_out"][0], atol=1e-3)
    # layer 0's inputs and attention are untouched; layer 1 reads the ablated stream
    assert torch.equal(acts["resid_pre"][0], plain["resid_pre"][0])
    assert torch.equal(acts["attn_out"][0], plain["attn_out"][0])
    assert torch.equal(acts["resid_pre"][1], acts["resid_post"][0])
    # layer 1 keeps its residual connection
    torch.testing.assert_close(acts["resid_mid"][1], acts["resid_pre"][1] + acts["attn_out"][1])


def test_remove_attn_residual_keeps_mlp_skip(model, tokens):
    from nopelens.measure import remove_residual_hooks

    acts = _collect(model, tokens, remove_residual_hooks(model, [1], connection="attn"))
    assert torch.equal(acts["resid_mid"][1], acts["attn_out"][1])
    torch.testing.assert_close(acts["resid_post"][1], acts["resid_mid"][1] + acts["mlp_out"][1])
    torch.testing.assert_close(acts["resid_mid"][0], acts["resid_pre"][0] + acts["attn_out"][0])


def test_remove_mlp_residual(model, tokens):
    from nopelens.measure import remove_residual_hooks

    acts = _collect(model, tokens, remove_residual_hooks(model, None, connection="mlp"))
    for layer in (0, 1):
        assert torch.equal(acts["resid_post"][layer], acts["mlp_out"][layer])
        torch.testing.assert_close(
            acts["resid_mid"][layer], acts["resid_pre"][layer] + acts["attn_out"][layer]
        )


def test_remove_residual_first_positions_only(model, tokens):
    from nopelens.measure import remove_residual_hooks

    plain = _collect(model, tokens)
    acts = _collect(model, tokens, remove_residual_hooks(model, 0, positions=5))
    assert torch.equal(acts["resid_mid"][0, :, :5], acts["attn_out"][0, :, :5])
    assert torch.equal(acts["resid_post"][0, :, :5], acts["mlp_out"][0, :, :5])
    # positions >= 5 of block 0 are exactly the unablated values
    for site in ("resid_mid", "resid_post"):
        assert torch.equal(acts[site][0, :, 5:], plain[site][0, :, 5:]), site
    # explicit positions, and N longer than the sequence means every position
    acts = _collect(model, tokens, remove_residual_hooks(model, 0, positions=[0, 7]))
    assert torch.equal(acts["resid_mid"][0, :, [0, 7]], acts["attn_out"][0, :, [0, 7]])
    assert torch.equal(acts["resid_mid"][0, :, 1:7], plain["resid_mid"][0, :, 1:7])
    acts = _collect(model, tokens, remove_residual_hooks(model, 0, positions=100))
    assert torch.equal(acts["resid_mid"][0], acts["attn_out"][0])


def test_attention_only_model():
    from nopelens import build_model, random_tokens
    from nopelens.measure import remove_residual_hooks

    model = build_model(n_layers=2, d_model=32, n_heads=4, d_vocab=20, n_ctx=16, attn_only=True)
    hooks = remove_residual_hooks(model, 1)
    acts = _collect(model, random_tokens(2, 8, 20), hooks, sites=("attn_out", "resid_post"))
    assert torch.equal(acts["resid_post"][1], acts["attn_out"][1])
    with pytest.raises(ValueError, match="attention-only"):
        remove_residual_hooks(model, 0, connection="mlp")


def test_no_model_surgery(model, tokens):
    from nopelens.measure import remove_residual_hooks, shuffle_prefix_hooks

    before = {k: v.clone() for k, v in model.state_dict().items()}
    logits = model(tokens)
    _collect(model, tokens, remove_residual_hooks(model, [0, 1]) + shuffle_prefix_hooks(4))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model(tokens), logits)  # the hooks were removed after the run
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layers": 2}, "'layers' parameter of remove_residual_hooks"),
        ({"layers": 0, "positions": 0}, "'positions' parameter"),
        ({"layers": 0, "positions": [1, -1]}, "'positions' parameter"),
        ({"layers": 0, "connection": "ffn"}, "'connection' parameter"),
    ],
)
def test_remove_residual_bad_arguments(model, kwargs, match):
    from nopelens.measure import remove_residual_hooks

    with pytest.raises(ValueError, match=match):
        remove_residual_hooks(model, **kwargs)


def test_shuffle_prefix_is_a_token_permutation(model, tokens):
    from nopelens.measure import prefix_permutation, shuffle_prefix_hooks

    perm = prefix_permutation(6, seed=3)
    assert sorted(perm) == list(range(6)) and perm != list(range(6))
    assert prefix_permutation(6, seed=3) == perm
    permuted = tokens.clone()
    permuted[:, :6] = tokens[:, perm]
    shuffled = _collect(model, tokens, shuffle_prefix_hooks(6, seed=3), sites=("embed",))
    explicit = _collect(model, permuted, sites=("embed",))
    assert torch.equal(shuffled["embed"], explicit["embed"])


def test_shuffle_prefix_under_nope_causal_invariance(model, tokens):
    """Layer 0 of a causal NoPE model sees its prefix as a set; layer 1 does not."""
    from nopelens.measure import shuffle_prefix_hooks

    n = 6
    plain = _collect(model, tokens, sites=("resid_post",))["resid_post"]
    shuffled = _collect(model, tokens, shuffle_prefix_hooks(n, seed=0), sites=("resid_post",))
    shuffled = shuffled["resid_post"]
    torch.testing.assert_close(shuffled[0, :, n:], plain[0, :, n:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(shuffled[0, :, :n], plain[0, :, :n], atol=1e-3)
    assert not torch.allclose(shuffled[1, :, n:], plain[1, :, n:], atol=1e-3)


def test_shuffle_prefix_changes_layer0_with_learned_positions(tokens):
    from nopelens import build_model
    from nopelens.measure import shuffle_prefix_hooks

    model = build_model(
        n_layers=1, d_model=32, n_heads=4, d_vocab=50, n_ctx=32, positional="learned"
    )
    plain = _collect(model, tokens, sites=("resid_post",))["resid_post"]
    shuffled = _collect(model, tokens, shuffle_prefix_hooks(6), sites=("resid_post",))
    assert not torch.allclose(shuffled["resid_post"][0, :, 6:], plain[0, :, 6:], atol=1e-4)


def test_shuffle_prefix_rejects_short_sequences(model):
    from nopelens.measure import shuffle_prefix_hooks

    with pytest.raises(ValueError, match="at least n_prefix"):
        _collect(model, torch.tensor([[1, 2, 3]]), shuffle_prefix_hooks(5), sites=("embed",))
    with pytest.raises(ValueError, match="'n_prefix' parameter"):
        shuffle_prefix_hooks(0)


def test_ablation_specs(model):
    from nopelens.measure import ablation_hooks, check_ablation, parse_ablation

    assert parse_ablation("none") == []
    assert parse_ablation("remove_residual:all@3") == [
        {"kind": "remove_residual", "connection": "both", "layers": None, "positions": 3}
    ]
    names = [name for name, _ in ablation_hooks(model, "remove_attn_residual:0,1")]
    assert names == [
        "blocks.0.hook_attn_out",
        "blocks.0.hook_resid_mid",
        "blocks.1.hook_attn_out",
        "blocks.1.hook_resid_mid",
    ]
    for bad in ("remove_residual", "remove_residual:x", "shuffle_prefix:3@2", "drop:1", ""):
        with pytest.raises(ValueError, match="'ablation' setting"):
            parse_ablation(bad)
    assert check_ablation("shuffle_prefix:40", n_layers=2, seq_len=32) == [
        "ablation 'shuffle_prefix:40' shuffles 40 positions but seq_len=32."
    ]
    assert check_ablation("remove_mlp_residual:0", n_layers=1, seq_len=8, attn_only=True)
    assert check_ablation("remove_residual:1@4+shuffle_prefix:4", n_layers=2, seq_len=8) == []
