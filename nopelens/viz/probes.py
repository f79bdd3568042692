"""Position-probe results by layer: feature families against their controls and chance.

One panel per probed site. Each feature family (hidden state, cosine-similarity row, variance)
and probe kind gets a line with its seed band; its controls (the Hewitt & Liang control task,
shuffled training labels, the same architecture at random init) are thin lines in the family's
colour, and the chance level a grey dotted line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nopelens.validation import check_sequence_of_choices
from nopelens.viz.inputs import check_frame, layer_order, select
from nopelens.viz.style import (
    add_line_with_band,
    base_layout,
    bound_y_axis,
    chance_trace,
    metric_label,
    palette_color,
    rgba,
    title_text,
)

__all__ = ["probe_figure"]

_PROBE_SYMBOLS = {"ridge": "circle", "logistic": "square", "isotonic": "diamond"}
_CONTROL_STYLES = {
    "control": {"dash": "dot", "width": 1.5},
    "shuffled": {"dash": "dashdot", "width": 1.2},
    "random_init": {"dash": "longdash", "width": 1.5},
}
_CONTROL_NAMES = {
    "control": "control task",
    "shuffled": "shuffled labels",
    "random_init": "random init",
}


def _probe_frame(
    results: pd.DataFrame, metric: str | None, capacity: str, func: str
) -> tuple[pd.DataFrame, str]:
    """The rows of one metric and capacity, with defaults for the optional columns."""
    frame = check_frame(
        results, "results", func, ("site", "layer", "feature", "metric", "value")
    ).copy()
    if "split" in frame.columns:  # length-extrapolation rows are a different experiment
        frame = frame[frame["split"].isna() | (frame["split"] == "sequence")].copy()
    frame["layer"] = frame["layer"].astype(str)
    frame["site"] = frame["site"].astype(str)
    present = list(dict.fromkeys(frame["metric"]))
    if metric is None:
        metric = next((m for m in ("spearman", "r2", "accuracy") if m in present), present[0])
    frame, _ = select(frame, "metric", metric, "metric", func)
    for column, default in (("probe", ""), ("target", "position"), ("model", "given")):
        if column not in frame.columns:
            frame[column] = default
    if "capacity" in frame.columns:
        frame, _ = select(frame, "capacity", capacity, "capacity", func)
    return frame, metric


def _probe_rows(frame: pd.DataFrame, sites: list[str]) -> pd.DataFrame:
    """Copy the input-embedding rows (site ``embed``) into the panel of every probed site."""
    embed = frame[frame["site"] == "embed"]
    if embed.empty or sites == ["embed"]:
        return frame
    others = frame[frame["site"] != "embed"]
    copies = [embed.assign(site=site) for site in sites if site != "embed"]
    return pd.concat([others, *copies], ignore_index=True)


def _panel_rows(
    frame: pd.DataFrame, sites: str | Sequence[str] | None, func: str
) -> tuple[pd.DataFrame, list[str]]:
    """The rows of each panel (with the embedding rows in every one) and the panels' sites."""
    probed = [s for s in dict.fromkeys(frame["site"]) if s != "embed"] or ["embed"]
    site_list = probed if sites is None else select(frame, "site", sites, "sites", func)[1]
    frame = _probe_rows(frame, site_list)
    return frame[frame["site"].isin(site_list)], site_list


def _model_label(frame: pd.DataFrame) -> str | None:
    """The frame's ``model_label`` when it has exactly one."""
    if "model_label" not in frame.columns:
        return None
    labels = frame["model_label"].dropna().unique()
    return str(labels[0]) if len(labels) == 1 else None


def _probe_title(metric: str, capacity: str | None) -> str:
    """``Position probes (<metric>, <capacity> capacity)`` (no capacity when not a column)."""
    what = f"Position probes ({metric_label(metric)}"
    return what + (f", {capacity} capacity)" if capacity is not None else ")")


def _by_kind(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The rows of the probes on true positions, and those of each kind of control."""
    is_random = frame["model"].astype(str) == "random_init"
    if is_random.all():  # a frame of the random-init baseline alone: it is the subject
        is_random = ~is_random
    main = frame[(frame["target"] == "position") & ~is_random]
    kinds = {
        "control": frame[(frame["target"] == "control") & ~is_random],
        "shuffled": frame[(frame["target"] == "shuffled") & ~is_random],
        "random_init": frame[(frame["target"] == "position") & is_random],
    }
    return main, kinds


def _by_layer(rows: pd.DataFrame, layers: list[str]) -> pd.DataFrame:
    """Means by layer, in ``layers`` order."""
    agg = rows.groupby("layer").mean(numeric_only=True)
    return agg.reindex([v for v in layers if v in agg.index])


def _family(feature: Any, probe: Any) -> str:
    """``feature · probe`` (the feature alone when the probe is unnamed)."""
    return f"{feature} · {probe}" if str(probe) else str(feature)


def _matching(rows: pd.DataFrame, site: str, feature: Any, probe: Any) -> pd.DataFrame:
    """The rows of one (site, feature, probe)."""
    return rows[(rows["site"] == site) & (rows["feature"] == feature) & (rows["probe"] == probe)]


def _add_family_lines(
    fig: go.Figure,
    main: pd.DataFrame,
    site: str,
    col: int,
    layers: list[str],
    hover: str,
) -> None:
    """One line (and seed band) per (feature, probe) on true positions, in panel ``col``."""
    for fi, feature in enumerate(dict.fromkeys(main["feature"])):
        for probe in dict.fromkeys(main["probe"]):
            rows = _matching(main, site, feature, probe)
            if rows.empty:
                continue
            agg, name = _by_layer(rows, layers), _family(feature, probe)
            has_ci = {"ci_low", "ci_high"} <= set(agg.columns)
            add_line_with_band(
                fig,
                list(agg.index),
                agg["value"],
                color=palette_color(fi),
                group=name,
                low=agg["ci_low"].to_numpy(float) if has_ci else None,
                high=agg["ci_high"].to_numpy(float) if has_ci else None,
                line={"width": 2},
                row=1,
                col=col,
                name=name,
                showlegend=col == 1,
                meta=name,
                marker={"symbol": _PROBE_SYMBOLS.get(str(probe), "circle"), "size": 7},
                hovertemplate=hover + "<extra></extra>",
            )


def _add_control_lines(
    fig: go.Figure,
    main: pd.DataFrame,
    rows_all: pd.DataFrame,
    kind: str,
    site: str,
    col: int,
    layers: list[str],
    hover: str,
) -> None:
    """Thin lines of one kind of control in panel ``col``, one legend entry for the kind."""
    shown = False  # one legend entry per control kind; colours name the family
    for fi, feature in enumerate(dict.fromkeys(main["feature"])):
        for probe in dict.fromkeys(main["probe"]):
            rows = _matching(rows_all, site, feature, probe)
            if rows.empty:
                continue
            agg = _by_layer(rows, layers)
            fig.add_trace(
                go.Scatter(
                    x=list(agg.index),
                    y=agg["value"].round(4).tolist(),
                    mode="lines",
                    name=_CONTROL_NAMES[kind],
                    legendgroup=kind,
                    showlegend=col == 1 and not shown,
                    line={"color": rgba(palette_color(fi), 0.75), **_CONTROL_STYLES[kind]},
                    meta=f"{_family(feature, probe)} · {_CONTROL_NAMES[kind]}",
                    hovertemplate=hover + "<extra></extra>",
                ),
                row=1,
                col=col,
            )
            shown = True


def _add_chance_line(
    fig: go.Figure, sub: pd.DataFrame, col: int, layers: list[str], show: bool
) -> bool:
    """The chance level of panel ``col``, when known; returns whether a line was added."""
    if "chance" not in sub.columns or not sub["chance"].notna().any():
        return False
    chance = sub.groupby("layer")["chance"].mean().reindex(layers)
    y = [None if pd.isna(v) else round(float(v), 4) for v in chance]
    fig.add_trace(chance_trace(layers, y, legendgroup="chance", showlegend=show), row=1, col=col)
    return True


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
    frame, metric = _probe_frame(results, metric, capacity, func)
    if isinstance(controls, str) or len(controls):
        controls = check_sequence_of_choices(controls, "controls", tuple(_CONTROL_STYLES), func)
    frame, site_list = _panel_rows(frame, sites, func)
    main, kinds = _by_kind(frame)
    layers = layer_order(frame["layer"])
    fig = make_subplots(
        rows=1,
        cols=len(site_list),
        subplot_titles=[f"site {s}" for s in site_list] if len(site_list) > 1 else None,
        horizontal_spacing=0.06,
        shared_yaxes=True,
    )
    hover = f"%{{meta}}<br>layer %{{x}}<br>{metric_label(metric)} %{{y:.3f}}"
    chance_shown = False
    for col, site in enumerate(site_list, start=1):
        _add_family_lines(fig, main, site, col, layers, hover)
        for kind in controls:
            _add_control_lines(fig, main, kinds[kind], kind, site, col, layers, hover)
        show = not chance_shown
        chance_shown |= _add_chance_line(fig, main[main["site"] == site], col, layers, show)
    fig.update_xaxes(
        title_text="layer", type="category", categoryorder="array", categoryarray=layers
    )
    fig.update_yaxes(title_text=metric_label(metric), row=1, col=1)
    bound_y_axis(fig, metric)
    head = _probe_title(metric, capacity if "capacity" in results.columns else None)
    if model_label is None:
        model_label = _model_label(frame)
    base_layout(fig, title_text(head, model_label, title), height=height)
    return fig
