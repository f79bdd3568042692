"""The layer-0 theory figure: observed and predicted self-similarity, and their difference.

The panels of one site share one similarity colour scale (``coloraxis``); the difference
``observed − predicted`` has its own diverging scale centred at 0 (``coloraxis2``). The inputs
are duck-typed: any object with ``observed`` and ``predicted`` mappings site -> ``[pos pos]``
(e.g. :class:`~nopelens.FirstLayerTheory`) will do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nopelens.viz.inputs import as_numpy, choose_sites, light
from nopelens.viz.style import (
    DIFFERENCE_COLORSCALE,
    SIMILARITY_COLORSCALE,
    base_layout,
    color_range_menu,
    pin_title,
    site_selector,
    title_text,
)

__all__ = ["theory_figure"]

_DIFFERENCE = "observed − predicted"
_BAR_X = 1.02  # paper x of the colour bars' left edge: just right of the last panel
_BAR_MARGIN = 90  # px right of the panels: bar offset, bar, tick labels ("−0.05"), title


def _site_matrix(theory: Any, attr: str, site: str, func: str) -> np.ndarray | None:
    """The ``[query_pos key_pos]`` matrix ``theory.<attr>[site]`` (None when there is none)."""
    value = getattr(theory, attr, None)
    if value is None:
        return None
    if isinstance(value, Mapping):
        if site not in value:
            return None
        value = value[site]
    array = as_numpy(value, "theory", func)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(
            f"The {attr!r} matrix of site {site!r} passed to {func} must have shape "
            f"[query_pos key_pos]. Got shape {tuple(array.shape)} instead."
        )
    return array


def _theory_sites(theory: Any) -> list[str]:
    """The sites of ``theory``: the keys of ``observed``, else ``sites``, else ``attn_out``."""
    observed = getattr(theory, "observed", None)
    if isinstance(observed, Mapping):
        return [str(s) for s in observed]
    sites = getattr(theory, "sites", None)
    return [str(s) for s in sites] if sites is not None else ["attn_out"]


def _fit_note(theory: Any, site: str) -> str:
    """``r 0.970 · RMSE 0.050 · ... · AP 1.00 obs / 1.00 pred`` from ``theory.metrics``."""
    metrics = getattr(theory, "metrics", None)
    if not isinstance(metrics, pd.DataFrame) or "site" not in metrics.columns:
        return ""
    rows = metrics[metrics["site"].astype(str) == site]
    if "prediction" in rows.columns and len(rows):
        preferred = [
            p for p in rows["prediction"] if "closed" not in str(p) and "uniform" not in str(p)
        ]
        rows = rows[
            rows["prediction"] == (preferred[0] if preferred else rows["prediction"].iloc[0])
        ]
    if not len(rows):
        return ""
    row = rows.iloc[0]
    parts = []
    for column, short, fmt in (
        ("pearson_r", "r", ".3f"),
        ("rmse", "RMSE", ".3f"),
        ("max_error", "max err", ".3f"),
    ):
        if column in row.index and pd.notna(row[column]):
            parts.append(f"{short} {float(row[column]):{fmt}}")
    for metric, short in (("ap", "AP"), ("nc", "NC")):
        obs, pred = row.get(f"{metric}_observed"), row.get(f"{metric}_predicted")
        if obs is not None and pred is not None and pd.notna(obs) and pd.notna(pred):
            parts.append(f"{short} {float(obs):.2f} obs / {float(pred):.2f} pred")
    return " · ".join(parts)


def _site_panels(
    theory: Any, site: str, include_closed_form: bool, func: str
) -> dict[str, np.ndarray]:
    """The panels of one site, in order: observed, predicted, [closed form,] the difference."""
    observed = _site_matrix(theory, "observed", site, func)
    predicted = _site_matrix(theory, "predicted", site, func)
    if observed is None or predicted is None:
        raise ValueError(
            f"The 'theory' parameter of {func} has no observed and predicted matrices for "
            f"site {site!r}."
        )
    if observed.shape != predicted.shape:
        raise ValueError(
            f"The observed matrix of site {site!r} has shape {observed.shape} [query_pos "
            f"key_pos] but the predicted one has shape {predicted.shape}."
        )
    entry = {"observed": observed, "predicted": predicted}
    if include_closed_form:
        closed = _site_matrix(theory, "closed_form", site, func)
        if closed is None:  # uniform causal attention: sqrt(min(i, j) / max(i, j))
            n = observed.shape[0]
            i = np.arange(1, n + 1, dtype=np.float64)
            closed = np.sqrt(np.minimum.outer(i, i) / np.maximum.outer(i, i))
        entry["closed form"] = closed
    entry[_DIFFERENCE] = observed - predicted
    return entry


def _colour_ranges(
    panels: dict[str, dict[str, np.ndarray]], zmin: float | None, zmax: float | None
) -> tuple[float, float, float]:
    """The shared similarity range ``(lo, hi)`` and the half-width of the difference scale."""
    sim = np.concatenate(
        [m[np.isfinite(m)].ravel() for p in panels.values() for k, m in p.items() if "−" not in k]
    )
    lo = float(zmin) if zmin is not None else float(sim.min()) if sim.size else -1.0
    hi = float(zmax) if zmax is not None else float(sim.max()) if sim.size else 1.0
    diffs = np.concatenate([np.abs(p[_DIFFERENCE]).ravel() for p in panels.values()])
    diffs = diffs[np.isfinite(diffs)]
    span = float(diffs.max()) if diffs.size and diffs.max() > 0 else 1e-6
    return lo, hi, span


def _add_panels(fig: go.Figure, panels: dict[str, dict[str, np.ndarray]]) -> list[str]:
    """One heatmap per (site, panel), panel ``k`` in column ``k``; returns each trace's site."""
    trace_site = []
    for site, entry in panels.items():
        for col, (name, matrix) in enumerate(entry.items(), start=1):
            diff = "−" in name
            fig.add_trace(
                go.Heatmap(
                    z=light(matrix, 4),
                    coloraxis="coloraxis2" if diff else "coloraxis",
                    name=f"{site} · {name}",
                    hovertemplate=(
                        f"i=%{{y}}, j=%{{x}}<br>{'Δ' if diff else 'cos'}=%{{z:.3f}}"
                        f"<extra>{site} · {name}</extra>"
                    ),
                ),
                row=1,
                col=col,
            )
            trace_site.append(site)
    return trace_site


def _colour_bar(title: str, y: float, yanchor: str, length: float) -> dict[str, Any]:
    """A thin colour bar right of the last panel, its ``title`` on top of it."""
    return {
        "title": {"text": title, "side": "top"},
        "thickness": 10,
        "x": _BAR_X,
        "xanchor": "left",
        "y": y,
        "yanchor": yanchor,
        "len": length,
    }


def _colour_axes(fig: go.Figure, lo: float, hi: float, span: float) -> None:
    """Both colour bars right of the last panel: similarity at the top, the difference below.

    No bar sits in a gap between panels (where its tick labels and title ran into the next panel
    at ordinary widths); the right margin leaves room for the bars, their labels and titles.
    """
    fig.update_layout(
        coloraxis={
            "colorscale": SIMILARITY_COLORSCALE,
            "cmin": lo,
            "cmax": hi,
            "colorbar": _colour_bar("cos", 1.0, "top", 0.5),
        },
        coloraxis2={
            "colorscale": DIFFERENCE_COLORSCALE,
            "cmin": -span,
            "cmax": span,
            "cmid": 0.0,
            "colorbar": _colour_bar("Δ", 0.0, "bottom", 0.44),
        },
        margin={"r": _BAR_MARGIN},
    )


def _square_panels(fig: go.Figure, n_panels: int) -> None:
    """Square matrix panels, query rows top to bottom; only the first panel labels positions."""
    for col in range(1, n_panels + 1):
        suffix = "" if col == 1 else str(col)
        fig.update_xaxes(
            title_text="key position j", showgrid=False, constrain="domain", row=1, col=col
        )
        fig.update_yaxes(
            autorange="reversed",
            scaleanchor=f"x{suffix}",
            constrain="domain",
            showgrid=False,
            row=1,
            col=col,
            title_text="query position i" if col == 1 else None,
            showticklabels=col == 1,  # the same positions in every panel
        )


def theory_figure(
    theory: Any,
    *,
    sites: str | Sequence[str] | None = None,
    include_closed_form: bool = False,
    title: str | None = None,
    zmin: float | None = -1.0,
    zmax: float | None = 1.0,
    range_menu: bool = True,
    height: int | None = None,
) -> go.Figure:
    """Layer-0 theory against observation: observed, predicted and their difference side by side.

    The observed panel is the measured mean self-similarity of a first-layer site, the predicted
    panel the similarity the first-layer theory computes from the attention patterns (isotropic
    values, ``A G Aᵀ`` normalised; see :func:`~nopelens.first_layer_theory`). Both share one
    colour scale; the difference ``observed − predicted`` uses the diverging ``RdBu`` scale centred
    at 0. ``include_closed_form`` adds the uniform-attention closed form
    ``sqrt(min(i, j) / max(i, j))`` as a third panel. The subtitle gives the fit (Pearson r, RMSE,
    max error, AP/NC observed vs predicted) from ``theory.metrics``. As in
    :func:`~nopelens.viz.similarity_heatmap_figure`, the similarity scale is ``[-1, 1]`` unless
    ``zmin``/``zmax`` say otherwise (None: the data's range), with buttons switching to auto.

    Args:
        theory: A :class:`~nopelens.FirstLayerTheory` (or any object with ``observed`` and
            ``predicted`` mappings site -> ``[pos pos]``, and optionally ``closed_form``,
            ``metrics`` and ``model_label``).
        sites: Sites to include (default: all); a dropdown switches between several.
        include_closed_form: Also show the closed-form prediction.
        title: Title replacing ``"Layer-0 theory vs observation — <model>"``.
        zmin: Lower end of the shared similarity scale (None: the data minimum).
        zmax: Upper end of the shared similarity scale (None: the data maximum).
        range_menu: Add the buttons switching the similarity scale between fixed and auto.
        height: Figure height in pixels (default 480, or 430 with the closed form).

    Returns:
        A figure with three (or four) heatmap panels per site; the similarity panels use
        ``coloraxis``, the difference ``coloraxis2``.

    Raises:
        ValueError: If a site has no observed or predicted matrix, or the matrices differ in shape.

    Examples:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> obs = torch.rand(6, 6, generator=torch.Generator().manual_seed(0))
        >>> th = SimpleNamespace(observed={"attn_out": obs}, predicted={"attn_out": obs * 0.9},
        ...                      model_label="NoPE L1")
        >>> fig = theory_figure(th)
        >>> [trace.coloraxis for trace in fig.data]
        ['coloraxis', 'coloraxis', 'coloraxis2']
        >>> fig.layout.coloraxis2.cmid, [a.text for a in fig.layout.annotations]
        (0.0, ['observed', 'predicted', 'observed − predicted'])
    """
    func = "theory_figure"
    chosen = choose_sites(sites, _theory_sites(theory), func)
    panels = {site: _site_panels(theory, site, include_closed_form, func) for site in chosen}
    names = list(panels[chosen[0]])
    if height is None:  # square panels: shorter when four share the width
        height = 430 if len(names) > 3 else 480
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.07)
    trace_site = _add_panels(fig, panels)
    head = title_text("Layer-0 theory vs observation", getattr(theory, "model_label", None), title)
    titles = {}
    for site in chosen:
        note = _fit_note(theory, site)
        titles[site] = f"{head}<br><sup>site {site}{' · ' + note if note else ''}</sup>"
    base_layout(fig, titles[chosen[0]], height=height, top=140)
    pin_title(fig, height)  # the menus above the plot stay clear of the title
    plot_height = height - 140 - 60
    site_selector(fig, chosen, trace_site, titles, label="site", y=1.0 + 40 / plot_height)
    _colour_axes(fig, *_colour_ranges(panels, zmin, zmax))
    _square_panels(fig, len(names))
    if range_menu:
        auto = zmin is None or zmax is None
        fixed = (-1.0, 1.0) if auto else (float(zmin), float(zmax))  # type: ignore[arg-type]
        menu = color_range_menu(
            ["coloraxis"], fixed=fixed, active_auto=auto, y=1.0 + 40 / plot_height
        )
        fig.update_layout(updatemenus=[*fig.layout.updatemenus, menu])
    return fig
