"""build_model, is_nope, save_model / load_model."""

from __future__ import annotations

import pytest
import torch

SMALL = dict(n_layers=2, d_model=32, n_heads=4, d_vocab=50, n_ctx=16)


def _layer0_out(model, tokens):
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post")
    return cache["blocks.0.hook_resid_post"]


@pytest.mark.parametrize("seed", range(3))
def test_nope_layer0_is_invariant_to_permuting_the_prefix(seed):
    from nopelens import build_model, random_tokens

    model = build_model(**SMALL, seed=seed)
    tokens = random_tokens(4, 12, 50, seed=seed)
    i = 9
    perm = torch.randperm(i, generator=torch.Generator().manual_seed(seed))
    permuted = tokens.clone()
    permuted[:, :i] = tokens[:, perm]
    assert not torch.equal(permuted, tokens)
    a, b = _layer0_out(model, tokens), _layer0_out(model, permuted)
    torch.testing.assert_close(a[:, i], b[:, i], atol=1e-5, rtol=0)
    # Deeper layers are not invariant: the pattern is not trivially a bag of tokens.
    assert not torch.allclose(model(tokens)[:, i], model(permuted)[:, i], atol=1e-4)


def test_learned_positions_break_prefix_permutation_invariance():
    from nopelens import build_model, random_tokens

    model = build_model(**SMALL, positional="learned")
    tokens = random_tokens(4, 12, 50, seed=1)
    permuted = tokens.clone()
    permuted[:, :9] = tokens[:, torch.arange(8, -1, -1)]
    a, b = _layer0_out(model, tokens), _layer0_out(model, permuted)
    assert (a[:, 9] - b[:, 9]).abs().max() > 1e-3


def test_bidirectional_nope_is_permutation_equivariant():
    from nopelens import build_model, random_tokens

    model = build_model(**SMALL, attention="bidirectional")
    tokens = random_tokens(3, 10, 50, seed=2)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    out = model(tokens)
    torch.testing.assert_close(model(tokens[:, perm]), out[:, perm], atol=1e-5, rtol=1e-5)


def test_nope_has_no_positional_parameter_and_stays_zero():
    from nopelens import build_model, is_nope, random_tokens

    model = build_model(**SMALL)
    assert is_nope(model)
    assert not any("pos" in name for name, _ in model.named_parameters())
    assert "pos_embed.W_pos" not in model.state_dict()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.5)
    tokens = random_tokens(4, 12, 50, seed=0)
    for _ in range(3):
        optimizer.zero_grad()
        model(tokens, return_type="loss").backward()
        optimizer.step()
    assert torch.count_nonzero(model.W_pos) == 0
    model.init_weights()
    assert torch.count_nonzero(model.W_pos) == 0
    _, cache = model.run_with_cache(tokens, names_filter="hook_pos_embed")
    assert torch.count_nonzero(cache["hook_pos_embed"]) == 0


def test_identical_tokens_have_identical_embeddings_at_every_position():
    from nopelens import build_model

    model = build_model(**SMALL)
    tokens = torch.full((1, 8), 7)
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_pre")
    resid = cache["blocks.0.hook_resid_pre"][0]
    torch.testing.assert_close(resid, resid[:1].expand_as(resid), atol=0, rtol=0)


def test_causal_pattern_first_row_attends_to_itself():
    from nopelens import build_model, random_tokens

    model = build_model(**SMALL)
    _, cache = model.run_with_cache(random_tokens(2, 6, 50), names_filter=lambda n: "pattern" in n)
    row0 = cache["blocks.1.attn.hook_pattern"][:, :, 0]
    torch.testing.assert_close(row0[..., 0], torch.ones_like(row0[..., 0]))
    assert torch.count_nonzero(row0[..., 1:]) == 0


def test_demo_recipe_zeroed_frozen_w_pos_counts_as_nope():
    from nopelens import build_model, is_nope

    model = build_model(**SMALL, positional="learned")
    assert not is_nope(model)
    model.pos_embed.W_pos.data.zero_()
    model.pos_embed.W_pos.requires_grad_(False)
    assert is_nope(model)


@pytest.mark.parametrize("positional", ["none", "learned", "rotary", "alibi"])
def test_controls_build_and_run(positional):
    from nopelens import build_model, is_nope
    from nopelens.models import positional_kind

    model = build_model(**SMALL, positional=positional)
    assert positional_kind(model) == positional
    assert is_nope(model) == (positional == "none")
    assert model(torch.zeros(1, 5, dtype=torch.long)).shape == (1, 5, 50)


def test_same_seed_same_weights():
    from nopelens import build_model

    a = build_model(**SMALL, seed=5)
    b = build_model(**SMALL, seed=5)
    c = build_model(**SMALL, seed=6)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.W_E, c.W_E)
    assert a.cfg.seed is None  # TransformerLens never reseeds the global RNG on our behalf


_RNG_SCRIPT = """
import random, numpy as np, torch
torch.manual_seed(123); np.random.seed(123); random.seed(123)
t, n, p = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
from nopelens import build_model, random_tokens
build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=10, n_ctx=8, seed=7)
random_tokens(2, 4, 10, seed=1, distinct=True)
assert torch.equal(torch.get_rng_state(), t), "torch"
assert (np.random.get_state()[1] == n).all(), "numpy"
assert random.getstate() == p, "random"
print("untouched")
"""


def test_caller_rng_state_is_untouched():
    # In a fresh interpreter: under pytest, beartype's runtime checks (the jaxtyping plugin)
    # draw from the global `random` module themselves.
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _RNG_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "untouched"


def test_construction_emits_no_warning():
    import warnings

    from nopelens import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model(**SMALL)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(init_mode="Xavier"), r"'init_mode' parameter of build_model must be one of"),
        (dict(positional="sinusoidal"), r"'positional' parameter of build_model must be one of"),
        (dict(attention="sideways"), r"'attention' parameter .* Got 'sideways'"),
        (dict(n_heads=5), r"'n_heads' parameter of build_model must divide d_model=32"),
        (dict(n_layers=0), r"'n_layers' parameter of build_model must be an int >= 1. Got 0"),
        (dict(act_fn="swishy"), r"'act_fn' parameter of build_model must be one of"),
        (dict(normalization_type="BN"), r"'normalization_type' parameter"),
        (dict(attn_onyl=True), r"unknown parameter 'attn_onyl'.*Did you mean 'attn_only'"),
        (dict(positional_embedding_type="standard"), r"cannot be set: use positional="),
        (dict(seed=-1), r"'seed' parameter of build_model must be an int >= 0"),
        (dict(attn_only="yes"), r"'attn_only' parameter of build_model must be a bool"),
        (dict(initializer_range=0.0), r"'initializer_range' parameter .* float > 0"),
        (dict(tokenizer_name="gpt2"), r"'tokenizer_name' parameter of build_model cannot be set"),
        (dict(rotary_dim=4), r"only used with positional='rotary'"),
        (dict(positional="rotary", rotary_dim=3), r"must be even and <= d_head=8"),
        (dict(device="gpu:x"), r"'device' parameter of build_model must be a torch device"),
    ],
)
def test_bad_config_is_rejected_before_construction(kwargs, match):
    from nopelens import build_model

    with pytest.raises(ValueError, match=match):
        build_model(**{**SMALL, **kwargs})


def test_every_problem_is_listed_at_once():
    from nopelens import build_model

    with pytest.raises(ValueError, match=r"received 3 invalid arguments") as info:
        build_model(**{**SMALL, "n_layers": 0, "init_mode": "Xavier", "positional": "abs"})
    assert "n_layers" in str(info.value) and "init_mode" in str(info.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"positional": "learned"},
        {"positional": "rotary"},
        {"positional": "alibi"},
        {"attention": "bidirectional"},
        {"attn_only": True, "normalization_type": None},
        {"normalization_type": "RMS", "act_fn": "relu", "init_mode": "xavier_normal"},
    ],
)
def test_save_load_round_trip_gives_identical_logits(tmp_path, overrides):
    from nopelens import build_model, is_nope, load_model, model_spec, random_tokens, save_model

    model = build_model(**{**SMALL, **overrides}, seed=3)
    path = save_model(model, tmp_path / "sub" / "model.pt")
    assert not [p for p in path.parent.iterdir() if p.name != "model.pt"]  # no temp file left
    loaded = load_model(path)
    tokens = random_tokens(3, 10, 50, seed=4)
    assert torch.equal(loaded(tokens), model(tokens))
    assert is_nope(loaded) == is_nope(model)
    assert model_spec(loaded) == model_spec(model)
    if is_nope(model):  # NoPE survives re-initialisation after loading too
        loaded.init_weights()
        assert torch.count_nonzero(loaded.W_pos) == 0


def test_truncated_or_foreign_checkpoints_give_clear_errors(tmp_path):
    from nopelens import build_model, load_model, save_model

    path = save_model(build_model(**SMALL), tmp_path / "m.pt")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"not a readable nopelens checkpoint \(truncated"):
        load_model(truncated)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match=r"is not a nopelens checkpoint"):
        load_model(other)
    with pytest.raises(FileNotFoundError, match=r"no such file"):
        load_model(tmp_path / "missing.pt")


def test_describe_and_spec():
    from nopelens import build_model, model_spec
    from nopelens.models import describe_model

    model = build_model(**SMALL, positional="alibi", attention="bidirectional", act_fn="relu")
    assert describe_model(model) == "ALiBi bidirectional L2 d32 h4 LN relu"
    spec = model_spec(model)
    assert spec["positional"] == "alibi" and spec["act_fn"] == "relu" and spec["seed"] == 0
    rebuilt = build_model(**spec)
    assert torch.equal(rebuilt.W_Q, model.W_Q)


_REDRAW_CASES = [
    {},
    {"positional": "learned"},
    {"positional": "rotary"},
    {"positional": "alibi"},
    {"positional": "rotary", "nope_layers": [1]},
    {"attention": "bidirectional"},
    {"normalization_type": "LNPre"},
    {"normalization_type": "RMS"},
    {"normalization_type": "none"},
    {"act_fn": "solu_ln"},
    {"attn_only": True},
    {"init_mode": "xavier_uniform"},
    {"init_mode": "xavier_normal"},
    {"init_mode": "kaiming_uniform"},
    {"init_mode": "kaiming_normal", "initializer_range": 0.5},
    {"initializer_range": 0.2},
    {"n_key_value_heads": 2},
    {"dtype": "float64"},
]


@pytest.mark.parametrize("extra", _REDRAW_CASES, ids=lambda e: str(e) or "nope")
def test_redraw_weights_equals_a_fresh_build(extra):
    from nopelens.models import build_model, fixed_parameters, model_spec, redraw_weights

    model = build_model(**SMALL, seed=3, **extra)
    fixed = fixed_parameters(model)
    assert fixed and not any("W_" in name for name in fixed)
    with torch.no_grad():  # a model that was used: every parameter changed, a hook left on
        for param in model.parameters():
            param.add_(1.0)
    model.add_hook("blocks.0.hook_resid_post", lambda x, hook: x * 0)
    again = redraw_weights(model, 4, fixed)
    fresh = build_model(**SMALL, seed=4, **extra)
    assert again is model
    mine, theirs = again.state_dict(), fresh.state_dict()
    assert list(mine) == list(theirs)
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name
    assert model_spec(again) == model_spec(fresh)
    assert not again.training
    tokens = torch.arange(12).reshape(2, 6) % SMALL["d_vocab"]
    assert torch.equal(again(tokens), fresh(tokens))  # the hook is gone


def test_redraw_weights_refuses_other_models_seeds_and_parameters():
    from nopelens.models import build_model, fixed_parameters, redraw_weights

    model = build_model(**SMALL, seed=3)
    fixed = fixed_parameters(model)
    with pytest.raises(ValueError, match="'model' parameter of redraw_weights must be a CPU model"):
        redraw_weights(torch.nn.Linear(2, 2), 1, fixed)
    with pytest.raises(ValueError, match="'seed' parameter of redraw_weights"):
        redraw_weights(model, -1, fixed)
    other = fixed_parameters(build_model(**{**SMALL, "n_layers": 1}, seed=3))
    with pytest.raises(ValueError, match="'fixed' parameter of redraw_weights"):
        redraw_weights(model, 1, other)
