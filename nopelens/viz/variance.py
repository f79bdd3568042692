"""Variance by position: the ``1/i`` shrinkage of averaged values (Chi et al., 2023).

Per series (site, and layer or model when they vary): the observed per-position variance across
``d_model``, the theory's prediction when the frame has one, and the least-squares fit
``a + b / i`` (with ``i = pos + 1``) whose R² is quoted in the legend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from nopelens.viz.inputs import check_frame, layer_key, light, select
from nopelens.viz.style import (
    base_layout,
    log_ticks,
    palette_color,
    plain_label,
    site_selector,
    title_text,
)

__all__ = ["variance_figure"]


def _inverse_fit(i: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y ≈ a + b / i``; returns ``(a, b, R²)``."""
    keep = np.isfinite(y)
    design = np.stack([np.ones(keep.sum()), 1.0 / i[keep]], axis=1)
    if keep.sum() < 2:
        return float("nan"), float("nan"), float("nan")
    (a, b), *_ = np.linalg.lstsq(design, y[keep], rcond=None)
    resid = y[keep] - design @ np.array([a, b])
    total = ((y[keep] - y[keep].mean()) ** 2).sum()
    r2 = 1.0 - (resid**2).sum() / total if total > 0 else float("nan")
    return float(a), float(b), float(r2)


def _series(sub: pd.DataFrame, keys: list[str]) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    """The rows of each series (one per value of ``keys``), layers in ``embed, 0, 1`` order."""
    if not keys:
        return [((), sub)]
    groups = ((k if isinstance(k, tuple) else (k,), g) for k, g in sub.groupby(keys, sort=False))
    return sorted(groups, key=lambda kg: tuple(layer_key(v) for v in kg[0]))


def _add_series(fig: go.Figure, rows: pd.DataFrame, value: str, prefix: str, color: str) -> int:
    """Observed markers, the prediction (dashed) and the ``a + b/i`` fit (dotted) of one series.

    Returns:
        The number of traces added.
    """
    agg = rows.groupby("pos").mean(numeric_only=True).sort_index()
    pos = agg.index.to_numpy(dtype=np.float64)
    y = agg[value].to_numpy(dtype=np.float64)
    traces = [
        go.Scatter(
            x=pos.tolist(),
            y=light(y, 6).tolist(),
            mode="markers+lines",
            name=f"{prefix}observed",
            legendgroup=prefix,
            line={"color": color, "width": 1},
            marker={"size": 6},
            hovertemplate="pos %{x}<br>variance %{y:.4g}<extra></extra>",
        )
    ]
    if "predicted" in agg.columns and value != "predicted":
        traces.append(
            go.Scatter(
                x=pos.tolist(),
                y=light(agg["predicted"].to_numpy(float), 6).tolist(),
                mode="lines",
                name=f"{prefix}predicted",
                legendgroup=prefix,
                line={"color": color, "dash": "dash"},
                hovertemplate="pos %{x}<br>predicted %{y:.4g}<extra></extra>",
            )
        )
    a, b, r2 = _inverse_fit(pos + 1.0, y)
    if np.isfinite(a):
        grid = np.linspace(pos.min(), pos.max(), 100)
        traces.append(
            go.Scatter(
                x=light(grid, 3).tolist(),
                y=light(a + b / (grid + 1.0), 6).tolist(),
                mode="lines",
                name=f"{prefix}fit a + b/i (R²={r2:.3f})",
                legendgroup=prefix,
                line={"color": color, "dash": "dot"},
                hovertemplate=f"a={a:.4g}, b={b:.4g}<br>pos %{{x:.1f}}: %{{y:.4g}}<extra></extra>",
            )
        )
    for trace in traces:
        fig.add_trace(trace)
    return len(traces)


def variance_figure(
    variance: pd.DataFrame,
    *,
    sites: str | Sequence[str] | None = None,
    value: str | None = None,
    model_label: str | None = None,
    log_y: bool = False,
    title: str | None = None,
    height: int = 440,
) -> go.Figure:
    """Per-position variance across hidden dimensions, with the ``a + b / i`` fit.

    Chi et al. (2023): under uniform causal attention the attention output at position i
    (1-indexed, ``i = pos + 1``) averages i value vectors, so its variance shrinks like ``1/i``.
    The figure draws the observed variance (markers), the theory's prediction when the frame has a
    ``predicted`` column (dashed), and a least-squares fit ``a + b / i`` to the observed values
    (dotted) whose R² is in the legend. One group of lines per layer (and model) when the frame has
    ``layer`` (``model``) columns; a dropdown switches between sites.

    Args:
        variance: A tidy frame with a ``pos`` column and the observed values in ``observed`` (as in
            ``FirstLayerTheory.variance``) or ``value``; optional ``predicted``, ``site``,
            ``layer`` and ``model`` columns.
        sites: Sites to include (default: all).
        value: Column of the observed values (default ``observed``, else ``value``).
        model_label: Model description for the title.
        log_y: Logarithmic y axis.
        title: Title replacing ``"Variance by position — <model>"``.
        height: Figure height in pixels.

    Returns:
        A figure with, per series, an observed trace, an optional predicted trace and a fit trace.

    Raises:
        ValueError: If ``pos`` or the value column is missing.

    Examples:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"pos": range(8), "observed": [1 / (p + 1) for p in range(8)]})
        >>> fig = variance_figure(df)
        >>> [t.name for t in fig.data]
        ['observed', 'fit a + b/i (R²=1.000)']
        >>> fig.layout.xaxis.title.text
        'position (0-indexed; fit uses i = pos + 1)'
    """
    func = "variance_figure"
    frame = check_frame(variance, "variance", func, ("pos",)).copy()
    if value is None:
        value = "observed" if "observed" in frame.columns else "value"
    check_frame(frame, "variance", func, ("pos", value))
    if "site" not in frame.columns:
        frame["site"] = ""
    frame, site_list = select(frame, "site", sites, "sites", func)
    keys = [c for c in ("model", "layer") if c in frame.columns and frame[c].nunique() > 1]
    fig = go.Figure()
    trace_site = []
    for site in site_list:
        for gi, (key, rows) in enumerate(_series(frame[frame["site"] == site], keys)):
            label = " · ".join(
                f"layer {v}" if k == "layer" else plain_label(v)
                for k, v in zip(keys, key, strict=True)
            )
            prefix = f"{label} · " if label else ""
            trace_site += [site] * _add_series(fig, rows, value, prefix, palette_color(gi))
    if model_label is None and "model" in frame.columns and frame["model"].nunique() == 1:
        model_label = str(frame["model"].iloc[0])
    head = title_text("Variance by position", model_label, title)
    titles = {site: f"{head}<br><sup>site {site}</sup>" if site else head for site in site_list}
    base_layout(fig, titles[site_list[0]], height=height, top=100)
    site_selector(fig, site_list, trace_site, titles, label="site")
    fig.update_xaxes(title_text="position (0-indexed; fit uses i = pos + 1)")
    fig.update_yaxes(title_text="variance across d_model", type="log" if log_y else "linear")
    if log_y:
        fig.update_yaxes(**log_ticks(frame[value].tolist()))
    return fig
