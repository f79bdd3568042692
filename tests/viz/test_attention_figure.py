"""attention_pattern_figure: a head grid per layer, slider, token hovers, honest colour bar."""

from __future__ import annotations

import numpy as np
import pytest


def _uniform(layers=2, heads=3, pos=5):
    causal = np.tril(np.ones((pos, pos))) / np.arange(1, pos + 1)[:, None]
    return np.broadcast_to(causal, (layers, heads, pos, pos)).copy()


def test_one_trace_per_layer_and_head_and_the_slider_shows_one_layer_at_a_time():
    from nopelens.viz.attention import attention_pattern_figure

    fig = attention_pattern_figure(_uniform(), layer_labels=["0", "1"], columns=2)
    assert len(fig.data) == 6
    assert [t.visible for t in fig.data] == [True] * 3 + [False] * 3
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["0", "1"]
    assert steps[1].args[0]["visible"] == [False] * 3 + [True] * 3
    assert fig.data[0].colorbar.title.text == "attention weight"
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0.0, 1.0)
    # the uniform causal staircase: row i holds 1/(i+1) on keys <= i, zeros above the diagonal
    z = np.asarray(fig.data[0].z)
    assert np.allclose(z[3, :4], 0.25, atol=1e-4) and np.all(z[np.triu_indices(5, 1)] == 0)


def test_token_hovers_and_ticks():
    from nopelens.viz.attention import attention_pattern_figure

    tokens = ["<s>", "the", "cat", "sat", "."]
    fig = attention_pattern_figure(_uniform(1, 1), tokens=tokens)
    assert fig.data[0].customdata[4, 2].tolist() == [".", "cat"]
    assert "%{customdata[0]}" in fig.data[0].hovertemplate
    assert list(fig.layout.xaxis.ticktext) == tokens


def test_auto_range_uses_the_data():
    from nopelens.viz.attention import attention_pattern_figure

    pattern = _uniform(1, 2) * 0.5
    fig = attention_pattern_figure(pattern, auto_range=True)
    assert fig.data[0].zmin == 0.0 and fig.data[0].zmax == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pattern": np.zeros((2, 3, 4))[None, None]}, r"must have shape \[layer head_index"),
        ({"pattern": np.zeros((1, 1, 3, 4))}, r"query_pos == key_pos"),
        ({"pattern": np.full((1, 1, 2, 2), np.nan)}, r"contains NaN"),
        ({"pattern": np.zeros((1, 1, 3, 3)), "tokens": ["a"]}, r"one label per position \(3\)"),
        ({"pattern": np.zeros((2, 1, 3, 3)), "layer_labels": ["x"]}, r"must have 2 labels"),
        ({"pattern": np.zeros((1, 1, 3, 3)), "columns": 0}, r"'columns' parameter"),
    ],
)
def test_bad_input_is_named(kwargs, match):
    from nopelens.viz.attention import attention_pattern_figure

    with pytest.raises(ValueError, match=match):
        attention_pattern_figure(**kwargs)


def test_a_real_models_patterns_sum_to_one_over_keys():
    import torch

    from nopelens import build_model, collect_activations, random_tokens
    from nopelens.viz.attention import attention_pattern_figure

    model = build_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    acts = collect_activations(model, random_tokens(3, 6, 20), sites=["pattern"])
    pattern = acts["pattern"].mean(dim=1)  # [layer, head_index, query_pos, key_pos]
    fig = attention_pattern_figure(pattern, model_label="tiny")
    rows = np.asarray(fig.data[0].z).sum(axis=-1)
    assert np.allclose(rows, 1.0, atol=1e-3)
    assert torch.allclose(pattern.sum(-1), torch.ones(()), atol=1e-5)


def test_axis_titles_only_on_the_outer_panels():
    """Inner panels carry no axis titles (they would run into their neighbours)."""
    from nopelens.viz.attention import attention_pattern_figure

    fig = attention_pattern_figure(_uniform(1, 6), columns=4)  # rows: heads 0-3, then 4-5
    titled_x = {
        (t.xaxis, t.yaxis)
        for t in fig.data
        if fig.layout[t.xaxis.replace("x", "xaxis")].title.text == "key position"
    }
    titled_y = {
        t.yaxis
        for t in fig.data
        if fig.layout[t.yaxis.replace("y", "yaxis")].title.text == "query position"
    }
    # the bottom panel of each column: heads 4 and 5 below, heads 2 and 3 where row 2 is empty
    assert sorted(fig.data.index(t) for t in fig.data if (t.xaxis, t.yaxis) in titled_x) == [
        2,
        3,
        4,
        5,
    ]
    assert sorted(fig.data.index(t) for t in fig.data if t.yaxis in titled_y) == [0, 4]
