"""The length-extrapolation split: fitted on short positions, tested on longer ones."""

from __future__ import annotations

import numpy as np
import pytest


def test_a_linear_code_extrapolates_and_a_clipped_monotone_readout_does_not(
    linear_features, cesaro_states, row
):
    from nopelens.probes import probe_positions

    cesaro, _ = cesaro_states(n_seq=32, pos=16, d_model=64)
    report = probe_positions(
        {"linear": linear_features(n_seq=32), "cesaro": cesaro},
        features=("hidden", "variance"),
        probes=("ridge", "logistic", "isotonic"),
        extrapolate_from=8,
        equal_dim=None,
        control_task=False,
        seeds=(0, 1),
    )
    df = report.results
    length = df[df["split"] == "length"]
    # regression probes only, position and shuffled targets, no selectivity
    assert set(length["probe"]) == {"ridge", "isotonic"}
    assert set(length["target"]) == {"position", "shuffled"}
    assert set(df.loc[df["split"] == "sequence", "probe"]) == {"ridge", "logistic", "isotonic"}
    # trained on positions 0..7 (mean 3.5), tested on 8..15 (mean 11.5, variance 63/12)
    chance = -(8.0**2) / (63 / 12)
    np.testing.assert_allclose(length.loc[length["metric"] == "r2", "chance"], chance)
    np.testing.assert_allclose(length.loc[length["metric"] == "mae", "chance"], 8.0)
    assert (report.per_seed.query("split == 'length'")["n_test"] == 8 * 8).all()

    common = dict(split="length", target="position", capacity="full")
    linear = row(df, layer="linear", feature="hidden", probe="ridge", metric="r2", **common)
    assert linear["value"] > 0.99  # the position direction found below k holds above it
    # isotonic regression clips at the largest training position: it cannot extrapolate
    iso = row(df, layer="cesaro", feature="variance", probe="isotonic", metric="mae", **common)
    assert iso["value"] > 3.5 and iso["value"] < iso["chance"]
    within = row(
        df,
        layer="cesaro",
        feature="variance",
        probe="isotonic",
        metric="spearman",
        split="sequence",
        target="position",
        capacity="full",
    )
    assert within["value"] > 0.9
    table = report.compare("r2", split="length")
    assert table.set_index("layer").loc["linear", "winner"] == "hidden"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"extrapolate_from": 1}, r"2 <= extrapolate_from <= 6 for pos=8"),
        ({"extrapolate_from": 7}, r"Got 7 instead"),
        ({"extrapolate_from": 2, "drop_first": True}, r"3 <= extrapolate_from <= 6"),
        ({"extrapolate_from": 4, "probes": "logistic"}, "needs a regression probe"),
        ({"extrapolate_from": 0}, "The 'extrapolate_from' parameter of probe_positions"),
    ],
)
def test_bad_length_splits(kwargs, match, linear_features):
    from nopelens.probes import probe_positions

    with pytest.raises(ValueError, match=match):
        probe_positions({"0": linear_features(n_seq=8, pos=8)}, control_task=False, **kwargs)
