"""Figure builders: traces, axis titles, slider steps and menus for small inputs.

Structure tests use small synthetic inputs that follow the result contracts (so they pin exactly
what each figure contains); the integration tests at the end draw the real outputs of
``analyze`` and ``first_layer_theory`` for a tiny model.
"""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
import torch

LAYERS = ["embed", "0", "1"]
SITES = ["resid_post", "attn_out"]
METRICS = ["adjacency_probability", "neighborhood_concordance"]


def _matrices(n_layers: int = 3, pos: int = 6) -> torch.Tensor:
    i = torch.arange(pos, dtype=torch.float32)
    band = torch.exp(-(i[:, None] - i[None, :]).abs() / 2.0)
    return torch.stack([band**k for k in range(1, n_layers + 1)])


def _scores(model: str, ap: float) -> pd.DataFrame:
    rows = []
    for site in SITES:
        for li, layer in enumerate(LAYERS):
            for metric, chance in zip(METRICS, (2 / 6, 0.5), strict=True):
                value = ap if li else chance
                rows.append(
                    {
                        "site": site,
                        "layer": layer,
                        "metric": metric,
                        "value": value,
                        "chance": chance,
                        "ci_low": value - 0.05,
                        "ci_high": value + 0.05,
                        "n_seqs": 8,
                        "seq_len": 6,
                    }
                )
    return pd.DataFrame(rows).assign(model=model)


@pytest.fixture
def report():
    """An AnalysisReport-shaped object (matrices, layer labels, scores, profiles, label)."""
    profiles = pd.DataFrame(
        [
            {"site": s, "layer": layer, "distance": d, "value": 1.0 / (d + li + 1)}
            for s in SITES
            for li, layer in enumerate(LAYERS)
            for d in range(1, 6)
        ]
    )
    return types.SimpleNamespace(
        matrices={s: _matrices() for s in SITES},
        layer_labels=LAYERS,
        scores=_scores("NoPE", 0.9).drop(columns="model"),
        profiles=profiles,
        model_label="NoPE causal L2 d32 h4 LN gelu",
    )


@pytest.fixture
def theory():
    """A FirstLayerTheory-shaped object with two sites."""
    observed = {s: _matrices(1)[0] for s in ("attn_out", "resid_mid")}
    predicted = {s: m * 0.9 + 0.1 * torch.eye(6) for s, m in observed.items()}
    metrics = pd.DataFrame(
        [
            {
                "site": s,
                "prediction": p,
                "pearson_r": 0.97,
                "rmse": 0.05,
                "max_error": 0.1,
                "ap_observed": 1.0,
                "ap_predicted": 1.0,
                "nc_observed": 1.0,
                "nc_predicted": 1.0,
            }
            for s in observed
            for p in ("pattern", "closed_form")
        ]
    )
    variance = pd.DataFrame(
        [
            {"site": s, "pos": p, "observed": 0.2 + 1.0 / (p + 1), "predicted": 0.2 + 1.0 / (p + 1)}
            for s in observed
            for p in range(6)
        ]
    )
    return types.SimpleNamespace(
        observed=observed,
        predicted=predicted,
        closed_form={s: torch.ones(6, 6) for s in observed},
        metrics=metrics,
        variance=variance,
        model_label="NoPE causal L1 d32 h4 LN gelu",
    )


# ---------------------------------------------------------------------------------------------
# similarity heatmaps
# ---------------------------------------------------------------------------------------------


def test_heatmap_has_one_trace_per_site_and_layer_with_slider_and_site_menu(report):
    from nopelens.viz import similarity_heatmap_figure

    fig = similarity_heatmap_figure(report)
    assert len(fig.data) == len(SITES) * len(LAYERS)
    assert all(t.type == "heatmap" for t in fig.data)
    # one slider (for the first site), one step per layer, each showing exactly one heatmap
    (slider,) = fig.layout.sliders
    assert [s.label for s in slider.steps] == LAYERS
    for li, step in enumerate(slider.steps):
        visible = step.args[0]["visible"]
        assert sum(visible) == 1 and visible[li] is True
        assert f"layer {LAYERS[li]}" in step.args[1]["title.text"]
        assert "AP 0.90" in step.args[1]["title.text"] or li == 0
    assert slider.active == LAYERS.index("0")
    assert [bool(t.visible) for t in fig.data].count(True) == 1
    # site menu swaps the slider for that site's slider
    menu, colour = fig.layout.updatemenus
    assert [b.label for b in menu.buttons] == [f"site: {s}" for s in SITES]
    # the colour-range buttons: fixed [-1, 1] (active) or the data's range
    assert [b.label for b in colour.buttons] == ["colour: −1…1", "colour: auto"]
    assert colour.active == 0 and list(colour.buttons[1].args) == [{"coloraxis.cauto": True}]
    fixed = colour.buttons[0].args[0]
    assert (fixed["coloraxis.cmin"], fixed["coloraxis.cmax"]) == (-1.0, 1.0)
    second = menu.buttons[1].args
    assert second[0]["visible"].index(True) == len(LAYERS) + LAYERS.index("0")
    steps = second[1]["sliders"][0]["steps"]
    assert [s["args"][0]["visible"].index(True) for s in steps] == [3, 4, 5]
    # labelled axes, bounded colour scale with a titled colour bar
    assert fig.layout.xaxis.title.text == "key position j"
    assert fig.layout.yaxis.title.text == "query position i"
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (-1.0, 1.0)
    assert fig.layout.coloraxis.colorbar.title.text == "cos sim"
    assert report.model_label in fig.layout.title.text
    # light: float32 payload
    assert fig.data[0].z.dtype == np.float32


def test_heatmap_accepts_a_mapping_and_validates():
    from nopelens.viz import similarity_heatmap_figure

    fig = similarity_heatmap_figure(
        {"resid_post": _matrices(2).numpy()},
        sites="resid_post",
        zmin=None,
        zmax=None,
        initial_layer=1,
    )
    assert [s.label for s in fig.layout.sliders[0].steps] == ["0", "1"]
    (colour,) = fig.layout.updatemenus  # one site: no site menu, only the colour-range buttons
    assert colour.active == 1  # started on the data's range
    assert fig.layout.sliders[0].active == 1
    assert 0 < fig.layout.coloraxis.cmin < fig.layout.coloraxis.cmax == pytest.approx(1.0)
    bare = similarity_heatmap_figure({"resid_post": _matrices(2)}, range_menu=False)
    assert not bare.layout.updatemenus
    with pytest.raises(ValueError, match=r"must have shape \[layer pos pos\]"):
        similarity_heatmap_figure({"resid_post": torch.zeros(2, 3, 4)})
    with pytest.raises(ValueError, match="'sites' parameter of similarity_heatmap_figure"):
        similarity_heatmap_figure({"resid_post": _matrices(2)}, sites="attn_out")
    with pytest.raises(ValueError, match="have 2 layers"):
        similarity_heatmap_figure({"resid_post": _matrices(2)}, layer_labels=LAYERS)


# ---------------------------------------------------------------------------------------------
# theory
# ---------------------------------------------------------------------------------------------


def test_theory_figure_panels_share_a_scale_and_the_difference_diverges(theory):
    from plotly.colors import get_colorscale

    from nopelens.viz import theory_figure

    fig = theory_figure(theory)
    assert [a.text for a in fig.layout.annotations] == [
        "observed",
        "predicted",
        "observed − predicted",
    ]
    assert len(fig.data) == 2 * 3
    assert [t.coloraxis for t in fig.data[:3]] == ["coloraxis", "coloraxis", "coloraxis2"]
    assert fig.layout.coloraxis2.cmid == 0.0
    assert fig.layout.coloraxis2.cmin == -fig.layout.coloraxis2.cmax
    assert [c[1] for c in fig.layout.coloraxis2.colorscale] == [
        c[1] for c in get_colorscale("RdBu")
    ]
    np.testing.assert_allclose(
        fig.data[2].z, theory.observed["attn_out"] - theory.predicted["attn_out"], atol=1e-4
    )
    menu, colour = fig.layout.updatemenus
    assert [b.label for b in menu.buttons] == ["site: attn_out", "site: resid_mid"]
    assert menu.buttons[1].args[0]["visible"] == [False] * 3 + [True] * 3
    # similarity panels on [-1, 1] like the similarity heatmaps, with the auto-range button
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (-1.0, 1.0)
    assert list(colour.buttons[1].args) == [{"coloraxis.cauto": True}]
    auto = theory_figure(theory, zmin=None, zmax=None, range_menu=False)
    assert fig.layout.coloraxis.cmin < auto.layout.coloraxis.cmin
    assert len(auto.layout.updatemenus) == 1
    assert "r 0.970" in fig.layout.title.text and theory.model_label in fig.layout.title.text
    assert fig.layout.xaxis.title.text == "key position j"
    assert fig.layout.yaxis.title.text == "query position i"

    four = theory_figure(theory, sites="resid_mid", include_closed_form=True)
    assert [a.text for a in four.layout.annotations][2] == "closed form"
    assert len(four.data) == 4 and len(four.layout.updatemenus) == 1  # colour buttons only
    with pytest.raises(ValueError, match="'sites' parameter of theory_figure"):
        theory_figure(theory, sites="mlp_out")


@pytest.mark.parametrize("closed_form", [False, True])
def test_theory_figure_colour_bars_sit_right_of_every_panel(theory, closed_form):
    """No colour bar in a gap between panels, where its labels and title ran into the next one."""
    from nopelens.viz import theory_figure

    layout = theory_figure(theory, include_closed_form=closed_form).layout
    panels_end = max(layout[name].domain[1] for name in layout if name.startswith("xaxis"))
    bars = [layout.coloraxis.colorbar, layout.coloraxis2.colorbar]
    for bar in bars:
        assert bar.xanchor == "left" and bar.x > panels_end
        assert bar.title.side == "top"  # above the bar, within the bar's own width
    # the bars share one column, so they stack without overlapping: similarity above
    top, bottom = bars
    assert (top.yanchor, bottom.yanchor) == ("top", "bottom")
    assert bottom.y + bottom.len <= top.y - top.len
    # the right margin holds the offset, the bar, its tick labels ("−0.05") and the title
    assert layout.margin.r >= 80


# ---------------------------------------------------------------------------------------------
# scores by layer
# ---------------------------------------------------------------------------------------------


def test_score_by_layer_overlays_models_with_bands_and_chance():
    from nopelens.viz import score_by_layer_figure

    scores = pd.concat([_scores("NoPE", 0.9), _scores("bidirectional", 0.3)], ignore_index=True)
    fig = score_by_layer_figure(scores, sites="resid_post")
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    bands = [t for t in fig.data if t.fill == "toself"]
    chance = [t for t in fig.data if t.name == "chance"]
    assert [t.name for t in lines] == ["NoPE", "bidirectional"] * 2
    assert len(bands) == 4 and all(b.showlegend is False for b in bands)
    assert len(chance) == 2  # one per metric panel, shared by both models
    assert list(chance[0].y) == pytest.approx([2 / 6] * 3)
    assert list(chance[1].y) == pytest.approx([0.5] * 3)
    assert list(lines[0].x) == LAYERS
    assert list(lines[0].y) == pytest.approx([2 / 6, 0.9, 0.9], abs=1e-4)
    assert fig.layout.xaxis.title.text == "layer" and fig.layout.xaxis2.title.text == "layer"
    assert fig.layout.yaxis.title.text == "adjacency probability"
    assert fig.layout.yaxis2.title.text == "neighborhood concordance"
    assert tuple(fig.layout.yaxis.range) == (-0.02, 1.02)
    assert list(fig.layout.xaxis.categoryarray) == LAYERS
    # several sites: one dash style per site, named model · site
    both = score_by_layer_figure(scores, metrics="adjacency_probability")
    names = [t.name for t in both.data if t.mode == "lines+markers"]
    assert names == [
        "NoPE · resid_post",
        "NoPE · attn_out",
        "bidirectional · resid_post",
        "bidirectional · attn_out",
    ]
    assert {t.line.dash for t in both.data if t.mode == "lines+markers"} == {"solid", "dash"}
    with pytest.raises(ValueError, match="must have the columns"):
        score_by_layer_figure(scores.drop(columns="metric"))
    with pytest.raises(ValueError, match="'metrics' parameter of score_by_layer_figure"):
        score_by_layer_figure(scores, metrics="accuracy")


def test_score_by_layer_separates_different_chance_levels():
    from nopelens.viz import score_by_layer_figure

    long = _scores("NoPE n=12", 0.9).assign(chance=lambda d: d["chance"] / 2)
    scores = pd.concat([_scores("NoPE n=6", 0.9), long], ignore_index=True)
    fig = score_by_layer_figure(scores, metrics="adjacency_probability", sites="resid_post")
    assert sorted(t.name for t in fig.data if (t.name or "").startswith("chance")) == [
        "chance (NoPE n=12)",
        "chance (NoPE n=6)",
    ]


# ---------------------------------------------------------------------------------------------
# distance profiles and variance
# ---------------------------------------------------------------------------------------------


def test_distance_profile_one_line_per_layer_and_site_menu(report):
    from nopelens.viz import distance_profile_figure

    fig = distance_profile_figure(report.profiles, model_label=report.model_label)
    assert [t.name for t in fig.data] == [f"layer {v}" for v in LAYERS] * 2
    assert [bool(t.visible) for t in fig.data] == [True] * 3 + [False] * 3
    assert list(fig.data[0].x) == [1, 2, 3, 4, 5]
    assert fig.layout.xaxis.title.text == "distance |i − j|"
    assert fig.layout.yaxis.title.text == "mean cosine similarity"
    assert len(fig.layout.updatemenus[0].buttons) == 2
    only = distance_profile_figure(report.profiles, sites="attn_out", layers=["0"])
    assert len(only.data) == 1 and not only.layout.updatemenus


def test_variance_figure_fits_inverse_law(theory):
    from nopelens.viz import variance_figure

    fig = variance_figure(theory.variance, model_label=theory.model_label)
    names = [t.name for t in fig.data]
    assert names[:3] == ["observed", "predicted", "fit a + b/i (R²=1.000)"]
    fit = fig.data[2]
    assert fit.y[0] == pytest.approx(1.2, abs=1e-4) and fit.y[-1] == pytest.approx(
        0.2 + 1 / 6, abs=1e-4
    )
    assert len(fig.layout.updatemenus[0].buttons) == 2
    assert fig.layout.xaxis.title.text.startswith("position")
    assert fig.layout.yaxis.title.text == "variance across d_model"
    layered = pd.DataFrame(
        {
            "layer": ["0"] * 4 + ["1"] * 4,
            "pos": list(range(4)) * 2,
            "value": [1, 0.5, 0.33, 0.25] * 2,
        }
    )
    two = variance_figure(layered, log_y=True)
    assert [t.name for t in two.data] == [
        "layer 0 · observed",
        "layer 0 · fit a + b/i (R²=1.000)",
        "layer 1 · observed",
        "layer 1 · fit a + b/i (R²=1.000)",
    ]
    assert two.layout.yaxis.type == "log"


# ---------------------------------------------------------------------------------------------
# probes
# ---------------------------------------------------------------------------------------------


def _probe_results() -> pd.DataFrame:
    """Rows shaped like ``ProbeReport.results`` (embed site, controls, random-init baseline)."""
    rows = []
    blocks = [("embed", "embed", -1), ("resid_post", "0", 0), ("resid_post", "1", 1)]
    for site, layer, index in blocks:
        for feature in ("hidden", "cosine", "variance"):
            for capacity in ("full", "matched"):
                probes = ("ridge", "isotonic") if feature == "variance" else ("ridge",)
                for probe in probes:
                    for target in ("position", "control", "shuffled"):
                        for model in ("given", "random_init"):
                            value = 0.1 * (index + 2) if target == "position" else 0.01
                            rows.append(
                                {
                                    "model": model,
                                    "site": site,
                                    "layer": layer,
                                    "layer_index": index,
                                    "feature": feature,
                                    "capacity": capacity,
                                    "dim": 4,
                                    "probe": probe,
                                    "target": target,
                                    "metric": "spearman",
                                    "value": value,
                                    "ci_low": value - 0.05,
                                    "ci_high": value + 0.05,
                                    "std": 0.01,
                                    "n_seeds": 3,
                                    "chance": 0.0,
                                }
                            )
    return pd.DataFrame(rows)


def test_probe_figure_lines_controls_and_chance():
    from nopelens.viz import probe_figure

    results = _probe_results()
    fig = probe_figure(results)
    main = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in main] == [
        "hidden · ridge",
        "cosine · ridge",
        "variance · ridge",
        "variance · isotonic",
    ]
    # the embedding rows join the resid_post panel as layer "embed"
    assert list(main[0].x) == LAYERS
    assert list(main[0].y) == pytest.approx([0.1, 0.2, 0.3])
    assert {t.marker.symbol for t in main} == {"circle", "diamond"}
    controls = [
        t for t in fig.data if t.mode == "lines" and t.name != "chance" and t.fill != "toself"
    ]
    assert [t.meta for t in controls] == [
        f"{t.name} · {kind}" for kind in ("control task", "random init") for t in main
    ]
    assert [t.name for t in controls if t.showlegend] == ["control task", "random init"]
    assert {t.line.dash for t in controls} == {"dot", "longdash"}
    assert len([t for t in fig.data if t.fill == "toself"]) == 4
    assert [t.name for t in fig.data if t.name == "chance"] == ["chance"]
    assert fig.layout.xaxis.title.text == "layer"
    assert fig.layout.yaxis.title.text == "Spearman ρ"
    assert tuple(fig.layout.yaxis.range) == (-1.02, 1.02)
    assert "full capacity" in fig.layout.title.text
    shuffled = probe_figure(results, controls=("shuffled",), capacity="matched")
    assert "shuffled labels" in [t.name for t in shuffled.data]
    assert "matched capacity" in shuffled.layout.title.text
    # the random-init baseline alone is drawn as the subject, not as an overlay
    alone = probe_figure(results[results["model"] == "random_init"], controls=())
    assert [t.name for t in alone.data if t.mode == "lines+markers"] == [t.name for t in main]
    assert [t.name for t in alone.data if t.mode == "lines" and t.fill != "toself"] == ["chance"]
    with pytest.raises(ValueError, match="'controls' parameter of probe_figure"):
        probe_figure(results, controls=("bogus",))
    with pytest.raises(ValueError, match="'metric' parameter of probe_figure"):
        probe_figure(results, metric="accuracy")


# ---------------------------------------------------------------------------------------------
# sweeps
# ---------------------------------------------------------------------------------------------


def _sweep_frame() -> pd.DataFrame:
    rows = []
    for d_model in (32, 64):
        for n_layers in (1, 2):
            for seed in (0, 1):
                config_id = f"{d_model}-{n_layers}-{seed}"
                for li in range(n_layers):
                    for metric in METRICS:
                        rows.append(
                            {
                                "config_id": config_id,
                                "d_model": d_model,
                                "n_layers": n_layers,
                                "seed": seed,
                                "seq_len": 8 * n_layers,
                                "site": "resid_post",
                                "layer": str(li),
                                "metric": metric,
                                "value": 0.5 + 0.1 * li + d_model / 1000 + 0.01 * seed,
                                "chance": 0.25,
                            }
                        )
    return pd.DataFrame(rows)


def test_sweep_heatmap_means_over_seeds_at_each_configs_last_layer():
    from nopelens.viz import sweep_heatmap_figure

    fig = sweep_heatmap_figure(_sweep_frame(), x="d_model", y="n_layers")
    (heat,) = fig.data
    assert list(heat.x) == ["32", "64"] and list(heat.y) == ["1", "2"]
    # last block of each config: layer 0 for n_layers=1, layer 1 for n_layers=2
    expected = [
        [0.5 + 0.032 + 0.005, 0.5 + 0.064 + 0.005],
        [0.6 + 0.032 + 0.005, 0.6 + 0.064 + 0.005],
    ]
    np.testing.assert_allclose(heat.z, expected, atol=1e-4)
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 1.0)
    assert heat.texttemplate == "%{z:.2f}"
    assert fig.layout.coloraxis.colorbar.title.text == "adjacency probability"
    assert fig.layout.xaxis.title.text == "d_model" and fig.layout.yaxis.title.text == "n_layers"
    assert "layer last" in fig.layout.title.text
    first = sweep_heatmap_figure(
        _sweep_frame(),
        x="d_model",
        y="n_layers",
        layer="0",
        metric="neighborhood_concordance",
        where={"seed": 0},
    )
    np.testing.assert_allclose(first.data[0].z, [[0.532, 0.564], [0.532, 0.564]], atol=1e-4)
    with pytest.raises(ValueError, match="'layer' parameter of sweep_heatmap_figure"):
        sweep_heatmap_figure(_sweep_frame(), x="d_model", y="n_layers", layer="7")
    with pytest.raises(ValueError, match="must have the columns"):
        sweep_heatmap_figure(_sweep_frame(), x="d_head", y="n_layers")


def test_sweep_line_mean_band_and_chance():
    from nopelens.viz import sweep_line_figure

    fig = sweep_line_figure(_sweep_frame(), x="seq_len", color="d_model", log_x=True)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["d_model=32", "d_model=64"]
    assert list(lines[0].x) == [8, 16]
    assert len([t for t in fig.data if t.fill == "toself"]) == 2
    assert [t.name for t in fig.data if t.name == "chance"] == ["chance"]
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.title.text == "seq_len"
    assert fig.layout.yaxis.title.text == "adjacency probability"
    # readable log axis: a tick at each power of two, labelled as a plain number
    assert list(fig.layout.xaxis.tickvals) == [8.0, 16.0]
    assert list(fig.layout.xaxis.ticktext) == ["8", "16"]


def test_sweep_heatmap_small_multiples_share_one_colour_scale():
    from nopelens.viz import sweep_heatmap_figure

    frame = _sweep_frame()
    # long form of two one-factor arms: a panel per factor, its own categories on each axis
    long = pd.concat(
        [
            frame.assign(factor="d_model", level=frame["d_model"]),
            frame.assign(factor="seq_len", level=frame["seq_len"]),
        ],
        ignore_index=True,
    )
    fig = sweep_heatmap_figure(
        long, x="level", y="n_layers", facet_col="factor", facet_col_wrap=1,
        labels={"level": "setting"},
    )  # fmt: skip
    assert [a.text for a in fig.layout.annotations] == ["d_model", "seq_len"]
    assert [list(t.x) for t in fig.data] == [["32", "64"], ["8", "16"]]
    assert {t.coloraxis for t in fig.data} == {"coloraxis"}
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 1.0)
    # one panel per row (wrap 1): the x title on the bottom panel only, y title on both
    assert [fig.layout.xaxis.title.text, fig.layout.xaxis2.title.text] == [None, "setting"]
    assert fig.layout.yaxis.title.text == fig.layout.yaxis2.title.text == "n_layers"
    assert fig.layout.height == 130 + 2 * 250
    # each panel is the plain one-panel heatmap of its rows
    alone = sweep_heatmap_figure(frame, x="d_model", y="n_layers")
    np.testing.assert_allclose(fig.data[0].z, alone.data[0].z)
    with pytest.raises(ValueError, match="'facet_col_wrap' parameter of sweep_heatmap_figure"):
        sweep_heatmap_figure(long, x="level", y="n_layers", facet_col="factor", facet_col_wrap=0)


def test_sweep_figures_show_settings_in_plain_words():
    from nopelens.viz import sweep_heatmap_figure, sweep_line_figure

    frame = _sweep_frame()
    positional = np.where(frame["d_model"] == 32, "none", "alibi")
    frame = frame.assign(positional=positional)
    heat = sweep_heatmap_figure(frame, x="positional", y="n_layers")
    assert list(heat.data[0].x) == ["ALiBi", "NoPE"]
    line = sweep_line_figure(frame, x="seq_len", color="positional")
    names = [t.name for t in line.data if t.mode == "lines+markers"]
    assert names == ["positional=ALiBi", "positional=NoPE"]


# ---------------------------------------------------------------------------------------------
# real results of a tiny model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_tokens():
    from nopelens import build_model, random_tokens

    model = build_model(n_layers=2, d_model=32, n_heads=4, d_vocab=50, n_ctx=16, seed=0)
    return model, random_tokens(8, 12, 50, seed=0, distinct=True)


def test_figures_of_real_first_layer_theory(tiny_model_tokens):
    from nopelens import viz
    from nopelens.theory import first_layer_theory

    theory = first_layer_theory(*tiny_model_tokens)
    fig = viz.theory_figure(theory, include_closed_form=True)
    assert len(fig.data) == 4 * len(theory.sites)
    assert len(fig.layout.updatemenus[0].buttons) == len(theory.sites)
    row = theory.metrics.query("site == 'attn_out' and prediction == 'pattern'").iloc[0]
    assert f"r {row.pearson_r:.3f}" in fig.layout.title.text
    np.testing.assert_allclose(fig.data[0].z, theory["attn_out"].observed.numpy(), atol=1e-4)
    var = viz.variance_figure(theory.variance, model_label=theory.model_label)
    names = [t.name for t in var.data if t.visible]
    assert names[:2] == ["observed", "predicted"] and names[2].startswith("fit a + b/i")
    assert len(fig.to_json()) < 80_000


def test_figures_of_real_analysis(tiny_model_tokens):
    analysis = pytest.importorskip("nopelens.analyzer.analysis")
    from nopelens import build_model, viz

    model, tokens = tiny_model_tokens
    control = build_model(
        n_layers=2, d_model=32, n_heads=4, d_vocab=50, n_ctx=16, seed=0, attention="bidirectional"
    )
    report = analysis.analyze(model, tokens, sites=("resid_post", "attn_out"))
    other = analysis.analyze(control, tokens, sites=("resid_post", "attn_out"))
    labels = [str(v) for v in report.layer_labels]
    heat = viz.similarity_heatmap_figure(report)
    assert [s.label for s in heat.layout.sliders[0].steps] == labels
    assert len(heat.data) == len(report.matrices) * len(labels)
    assert "AP " in heat.layout.title.text
    scores = pd.concat(
        [
            report.scores.assign(model=report.model_label),
            other.scores.assign(model=other.model_label),
        ],
        ignore_index=True,
    )
    lines = viz.score_by_layer_figure(scores)
    assert {t.name for t in lines.data if t.mode == "lines+markers"} >= {
        f"{report.model_label} · resid_post",
        f"{other.model_label} · attn_out",
    }
    assert any((t.name or "").startswith("chance") for t in lines.data)
    profile = viz.distance_profile_figure(report.profiles)
    assert len(profile.data) == report.profiles.groupby(["site", "layer"]).ngroups
    # light figures: a few tens of kB each
    assert len(heat.to_json()) < 60_000
