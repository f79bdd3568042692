"""The theory at every layer: observed beside each prediction, and the fit by layer.

:func:`layer_theory_figure` shows one site of a :class:`~nopelens.analyzer.LayerTheory`: the top
row is the observed batch-mean similarity and each prediction (one shared similarity colour
scale), the bottom row ``observed − prediction`` under each prediction (one diverging scale
centred at 0); a slider steps through the layers. :func:`layer_fit_figure` draws Pearson r and
RMSE of every prediction against the layer, with the bootstrap intervals as bands, one site at a
time (dropdown); :func:`layer_sharpness_figure` draws the fit against attention sharpness, one
line per layer (:func:`~nopelens.analyzer.layer_theory_sharpness`). Each takes a result object or
tidy frame and returns the figure.

The NoPE blocks of a hybrid RoPE/NoPE stack (a boolean ``nope`` column in the fit or study frame,
or the result's ``nope_layers``) are labelled ``"3 · NoPE"`` on the slider, the layer axis and
the legend (:func:`nopelens.viz.scores.nope_layer_labels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nopelens.viz.inputs import check_frame, choose_sites, layer_order, light
from nopelens.viz.scores import mark_nope_layers, nope_layer_labels, nope_tick_text
from nopelens.viz.style import (
    DIFFERENCE_COLORSCALE,
    SIMILARITY_COLORSCALE,
    add_line_with_band,
    base_layout,
    bound_y_axis,
    metric_label,
    palette_color,
    site_selector,
    title_text,
)

__all__ = [
    "PREDICTION_LABELS",
    "layer_fit_figure",
    "layer_sharpness_figure",
    "layer_theory_figure",
]

#: Short panel and legend labels of the predictions.
PREDICTION_LABELS: dict[str, str] = {
    "first_layer": "first layer",
    "first_layer_closed_form": "first-layer closed form",
    "one_step": "one-step",
    "propagated": "propagated",
    "kim": "Kim et al.",
}


def _nope_marked(source: Any, layers: Sequence[Any]) -> set[str]:
    """The layers to mark NoPE (as strings).

    From a ``nope`` column of ``source`` (a frame, or a result's ``fit``), else from a result's
    ``nope_layers`` attribute.
    """
    frame = source if isinstance(source, pd.DataFrame) else getattr(source, "fit", None)
    if isinstance(frame, pd.DataFrame) and "nope" in frame.columns:
        return set(nope_layer_labels(frame))
    listed = getattr(source, "nope_layers", None)
    if not listed:
        return set()
    nope = {str(layer) for layer in listed}
    table = pd.DataFrame({"layer": [str(v) for v in layers]})
    return set(nope_layer_labels(table.assign(nope=table["layer"].isin(nope))))


def _layer_text(layer: Any, marked: set[str]) -> str:
    return nope_tick_text(layer) if str(layer) in marked else str(layer)


def _label(name: str) -> str:
    return PREDICTION_LABELS.get(name, name.replace("_", " "))


def _choose(value: Any, available: Sequence[str], name: str, func: str) -> list[str]:
    if value is None:
        return list(available)
    items = [value] if isinstance(value, str) else list(value)
    bad = [v for v in items if v not in available]
    if bad or not items:
        raise ValueError(
            f"The {name!r} parameter of {func} must be one or more of {', '.join(available)}. "
            f"Got {items!r} instead."
        )
    return items


def _fit_note(fit: pd.DataFrame, site: str, layer: int, predictions: list[str]) -> str:
    rows = fit[(fit["site"] == site) & (fit["layer"] == layer)].set_index("prediction")
    parts = [
        f"{_label(p)} r {rows.loc[p, 'pearson_r']:.3f} / RMSE {rows.loc[p, 'rmse']:.3f}"
        for p in predictions
        if p in rows.index
    ]
    return " · ".join(parts)


def _panels(theory: Any, site: str, predictions: list[str]) -> list[dict[str, np.ndarray]]:
    """Per layer: ``observed``, each prediction, and ``Δ <prediction>`` differences."""
    out = []
    for index in range(len(theory.layers)):
        observed = theory.observed[site][index].double().numpy()
        entry = {"observed": observed}
        for name in predictions:
            entry[name] = theory.predicted[name][site][index].double().numpy()
        for name in predictions:
            entry[f"Δ {name}"] = observed - entry[name]
        out.append(entry)
    return out


def _add_layer_traces(
    fig: go.Figure,
    panels: list[dict[str, np.ndarray]],
    layers: Sequence[int],
    predictions: list[str],
) -> int:
    """Add every heatmap (layer-major); returns the number of traces per layer."""
    per_layer = 0
    for li, entry in enumerate(panels):
        per_layer = 0
        for col, name in enumerate(["observed", *predictions], start=1):
            fig.add_trace(_heatmap(entry[name], name, layers[li], li == 0, diff=False), 1, col)
            per_layer += 1
        for col, name in enumerate(predictions, start=2):
            fig.add_trace(
                _heatmap(entry[f"Δ {name}"], name, layers[li], li == 0, diff=True), 2, col
            )
            per_layer += 1
    return per_layer


def _heatmap(z: np.ndarray, name: str, layer: int, visible: bool, *, diff: bool) -> go.Heatmap:
    label = f"observed − {_label(name)}" if diff else _label(name)
    return go.Heatmap(
        z=light(z, 3),
        coloraxis="coloraxis2" if diff else "coloraxis",
        name=f"layer {layer} · {label}",
        hovertemplate=(
            f"i=%{{y}}, j=%{{x}}<br>{'Δ' if diff else 'cos'}=%{{z:.3f}}"
            f"<extra>layer {layer} · {label}</extra>"
        ),
        visible=visible,
    )


def _colour_axes(fig: go.Figure, panels: list[dict[str, np.ndarray]]) -> None:
    sims = np.concatenate(
        [m.ravel() for entry in panels for k, m in entry.items() if not k.startswith("Δ")]
    )
    diffs = np.concatenate(
        [np.abs(m).ravel() for entry in panels for k, m in entry.items() if k.startswith("Δ")]
    )
    span = float(diffs.max()) if diffs.size and diffs.max() > 0 else 1e-6
    fig.update_layout(
        coloraxis={
            "colorscale": SIMILARITY_COLORSCALE,
            "cmin": float(np.nanmin(sims)),
            "cmax": float(np.nanmax(sims)),
            "colorbar": {"title": {"text": "cos"}, "thickness": 10, "len": 0.42, "y": 0.78},
        },
        coloraxis2={
            "colorscale": DIFFERENCE_COLORSCALE,
            "cmin": -span,
            "cmax": span,
            "cmid": 0.0,
            "colorbar": {"title": {"text": "Δ"}, "thickness": 10, "len": 0.42, "y": 0.22},
        },
    )


def layer_theory_figure(
    theory: Any,
    *,
    site: str | None = None,
    predictions: str | Sequence[str] | None = None,
    title: str | None = None,
    height: int | None = None,
) -> go.Figure:
    """Theory vs observation by layer: observed, each prediction and the differences, with a slider.

    Top row: the observed batch-mean cosine self-similarity of ``site`` at one layer, then each
    prediction of :func:`~nopelens.analyzer.layer_theory` (shared ``Viridis`` scale). Bottom row,
    under each prediction: ``observed − prediction`` (``RdBu``, centred at 0, one scale for all
    layers so that the slider shows where the theory stops working). The subtitle gives every
    prediction's r and RMSE at the shown layer.

    Args:
        theory: A :class:`~nopelens.analyzer.LayerTheory`.
        site: The site to show (default: its first site).
        predictions: Predictions to show (default: all of the result's).
        title: Title replacing ``"Theory vs observation by layer — <model>"``.
        height: Figure height in pixels (default 640).

    Returns:
        A figure with ``2 * len(predictions) + 1`` heatmaps per layer and a layer slider
        (``fig.layout.sliders[0]``).

    Raises:
        ValueError: For an unknown site or prediction.

    Examples:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> band = torch.linspace(1, 0, 5).expand(2, 5, 5)
        >>> fit = pd.DataFrame({"site": "attn_out", "layer": [0, 1], "prediction": "propagated",
        ...                     "pearson_r": 0.99, "rmse": 0.01})
        >>> th = SimpleNamespace(sites=("attn_out",), predictions=("one_step", "propagated"),
        ...     layers=(0, 1), observed={"attn_out": band}, fit=fit, model_label="NoPE L2",
        ...     predicted={"one_step": {"attn_out": band}, "propagated": {"attn_out": 0.9 * band}})
        >>> fig = layer_theory_figure(th, site="attn_out")
        >>> len(fig.data), [s.label for s in fig.layout.sliders[0].steps]
        (10, ['0', '1'])
    """
    func = "layer_theory_figure"
    if isinstance(site, (list, tuple)) or (site is not None and not isinstance(site, str)):
        raise ValueError(f"The 'site' parameter of {func} must be one site name. Got {site!r}.")
    site = _choose(site, list(theory.sites), "site", func)[0]
    chosen = _choose(predictions, list(theory.predictions), "predictions", func)
    layers = list(theory.layers)
    height = height or 640
    fig = make_subplots(
        rows=2,
        cols=len(chosen) + 1,
        subplot_titles=[_label(p) for p in ["observed", *chosen]]
        + [""]
        + [f"observed − {_label(p)}" for p in chosen],
        horizontal_spacing=0.04,
        vertical_spacing=0.1,
    )
    panels = _panels(theory, site, chosen)
    per_layer = _add_layer_traces(fig, panels, layers, chosen)
    head = title_text("Theory vs observation by layer", getattr(theory, "model_label", None), title)

    marked = _nope_marked(theory, layers)

    def heading(layer: int) -> str:
        note = _fit_note(theory.fit, site, layer, chosen)
        shown = _layer_text(layer, marked)
        return f"{head}<br><sup>site {site} · layer {shown}{' · ' + note if note else ''}</sup>"

    base_layout(fig, heading(layers[0]), height=height, top=110)
    steps = []
    for li, layer in enumerate(layers):
        visible = [False] * (per_layer * len(layers))
        visible[li * per_layer : (li + 1) * per_layer] = [True] * per_layer
        steps.append(
            {
                "label": _layer_text(layer, marked),
                "method": "update",
                "args": [{"visible": visible}, {"title.text": heading(layer)}],
            }
        )
    fig.update_layout(
        sliders=[
            {
                "active": 0,
                "currentvalue": {"prefix": f"{site} · layer: ", "font": {"size": 13}},
                "pad": {"t": 30, "b": 10},
                "len": 0.9,
                "x": 0.05,
                "y": 0,
                "yanchor": "top",
                "steps": steps,
            }
        ]
    )
    _colour_axes(fig, panels)
    fig.update_xaxes(showgrid=False, constrain="domain", showticklabels=False)
    fig.update_yaxes(showgrid=False, autorange="reversed", constrain="domain", showticklabels=False)
    fig.update_yaxes(showticklabels=True, title_text="query i", row=1, col=1)
    fig.update_xaxes(showticklabels=True, title_text="key j", row=1, col=1)
    return fig


def layer_fit_figure(
    theory: Any,
    *,
    sites: str | Sequence[str] | None = None,
    predictions: str | Sequence[str] | None = None,
    title: str | None = None,
    height: int = 420,
) -> go.Figure:
    """Fit by layer: Pearson r and RMSE of every prediction, with bootstrap bands, per site.

    Args:
        theory: A :class:`~nopelens.analyzer.LayerTheory` or its ``fit`` frame (columns ``site,
            layer, prediction, pearson_r, pearson_r_ci_low, pearson_r_ci_high, rmse,
            rmse_ci_low, rmse_ci_high``).
        sites: Sites (default: all); a dropdown switches between several.
        predictions: Predictions to draw (default: all in the frame).
        title: Title replacing ``"Fit of the theory by layer — <model>"``.
        height: Figure height in pixels.

    Returns:
        Two panels (r, RMSE); per (site, prediction) one line and its band.

    Raises:
        ValueError: For a frame without the needed columns, or unknown sites/predictions.

    Examples:
        >>> import pandas as pd
        >>> fit = pd.DataFrame({"site": "attn_out", "layer": [0, 1], "prediction": "propagated",
        ...                     "pearson_r": [0.99, 0.97], "pearson_r_ci_low": [0.98, 0.95],
        ...                     "pearson_r_ci_high": [1.0, 0.99], "rmse": [0.02, 0.04],
        ...                     "rmse_ci_low": [0.01, 0.03], "rmse_ci_high": [0.03, 0.05]})
        >>> fig = layer_fit_figure(fit)
        >>> [t.name for t in fig.data if t.showlegend is not False]
        ['propagated']
    """
    func = "layer_fit_figure"
    fit = theory if isinstance(theory, pd.DataFrame) else theory.fit
    needed = ["site", "layer", "prediction"] + [
        f"{m}{s}" for m in ("pearson_r", "rmse") for s in ("", "_ci_low", "_ci_high")
    ]
    check_frame(fit, "theory", func, needed)
    chosen_sites = choose_sites(sites, list(dict.fromkeys(fit["site"])), func)
    chosen = _choose(predictions, list(dict.fromkeys(fit["prediction"])), "predictions", func)
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=[metric_label("pearson_r"), metric_label("rmse")]
    )
    trace_site = []
    for site in chosen_sites:
        for pi, name in enumerate(chosen):
            rows = fit[(fit["site"] == site) & (fit["prediction"] == name)].sort_values("layer")
            x = [str(v) for v in rows["layer"]]
            for col, metric in enumerate(("pearson_r", "rmse"), start=1):
                before = len(fig.data)
                add_line_with_band(
                    fig,
                    x,
                    rows[metric],
                    color=palette_color(pi),
                    group=name,
                    low=rows[f"{metric}_ci_low"].to_numpy(dtype=float),
                    high=rows[f"{metric}_ci_high"].to_numpy(dtype=float),
                    row=1,
                    col=col,
                    name=_label(name),
                    showlegend=col == 1,
                    hovertemplate=f"layer %{{x}}<br>{metric_label(metric)} %{{y:.3f}}"
                    f"<extra>{_label(name)}</extra>",
                )
                trace_site += [site] * (len(fig.data) - before)
    head = title_text("Fit of the theory by layer", getattr(theory, "model_label", None), title)
    titles = {
        s: f"{head}<br><sup>site {s} · off-diagonal entries of the batch means · bands: "
        f"95% basic bootstrap over sequences</sup>"
        for s in chosen_sites
    }
    base_layout(fig, titles[chosen_sites[0]], height=height, top=100)
    site_selector(fig, chosen_sites, trace_site, titles, label="site")
    bound_y_axis(fig, "pearson_r", row=1, col=1)
    layers = layer_order(fit["layer"])
    fig.update_xaxes(
        title_text="layer", type="category", categoryorder="array", categoryarray=layers
    )
    return mark_nope_layers(fig, layers, layer_order(_nope_marked(theory, layers)))


def layer_sharpness_figure(
    study: pd.DataFrame,
    *,
    site: str | None = None,
    metric: str = "pearson_r",
    title: str | None = None,
    height: int = 400,
) -> go.Figure:
    """Where the theory breaks: a fit metric against attention sharpness, one line per layer.

    One panel per prediction; the x axis is the score multiplier of
    :func:`~nopelens.analyzer.layer_theory_sharpness` (0 = uniform attention, 1 = the model as it
    is), labelled with the mean relative attention entropy it produced (1 = uniform).

    Args:
        study: The frame of :func:`~nopelens.analyzer.layer_theory_sharpness`.
        site: The site to draw (default: the first in the frame).
        metric: ``"pearson_r"``, ``"rmse"`` or ``"max_error"``.
        title: Title replacing ``"Fit of the theory as attention sharpens"``.
        height: Figure height in pixels.

    Returns:
        One line per (prediction, layer).

    Raises:
        ValueError: For a frame without the study's columns, an unknown site or metric.

    Examples:
        >>> study = pd.DataFrame({"scale": [0.0, 8.0] * 2, "layer": [0, 0, 1, 1],
        ...     "relative_entropy": [1.0, 0.4, 1.0, 0.5], "site": "attn_out",
        ...     "prediction": "propagated", "pearson_r": [0.99, 0.9, 0.98, 0.8]})
        >>> [t.name for t in layer_sharpness_figure(study).data]
        ['layer 0', 'layer 1']
    """
    func = "layer_sharpness_figure"
    check_frame(study, "study", func, ["scale", "layer", "relative_entropy", "site", "prediction"])
    (metric,) = _choose(metric, ("pearson_r", "rmse", "max_error"), "metric", func)
    if metric not in study.columns:
        raise ValueError(f"The 'study' parameter of {func} has no {metric!r} column.")
    sites = list(dict.fromkeys(study["site"]))
    (site,) = _choose(site if site is not None else sites[0], sites, "site", func)
    frame = study[study["site"] == site]
    predictions = list(dict.fromkeys(frame["prediction"]))
    fig = make_subplots(
        rows=1,
        cols=len(predictions),
        subplot_titles=[_label(p) for p in predictions],
        shared_yaxes=True,
    )
    entropy = frame.groupby("scale")["relative_entropy"].mean()
    ticks = {s: f"×{s:g}<br>H {entropy[s]:.2f}" for s in entropy.index}
    layers = sorted(frame["layer"].unique())
    marked = _nope_marked(frame, layers)
    for col, name in enumerate(predictions, start=1):
        for li, layer in enumerate(layers):
            rows = frame[(frame["prediction"] == name) & (frame["layer"] == layer)].sort_values(
                "scale"
            )
            fig.add_trace(
                go.Scatter(
                    x=[ticks[s] for s in rows["scale"]],
                    y=rows[metric].round(4).tolist(),
                    mode="lines+markers",
                    name=f"layer {_layer_text(layer, marked)}",
                    legendgroup=f"layer {layer}",
                    showlegend=col == 1,
                    line={"color": palette_color(li)},
                    hovertemplate=f"%{{x}}<br>{metric_label(metric)} %{{y:.3f}}"
                    f"<extra>{_label(name)} · layer {_layer_text(layer, marked)}</extra>",
                ),
                row=1,
                col=col,
            )
    head = title or "Fit of the theory as attention sharpens"
    base_layout(
        fig,
        f"{head}<br><sup>site {site} · x: score multiplier and mean relative attention entropy "
        f"H (1 = uniform)</sup>",
        height=height,
        top=100,
    )
    bound_y_axis(fig, metric)
    fig.update_xaxes(type="category")
    fig.update_yaxes(title_text=metric_label(metric), row=1, col=1)
    return fig
