"""ProbeReport: comparing families per layer, and the compact reprs."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def test_drop_first_and_compare(linear_features, cesaro_states):
    from nopelens.probes import probe_positions

    cesaro, _ = cesaro_states(n_seq=24, pos=8, d_model=64)
    hidden = linear_features(n_seq=24, pos=8)
    hidden[..., 1] += 8 - torch.arange(8.0)  # variance now symmetric about position 4
    report = probe_positions(
        {"a": cesaro, "b": hidden},
        features=("hidden", "variance"),
        probes=("ridge", "isotonic"),
        drop_first=True,
        equal_dim=None,
        control_task=False,
        shuffled_control=False,
    )
    df = report.results
    np.testing.assert_allclose(
        df.loc[df["metric"] == "mae", "chance"], np.abs(np.arange(1, 8) - 4).mean()
    )
    np.testing.assert_allclose(df.loc[df["metric"] == "accuracy", "chance"], 1 / 7)
    assert report.per_seed["n_test"].iloc[0] == 6 * 7
    table = report.compare("r2")
    assert table["layer"].tolist() == ["a", "b"]
    assert table.set_index("layer").loc["b", "winner"] == "hidden"
    assert table.set_index("layer").loc["a", "winner_probe"] in ("ridge", "isotonic")
    row = table.set_index("layer").loc["b"]
    assert row["margin"] > 0 and row["margin_ci_low"] <= row["margin"] <= row["margin_ci_high"]
    mae = report.compare("mae", probe="ridge")
    assert mae.set_index("layer").loc["b", "winner"] == "hidden"
    with pytest.raises(ValueError, match="no rows for metric='accuracy'"):
        report.compare("accuracy")


def test_reprs_are_short_and_name_the_headline_numbers(linear_features):
    from nopelens.probes import ProbeConfig, SequenceSplit, probe_positions, split_sequences

    hidden = linear_features(n_seq=12, pos=6)
    report = probe_positions(
        {"embed": hidden[..., :4], "0": hidden, "1": hidden},
        features=("hidden", "cosine", "variance"),
        probes=("ridge", "isotonic"),
        seeds=(0, 1),
        control_task=False,
    )
    text = repr(report)
    assert len(text) < 600 and text.count("\n") < 8, text
    assert text.startswith("ProbeReport(") and "tensor" not in text
    assert f"results={len(report.results)} rows" in text
    assert f"per_seed={len(report.per_seed)} rows" in text
    assert "layers=3 (embed..1)" in text and "seeds=(0, 1)" in text
    best = report.results.query(
        "layer == '1' and target == 'position' and capacity == 'full' and metric == 'spearman'"
    )
    for feature, value in best.groupby("feature")["value"].max().items():
        assert f"{feature} {value:.3f}" in text, (feature, text)
    assert "best spearman at layer '1'" in text

    split = split_sequences(200, seed=0)
    assert repr(split) == "SequenceSplit(train: 120 sequences, val: 30, test: 50)"
    assert repr(SequenceSplit(train=[0, 1], val=[2], test=[4, 3])) == (
        "SequenceSplit(train: 2 sequences, val: 1, test: 2 [4, 3])"
    )
    assert repr(ProbeConfig()) == "ProbeConfig()"
    assert len(repr(ProbeConfig(seeds=0, splits=[split]))) < 200
