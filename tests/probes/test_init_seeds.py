"""Intervals over model-init seeds: several models, or one rebuilt at init_seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

SPEC = dict(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
KWARGS = dict(
    features=("hidden", "variance"), probes=("ridge", "isotonic"), equal_dim=None, seeds=(0, 1)
)


def _tokens():
    from nopelens import random_tokens

    return random_tokens(24, 8, 20, seed=5)


def test_init_seeds_rebuild_a_random_init_model_and_the_interval_spans_them():
    from scipy.stats import t

    from nopelens import build_model
    from nopelens.probes import probe_positions

    tokens = _tokens()
    report = probe_positions(build_model(**SPEC, seed=0), tokens, init_seeds=(0, 1, 2), **KWARGS)
    per_seed = report.per_seed
    assert sorted(per_seed["init_seed"].unique()) == [0, 1, 2]
    assert set(per_seed["model"]) == {"given"}
    assert report.config["model_init_seeds"] == {"given": [0, 1, 2]}
    assert report.config["init_seeds"] == (0, 1, 2)
    # each init seed's rows are exactly those of that model probed on its own
    for seed in (1, 2):
        alone = probe_positions(build_model(**SPEC, seed=seed), tokens, **KWARGS).per_seed
        mine = per_seed[per_seed["init_seed"] == seed]
        np.testing.assert_array_equal(
            mine["value"].to_numpy(), alone["value"].to_numpy(), err_msg=f"init seed {seed}"
        )
    # the interval: t over the three per-model means (each over the split seeds)
    results = report.results
    assert (results["interval"] == "t over init seeds").all()
    assert (results["init_seeds"] == "0,1,2").all() and (results["split_seeds"] == "0,1").all()
    key = dict(layer="0", probe="isotonic", target="position", metric="spearman")
    rows = per_seed
    for column, value in key.items():
        rows = rows[rows[column] == value]
    means = rows.groupby("init_seed")["value"].mean().to_numpy()
    half = t.ppf(0.975, 2) * means.std(ddof=1) / math.sqrt(3)
    agg = results
    for column, value in key.items():
        agg = agg[agg[column] == value]
    agg = agg.iloc[0]
    assert agg["n_seeds"] == 3
    assert agg["value"] == pytest.approx(means.mean())
    assert agg["ci_low"] == pytest.approx(means.mean() - half)
    assert agg["ci_high"] == pytest.approx(means.mean() + half)
    assert agg["std"] == pytest.approx(means.std(ddof=1))
    # one model: the interval is over the split seeds
    single = probe_positions(build_model(**SPEC, seed=0), tokens, **KWARGS).results
    assert (single["interval"] == "t over split seeds").all()
    assert (single["init_seeds"] == "0").all() and (single["n_seeds"] == 2).all()
    # compare() pairs the families by (init seed, split seed); its interval is over init seeds
    table = report.compare("r2", probe="ridge").iloc[-1]
    frame = per_seed[(per_seed["probe"] == "ridge") & (per_seed["metric"] == "r2")]
    frame = frame[(frame["layer"] == table["layer"]) & (frame["target"] == "position")]
    by = frame.set_index(["init_seed", "seed", "feature"])["value"].unstack("feature")
    diff = by[table["winner"]] - by[table["runner_up"]]
    means = diff.groupby(level="init_seed").mean().to_numpy()
    half = t.ppf(0.975, 2) * means.std(ddof=1) / math.sqrt(3)
    assert table["margin"] == pytest.approx(means.mean())
    assert table["margin_ci_low"] == pytest.approx(means.mean() - half)


def test_a_trained_model_gets_random_init_baselines_at_every_init_seed():
    from nopelens import build_model
    from nopelens.probes import probe_positions

    model = build_model(**SPEC, seed=3)
    with torch.no_grad():  # stand-in for training
        model.blocks[0].attn.W_Q.mul_(5.0)
    report = probe_positions(model, _tokens(), init_seeds=(3, 4), **KWARGS)
    assert report.config["model_init_seeds"] == {"given": [3], "random_init": [3, 4]}
    results = report.results.set_index("model")
    assert set(results.loc["given", "init_seeds"]) == {"3"}
    assert set(results.loc["given", "interval"]) == {"t over split seeds"}
    assert set(results.loc["random_init", "init_seeds"]) == {"3,4"}
    assert set(results.loc["random_init", "interval"]) == {"t over init seeds"}
    with pytest.raises(ValueError, match="needs random_init_baseline=True"):
        probe_positions(model, _tokens(), init_seeds=(3, 4), random_init_baseline=False, **KWARGS)


def test_a_list_of_models_spans_their_init_seeds():
    from nopelens import build_model
    from nopelens.probes import probe_positions

    models = [build_model(**SPEC, seed=seed) for seed in (2, 7)]
    report = probe_positions(models, _tokens(), **KWARGS)
    assert report.config["model_init_seeds"] == {"given": [2, 7]}
    assert (report.results["init_seeds"] == "2,7").all()
    assert (report.results["interval"] == "t over init seeds").all()
    with_seeds = probe_positions(
        build_model(**SPEC, seed=2), _tokens(), init_seeds=(2, 7), **KWARGS
    )
    np.testing.assert_array_equal(
        report.results["value"].to_numpy(), with_seeds.results["value"].to_numpy()
    )

    with pytest.raises(ValueError, match=r"distinct init seeds.*Got seeds \[2, 2\]"):
        probe_positions([models[0], build_model(**SPEC, seed=2)], _tokens(), **KWARGS)
    wider = build_model(**{**SPEC, "d_model": 32}, seed=9)
    with pytest.raises(ValueError, match=r"one architecture.*\['d_model'\]"):
        probe_positions([models[0], wider], _tokens(), **KWARGS)
    with pytest.raises(ValueError, match="pass init_seeds=None"):
        probe_positions(models, _tokens(), init_seeds=(0, 1), **KWARGS)
    with pytest.raises(ValueError, match="'init_seeds' parameter of probe_positions needs a model"):
        probe_positions({"0": torch.randn(8, 4, 3)}, init_seeds=(0, 1), control_task=False)
    with pytest.raises(ValueError, match="'init_seeds' parameter of probe_positions must be"):
        probe_positions(models[0], _tokens(), init_seeds=(1, 1))
