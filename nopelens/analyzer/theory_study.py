"""Where the theory breaks: its fit at every layer as attention sharpens.

:func:`layer_theory_sharpness` multiplies the queries of *every* block by a factor
(:func:`nopelens.theory.query_scale_hooks`: every attention score times ``scale``; 0 is exactly
uniform attention, 1 the model as it is, large values sharpen it) and runs
:func:`~nopelens.analyzer.layer_theory` for each factor. The result is one tidy frame over
sharpness x depth, with each block's measured attention sharpness beside the fit, so that the
breakdown can be read against how far attention is from uniform rather than against the
arbitrary factor. Pass a trained model to see where training takes it.

Scale 1 is the model as it is: a caller that already holds its :func:`layer_theory` (same model,
tokens and settings, no hooks) passes it as ``reference`` and the rows of scale 1 are read from
its fit instead of being computed again (the point estimates do not depend on the bootstrap;
they are the same numbers, bit for bit).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Int

from nopelens.analyzer.theory_by_layer import LayerTheory, layer_theory
from nopelens.analyzer.theory_fit import FIT_COLUMNS, GROUP_BUDGET
from nopelens.analyzer.theory_plan import make_plan
from nopelens.models import HookedModel
from nopelens.validation import InvalidParameterError, check_float

logger = logging.getLogger(__name__)

#: Default score multipliers of :func:`layer_theory_sharpness`.
STUDY_SCALES: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
#: Columns of the frame :func:`layer_theory_sharpness` returns: the scale, the layer's attention
#: sharpness, then the fit columns (:data:`FIT_COLUMNS`) without the observed and predicted
#: scores' intervals, the chance levels and the data sizes.
STUDY_COLUMNS: tuple[str, ...] = (
    "scale",
    "layer",
    "relative_entropy",
    "max_attention",
    "site",
    "prediction",
    *(
        c
        for c in FIT_COLUMNS[FIT_COLUMNS.index("pearson_r") :]
        if "_ci_" not in c or not c.startswith(("ap_", "nc_"))
        if not c.endswith("_chance") and c not in ("n_seqs", "seq_len")
    ),
)


def layer_theory_sharpness(
    model: HookedModel,
    tokens: Int[torch.Tensor, "batch pos"],
    *,
    scales: Sequence[float] = STUDY_SCALES,
    sites: Sequence[str] | str | None = ("attn_out", "resid_post"),
    predictions: Sequence[str] | str | None = ("first_layer", "one_step", "propagated"),
    layers: Sequence[int] | int | None = None,
    mlp: str = "kernel",
    n_bootstrap: int = 0,
    seed: int = 0,
    batch_size: int = 64,
    reference: LayerTheory | None = None,
) -> pd.DataFrame:
    """The fit of each prediction at every layer, over a range of attention sharpness.

    Args:
        model: A TransformerLens model (random-init or trained).
        tokens: Token ids ``[batch, pos]`` (``pos >= 3``).
        scales: Attention-score multipliers (``>= 0``) applied to every block.
        sites: Sites (see :func:`~nopelens.analyzer.layer_theory`).
        predictions: Predictions to fit.
        layers: Block indices (default: all).
        mlp: ``"kernel"`` or ``"ignore"``.
        n_bootstrap: Bootstrap resamples for the intervals (0: none, the default here).
        seed: Seed of the bootstrap.
        batch_size: Sequences per forward pass.
        reference: The :func:`~nopelens.analyzer.layer_theory` of the same ``model`` and
            ``tokens`` without hooks, with the same ``mlp`` and at least these sites, layers and
            predictions (any bootstrap): with ``n_bootstrap=0`` the rows of scale 1 are read
            from its fit, not computed again (the same numbers).

    Returns:
        Tidy frame, one row per (scale, layer, site, prediction), columns :data:`STUDY_COLUMNS`
        (``relative_entropy``: mean attention entropy over the uniform one, 1 = uniform;
        ``max_attention``: mean largest weight per query).

    Raises:
        ValueError: For no scales or a negative one, and everything
            :func:`~nopelens.analyzer.layer_theory` refuses.

    Examples:
        >>> from nopelens import build_model, random_tokens
        >>> model = build_model(n_layers=2, d_model=16, n_heads=2, d_vocab=32, n_ctx=6)
        >>> frame = layer_theory_sharpness(model, random_tokens(3, 6, 32, distinct=True),
        ...                                scales=(0.0, 8.0), predictions="propagated")
        >>> sorted(frame["scale"].unique().tolist()), float(frame["relative_entropy"].iloc[0])
        ([0.0, 8.0], 1.0)
    """
    from nopelens.theory import query_scale_hooks

    func = "layer_theory_sharpness"
    values = _check_scales(scales, func)
    n_layers = int(model.cfg.n_layers)
    reused = None
    if reference is not None and 1.0 in values and n_bootstrap == 0:
        reused = _reference_rows(reference, model, tokens, sites, layers, predictions, mlp, func)
    frames = []
    for scale in values:
        logger.info("%s: scale %s", func, scale)
        if scale == 1.0 and reused is not None:
            frames.append(reused)
            continue
        hooks = [h for layer in range(n_layers) for h in query_scale_hooks(scale, layer=layer)]
        theory = layer_theory(
            model,
            tokens,
            sites=sites,
            layers=layers,
            predictions=predictions,
            mlp=mlp,
            n_bootstrap=n_bootstrap,
            seed=seed,
            batch_size=batch_size,
            fwd_hooks=hooks if scale != 1.0 else (),
        )
        frame = theory.fit.merge(theory.sharpness, on="layer").assign(scale=scale)
        frames.append(frame[list(STUDY_COLUMNS)])
    return pd.concat(frames, ignore_index=True)


def _reference_rows(
    reference: Any,
    model: Any,
    tokens: Any,
    sites: Any,
    layers: Any,
    predictions: Any,
    mlp: str,
    func: str,
) -> pd.DataFrame | None:
    """The rows of scale 1 read from ``reference``'s fit (None when they could differ).

    They are the rows :func:`layer_theory` would compute without a bootstrap: the point estimates
    come from the same per-sequence matrices, summed in the same order as long as every
    sequence is its own group in both calls (:class:`~nopelens.analyzer.theory_fit.GroupSums`).
    """
    from nopelens.models import describe_model

    if not isinstance(reference, LayerTheory):
        raise InvalidParameterError(
            f"The 'reference' parameter of {func} must be a LayerTheory (from layer_theory) or "
            f"None. Got {type(reference).__name__} instead."
        )
    plan = make_plan(model, tokens, sites, layers, predictions, mlp, 64, 0, 0.95, 0)
    settings = reference.settings
    mismatch = [
        name
        for name, same in (
            ("model", reference.model_label == describe_model(model)),
            ("tokens", (reference.n_sequences, reference.n_positions) == tuple(plan.tokens.shape)),
            ("mlp", settings.get("mlp") == plan.mlp),
            ("hooks", not settings.get("fwd_hooks")),
            ("sites", set(plan.sites) <= set(reference.sites)),
            ("layers", set(plan.layers) <= set(reference.layers)),
            ("predictions", set(plan.predictions) <= set(reference.predictions)),
        )
        if not same
    ]
    if mismatch:
        raise InvalidParameterError(
            f"The 'reference' parameter of {func} must be the layer_theory of the same model and "
            f"tokens without hooks, with the same mlp and at least the sites, layers and "
            f"predictions asked for; it differs in: {', '.join(mismatch)}."
        )
    full = make_plan(
        model,
        tokens,
        settings["sites"],
        settings["layers"],
        settings["predictions"],
        mlp,
        64,
        0,
        0.95,
        0,
    )
    n_seqs, n = plan.tokens.shape
    if GROUP_BUDGET // max(1, max(len(full.index), len(plan.index)) * n * n) < n_seqs:
        return None  # pooled groups: the sums would be added in another order
    keys = [(s, layer, p) for s in plan.sites for layer in plan.layers for p in plan.predictions]
    fit = reference.fit.set_index(["site", "layer", "prediction"]).loc[keys].reset_index()
    for column in fit.columns:
        if column.endswith(("_ci_low", "_ci_high")):
            fit[column] = float("nan")
    frame = fit.merge(reference.sharpness, on="layer").assign(scale=1.0)
    return frame[list(STUDY_COLUMNS)]


def _check_scales(scales: Any, func: str) -> tuple[float, ...]:
    items = (scales,) if isinstance(scales, (int, float)) else tuple(scales)
    if not items:
        raise InvalidParameterError(
            f"The 'scales' parameter of {func} must hold at least one score multiplier >= 0."
        )
    return tuple(check_float(s, "scales", func, min=0.0) for s in items)
