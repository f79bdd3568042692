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


# --- NoPE layers of a hybrid stack, marked from the `nope` column ------------------------------


def _hybrid_scores(nope_blocks=(1, 3), n_layers=4):
    """A hand-made scores frame of a hybrid stack: its NoPE blocks score higher."""
    layers = ["embed", *map(str, range(n_layers))]
    rows = []
    for metric, chance in (("adjacency_probability", 0.2), ("neighborhood_concordance", 0.5)):
        for layer in layers:
            nope = layer != "embed" and int(layer) in nope_blocks
            value = 0.9 if nope else 0.6
            rows.append(
                {
                    "site": "resid_post",
                    "layer": layer,
                    "nope": nope,
                    "metric": metric,
                    "value": value,
                    "chance": chance,
                    "ci_low": value - 0.05,
                    "ci_high": value + 0.05,
                }
            )
    return pd.DataFrame(rows)


def test_nope_layer_labels_marks_only_the_nope_blocks_of_a_mixed_stack():
    from nopelens.viz.scores import nope_layer_labels

    frame = _hybrid_scores()
    assert nope_layer_labels(frame) == ["1", "3"]
    # a plain NoPE model (every row True, embed included): nothing to tell apart
    assert nope_layer_labels(frame.assign(nope=True)) == []
    assert nope_layer_labels(frame.assign(nope=False)) == []
    assert nope_layer_labels(frame.drop(columns="nope")) == []
    # a layer is marked only when every row of it is NoPE (two models disagreeing: not marked)
    other = frame.assign(nope=False, model="rope")
    assert nope_layer_labels(pd.concat([frame.assign(model="hybrid"), other])) == []


def test_score_figure_labels_and_shades_the_nope_blocks():
    from nopelens.viz import score_by_layer_figure

    fig = score_by_layer_figure(_hybrid_scores())
    for axis in (fig.layout.xaxis, fig.layout.xaxis2):
        assert list(axis.tickvals) == ["embed", "0", "1", "2", "3"]
        assert list(axis.ticktext) == ["embed", "0", "1 · NoPE", "2", "3 · NoPE"]
    shapes = fig.layout.shapes
    assert len(shapes) == 2 * 2  # two NoPE blocks in each metric panel
    assert sorted((s.xref, s.x0, s.x1) for s in shapes) == [
        ("x", 1.5, 2.5),
        ("x", 3.5, 4.5),
        ("x2", 1.5, 2.5),
        ("x2", 3.5, 4.5),
    ]
    line = next(t for t in fig.data if t.mode == "lines+markers")
    assert dict(zip(line.x, line.marker.symbol, strict=True)) == {
        "embed": "circle",
        "0": "circle",
        "1": "diamond",
        "2": "circle",
        "3": "diamond",
    }


def test_score_figure_of_a_plain_nope_model_is_unmarked_and_a_hybrid_beside_rope_keeps_diamonds():
    from nopelens.viz import score_by_layer_figure

    plain = score_by_layer_figure(_hybrid_scores().assign(nope=True))
    assert plain.layout.xaxis.ticktext is None and not plain.layout.shapes
    both = pd.concat(
        [_hybrid_scores().assign(model="hybrid"), _hybrid_scores().assign(model="rope", nope=False)]
    )
    fig = score_by_layer_figure(both)
    assert fig.layout.xaxis.ticktext is None and not fig.layout.shapes  # layers disagree
    lines = {t.name: t for t in fig.data if t.mode == "lines+markers" and t.xaxis == "x"}
    assert list(lines["hybrid"].marker.symbol).count("diamond") == 2
    assert lines["rope"].marker.symbol is None


def test_layer_theory_figures_label_the_nope_blocks():
    from types import SimpleNamespace

    import torch

    from nopelens.viz import layer_fit_figure, layer_sharpness_figure, layer_theory_figure

    fit = pd.DataFrame(
        {
            "site": "attn_out",
            "layer": [0, 1, 2],
            "nope": [False, True, False],
            "prediction": "propagated",
            "pearson_r": [0.99, 0.97, 0.95],
            "pearson_r_ci_low": [0.98, 0.95, 0.9],
            "pearson_r_ci_high": [1.0, 0.99, 0.97],
            "rmse": [0.02, 0.04, 0.05],
            "rmse_ci_low": [0.01, 0.03, 0.04],
            "rmse_ci_high": [0.03, 0.05, 0.06],
        }
    )
    fig = layer_fit_figure(fit)
    assert list(fig.layout.xaxis.ticktext) == ["0", "1 · NoPE", "2"]
    assert len(fig.layout.shapes) == 2  # r and RMSE panels

    band = torch.linspace(1, 0, 5).expand(3, 5, 5)
    theory = SimpleNamespace(
        sites=("attn_out",),
        predictions=("propagated",),
        layers=(0, 1, 2),
        observed={"attn_out": band},
        predicted={"propagated": {"attn_out": 0.9 * band}},
        fit=fit,
        model_label="hybrid",
    )
    slider = layer_theory_figure(theory).layout.sliders[0]
    assert [s.label for s in slider.steps] == ["0", "1 · NoPE", "2"]
    assert "layer 1 · NoPE" in slider.steps[1].args[1]["title.text"]
    # without a `nope` column, a result's nope_layers marks the same blocks
    listed = SimpleNamespace(**{**vars(theory), "fit": fit.drop(columns="nope")}, nope_layers=(1,))
    assert [s.label for s in layer_theory_figure(listed).layout.sliders[0].steps][1] == "1 · NoPE"

    study = pd.DataFrame(
        {
            "scale": [0.0, 8.0] * 3,
            "layer": [0, 0, 1, 1, 2, 2],
            "nope": [False, False, True, True, False, False],
            "relative_entropy": [1.0, 0.4] * 3,
            "site": "attn_out",
            "prediction": "propagated",
            "pearson_r": [0.99, 0.9, 0.98, 0.8, 0.97, 0.7],
        }
    )
    names = [t.name for t in layer_sharpness_figure(study).data]
    assert names == ["layer 0", "layer 1 · NoPE", "layer 2"]
    plain = layer_sharpness_figure(study.assign(nope=True))
    assert [t.name for t in plain.data] == ["layer 0", "layer 1", "layer 2"]
