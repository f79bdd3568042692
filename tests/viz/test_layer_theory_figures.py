"""Figures of the theory at every layer: the layer slider and the fit by layer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def theory():
    from nopelens import build_model, random_tokens
    from nopelens.analyzer import layer_theory

    model = build_model(n_layers=3, d_model=16, n_heads=2, d_vocab=40, n_ctx=6, seed=0)
    return layer_theory(model, random_tokens(4, 6, 40, seed=0, distinct=True), n_bootstrap=20)


def test_theory_figure_has_observed_predictions_and_differences_per_layer(theory):
    from nopelens.viz import layer_theory_figure

    fig = layer_theory_figure(theory, site="resid_post")
    n_pred = len(theory.predictions)
    per_layer = 1 + 2 * n_pred
    assert len(fig.data) == per_layer * 3
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["0", "1", "2"]
    for li, step in enumerate(steps):
        visible = step.args[0]["visible"]
        assert sum(visible) == per_layer
        assert all(visible[li * per_layer : (li + 1) * per_layer])
        assert f"layer {li}" in step.args[1]["title.text"]
    assert [t.visible for t in fig.data[:per_layer]] == [True] * per_layer
    diffs = [t for t in fig.data if t.coloraxis == "coloraxis2"]
    assert len(diffs) == 3 * n_pred and fig.layout.coloraxis2.cmid == 0.0
    # the difference panel is observed - prediction, at the same layer
    first_diff = fig.data[1 + n_pred]
    expected = (
        theory.observed["resid_post"][0] - theory.predicted[theory.predictions[0]]["resid_post"][0]
    )
    np.testing.assert_allclose(first_diff.z, expected.numpy(), atol=2e-3)
    assert "propagated r" in fig.layout.title.text and "site resid_post · layer 0" in (
        fig.layout.title.text
    )


def test_theory_figure_selects_predictions_and_checks_names(theory):
    from nopelens.viz import layer_theory_figure

    fig = layer_theory_figure(theory, predictions=("propagated",))
    assert len(fig.data) == 3 * 3
    assert [a.text for a in fig.layout.annotations] == [
        "observed",
        "propagated",
        "observed − propagated",
    ]
    with pytest.raises(ValueError, match="'site' parameter of layer_theory_figure"):
        layer_theory_figure(theory, site="mlp_out")
    with pytest.raises(ValueError, match="'predictions' parameter of layer_theory_figure"):
        layer_theory_figure(theory, predictions=("nope",))


def test_fit_figure_has_a_line_and_band_per_prediction_and_a_site_menu(theory):
    from nopelens.viz import layer_fit_figure

    fig = layer_fit_figure(theory)
    legend = [t.name for t in fig.data if t.showlegend is not False and t.visible]
    assert legend == [
        "first layer",
        "first-layer closed form",
        "one-step",
        "propagated",
        "Kim et al.",
    ]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert bands and all(t.hoverinfo == "skip" for t in bands)
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == [f"site: {s}" for s in theory.sites]
    assert list(fig.layout.yaxis.range) == [-1.02, 1.02]
    r_line = next(t for t in fig.data if t.name == "propagated" and t.xaxis == "x")
    rows = theory.fit[(theory.fit.site == "attn_out") & (theory.fit.prediction == "propagated")]
    np.testing.assert_allclose(r_line.y, rows["pearson_r"].round(4))


def test_fit_figure_accepts_the_frame_and_refuses_a_bad_one(theory):
    from nopelens.viz import layer_fit_figure

    fig = layer_fit_figure(theory.fit, sites="attn_out", predictions=["one_step"])
    assert {t.name for t in fig.data if t.showlegend is not False} == {"one-step"}
    assert not fig.layout.updatemenus  # one site: no menu
    with pytest.raises(ValueError, match="'theory' parameter of layer_fit_figure"):
        layer_fit_figure(pd.DataFrame({"site": ["a"]}))
