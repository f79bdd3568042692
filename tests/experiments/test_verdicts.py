"""Headline verdicts: the rule on hand-made intervals, and claims read from a reproduce summary."""

from __future__ import annotations

import math

import pandas as pd
import pytest


@pytest.mark.parametrize(
    ("low", "high", "expect", "verdict"),
    [
        (0.60, 0.70, "above", "supported"),  # whole interval above chance
        (0.45, 0.55, "above", "inconclusive"),  # straddles chance
        (0.50, 0.60, "above", "inconclusive"),  # touches chance: not *above* it
        (0.30, 0.40, "above", "not supported"),  # whole interval below chance
        (math.nan, 0.70, "above", "inconclusive"),  # no interval, no verdict
        (0.45, 0.55, "at", "supported"),  # a claim of no effect: chance inside the interval
        (0.60, 0.70, "at", "not supported"),
        (0.30, 0.40, "at", "not supported"),
        (0.45, math.nan, "at", "inconclusive"),
    ],
)
def test_claim_verdict_rules(low, high, expect, verdict):
    from nopelens.experiments.verdicts import claim_verdict

    assert claim_verdict(low, high, 0.5, expect) == verdict


def test_claim_verdict_rejects_an_unknown_expectation():
    from nopelens.experiments.verdicts import claim_verdict

    with pytest.raises(ValueError, match="'expect' parameter of claim_verdict must be one of"):
        claim_verdict(0.6, 0.7, 0.5, "below")


def _scores(values, *, chance=0.5, half=0.05, metric="neighborhood_concordance", **extra):
    """Score rows of one model: ``values`` by layer label, one row per seed in ``values[layer]``."""
    rows = []
    for layer, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            rows.append(
                {"site": "resid_post", "layer": layer, "metric": metric, "value": value,
                 "ci_low": value - half, "ci_high": value + half, "chance": chance,
                 "seed": seed, **extra}
            )  # fmt: skip
    return rows


def _summary(**tables):
    """A reproduce summary holding only the given ``part=(table, rows)`` tables."""
    return {"parts": {part: {"tables": {table: rows}} for part, (table, rows) in tables.items()}}


def _one(table: pd.DataFrame, part: str) -> pd.Series:
    rows = table[table["part"] == part]
    assert len(rows) == 1, rows
    return rows.iloc[0]


@pytest.mark.parametrize(
    ("last", "verdict"),
    [([0.70, 0.74], "supported"), ([0.50, 0.52], "inconclusive"), ([0.30, 0.36], "not supported")],
)
def test_random_init_claim_takes_the_last_block_mean_of_seeds(last, verdict):
    from nopelens.experiments.verdicts import HEADLINE_COLUMNS, headline_verdicts

    rows = _scores({"embed": [0.5, 0.5], "0": [0.9, 0.9], "1": last})
    table = headline_verdicts(_summary(random_init=("scores", rows)))
    assert list(table.columns) == HEADLINE_COLUMNS
    row = _one(table, "random_init")
    # the last block (1), not the best one (0): mean of seeds' values and interval bounds
    assert row["value"] == pytest.approx(sum(last) / 2)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(
        (row["value"] - 0.05, row["value"] + 0.05)
    )
    assert row["reference"] == 0.5 and row["reference_kind"] == "chance"
    assert row["verdict"] == verdict and "mean of 2 seeds" in row["measure"]
    assert row["rule"].startswith("CI above chance 0.5: supported")


def test_bidirectional_claim_is_supported_at_chance_and_not_above():
    from nopelens.experiments.verdicts import headline_verdicts

    def table(bidirectional):
        rows = _scores({"0": [0.8]}, positional="none", attention="causal")
        rows += _scores({"0": [bidirectional]}, positional="none", attention="bidirectional")
        return headline_verdicts(_summary(controls=("results", rows)))

    at_chance = table(0.51)
    row = at_chance[at_chance["claim"].str.contains("bidirectional")].iloc[0]
    assert row["expect"] == "at" and row["verdict"] == "supported"
    above = table(0.7)
    assert above[above["claim"].str.contains("bidirectional")].iloc[0]["verdict"] == "not supported"


def test_difference_claims_use_the_conservative_interval():
    from nopelens.experiments.verdicts import headline_verdicts

    def length_rows(long_value):
        rows = []
        for seq_len, value in ((16, 0.77), (128, 0.70), (512, long_value)):
            rows += _scores({"0": [value]}, seq_len=seq_len, config_id=f"c{seq_len}")
        return rows

    # 0.77 [0.72, 0.82] vs 0.59 [0.54, 0.64]: the difference 0.18 lies in [0.08, 0.28] > 0
    row = _one(headline_verdicts(_summary(length=("results", length_rows(0.59)))), "length")
    assert row["value"] == pytest.approx(0.18)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.08, 0.28))
    assert row["verdict"] == "supported" and row["reference"] == 0.0
    # 0.77 vs 0.74: the intervals overlap, so the difference is inconclusive
    row = _one(headline_verdicts(_summary(length=("results", length_rows(0.74)))), "length")
    assert row["verdict"] == "inconclusive"


def test_sweep_claim_is_a_share_with_a_wilson_interval():
    from nopelens.experiments.verdicts import headline_verdicts

    rows = []
    for i in range(20):
        value = 0.7 if i < 19 else 0.5  # 19 of 20 configurations above chance
        rows += _scores({"0": [value]}, config_id=f"c{i}")
    row = _one(headline_verdicts(_summary(sweep=("results", rows))), "sweep")
    assert row["value"] == pytest.approx(0.95)
    assert 0.7 < row["ci_low"] < 0.95 < row["ci_high"] <= 1.0  # Wilson: 0.764..0.991
    assert row["ci_low"] == pytest.approx(0.7639, abs=1e-3)
    assert row["verdict"] == "supported" and row["reference_kind"] == "half of them"


def test_theory_claim_without_an_interval_is_inconclusive():
    from nopelens.experiments.verdicts import headline_verdicts

    metrics = [{"site": "attn_out", "prediction": "pattern", "pearson_r": 0.99}]
    row = _one(headline_verdicts(_summary(theory=("metrics", metrics))), "theory")
    assert row["value"] == 0.99 and row["reference_kind"] == "bar" and row["reference"] == 0.9
    assert row["verdict"] == "inconclusive"  # the block-0 part alone has no interval
    fit = [
        {"site": "attn_out", "layer": 0, "prediction": "first_layer", "pearson_r": 0.95,
         "pearson_r_ci_low": 0.93, "pearson_r_ci_high": 0.97},
        {"site": "attn_out", "layer": 1, "prediction": "one_step", "pearson_r": 0.99,
         "pearson_r_ci_low": 0.98, "pearson_r_ci_high": 1.0},
        {"site": "resid_post", "layer": 1, "prediction": "one_step", "pearson_r": 0.85,
         "pearson_r_ci_low": 0.80, "pearson_r_ci_high": 0.88},
    ]  # fmt: skip
    table = headline_verdicts(_summary(layer_theory=("fit", fit)), bar=0.9)
    first, every = table.to_dict(orient="records")
    assert first["verdict"] == "supported" and first["ci_low"] == 0.93
    # every layer: held to its worst layer, which is below the bar
    assert "block 1 resid_post" in every["measure"] and every["verdict"] == "not supported"


def test_missing_parts_give_no_rows_and_bad_input_is_refused():
    from nopelens.experiments.verdicts import HEADLINE_COLUMNS, headline_verdicts

    empty = headline_verdicts({"parts": {}})
    assert empty.empty and list(empty.columns) == HEADLINE_COLUMNS
    with pytest.raises(ValueError, match="'summary' parameter of headline_verdicts"):
        headline_verdicts([1, 2])


def test_trained_and_probe_claims():
    from nopelens.experiments.verdicts import headline_verdicts

    trained = _scores({"0": [0.9, 0.92], "1": [0.65, 0.66]}, positional="none",
                      state="trained", task="previous_token")  # fmt: skip
    trained += _scores({"0": [0.6], "1": [0.6]}, positional="none", state="untrained",
                       task="previous_token")  # fmt: skip
    probes = [
        {"layer": "0", "metric": "spearman", "target": "position", "model": "given",
         "capacity": "matched", "probe": "ridge", "feature": feature, "value": value,
         "ci_low": value - 0.05, "ci_high": value + 0.05, "subject": "random-init NoPE"}
        for feature, value in (("cosine", 0.5), ("variance", 0.3), ("hidden", 0.1))
    ]  # fmt: skip
    table = headline_verdicts(
        _summary(trained=("scores", trained), probes=("results", probes))
    ).set_index("part")
    assert table.loc["trained", "value"] == pytest.approx(0.655)
    assert "previous_token" in table.loc["trained", "claim"]
    assert table.loc["probes", "value"] == pytest.approx(0.2)
    assert (table.loc["probes", "ci_low"], table.loc["probes", "ci_high"]) == pytest.approx(
        (0.1, 0.3)
    )
    assert set(table["verdict"]) == {"supported"}


def test_hybrid_claims_read_the_nope_blocks_of_the_hybrid_at_resid_post():
    from nopelens.experiments.verdicts import headline_verdicts

    def row(experiment, state, variant, group, value, low, high, site="resid_post"):
        return {"experiment": experiment, "state": state, "variant": variant, "site": site,
                "metric": "neighborhood_concordance", "layer_group": group, "value": value,
                "chance": 0.5, "ci_low": low, "ci_high": high, "n_blocks": 2}  # fmt: skip

    rows = [
        row("random_init", "untrained", "hybrid", "NoPE layers", 0.75, 0.74, 0.76),
        row("random_init", "untrained", "hybrid", "RoPE layers", 0.10, 0.05, 0.15),  # not read
        row("random_init", "untrained", "all-RoPE", "NoPE layers", 0.20, 0.15, 0.25),  # not read
        row("random_init", "untrained", "hybrid", "NoPE layers", 0.3, 0.2, 0.4, site="attn_out"),
        row("trained", "untrained", "hybrid", "NoPE layers", 0.9, 0.85, 0.95),  # before training
        row("trained", "trained", "hybrid", "NoPE layers", 0.52, 0.48, 0.56),
    ]
    table = headline_verdicts(_summary(hybrid=("summary", rows)))
    assert list(table["part"]) == ["hybrid", "hybrid"]
    init, trained = table.iloc[0], table.iloc[1]
    assert (init["value"], init["ci_low"], init["verdict"]) == (0.75, 0.74, "supported")
    assert "random init" in init["claim"]
    assert (trained["value"], trained["reference"], trained["verdict"]) == (
        0.52,
        0.5,
        "inconclusive",
    )
