"""Scores by layer: adjacency probability and neighborhood concordance against depth.

One panel per metric, one colour per model, one dash style per site; each line carries its
confidence band and each panel its chance levels (one grey dotted line per distinct level, so
models evaluated at different sequence lengths keep their own chance).

NoPE layers of a hybrid RoPE/NoPE stack are marked when the frame has the analyzer's boolean
``nope`` column: :func:`nope_layer_labels` finds them, :func:`mark_nope_layers` labels their
ticks ``"3 · NoPE"`` and shades them (the layer-theory figures use the same two helpers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nopelens.viz.inputs import check_frame, layer_order, select
from nopelens.viz.style import (
    DASHES,
    add_line_with_band,
    base_layout,
    bound_y_axis,
    chance_trace,
    metric_label,
    palette_color,
    plain_label,
    title_text,
)

__all__ = ["mark_nope_layers", "nope_layer_labels", "nope_tick_text", "score_by_layer_figure"]

#: Marker of the points at NoPE blocks of a model that mixes NoPE and RoPE blocks.
NOPE_MARKER = "diamond"


def nope_layer_labels(frame: pd.DataFrame) -> list[str]:
    """The layers a figure marks as NoPE: every row of the layer has ``nope`` True.

    Nothing is marked when the frame has no ``nope`` column, or when every block in it is NoPE
    (a plain NoPE model: marking every layer would say nothing). The ``"embed"`` row is never
    marked (it is the input, not a block).

    Args:
        frame: A frame with a ``layer`` column and, optionally, the boolean ``nope`` column of
            :attr:`nopelens.analyzer.AnalysisReport.scores`.

    Returns:
        The marked layers as strings, in layer order.

    Examples:
        >>> frame = pd.DataFrame({"layer": ["embed", "0", "1", "1", "2", "3"],
        ...                       "nope": [False, False, True, True, False, True]})
        >>> nope_layer_labels(frame)
        ['1', '3']
        >>> nope_layer_labels(frame.assign(nope=True)), nope_layer_labels(frame[["layer"]])
        ([], [])
    """
    if "nope" not in frame.columns or frame.empty:
        return []
    layers = frame["layer"].astype(str)
    every = frame["nope"].fillna(False).astype(bool).groupby(layers, sort=False).all()
    blocks = every[every.index != "embed"]
    if blocks.empty or blocks.all():
        return []
    return layer_order(blocks.index[blocks.to_numpy()])


def nope_tick_text(layer: Any, label: str = "NoPE") -> str:
    """The tick (or slider) text of a marked layer.

    Examples:
        >>> nope_tick_text(3)
        '3 · NoPE'
    """
    return f"{layer} · {label}"


def mark_nope_layers(
    fig: go.Figure,
    layers: Sequence[Any],
    marked: Sequence[Any],
    *,
    label: str = "NoPE",
    shade: bool = True,
) -> go.Figure:
    """Label the ticks of the ``marked`` layers ``"3 · NoPE"`` on every x axis, and shade them.

    Args:
        fig: A figure whose x axes are categorical layer axes (``embed, 0, 1, ...``).
        layers: The layer categories in axis order.
        marked: The layers to mark (e.g. :func:`nope_layer_labels`); nothing happens if empty.
        label: Text after the layer number.
        shade: Also draw a light grey band behind each marked layer, in every panel.

    Returns:
        ``fig``, changed in place.

    Examples:
        >>> fig = go.Figure(go.Scatter(x=["embed", "0", "1"], y=[0.1, 0.5, 0.6]))
        >>> fig = mark_nope_layers(fig, ["embed", "0", "1"], ["1"])
        >>> list(fig.layout.xaxis.ticktext), len(fig.layout.shapes)
        (['embed', '0', '1 · NoPE'], 1)
    """
    names = [str(layer) for layer in layers]
    chosen = {str(layer) for layer in marked} & set(names)
    if not chosen:
        return fig
    text = [nope_tick_text(n, label) if n in chosen else n for n in names]
    fig.update_xaxes(tickmode="array", tickvals=names, ticktext=text)
    if shade:
        axes = [key for key in fig.layout.to_plotly_json() if key.startswith("xaxis")] or ["xaxis"]
        for axis in axes:
            ref = "x" + axis.removeprefix("xaxis")
            yref = "y" + axis.removeprefix("xaxis") + " domain"
            for index, name in enumerate(names):
                if name in chosen:
                    fig.add_shape(
                        type="rect",
                        xref=ref,
                        yref=yref,
                        x0=index - 0.5,
                        x1=index + 0.5,
                        y0=0,
                        y1=1,
                        fillcolor="rgba(120, 120, 120, 0.13)",
                        line={"width": 0},
                        layer="below",
                    )
    return fig


def _line_name(model: Any, site: Any, several_models: bool, several_sites: bool) -> str:
    """``model · site``, leaving out whichever of the two does not vary."""
    parts = [plain_label(model)] if str(model) and (several_models or not several_sites) else []
    if several_sites or not parts:
        parts.append(site)
    return " · ".join(parts)


def _add_score_lines(
    fig: go.Figure,
    sub: pd.DataFrame,
    metric: str,
    col: int,
    models: list[Any],
    sites: list[Any],
    layers: list[str],
) -> None:
    """One line (and band) per (model, site) of ``metric`` (the rows ``sub``) in panel ``col``."""
    label = metric_label(metric)
    for mi, model in enumerate(models):
        for si, site in enumerate(sites):
            rows = sub[(sub["model"] == model) & (sub["site"] == site)]
            if rows.empty:
                continue
            agg = rows.groupby("layer", sort=False).mean(numeric_only=True)
            agg = agg.reindex([layer for layer in layers if layer in agg.index])
            name = _line_name(model, site, len(models) > 1, len(sites) > 1)
            nope = set(nope_layer_labels(rows))
            extra: dict[str, Any] = {}
            if nope:  # this model mixes NoPE and RoPE blocks: diamonds at its NoPE blocks
                extra["marker"] = {
                    "symbol": [NOPE_MARKER if x in nope else "circle" for x in agg.index],
                    "size": [10 if x in nope else 6 for x in agg.index],
                }
            has_ci = {"ci_low", "ci_high"} <= set(agg.columns)
            custom = np.stack([agg["ci_low"], agg["ci_high"]], axis=-1).round(4) if has_ci else None
            add_line_with_band(
                fig,
                list(agg.index),
                agg["value"],
                color=palette_color(mi),
                group=f"{model}|{site}",
                low=agg["ci_low"].to_numpy(float) if has_ci else None,
                high=agg["ci_high"].to_numpy(float) if has_ci else None,
                line={"dash": DASHES[si % len(DASHES)], "width": 2},
                row=1,
                col=col,
                name=name,
                showlegend=col == 1,
                customdata=custom,
                hovertemplate=(
                    f"{name}<br>layer %{{x}}<br>{label} %{{y:.3f}}"
                    + (" [%{customdata[0]:.3f}, %{customdata[1]:.3f}]" if has_ci else "")
                    + "<extra></extra>"
                ),
                **extra,
            )


def _add_chance_lines(
    fig: go.Figure,
    sub: pd.DataFrame,
    col: int,
    models: list[Any],
    layers: list[str],
    seen: set[str],
) -> None:
    """One chance line per distinct chance level in panel ``col``, named after its models."""
    chance = sub.groupby(["model", "layer"], sort=False)["chance"].mean().dropna()
    levels: dict[tuple[float, ...], list[str]] = {}
    for model in models:
        if model in chance.index.get_level_values(0):
            series = chance.loc[model].reindex(layers)
            key = tuple(np.round(series.to_numpy(float), 6))
            levels.setdefault(key, []).append(plain_label(model))
    for key, owners in levels.items():
        label = "chance" if len(levels) == 1 else f"chance ({', '.join(owners)})"
        trace = chance_trace(
            layers,
            [None if math.isnan(v) else v for v in key],
            name=label,
            legendgroup=label,
            showlegend=label not in seen,
        )
        seen.add(label)
        fig.add_trace(trace, row=1, col=col)


def score_by_layer_figure(
    scores: pd.DataFrame,
    *,
    metrics: str | Sequence[str] | None = None,
    sites: str | Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    title: str | None = None,
    height: int = 440,
) -> go.Figure:
    """Scores by layer, one panel per metric, with chance levels and confidence bands.

    Draws adjacency probability and neighborhood concordance (or any metric in ``scores``) against
    the layer (``embed, 0, 1, ...``) for several models overlaid, e.g. NoPE next to its learned /
    rotary / ALiBi / bidirectional controls: one colour per model, one dash style per site, the
    confidence interval ``[ci_low, ci_high]`` as a shaded band and each distinct chance level as a
    grey dotted line. With a boolean ``nope`` column, the layers that are NoPE in every drawn row
    get the tick ``"3 · NoPE"`` and a grey band (:func:`mark_nope_layers`), and a model that mixes
    NoPE and RoPE blocks (a hybrid stack) is drawn with diamonds at its NoPE blocks.

    Args:
        scores: A tidy frame with the columns ``site, layer, metric, value`` and optionally
            ``chance, ci_low, ci_high``, ``nope`` and ``model`` (concatenate several
            ``AnalysisReport.scores`` frames after adding a ``model`` column, e.g. the report's
            ``model_label``).
        metrics: Metrics to draw, one panel each (default: all, in order of appearance).
        sites: Sites to draw (default: all).
        models: Models to draw, in legend order (default: all, in order of appearance).
        title: Title (default ``"Scores by layer"`` with the model when there is only one).
        height: Figure height in pixels.

    Returns:
        A figure with, per panel, one line trace per (model, site), one band trace per line with
        confidence intervals, and one chance trace per distinct chance level.

    Raises:
        ValueError: If a required column is missing or a selection names an unknown value.

    Examples:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"site": "resid_post", "layer": ["embed", "0", "1"],
        ...                    "metric": "adjacency_probability", "value": [0.1, 0.8, 0.9],
        ...                    "chance": 0.125, "ci_low": [0.05, 0.7, 0.85],
        ...                    "ci_high": [0.15, 0.9, 0.95]})
        >>> fig = score_by_layer_figure(df)
        >>> [t.name for t in fig.data if t.showlegend is not False]
        ['resid_post', 'chance']
        >>> fig.layout.xaxis.title.text, fig.layout.yaxis.title.text
        ('layer', 'adjacency probability')
    """
    func = "score_by_layer_figure"
    frame = check_frame(scores, "scores", func, ("site", "layer", "metric", "value")).copy()
    if "model" not in frame.columns:
        frame["model"] = frame["model_label"] if "model_label" in frame.columns else ""
    frame["layer"] = frame["layer"].astype(str)
    frame, metric_list = select(frame, "metric", metrics, "metrics", func)
    frame, site_list = select(frame, "site", sites, "sites", func)
    frame, model_list = select(frame, "model", models, "models", func)
    layers = layer_order(frame["layer"])
    fig = make_subplots(
        rows=1,
        cols=len(metric_list),
        subplot_titles=[metric_label(m) for m in metric_list] if len(metric_list) > 1 else None,
        horizontal_spacing=0.08,
    )
    seen_chance: set[str] = set()
    for col, metric in enumerate(metric_list, start=1):
        sub = frame[frame["metric"] == metric]
        _add_score_lines(fig, sub, metric, col, model_list, site_list, layers)
        if "chance" in sub.columns:
            _add_chance_lines(fig, sub, col, model_list, layers, seen_chance)
        fig.update_yaxes(title_text=metric_label(metric), row=1, col=col)
        bound_y_axis(fig, metric, row=1, col=col)
    fig.update_xaxes(
        title_text="layer", type="category", categoryorder="array", categoryarray=layers
    )
    only_model = plain_label(model_list[0]) if len(model_list) == 1 and str(model_list[0]) else None
    base_layout(fig, title_text("Scores by layer", only_model, title), height=height)
    return mark_nope_layers(fig, layers, nope_layer_labels(frame))
