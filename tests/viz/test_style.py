"""The viz package layout and its shared helpers: one band-and-line helper, layer order, imports.

The figure modules share one look (``nopelens.viz.style``) and one set of input checks
(``nopelens.viz.inputs``); these tests pin the helpers the figures rely on, the public names of
``nopelens.viz`` and the layering rule (viz never imports the model layer).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

VIZ = Path(__file__).resolve().parents[2] / "nopelens" / "viz"
FIGURES = [
    "similarity_heatmap_figure",
    "distance_profile_figure",
    "theory_figure",
    "score_by_layer_figure",
    "variance_figure",
    "probe_figure",
    "sweep_heatmap_figure",
    "sweep_line_figure",
]


def test_every_figure_is_a_documented_public_name_of_viz():
    import nopelens.viz as viz

    for name in FIGURES:
        assert name in viz.__all__
        assert (getattr(viz, name).__doc__ or "").strip()
    for name in ("write_dashboard", "render_dashboard", "report_sections", "report_summary"):
        assert (getattr(viz, name).__doc__ or "").strip()


def test_no_module_is_named_like_a_public_name():
    import nopelens.viz as viz

    modules = {p.stem for p in VIZ.glob("*.py")}
    assert not modules & set(viz.__all__)


def test_viz_never_imports_the_model_layer():
    for path in VIZ.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(("nopelens.models", "transformer_lens")), (
                    f"{path.name} imports {name}"
                )


def test_line_with_band_draws_the_band_only_where_finite_and_groups_it_with_the_line():
    import plotly.graph_objects as go

    from nopelens.viz.style import add_line_with_band

    fig = go.Figure()
    y = pd.Series([0.5, 0.6, 0.7])
    low, high = np.array([0.4, np.nan, 0.6]), np.array([0.6, np.nan, 0.8])
    add_line_with_band(fig, ["embed", "0", "1"], y, color="#636EFA", group="g", low=low, high=high)
    band, line = fig.data
    assert band.fill == "toself" and band.showlegend is False and band.legendgroup == "g"
    assert list(band.x) == ["embed", "1", "1", "embed"]
    assert list(band.y) == pytest.approx([0.6, 0.8, 0.6, 0.4])
    assert band.fillcolor == "rgba(99, 110, 250, 0.18)"
    assert line.mode == "lines+markers" and line.legendgroup == "g" and line.line.color == "#636EFA"
    # no finite bound, or none given: the line alone
    nan = np.full(3, np.nan)
    for bounds in ({"low": nan, "high": nan}, {}):
        alone = go.Figure()
        add_line_with_band(alone, [0, 1, 2], y, color="#000000", group="h", **bounds)
        assert [t.mode for t in alone.data] == ["lines+markers"]


def test_layer_order_puts_embed_first_and_blocks_in_numeric_order():
    from nopelens.viz.inputs import layer_order

    assert layer_order(["10", "embed", 2, "0", "1", "2"]) == ["embed", "0", "1", "2", "10"]


def test_sweep_figures_say_when_the_filter_leaves_no_rows():
    from nopelens.viz import sweep_heatmap_figure, sweep_line_figure

    frame = pd.DataFrame({"d_model": [32, 64], "seed": [0, 0], "metric": "r2", "value": [0.1, 0.2]})
    with pytest.raises(ValueError, match="No rows of 'frame' are left for sweep_heatmap_figure"):
        sweep_heatmap_figure(frame, x="d_model", y="seed", where={"seed": 9})
    with pytest.raises(ValueError, match="No rows of 'frame' are left for sweep_line_figure"):
        sweep_line_figure(frame, x="d_model", where={"seed": [7, 9]})
