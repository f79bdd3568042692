"""Sharpness study: how well each prediction describes block 0 as its attention sharpens.

:func:`query_scale_hooks` multiplies every attention score of block 0 by ``scale`` (after any
ALiBi bias, so for every positional type): ``0`` gives exactly uniform attention, where the
closed forms of :mod:`nopelens.theory.closed_forms` hold, and large values sharpen the patterns,
where only the pattern-based prediction of :mod:`nopelens.theory.gram` keeps tracking the model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Int

from nopelens.models import HookedModel
from nopelens.theory.decomposition import check_model
from nopelens.theory.first_layer import first_layer_theory
from nopelens.validation import InvalidParameterError, check_float, check_int

logger = logging.getLogger(__name__)

#: Default attention-score multipliers of :func:`attention_sharpness_study`.
DEFAULT_SCALES: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)

_STUDY_DEFAULTS: dict[str, Any] = {
    "n_layers": 1,
    "d_model": 64,
    "n_heads": 4,
    "d_vocab": 256,
    "n_ctx": 32,
}


def query_scale_hooks(scale: float, *, layer: int = 0) -> list[tuple[str, Any]]:
    """Forward hooks multiplying every attention score of block ``layer`` by ``scale``.

    The hook sits on ``blocks.{layer}.attn.hook_attn_scores``, after TransformerLens has added
    the ALiBi bias (if any) and applied the causal mask: every finite score is multiplied by
    ``scale`` and masked keys (``-inf``) stay masked. For NoPE, learned and rotary models the
    scores are ``q.k / sqrt(d_head)`` and this equals multiplying ``W_Q`` and ``b_Q`` by
    ``scale``; for ALiBi models the score is ``q.k / sqrt(d_head) + m_h (j - i)`` and the bias is
    scaled too (scaling only the queries left ALiBi patterns up to 0.16 from uniform at scale 0).
    So ``scale = 0`` gives exactly uniform attention over the allowed keys (``1/i`` causal,
    ``1/n`` bidirectional) for every positional type, and large values sharpen it.

    Args:
        scale: Score multiplier, ``>= 0``.
        layer: Block index.

    Returns:
        ``[(hook name, hook function)]`` for ``fwd_hooks``.

    Raises:
        ValueError: For a negative or non-finite ``scale`` or a negative ``layer``.

    Examples:
        >>> query_scale_hooks(2.0)[0][0]
        'blocks.0.attn.hook_attn_scores'
    """
    from nopelens.measure import hook_name

    scale = check_float(scale, "scale", "query_scale_hooks", min=0.0)
    check_int(layer, "layer", "query_scale_hooks", min=0)

    def hook(scores: torch.Tensor, hook: Any) -> torch.Tensor:
        return torch.where(torch.isfinite(scores), scores * scale, scores)

    return [(hook_name("attn_scores", layer), hook)]


def attention_sharpness_study(
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    model: HookedModel | None = None,
    tokens: Int[torch.Tensor, "batch pos"] | None = None,
    batch: int = 32,
    pos: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    **build_kwargs: Any,
) -> pd.DataFrame:
    """How well each prediction describes block 0 as its attention sharpens.

    For each ``scale`` the block-0 attention scores are multiplied by ``scale``
    (:func:`query_scale_hooks`: ``W_Q`` and ``b_Q`` times ``scale``, and the ALiBi bias too) and
    :func:`nopelens.theory.first_layer_theory` is run. At ``scale = 0`` attention is exactly
    uniform and both the closed form and the pattern prediction describe the model; as attention
    sharpens the closed form stops describing it while the pattern-based prediction (which uses
    the actual patterns) keeps tracking it.

    Args:
        scales: Attention-score multipliers (``>= 0``).
        model: The model to study; default a random-init NoPE model built with
            ``build_model(n_layers=1, d_model=64, n_heads=4, d_vocab=256, n_ctx=32, seed=seed,
            **build_kwargs)``.
        tokens: Token ids; default ``random_tokens(batch, pos, d_vocab, seed=seed,
            distinct=d_vocab >= pos)``.
        batch: Number of random sequences when ``tokens`` is None.
        pos: Their length (default ``min(32, n_ctx)``).
        seed: Seed of the default model and tokens.
        batch_size: Sequences per forward pass.
        **build_kwargs: Overrides of the default model's ``build_model`` arguments (only without
            ``model``).

    Returns:
        Tidy frame, one row per (scale, site, prediction): ``scale``, ``attention_entropy``,
        ``relative_entropy``, ``max_attention``, then the columns of
        :attr:`nopelens.theory.FirstLayerTheory.metrics`.

    Raises:
        ValueError: For negative or no scales, both ``model`` and ``build_kwargs``, or bad sizes.

    Examples:
        >>> frame = attention_sharpness_study(scales=(0.0, 8.0), batch=2, pos=6, d_model=16)
        >>> sorted(frame["scale"].unique().tolist())
        [0.0, 8.0]
    """
    func = "attention_sharpness_study"
    scales = _check_scales(scales, func)
    check_int(batch, "batch", func, min=1)
    check_int(seed, "seed", func, min=0)
    model = _study_model(model, seed, build_kwargs, func)
    if tokens is None:
        tokens = _study_tokens(model, batch, pos, seed, func)
    frames = []
    for scale in scales:
        logger.info("sharpness study: scale %s", scale)
        theory = first_layer_theory(
            model, tokens, batch_size=batch_size, fwd_hooks=query_scale_hooks(scale)
        )
        frame = theory.metrics.copy()
        frame.insert(0, "max_attention", theory.sharpness["max_attention"])
        frame.insert(0, "relative_entropy", theory.sharpness["relative_entropy"])
        frame.insert(0, "attention_entropy", theory.sharpness["attention_entropy"])
        frame.insert(0, "scale", scale)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _check_scales(scales: Any, func: str) -> tuple[float, ...]:
    """One scale or a sequence of them, as a non-empty tuple of floats ``>= 0``."""
    if isinstance(scales, (int, float)):
        scales = (scales,)
    try:
        scales = tuple(scales)
    except TypeError:
        scales = (scales,)
    if not scales:
        raise InvalidParameterError(
            f"The 'scales' parameter of {func} must hold at least one scale >= 0."
        )
    return tuple(check_float(s, "scales", func, min=0.0) for s in scales)


def _study_model(
    model: HookedModel | None, seed: int, build_kwargs: dict[str, Any], func: str
) -> HookedModel:
    """The given model, or the default random-init NoPE model with ``build_kwargs`` applied."""
    from nopelens.models import build_model

    if model is None:
        model = build_model(**{**_STUDY_DEFAULTS, "seed": seed, **build_kwargs})
    elif build_kwargs:
        raise InvalidParameterError(
            f"{func} got build_model arguments {', '.join(sorted(build_kwargs))} together with "
            f"'model'; pass one or the other."
        )
    check_model(model, func)
    return model


def _study_tokens(
    model: HookedModel, batch: int, pos: int | None, seed: int, func: str
) -> Int[torch.Tensor, "batch pos"]:
    """``batch`` random sequences of ``pos`` tokens, distinct when the vocabulary allows it."""
    from nopelens.measure import random_tokens

    n_ctx, d_vocab = model.cfg.n_ctx, model.cfg.d_vocab
    pos = min(32, n_ctx) if pos is None else check_int(pos, "pos", func, min=3, max=n_ctx)
    return random_tokens(batch, pos, d_vocab, seed=seed, distinct=d_vocab >= pos)
