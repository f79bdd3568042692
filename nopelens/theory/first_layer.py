"""First-layer theory: predict the layer-0 neighborhood pattern and compare it with the model.

The paper this toolkit is built around (Zuo, Guerzhoy & Guerzhoy, COLING 2025) explains why the
first causal attention layer already makes nearby hidden states more cosine-similar than distant
ones. :func:`first_layer_theory` makes the explanation executable, next to what the model does:

1. one forward pass splits block 0 into its additive parts
   (:mod:`nopelens.theory.decomposition`, which states the setup and notation);
2. the Gram model's parameters are estimated from those parts and its expected Gram matrices are
   computed from the model's own attention patterns (:mod:`nopelens.theory.gram`, which states the
   assumptions and derives ``K^attn`` and ``K^resid``);
3. the uniform-attention limit gives closed forms for the similarity and the variance by position
   (:mod:`nopelens.theory.closed_forms`, which derives ``sqrt(min(i,j)/max(i,j))`` and ``1/i``);
4. both predictions are scored against the observed batch-mean matrices
   (:mod:`nopelens.theory.fit`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int

from nopelens.measure import position_variance, self_similarity
from nopelens.models import HookedModel
from nopelens.theory.attention import sharpness_summary
from nopelens.theory.closed_forms import (
    gram_to_cosine,
    uniform_attention_similarity,
    uniform_residual_similarity,
    uniform_variance,
)
from nopelens.theory.decomposition import FirstLayerDecomposition, _collect_block, check_model
from nopelens.theory.fit import METRIC_COLUMNS, fit_metrics, site_metric_rows
from nopelens.theory.gram import (
    GramParameters,
    center_hidden_dims,
    estimate_gram_parameters,
    predict_gram,
    same_token_matrix,
)
from nopelens.theory.propagation import initial_state, mlp_step
from nopelens.theory.weights import block_weights, unmodelled_reason
from nopelens.validation import InvalidParameterError

#: Sites that :func:`first_layer_theory` reports (``resid_post`` only when an MLP follows).
THEORY_SITES: tuple[str, ...] = ("attn_out", "resid_mid", "resid_post")
#: The two predictions compared with the observation.
PREDICTIONS: tuple[str, ...] = ("pattern", "closed_form")


def _fit_summary(metrics: dict[str, Any]) -> str:
    return (
        f"r={metrics['pearson_r']:.3f} rmse={metrics['rmse']:.3g} "
        f"max_error={metrics['max_error']:.3g}"
    )


@dataclasses.dataclass(frozen=True, repr=False)
class SiteTheory:
    """Observed and predicted batch-mean similarity matrices at one block-0 site (CPU float32).

    Attributes:
        site: ``"attn_out"``, ``"resid_mid"`` or ``"resid_post"``.
        hook: The TransformerLens hook the observation was read from.
        observed: Batch mean of the per-sequence cosine self-similarity ``[pos, pos]``.
        predicted: Pattern-based prediction (Gram model with the model's own attention patterns);
            for ``resid_post`` the ``resid_mid`` prediction carried through the MLP model of
            :mod:`nopelens.theory.mlp_kernel` (gain plus correlated noise), or the ``resid_mid``
            prediction itself when the MLP is of a kind that is not modelled (gated, SoLU).
        closed_form: Uniform-attention closed form (1-indexed positions; for ``resid_post`` the
            ``resid_mid`` form).
    """

    site: str
    hook: str
    observed: Float[torch.Tensor, "pos pos"]
    predicted: Float[torch.Tensor, "pos pos"]
    closed_form: Float[torch.Tensor, "pos pos"]

    def __repr__(self) -> str:
        """The site, its hook, the size and the fit of both predictions (off-diagonal)."""
        return (
            f"SiteTheory({self.site!r}, hook={self.hook!r}, pos={self.observed.shape[-1]}, "
            f"pattern: {_fit_summary(fit_metrics(self.observed, self.predicted))}, "
            f"closed_form: {_fit_summary(fit_metrics(self.observed, self.closed_form))})"
        )

    @property
    def difference(self) -> Float[torch.Tensor, "pos pos"]:
        """``observed - predicted``."""
        return self.observed - self.predicted


@dataclasses.dataclass(frozen=True, repr=False)
class FirstLayerTheory:
    """What the first-layer theory predicts next to what the model does.

    Returned by :func:`first_layer_theory`.

    Attributes:
        sites: Site name -> :class:`SiteTheory` (``attn_out``, ``resid_mid`` and, when an MLP
            follows, ``resid_post``); also reachable as ``theory["attn_out"]``.
        metrics: One row per (site, prediction) with columns :data:`METRIC_COLUMNS`: Pearson r,
            RMSE and max error over off-diagonal entries, and adjacency probability (AP) and
            neighborhood concordance (NC) of the observed and predicted batch-mean matrices.
        gram: Estimated Gram parameters, tidy ``[centering, parameter, head_index,
            head_index_other, value]`` (``centering="none"`` for the similarity prediction,
            ``"hidden_dims"`` for the variance prediction).
        parameters: The :class:`GramParameters` behind the similarity prediction.
        variance: Variance across hidden dimensions by position, tidy ``[site, pos, observed,
            predicted, closed_form]`` (batch means; ``closed_form`` is ``s^2 + a^2/i``).
        model_label: :func:`nopelens.models.describe_model` of the model.
        attention: ``"causal"`` or ``"bidirectional"`` (which closed form applies).
        n_sequences: Number of sequences averaged.
        n_positions: Sequence length.
        sharpness: :func:`nopelens.theory.sharpness_summary` of the block-0 patterns.
    """

    sites: dict[str, SiteTheory]
    metrics: pd.DataFrame
    gram: pd.DataFrame
    parameters: GramParameters
    variance: pd.DataFrame
    model_label: str
    attention: str
    n_sequences: int
    n_positions: int
    sharpness: dict[str, float]

    def __repr__(self) -> str:
        """The model, the sizes, the attention sharpness and each site's fit, in a few lines."""
        lines = [
            f"FirstLayerTheory(model={self.model_label!r}, attention={self.attention!r}, "
            f"n_sequences={self.n_sequences}, n_positions={self.n_positions},",
            f"  relative_entropy={self.sharpness.get('relative_entropy', float('nan')):.3f}, "
            f"max_attention={self.sharpness.get('max_attention', float('nan')):.3f},",
        ]
        width = max((len(site) for site in self.sites), default=0) + 1
        for site in self.sites:
            fits = [
                f"{row['prediction']} {_fit_summary(row)}"
                for row in self.metrics[self.metrics["site"] == site].to_dict("records")
            ]
            lines.append(f"  {site + ':':<{width}} " + " | ".join(fits))
        return "\n".join(lines) + ")"

    def __getitem__(self, site: str) -> SiteTheory:
        """The :class:`SiteTheory` of ``site``."""
        if site not in self.sites:
            raise KeyError(f"Site {site!r} is not in this theory; sites: {', '.join(self.sites)}.")
        return self.sites[site]

    @property
    def observed(self) -> dict[str, torch.Tensor]:
        """Site -> observed ``[pos, pos]`` matrix."""
        return {k: v.observed for k, v in self.sites.items()}

    @property
    def predicted(self) -> dict[str, torch.Tensor]:
        """Site -> pattern-based predicted ``[pos, pos]`` matrix."""
        return {k: v.predicted for k, v in self.sites.items()}

    @property
    def closed_form(self) -> dict[str, torch.Tensor]:
        """Site -> uniform-attention closed-form ``[pos, pos]`` matrix."""
        return {k: v.closed_form for k, v in self.sites.items()}

    def to_frame(self) -> pd.DataFrame:
        """All matrices in long form: ``[model, site, matrix, pos, pos_other, value]``.

        ``matrix`` is ``observed``, ``predicted`` or ``closed_form``; positions are 0-indexed.
        """
        n = self.n_positions
        grid_i, grid_j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        frames = []
        for site, st in self.sites.items():
            for kind in ("observed", "predicted", "closed_form"):
                frames.append(
                    pd.DataFrame(
                        {
                            "model": self.model_label,
                            "site": site,
                            "matrix": kind,
                            "pos": grid_i.ravel(),
                            "pos_other": grid_j.ravel(),
                            "value": getattr(st, kind).numpy().ravel().astype(np.float64),
                        }
                    )
                )
        return pd.concat(frames, ignore_index=True)


def first_layer_theory(
    model: HookedModel,
    tokens: Int[torch.Tensor, "batch pos"],
    *,
    batch_size: int | None = None,
    fwd_hooks: Sequence[Any] = (),
) -> FirstLayerTheory:
    """Predict block 0's self-similarity (and variance by position) and compare with the model.

    For ``attn_out``, ``resid_mid`` (``resid_post`` of attention-only models) and, when an MLP
    follows, ``resid_post``: the observed batch-mean cosine self-similarity, the prediction of the
    Gram model from the model's own attention patterns (``A G A^T``, plus the embedding Gram and
    cross terms for the residual stream), and the uniform-attention closed forms
    (:func:`uniform_attention_similarity`, :func:`uniform_residual_similarity` with ``s^2, a^2``
    estimated from the model). See :mod:`nopelens.theory.gram` and
    :mod:`nopelens.theory.closed_forms` for the derivation and assumptions: they hold best for
    random-init models fed sequences without repeated tokens
    (``random_tokens(..., distinct=True)``).

    Args:
        model: A TransformerLens ``HookedTransformer`` (causal or bidirectional, any positional
            type and normalisation, with or without MLP).
        tokens: Token ids ``[batch, pos]`` with ``pos >= 3``.
        batch_size: Sequences per forward pass (``None``: all at once).
        fwd_hooks: TransformerLens ``(name, fn)`` hooks active during the forward pass (e.g.
            scaling ``blocks.0.attn.hook_q``, see :func:`nopelens.theory.query_scale_hooks`).

    Returns:
        :class:`FirstLayerTheory`.

    Raises:
        ValueError: For a non-TransformerLens model, bad tokens, ``pos < 3`` or a bad
            ``batch_size``.

    Examples:
        >>> from nopelens import build_model, random_tokens
        >>> model = build_model(n_layers=1, d_model=32, n_heads=2, d_vocab=50, n_ctx=8)
        >>> theory = first_layer_theory(model, random_tokens(4, 8, 50, distinct=True))
        >>> list(theory.sites), theory["attn_out"].observed.shape
        (['attn_out', 'resid_mid', 'resid_post'], torch.Size([8, 8]))
        >>> list(theory.metrics.columns[:3])
        ['site', 'prediction', 'pearson_r']
    """
    from nopelens.models import describe_model

    func = "first_layer_theory"
    check_model(model, func)
    _check_length(tokens, func)
    parts = _collect_block(model, tokens, batch_size, fwd_hooks, func)
    direction = _attention_direction(model)
    batch, n = parts.tokens.shape
    with torch.no_grad():
        fit = _fit_gram_model(parts, model)
        closed = _closed_forms(n, direction, fit)
        results = [
            _site_result(site, hidden, hook, fit, closed)
            for site, (hidden, hook) in _observed_sites(parts).items()
        ]
    return FirstLayerTheory(
        sites={st.site: st for st, _, _ in results},
        metrics=pd.DataFrame(
            [row for _, rows, _ in results for row in rows], columns=list(METRIC_COLUMNS)
        ),
        gram=_gram_frame(fit),
        parameters=fit.params.cpu(),
        variance=pd.concat([frame for _, _, frame in results], ignore_index=True),
        model_label=describe_model(model),
        attention=direction,
        n_sequences=int(batch),
        n_positions=int(n),
        sharpness=sharpness_summary(parts.pattern, attention=direction),
    )


def _check_length(tokens: Any, func: str) -> None:
    if isinstance(tokens, torch.Tensor) and tokens.shape[-1] < 3:
        raise InvalidParameterError(
            f"The 'tokens' parameter of {func} must hold sequences of at least 3 tokens (the "
            f"fit metrics need off-diagonal pairs). Got shape {tuple(tokens.shape)} instead."
        )


def _attention_direction(model: HookedModel) -> Literal["causal", "bidirectional"]:
    """``model.cfg.attention_dir`` (``"causal"`` unless it is ``"bidirectional"``)."""
    direction = getattr(model.cfg, "attention_dir", "causal")
    return "bidirectional" if direction == "bidirectional" else "causal"


@dataclasses.dataclass(frozen=True)
class _GramFit:
    """The Gram model fitted twice: as is (similarity) and in centred hidden dims (variance)."""

    params: GramParameters
    grams: dict[str, torch.Tensor]
    centred_params: GramParameters
    centred_grams: dict[str, torch.Tensor]


def _raw_parameters(
    parts: FirstLayerDecomposition, same: torch.Tensor | None = None
) -> GramParameters:
    """The Gram model's parameters estimated from block 0's parts, as they are."""
    same = same_token_matrix(parts.tokens) if same is None else same
    return estimate_gram_parameters(
        parts.embed, parts.pos_embed, parts.values, parts.bias, parts.residual, same
    )


def _predicted_grams(
    parts: FirstLayerDecomposition, model: HookedModel, params: GramParameters, same: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-sequence predicted Grams of block 0's sites.

    When an MLP follows and :mod:`nopelens.theory.propagation` models it, the ``resid_mid`` Gram
    is carried through it (gain plus correlated noise) to predict ``resid_post`` as well.
    """
    grams = predict_gram(params, parts.pattern, same)
    if parts.resid_post is not None and unmodelled_reason(model) is None:
        mlp = block_weights(model, 0).mlp
        if mlp is not None:
            _, post = mlp_step(initial_state(grams["resid_mid"]), mlp)
            grams["resid_post"] = post.gram()
    return grams


def _fit_gram_model(parts: FirstLayerDecomposition, model: HookedModel) -> _GramFit:
    """Estimate the Gram parameters and predict the Gram matrices, raw and hidden-dim-centred."""
    same = same_token_matrix(parts.tokens)
    params = _raw_parameters(parts, same)
    centred = estimate_gram_parameters(
        center_hidden_dims(parts.embed),
        center_hidden_dims(parts.pos_embed),
        center_hidden_dims(parts.values),
        center_hidden_dims(parts.bias),
        center_hidden_dims(parts.residual),
        same,
    )
    return _GramFit(
        params=params,
        grams=_predicted_grams(parts, model, params, same),
        centred_params=centred,
        centred_grams=predict_gram(centred, parts.pattern, same),
    )


def _similarity_closed_forms(
    n: int, direction: Literal["causal", "bidirectional"], params: GramParameters
) -> dict[str, torch.Tensor]:
    """The uniform-attention similarity of ``attn_out`` and ``resid_mid`` (``s^2, a^2`` given)."""
    return {
        "attn_out": uniform_attention_similarity(n, attention=direction),
        "resid_mid": uniform_residual_similarity(n, params.s2, params.a2, attention=direction)
        if params.s2 + params.a2 > 0
        else uniform_attention_similarity(n, attention=direction),
    }


@dataclasses.dataclass(frozen=True)
class _ClosedForms:
    """The uniform-attention closed forms of ``attn_out`` and ``resid_mid``."""

    similarity: dict[str, torch.Tensor]
    variance: dict[str, torch.Tensor]


def _closed_forms(
    n: int, direction: Literal["causal", "bidirectional"], fit: _GramFit
) -> _ClosedForms:
    """Closed forms with ``s^2, a^2`` from the raw (similarity) and centred (variance) fits."""
    centred = fit.centred_params
    return _ClosedForms(
        similarity=_similarity_closed_forms(n, direction, fit.params),
        variance={
            "attn_out": uniform_variance(n, 0.0, centred.a2, attention=direction),
            "resid_mid": uniform_variance(n, centred.s2, centred.a2, attention=direction),
        },
    )


def _observed_sites(parts: FirstLayerDecomposition) -> dict[str, tuple[torch.Tensor, str]]:
    """Site -> (hidden states, hook name) for every site the theory reports."""
    from nopelens.measure import hook_name

    sites = {
        "attn_out": (parts.attn_out, hook_name("attn_out", 0)),
        "resid_mid": (parts.resid_mid, parts.resid_mid_hook),
    }
    if parts.resid_post is not None:
        sites["resid_post"] = (parts.resid_post, hook_name("resid_post", 0))
    return sites


def _site_result(
    site: str,
    hidden: Float[torch.Tensor, "batch pos d_model"],
    hook: str,
    fit: _GramFit,
    closed: _ClosedForms,
) -> tuple[SiteTheory, list[dict[str, Any]], pd.DataFrame]:
    """One site's matrices, metrics rows and variance frame.

    ``resid_post`` is predicted through the MLP model when the block is modelled
    (:func:`nopelens.theory.propagation.mlp_step`), else by the ``resid_mid`` prediction; its
    closed form and variance are those of ``resid_mid``.
    """
    model_site = "attn_out" if site == "attn_out" else "resid_mid"
    observed = self_similarity(hidden.float()).mean(0).cpu()
    predicted = gram_to_cosine(fit.grams.get(site, fit.grams[model_site])).mean(0).float().cpu()
    st = SiteTheory(site, hook, observed, predicted, closed.similarity[model_site].clone())
    rows = site_metric_rows(site, observed, {"pattern": predicted, "closed_form": st.closed_form})
    n, d_model = hidden.shape[-2], hidden.shape[-1]
    variance = pd.DataFrame(
        {
            "site": site,
            "pos": np.arange(n),
            "observed": position_variance(hidden.float()).double().mean(0).cpu().numpy(),
            "predicted": (
                fit.centred_grams[model_site].diagonal(dim1=-2, dim2=-1).mean(0) / d_model
            )
            .cpu()
            .numpy(),
            "closed_form": closed.variance[model_site].double().numpy(),
        }
    )
    return st, rows, variance


def _gram_frame(fit: _GramFit) -> pd.DataFrame:
    """Both parameter sets, tidy, with a ``centering`` column (``none`` / ``hidden_dims``)."""
    return pd.concat(
        [
            fit.params.to_frame().assign(centering="none"),
            fit.centred_params.to_frame().assign(centering="hidden_dims"),
        ],
        ignore_index=True,
    )[["centering", "parameter", "head_index", "head_index_other", "value"]]


def first_layer_gram(
    model: HookedModel,
    tokens: Int[torch.Tensor, "batch pos"],
    *,
    batch_size: int | None = None,
    fwd_hooks: Sequence[Any] = (),
) -> dict[str, Float[torch.Tensor, "batch pos pos"]]:
    """The first-layer theory's predicted Gram matrix of every sequence, per block-0 site.

    The same prediction as :func:`first_layer_theory` (parameters estimated from all sequences,
    each sequence's own attention patterns and repeated tokens), before the batch mean: the
    input of :func:`nopelens.analyzer.layer_theory`, which holds block 0's prediction against every
    layer.

    Returns:
        ``{"attn_out": ..., "resid_mid": ..., "resid_post": ...}`` float64 ``[batch, pos, pos]``
        (``resid_post`` only when an MLP follows; it is the ``resid_mid`` Gram when that MLP is
        not modelled).

    Examples:
        >>> from nopelens import build_model, random_tokens
        >>> model = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=6)
        >>> grams = first_layer_gram(model, random_tokens(3, 6, 20, distinct=True))
        >>> sorted(grams), grams["attn_out"].shape
        (['attn_out', 'resid_mid', 'resid_post'], torch.Size([3, 6, 6]))
    """
    func = "first_layer_gram"
    check_model(model, func)
    _check_length(tokens, func)
    parts = _collect_block(model, tokens, batch_size, fwd_hooks, func)
    with torch.no_grad():
        same = same_token_matrix(parts.tokens)
        grams = _predicted_grams(parts, model, _raw_parameters(parts, same), same)
    if parts.resid_post is not None:
        grams.setdefault("resid_post", grams["resid_mid"])
    return grams


def first_layer_closed_form(
    model: HookedModel,
    tokens: Int[torch.Tensor, "batch pos"],
    *,
    batch_size: int | None = None,
    fwd_hooks: Sequence[Any] = (),
) -> dict[str, Float[torch.Tensor, "pos pos"]]:
    """The uniform-attention closed forms of block 0's similarity, per site.

    What ``first_layer_theory(...).closed_form`` holds (``s^2, a^2`` estimated from the same
    forward pass), without the pattern-based predictions and their scoring:
    :func:`nopelens.analyzer.layer_theory` needs only these.

    Returns:
        ``{"attn_out": ..., "resid_mid": ..., "resid_post": ...}`` ``[pos, pos]`` (``resid_post``
        only when an MLP follows; it is the ``resid_mid`` closed form).

    Examples:
        >>> from nopelens import build_model, random_tokens
        >>> model = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=6)
        >>> tokens = random_tokens(3, 6, 20, distinct=True)
        >>> closed = first_layer_closed_form(model, tokens)
        >>> all(torch.equal(closed[s], first_layer_theory(model, tokens)[s].closed_form)
        ...     for s in closed)
        True
    """
    func = "first_layer_closed_form"
    check_model(model, func)
    _check_length(tokens, func)
    parts = _collect_block(model, tokens, batch_size, fwd_hooks, func)
    with torch.no_grad():
        closed = _similarity_closed_forms(
            parts.tokens.shape[1], _attention_direction(model), _raw_parameters(parts)
        )
    return {
        site: closed["attn_out" if site == "attn_out" else "resid_mid"].clone()
        for site in _observed_sites(parts)
    }
