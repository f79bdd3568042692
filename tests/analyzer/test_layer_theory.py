"""layer_theory: the result, what each prediction reads, fit statistics, the CLI."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch


@pytest.fixture(scope="module")
def setup():
    from nopelens import build_model, random_tokens

    model = build_model(n_layers=3, d_model=48, n_heads=4, d_vocab=256, n_ctx=12, seed=0)
    tokens = random_tokens(10, 12, 256, seed=1, distinct=True)
    return model, tokens


@pytest.fixture(scope="module")
def theory(setup):
    from nopelens.analyzer import layer_theory

    return layer_theory(*setup, n_bootstrap=50)


def test_result_layout(theory, setup):
    from nopelens.analyzer import FIT_COLUMNS, LAYER_PREDICTIONS, LayerTheory

    assert isinstance(theory, LayerTheory)
    assert theory.layers == (0, 1, 2)
    assert theory.sites == ("attn_out", "resid_mid", "resid_post")
    assert theory.predictions == LAYER_PREDICTIONS
    assert list(theory.fit.columns) == list(FIT_COLUMNS)
    assert len(theory.fit) == 3 * 3 * len(LAYER_PREDICTIONS)
    for site in theory.sites:
        assert theory.observed[site].shape == (3, 12, 12)
        for name in theory.predictions:
            matrix = theory.predicted[name][site]
            assert matrix.shape == (3, 12, 12) and torch.isfinite(matrix).all()
            torch.testing.assert_close(matrix.diagonal(dim1=1, dim2=2), torch.ones(3, 12))
    assert theory.hooks["resid_mid"] == tuple(f"blocks.{i}.hook_resid_mid" for i in range(3))
    assert set(theory.matrices("attn_out", 1)) == {"observed", *LAYER_PREDICTIONS}
    frame = theory.to_frame()
    assert list(frame.columns) == ["site", "layer", "matrix", "pos", "pos_other", "value"]
    assert len(frame) == 3 * 3 * (1 + len(LAYER_PREDICTIONS)) * 144
    assert list(theory.sharpness.columns) == [
        "layer",
        "attention_entropy",
        "relative_entropy",
        "max_attention",
    ]
    text = repr(theory)
    assert "propagated: r" in text and len(text.splitlines()) == 1 + len(LAYER_PREDICTIONS)
    fit = theory.fit
    assert ((fit["ap_chance"] - 2 / 12).abs() < 1e-12).all() and (fit["nc_chance"] == 0.5).all()
    for metric in ("pearson_r", "rmse", "ap_observed", "nc_predicted"):
        ok = fit[f"{metric}_ci_low"] <= fit[f"{metric}_ci_high"] + 1e-12
        assert ok.all(), metric


def test_block_zero_predictions_are_consistent(theory, setup):
    """At block 0 one-step and propagated read the same input; first_layer is first_layer_theory's
    prediction and its closed form the block-0 closed form, held unchanged against every layer."""
    from nopelens.theory import first_layer_theory

    for site in theory.sites:
        torch.testing.assert_close(
            theory.predicted["one_step"][site][0], theory.predicted["propagated"][site][0]
        )
        assert torch.equal(
            theory.predicted["first_layer"][site][0], theory.predicted["first_layer"][site][2]
        )
    first = first_layer_theory(*setup)
    for site in theory.sites:
        torch.testing.assert_close(
            theory.predicted["first_layer"][site][0], first[site].predicted, atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            theory.predicted["first_layer_closed_form"][site][1], first[site].closed_form
        )
        torch.testing.assert_close(
            theory.observed[site][0], first[site].observed, atol=1e-5, rtol=0
        )


def test_observed_scores_are_analyzes_scores(theory, setup):
    """ap_observed / nc_observed are the per-sequence means analyze() reports."""
    from nopelens import analyze

    report = analyze(*setup, sites=("attn_out",), n_bootstrap=0)
    for layer in (0, 2):
        row = theory.fit[(theory.fit.site == "attn_out") & (theory.fit.layer == layer)].iloc[0]
        scores = report.scores[
            (report.scores.site == "attn_out") & (report.scores.layer == str(layer))
        ]
        ap = scores[scores.metric == "adjacency_probability"]["value"].iloc[0]
        nc = scores[scores.metric == "neighborhood_concordance"]["value"].iloc[0]
        assert row["ap_observed"] == pytest.approx(ap) and row["nc_observed"] == pytest.approx(nc)


def _scramble(layer, seed=0):
    """A hook replacing blocks.L.hook_attn_out by noise of the same scale."""
    from nopelens.measure import hook_name

    def hook(tensor, hook):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(tensor.shape, generator=g) * tensor.std()

    return [(hook_name("attn_out", layer), hook)]


@pytest.mark.parametrize("layer", [0, 1])
def test_predictions_never_read_what_they_predict(setup, layer):
    """Scrambling blocks.L.hook_attn_out changes what is observed at L (and after), but not the
    one-step and propagated predictions for L (nor anything predicted for earlier blocks)."""
    from nopelens.analyzer import layer_theory

    kwargs = {"predictions": ("one_step", "propagated"), "n_bootstrap": 0}
    clean = layer_theory(*setup, **kwargs)
    scrambled = layer_theory(*setup, fwd_hooks=_scramble(layer), **kwargs)
    for site in clean.sites:
        moved = (clean.observed[site][layer] - scrambled.observed[site][layer]).abs().max()
        assert moved > 0.05, f"the scramble did not change the observed {site}"
        for name in ("one_step", "propagated"):
            torch.testing.assert_close(
                clean.predicted[name][site][: layer + 1],
                scrambled.predicted[name][site][: layer + 1],
                rtol=0,
                atol=1e-6,
                msg=f"{name} {site} moved when hook_attn_out {layer} moved",
            )


def test_mlp_kernel_beats_ignoring_the_mlp(setup):
    """Propagating without the MLP misses resid_post at depth; the kernel model fits it better."""
    from nopelens.analyzer import layer_theory

    kwargs = {"predictions": ("propagated",), "sites": ("resid_post",), "n_bootstrap": 0}
    kernel = layer_theory(*setup, **kwargs).fit
    ignore = layer_theory(*setup, mlp="ignore", **kwargs).fit
    deep = kernel["layer"] == 2
    assert float(kernel[deep]["rmse"].iloc[0]) < 0.5 * float(ignore[deep]["rmse"].iloc[0])


def test_attention_only_and_bidirectional_models():
    from nopelens import build_model, random_tokens
    from nopelens.analyzer import layer_theory

    tokens = random_tokens(4, 8, 64, seed=0, distinct=True)
    attn_only = build_model(n_layers=2, d_model=32, n_heads=2, d_vocab=64, n_ctx=8, attn_only=True)
    theory = layer_theory(attn_only, tokens, n_bootstrap=0)
    assert theory.sites == ("attn_out", "resid_post")
    mid = layer_theory(attn_only, tokens, sites="resid_mid", n_bootstrap=0)
    assert mid.hooks["resid_mid"] == ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
    torch.testing.assert_close(mid.observed["resid_mid"], theory.observed["resid_post"])
    bidirectional = build_model(
        n_layers=1, d_model=32, n_heads=2, d_vocab=64, n_ctx=8, attention="bidirectional"
    )
    assert "kim" not in layer_theory(bidirectional, tokens, n_bootstrap=0).predictions
    with pytest.raises(ValueError, match="bidirectional attention"):
        layer_theory(bidirectional, tokens, predictions="kim")


def test_unmodelled_blocks_are_refused_by_name():
    from nopelens import build_model, random_tokens
    from nopelens.analyzer import layer_theory

    model = build_model(n_layers=1, d_model=32, n_heads=2, d_vocab=64, n_ctx=8, gated_mlp=True)
    tokens = random_tokens(3, 8, 64, seed=0, distinct=True)
    theory = layer_theory(model, tokens, n_bootstrap=0)
    assert "propagated" not in theory.predictions and "first_layer" in theory.predictions
    with pytest.raises(ValueError, match="gated MLPs"):
        layer_theory(model, tokens, predictions=("propagated",))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sites": ("mlp_out",)}, "'sites' parameter of layer_theory"),
        ({"predictions": ("magic",)}, "'predictions' parameter of layer_theory"),
        ({"layers": 7}, "'layers' parameter of layer_theory"),
        ({"mlp": "linear"}, "'mlp' parameter of layer_theory"),
        ({"n_bootstrap": -1}, "'n_bootstrap' parameter of layer_theory"),
        ({"confidence": 1.0}, "'confidence' parameter of layer_theory"),
        ({"batch_size": 0}, "'batch_size' parameter of layer_theory"),
    ],
)
def test_bad_arguments(setup, kwargs, match):
    from nopelens.analyzer import layer_theory

    with pytest.raises(ValueError, match=match):
        layer_theory(*setup, **kwargs)


def test_short_sequences_are_refused(setup):
    from nopelens.analyzer import layer_theory

    with pytest.raises(ValueError, match="at least 3 tokens"):
        layer_theory(setup[0], setup[1][:, :2])


def test_seed_fixes_the_intervals_and_batches_do_not_matter(setup):
    from nopelens.analyzer import layer_theory

    kwargs = {"predictions": ("one_step", "kim"), "sites": "attn_out", "n_bootstrap": 30}
    a = layer_theory(*setup, seed=3, **kwargs).fit
    b = layer_theory(*setup, seed=3, batch_size=3, **kwargs).fit
    pd.testing.assert_frame_equal(a, b, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------
# fit statistics


@pytest.mark.slow
def test_basic_bootstrap_covers_the_noise_free_fit():
    """Known truth: sequences = T + symmetric noise, a fixed prediction P. The r and RMSE between
    the noise-free mean T and P are covered by the 95% intervals in about 95% of 150 replicates
    (the percentile interval, which ignores the noise bias, would miss r most of the time)."""
    from nopelens.analyzer.theory_fit import FitRow, GroupSums, fit_frame, sequence_scores
    from nopelens.theory import uniform_attention_similarity

    n, n_seqs, reps = 10, 24, 150
    truth = uniform_attention_similarity(n).double()
    g = torch.Generator().manual_seed(0)
    pred = truth.pow(2) + 0.05 * torch.rand(n, n, generator=g, dtype=torch.float64)
    pred = (pred + pred.T) / 2
    pred.fill_diagonal_(1.0)
    rows, cols = torch.triu_indices(n, n, offset=1)
    x, y = truth[rows, cols], pred[rows, cols]
    r_true = float(torch.corrcoef(torch.stack([x, y]))[0, 1])
    rmse_true = float((x - y).pow(2).mean().sqrt())
    hits = {"r": 0, "rmse": 0}
    for rep in range(reps):
        noise = 0.15 * torch.randn(n_seqs, n, n, generator=g, dtype=torch.float64)
        obs = truth + (noise + noise.transpose(1, 2)) / 2
        sums = GroupSums(n_seqs, 1, n)
        sums.add(0, obs[:, None])
        row = fit_frame(
            sums,
            sequence_scores(obs[:, None]),
            [FitRow("s", 0, "p", 0, fixed=pred)],
            n_bootstrap=200,
            confidence=0.95,
            seed=rep,
        ).iloc[0]
        hits["r"] += row.pearson_r_ci_low <= r_true <= row.pearson_r_ci_high
        hits["rmse"] += row.rmse_ci_low <= rmse_true <= row.rmse_ci_high
    for name, count in hits.items():
        assert 0.88 <= count / reps <= 1.0, f"{name} coverage {count / reps:.2f}"


def test_group_pooling_keeps_the_mean_and_bounds_memory():
    from nopelens.analyzer.theory_fit import GroupSums

    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 2, 4, 4, generator=g, dtype=torch.float64)
    pooled = GroupSums(50, 2, 4, max_groups=7)
    pooled.add(0, x[:20])
    pooled.add(20, x[20:])
    assert pooled.groups == 7 and pooled.sums.shape == (7, 2, 4, 4)
    torch.testing.assert_close(pooled.mean(), x.mean(0))
    one = torch.zeros(1, 7, dtype=torch.float64)
    one[0, 3] = 1.0
    members = [s for s in range(50) if s % 7 == 3]
    torch.testing.assert_close(pooled.mean(one)[0], x[members].mean(0))


# --------------------------------------------------------------------------------------------
# command line


def test_cli_analyze_theory_prints_and_writes_the_fit_table(tmp_path, capsys):
    from nopelens.cli import main

    out = tmp_path / "scores.csv"
    argv = [
        "analyze",
        "--n-layers",
        "2",
        "--d-model",
        "32",
        "--n-heads",
        "4",
        "--d-vocab",
        "50",
        "--n-ctx",
        "12",
        "--n-seqs",
        "5",
        "--seq-len",
        "10",
        "--n-bootstrap",
        "20",
        "--theory",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "Theory vs observation" in text
    assert re.search(r"resid_post\s+1\s+propagated\s+-?\d\.\d{3} \[", text)
    fit = pd.read_csv(tmp_path / "scores_theory.csv")
    assert set(fit["prediction"]) == {
        "first_layer",
        "first_layer_closed_form",
        "one_step",
        "propagated",
        "kim",
    }
    assert np.isfinite(fit["rmse"]).all() and not math.isnan(fit["pearson_r"].iloc[0])


def test_sharpness_study_reads_scale_one_from_a_reference(setup):
    """Scale 1 read from the layer_theory of the same model is the computed scale 1, exactly."""
    from nopelens.analyzer import layer_theory, layer_theory_sharpness

    model, tokens = setup
    reference = layer_theory(model, tokens, n_bootstrap=20)
    kwargs = {"scales": (0.0, 1.0), "sites": ("attn_out", "resid_post")}
    computed = layer_theory_sharpness(model, tokens, **kwargs)
    reused = layer_theory_sharpness(model, tokens, reference=reference, **kwargs)
    pd.testing.assert_frame_equal(reused, computed, check_exact=True)
    with pytest.raises(ValueError, match="differs in: sites"):
        small = layer_theory(model, tokens, sites="attn_out", n_bootstrap=0)
        layer_theory_sharpness(model, tokens, reference=small, **kwargs)
    with pytest.raises(TypeError):  # the tests' runtime type checker
        layer_theory_sharpness(model, tokens, reference="theory", **kwargs)
    unchecked = getattr(layer_theory_sharpness, "__wrapped__", layer_theory_sharpness)
    with pytest.raises(ValueError, match="'reference' parameter of layer_theory_sharpness"):
        unchecked(model, tokens, reference="theory", **kwargs)
