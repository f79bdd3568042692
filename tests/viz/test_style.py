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


def test_plain_labels_come_from_one_mapping():
    from nopelens.spec import POSITIONAL
    from nopelens.viz.style import POSITIONAL_LABELS, plain_label

    # every positional setting of the spec has a plain name, and only those
    assert set(POSITIONAL_LABELS) == set(POSITIONAL)
    assert [plain_label(p, "positional") for p in ("none", "learned", "rotary", "alibi")] == [
        "NoPE",
        "learned PE",
        "rotary",
        "ALiBi",
    ]
    # model labels built as "<positional> <state>" or "<positional> / <attention>"
    assert plain_label("none trained") == "NoPE trained"
    assert plain_label("none untrained") == "NoPE random init"
    assert plain_label("learned untrained") == "learned PE random init"
    assert plain_label("rotary / bidirectional") == "rotary / bidirectional"
    assert plain_label("alibi / causal") == "ALiBi / causal"
    # a lone word is never renamed: "none" may be the "no ablation" condition
    assert plain_label("none") == "none" and plain_label("shuffle_prefix:8") == "shuffle_prefix:8"
    assert plain_label(True, "attn_only") == "True"


@pytest.mark.parametrize(
    ("values", "ticks", "text"),
    [
        ([16, 32, 64, 128, 256, 512], [16, 32, 64, 128, 256, 512], None),
        ([16, 512], [16, 32, 64, 128, 256, 512], None),
        ([0.02, 0.05, 0.2, 0.5, 1.0], [0.02, 0.05, 0.2, 0.5, 1.0],
         ["0.02", "0.05", "0.2", "0.5", "1"]),
        ([3, 7, 1000, 5, 9, 11, 13, 17, 19, 23, 29, 31, 37], [1, 10, 100, 1000],
         ["1", "10", "100", "1000"]),
        ([0, -1], None, None),
    ],
)  # fmt: skip
def test_log_ticks_are_round_and_plain(values, ticks, text):
    from nopelens.viz.style import log_ticks

    out = log_ticks(values)
    if ticks is None:
        assert out == {}
        return
    assert out["tickvals"] == pytest.approx(ticks)
    assert out["ticktext"] == (text or [str(t) for t in ticks])
    assert not any("e" in t or "^" in t for t in out["ticktext"])
    many = log_ticks([2**k for k in range(30)], max_ticks=10)
    assert len(many["tickvals"]) <= 10 and many["ticktext"][0] == "1"


def test_colour_range_menu_switches_fixed_and_auto():
    from nopelens.viz.style import color_range_menu

    menu = color_range_menu(["coloraxis", "coloraxis2"], fixed=(0.0, 1.0), active_auto=True)
    fixed, auto = (b["args"][0] for b in menu["buttons"])
    assert fixed == {
        "coloraxis.cauto": False, "coloraxis.cmin": 0.0, "coloraxis.cmax": 1.0,
        "coloraxis2.cauto": False, "coloraxis2.cmin": 0.0, "coloraxis2.cmax": 1.0,
    }  # fmt: skip
    assert auto == {"coloraxis.cauto": True, "coloraxis2.cauto": True}
    assert menu["active"] == 1 and menu["buttons"][0]["label"] == "colour: 0…1"
