"""First-layer theory: closed forms, the exact decomposition, and prediction vs observation."""

from __future__ import annotations

import math

import pytest
import torch

D_VOCAB = 2048  # large vocabulary: the mean value vector (~1/d_vocab of the variance) is negligible


def _uniform(model):
    """Zero W_Q, W_K (and biases) of block 0: exactly uniform attention."""
    attn = model.blocks[0].attn
    with torch.no_grad():
        for param in (attn.W_Q, attn.W_K, attn.b_Q, attn.b_K):
            param.zero_()
    return model


@pytest.fixture(scope="module")
def uniform_theory():
    """W_Q = W_K = 0, d_model 512, 64 random sequences of 24 distinct tokens."""
    from nopelens import build_model, random_tokens
    from nopelens.theory import first_layer_theory

    model = _uniform(
        build_model(
            n_layers=1, d_model=512, n_heads=8, d_vocab=D_VOCAB, n_ctx=24, attn_only=True, seed=0
        )
    )
    return first_layer_theory(model, random_tokens(64, 24, D_VOCAB, seed=0, distinct=True))


# --------------------------------------------------------------------------------------------
# closed forms


@pytest.mark.parametrize("n", [1, 2, 7, 30])
def test_uniform_attention_similarity_sanity(n):
    from nopelens.theory import uniform_attention_similarity

    s = uniform_attention_similarity(n)
    assert s.shape == (n, n) and s.dtype == torch.float32
    torch.testing.assert_close(s, s.T)
    torch.testing.assert_close(s.diagonal(), torch.ones(n))
    assert ((s > 0) & (s <= 1)).all()
    for i in range(n):  # monotone away from the diagonal, on both sides
        assert (s[i, i + 1 :].diff() < 0).all() and (s[i, : i + 1].diff() > 0).all()
    if n >= 4:  # sqrt(min/max), 1-indexed
        assert s[0, 3] == pytest.approx(math.sqrt(1 / 4)) and s[1, 3] == pytest.approx(0.5**0.5)


def test_closed_form_is_the_cosine_of_uniform_a_a_transpose():
    """The derivation's key step: (A A^T)_ij = 1/max(i, j) for uniform causal attention."""
    from nopelens.theory import gram_to_cosine, uniform_attention_similarity, uniform_pattern

    a = uniform_pattern(12).double()
    i = torch.arange(1, 13, dtype=torch.float64)
    torch.testing.assert_close(a @ a.T, 1 / torch.maximum(i[:, None], i[None, :]))
    torch.testing.assert_close(gram_to_cosine(a @ a.T).float(), uniform_attention_similarity(12))


@pytest.mark.parametrize(("s2", "a2"), [(0.0, 1.0), (1.0, 1.0), (0.1, 3.0), (5.0, 0.5)])
def test_uniform_residual_similarity_sanity(s2, a2):
    from nopelens.theory import uniform_attention_similarity, uniform_residual_similarity

    n = 10
    s = uniform_residual_similarity(n, s2, a2)
    torch.testing.assert_close(s, s.T)
    torch.testing.assert_close(s.diagonal(), torch.ones(n))
    for i in range(n):
        assert (s[i, i + 1 :].diff() < 0).all() and (s[i, :i].diff() > 0).all()
    assert (s <= uniform_attention_similarity(n) + 1e-6).all()  # a residual only dilutes
    i, j = 2, 6  # 1-indexed 3 and 7
    expected = (a2 / 7) / math.sqrt((s2 + a2 / 3) * (s2 + a2 / 7))
    assert float(s[i, j]) == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(
        uniform_residual_similarity(n, 0.0, a2), uniform_attention_similarity(n)
    )
    assert torch.allclose(uniform_residual_similarity(n, 3 * s2, 3 * a2), s)  # only the ratio


def test_closed_forms_match_a_monte_carlo_of_their_assumptions():
    """Isotropic i.i.d. values and residuals, uniform causal attention, large d_model."""
    from nopelens.measure import self_similarity
    from nopelens.theory import uniform_pattern, uniform_residual_similarity, uniform_variance

    g = torch.Generator().manual_seed(0)
    n, d, s2, a2 = 10, 4096, 0.5, 2.0
    values = torch.randn(8, n, d, generator=g) * math.sqrt(a2)
    resid = torch.randn(8, n, d, generator=g) * math.sqrt(s2)
    hidden = resid + uniform_pattern(n) @ values
    observed = self_similarity(hidden).mean(0)
    assert (observed - uniform_residual_similarity(n, s2, a2)).abs().max() < 0.02
    variance = hidden.var(-1, correction=0).mean(0)
    assert ((variance / uniform_variance(n, s2, a2)) - 1).abs().max() < 0.03


def test_bidirectional_closed_forms_have_no_structure():
    from nopelens.theory import (
        uniform_attention_similarity,
        uniform_residual_similarity,
        uniform_variance,
    )

    assert torch.equal(uniform_attention_similarity(5, attention="bidirectional"), torch.ones(5, 5))
    s = uniform_residual_similarity(5, 1.0, 1.0, attention="bidirectional")
    off = s[~torch.eye(5, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, 0.2 / 1.2))
    assert torch.allclose(
        uniform_variance(5, 1.0, 1.0, attention="bidirectional"), torch.full((5,), 1.2)
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda t: t.uniform_attention_similarity(0),
            r"'n' parameter of uniform_attention_similarity must be an int >= 1. Got 0",
        ),
        (
            lambda t: t.uniform_residual_similarity(4, -1.0, 1.0),
            r"'s2' parameter of uniform_residual_similarity must be a finite float >= 0.0",
        ),
        (
            lambda t: t.uniform_residual_similarity(4, 1.0, math.nan),
            r"'a2' parameter of uniform_residual_similarity must be a finite float",
        ),
        (lambda t: t.uniform_residual_similarity(4, 0.0, 0.0), r"cannot both be 0"),
        (lambda t: t.uniform_variance(3, 1.0, -2.0), r"'a2' parameter of uniform_variance"),
        (lambda t: t.query_scale_hooks(-1.0), r"'scale' parameter of query_scale_hooks"),
    ],
)
def test_bad_closed_form_arguments(call, match):
    from nopelens import theory

    with pytest.raises(ValueError, match=match):
        call(theory)


def test_fit_metrics():
    from nopelens.theory import fit_metrics, uniform_attention_similarity

    s = uniform_attention_similarity(6)
    shifted = fit_metrics(s, s + 0.1 * torch.eye(6) + 0.05)  # the diagonal is ignored
    assert shifted["pearson_r"] == pytest.approx(1.0)
    assert shifted["rmse"] == pytest.approx(0.05, rel=1e-4)
    assert shifted["max_error"] == pytest.approx(0.05, rel=1e-4)
    assert math.isnan(fit_metrics(s, torch.ones(6, 6))["pearson_r"])  # constant prediction
    with pytest.raises(TypeError):  # our InvalidParameterError, or the runtime shape checker
        fit_metrics(s, s[None])


def test_pair_statistics_agree_with_a_loop():
    from nopelens.theory import estimate_gram_parameters, same_token_matrix

    g = torch.Generator().manual_seed(0)
    tokens = torch.tensor([[1, 2, 1, 3], [4, 4, 5, 6]])
    table = torch.randn(8, 2, 5, generator=g, dtype=torch.float64)  # token -> per-head vectors
    values = table[tokens]  # [batch, pos, head_index, d_model]
    embed = torch.randn(8, 5, generator=g, dtype=torch.float64)[tokens]
    zeros = torch.zeros(4, 5, dtype=torch.float64)
    params = estimate_gram_parameters(
        embed, zeros, values, zeros[0], embed, same_token_matrix(tokens)
    )
    pairs = [
        (b, j, k)
        for b in range(2)
        for j in range(4)
        for k in range(4)
        if tokens[b, j] != tokens[b, k]
    ]
    diff = sum(torch.einsum("hd,kd->hk", values[b, j], values[b, k]) for b, j, k in pairs)
    torch.testing.assert_close(params.value_diff, diff / len(pairs), msg="value_diff vs loop")
    same = sum(
        torch.einsum("hd,kd->hk", values[b, j], values[b, j]) for b in range(2) for j in range(4)
    )
    torch.testing.assert_close(params.value_same, same / 8, msg="value_same vs loop")
    cross = sum(values[b, k] @ embed[b, j] for b, j, k in pairs) / len(pairs)
    torch.testing.assert_close(params.cross_diff, cross, msg="cross_diff vs loop")
    assert params.n_pairs == len(pairs) == 20  # 2 x (16 ordered pairs - 4 self - 2 repeats)


def test_prediction_is_exact_when_the_gram_model_holds():
    """Orthonormal token vectors (embeddings and each head in its own subspace): G is exactly
    sigma^2 T, so the predicted Gram equals the Gram of the hidden states, repeats included."""
    from nopelens.theory import (
        estimate_gram_parameters,
        gram_to_cosine,
        predict_gram,
        same_token_matrix,
    )

    g = torch.Generator().manual_seed(1)
    vocab, n_heads = 6, 2
    basis = torch.eye(vocab * (1 + n_heads), dtype=torch.float64)
    embed_table = basis[:vocab]
    value_table = torch.stack([basis[vocab * (h + 1) : vocab * (h + 2)] for h in range(n_heads)], 1)
    tokens = torch.randint(0, vocab, (3, 7), generator=g)
    pattern = torch.rand(3, n_heads, 7, 7, generator=g, dtype=torch.float64).tril()
    pattern = pattern / pattern.sum(-1, keepdim=True)
    embed, values = embed_table[tokens], value_table[tokens]
    attn_out = torch.einsum("bhij,bjhd->bid", pattern, values)
    zeros = torch.zeros(7, basis.shape[0], dtype=torch.float64)
    same = same_token_matrix(tokens)
    params = estimate_gram_parameters(embed, zeros, values, zeros[0], embed, same)
    grams = predict_gram(params, pattern, same)
    for site, hidden in (("attn_out", attn_out), ("resid_mid", embed + attn_out)):
        torch.testing.assert_close(
            grams[site], hidden @ hidden.transpose(-1, -2), msg=f"predicted vs actual Gram ({site})"
        )
        torch.testing.assert_close(
            gram_to_cosine(grams[site]), gram_to_cosine(hidden @ hidden.transpose(-1, -2))
        )


# --------------------------------------------------------------------------------------------
# exact decomposition


@pytest.mark.parametrize(
    "config",
    [
        {},  # causal NoPE, LN, MLP
        {"positional": "learned"},
        {"attn_only": True},
        {"normalization_type": None, "attention": "bidirectional"},
        {"normalization_type": "RMS", "positional": "rotary"},
    ],
    ids=["nope", "learned", "attn_only", "noLN_bidirectional", "rms_rotary"],
)
def test_decomposition_rebuilds_attn_out_and_resid_mid(config):
    from nopelens import build_model, random_tokens
    from nopelens.theory import decompose_first_layer

    model = build_model(n_layers=2, d_model=32, n_heads=4, d_vocab=50, n_ctx=16, seed=3, **config)
    tokens = random_tokens(3, 12, 50, seed=1)
    parts = decompose_first_layer(model, tokens)
    assert parts.heads.shape == (3, 4, 12, 32)
    torch.testing.assert_close(
        parts.heads.sum(1) + parts.bias,
        parts.attn_out,
        atol=1e-5,
        rtol=0,
        msg="heads + b_O vs blocks.0.hook_attn_out",
    )
    torch.testing.assert_close(
        parts.residual + parts.heads.sum(1) + parts.bias,
        parts.resid_mid,
        atol=1e-5,
        rtol=0,
        msg=f"residual + heads + b_O vs {parts.resid_mid_hook}",
    )
    assert max(parts.reconstruction_error().values()) < 1e-5
    assert parts.head_labels() == ["L0H0", "L0H1", "L0H2", "L0H3"]
    if config.get("attn_only"):
        assert parts.resid_mid_hook == "blocks.0.hook_resid_post" and parts.resid_post is None
    else:
        assert parts.resid_mid_hook == "blocks.0.hook_resid_mid"
    if config.get("positional") == "learned":
        assert parts.pos_embed.abs().sum() > 0  # the learned PE is part of the residual


def test_decomposition_agrees_with_a_manual_forward():
    """Hook-collected parts vs a forward written out by hand from the weights."""
    from nopelens import build_model, random_tokens
    from nopelens.theory import decompose_first_layer

    model = build_model(
        n_layers=1,
        d_model=16,
        n_heads=2,
        d_vocab=30,
        n_ctx=8,
        seed=0,
        normalization_type=None,
        attn_only=True,
    )
    tokens = random_tokens(2, 6, 30, seed=0)
    parts = decompose_first_layer(model, tokens)
    with torch.no_grad():
        x = model.W_E[tokens]
        q = torch.einsum("bpd,hde->bphe", x, model.W_Q[0]) + model.b_Q[0]
        k = torch.einsum("bpd,hde->bphe", x, model.W_K[0]) + model.b_K[0]
        v = torch.einsum("bpd,hde->bphe", x, model.W_V[0]) + model.b_V[0]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(model.cfg.d_head)
        scores = scores.masked_fill(torch.ones(6, 6).triu(1).bool(), -math.inf)
        heads = torch.einsum("bhqk,bkhe,hem->bhqm", scores.softmax(-1), v, model.W_O[0])
    torch.testing.assert_close(
        parts.heads, heads, atol=1e-5, rtol=1e-5, msg="decompose_first_layer vs manual forward"
    )


# --------------------------------------------------------------------------------------------
# prediction vs observation


def test_uniform_attention_prediction_matches_closed_form(uniform_theory):
    for site in ("attn_out", "resid_mid"):
        st = uniform_theory[site]
        err = (st.predicted - st.closed_form).abs().max()
        assert err < 0.02, (site, float(err))


def test_uniform_attention_observation_matches_closed_form(uniform_theory):
    st = uniform_theory["attn_out"]
    err = (st.observed - st.closed_form).abs()
    assert err.max() < 0.05, float(err.max())
    assert err.mean() < 0.01
    metrics = uniform_theory.metrics.set_index(["site", "prediction"])
    assert metrics.loc[("attn_out", "closed_form"), "pearson_r"] > 0.99
    assert metrics.loc[("attn_out", "pattern"), "nc_observed"] > 0.9
    assert uniform_theory.sharpness["relative_entropy"] == pytest.approx(1.0, abs=1e-5)


def test_bidirectional_uniform_attention_shows_no_neighborhood_structure():
    from nopelens import build_model, random_tokens
    from nopelens.measure import distance_profile
    from nopelens.theory import first_layer_theory

    model = _uniform(
        build_model(
            n_layers=1,
            d_model=256,
            n_heads=4,
            d_vocab=512,
            n_ctx=16,
            attn_only=True,
            attention="bidirectional",
            seed=0,
        )
    )
    theory = first_layer_theory(model, random_tokens(16, 16, 512, seed=0, distinct=True))
    assert theory.attention == "bidirectional"
    metrics = theory.metrics.set_index(["site", "prediction"])
    for site in ("attn_out", "resid_mid"):
        row = metrics.loc[(site, "pattern")]
        assert abs(row["nc_observed"] - 0.5) < 0.1, site  # finite-d noise only
        assert abs(row["nc_predicted"] - 0.5) < 0.01, site
        for kind in ("observed", "predicted", "closed_form"):
            profile = distance_profile(getattr(theory[site], kind))[1:]
            assert profile.max() - profile.min() < 0.01, (site, kind)


def test_causal_uniform_attention_shows_the_neighborhood_structure(uniform_theory):
    from nopelens.measure import distance_profile

    for kind in ("observed", "predicted"):
        profile = distance_profile(getattr(uniform_theory["attn_out"], kind))
        assert (profile.diff() < 0).all() and profile[1] - profile[-1] > 0.3, kind


def test_first_layer_theory_result_layout(tiny_model, tiny_tokens):
    from nopelens.theory import METRIC_COLUMNS, first_layer_theory

    theory = first_layer_theory(tiny_model, tiny_tokens)
    assert list(theory.sites) == ["attn_out", "resid_mid", "resid_post"]
    assert theory.model_label == "NoPE causal L2 d32 h4 LN gelu"
    assert (theory.n_sequences, theory.n_positions) == (8, 16)
    for site, st in theory.sites.items():
        for kind in ("observed", "predicted", "closed_form"):
            matrix = getattr(st, kind)
            assert matrix.shape == (16, 16) and matrix.device.type == "cpu", (site, kind)
            assert matrix.dtype == torch.float32 and torch.isfinite(matrix).all()
            torch.testing.assert_close(matrix.diagonal(), torch.ones(16))
        assert theory.observed[site] is st.observed
    assert theory["resid_mid"].hook == "blocks.0.hook_resid_mid"
    assert list(theory.metrics.columns) == list(METRIC_COLUMNS)
    assert len(theory.metrics) == 6
    assert set(theory.metrics["prediction"]) == {"pattern", "closed_form"}
    assert list(theory.variance.columns) == ["site", "pos", "observed", "predicted", "closed_form"]
    assert len(theory.variance) == 3 * 16
    expected = {"sigma2", "mu2", "embed_var", "value_same", "value_diff", "cross_same", "s2", "a2"}
    assert expected <= set(theory.gram["parameter"])
    assert set(theory.gram["centering"]) == {"none", "hidden_dims"}
    frame = theory.to_frame()
    assert list(frame.columns) == ["model", "site", "matrix", "pos", "pos_other", "value"]
    assert len(frame) == 3 * 3 * 16 * 16
    with pytest.raises(KeyError, match="resid_pre"):
        theory["resid_pre"]


def test_attention_only_models_report_resid_post_as_resid_mid():
    from nopelens import build_model, random_tokens
    from nopelens.theory import first_layer_theory

    model = build_model(n_layers=1, d_model=32, n_heads=2, d_vocab=40, n_ctx=10, attn_only=True)
    theory = first_layer_theory(model, random_tokens(4, 10, 40, distinct=True))
    assert list(theory.sites) == ["attn_out", "resid_mid"]
    assert theory["resid_mid"].hook == "blocks.0.hook_resid_post"


def test_pattern_prediction_outlives_the_closed_form_as_attention_sharpens():
    from nopelens.theory import attention_sharpness_study

    study = attention_sharpness_study(
        scales=(0.0, 8.0), batch=16, pos=16, d_model=128, n_heads=4, attn_only=True, seed=0
    )
    assert {
        "scale",
        "attention_entropy",
        "relative_entropy",
        "max_attention",
        "site",
        "prediction",
        "pearson_r",
        "rmse",
        "max_error",
    } <= set(study.columns)
    assert len(study) == 2 * 2 * 2
    rows = study[study["site"] == "attn_out"].set_index(["scale", "prediction"])
    assert rows.loc[(0.0, "closed_form"), "pearson_r"] > 0.95
    assert rows.loc[(0.0, "pattern"), "pearson_r"] > 0.95
    assert rows.loc[(8.0, "pattern"), "pearson_r"] > 0.85
    assert rows.loc[(8.0, "pattern"), "rmse"] < 0.5 * rows.loc[(8.0, "closed_form"), "rmse"]
    assert rows.loc[(8.0, "closed_form"), "pearson_r"] < 0.8
    assert (
        rows.loc[(8.0, "pattern"), "relative_entropy"]
        < rows.loc[(0.0, "pattern"), "relative_entropy"]
    )


def test_repeated_tokens_enter_the_prediction():
    """A repeated token contributes the same value vector twice; T = [t_i = t_j] models it."""
    from nopelens import build_model
    from nopelens.theory import first_layer_theory

    model = _uniform(
        build_model(n_layers=1, d_model=256, n_heads=4, d_vocab=64, n_ctx=8, attn_only=True, seed=0)
    )
    tokens = torch.tensor([[5, 9, 5, 9, 5, 9, 5, 9], [1, 2, 1, 2, 1, 2, 1, 2]])
    theory = first_layer_theory(model, tokens)
    st = theory["attn_out"]
    assert (st.predicted - st.observed).abs().max() < 0.1
    assert (st.closed_form - st.observed).abs().max() > 0.2  # the closed form assumes T = I


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tokens": torch.tensor([[1, 2]])}, r"at least 3 tokens"),
        ({"tokens": torch.tensor([[1, 2, 99]])}, r"'tokens' parameter of first_layer_theory"),
        ({"batch_size": 0}, r"'batch_size' parameter of first_layer_theory must be an int >= 1"),
    ],
)
def test_first_layer_theory_bad_inputs(tiny_model, tiny_tokens, kwargs, match):
    from nopelens.theory import first_layer_theory

    args = {"model": tiny_model, "tokens": tiny_tokens, **kwargs}
    with pytest.raises(ValueError, match=match):
        first_layer_theory(args.pop("model"), args.pop("tokens"), **args)


def test_first_layer_theory_rejects_a_non_model(tiny_tokens):
    """``model`` is typed ``HookedModel``: the tests' runtime checker rejects a non-model first
    (a TypeError); without the checker (as users run it) our own check raises the ValueError."""
    from nopelens.theory import first_layer_theory

    with pytest.raises(TypeError):
        first_layer_theory(object(), tiny_tokens)
    unchecked = getattr(first_layer_theory, "__wrapped__", first_layer_theory)
    with pytest.raises(
        ValueError,
        match=r"'model' parameter of first_layer_theory must be a TransformerLens Hooked",
    ):
        unchecked(object(), tiny_tokens)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scales": ()}, r"'scales' parameter of attention_sharpness_study must hold at least"),
        (
            {"scales": (1.0, -2.0)},
            r"'scales' parameter of attention_sharpness_study must be a "
            r"finite float >= 0.0. Got -2.0",
        ),
        ({"pos": 2}, r"'pos' parameter of attention_sharpness_study must be an int in \[3, 32\]"),
        ({"with_model": True}, r"got build_model arguments d_model together with 'model'"),
    ],
)
def test_attention_sharpness_study_bad_inputs(tiny_model, kwargs, match):
    from nopelens.theory import attention_sharpness_study

    if kwargs.pop("with_model", False):
        kwargs["model"] = tiny_model
    with pytest.raises(ValueError, match=match):
        attention_sharpness_study(d_model=16, **kwargs)


def test_top_level_exports():
    import nopelens

    for name in (
        "first_layer_theory",
        "FirstLayerTheory",
        "decompose_first_layer",
        "attention_sharpness_study",
        "uniform_attention_similarity",
        "uniform_residual_similarity",
        "position_variance",
    ):
        assert getattr(nopelens, name).__doc__, name


# --------------------------------------------------------------------------------------------
# compact reprs


def _fit_numbers(row):
    return [
        f"r={row['pearson_r']:.3f}",
        f"rmse={row['rmse']:.3g}",
        f"max_error={row['max_error']:.3g}",
    ]


def test_first_layer_theory_repr_is_short_and_names_the_fit(tiny_model, tiny_tokens):
    from nopelens.theory import first_layer_theory

    theory = first_layer_theory(tiny_model, tiny_tokens)
    text = repr(theory)
    assert len(text) < 600 and len(text.splitlines()) <= 6, text
    assert "tensor(" not in text and theory.model_label in text
    assert "relative_entropy=" in text and "max_attention=" in text
    for line, site in zip(text.splitlines()[2:], theory.sites, strict=True):
        assert line.strip().startswith(f"{site}:"), line
        rows = theory.metrics[theory.metrics["site"] == site].to_dict("records")
        for row in rows:  # every (site, prediction) shows its r, RMSE and max error
            assert f"{row['prediction']} " + " ".join(_fit_numbers(row)) in line, (site, row)
    site_text = repr(theory["attn_out"])
    assert len(site_text) < 300 and "tensor(" not in site_text, site_text
    assert "hook='blocks.0.hook_attn_out'" in site_text and "pos=16" in site_text
    for row in theory.metrics[theory.metrics["site"] == "attn_out"].to_dict("records"):
        assert f"{row['prediction']}: " + " ".join(_fit_numbers(row)) in site_text


def test_gram_parameters_and_decomposition_reprs_are_short(tiny_model, tiny_tokens):
    from nopelens.theory import decompose_first_layer, first_layer_theory

    params = first_layer_theory(tiny_model, tiny_tokens).parameters
    text = repr(params)
    assert len(text) < 300 and "tensor(" not in text, text
    assert "head_index=4" in text and "d_model=32" in text and "pos=16" in text
    for name in ("sigma2", "mu2", "s2", "a2"):
        assert f"{name}={getattr(params, name):.4g}" in text, name
    parts = decompose_first_layer(tiny_model, tiny_tokens)
    text = repr(parts)
    assert len(text) < 300 and "tensor(" not in text, text
    assert "batch=8, pos=16, head_index=4, d_model=32" in text
    assert "resid_mid_hook='blocks.0.hook_resid_mid'" in text and "mlp=True" in text
    error = max(parts.reconstruction_error().values())
    assert f"max_reconstruction_error={error:.2e}" in text


def test_resid_post_is_predicted_through_the_mlp():
    """Block 0's resid_post prediction carries resid_mid through the MLP model (gain plus
    correlated noise) and fits the observation better than the resid_mid prediction does."""
    from nopelens import build_model, random_tokens
    from nopelens.theory import first_layer_theory, fit_metrics

    model = build_model(n_layers=1, d_model=128, n_heads=4, d_vocab=2048, n_ctx=24, seed=0)
    theory = first_layer_theory(model, random_tokens(48, 24, 2048, seed=0, distinct=True))
    observed = theory["resid_post"].observed
    with_mlp = fit_metrics(observed, theory["resid_post"].predicted)["rmse"]
    without = fit_metrics(observed, theory["resid_mid"].predicted)["rmse"]
    assert with_mlp < 0.7 * without, (with_mlp, without)
