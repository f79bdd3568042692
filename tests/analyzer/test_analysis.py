"""analyze: the report, streaming, the causal-vs-bidirectional control, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch


@pytest.fixture(scope="module")
def models():
    from nopelens import build_model

    kwargs = dict(n_layers=2, d_model=64, n_heads=4, d_vocab=256, n_ctx=32, seed=0)
    return build_model(**kwargs), build_model(**kwargs, attention="bidirectional")


@pytest.fixture(scope="module")
def tokens():
    from nopelens import random_tokens

    return random_tokens(24, 20, 256, seed=1)


@pytest.fixture(scope="module")
def report(models, tokens):
    from nopelens import analyze

    return analyze(models[0], tokens, sites=("resid_post", "attn_out"), n_bootstrap=200)


def _score(report, site, layer, metric):
    rows = report.scores
    hit = rows[(rows.site == site) & (rows.layer == layer) & (rows.metric == metric)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_report_structure(report, tokens):
    from nopelens.analyzer import SCORE_COLUMNS, AnalysisReport

    assert isinstance(report, AnalysisReport)
    assert report.layer_labels == ("embed", "0", "1")
    assert (
        list(report.scores.columns)
        == list(SCORE_COLUMNS)
        == [
            "site",
            "layer",
            "nope",
            "metric",
            "value",
            "chance",
            "ci_low",
            "ci_high",
            "ci_method",
            "n_seqs",
            "seq_len",
        ]
    )
    assert set(report.scores.ci_method) == {"studentized"}
    assert len(report.scores) == 2 * 3 * 2
    assert report.scores[["site", "layer", "metric"]].head(4).values.tolist() == [
        ["resid_post", "embed", "adjacency_probability"],
        ["resid_post", "embed", "neighborhood_concordance"],
        ["resid_post", "0", "adjacency_probability"],
        ["resid_post", "0", "neighborhood_concordance"],
    ]
    assert set(report.scores.n_seqs) == {24} and set(report.scores.seq_len) == {20}
    ap = report.scores[report.scores.metric == "adjacency_probability"]
    assert np.allclose(ap.chance, 2 / 20)
    assert np.allclose(report.scores[report.scores.metric != "adjacency_probability"].chance, 0.5)
    assert (report.scores.ci_low <= report.scores.value).all()
    assert (report.scores.value <= report.scores.ci_high).all()
    for site in ("resid_post", "attn_out"):
        mats = report.matrices[site]
        assert mats.shape == (3, 20, 20) and mats.device.type == "cpu"
        assert mats.dtype == torch.float32
        torch.testing.assert_close(torch.diagonal(mats, dim1=-2, dim2=-1), torch.ones(3, 20))
    # The embedding is the same layer for every site.
    assert torch.equal(report.matrices["resid_post"][0], report.matrices["attn_out"][0])
    assert list(report.profiles.columns) == ["site", "layer", "distance", "value"]
    assert len(report.profiles) == 2 * 3 * 20
    assert list(report.per_sequence.columns) == ["site", "layer", "metric", "seq", "value"]
    assert len(report.per_sequence) == 2 * 3 * 2 * 24
    # value = mean of the per-sequence scores
    means = report.per_sequence.groupby(["site", "layer", "metric"], sort=False).value.mean()
    merged = report.scores.join(means.rename("mean"), on=["site", "layer", "metric"])
    assert np.allclose(merged["value"], merged["mean"])
    frame = report.to_frame()
    assert frame.equals(report.scores) and frame is not report.scores
    assert report.model_label == "NoPE causal L2 d64 h4 LN gelu"
    assert report.spec["positional"] == "none"
    assert "AnalysisReport(" in repr(report)


def test_matrices_and_profiles_match_direct_computation(models, tokens, report):
    from nopelens import collect_activations
    from nopelens.measure import (
        adjacency_probability,
        distance_profile,
        neighborhood_concordance,
        self_similarity,
    )

    acts = collect_activations(models[0], tokens, sites=("embed", "resid_post"))
    hidden = torch.cat([acts["embed"], acts["resid_post"]])  # [layer, batch, pos, d_model]
    sim = self_similarity(hidden)
    torch.testing.assert_close(report.matrices["resid_post"], sim.mean(dim=1))
    ps = report.per_sequence
    for li, label in enumerate(report.layer_labels):
        sel = ps[(ps.site == "resid_post") & (ps.layer == label)]
        ap = sel[sel.metric == "adjacency_probability"].value.to_numpy()
        nc = sel[sel.metric == "neighborhood_concordance"].value.to_numpy()
        np.testing.assert_allclose(ap, adjacency_probability(sim[li]).numpy(), atol=1e-6)
        np.testing.assert_allclose(nc, neighborhood_concordance(sim[li]).numpy(), atol=1e-6)
    prof = report.profiles[report.profiles.site == "resid_post"].value.to_numpy().reshape(3, 20)
    np.testing.assert_allclose(prof, distance_profile(sim.mean(dim=1)).numpy(), atol=1e-6)


def test_causal_nope_model_shows_the_pattern_and_bidirectional_does_not(models, tokens, report):
    from nopelens import analyze

    for metric, chance in (("adjacency_probability", 2 / 20), ("neighborhood_concordance", 0.5)):
        row = _score(report, "resid_post", "0", metric)
        assert row.ci_low > chance + 0.05, f"causal block 0 {metric} above chance"
        # The embedding alone has no order information.
        embed = _score(report, "resid_post", "embed", metric)
        assert embed.ci_low - 0.02 < chance < embed.ci_high + 0.02
    bidir = analyze(models[1], tokens, layers=0, n_bootstrap=200)
    nc = _score(bidir, "resid_post", "0", "neighborhood_concordance")
    assert abs(nc.value - 0.5) < 0.02
    assert nc.ci_low < 0.5 < nc.ci_high


def test_streaming_batches_give_the_same_report(models, tokens, report):
    from nopelens import analyze

    small = analyze(
        models[0], tokens, sites=("resid_post", "attn_out"), batch_size=2, n_bootstrap=200
    )
    for site in report.matrices:
        torch.testing.assert_close(small.matrices[site], report.matrices[site], atol=1e-6, rtol=0)
    pd.testing.assert_frame_equal(small.scores, report.scores, atol=1e-6, rtol=0)
    pd.testing.assert_frame_equal(small.per_sequence, report.per_sequence, atol=1e-6, rtol=0)


def test_options(models, tokens):
    from nopelens import analyze

    model = models[0]
    rep = analyze(model, tokens[:6], layers=[1], exclude_first=True, centered=True, n_bootstrap=0)
    assert rep.layer_labels == ("embed", "1")
    assert rep.matrices["resid_post"].shape == (2, 19, 19)
    assert set(rep.scores.seq_len) == {19}
    assert np.allclose(rep.scores[rep.scores.metric == "adjacency_probability"].chance, 2 / 19)
    assert rep.scores.ci_low.isna().all() and rep.scores.ci_high.isna().all()
    assert set(rep.scores.ci_method) == {"none"}
    assert rep.settings["exclude_first"] and rep.settings["centered"]
    plain = analyze(model, tokens[:6], layers=[1], exclude_first=True, n_bootstrap=0)
    assert not torch.allclose(rep.matrices["resid_post"], plain.matrices["resid_post"])
    # exclude_first drops position 0; uncentred cosines of the rest are unchanged
    full = analyze(model, tokens[:6], layers=[1], n_bootstrap=0)
    torch.testing.assert_close(plain.matrices["resid_post"], full.matrices["resid_post"][:, 1:, 1:])
    # the bootstrap is seeded locally: same seed, same interval; another seed, another one
    a = analyze(model, tokens[:6], layers=[1], n_bootstrap=50, seed=3).scores
    b = analyze(model, tokens[:6], layers=[1], n_bootstrap=50, seed=3).scores
    c = analyze(model, tokens[:6], layers=[1], n_bootstrap=50, seed=4).scores
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.ci_low, c.ci_low)
    # heads of q/k/v/z are concatenated into one hidden vector
    z = analyze(model, tokens[:4], sites="z", layers=0, n_bootstrap=0)
    assert z.matrices["z"].shape == (2, 20, 20)


def test_fwd_hooks_are_applied(models, tokens):
    """Zeroing block 0's attention output removes the only path for order information."""
    from nopelens import analyze

    def zero(value, hook):
        return torch.zeros_like(value)

    rep = analyze(
        models[0], tokens, layers=0, n_bootstrap=100, fwd_hooks=[("blocks.0.hook_attn_out", zero)]
    )
    nc = _score(rep, "resid_post", "0", "neighborhood_concordance")
    assert abs(nc.value - 0.5) < 0.02


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sites": ("embed",)}, "always analysed as layer 'embed'"),
        ({"sites": ("pattern",)}, "holds attention patterns"),
        ({"sites": ("nonsense",)}, "'sites' parameter of analyze must contain site names"),
        ({"layers": (5,)}, r"'layers' parameter of analyze must be None or block indices"),
        ({"batch_size": 0}, "'batch_size' parameter of analyze must be an int >= 1"),
        ({"n_bootstrap": -1}, "'n_bootstrap' parameter of analyze must be an int >= 0"),
        ({"confidence": 1.0}, "'confidence' parameter of analyze must be a finite float > 0.0"),
        ({"confidence": 0.0}, "'confidence' parameter of analyze must be a finite float > 0.0"),
        ({"seed": -1}, "'seed' parameter of analyze must be an int >= 0"),
        ({"ci_method": "normal"}, "'ci_method' parameter of analyze must be one of"),
    ],
)
def test_bad_arguments_raise(models, tokens, kwargs, match):
    from nopelens import analyze

    with pytest.raises(ValueError, match=match):
        analyze(models[0], tokens[:2], **kwargs)


def test_bad_tokens_and_flags_raise(models):
    from nopelens import analyze
    from nopelens.analyzer.analysis import _check_bool

    model = models[0]
    with pytest.raises(ValueError, match=r"at least 3 positions .*Got pos=2"):
        analyze(model, torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match=r"at least 4 positions with exclude_first=True"):
        analyze(model, torch.tensor([[1, 2, 3]]), exclude_first=True)
    with pytest.raises(ValueError, match=r"n_ctx is 32"):
        analyze(model, torch.zeros(1, 40, dtype=torch.long))
    with pytest.raises(TypeError):  # wrong types: the validator or the runtime type checker
        analyze(model, torch.rand(2, 5))
    with pytest.raises(TypeError):
        analyze(model, torch.tensor([[1, 2, 3]]), centered="yes")
    with pytest.raises(ValueError, match="'centered' parameter of analyze must be a bool"):
        _check_bool("yes", "centered", "analyze")


def test_intervals_are_mean_interval_of_the_per_sequence_scores(models, tokens, report):
    """Each row's interval is mean_interval of its per-sequence scores at the report's settings."""
    from nopelens import analyze
    from nopelens.measure.intervals import mean_interval

    ps = report.per_sequence
    for row in report.scores.itertuples():
        sel = ps[(ps.site == row.site) & (ps.layer == row.layer) & (ps.metric == row.metric)]
        low, high = mean_interval(
            sel.value.to_numpy()[None], n_resamples=200, confidence=0.95, seed=0, bounds=(0.0, 1.0)
        )
        assert (row.ci_low, row.ci_high) == pytest.approx((low[0], high[0]), abs=1e-12), row
    # another method and level are passed through, and named in the table
    for method in ("percentile", "bca", "t"):
        other = analyze(
            models[0], tokens, layers=0, n_bootstrap=300, confidence=0.9, ci_method=method, seed=2
        )
        assert set(other.scores.ci_method) == {method}
        assert other.settings["ci_method"] == method
        row = other.scores.iloc[2]
        sel = other.per_sequence
        sel = sel[(sel.layer == row.layer) & (sel.metric == row.metric)].value.to_numpy()
        low, high = mean_interval(
            sel[None], method=method, n_resamples=300, confidence=0.9, seed=2, bounds=(0.0, 1.0)
        )
        assert (row.ci_low, row.ci_high) == pytest.approx((low[0], high[0]), abs=1e-12)
    one = analyze(models[0], tokens[:1], layers=0, n_bootstrap=50)
    assert one.scores.ci_low.isna().all() and set(one.scores.ci_method) == {"none"}


def test_chance_is_the_permutation_null_of_the_data_analysed(models):
    """Heavily repeated tokens (8 token types in 20 positions) give tied similarities; a
    bidirectional NoPE model has no position information, so every layer must sit at chance,
    and shuffling the positions of the very matrices analysed must average to the chance column.
    """
    from nopelens import analyze, collect_activations, random_tokens
    from nopelens.measure import self_similarity
    from nopelens.measure.chance import permuted_scores

    tokens = random_tokens(64, 20, 8, seed=3)
    bidir = analyze(models[1], tokens, n_bootstrap=500)
    ps = bidir.per_sequence
    for row in bidir.scores.itertuples():
        sel = ps[(ps.layer == row.layer) & (ps.metric == row.metric)].value.to_numpy()
        se = sel.std(ddof=1) / np.sqrt(len(sel))
        assert abs(row.value - row.chance) < 4 * se, (row.layer, row.metric, row.value)
        assert row.ci_low < row.chance + 2 * se, "bidirectional layers are not above chance"
    acts = collect_activations(models[1], tokens, sites=("embed", "resid_post"))
    sims = self_similarity(torch.cat([acts["embed"], acts["resid_post"]]))  # [layer, batch, ...]
    assert (sims == 1.0).sum() > sims.shape[0] * 64 * 20 * 1.5  # many exact ties off the diagonal
    null = permuted_scores(sims.double(), n_permutations=40, seed=0)
    chance = bidir.scores.set_index("metric").chance.groupby(level=0).first()
    for metric, draws in null.items():
        per_layer = draws.mean(dim=(0, 2))  # [layer]
        se = draws.std() / np.sqrt(draws.shape[0] * draws.shape[2])
        assert (per_layer - chance[metric]).abs().max() < 4 * se, metric


def test_analyze_with_theory_attaches_the_layer_wise_fit():
    from nopelens import build_model, random_tokens
    from nopelens.analyzer import LayerTheory, analyze

    model = build_model(n_layers=2, d_model=32, n_heads=4, d_vocab=50, n_ctx=16, attn_only=True)
    tokens = random_tokens(6, 10, 50, seed=1)
    plain = analyze(model, tokens, sites="attn_out", n_bootstrap=20)
    assert plain.theory is None
    report = analyze(model, tokens, sites="attn_out", n_bootstrap=20, theory=True)
    assert isinstance(report.theory, LayerTheory)
    assert set(report.theory.fit["site"]) == {"attn_out"}
    assert report.scores.equals(plain.scores)  # the theory does not change the scores
    with pytest.raises(TypeError):  # our InvalidParameterError, or the tests' type checker
        analyze(model, tokens, theory="yes")


def test_nope_column_marks_the_blocks_without_positional_encoding(report):
    from nopelens import analyze, build_model, random_tokens

    # A NoPE model: every block, and the embedding, carry no positional encoding.
    assert report.nope_layers == (0, 1)
    assert report.scores["nope"].dtype == bool and report.scores["nope"].all()
    # A hybrid rotary model with block 1 stripped: exactly layer 1 is marked.
    hybrid = build_model(
        n_layers=3, d_model=32, n_heads=4, d_vocab=50, n_ctx=16, positional="rotary",
        nope_layers=[1], seed=0,
    )  # fmt: skip
    out = analyze(hybrid, random_tokens(4, 12, 50, seed=0), n_bootstrap=0)
    assert out.nope_layers == (1,)
    marked = out.scores.groupby("layer")["nope"].agg(["all", "any"])
    assert marked["all"].equals(marked["any"])  # one flag per layer
    assert sorted(marked.index[marked["all"]]) == ["1"]
    # Analysing a subset of the blocks keeps the model's NoPE blocks in nope_layers.
    part = analyze(hybrid, random_tokens(4, 12, 50, seed=0), layers=[0, 2], n_bootstrap=0)
    assert part.nope_layers == (1,) and not part.scores["nope"].any()
    # A learned-embedding model: nothing is NoPE.
    learned = build_model(
        n_layers=2, d_model=32, n_heads=4, d_vocab=50, n_ctx=16, positional="learned", seed=0
    )
    out = analyze(learned, random_tokens(4, 12, 50, seed=0), n_bootstrap=0)
    assert out.nope_layers == () and not out.scores["nope"].any()
