"""Self-similarity figures: the mean cosine matrices by layer, and their profile by distance.

:func:`similarity_heatmap_figure` draws the mean self-similarity S_ij = cos(h_i, h_j) one layer
at a time (slider) and one hook site at a time (menu); :func:`distance_profile_figure` draws its
mean over the pairs at each distance ``|i - j|``, one line per layer.

Examples:
    >>> import torch
    >>> fig = similarity_heatmap_figure(
    ...     {"resid_post": torch.eye(4).expand(3, 4, 4)}, layer_labels=["embed", "0", "1"])
    >>> [step.label for step in fig.layout.sliders[0].steps]
    ['embed', '0', '1']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from nopelens.viz.inputs import as_numpy, check_frame, choose_sites, layer_order, light, select
from nopelens.viz.style import (
    DASHES,
    SIMILARITY_COLORSCALE,
    base_layout,
    color_range_menu,
    pin_title,
    plain_label,
    site_selector,
    title_text,
)

__all__ = ["similarity_heatmap_figure", "distance_profile_figure"]


# --------------------------------------------------------------------------------------------
# similarity heatmaps
# --------------------------------------------------------------------------------------------


def _report_matrices(
    report: Any, layer_labels: Sequence[Any] | None, model_label: str | None, func: str
) -> tuple[dict[str, np.ndarray], list[str], str | None]:
    """The ``[layer pos pos]`` matrices by site, the layer labels and the model label."""
    matrices = getattr(report, "matrices", report)
    if not isinstance(matrices, Mapping) or not matrices:
        raise ValueError(
            f"The 'report' parameter of {func} must be an AnalysisReport or a non-empty mapping "
            f"site -> [layer pos pos] matrices. Got {type(report).__name__} instead."
        )
    if layer_labels is None:
        layer_labels = getattr(report, "layer_labels", None)
    if model_label is None:
        model_label = getattr(report, "model_label", None)
    out: dict[str, np.ndarray] = {}
    for site, value in matrices.items():
        array = as_numpy(value, "report", func)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or array.shape[1] != array.shape[2]:
            raise ValueError(
                f"The matrices of site {site!r} passed to {func} must have shape "
                f"[layer pos pos]. Got shape {tuple(array.shape)} instead."
            )
        out[str(site)] = array
    n_layers = {a.shape[0] for a in out.values()}
    labels = (
        [str(v) for v in layer_labels]
        if layer_labels is not None
        else [str(i) for i in range(max(n_layers))]
    )
    for site, array in out.items():
        if array.shape[0] != len(labels):
            raise ValueError(
                f"The matrices of site {site!r} passed to {func} have {array.shape[0]} layers "
                f"[layer pos pos] but there are {len(labels)} layer labels {labels}."
            )
    return out, labels, model_label


def _initial_index(initial_layer: str | int | None, labels: list[str], func: str) -> int:
    """Index of the layer shown first: ``initial_layer``, else block ``0``, else the first."""
    if initial_layer is None:
        return labels.index("0") if "0" in labels else 0
    if str(initial_layer) in labels:
        return labels.index(str(initial_layer))
    raise ValueError(
        f"The 'initial_layer' parameter of {func} must be one of "
        f"{', '.join(repr(v) for v in labels)}. Got {initial_layer!r} instead."
    )


def _colour_range(
    matrices: list[np.ndarray], zmin: float | None, zmax: float | None
) -> tuple[float | None, float | None]:
    """``zmin`` and ``zmax``, each replaced by the finite data extreme when it is None."""
    if zmin is None or zmax is None:
        finite = np.concatenate([m[np.isfinite(m)] for m in matrices])
        zmin = float(finite.min()) if zmin is None and finite.size else zmin
        zmax = float(finite.max()) if zmax is None and finite.size else zmax
    return zmin, zmax


def _score_note(scores: Any, site: str, layer: str) -> str:
    """``AP 0.91 (chance 0.13) · NC 0.97`` for one site and layer, if the scores are known."""
    if not isinstance(scores, pd.DataFrame) or not {"site", "layer", "metric", "value"} <= set(
        scores.columns
    ):
        return ""
    rows = scores[(scores["site"].astype(str) == site) & (scores["layer"].astype(str) == layer)]
    parts = []
    for metric, short in (("adjacency_probability", "AP"), ("neighborhood_concordance", "NC")):
        hit = rows[rows["metric"] == metric]
        if len(hit):
            text = f"{short} {float(hit['value'].mean()):.2f}"
            if "chance" in hit.columns and np.isfinite(float(hit["chance"].mean())):
                text += f" (chance {float(hit['chance'].mean()):.2f})"
            parts.append(text)
    return " · ".join(parts)


@dataclass(frozen=True)
class _LayerSteps:
    """The slider steps and site menu of a heatmap figure with one trace per (site, layer)."""

    sites: list[str]
    layers: list[str]
    start: int
    prefix: str
    scores: Any

    def title(self, site: str, layer: str) -> str:
        """The figure title while (site, layer) is shown, with its scores when known."""
        note = _score_note(self.scores, site, layer)
        sub = f"site {site} · layer {layer}{' · ' + note if note else ''}"
        return f"{self.prefix}<br><sup>{sub}</sup>"

    def visible(self, si: int, li: int) -> list[bool]:
        """Visibility flags showing only the heatmap of site ``si`` at layer ``li``."""
        flags = [False] * (len(self.sites) * len(self.layers))
        flags[si * len(self.layers) + li] = True
        return flags

    def slider(self, si: int) -> dict[str, Any]:
        """The layer slider of site ``si``: one step per layer."""
        site = self.sites[si]
        return {
            "active": self.start,
            "currentvalue": {"prefix": f"{site} · layer: ", "font": {"size": 13}},
            "pad": {"t": 40, "b": 10},
            "len": 0.9,
            "x": 0.05,
            "y": 0,
            "yanchor": "top",
            "steps": [
                {
                    "label": layer,
                    "method": "update",
                    "args": [
                        {"visible": self.visible(si, li)},
                        {"title.text": self.title(site, layer)},
                    ],
                }
                for li, layer in enumerate(self.layers)
            ],
        }

    def site_menu(self) -> dict[str, Any]:
        """The site dropdown: each button shows its site's start layer and swaps in its slider."""
        start = self.layers[self.start]
        return {
            "buttons": [
                {
                    "label": f"site: {site}",
                    "method": "update",
                    "args": [
                        {"visible": self.visible(si, self.start)},
                        {"sliders": [self.slider(si)], "title.text": self.title(site, start)},
                    ],
                }
                for si, site in enumerate(self.sites)
            ],
            "direction": "down",
            "showactive": True,
            "x": 1.0,
            "xanchor": "right",
            "y": 1.02,
            "yanchor": "bottom",
        }


def _add_heatmaps(fig: go.Figure, matrices: dict[str, np.ndarray], steps: _LayerSteps) -> None:
    """One heatmap trace per (site, layer), site-major; only the start one is visible."""
    for site in steps.sites:
        for li, layer in enumerate(steps.layers):
            fig.add_trace(
                go.Heatmap(
                    z=light(matrices[site][li], 3),
                    coloraxis="coloraxis",
                    name=f"{site} · layer {layer}",
                    hovertemplate=(
                        f"i=%{{y}}, j=%{{x}}<br>cos=%{{z:.3f}}<extra>{site} · layer {layer}</extra>"
                    ),
                    visible=site == steps.sites[0] and li == steps.start,
                )
            )


def _square_axes(fig: go.Figure) -> None:
    """Square cells, query positions i top to bottom, key positions j left to right."""
    fig.update_xaxes(title_text="key position j", constrain="domain", showgrid=False)
    fig.update_yaxes(
        title_text="query position i",
        autorange="reversed",
        scaleanchor="x",
        constrain="domain",
        showgrid=False,
    )


def similarity_heatmap_figure(
    report: Any,
    *,
    sites: str | Sequence[str] | None = None,
    layer_labels: Sequence[Any] | None = None,
    model_label: str | None = None,
    title: str | None = None,
    zmin: float | None = -1.0,
    zmax: float | None = 1.0,
    initial_layer: str | int | None = None,
    range_menu: bool = True,
    height: int = 620,
) -> go.Figure:
    """Mean self-similarity matrices, one layer at a time, with a layer slider and a site menu.

    Each (site, layer) is one heatmap of the mean cosine similarity S_ij = cos(h_i, h_j) between
    positions i (rows, top to bottom) and j (columns); the slider steps through the layers
    (``embed, 0, 1, ...``), the dropdown switches the hook site (and resets the slider). The
    neighborhood pattern of Zuo et al. (2025) is a bright band along the diagonal that fades with
    ``|i - j|``. The title of each step quotes the layer's adjacency probability and neighborhood
    concordance when ``report`` carries its scores.

    The colour scale is fixed to ``[-1, 1]`` by default, so that layers and models compare at a
    glance; ``zmin=None, zmax=None`` starts on the data's range instead (more contrast), and the
    ``colour: −1…1 | colour: auto`` buttons (``range_menu``) switch between the two in the page.

    Args:
        report: An :class:`nopelens.analyzer.analysis.AnalysisReport` (uses its ``matrices``,
            ``layer_labels``, ``model_label`` and ``scores``), or a mapping from site name to a
            ``[layer pos pos]`` tensor or array.
        sites: Sites to include (default: all, in the report's order).
        layer_labels: Labels of the layer axis (default: the report's, or ``0, 1, ...``).
        model_label: Model description for the title (default: the report's).
        title: Title prefix replacing ``"Self-similarity — <model>"``.
        zmin: Lower end of the colour scale (None: the data minimum over all heatmaps).
        zmax: Upper end of the colour scale (None: the data maximum over all heatmaps).
        initial_layer: Layer label shown first (default: the first block, ``"0"``, if present).
        range_menu: Add the buttons switching the colour scale between ``[-1, 1]`` and auto.
        height: Figure height in pixels.

    Returns:
        A figure with one heatmap trace per (site, layer), a slider per site with one step per
        layer (``fig.layout.sliders``), and in ``fig.layout.updatemenus`` a site dropdown (first,
        when there are several sites) and the colour-range buttons.

    Raises:
        ValueError: If the matrices are not ``[layer pos pos]``, the layer labels do not match, or
            ``sites`` names a site that is not in the report.

    Examples:
        >>> import torch
        >>> sim = torch.eye(5).expand(2, 5, 5)
        >>> fig = similarity_heatmap_figure({"resid_post": sim, "attn_out": sim},
        ...                                 layer_labels=["embed", "0"], model_label="NoPE L1")
        >>> len(fig.data), len(fig.layout.sliders[0].steps), len(fig.layout.updatemenus[0].buttons)
        (4, 2, 2)
        >>> fig.layout.coloraxis.cmin, [b.label for b in fig.layout.updatemenus[1].buttons]
        (-1.0, ['colour: −1…1', 'colour: auto'])
        >>> fig.layout.xaxis.title.text, fig.layout.yaxis.title.text
        ('key position j', 'query position i')
    """
    func = "similarity_heatmap_figure"
    matrices, labels, model_label = _report_matrices(report, layer_labels, model_label, func)
    chosen = choose_sites(sites, list(matrices), func)
    steps = _LayerSteps(
        sites=chosen,
        layers=labels,
        start=_initial_index(initial_layer, labels, func),
        prefix=title_text("Self-similarity", model_label, title),
        scores=getattr(report, "scores", None),
    )
    auto = zmin is None or zmax is None
    fixed = (-1.0, 1.0) if auto else (float(zmin), float(zmax))  # type: ignore[arg-type]
    zmin, zmax = _colour_range([matrices[s] for s in chosen], zmin, zmax)
    fig = go.Figure()
    _add_heatmaps(fig, matrices, steps)
    base_layout(fig, steps.title(chosen[0], labels[steps.start]), height=height, top=100)
    fig.update_layout(
        sliders=[steps.slider(0)],
        coloraxis={
            "colorscale": SIMILARITY_COLORSCALE,
            "cmin": zmin,
            "cmax": zmax,
            "colorbar": {"title": {"text": "cos sim"}, "thickness": 14},
        },
        margin={"b": 130},
    )
    _square_axes(fig)
    pin_title(fig, height)  # the menus above the plot stay clear of the title
    menus = [steps.site_menu()] if len(chosen) > 1 else []
    if range_menu:
        menus.append(color_range_menu(["coloraxis"], fixed=fixed, active_auto=auto))
    if menus:
        fig.update_layout(updatemenus=menus)
    return fig


# --------------------------------------------------------------------------------------------
# distance profiles
# --------------------------------------------------------------------------------------------


def _add_profile_lines(
    fig: go.Figure, frame: pd.DataFrame, sites: list[str], models: list[Any], layers: list[str]
) -> list[str]:
    """One line per (site, model, layer), dark (embed) to bright (last layer); their sites."""
    colors = sample_colorscale(
        "Viridis", [i / max(len(layers) - 1, 1) * 0.9 for i in range(len(layers))]
    )
    trace_site = []
    for site in sites:
        for mi, model in enumerate(models):
            for li, layer in enumerate(layers):
                rows = frame[
                    (frame["site"] == site) & (frame["model"] == model) & (frame["layer"] == layer)
                ]
                if rows.empty:
                    continue
                agg = rows.groupby("distance")["value"].mean().sort_index()
                shown = plain_label(model)
                name = f"{shown} · layer {layer}" if shown else f"layer {layer}"
                fig.add_trace(
                    go.Scatter(
                        x=agg.index.tolist(),
                        y=agg.round(4).tolist(),
                        mode="lines+markers",
                        marker={"size": 4},
                        name=name,
                        line={"color": colors[li], "dash": DASHES[mi % len(DASHES)]},
                        hovertemplate=(
                            f"{site} · {name}<br>d=%{{x}}<br>mean cos %{{y:.3f}}<extra></extra>"
                        ),
                    )
                )
                trace_site.append(site)
    return trace_site


def distance_profile_figure(
    profiles: pd.DataFrame,
    *,
    sites: str | Sequence[str] | None = None,
    layers: Sequence[Any] | None = None,
    min_distance: int = 1,
    model_label: str | None = None,
    title: str | None = None,
    height: int = 440,
) -> go.Figure:
    """Mean cosine similarity as a function of the distance ``|i - j|``, one line per layer.

    The distance profile is the mean of S_ij over all pairs with ``|i - j| = d``. A neighborhood
    pattern is a profile that falls with ``d``; a flat profile means similarity carries no
    position. Lines are coloured from dark (``embed``) to bright (last layer); a dropdown switches
    between sites; with a ``model`` column each model gets its own dash style.

    Args:
        profiles: A tidy frame with the columns ``site, layer, distance, value`` (e.g.
            ``AnalysisReport.profiles``), optionally with a ``model`` column.
        sites: Sites to include (default: all; a dropdown switches between them).
        layers: Layer labels to draw (default: all).
        min_distance: Smallest distance drawn (default 1: the diagonal, always 1, is left out).
        model_label: Model description for the title.
        title: Title replacing ``"Distance profile — <model>"``.
        height: Figure height in pixels.

    Returns:
        A figure with one line trace per (site, model, layer).

    Raises:
        ValueError: If a required column is missing or a selection names an unknown value.

    Examples:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"site": "resid_post", "layer": ["0"] * 3 + ["1"] * 3,
        ...                    "distance": [1, 2, 3] * 2, "value": [0.9, 0.8, 0.7, 0.8, 0.7, 0.65]})
        >>> fig = distance_profile_figure(df, model_label="NoPE L2")
        >>> [t.name for t in fig.data], fig.layout.xaxis.title.text
        (['layer 0', 'layer 1'], 'distance |i − j|')
    """
    func = "distance_profile_figure"
    frame = check_frame(profiles, "profiles", func, ("site", "layer", "distance", "value")).copy()
    frame["layer"] = frame["layer"].astype(str)
    if layers is not None:
        layers = [str(v) for v in layers]
    frame, site_list = select(frame, "site", sites, "sites", func)
    frame, _ = select(frame, "layer", layers, "layers", func)
    frame = frame[frame["distance"] >= min_distance]
    if "model" not in frame.columns:
        frame["model"] = ""
    model_list = list(dict.fromkeys(frame["model"]))
    fig = go.Figure()
    trace_site = _add_profile_lines(fig, frame, site_list, model_list, layer_order(frame["layer"]))
    if model_label is None and len(model_list) == 1 and str(model_list[0]):
        model_label = str(model_list[0])
    head = title_text("Distance profile", model_label, title)
    titles = {site: f"{head}<br><sup>site {site}</sup>" for site in site_list}
    base_layout(fig, titles[site_list[0]], height=height, top=100)
    site_selector(fig, site_list, trace_site, titles, label="site")
    fig.update_xaxes(title_text="distance |i − j|")
    fig.update_yaxes(title_text="mean cosine similarity")
    return fig
