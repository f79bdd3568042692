"""Variance by position and the 1/i law (Chi et al.)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def test_position_variance_is_the_population_variance_across_hidden_dims():
    from nopelens.measure import position_variance

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 7, generator=g)
    out = position_variance(hidden)
    assert out.shape == (3, 5)
    manual = ((hidden - hidden.mean(-1, keepdim=True)) ** 2).mean(-1)
    torch.testing.assert_close(out, manual, msg="position_variance vs manual formula")
    np.testing.assert_allclose(
        out.numpy(),
        np.var(hidden.numpy(), axis=-1),
        rtol=1e-5,
        err_msg="position_variance vs numpy.var",
    )
    # invariant to adding a constant to every hidden dimension of a position
    torch.testing.assert_close(position_variance(hidden + torch.randn(3, 5, 1, generator=g)), out)
    assert position_variance(hidden[0]).shape == (5,)


def test_position_variance_rejects_bad_input():
    from nopelens.measure import position_variance

    # InvalidParameterError is also a TypeError; under pytest the type checker may answer first
    for bad in (torch.ones(4, 3, dtype=torch.long), torch.ones(4), [[1.0, 2.0]]):
        with pytest.raises(TypeError):
            position_variance(bad)


def test_fit_inverse_law_recovers_scale_and_offset():
    from nopelens.measure import fit_inverse_law

    i = torch.arange(1, 11, dtype=torch.float32)
    fit = fit_inverse_law((3.0 / i + 0.25).expand(4, 10))  # leading dims are averaged
    assert list(fit.columns) == [
        "pos",
        "observed",
        "fitted",
        "relative_error",
        "in_fit",
        "scale",
        "offset",
        "r_squared",
    ]
    assert fit["pos"].tolist() == list(range(10))
    assert fit["scale"][0] == pytest.approx(3.0, rel=1e-5)
    assert fit["offset"][0] == pytest.approx(0.25, abs=1e-5)
    assert fit["r_squared"][0] == pytest.approx(1.0)
    pure = fit_inverse_law(2.0 / i, intercept=False, min_pos=3)
    assert pure["offset"][0] == 0.0 and pure["scale"][0] == pytest.approx(2.0, rel=1e-5)
    assert pure["in_fit"].tolist() == [False] * 3 + [True] * 7


def test_fit_inverse_law_rejects_bad_input():
    from nopelens.measure import fit_inverse_law

    with pytest.raises(ValueError, match=r"needs at least 2 positions from min_pos=4"):
        fit_inverse_law(torch.ones(5), min_pos=4)
    with pytest.raises(ValueError, match=r"'min_pos' parameter of fit_inverse_law must be an int"):
        fit_inverse_law(torch.ones(5), min_pos=9)


def test_uniform_attention_variance_follows_one_over_i():
    """W_Q = W_K = 0 (exactly uniform causal attention), d_model 512: var(attn_out_i) ~ a^2 / i."""
    from nopelens import build_model, collect_activations, random_tokens
    from nopelens.measure import fit_inverse_law, position_variance

    model = build_model(
        n_layers=1, d_model=512, n_heads=8, d_vocab=1024, n_ctx=24, attn_only=True, seed=1
    )
    attn = model.blocks[0].attn
    with torch.no_grad():
        for param in (attn.W_Q, attn.W_K, attn.b_Q, attn.b_K):
            param.zero_()
    tokens = random_tokens(32, 24, 1024, seed=2, distinct=True)
    hidden = collect_activations(model, tokens, sites="attn_out")["attn_out"][0]
    variance = position_variance(hidden)  # [batch, pos]
    fit = fit_inverse_law(variance, intercept=False)
    rel = fit["relative_error"][fit["pos"] >= 1]  # i >= 2
    assert rel.abs().max() < 0.10, fit
    # the same law, read off the theory's variance table, with a^2 estimated from the values
    from nopelens.theory import first_layer_theory

    table = first_layer_theory(model, tokens).variance
    table = table[(table["site"] == "attn_out") & (table["pos"] >= 1)]
    assert ((table["observed"] - table["closed_form"]) / table["closed_form"]).abs().max() < 0.10
    # the prediction keeps the (small, ~1/d_vocab) mean value vector that the closed form drops
    assert ((table["predicted"] - table["closed_form"]) / table["closed_form"]).abs().max() < 0.05


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_is_rejected_like_everywhere_else(bad):
    from nopelens.measure import fit_inverse_law, position_variance, self_similarity

    hidden = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
    hidden[1, 3, 2] = bad
    with pytest.raises(ValueError, match=r"'hidden' parameter of position_variance contains NaN"):
        position_variance(hidden)
    with pytest.raises(ValueError, match="NaN or infinity"):  # the neighbour, for comparison
        self_similarity(hidden)
    variance = torch.tensor([1.0, 0.5, bad, 0.25])
    with pytest.raises(ValueError, match=r"'variance' parameter of fit_inverse_law contains NaN"):
        fit_inverse_law(variance)
