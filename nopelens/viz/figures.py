"""Figure builders: analysis results in, :class:`plotly.graph_objects.Figure` out.

Every function here takes a result object or a tidy frame produced by another nopelens module and
returns a figure; none of them shows it (call ``fig.show()`` in a notebook, or hand the figures to
:func:`nopelens.viz.dashboard.write_dashboard`). The conventions are TransformerLens's demos:

- cosine similarities use one sequential colour scale (``Viridis``) on a fixed ``[-1, 1]`` range
  unless told otherwise, so heatmaps of different layers and models compare at a glance;
- signed differences use the diverging ``RdBu`` scale centred at 0;
- bounded scores (adjacency probability, neighborhood concordance, accuracies) get a fixed y range,
  and every score is drawn with its chance level (grey dotted) and its confidence band;
- titles name the model configuration, every axis and colour bar is labelled;
- layers are categories in the order ``embed, 0, 1, ...``.

Figures stay light: matrices are sent as rounded ``float32`` arrays (plotly stores them as packed
binary, about 5 characters per value) and only means, never per-sequence data, are drawn.

Examples:
    >>> import torch
    >>> fig = similarity_heatmap_figure(
    ...     {"resid_post": torch.eye(4).expand(3, 4, 4)}, layer_labels=["embed", "0", "1"])
    >>> [step.label for step in fig.layout.sliders[0].steps]
    ['embed', '0', '1']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative, sample_colorscale
from plotly.subplots import make_subplots

from nopelens.validation import check_sequence_of_choices

__all__ = [
    "SIMILARITY_COLORSCALE",
    "DIFFERENCE_COLORSCALE",
    "METRIC_LABELS",
    "similarity_heatmap_figure",
    "theory_figure",
    "score_by_layer_figure",
    "distance_profile_figure",
    "variance_figure",
    "probe_figure",
    "sweep_heatmap_figure",
    "sweep_line_figure",
]

#: Colour scale of cosine-similarity heatmaps.
SIMILARITY_COLORSCALE = "Viridis"
#: Colour scale of signed differences (centred at 0).
DIFFERENCE_COLORSCALE = "RdBu"
#: Axis titles of the metrics nopelens reports.
METRIC_LABELS: dict[str, str] = {
    "adjacency_probability": "adjacency probability",
    "neighborhood_concordance": "neighborhood concordance",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "r2": "R²",
    "spearman": "Spearman ρ",
    "mae": "mean absolute error",
    "mad": "mean absolute distance",
    "selectivity": "selectivity",
    "pearson_r": "Pearson r",
    "rmse": "RMSE",
}
# y ranges of bounded metrics (None: free).
_BOUNDS: dict[str, tuple[float, float]] = {
    "adjacency_probability": (0.0, 1.0),
    "neighborhood_concordance": (0.0, 1.0),
    "accuracy": (0.0, 1.0),
    "balanced_accuracy": (0.0, 1.0),
    "spearman": (-1.0, 1.0),
    "pearson_r": (-1.0, 1.0),
}
_PALETTE = qualitative.Plotly
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
_CHANCE_STYLE = {"color": "rgba(90, 90, 90, 0.9)", "dash": "dot", "width": 1.5}
_TEMPLATE_NAME = "plotly_white"
_TEMPLATE: go.layout.Template | None = None


def _template() -> go.layout.Template:
    """``plotly_white`` without its per-trace-type defaults (4 kB less JSON per figure)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        import plotly.io as pio

        _TEMPLATE = go.layout.Template(layout=pio.templates[_TEMPLATE_NAME].layout)
    return _TEMPLATE


_FONT = {"family": "Inter, Helvetica, Arial, sans-serif", "size": 13}


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _numpy(value: Any, name: str, func: str) -> np.ndarray:
    """A float64 numpy copy of a tensor, array or nested list."""
    if hasattr(value, "detach"):
        value = value.detach().to("cpu").double().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"The {name!r} parameter of {func} must be a tensor or array of numbers. "
            f"Got {type(value).__name__} instead."
        ) from None


def _light(array: np.ndarray, decimals: int = 4) -> np.ndarray:
    """Round and cast to float32: what the figure stores (packed binary in the HTML)."""
    return np.round(np.asarray(array, dtype=np.float64), decimals).astype(np.float32)


def _layer_key(label: Any) -> tuple[int, float, str]:
    text = str(label)
    if text == "embed":
        return (0, -1.0, text)
    try:
        return (1, float(text), text)
    except ValueError:
        return (2, 0.0, text)


def _layer_order(values: Any) -> list[str]:
    """Distinct layer labels as strings, ``embed`` first, then blocks in numeric order."""
    return sorted({str(v) for v in values}, key=_layer_key)


def _rgba(color: str, alpha: float) -> str:
    if color.startswith("#"):
        r, g, b = hex_to_rgb(color)
    else:
        r, g, b = (
            int(float(c)) for c in color[color.index("(") + 1 : color.index(")")].split(",")[:3]
        )
    return f"rgba({r}, {g}, {b}, {alpha})"


def _color(index: int) -> str:
    return _PALETTE[index % len(_PALETTE)]


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def _title(what: str, model_label: str | None, title: str | None) -> str:
    if title is not None:
        return title
    return f"{what} — {model_label}" if model_label else what


def _check_frame(frame: Any, name: str, func: str, required: Sequence[str]) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(
            f"The {name!r} parameter of {func} must be a pandas DataFrame. "
            f"Got {type(frame).__name__} instead."
        )
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"The {name!r} parameter of {func} must have the columns {list(required)}; "
            f"missing {missing} (it has {list(frame.columns)})."
        )
    if frame.empty:
        raise ValueError(f"The {name!r} parameter of {func} must be a non-empty DataFrame.")
    return frame


def _select(
    frame: pd.DataFrame, column: str, values: Any, name: str, func: str
) -> tuple[pd.DataFrame, list[Any]]:
    """Rows whose ``column`` is in ``values`` (all distinct values, in order, when None)."""
    present = list(dict.fromkeys(frame[column].tolist()))
    if values is None:
        return frame, present
    if isinstance(values, (str, int)):
        values = [values]
    values = list(values)
    unknown = [v for v in values if v not in present]
    if unknown or not values:
        raise ValueError(
            f"The {name!r} parameter of {func} must be one or more of "
            f"{', '.join(repr(v) for v in present)}. Got {values!r} instead."
        )
    return frame[frame[column].isin(values)], values


def _base_layout(fig: go.Figure, title: str, *, height: int, top: int = 90) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 16}},
        template=_template(),
        font=_FONT,
        height=height,
        margin={"l": 70, "r": 30, "t": top, "b": 60},
        legend={"groupclick": "togglegroup"},
        hoverlabel={"namelength": -1},
    )
    return fig


def _selector(
    fig: go.Figure,
    groups: Sequence[Any],
    trace_group: Sequence[Any],
    titles: Mapping[Any, str],
    *,
    label: str,
    y: float = 1.02,
) -> None:
    """Add a dropdown showing the traces of one group at a time (the first group initially)."""
    for trace, group in zip(fig.data, trace_group, strict=True):
        trace.visible = group == groups[0]
    if len(groups) < 2:
        return
    buttons = [
        {
            "label": f"{label}: {group}",
            "method": "update",
            "args": [
                {"visible": [g == group for g in trace_group]},
                {"title.text": titles[group]},
            ],
        }
        for group in groups
    ]
    fig.update_layout(
        updatemenus=[
            {
                "buttons": buttons,
                "direction": "down",
                "showactive": True,
                "x": 1.0,
                "xanchor": "right",
                "y": y,
                "yanchor": "bottom",
            }
        ]
    )


def _choose_sites(sites: Any, available: list[str], func: str) -> list[str]:
    """The requested sites (all when ``None``), each checked against ``available``."""
    if sites is None:
        return list(available)
    chosen = [sites] if isinstance(sites, str) else list(sites)
    if not chosen or any(s not in available for s in chosen):
        raise ValueError(
            f"The 'sites' parameter of {func} must be one or more of "
            f"{', '.join(repr(s) for s in available)}. Got {sites!r} instead."
        )
    return chosen


def _band(
    x: Sequence[Any], low: np.ndarray, high: np.ndarray, color: str, group: str, **kwargs: Any
) -> go.Scatter:
    """A filled confidence band from ``low`` to ``high`` (no legend entry of its own)."""
    keep = np.isfinite(low) & np.isfinite(high)
    xs = [v for v, k in zip(x, keep, strict=True) if k]
    return go.Scatter(
        x=xs + xs[::-1],
        y=np.concatenate([high[keep], low[keep][::-1]]).round(4).tolist(),
        mode="lines",  # without it plotly adds markers in the next colour of the cycle
        fill="toself",
        fillcolor=_rgba(color, 0.18),
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        legendgroup=group,
        **kwargs,
    )


# --------------------------------------------------------------------------------------------
# similarity heatmaps
# --------------------------------------------------------------------------------------------


def _report_matrices(
    report: Any, layer_labels: Sequence[Any] | None, model_label: str | None, func: str
) -> tuple[dict[str, np.ndarray], list[str], str | None]:
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
        array = _numpy(value, "report", func)
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
    height: int = 620,
) -> go.Figure:
    """Mean self-similarity matrices, one layer at a time, with a layer slider and a site menu.

    Each (site, layer) is one heatmap of the mean cosine similarity S_ij = cos(h_i, h_j) between
    positions i (rows, top to bottom) and j (columns); the slider steps through the layers
    (``embed, 0, 1, ...``), the dropdown switches the hook site (and resets the slider). The
    neighborhood pattern of Zuo et al. (2025) is a bright band along the diagonal that fades with
    ``|i - j|``. The title of each step quotes the layer's adjacency probability and neighborhood
    concordance when ``report`` carries its scores.

    Args:
        report: An :class:`nopelens.measure.analysis.AnalysisReport` (uses its ``matrices``,
            ``layer_labels``, ``model_label`` and ``scores``), or a mapping from site name to a
            ``[layer pos pos]`` tensor or array.
        sites: Sites to include (default: all, in the report's order).
        layer_labels: Labels of the layer axis (default: the report's, or ``0, 1, ...``).
        model_label: Model description for the title (default: the report's).
        title: Title prefix replacing ``"Self-similarity — <model>"``.
        zmin: Lower end of the colour scale (None: the data minimum over all heatmaps).
        zmax: Upper end of the colour scale (None: the data maximum over all heatmaps).
        initial_layer: Layer label shown first (default: the first block, ``"0"``, if present).
        height: Figure height in pixels.

    Returns:
        A figure with one heatmap trace per (site, layer), a slider per site with one step per
        layer (``fig.layout.sliders``), and a site dropdown (``fig.layout.updatemenus``) when there
        are several sites.

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
        >>> fig.layout.xaxis.title.text, fig.layout.yaxis.title.text
        ('key position j', 'query position i')
    """
    func = "similarity_heatmap_figure"
    matrices, labels, model_label = _report_matrices(report, layer_labels, model_label, func)
    chosen = _choose_sites(sites, list(matrices), func)
    if initial_layer is None:
        start = labels.index("0") if "0" in labels else 0
    elif str(initial_layer) in labels:
        start = labels.index(str(initial_layer))
    else:
        raise ValueError(
            f"The 'initial_layer' parameter of {func} must be one of "
            f"{', '.join(repr(v) for v in labels)}. Got {initial_layer!r} instead."
        )
    if zmin is None or zmax is None:
        finite = np.concatenate([m[np.isfinite(m)] for m in (matrices[s] for s in chosen)])
        zmin = float(finite.min()) if zmin is None and finite.size else zmin
        zmax = float(finite.max()) if zmax is None and finite.size else zmax
    scores = getattr(report, "scores", None)
    prefix = _title("Self-similarity", model_label, title)

    def step_title(site: str, layer: str) -> str:
        note = _score_note(scores, site, layer)
        return f"{prefix}<br><sup>site {site} · layer {layer}{' · ' + note if note else ''}</sup>"

    fig = go.Figure()
    n_layers = len(labels)
    for site in chosen:
        for li, layer in enumerate(labels):
            fig.add_trace(
                go.Heatmap(
                    z=_light(matrices[site][li], 3),
                    coloraxis="coloraxis",
                    name=f"{site} · layer {layer}",
                    hovertemplate=(
                        f"i=%{{y}}, j=%{{x}}<br>cos=%{{z:.3f}}<extra>{site} · layer {layer}</extra>"
                    ),
                    visible=site == chosen[0] and li == start,
                )
            )
    n_traces = len(fig.data)

    def visible(si: int, li: int) -> list[bool]:
        flags = [False] * n_traces
        flags[si * n_layers + li] = True
        return flags

    def slider(si: int) -> dict[str, Any]:
        site = chosen[si]
        return {
            "active": start,
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
                    "args": [{"visible": visible(si, li)}, {"title.text": step_title(site, layer)}],
                }
                for li, layer in enumerate(labels)
            ],
        }

    _base_layout(fig, step_title(chosen[0], labels[start]), height=height, top=100)
    fig.update_layout(
        sliders=[slider(0)],
        coloraxis={
            "colorscale": SIMILARITY_COLORSCALE,
            "cmin": zmin,
            "cmax": zmax,
            "colorbar": {"title": {"text": "cos sim"}, "thickness": 14},
        },
        margin={"b": 130},
    )
    fig.update_xaxes(title_text="key position j", constrain="domain", showgrid=False)
    fig.update_yaxes(
        title_text="query position i",
        autorange="reversed",
        scaleanchor="x",
        constrain="domain",
        showgrid=False,
    )
    if len(chosen) > 1:
        fig.update_layout(
            updatemenus=[
                {
                    "buttons": [
                        {
                            "label": f"site: {site}",
                            "method": "update",
                            "args": [
                                {"visible": visible(si, start)},
                                {
                                    "sliders": [slider(si)],
                                    "title.text": step_title(site, labels[start]),
                                },
                            ],
                        }
                        for si, site in enumerate(chosen)
                    ],
                    "direction": "down",
                    "showactive": True,
                    "x": 1.0,
                    "xanchor": "right",
                    "y": 1.02,
                    "yanchor": "bottom",
                }
            ]
        )
    return fig


# --------------------------------------------------------------------------------------------
# first-layer theory
# --------------------------------------------------------------------------------------------


def _site_matrix(theory: Any, attr: str, site: str, func: str) -> np.ndarray | None:
    value = getattr(theory, attr, None)
    if value is None:
        return None
    if isinstance(value, Mapping):
        if site not in value:
            return None
        value = value[site]
    array = _numpy(value, "theory", func)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(
            f"The {attr!r} matrix of site {site!r} passed to {func} must have shape "
            f"[query_pos key_pos]. Got shape {tuple(array.shape)} instead."
        )
    return array


def _theory_sites(theory: Any) -> list[str]:
    observed = getattr(theory, "observed", None)
    if isinstance(observed, Mapping):
        return [str(s) for s in observed]
    sites = getattr(theory, "sites", None)
    return [str(s) for s in sites] if sites is not None else ["attn_out"]


def _fit_note(theory: Any, site: str) -> str:
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


def theory_figure(
    theory: Any,
    *,
    sites: str | Sequence[str] | None = None,
    include_closed_form: bool = False,
    title: str | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    height: int | None = None,
) -> go.Figure:
    """Layer-0 theory against observation: observed, predicted and their difference side by side.

    The observed panel is the measured mean self-similarity of a first-layer site, the predicted
    panel the similarity the first-layer theory computes from the attention patterns (isotropic
    values, ``A G Aᵀ`` normalised; see :func:`~nopelens.first_layer_theory`). Both share one
    colour scale; the difference ``observed − predicted`` uses the diverging ``RdBu`` scale centred
    at 0. ``include_closed_form`` adds the uniform-attention closed form
    ``sqrt(min(i, j) / max(i, j))`` as a third panel. The subtitle gives the fit (Pearson r, RMSE,
    max error, AP/NC observed vs predicted) from ``theory.metrics``.

    Args:
        theory: A :class:`~nopelens.FirstLayerTheory` (or any object with ``observed`` and
            ``predicted`` mappings site -> ``[pos pos]``, and optionally ``closed_form``,
            ``metrics`` and ``model_label``).
        sites: Sites to include (default: all); a dropdown switches between several.
        include_closed_form: Also show the closed-form prediction.
        title: Title replacing ``"Layer-0 theory vs observation — <model>"``.
        zmin: Lower end of the shared similarity scale (None: the data minimum).
        zmax: Upper end of the shared similarity scale (None: the data maximum).
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
    chosen = _choose_sites(sites, _theory_sites(theory), func)
    panels: dict[str, dict[str, np.ndarray]] = {}
    for site in chosen:
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
            if closed is None:
                n = observed.shape[0]
                i = np.arange(1, n + 1, dtype=np.float64)
                closed = np.sqrt(np.minimum.outer(i, i) / np.maximum.outer(i, i))
            entry["closed form"] = closed
        entry["observed − predicted"] = observed - predicted
        panels[site] = entry
    names = list(panels[chosen[0]])
    sim = np.concatenate(
        [m[np.isfinite(m)].ravel() for p in panels.values() for k, m in p.items() if "−" not in k]
    )
    lo = float(zmin) if zmin is not None else float(sim.min()) if sim.size else -1.0
    hi = float(zmax) if zmax is not None else float(sim.max()) if sim.size else 1.0
    diffs = np.concatenate([np.abs(p["observed − predicted"]).ravel() for p in panels.values()])
    diffs = diffs[np.isfinite(diffs)]
    span = float(diffs.max()) if diffs.size and diffs.max() > 0 else 1e-6

    if height is None:  # square panels: shorter when four share the width
        height = 430 if len(names) > 3 else 480
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.07)
    trace_site = []
    for site in chosen:
        for col, name in enumerate(names, start=1):
            diff = "−" in name
            fig.add_trace(
                go.Heatmap(
                    z=_light(panels[site][name], 4),
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
    model_label = getattr(theory, "model_label", None)
    head = _title("Layer-0 theory vs observation", model_label, title)
    titles = {}
    for site in chosen:
        note = _fit_note(theory, site)
        titles[site] = f"{head}<br><sup>site {site}{' · ' + note if note else ''}</sup>"
    _base_layout(fig, titles[chosen[0]], height=height, top=120)
    plot_height = height - 120 - 60
    _selector(fig, chosen, trace_site, titles, label="site", y=1.0 + 40 / plot_height)
    sim_panel_end = fig.layout[f"xaxis{len(names) - 1}"].domain[1]  # last similarity panel
    fig.update_layout(
        coloraxis={
            "colorscale": SIMILARITY_COLORSCALE,
            "cmin": lo,
            "cmax": hi,
            "colorbar": {
                "title": {"text": "cos"},
                "thickness": 10,
                "x": sim_panel_end + 0.005,
                "xanchor": "left",
                "len": 0.85,
            },
        },
        coloraxis2={
            "colorscale": DIFFERENCE_COLORSCALE,
            "cmin": -span,
            "cmax": span,
            "cmid": 0.0,
            "colorbar": {
                "title": {"text": "Δ"},
                "thickness": 10,
                "x": 1.0,
                "xanchor": "left",
                "len": 0.85,
            },
        },
        margin={"r": 60},
    )
    for col in range(1, len(names) + 1):
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
            showticklabels=col == 1,  # same positions in every panel; keeps colour bars clear
        )
    return fig


# --------------------------------------------------------------------------------------------
# scores by layer
# --------------------------------------------------------------------------------------------


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
    grey dotted line.

    Args:
        scores: A tidy frame with the columns ``site, layer, metric, value`` and optionally
            ``chance, ci_low, ci_high`` and ``model`` (concatenate several
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
    frame = _check_frame(scores, "scores", func, ("site", "layer", "metric", "value")).copy()
    if "model" not in frame.columns:
        frame["model"] = frame["model_label"] if "model_label" in frame.columns else ""
    frame["layer"] = frame["layer"].astype(str)
    frame, metric_list = _select(frame, "metric", metrics, "metrics", func)
    frame, site_list = _select(frame, "site", sites, "sites", func)
    frame, model_list = _select(frame, "model", models, "models", func)
    layers = _layer_order(frame["layer"])
    fig = make_subplots(
        rows=1,
        cols=len(metric_list),
        subplot_titles=[_metric_label(m) for m in metric_list] if len(metric_list) > 1 else None,
        horizontal_spacing=0.08,
    )
    several_sites, several_models = len(site_list) > 1, len(model_list) > 1
    seen_chance: set[str] = set()
    for col, metric in enumerate(metric_list, start=1):
        sub = frame[frame["metric"] == metric]
        for mi, model in enumerate(model_list):
            color = _color(mi)
            for si, site in enumerate(site_list):
                rows = sub[(sub["model"] == model) & (sub["site"] == site)]
                if rows.empty:
                    continue
                agg = rows.groupby("layer", sort=False).mean(numeric_only=True)
                agg = agg.reindex([layer for layer in layers if layer in agg.index])
                x = list(agg.index)
                parts = [str(model)] if str(model) and (several_models or not several_sites) else []
                if several_sites or not parts:
                    parts.append(site)
                name = " · ".join(parts)
                group = f"{model}|{site}"
                if {"ci_low", "ci_high"} <= set(agg.columns):
                    low, high = agg["ci_low"].to_numpy(float), agg["ci_high"].to_numpy(float)
                    if np.isfinite(low).any():
                        fig.add_trace(_band(x, low, high, color, group), row=1, col=col)
                custom = (
                    np.stack([agg["ci_low"], agg["ci_high"]], axis=-1).round(4)
                    if {"ci_low", "ci_high"} <= set(agg.columns)
                    else None
                )
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=agg["value"].round(4).tolist(),
                        mode="lines+markers",
                        name=name,
                        legendgroup=group,
                        showlegend=col == 1,
                        line={"color": color, "dash": _DASHES[si % len(_DASHES)], "width": 2},
                        customdata=custom,
                        hovertemplate=(
                            f"{name}<br>layer %{{x}}<br>{_metric_label(metric)} %{{y:.3f}}"
                            + (
                                " [%{customdata[0]:.3f}, %{customdata[1]:.3f}]"
                                if custom is not None
                                else ""
                            )
                            + "<extra></extra>"
                        ),
                    ),
                    row=1,
                    col=col,
                )
        if "chance" in sub.columns:
            chance = sub.groupby(["model", "layer"], sort=False)["chance"].mean().dropna()
            levels: dict[tuple[float, ...], list[str]] = {}
            for model in model_list:
                if model in chance.index.get_level_values(0):
                    series = chance.loc[model].reindex(layers)
                    key = tuple(np.round(series.to_numpy(float), 6))
                    levels.setdefault(key, []).append(str(model))
            for key, owners in levels.items():
                label = "chance" if len(levels) == 1 else f"chance ({', '.join(owners)})"
                show = label not in seen_chance
                seen_chance.add(label)
                fig.add_trace(
                    go.Scatter(
                        x=layers,
                        y=[None if math.isnan(v) else v for v in key],
                        mode="lines",
                        name=label,
                        legendgroup=label,
                        showlegend=show,
                        line=_CHANCE_STYLE,
                        hovertemplate=f"{label} %{{y:.3f}}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
        fig.update_yaxes(title_text=_metric_label(metric), row=1, col=col)
        if metric in _BOUNDS:
            lo, hi = _BOUNDS[metric]
            fig.update_yaxes(range=[lo - 0.02, hi + 0.02], row=1, col=col)
    fig.update_xaxes(
        title_text="layer", type="category", categoryorder="array", categoryarray=layers
    )
    only_model = model_list[0] if len(model_list) == 1 and str(model_list[0]) else None
    _base_layout(fig, _title("Scores by layer", only_model, title), height=height)
    return fig


# --------------------------------------------------------------------------------------------
# distance profiles
# --------------------------------------------------------------------------------------------


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
    frame = _check_frame(profiles, "profiles", func, ("site", "layer", "distance", "value")).copy()
    frame["layer"] = frame["layer"].astype(str)
    if layers is not None:
        layers = [str(v) for v in layers]
    frame, site_list = _select(frame, "site", sites, "sites", func)
    frame, _ = _select(frame, "layer", layers, "layers", func)
    frame = frame[frame["distance"] >= min_distance]
    if "model" not in frame.columns:
        frame["model"] = ""
    model_list = list(dict.fromkeys(frame["model"]))
    layer_list = _layer_order(frame["layer"])
    colors = sample_colorscale(
        "Viridis", [i / max(len(layer_list) - 1, 1) * 0.9 for i in range(len(layer_list))]
    )
    fig = go.Figure()
    trace_site = []
    for site in site_list:
        for mi, model in enumerate(model_list):
            for li, layer in enumerate(layer_list):
                rows = frame[
                    (frame["site"] == site) & (frame["model"] == model) & (frame["layer"] == layer)
                ]
                if rows.empty:
                    continue
                agg = rows.groupby("distance")["value"].mean().sort_index()
                name = f"{model} · layer {layer}" if str(model) else f"layer {layer}"
                fig.add_trace(
                    go.Scatter(
                        x=agg.index.tolist(),
                        y=agg.round(4).tolist(),
                        mode="lines+markers",
                        marker={"size": 4},
                        name=name,
                        line={"color": colors[li], "dash": _DASHES[mi % len(_DASHES)]},
                        hovertemplate=(
                            f"{site} · {name}<br>d=%{{x}}<br>mean cos %{{y:.3f}}<extra></extra>"
                        ),
                    )
                )
                trace_site.append(site)
    if model_label is None and len(model_list) == 1 and str(model_list[0]):
        model_label = str(model_list[0])
    head = _title("Distance profile", model_label, title)
    titles = {site: f"{head}<br><sup>site {site}</sup>" for site in site_list}
    _base_layout(fig, titles[site_list[0]], height=height, top=100)
    _selector(fig, site_list, trace_site, titles, label="site")
    fig.update_xaxes(title_text="distance |i − j|")
    fig.update_yaxes(title_text="mean cosine similarity")
    return fig


# --------------------------------------------------------------------------------------------
# variance by position
# --------------------------------------------------------------------------------------------


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
    frame = _check_frame(variance, "variance", func, ("pos",)).copy()
    if value is None:
        value = "observed" if "observed" in frame.columns else "value"
    _check_frame(frame, "variance", func, ("pos", value))
    if "site" not in frame.columns:
        frame["site"] = ""
    frame, site_list = _select(frame, "site", sites, "sites", func)
    keys = [c for c in ("model", "layer") if c in frame.columns and frame[c].nunique() > 1]
    fig = go.Figure()
    trace_site = []
    for site in site_list:
        sub = frame[frame["site"] == site]
        groups = (
            [((), sub)]
            if not keys
            else sorted(
                (
                    (k if isinstance(k, tuple) else (k,), g)
                    for k, g in sub.groupby(keys, sort=False)
                ),
                key=lambda kg: tuple(_layer_key(v) for v in kg[0]),
            )
        )
        for gi, (key, rows) in enumerate(groups):
            color = _color(gi)
            label = " · ".join(
                f"{'layer ' if k == 'layer' else ''}{v}" for k, v in zip(keys, key, strict=True)
            )
            prefix = f"{label} · " if label else ""
            agg = rows.groupby("pos").mean(numeric_only=True).sort_index()
            pos = agg.index.to_numpy(dtype=np.float64)
            y = agg[value].to_numpy(dtype=np.float64)
            fig.add_trace(
                go.Scatter(
                    x=pos.tolist(),
                    y=_light(y, 6).tolist(),
                    mode="markers+lines",
                    name=f"{prefix}observed",
                    legendgroup=prefix,
                    line={"color": color, "width": 1},
                    marker={"size": 6},
                    hovertemplate="pos %{x}<br>variance %{y:.4g}<extra></extra>",
                )
            )
            trace_site.append(site)
            if "predicted" in agg.columns and value != "predicted":
                fig.add_trace(
                    go.Scatter(
                        x=pos.tolist(),
                        y=_light(agg["predicted"].to_numpy(float), 6).tolist(),
                        mode="lines",
                        name=f"{prefix}predicted",
                        legendgroup=prefix,
                        line={"color": color, "dash": "dash"},
                        hovertemplate="pos %{x}<br>predicted %{y:.4g}<extra></extra>",
                    )
                )
                trace_site.append(site)
            a, b, r2 = _inverse_fit(pos + 1.0, y)
            if np.isfinite(a):
                grid = np.linspace(pos.min(), pos.max(), 100)
                fig.add_trace(
                    go.Scatter(
                        x=_light(grid, 3).tolist(),
                        y=_light(a + b / (grid + 1.0), 6).tolist(),
                        mode="lines",
                        name=f"{prefix}fit a + b/i (R²={r2:.3f})",
                        legendgroup=prefix,
                        line={"color": color, "dash": "dot"},
                        hovertemplate=(
                            f"a={a:.4g}, b={b:.4g}<br>pos %{{x:.1f}}: %{{y:.4g}}<extra></extra>"
                        ),
                    )
                )
                trace_site.append(site)
    if model_label is None and "model" in frame.columns and frame["model"].nunique() == 1:
        model_label = str(frame["model"].iloc[0])
    head = _title("Variance by position", model_label, title)
    titles = {site: f"{head}<br><sup>site {site}</sup>" if site else head for site in site_list}
    _base_layout(fig, titles[site_list[0]], height=height, top=100)
    _selector(fig, site_list, trace_site, titles, label="site")
    fig.update_xaxes(title_text="position (0-indexed; fit uses i = pos + 1)")
    fig.update_yaxes(title_text="variance across d_model", type="log" if log_y else "linear")
    return fig


# --------------------------------------------------------------------------------------------
# probes
# --------------------------------------------------------------------------------------------


_PROBE_SYMBOLS = {"ridge": "circle", "logistic": "square", "isotonic": "diamond"}
_CONTROL_STYLES = {
    "control": {"dash": "dot", "width": 1.5},
    "shuffled": {"dash": "dashdot", "width": 1.2},
    "random_init": {"dash": "longdash", "width": 1.5},
}


def _probe_rows(frame: pd.DataFrame, sites: list[str]) -> pd.DataFrame:
    """Copy the input-embedding rows (site ``embed``) into the panel of every probed site."""
    embed = frame[frame["site"] == "embed"]
    if embed.empty or sites == ["embed"]:
        return frame
    others = frame[frame["site"] != "embed"]
    copies = [embed.assign(site=site) for site in sites if site != "embed"]
    return pd.concat([others, *copies], ignore_index=True)


def probe_figure(
    results: pd.DataFrame,
    *,
    metric: str | None = None,
    sites: str | Sequence[str] | None = None,
    capacity: str = "full",
    controls: Sequence[str] = ("control", "random_init"),
    model_label: str | None = None,
    title: str | None = None,
    height: int = 460,
) -> go.Figure:
    """Position-probe results by layer: one line per feature family, with chance and controls.

    For each probed site (one panel each; the input embedding appears as layer ``embed`` in every
    panel), draws the probe metric on the true positions against the layer, one colour per
    feature family (hidden state, cosine-similarity row, variance) and one marker per probe kind
    (ridge ●, logistic ■, isotonic ◆), with the seed confidence interval as a band. In the
    family's colour, thin lines show the controls (one legend entry per kind of control): the
    Hewitt & Liang (2019) control task (dotted), shuffled training labels (dash-dot) and the same
    architecture at random init (long dashes); the metric's chance level is a grey dotted line.
    A family carries position only where it rises above chance and its controls.

    Args:
        results: ``ProbeReport.results``: a tidy frame with the columns ``site, layer, feature,
            metric, value`` and optionally ``probe, target`` (``position`` / ``control`` /
            ``shuffled``), ``model`` (``given`` / ``random_init``), ``capacity``, ``ci_low,
            ci_high, chance``.
        metric: The metric to draw (default: the first of ``spearman, r2, accuracy`` present,
            else the first in the frame).
        sites: Sites to draw, one panel each (default: all but ``embed``).
        capacity: Which capacity rows to draw when the frame has a ``capacity`` column
            (``"full"``: each family at its own dimension; ``"matched"``: equal dimension).
        controls: Controls to overlay, among ``"control"``, ``"shuffled"``, ``"random_init"``.
        model_label: Model description for the title.
        title: Title replacing ``"Position probes (<metric>) — <model>"``.
        height: Figure height in pixels.

    Returns:
        A figure with, per panel, a line trace (plus a band) per (feature, probe), a thin line per
        (feature, probe, control) named after the control (the full name is in its ``meta``) and
        a chance trace.

    Raises:
        ValueError: If a required column is missing or a selection names an unknown value.

    Examples:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"site": "resid_post", "layer": ["0", "1"] * 3,
        ...                    "feature": ["cosine"] * 4 + ["variance"] * 2, "probe": "ridge",
        ...                    "target": ["position"] * 2 + ["control"] * 2 + ["position"] * 2,
        ...                    "metric": "r2", "value": [0.5, 0.7, 0.0, 0.1, 0.1, 0.2],
        ...                    "chance": 0.0})
        >>> fig = probe_figure(df)
        >>> [t.name for t in fig.data]
        ['cosine · ridge', 'variance · ridge', 'control task', 'chance']
        >>> fig.layout.xaxis.title.text, fig.layout.yaxis.title.text
        ('layer', 'R²')
    """
    func = "probe_figure"
    frame = _check_frame(
        results, "results", func, ("site", "layer", "feature", "metric", "value")
    ).copy()
    frame["layer"] = frame["layer"].astype(str)
    frame["site"] = frame["site"].astype(str)
    present = list(dict.fromkeys(frame["metric"]))
    if metric is None:
        metric = next((m for m in ("spearman", "r2", "accuracy") if m in present), present[0])
    frame, _ = _select(frame, "metric", metric, "metric", func)
    for column, default in (("probe", ""), ("target", "position"), ("model", "given")):
        if column not in frame.columns:
            frame[column] = default
    if "capacity" in frame.columns:
        frame, _ = _select(frame, "capacity", capacity, "capacity", func)
    if isinstance(controls, str) or len(controls):
        controls = check_sequence_of_choices(controls, "controls", tuple(_CONTROL_STYLES), func)
    probed = [s for s in dict.fromkeys(frame["site"]) if s != "embed"] or ["embed"]
    if sites is None:
        site_list = probed
    else:
        _, site_list = _select(frame, "site", sites, "sites", func)
    frame = _probe_rows(frame, site_list)
    frame = frame[frame["site"].isin(site_list)]
    is_random = frame["model"].astype(str) == "random_init"
    if is_random.all():  # a frame of the random-init baseline alone: it is the subject
        is_random = ~is_random
    main = frame[(frame["target"] == "position") & ~is_random]
    kinds = {
        "control": frame[(frame["target"] == "control") & ~is_random],
        "shuffled": frame[(frame["target"] == "shuffled") & ~is_random],
        "random_init": frame[(frame["target"] == "position") & is_random],
    }
    control_names = {
        "control": "control task",
        "shuffled": "shuffled labels",
        "random_init": "random init",
    }
    features = list(dict.fromkeys(main["feature"]))
    probes = list(dict.fromkeys(main["probe"]))
    layers = _layer_order(frame["layer"])
    fig = make_subplots(
        rows=1,
        cols=len(site_list),
        subplot_titles=[f"site {s}" for s in site_list] if len(site_list) > 1 else None,
        horizontal_spacing=0.06,
        shared_yaxes=True,
    )

    def series(rows: pd.DataFrame) -> pd.DataFrame:
        agg = rows.groupby("layer").mean(numeric_only=True)
        return agg.reindex([v for v in layers if v in agg.index])

    def label(feature: Any, probe: Any) -> str:
        return f"{feature} · {probe}" if str(probe) else str(feature)

    hover = f"%{{meta}}<br>layer %{{x}}<br>{_metric_label(metric)} %{{y:.3f}}"
    chance_shown = False
    for col, site in enumerate(site_list, start=1):
        first = col == 1
        for fi, feature in enumerate(features):
            color = _color(fi)
            for probe in probes:
                rows = main[
                    (main["site"] == site) & (main["feature"] == feature) & (main["probe"] == probe)
                ]
                if rows.empty:
                    continue
                agg, name = series(rows), label(feature, probe)
                x = list(agg.index)
                if {"ci_low", "ci_high"} <= set(agg.columns):
                    low, high = agg["ci_low"].to_numpy(float), agg["ci_high"].to_numpy(float)
                    if np.isfinite(low).any():
                        fig.add_trace(_band(x, low, high, color, name), row=1, col=col)
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=agg["value"].round(4).tolist(),
                        mode="lines+markers",
                        name=name,
                        legendgroup=name,
                        showlegend=first,
                        meta=name,
                        line={"color": color, "width": 2},
                        marker={"symbol": _PROBE_SYMBOLS.get(str(probe), "circle"), "size": 7},
                        hovertemplate=hover + "<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
        for kind in controls:
            rows_all = kinds[kind]
            shown = False  # one legend entry per control kind; colours name the family
            for fi, feature in enumerate(features):
                for probe in probes:
                    rows = rows_all[
                        (rows_all["site"] == site)
                        & (rows_all["feature"] == feature)
                        & (rows_all["probe"] == probe)
                    ]
                    if rows.empty:
                        continue
                    agg = series(rows)
                    name = f"{label(feature, probe)} · {control_names[kind]}"
                    fig.add_trace(
                        go.Scatter(
                            x=list(agg.index),
                            y=agg["value"].round(4).tolist(),
                            mode="lines",
                            name=control_names[kind],
                            legendgroup=kind,
                            showlegend=first and not shown,
                            line={"color": _rgba(_color(fi), 0.75), **_CONTROL_STYLES[kind]},
                            meta=name,
                            hovertemplate=hover + "<extra></extra>",
                        ),
                        row=1,
                        col=col,
                    )
                    shown = True
        sub = main[main["site"] == site]
        if "chance" in sub.columns and sub["chance"].notna().any():
            chance = sub.groupby("layer")["chance"].mean().reindex(layers)
            fig.add_trace(
                go.Scatter(
                    x=layers,
                    y=[None if pd.isna(v) else round(float(v), 4) for v in chance],
                    mode="lines",
                    name="chance",
                    legendgroup="chance",
                    showlegend=not chance_shown,
                    line=_CHANCE_STYLE,
                    hovertemplate="chance %{y:.3f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
            chance_shown = True
    fig.update_xaxes(
        title_text="layer", type="category", categoryorder="array", categoryarray=layers
    )
    fig.update_yaxes(title_text=_metric_label(metric), row=1, col=1)
    if metric in _BOUNDS:
        lo, hi = _BOUNDS[metric]
        fig.update_yaxes(range=[lo - 0.02, hi + 0.02])
    if model_label is None and "model_label" in frame.columns:
        labels = frame["model_label"].dropna().unique()
        model_label = str(labels[0]) if len(labels) == 1 else None
    what = f"Position probes ({_metric_label(metric)}"
    what += f", {capacity} capacity)" if "capacity" in results.columns else ")"
    _base_layout(fig, _title(what, model_label, title), height=height)
    return fig


# --------------------------------------------------------------------------------------------
# sweeps
# --------------------------------------------------------------------------------------------


def _sweep_rows(
    frame: pd.DataFrame, metric: str | None, layer: Any, site: str | None, func: str
) -> pd.DataFrame:
    """Rows of one metric, one site and one layer (``"last"``: each configuration's last block)."""
    if "metric" in frame.columns:
        present = list(dict.fromkeys(frame["metric"]))
        if metric is None:
            metric = "adjacency_probability" if "adjacency_probability" in present else present[0]
        frame, _ = _select(frame, "metric", metric, "metric", func)
    if "site" in frame.columns:
        present = list(dict.fromkeys(frame["site"]))
        if site is None:
            site = "resid_post" if "resid_post" in present else present[0]
        frame, _ = _select(frame, "site", site, "site", func)
    if "layer" in frame.columns:
        frame = frame.assign(layer=frame["layer"].astype(str))
        labels = set(frame["layer"])
        if str(layer) == "last" and "last" not in labels:
            keys = [c for c in ("config_id",) if c in frame.columns]
            blocks = frame[frame["layer"] != "embed"] if labels - {"embed"} else frame
            if keys:
                rank = blocks["layer"].map(_layer_key)
                last = rank.groupby(blocks[keys[0]]).transform("max")
                frame = blocks[rank == last]
            else:
                frame = blocks[blocks["layer"] == _layer_order(blocks["layer"])[-1]]
            frame = frame.assign(layer="last")
        else:
            frame, _ = _select(frame, "layer", str(layer), "layer", func)
    return frame


def _sweep_metric(frame: pd.DataFrame, metric: str | None) -> str:
    if metric is not None:
        return metric
    if "metric" in frame.columns:
        return str(frame["metric"].iloc[0])
    return "value"


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
    height: int = 460,
) -> go.Figure:
    """A score as a heatmap over two hyperparameters of a sweep (mean over everything else).

    Each cell is the mean ``value`` of the rows with that pair of hyperparameter values, averaged
    over the remaining columns (seeds, other hyperparameters) unless ``where`` pins them; the cell
    text shows the mean and the hover the number of rows. Bounded metrics use their fixed range
    (e.g. ``[0, 1]`` for adjacency probability) so sweeps compare across figures.

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
        height: Figure height in pixels.

    Returns:
        A figure with one heatmap trace whose axes are the hyperparameter values as categories.

    Raises:
        ValueError: If a column is missing, or no rows remain after filtering.

    Examples:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"d_model": [32, 32, 64, 64], "n_heads": [1, 4, 1, 4],
        ...                    "metric": "adjacency_probability", "value": [0.5, 0.6, 0.7, 0.9]})
        >>> fig = sweep_heatmap_figure(df, x="d_model", y="n_heads")
        >>> fig.data[0].z.shape, fig.layout.xaxis.title.text, fig.data[0].zmax
        ((2, 2), 'd_model', 1.0)
    """
    func = "sweep_heatmap_figure"
    data = _check_frame(frame, "frame", func, (x, y, value))
    for column, wanted in (where or {}).items():
        _check_frame(data, "frame", func, (column,))
        data = data[
            data[column].isin(wanted if isinstance(wanted, (list, tuple, set)) else [wanted])
        ]
    metric_name = (
        _sweep_metric(data, metric) if metric is None and "metric" not in data.columns else None
    )
    data = _sweep_rows(data, metric, layer, site, func)
    if data.empty:
        raise ValueError(f"No rows of 'frame' are left for {func} after filtering by {where!r}.")
    metric_name = metric_name or _sweep_metric(data, metric)
    table = data.pivot_table(index=y, columns=x, values=value, aggfunc="mean")
    counts = data.pivot_table(index=y, columns=x, values=value, aggfunc="count").reindex_like(table)
    lo, hi = _BOUNDS.get(metric_name, (None, None))
    z = table.to_numpy(dtype=np.float64)
    zmin = zmin if zmin is not None else lo if lo is not None else float(np.nanmin(z))
    zmax = zmax if zmax is not None else hi if hi is not None else float(np.nanmax(z))
    fig = go.Figure(
        go.Heatmap(
            z=_light(z, 4),
            x=[str(v) for v in table.columns],
            y=[str(v) for v in table.index],
            customdata=counts.fillna(0).to_numpy(dtype=np.int32),
            colorscale=SIMILARITY_COLORSCALE,
            zmin=zmin,
            zmax=zmax,
            texttemplate="%{z:.2f}",
            colorbar={"title": {"text": _metric_label(metric_name)}, "thickness": 14},
            hovertemplate=(
                f"{x}=%{{x}}, {y}=%{{y}}<br>{_metric_label(metric_name)} %{{z:.3f}}"
                "<br>n=%{customdata}<extra></extra>"
            ),
        )
    )
    sub = []
    if "layer" in data.columns:
        sub.append(f"layer {data['layer'].iloc[0]}")
    if "site" in data.columns and data["site"].nunique() == 1:
        sub.append(f"site {data['site'].iloc[0]}")
    if "chance" in data.columns and data["chance"].notna().any():
        sub.append(f"chance {data['chance'].mean():.3f}")
    sub.extend(f"{k}={v}" for k, v in (where or {}).items())
    head = (
        title if title is not None else f"{_metric_label(metric_name).capitalize()} by {y} and {x}"
    )
    _base_layout(
        fig, head + (f"<br><sup>{' · '.join(sub)}</sup>" if sub else ""), height=height, top=90
    )
    fig.update_xaxes(title_text=x, type="category")
    fig.update_yaxes(title_text=y, type="category")
    return fig


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
        log_x: Logarithmic x axis.
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
    data = _check_frame(frame, "frame", func, (x, value) + ((color,) if color else ()))
    for column, wanted in (where or {}).items():
        _check_frame(data, "frame", func, (column,))
        data = data[
            data[column].isin(wanted if isinstance(wanted, (list, tuple, set)) else [wanted])
        ]
    had_metric = "metric" in data.columns
    data = _sweep_rows(data, metric, layer, site, func)
    if data.empty:
        raise ValueError(f"No rows of 'frame' are left for {func} after filtering by {where!r}.")
    metric_name = _sweep_metric(data, metric) if had_metric or metric else value
    groups = [(None, data)] if color is None else list(data.groupby(color, sort=True))
    fig = go.Figure()
    for gi, (key, rows) in enumerate(groups):
        stats = rows.groupby(x)[value].agg(["mean", "std", "count"]).sort_index()
        half = 1.96 * stats["std"].fillna(0.0) / np.sqrt(stats["count"])
        xs = stats.index.tolist()
        line_color = _color(gi)
        name = f"{color}={key}" if color is not None else _metric_label(metric_name)
        if (stats["count"] > 1).any():
            fig.add_trace(
                _band(
                    xs,
                    (stats["mean"] - half).to_numpy(float),
                    (stats["mean"] + half).to_numpy(float),
                    line_color,
                    name,
                )
            )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=stats["mean"].round(4).tolist(),
                mode="lines+markers",
                name=name,
                legendgroup=name,
                line={"color": line_color},
                customdata=stats["count"].to_numpy(dtype=np.int32),
                hovertemplate=f"{name}<br>{x}=%{{x}}<br>%{{y:.3f}} (n=%{{customdata}})"
                "<extra></extra>",
            )
        )
    if "chance" in data.columns and data["chance"].notna().any():
        chance = data.groupby(x)["chance"].mean().sort_index()
        fig.add_trace(
            go.Scatter(
                x=chance.index.tolist(),
                y=chance.round(4).tolist(),
                mode="lines",
                name="chance",
                line=_CHANCE_STYLE,
                hovertemplate="chance %{y:.3f}<extra></extra>",
            )
        )
    sub = []
    if "layer" in data.columns:
        sub.append(f"layer {data['layer'].iloc[0]}")
    if "site" in data.columns and data["site"].nunique() == 1:
        sub.append(f"site {data['site'].iloc[0]}")
    sub.extend(f"{k}={v}" for k, v in (where or {}).items())
    head = title if title is not None else f"{_metric_label(metric_name).capitalize()} by {x}"
    _base_layout(fig, head + (f"<br><sup>{' · '.join(sub)}</sup>" if sub else ""), height=height)
    fig.update_xaxes(title_text=x, type="log" if log_x else "linear")
    fig.update_yaxes(title_text=_metric_label(metric_name))
    if metric_name in _BOUNDS:
        lo, hi = _BOUNDS[metric_name]
        fig.update_yaxes(range=[lo - 0.02, hi + 0.02])
    return fig
