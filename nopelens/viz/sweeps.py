"""Sweep figures: a score over two hyperparameters (heatmap) or against one (lines with bands).

Several near-identical heatmaps (one per factor of a sweep, or per metric) are drawn as one figure
of small multiples with ``facet_col`` (one panel per value of a column, ``facet_col_wrap`` panels
per row, one shared colour scale). Log axes get ticks at round values with plain labels
(:func:`~nopelens.viz.style.log_ticks`), and setting values are shown in plain words
(:func:`~nopelens.viz.style.plain_label`: ``none`` -> ``NoPE``).

Both take a tidy sweep frame (``nopelens.experiments`` output: hyperparameter columns and
``value``, with optional ``metric``, ``layer``, ``site`` and ``chance`` columns), keep the rows
of one metric, site and layer (by default each configuration's last block, whatever its depth),
and average over everything else (seeds, other hyperparameters) unless ``where`` pins it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nopelens.viz.inputs import check_frame, layer_key, layer_order, light, select
from nopelens.viz.style import (
    METRIC_BOUNDS,
    SIMILARITY_COLORSCALE,
    add_line_with_band,
    base_layout,
    bound_y_axis,
    chance_trace,
    log_ticks,
    metric_label,
    palette_color,
    plain_label,
    subtitle,
)

__all__ = ["sweep_heatmap_figure", "sweep_line_figure"]


def _filtered(
    frame: Any, required: tuple[str, ...], where: Mapping[str, Any] | None, func: str
) -> pd.DataFrame:
    """The rows of ``frame`` matching ``where`` (``{column: value or list of values}``)."""
    data = check_frame(frame, "frame", func, required)
    for column, wanted in (where or {}).items():
        check_frame(data, "frame", func, (column,))
        data = data[
            data[column].isin(wanted if isinstance(wanted, (list, tuple, set)) else [wanted])
        ]
    if data.empty:
        raise ValueError(f"No rows of 'frame' are left for {func} after filtering by {where!r}.")
    return data


def _last_block(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of each configuration's last block (per ``config_id``), labelled ``last``."""
    labels = set(frame["layer"])
    blocks = frame[frame["layer"] != "embed"] if labels - {"embed"} else frame
    if "config_id" in frame.columns:
        rank = blocks["layer"].map(layer_key)
        last = rank.groupby(blocks["config_id"]).transform("max")
        frame = blocks[rank == last]
    else:
        frame = blocks[blocks["layer"] == layer_order(blocks["layer"])[-1]]
    return frame.assign(layer="last")


def _sweep_rows(
    frame: pd.DataFrame, metric: str | None, layer: Any, site: str | None, func: str
) -> pd.DataFrame:
    """Rows of one metric, one site and one layer (``"last"``: each configuration's last block)."""
    if "metric" in frame.columns:
        present = list(dict.fromkeys(frame["metric"]))
        if metric is None:
            metric = "adjacency_probability" if "adjacency_probability" in present else present[0]
        frame, _ = select(frame, "metric", metric, "metric", func)
    if "site" in frame.columns:
        present = list(dict.fromkeys(frame["site"]))
        if site is None:
            site = "resid_post" if "resid_post" in present else present[0]
        frame, _ = select(frame, "site", site, "site", func)
    if "layer" in frame.columns:
        frame = frame.assign(layer=frame["layer"].astype(str))
        if str(layer) == "last" and "last" not in set(frame["layer"]):
            frame = _last_block(frame)
        else:
            frame, _ = select(frame, "layer", str(layer), "layer", func)
    return frame


def _sweep_metric(frame: pd.DataFrame, metric: str | None) -> str:
    """The metric drawn: ``metric``, else the frame's (one metric is left), else ``value``."""
    if metric is not None:
        return metric
    if "metric" in frame.columns:
        return str(frame["metric"].iloc[0])
    return "value"


def _notes(data: pd.DataFrame, where: Mapping[str, Any] | None, chance: bool) -> list[str]:
    """Subtitle parts: the layer, the site, optionally the mean chance, and the filters."""
    notes = []
    if "layer" in data.columns:
        notes.append(f"layer {data['layer'].iloc[0]}")
    if "site" in data.columns and data["site"].nunique() == 1:
        notes.append(f"site {data['site'].iloc[0]}")
    if chance and "chance" in data.columns and data["chance"].notna().any():
        notes.append(f"chance {data['chance'].mean():.3f}")
    notes.extend(f"{k}={v}" for k, v in (where or {}).items())
    return notes


def _colour_limits(
    z: np.ndarray, metric: str, zmin: float | None, zmax: float | None
) -> tuple[float, float]:
    """``zmin``/``zmax``, else the metric's bounds, else the data's range."""
    lo, hi = METRIC_BOUNDS.get(metric, (None, None))
    finite = z[np.isfinite(z)]
    low = zmin if zmin is not None else lo if lo is not None else float(finite.min(initial=0.0))
    high = zmax if zmax is not None else hi if hi is not None else float(finite.max(initial=1.0))
    return float(low), float(high)


def _mean_heatmap(data: pd.DataFrame, x: str, y: str, value: str, metric: str) -> go.Heatmap:
    """The mean of ``value`` per (y, x) cell, with the cell's row count in the hover."""
    table = data.pivot_table(index=y, columns=x, values=value, aggfunc="mean")
    counts = data.pivot_table(index=y, columns=x, values=value, aggfunc="count").reindex_like(table)
    z = table.to_numpy(dtype=np.float64)
    return go.Heatmap(
        z=light(z, 4),
        x=[plain_label(v, x) for v in table.columns],
        y=[plain_label(v, y) for v in table.index],
        customdata=counts.fillna(0).to_numpy(dtype=np.int32),
        coloraxis="coloraxis",
        texttemplate="%{z:.2f}",
        hovertemplate=(
            f"{x}=%{{x}}, {y}=%{{y}}<br>{metric_label(metric)} %{{z:.3f}}"
            "<br>n=%{customdata}<extra></extra>"
        ),
    )


def _facet_grid(
    data: pd.DataFrame, x: str, y: str, value: str, metric: str, facet: str, wrap: int
) -> tuple[go.Figure, int]:
    """One heatmap panel per value of ``facet``, ``wrap`` panels per row; also the row count."""
    keys = list(dict.fromkeys(data[facet].tolist()))
    cols = max(1, min(wrap, len(keys)))
    rows = math.ceil(len(keys) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[plain_label(k, facet) for k in keys],
        horizontal_spacing=min(0.08, 0.5 / cols),
        vertical_spacing=min(0.12, 0.6 / rows) if rows > 1 else 0.0,
    )
    for index, key in enumerate(keys):
        row, col = divmod(index, cols)
        panel = data[data[facet] == key]
        fig.add_trace(_mean_heatmap(panel, x, y, value, metric), row=row + 1, col=col + 1)
        fig.update_xaxes(type="category", row=row + 1, col=col + 1)
        fig.update_yaxes(type="category", row=row + 1, col=col + 1)
    for col in range(1, cols + 1):
        fig.update_xaxes(title_text=x, row=rows, col=col)
    fig.update_yaxes(title_text=y, col=1)
    return fig, rows


def sweep_heatmap_figure(
    frame: pd.DataFrame,
    *,
    x: str,
    y: str,
    metric: str | None = None,
    layer: Any = "last",
    site: str | None = None,
    where: Mapping[str, Any] | None = None,
    value: str = "value",
    title: str | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    facet_col: str | None = None,
    facet_col_wrap: int = 4,
    labels: Mapping[str, str] | None = None,
    height: int | None = None,
) -> go.Figure:
    """A score as a heatmap over two hyperparameters of a sweep (mean over everything else).

    Each cell is the mean ``value`` of the rows with that pair of hyperparameter values, averaged
    over the remaining columns (seeds, other hyperparameters) unless ``where`` pins them; the cell
    text shows the mean and the hover the number of rows. Bounded metrics use their fixed range
    (e.g. ``[0, 1]`` for adjacency probability) so sweeps compare across figures.

    With ``facet_col``, the figure holds small multiples: one panel per value of that column
    (e.g. one per swept factor of a one-factor-at-a-time sweep, after reshaping it to long form
    with a ``factor`` and a ``level`` column), each with its own categories on the axes, all on one
    colour scale, ``facet_col_wrap`` panels per row.

    Args:
        frame: A tidy sweep frame (``nopelens.sweep`` output): hyperparameter columns, and
            ``value`` with optional ``metric``, ``layer``, ``site`` and ``chance`` columns.
        x: Hyperparameter on the x axis (a column of ``frame``).
        y: Hyperparameter on the y axis.
        metric: The metric to draw when the frame has a ``metric`` column (default adjacency
            probability, else the first).
        layer: The layer to draw when the frame has a ``layer`` column; ``"last"`` (default)
            takes each configuration's last block (per ``config_id``), whatever its depth.
        site: The site to draw when the frame has a ``site`` column (default ``resid_post``
            if present, else the first).
        where: Extra filters ``{column: value or list of values}`` applied first.
        value: The column holding the score.
        title: Title replacing ``"<metric> by <y> and <x>"``.
        zmin: Lower end of the colour scale (default: the metric's bound, else the data minimum).
        zmax: Upper end of the colour scale (default: the metric's bound, else the data maximum).
        facet_col: Column whose values get one panel each (default: one panel).
        facet_col_wrap: Panels per row of small multiples.
        labels: Axis titles by column name (default: the column names).
        height: Figure height in pixels (default 460, or about 250 per row of panels).

    Returns:
        A figure with one heatmap trace per panel whose axes are the hyperparameter values as
        categories, sharing ``layout.coloraxis``.

    Raises:
        ValueError: If a column is missing, or no rows remain after filtering.

    Examples:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"d_model": [32, 32, 64, 64], "n_heads": [1, 4, 1, 4],
        ...                    "metric": "adjacency_probability", "value": [0.5, 0.6, 0.7, 0.9]})
        >>> fig = sweep_heatmap_figure(df, x="d_model", y="n_heads")
        >>> fig.data[0].z.shape, fig.layout.xaxis.title.text, fig.layout.coloraxis.cmax
        ((2, 2), 'd_model', 1.0)
        >>> long = df.assign(factor=["a", "a", "b", "b"])
        >>> grid = sweep_heatmap_figure(long, x="d_model", y="n_heads", facet_col="factor")
        >>> len(grid.data), [a.text for a in grid.layout.annotations]
        (2, ['a', 'b'])
    """
    func = "sweep_heatmap_figure"
    required = (x, y, value) + ((facet_col,) if facet_col else ())
    data = _sweep_rows(_filtered(frame, required, where, func), metric, layer, site, func)
    metric_name = _sweep_metric(data, metric)
    if (
        isinstance(facet_col_wrap, bool)
        or not isinstance(facet_col_wrap, int)
        or facet_col_wrap < 1
    ):
        raise ValueError(
            f"The 'facet_col_wrap' parameter of {func} must be an int >= 1. "
            f"Got {facet_col_wrap!r} instead."
        )
    if facet_col is None:
        fig = go.Figure(_mean_heatmap(data, x, y, value, metric_name))
        fig.update_xaxes(type="category")
        fig.update_yaxes(type="category")
        rows = 0
    else:
        fig, rows = _facet_grid(data, x, y, value, metric_name, facet_col, facet_col_wrap)
    names = {x: x, y: y, **(labels or {})}
    for axis in fig.select_xaxes():  # facets: titles on the bottom row and first column only
        axis.title.text = names[x] if not rows or axis.title.text else None
    for axis in fig.select_yaxes():
        axis.title.text = names[y] if not rows or axis.title.text else None
    low, high = _colour_limits(data[value].to_numpy(dtype=np.float64), metric_name, zmin, zmax)
    label = metric_label(metric_name).capitalize()
    head = title if title is not None else f"{label} by {y} and {x}"
    if height is None:
        height = 460 if not rows else 130 + 250 * rows
    base_layout(fig, subtitle(head, _notes(data, where, chance=True)), height=height, top=90)
    fig.update_layout(
        coloraxis={
            "colorscale": SIMILARITY_COLORSCALE,
            "cmin": low,
            "cmax": high,
            "colorbar": {"title": {"text": metric_label(metric_name)}, "thickness": 14},
        }
    )
    return fig


def _add_mean_lines(
    fig: go.Figure, data: pd.DataFrame, x: str, value: str, color: str | None, name: str
) -> None:
    """Per ``color`` group, the mean of ``value`` by ``x`` and its 95% band over the rows."""
    groups = [(None, data)] if color is None else list(data.groupby(color, sort=True))
    for gi, (key, rows) in enumerate(groups):
        stats = rows.groupby(x)[value].agg(["mean", "std", "count"]).sort_index()
        half = 1.96 * stats["std"].fillna(0.0) / np.sqrt(stats["count"])
        several = bool((stats["count"] > 1).any())
        line_name = f"{color}={plain_label(key, color)}" if color is not None else name
        add_line_with_band(
            fig,
            stats.index.tolist(),
            stats["mean"],
            color=palette_color(gi),
            group=line_name,
            low=(stats["mean"] - half).to_numpy(float) if several else None,
            high=(stats["mean"] + half).to_numpy(float) if several else None,
            name=line_name,
            customdata=stats["count"].to_numpy(dtype=np.int32),
            hovertemplate=f"{line_name}<br>{x}=%{{x}}<br>%{{y:.3f}} (n=%{{customdata}})"
            "<extra></extra>",
        )


def sweep_line_figure(
    frame: pd.DataFrame,
    *,
    x: str,
    color: str | None = None,
    metric: str | None = None,
    layer: Any = "last",
    site: str | None = None,
    where: Mapping[str, Any] | None = None,
    value: str = "value",
    log_x: bool = False,
    title: str | None = None,
    height: int = 420,
) -> go.Figure:
    """A score against one hyperparameter (e.g. sequence length), mean ± 95% interval over seeds.

    For each value of ``x`` (and of ``color``), the line is the mean of ``value`` over the other
    rows (seeds, other hyperparameters) and the band a normal-approximation 95% interval of that
    mean (``1.96 · sd / sqrt(n)``); the chance level (when the frame has a ``chance`` column) is a
    grey dotted line. Used for the sequence-length sweep (does the pattern dilute as sequences
    grow?) and the attention-sharpness study.

    Args:
        frame: A tidy sweep frame with columns ``x``, ``value`` and optionally ``color``,
            ``metric``, ``layer``, ``chance``.
        x: Numeric hyperparameter on the x axis.
        color: Column whose values get one line each (default: a single line).
        metric: Metric to draw when the frame has a ``metric`` column.
        layer: Layer to draw when the frame has a ``layer`` column; ``"last"`` (default) takes
            each configuration's last block (per ``config_id``).
        site: Site to draw when the frame has a ``site`` column (default ``resid_post`` if
            present, else the first).
        where: Extra filters ``{column: value or list of values}`` applied first.
        value: The column holding the score.
        log_x: Logarithmic x axis, with ticks at round values and plain labels (powers of two
            for lengths and widths).
        title: Title replacing ``"<metric> by <x>"``.
        height: Figure height in pixels.

    Returns:
        A figure with a band and a line per colour group, plus a chance line.

    Raises:
        ValueError: If a column is missing, or no rows remain after filtering.

    Examples:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"seq_len": [8, 8, 16, 16], "seed": [0, 1, 0, 1],
        ...                    "value": [0.9, 0.8, 0.7, 0.6], "chance": [0.25, 0.25, 0.125, 0.125]})
        >>> fig = sweep_line_figure(df, x="seq_len")
        >>> [t.name for t in fig.data if t.showlegend is not False]
        ['value', 'chance']
    """
    func = "sweep_line_figure"
    data = _filtered(frame, (x, value) + ((color,) if color else ()), where, func)
    had_metric = "metric" in data.columns
    data = _sweep_rows(data, metric, layer, site, func)
    metric_name = _sweep_metric(data, metric) if had_metric or metric else value
    fig = go.Figure()
    _add_mean_lines(fig, data, x, value, color, metric_label(metric_name))
    if "chance" in data.columns and data["chance"].notna().any():
        chance = data.groupby(x)["chance"].mean().sort_index()
        fig.add_trace(chance_trace(chance.index.tolist(), chance.round(4).tolist()))
    head = title if title is not None else f"{metric_label(metric_name).capitalize()} by {x}"
    base_layout(fig, subtitle(head, _notes(data, where, chance=False)), height=height)
    fig.update_xaxes(title_text=x, type="log" if log_x else "linear")
    if log_x:
        fig.update_xaxes(**log_ticks(data[x].tolist()))
    fig.update_yaxes(title_text=metric_label(metric_name))
    bound_y_axis(fig, metric_name)
    return fig
