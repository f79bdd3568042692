"""The hybrid reproduce part: NoPE layers vs RoPE layers of a hybrid rotary stack."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from nopelens.experiments.parts.hybrid import (
    TABLE_COLUMNS,
    VARIANTS,
    build_variants,
    figures_hybrid,
    layer_group_means,
    part_hybrid,
)

TINY = {"n_layers": 4, "d_model": 16, "n_heads": 2, "d_vocab": 20, "n_ctx": 8}


def _context(tmp_path, settings=None):
    from nopelens.experiments.pipeline import Context, Part, part_config
    from nopelens.experiments.profiles import PROFILES

    profile = PROFILES["test"]
    config = part_config(profile, Part("hybrid", "Hybrid", part_hybrid, figures_hybrid), "cpu")
    if settings is not None:
        config["settings"] = settings
    return Context(
        profile=profile,
        config=config,
        part_dir=tmp_path,
        device="cpu",
        progress=False,
        inputs={},
    )


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return part_hybrid(_context(tmp_path_factory.mktemp("hybrid")))


def _blocks(frame):
    return frame[frame["layer"] != "embed"]


def test_tables_have_one_row_per_variant_site_layer_and_metric(result):
    random_init, trained = result.tables["random_init"], result.tables["trained"]
    assert list(random_init.columns[: len(TABLE_COLUMNS)]) == list(TABLE_COLUMNS)
    # test profile: 1 seed, 4 blocks + embed, 2 sites, 2 metrics
    assert len(random_init) == len(VARIANTS) * 1 * 5 * 2 * 2
    assert list(dict.fromkeys(random_init["variant"])) == list(VARIANTS)
    assert set(random_init["layer"]) == {"embed", "0", "1", "2", "3"}
    # trained: hybrid and all-RoPE, untrained and trained, 2 blocks + embed, 2 sites, 2 metrics
    assert len(trained) == 2 * 2 * 3 * 2 * 2
    assert set(trained["state"]) == {"untrained", "trained"}
    assert set(trained["variant"]) == {"hybrid", "all-RoPE"}
    assert set(result.tables["accuracy"]["variant"]) == {"hybrid", "all-RoPE"}
    assert result.tables["accuracy"]["test_accuracy"].between(0, 1).all()


def test_is_nope_layer_follows_each_variants_nope_blocks(result):
    table = result.tables["random_init"]
    by_variant = {name: rows for name, rows in table.groupby("variant")}
    assert by_variant["all-NoPE"]["is_nope_layer"].all()  # embed too: the whole model is NoPE
    assert not by_variant["all-RoPE"]["is_nope_layer"].any()
    hybrid = by_variant["hybrid"]
    assert set(hybrid.loc[hybrid["is_nope_layer"], "layer"]) == {"1", "3"}
    assert result.numbers["random_init"]["nope_layers"] == [1, 3]
    trained = result.tables["trained"]
    marked = trained[(trained["variant"] == "hybrid") & trained["is_nope_layer"]]
    assert (
        set(marked["layer"]) == {"1"}
        and not trained[trained["variant"] == "all-RoPE"]["is_nope_layer"].any()
    )


def test_variants_share_weights_and_differ_only_from_the_first_nope_block_on():
    from nopelens.measure import random_tokens

    models = build_variants(TINY, [2], seed=3)
    reference = models["all-RoPE"].state_dict()
    for model in models.values():
        state = model.state_dict()
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)
    tokens = random_tokens(3, 8, 20, seed=0)
    with torch.no_grad():
        _, hybrid = models["hybrid"].run_with_cache(tokens)
        _, rope = models["all-RoPE"].run_with_cache(tokens)
    for layer in (0, 1):  # before the NoPE block: bit for bit the same
        key = f"blocks.{layer}.hook_resid_post"
        assert torch.equal(hybrid[key], rope[key])
    # the NoPE block's queries and keys pass unrotated, so from layer 2 on the stream differs
    assert torch.equal(hybrid["blocks.2.attn.hook_rot_q"], hybrid["blocks.2.attn.hook_q"])
    assert not torch.equal(rope["blocks.2.attn.hook_rot_q"], rope["blocks.2.attn.hook_q"])
    for layer in (2, 3):
        key = f"blocks.{layer}.hook_resid_post"
        assert (hybrid[key] - rope[key]).abs().max() > 1e-4
    # position 0 is untouched by rotation (angle 0) and sees only itself
    torch.testing.assert_close(
        hybrid["blocks.3.hook_resid_post"][:, 0], rope["blocks.3.hook_resid_post"][:, 0]
    )


def test_scores_are_the_analyzers_on_the_hybrid(result):
    from nopelens.analyzer import analyze
    from nopelens.experiments.profiles import PROFILES
    from nopelens.measure import random_tokens
    from nopelens.models import build_model

    prof = PROFILES["test"]
    model = build_model(
        **{**prof.model, "n_layers": 4},
        n_ctx=prof.seq_len,
        positional="rotary",
        nope_layers=[1, 3],
        seed=0,
    )
    tokens = random_tokens(prof.n_seqs, prof.seq_len, prof.model["d_vocab"], seed=prof.data_seed)
    direct = analyze(
        model,
        tokens,
        sites=("attn_out", "resid_post"),
        n_bootstrap=prof.n_bootstrap,
        seed=prof.data_seed,
    ).scores
    table = result.tables["random_init"]
    stored = table[table["variant"] == "hybrid"]
    merged = stored.merge(direct, on=["site", "layer", "metric"], suffixes=("", "_direct"))
    assert len(merged) == len(direct) == len(stored)
    for column in ("value", "chance", "ci_low", "ci_high"):
        torch.testing.assert_close(
            torch.tensor(merged[column].to_numpy()),
            torch.tensor(merged[f"{column}_direct"].to_numpy()),
        )


def test_headline_is_the_mean_over_the_hybrids_nope_and_rope_blocks(result):
    table = _blocks(result.tables["random_init"])
    ap = table[(table["site"] == "resid_post") & (table["metric"] == "adjacency_probability")]
    hybrid = ap[ap["variant"] == "hybrid"]
    head = result.numbers["random_init"]["headline"]
    assert head["AP hybrid NoPE layers"] == pytest.approx(
        hybrid[hybrid["layer"].isin(["1", "3"])]["value"].mean(), abs=1e-6
    )
    assert head["AP hybrid RoPE layers"] == pytest.approx(
        hybrid[hybrid["layer"].isin(["0", "2"])]["value"].mean(), abs=1e-6
    )
    for variant in ("all-NoPE", "all-RoPE"):
        expected = ap[ap["variant"] == variant]["value"].mean()
        assert head[f"AP {variant}"] == pytest.approx(expected, abs=1e-6)
    assert head["AP chance"] == pytest.approx(2 / 12) and head["NC chance"] == 0.5
    nested = result.numbers["random_init"]["resid_post"]["hybrid"]
    assert nested["NoPE layers"]["AP"] == pytest.approx(head["AP hybrid NoPE layers"], abs=1e-6)
    assert set(result.numbers["trained"]["accuracy"]) == {"hybrid", "all-RoPE"}


def test_layer_group_means_splits_blocks_by_the_hybrids_nope_layers():
    table = pd.DataFrame(
        {
            "variant": ["hybrid"] * 4 + ["all-RoPE"] * 4,
            "site": "resid_post",
            "layer": ["embed", "0", "1", "2"] * 2,
            "metric": "neighborhood_concordance",
            "value": [0.5, 0.9, 0.6, 0.7, 0.5, 0.8, 0.8, 0.8],
            "chance": 0.5,
            "ci_low": 0.4,
            "ci_high": 1.0,
        }
    )
    means = layer_group_means(table, [1])
    assert means[["variant", "layer_group", "n_blocks"]].values.tolist() == [
        ["hybrid", "NoPE layers", 1],
        ["hybrid", "RoPE layers", 2],
        ["all-RoPE", "NoPE layers", 1],
        ["all-RoPE", "RoPE layers", 2],
    ]
    assert means["value"].round(6).tolist() == [0.6, 0.8, 0.8, 0.8]


def test_same_settings_give_the_same_tables(result, tmp_path):
    again = part_hybrid(_context(tmp_path, {"trained": None}))
    pd.testing.assert_frame_equal(again.tables["random_init"], result.tables["random_init"])
    assert "trained" not in again.tables and "trained" not in again.numbers
    assert again.numbers["random_init"] == result.numbers["random_init"]


def test_settings_choose_the_nope_layers(tmp_path):
    other = part_hybrid(
        _context(tmp_path, {"nope_layers": [0], "sites": ["resid_post"], "trained": None})
    )
    table = other.tables["random_init"]
    hybrid = table[(table["variant"] == "hybrid") & table["is_nope_layer"]]
    assert set(hybrid["layer"]) == {"0"} and set(table["site"]) == {"resid_post"}


def test_nope_layers_out_of_range_are_refused_before_any_work(tmp_path):
    from nopelens.validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="nope_layers"):
        part_hybrid(_context(tmp_path, {"nope_layers": [9], "trained": None}))


def test_result_round_trips_through_storage(result, tmp_path):
    from nopelens.experiments.storage import load_part_result, save_part_result

    path = save_part_result(result, tmp_path / "result.json")
    back = load_part_result(path)
    assert back.numbers == result.numbers
    for name, frame in result.tables.items():
        pd.testing.assert_frame_equal(back.tables[name], frame, check_dtype=False)


def test_figures_shade_the_hybrids_nope_blocks_and_mark_its_points(result):
    sections = figures_hybrid(result)
    headings = [heading for heading, _ in sections]
    assert headings == [
        "Hybrid RoPE/NoPE stacks at initialisation",
        "Hybrid RoPE/NoPE stacks trained on a position task",
        "Hybrid stacks: NoPE layers vs RoPE layers",
    ]
    fig = sections[0][1][1]
    assert list(fig.layout.xaxis.ticktext) == [
        "embed",
        "0",
        "1 · NoPE in hybrid",
        "2",
        "3 · NoPE in hybrid",
    ]
    assert len(fig.layout.shapes) == 2 * 2  # two NoPE blocks in each of the two metric panels
    hybrid_lines = [t for t in fig.data if t.name and t.name.startswith("hybrid") and t.mode]
    assert hybrid_lines
    for trace in hybrid_lines:
        symbols = dict(zip(trace.x, trace.marker.symbol, strict=True))
        assert {x for x, s in symbols.items() if s == "diamond"} == {"1", "3"}
    untrained, trained = sections[1][1][1:3]
    assert "untrained" in untrained.layout.title.text and "1 · NoPE in hybrid" in (
        trained.layout.xaxis.ticktext
    )


def test_an_empty_nope_layers_axis_says_how_to_write_it():
    from nopelens.experiments import expand_grid

    with pytest.raises(ValueError, match=r"no values\. 'nope_layers' is a list-valued.*\[\[\]\]"):
        expand_grid({"nope_layers": []})
    assert [c["nope_layers"] for c in expand_grid({"nope_layers": [[]]})] == [[]]
