"""The look shared by every nopelens figure: colours, template, titles, menus and score lines.

Every figure builder of :mod:`nopelens.viz` takes a result object or a tidy frame produced by
another nopelens module and returns a :class:`plotly.graph_objects.Figure`; none of them shows it
(call ``fig.show()`` in a notebook, or hand the figures to :func:`nopelens.write_dashboard`).
The conventions are TransformerLens's demos:

- cosine similarities use one sequential colour scale (``Viridis``) on a fixed ``[-1, 1]`` range
  unless told otherwise, so heatmaps of different layers and models compare at a glance;
- signed differences use the diverging ``RdBu`` scale centred at 0;
- bounded scores (adjacency probability, neighborhood concordance, accuracies) get a fixed y range
  (:data:`METRIC_BOUNDS`), and every score is drawn with its chance level (grey dotted,
  :func:`chance_trace`) and its confidence band (:func:`add_line_with_band`);
- titles name the model configuration, every axis and colour bar is labelled;
- settings are shown in plain words (:func:`plain_label`: ``none`` -> ``NoPE``, ``untrained`` ->
  ``random init``) and log axes get ticks at round values with plain labels (:func:`log_ticks`).

Examples:
    >>> metric_label("adjacency_probability"), metric_label("my_score")
    ('adjacency probability', 'my score')
    >>> rgba("#636EFA", 0.18)
    'rgba(99, 110, 250, 0.18)'
    >>> plain_label("none / causal"), plain_label("none trained"), plain_label("none")
    ('NoPE / causal', 'NoPE trained', 'none')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative

__all__ = [
    "SIMILARITY_COLORSCALE",
    "DIFFERENCE_COLORSCALE",
    "METRIC_LABELS",
    "METRIC_BOUNDS",
    "DASHES",
    "CHANCE_STYLE",
    "template",
    "rgba",
    "palette_color",
    "metric_label",
    "title_text",
    "subtitle",
    "base_layout",
    "bound_y_axis",
    "site_selector",
    "band",
    "add_line_with_band",
    "chance_trace",
    "POSITIONAL_LABELS",
    "STATE_LABELS",
    "plain_label",
    "log_ticks",
    "color_range_menu",
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
#: y ranges of the bounded metrics (the others are free).
METRIC_BOUNDS: dict[str, tuple[float, float]] = {
    "adjacency_probability": (0.0, 1.0),
    "neighborhood_concordance": (0.0, 1.0),
    "accuracy": (0.0, 1.0),
    "balanced_accuracy": (0.0, 1.0),
    "spearman": (-1.0, 1.0),
    "pearson_r": (-1.0, 1.0),
}
#: Line dash styles, one per site (scores) or model (distance profiles).
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
#: Plain names of the positional-encoding settings (``ModelSpec.positional``).
POSITIONAL_LABELS: dict[str, str] = {
    "none": "NoPE",
    "learned": "learned PE",
    "rotary": "rotary",
    "alibi": "ALiBi",
}
#: Plain names of a model's training state.
STATE_LABELS: dict[str, str] = {
    "trained": "trained",
    "untrained": "random init",
    "random_init": "random init",
    "init": "random init",
}
#: Line style of chance levels.
CHANCE_STYLE = {"color": "rgba(90, 90, 90, 0.9)", "dash": "dot", "width": 1.5}

_PALETTE = qualitative.Plotly
_TEMPLATE_NAME = "plotly_white"
_TEMPLATE: go.layout.Template | None = None
_FONT = {"family": "Inter, Helvetica, Arial, sans-serif", "size": 13}


def template() -> go.layout.Template:
    """``plotly_white`` without its per-trace-type defaults (4 kB less JSON per figure)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        import plotly.io as pio

        _TEMPLATE = go.layout.Template(layout=pio.templates[_TEMPLATE_NAME].layout)
    return _TEMPLATE


def rgba(color: str, alpha: float) -> str:
    """``color`` (``#rrggbb`` or ``rgb(...)``) as an ``rgba(...)`` string with opacity ``alpha``."""
    if color.startswith("#"):
        r, g, b = hex_to_rgb(color)
    else:
        r, g, b = (
            int(float(c)) for c in color[color.index("(") + 1 : color.index(")")].split(",")[:3]
        )
    return f"rgba({r}, {g}, {b}, {alpha})"


def palette_color(index: int) -> str:
    """The ``index``-th colour of the qualitative palette (cycling)."""
    return _PALETTE[index % len(_PALETTE)]


def metric_label(metric: str) -> str:
    """The axis title of ``metric`` (its name with spaces when it is not in METRIC_LABELS)."""
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def title_text(what: str, model_label: str | None, title: str | None) -> str:
    """``title`` if given, else ``"<what> — <model_label>"`` (or ``what`` alone)."""
    if title is not None:
        return title
    return f"{what} — {model_label}" if model_label else what


def subtitle(head: str, parts: Sequence[str]) -> str:
    """``head`` with ``parts`` joined by `` · `` as a small second line (none when empty)."""
    return head + (f"<br><sup>{' · '.join(parts)}</sup>" if parts else "")


def base_layout(fig: go.Figure, title: str, *, height: int, top: int = 90) -> go.Figure:
    """Apply the shared title, template, font, margins, legend and hover settings."""
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 16}},
        template=template(),
        font=_FONT,
        height=height,
        margin={"l": 70, "r": 30, "t": top, "b": 60},
        legend={"groupclick": "togglegroup"},
        hoverlabel={"namelength": -1},
    )
    return fig


def pin_title(fig: go.Figure, height: int) -> None:
    """Put the (two-line) title at the very top, clear of menus placed just above the plot.

    Examples:
        >>> fig = go.Figure()
        >>> pin_title(fig, 500)
        >>> fig.layout.title.yanchor, fig.layout.title.yref
        ('top', 'container')
    """
    fig.update_layout(title={"y": 1.0 - 22 / height, "yanchor": "top", "yref": "container"})


def bound_y_axis(fig: go.Figure, metric: str, **where: Any) -> None:
    """Fix the y range of a bounded metric (with a small margin); free metrics are left alone."""
    if metric in METRIC_BOUNDS:
        lo, hi = METRIC_BOUNDS[metric]
        fig.update_yaxes(range=[lo - 0.02, hi + 0.02], **where)


def site_selector(
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


def band(
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
        fillcolor=rgba(color, 0.18),
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        legendgroup=group,
        **kwargs,
    )


def add_line_with_band(
    fig: go.Figure,
    x: list[Any],
    y: pd.Series,
    *,
    color: str,
    group: str,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
    line: Mapping[str, Any] | None = None,
    row: int | None = None,
    col: int | None = None,
    **scatter: Any,
) -> None:
    """Add a score line (lines and markers) and, behind it, its shaded confidence band.

    The band goes from ``low`` to ``high`` and is drawn only when it has a finite value; it shares
    the line's legend group, so clicking the legend entry hides both.

    Args:
        fig: The figure to add the traces to.
        x: The x values (layers, hyperparameter values).
        y: The score at each x, drawn rounded to 4 decimals.
        color: Colour of the line and (translucent) of the band.
        group: Legend group of the line and its band.
        low: Lower end of the band at each x (None: no band).
        high: Upper end of the band at each x (None: no band).
        line: Line style besides the colour (dash, width).
        row: Subplot row (None for a figure without subplots).
        col: Subplot column.
        **scatter: Other properties of the line trace (name, hovertemplate, marker, ...).
    """
    if low is not None and high is not None and np.isfinite(low).any():
        fig.add_trace(band(x, low, high, color, group), row=row, col=col)
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y.round(4).tolist(),
            mode="lines+markers",
            legendgroup=group,
            line={"color": color, **(line or {})},
            **scatter,
        ),
        row=row,
        col=col,
    )


def chance_trace(x: list[Any], y: list[Any], *, name: str = "chance", **kwargs: Any) -> go.Scatter:
    """A grey dotted chance-level line named ``name``."""
    return go.Scatter(
        x=x,
        y=y,
        mode="lines",
        name=name,
        line=CHANCE_STYLE,
        hovertemplate=f"{name} %{{y:.3f}}<extra></extra>",
        **kwargs,
    )


def plain_label(value: Any, column: str | None = None) -> str:
    """The plain name of a setting or model label, for legends, axes and tables.

    With ``column="positional"`` (or ``"state"``) the value is looked up in
    :data:`POSITIONAL_LABELS` (:data:`STATE_LABELS`). Without a column, ``value`` is read as a
    model label made of words (``"none trained"``, ``"learned / causal"``): a positional setting
    as its first word and training states anywhere are renamed; a single word is left alone,
    since ``"none"`` alone may mean "no ablation" rather than "no positional encoding".

    Args:
        value: The setting value or label.
        column: The column the value comes from, when known.

    Returns:
        The label to show.

    Examples:
        >>> plain_label("alibi", "positional"), plain_label("untrained", "state")
        ('ALiBi', 'random init')
        >>> plain_label("none untrained"), plain_label("learned / bidirectional")
        ('NoPE random init', 'learned PE / bidirectional')
        >>> plain_label("remove_residual:0"), plain_label("NoPE causal L4 d128")
        ('remove_residual:0', 'NoPE causal L4 d128')
    """
    text = str(value)
    if column == "positional":
        return POSITIONAL_LABELS.get(text, text)
    if column == "state":
        return STATE_LABELS.get(text, text)
    words = text.split(" ")
    if len(words) < 2:
        return text
    out = [POSITIONAL_LABELS.get(words[0], words[0])]
    out += [STATE_LABELS.get(w, w) if w in ("trained", "untrained") else w for w in words[1:]]
    return " ".join(out)


def _plain_number(value: float) -> str:
    """``16``, ``0.25``, ``1e-05``: the shortest plain spelling of a tick value."""
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:g}"


def log_ticks(values: Sequence[Any], *, max_ticks: int = 12) -> dict[str, Any]:
    """Tick positions and plain labels for a log axis over ``values``.

    Positive integers that are all powers of two (sequence lengths, widths) get a tick at every
    power of two in their range (thinned to at most ``max_ticks``); other values get a tick at
    each distinct value when there are few, else at the powers of ten in their range. Labels are
    plain numbers (``128``, ``0.02``), never ``10²`` or ``2.5e+2``.

    Args:
        values: The x (or y) values drawn on the axis.
        max_ticks: Most ticks to place.

    Returns:
        ``{"tickvals": [...], "ticktext": [...]}`` for ``fig.update_xaxes(**...)`` (empty when
        no value is positive).

    Examples:
        >>> log_ticks([16, 32, 64, 128, 256, 512])["ticktext"]
        ['16', '32', '64', '128', '256', '512']
        >>> log_ticks([0.02, 0.05, 0.2, 1.0])["ticktext"]
        ['0.02', '0.05', '0.2', '1']
        >>> log_ticks([2**k for k in range(20)])["ticktext"][:3]
        ['1', '4', '16']
    """
    numbers = sorted({float(v) for v in values if v is not None and np.isfinite(float(v))})
    numbers = [v for v in numbers if v > 0]
    if not numbers:
        return {}
    powers = [np.log2(v) for v in numbers]
    if all(v.is_integer() for v in numbers) and all(float(p).is_integer() for p in powers):
        exps = list(range(int(powers[0]), int(powers[-1]) + 1))
        step = max(1, -(-len(exps) // max_ticks))
        ticks = [2.0**e for e in exps[::step]]
    elif len(numbers) <= max_ticks:
        ticks = numbers
    else:
        low, high = int(np.floor(np.log10(numbers[0]))), int(np.ceil(np.log10(numbers[-1])))
        ticks = [10.0**e for e in range(low, high + 1)]
    return {"tickvals": ticks, "ticktext": [_plain_number(v) for v in ticks]}


def color_range_menu(
    axes: Sequence[str],
    *,
    fixed: tuple[float, float] = (-1.0, 1.0),
    active_auto: bool = False,
    x: float = 0.0,
    y: float = 1.02,
) -> dict[str, Any]:
    """A two-button menu switching colour axes between a fixed range and the data's range.

    Args:
        axes: Layout colour axes to switch (``"coloraxis"``, ``"coloraxis2"``, ...).
        fixed: The fixed range (cosine similarities: ``[-1, 1]``).
        active_auto: Whether the figure starts on the data's range.
        x: Menu position (paper coordinates).
        y: Menu position (paper coordinates).

    Returns:
        An ``updatemenus`` entry (``fig.update_layout(updatemenus=[..., menu])``).

    Examples:
        >>> menu = color_range_menu(["coloraxis"])
        >>> [b["label"] for b in menu["buttons"]], menu["buttons"][1]["args"]
        (['colour: −1…1', 'colour: auto'], [{'coloraxis.cauto': True}])
    """
    lo, hi = fixed
    fixed_args = {}
    for axis in axes:
        fixed_args.update({f"{axis}.cauto": False, f"{axis}.cmin": lo, f"{axis}.cmax": hi})
    return {
        "type": "buttons",
        "direction": "right",
        "showactive": True,
        "active": 1 if active_auto else 0,
        "x": x,
        "xanchor": "left",
        "y": y,
        "yanchor": "bottom",
        "pad": {"r": 4, "t": 0},
        "font": {"size": 11},
        "buttons": [
            {
                "label": f"colour: {_plain_number(lo).replace('-', '−')}…{_plain_number(hi)}",
                "method": "relayout",
                "args": [fixed_args],
            },
            {
                "label": "colour: auto",
                "method": "relayout",
                "args": [{f"{axis}.cauto": True for axis in axes}],
            },
        ],
    }
