"""The layer-theory part: every layer's pattern beside the attention-pattern theory.

``layer_theory`` builds the profile's base NoPE model (deeper if the part's settings say so),
runs :func:`nopelens.analyzer.layer_theory` on tokens that do not repeat within a sequence (the
theory's assumption) and then :func:`nopelens.analyzer.layer_theory_sharpness`: the fit at every
layer as every block's attention is flattened to uniform or sharpened. The theory and each scale
of the study are independent jobs (run in the profile's worker processes at once, see
:func:`~nopelens.experiments.parts.common.map_jobs`); scale 1 is the model as built, whose rows
are read from the theory's fit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from nopelens.experiments.parts.common import map_jobs, profile_tokens, section
from nopelens.experiments.pipeline import Context, PartResult


def _fit_numbers(fit: pd.DataFrame) -> dict[str, Any]:
    """``"<site> layer <L> <prediction>" -> {pearson_r, CI, rmse, CI, max_error}``."""
    numbers: dict[str, Any] = {}
    for row in fit.to_dict("records"):
        numbers[f"{row['site']} layer {row['layer']} {row['prediction']}"] = {
            "pearson_r": row["pearson_r"],
            "pearson_r_ci": [row["pearson_r_ci_low"], row["pearson_r_ci_high"]],
            "rmse": row["rmse"],
            "rmse_ci": [row["rmse_ci_low"], row["rmse_ci_high"]],
            "max_error": row["max_error"],
            "AP_observed": row["ap_observed"],
            "AP_predicted": row["ap_predicted"],
        }
    return numbers


def _breakdown(study: pd.DataFrame, site: str) -> dict[str, Any]:
    """Per prediction and scale: the worst r over layers and the mean relative entropy."""
    rows = study[study["site"] == site]
    out: dict[str, Any] = {}
    for (name, scale), group in rows.groupby(["prediction", "scale"]):
        out[f"{name} scale {scale:g}"] = {
            "min_pearson_r_over_layers": float(group["pearson_r"].min()),
            "max_rmse_over_layers": float(group["rmse"].max()),
            "relative_entropy": float(group["relative_entropy"].mean()),
        }
    return out


def _model(ctx: Context) -> Any:
    """The part's model: the profile's base model with the part's overrides, first seed."""
    from nopelens.models import build_model

    prof = ctx.profile
    return build_model(
        **{**prof.model, **ctx.config["settings"].get("model", {})},
        n_ctx=prof.seq_len,
        seed=prof.seeds[0],
        device=ctx.device,
    )


def _job(ctx: Context, tokens: Any, scale: float | None) -> Any:
    """The layer theory (``scale=None``) or one scale of the sharpness study (a job)."""
    from nopelens.analyzer import layer_theory, layer_theory_sharpness

    settings, prof = ctx.config["settings"], ctx.profile
    if scale is None:
        return layer_theory(
            _model(ctx),
            tokens,
            sites=settings.get("sites"),
            n_bootstrap=prof.n_bootstrap,
            seed=prof.data_seed,
        )
    return layer_theory_sharpness(
        _model(ctx), tokens, scales=[scale], sites=settings.get("sites"), seed=prof.data_seed
    )


def part_layer_theory(ctx: Context) -> PartResult:
    """The theory at every layer, and where it breaks as attention sharpens.

    Settings: ``model`` (``build_model`` overrides of the profile's base model, e.g.
    ``{"n_layers": 4}``), ``sites`` (default ``attn_out, resid_mid, resid_post``), ``scales``
    (score multipliers of the sharpness study; empty skips it) and ``study_site`` (the site whose
    breakdown goes into the headline numbers, default ``resid_post``).
    """
    from nopelens.analyzer import layer_theory_sharpness

    settings = ctx.config["settings"]
    prof = ctx.profile
    tokens = profile_tokens(ctx, distinct=prof.model["d_vocab"] >= prof.seq_len)
    scales = [float(s) for s in settings.get("scales", [])]
    computed = [s for s in dict.fromkeys(scales) if s != 1.0]
    results = map_jobs(
        ctx, _job, [(ctx, tokens, None)] + [(ctx, tokens, s) for s in computed], desc="layer theory"
    )
    theory, by_scale = results[0], dict(zip(computed, results[1:], strict=True))
    tables = {"fit": theory.fit, "sharpness": theory.sharpness}
    numbers: dict[str, Any] = {"model": theory.model_label, "fit": _fit_numbers(theory.fit)}
    if scales:
        if 1.0 in scales:  # the model as built: read from the theory, not computed again
            by_scale[1.0] = layer_theory_sharpness(
                _model(ctx),
                tokens,
                scales=[1.0],
                sites=theory.sites,
                seed=prof.data_seed,
                reference=theory,
            )
        study = pd.concat([by_scale[s] for s in scales], ignore_index=True)
        tables["study"] = study
        site = settings.get("study_site", "resid_post")
        numbers["breakdown"] = _breakdown(study, site if site in theory.sites else theory.sites[0])
    return PartResult(
        numbers=numbers,
        tables=tables,
        objects={"theory": {f.name: getattr(theory, f.name) for f in dataclasses.fields(theory)}},
    )


def figures_layer_theory(result: PartResult) -> list[Any]:
    """Theory vs observation by layer, the fit by layer, the sharpness study and the fit table."""
    from nopelens.analyzer import LayerTheory
    from nopelens.viz import layer_fit_figure, layer_sharpness_figure, layer_theory_figure

    fields = dict(result.objects["theory"])
    fields["layers"] = tuple(fields["layers"])
    fields["hooks"] = {k: tuple(v) for k, v in fields["hooks"].items()}
    theory = LayerTheory(**fields)
    site = "resid_post" if "resid_post" in theory.sites else theory.sites[-1]
    out: list[Any] = [
        (
            "Theory vs observation at every layer",
            section(
                "Observed batch-mean self-similarity of each block beside the predictions: the "
                "block-0 theory held against every layer (pattern-based and its uniform-attention "
                "closed form), the one-step prediction (the block's own attention patterns and the "
                "observed Gram of its input, isotropic value/output maps), the propagated one (the "
                "embedding Gram carried through every block's patterns, LN and MLP modelled) and "
                "Kim et al.'s parameter-free L2-normalised layer; the bottom row is "
                "observed − prediction. The slider steps through the layers.",
                layer_theory_figure(theory, site=site),
            ),
        ),
        (
            "Fit by layer",
            section(
                "Pearson r and RMSE between predicted and observed off-diagonal similarities at "
                "every layer, with 95% basic-bootstrap intervals over sequences.",
                layer_fit_figure(theory),
            ),
        ),
    ]
    if "study" in result.tables:
        out.append(
            (
                "Where the theory breaks",
                section(
                    "The same fit as every block's attention scores are multiplied by a factor "
                    "(0 = exactly uniform attention, 1 = the model as built); H is the mean "
                    "relative attention entropy it produces.",
                    layer_sharpness_figure(result.tables["study"], site=site),
                ),
            )
        )
    out.append(("Layer-theory fit table", result.tables["fit"]))
    return out
