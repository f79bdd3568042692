"""The random-init parts: base NoPE models, the hyperparameter sweep, the controls, length.

All four measure randomly initialised models on random tokens. ``random_init`` scores the base
model at every layer and site; ``sweep`` varies one hyperparameter (or a few) at a time;
``controls`` swaps NoPE for learned, rotary or ALiBi positions and causal for bidirectional
attention; ``length`` grows the sequences.
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from nopelens.experiments.grid import config_id, expand_grid
from nopelens.experiments.parts.common import (
    analyze_profile,
    ap_nc,
    base_model,
    profile_tokens,
    run_part_sweep,
    section,
    seed_mean,
    sweep_grid,
)
from nopelens.experiments.pipeline import Context, PartResult
from nopelens.experiments.summary import failure_ranges, summarize

# random_init ------------------------------------------------------------------------------------


def part_random_init(ctx: Context) -> PartResult:
    """Random-init NoPE models (one per seed): scores at every layer and site, matrices, profiles.

    The paper's central observation: the self-similarity of hidden states at nearby positions is
    higher than at distant ones, in randomly initialised causal NoPE models. Settings: ``sites``.
    """
    sites = ctx.config["settings"]["sites"]
    tokens = profile_tokens(ctx)
    scores, profiles, reports = [], [], {}
    for seed in ctx.profile.seeds:
        report = analyze_profile(ctx, base_model(ctx, seed), tokens, sites)
        scores.append(report.scores.assign(seed=seed))
        profiles.append(report.profiles.assign(seed=seed))
        reports[seed] = report
    scores_frame = pd.concat(scores, ignore_index=True)
    numbers: dict[str, Any] = {"model": reports[ctx.profile.seeds[0]].model_label}
    for label in reports[ctx.profile.seeds[0]].layer_labels:
        numbers[f"layer {label}"] = ap_nc(scores_frame, layer=label)
    blocks = scores_frame[scores_frame["layer"] != "embed"]
    numbers["share_of_block_scores_above_chance"] = float(
        (blocks["ci_low"] > blocks["chance"]).mean()
    )
    return PartResult(
        numbers=numbers,
        tables={"scores": scores_frame, "profiles": pd.concat(profiles, ignore_index=True)},
        objects={"report": reports[ctx.profile.seeds[0]]},
    )


def figures_random_init(result: PartResult) -> list[Any]:
    """Self-similarity heatmaps, scores by layer and distance profiles of the base model."""
    from nopelens.viz import (
        distance_profile_figure,
        score_by_layer_figure,
        similarity_heatmap_figure,
    )

    report = result.objects["report"]
    scores = result.tables["scores"]
    scores = scores.assign(model=[f"{report.model_label} seed {s}" for s in scores["seed"]])
    return [
        (
            "Random-init NoPE: self-similarity by layer",
            section(
                "Mean cosine similarity S_ij between the hidden states at positions i and j of a "
                "randomly initialised causal NoPE model (first seed); slider: layer, menu: site. "
                "The neighborhood pattern is the bright band along the diagonal.",
                similarity_heatmap_figure(report),
            ),
        ),
        (
            "Random-init NoPE: scores by layer",
            section(
                "Adjacency probability and neighborhood concordance per layer, one line per weight "
                "seed, with bootstrap intervals over sequences and chance levels.",
                score_by_layer_figure(scores, sites="resid_post"),
            ),
        ),
        (
            "Random-init NoPE: distance profiles",
            distance_profile_figure(report.profiles, model_label=report.model_label),
        ),
    ]


# sweep ------------------------------------------------------------------------------------------


def _sweep_numbers(frame: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    """Headline numbers (share above chance at the last block, failure ranges) and verdicts."""
    summary = summarize(frame, layers="last")
    last = frame[frame["layer"] != "embed"].copy()
    last["rank"] = last["layer"].astype(int)
    last = last[last["rank"] == last.groupby("config_id")["rank"].transform("max")]
    above = last.assign(above=last["ci_low"] > last["chance"])
    share = above.groupby("metric")["above"].mean()
    numbers = {
        "n_configs": int(frame["config_id"].nunique()),
        "share_above_chance_last_layer": {k: float(v) for k, v in share.items()},
        "failure_ranges": failure_ranges(summary),
    }
    return numbers, summary


def part_sweep(ctx: Context) -> PartResult:
    """Random-init hyperparameter sweep: size, depth, normalisation, activation, initialisation.

    Settings: ``grid`` (sub-grids over the base model, data sizes and seeds of the profile) or
    ``preset`` (a :data:`nopelens.experiments.PRESETS` name, run as is).

    Besides the results, the ``arms`` table says which sub-grid (a factorial core or a
    one-factor-at-a-time arm) each configuration belongs to, so that figures compare
    configurations of one arm only.
    """
    grid = sweep_grid(ctx)
    frame = run_part_sweep(ctx)
    numbers, summary = _sweep_numbers(frame)
    arms = []
    for index, sub in enumerate(grid):
        varied = [k for k, v in sub.items() if len(v) > 1 and k != "seed"]
        arms += [
            {"arm": index, "varied": " x ".join(varied), "config_id": config_id(c)}
            for c in expand_grid(sub)
        ]
    return PartResult(
        numbers=numbers, tables={"results": frame, "summary": summary, "arms": pd.DataFrame(arms)}
    )


def _arm_figures(rows: pd.DataFrame, params: list[str]) -> list[Any]:
    """Figures of one arm: heatmaps over each pair of a factorial core, lines for one factor."""
    from nopelens.viz import sweep_heatmap_figure, sweep_line_figure

    figures: list[Any] = []
    if len(params) >= 2:
        for x, y in itertools.combinations(params, 2):
            figures.append(sweep_heatmap_figure(rows, x=x, y=y, metric="neighborhood_concordance"))
    elif len(params) == 1:
        param = params[0]
        numeric = pd.api.types.is_numeric_dtype(rows[param]) and rows[param].nunique() > 2
        for metric in ("adjacency_probability", "neighborhood_concordance"):
            if numeric:
                figures.append(
                    sweep_line_figure(
                        rows, x=param, metric=metric, log_x=param == "initializer_range"
                    )
                )
            else:
                figures.append(
                    sweep_heatmap_figure(
                        rows.assign(**{param: rows[param].astype(str)}),
                        x=param,
                        y="seed",
                        metric=metric,
                    )
                )
    return figures


def figures_sweep(result: PartResult) -> list[Any]:
    """One group of figures per arm of the sweep, then the verdicts and failure ranges."""
    frame, arms = result.tables["results"], result.tables["arms"]
    figures: list[Any] = [
        "Each configuration is a random-init NoPE model scored on random tokens, at its last "
        "block (resid_post). The factorial core is drawn as heatmaps over two hyperparameters "
        "(mean over the others and the seeds); each one-factor arm as the score against the "
        "factor, every other setting at the base model.",
    ]
    for (_, varied), members in arms.groupby(["arm", "varied"], sort=True):
        rows = frame[frame["config_id"].isin(set(members["config_id"]))]
        figures += _arm_figures(rows, [p for p in varied.split(" x ") if p])
    sentences = result.numbers["failure_ranges"]
    text = (
        "Where the pattern is *not* above chance:\n\n" + "\n".join(f"- {s}" for s in sentences)
        if sentences
        else "The pattern is above chance in every configuration group."
    )
    return [
        ("Random-init sweep", figures),
        ("Random-init sweep: verdicts", [text, result.tables["summary"]]),
    ]


# controls ---------------------------------------------------------------------------------------


def part_controls(ctx: Context) -> PartResult:
    """NoPE vs learned / rotary / ALiBi positions, causal vs bidirectional (``grid``/``preset``)."""
    frame = run_part_sweep(ctx)
    frame = frame.assign(model=frame["positional"] + " / " + frame["attention"])
    numbers = {model: ap_nc(group) for model, group in frame.groupby("model", sort=False)}
    return PartResult(numbers=numbers, tables={"results": frame})


def figures_controls(result: PartResult) -> list[Any]:
    """Scores by layer for NoPE and each control (mean over seeds)."""
    from nopelens.viz import score_by_layer_figure

    frame = result.tables["results"]
    return [
        (
            "Controls: positional encodings and bidirectional attention",
            section(
                "Scores by layer for NoPE and its controls (mean over seeds per model). A "
                "bidirectional "
                "NoPE model is permutation-equivariant, so its pattern must vanish.",
                score_by_layer_figure(seed_mean(frame, "model")),
            ),
        )
    ]


# length -----------------------------------------------------------------------------------------


def part_length(ctx: Context) -> PartResult:
    """Does the pattern dilute as sequences grow? (``grid``/``preset``; the paper used ~30)."""
    frame = run_part_sweep(ctx)
    numbers = {f"seq_len {n}": ap_nc(group) for n, group in frame.groupby("seq_len")}
    return PartResult(numbers=numbers, tables={"results": frame})


def figures_length(result: PartResult) -> list[Any]:
    """Scores at the last block against the sequence length."""
    from nopelens.viz import sweep_line_figure

    frame = result.tables["results"]
    color = "n_layers" if frame["n_layers"].nunique() > 1 else None
    return [
        (
            "Sequence length",
            section(
                "Scores at the last block against the sequence length (mean and 95% interval over "
                "seeds); the adjacency-probability chance level 2/n falls with n.",
                *(
                    sweep_line_figure(
                        frame, x="seq_len", color=color, metric=metric, layer="last", log_x=True
                    )
                    for metric in ("adjacency_probability", "neighborhood_concordance")
                ),
            ),
        )
    ]
