"""The mechanism parts: first-layer theory vs observation, and hook ablations.

``theory`` compares block-0 self-similarity with the prediction from the model's own attention
patterns (and the uniform-attention closed form), then sharpens attention to see the fit degrade;
``ablation`` removes residual connections or shuffles a prefix through hooks.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from nopelens.experiments.parts.common import (
    analyze_profile,
    ap_nc,
    base_model,
    profile_tokens,
    section,
)
from nopelens.experiments.pipeline import Context, PartResult

# theory -----------------------------------------------------------------------------------------


def _theory_numbers(theory: Any, study: pd.DataFrame) -> dict[str, Any]:
    """The fit of each (site, prediction), and the attn_out fit at each sharpness scale."""
    numbers: dict[str, Any] = {"model": theory.model_label, "sharpness": theory.sharpness}
    for row in theory.metrics.itertuples(index=False):
        numbers[f"{row.site} {row.prediction}"] = {
            "pearson_r": row.pearson_r,
            "rmse": row.rmse,
            "AP_observed": row.ap_observed,
            "AP_predicted": row.ap_predicted,
            "NC_observed": row.nc_observed,
            "NC_predicted": row.nc_predicted,
        }
    attn = study[study["site"] == "attn_out"]
    numbers["sharpness_study_attn_out_pearson_r"] = {
        f"{pred} scale {scale:g}": float(v)
        for (pred, scale), v in attn.groupby(["prediction", "scale"])["pearson_r"].mean().items()
    }
    return numbers


def part_theory(ctx: Context) -> PartResult:
    """First-layer theory vs observation, and how the fit degrades as attention sharpens.

    Runs on the base model (first seed) with tokens that do not repeat within a sequence (the
    theory's assumption) when the vocabulary allows. Settings: ``scales`` of the sharpness study.
    """
    from nopelens.theory import attention_sharpness_study, first_layer_theory

    model = base_model(ctx, ctx.profile.seeds[0])
    distinct = ctx.profile.model["d_vocab"] >= ctx.profile.seq_len
    tokens = profile_tokens(ctx, distinct=distinct)
    theory = first_layer_theory(model, tokens)
    study = attention_sharpness_study(
        scales=ctx.config["settings"]["scales"], model=model, tokens=tokens
    )
    return PartResult(
        numbers=_theory_numbers(theory, study),
        tables={"metrics": theory.metrics, "variance": theory.variance, "sharpness": study},
        objects={"theory": theory},
    )


def figures_theory(result: PartResult) -> list[Any]:
    """Theory vs observation, variance by position, the sharpness study and the fit table."""
    from nopelens.viz import sweep_line_figure, theory_figure, variance_figure

    theory = result.objects["theory"]
    study = result.tables["sharpness"]
    return [
        (
            "Layer-0 theory vs observation",
            section(
                "Observed block-0 self-similarity, the prediction from the model's own attention "
                "patterns with isotropic values (A G A^T, normalised), their difference, and the "
                "uniform-attention closed form sqrt(min(i,j)/max(i,j)).",
                theory_figure(theory, include_closed_form=True),
            ),
        ),
        (
            "Variance by position (Chi et al.)",
            variance_figure(theory.variance, model_label=theory.model_label),
        ),
        (
            "Attention sharpness",
            section(
                "Pearson r between predicted and observed off-diagonal similarities as block-0 "
                "attention scores are multiplied by a growing factor (0 = exactly uniform).",
                sweep_line_figure(
                    study, x="scale", color="prediction", value="pearson_r", site="attn_out"
                ),
            ),
        ),
        ("Layer-0 fit metrics", result.tables["metrics"]),
    ]


# ablation ---------------------------------------------------------------------------------------


def part_ablation(ctx: Context) -> PartResult:
    """Ablations through hooks: removing residual connections, shuffling a prefix.

    Settings: ``conditions`` (:func:`nopelens.measure.ablation_hooks` specs) and ``sites``.
    """
    from nopelens.measure import ablation_hooks

    settings = ctx.config["settings"]
    model = base_model(ctx, ctx.profile.seeds[0])
    tokens = profile_tokens(ctx)
    frames = []
    for spec in settings["conditions"]:
        hooks = ablation_hooks(model, spec, seed=ctx.profile.data_seed)
        report = analyze_profile(ctx, model, tokens, settings["sites"], fwd_hooks=hooks)
        frames.append(report.scores.assign(ablation=spec))
    frame = pd.concat(frames, ignore_index=True)
    numbers = {spec: ap_nc(group) for spec, group in frame.groupby("ablation", sort=False)}
    return PartResult(numbers=numbers, tables={"scores": frame})


def figures_ablation(result: PartResult) -> list[Any]:
    """Scores by layer under each ablation."""
    from nopelens.viz import score_by_layer_figure

    frame = result.tables["scores"].rename(columns={"ablation": "model"})
    return [
        (
            "Ablations",
            section(
                "Scores by layer with residual connections removed (block 0, every block, the "
                "first "
                "8 positions only) or the first tokens shuffled (``remove_residual:0`` means "
                "block 0 "
                "computes resid_mid = attn_out).",
                score_by_layer_figure(frame, sites="resid_post"),
            ),
        )
    ]
