"""Attention patterns: a head grid per layer, with a layer slider and token-labelled hovers.

``attention_pattern_figure`` draws ``blocks.L.attn.hook_pattern`` (``[layer, head_index,
query_pos, key_pos]``, for one sequence or averaged over a batch) as one heatmap per head, heads
in a grid, one slider step per layer. The colour bar reads "attention weight" on a fixed ``[0, 1]``
range (or the data's range with ``auto_range=True``), axes are labelled query and key position,
and with ``tokens`` every hover names the query token, the key token and the weight. In a causal
model the upper triangle is zero; a uniform head shows the ``1/(i+1)`` staircase of the
first-layer theory.

Examples:
    >>> import numpy as np
    >>> pattern = np.tril(np.ones((2, 2, 4, 4))) / np.arange(1, 5)[:, None]
    >>> fig = attention_pattern_figure(pattern, tokens=["<s>", "a", "b", "c"])
    >>> len(fig.data), len(fig.layout.sliders[0].steps)
    (4, 2)
    >>> fig.data[0].customdata[3, 1].tolist()
    ['c', 'a']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nopelens.validation import InvalidParameterError
from nopelens.viz.inputs import as_numpy, light
from nopelens.viz.style import base_layout, title_text

#: Sequential colour scale of attention weights (distinct from the similarity scale).
ATTENTION_COLORSCALE = "Blues"

_FUNC = "attention_pattern_figure"


def _check_pattern(pattern: Any) -> np.ndarray:
    """``[layer, head_index, query_pos, key_pos]`` (a 3-D input is one layer)."""
    array = as_numpy(pattern, "pattern", _FUNC)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != array.shape[-2] or 0 in array.shape:
        raise InvalidParameterError(
            f"The 'pattern' parameter of {_FUNC} must have shape [layer head_index query_pos "
            f"key_pos] (or [head_index query_pos key_pos]) with query_pos == key_pos. "
            f"Got shape {tuple(array.shape)} instead."
        )
    if not np.isfinite(array).all():
        raise InvalidParameterError(f"The 'pattern' parameter of {_FUNC} contains NaN or inf.")
    return array


def _token_grid(tokens: Sequence[str] | None, pos: int) -> np.ndarray | None:
    """``[query_pos, key_pos, 2]`` of (query token, key token) for the hovers."""
    if tokens is None:
        return None
    labels = [str(t) for t in tokens]
    if len(labels) != pos:
        raise InvalidParameterError(
            f"The 'tokens' parameter of {_FUNC} must have one label per position ({pos}). "
            f"Got {len(labels)} instead."
        )
    grid = np.empty((pos, pos, 2), dtype=object)
    for q in range(pos):
        for k in range(pos):
            grid[q, k] = (labels[q], labels[k])
    return grid


def _head_heatmap(
    matrix: np.ndarray, tokens: np.ndarray | None, zrange: tuple[float, float], show_bar: bool
) -> go.Heatmap:
    hover = "query %{y}, key %{x}<br>weight %{z:.4f}<extra></extra>"
    if tokens is not None:
        hover = (
            "query %{y} (%{customdata[0]}), key %{x} (%{customdata[1]})"
            "<br>weight %{z:.4f}<extra></extra>"
        )
    return go.Heatmap(
        z=light(matrix),
        customdata=tokens,
        colorscale=ATTENTION_COLORSCALE,
        zmin=zrange[0],
        zmax=zrange[1],
        showscale=show_bar,
        colorbar={"title": {"text": "attention weight"}, "len": 0.8} if show_bar else None,
        hovertemplate=hover,
        visible=False,
    )


def _slider(layer_labels: Sequence[str], n_heads: int) -> dict[str, Any]:
    steps = []
    for index, label in enumerate(layer_labels):
        visible = [False] * (len(layer_labels) * n_heads)
        visible[index * n_heads : (index + 1) * n_heads] = [True] * n_heads
        steps.append({"method": "update", "label": str(label), "args": [{"visible": visible}]})
    return {"active": 0, "currentvalue": {"prefix": "layer "}, "steps": steps, "pad": {"t": 40}}


def attention_pattern_figure(
    pattern: Any,
    *,
    tokens: Sequence[str] | None = None,
    layer_labels: Sequence[str] | None = None,
    model_label: str | None = None,
    title: str | None = None,
    auto_range: bool = False,
    columns: int = 4,
) -> go.Figure:
    """Attention patterns as a grid of head heatmaps, one slider step per layer.

    Args:
        pattern: Attention weights ``[layer, head_index, query_pos, key_pos]`` (numpy or torch;
            a 3-D array is one layer), e.g. ``cache.stack_activation("pattern")[:, 0]`` for the
            first sequence, or its batch mean.
        tokens: One label per position (e.g. ``model.to_str_tokens(text)``), shown in hovers and
            as axis tick labels.
        layer_labels: Slider labels, one per layer (default ``0, 1, ...``).
        model_label: Named in the title.
        title: Replaces the default title.
        auto_range: Colour range from the data instead of ``[0, 1]`` (more contrast for diffuse
            heads).
        columns: Heads per row of the grid.

    Returns:
        A plotly figure (not shown).

    Raises:
        InvalidParameterError: For a pattern that is not ``[layer head query key]`` with square
            query/key dimensions, NaN, or tokens of the wrong length.
    """
    array = _check_pattern(pattern)
    n_layers, n_heads, pos, _ = array.shape
    labels = [str(i) for i in range(n_layers)] if layer_labels is None else list(layer_labels)
    if len(labels) != n_layers:
        raise InvalidParameterError(
            f"The 'layer_labels' parameter of {_FUNC} must have {n_layers} labels. "
            f"Got {len(labels)} instead."
        )
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise InvalidParameterError(
            f"The 'columns' parameter of {_FUNC} must be an int >= 1. Got {columns!r} instead."
        )
    cols = min(columns, n_heads)
    rows = math.ceil(n_heads / cols)
    zrange = (float(array.min()), float(array.max())) if auto_range else (0.0, 1.0)
    grid = _token_grid(tokens, pos)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"head {h}" for h in range(n_heads)],
        horizontal_spacing=0.04,
        vertical_spacing=0.1,
    )
    for layer in range(n_layers):
        for head in range(n_heads):
            trace = _head_heatmap(array[layer, head], grid, zrange, show_bar=head == 0)
            trace.visible = layer == 0
            fig.add_trace(trace, row=head // cols + 1, col=head % cols + 1)
    ticks = {}
    if tokens is not None:
        ticks = {"tickmode": "array", "tickvals": list(range(pos)), "ticktext": list(tokens)}
    fig.update_xaxes(**ticks)
    fig.update_yaxes(autorange="reversed", **ticks)
    # axis titles on the outer panels only: inner ones would run into the neighbouring panels
    last_row = (n_heads - 1) // cols + 1
    for col in range(1, cols + 1):
        row = last_row if (last_row - 1) * cols + col <= n_heads else last_row - 1
        fig.update_xaxes(title_text="key position", row=row, col=col)
    for row in range(1, rows + 1):
        fig.update_yaxes(title_text="query position", row=row, col=1)
    fig.update_layout(sliders=[_slider(labels, n_heads)])
    heading = title_text("Attention patterns", model_label, title)
    return base_layout(fig, heading, height=260 * rows + 160)
