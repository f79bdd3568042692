# ruff: noqa: F722 (jaxtyping shape strings are not Python expressions)
"""The neighborhood analyzer: per-layer self-similarity and neighborhood scores of a model.

:func:`analyze` runs a TransformerLens model over a token batch, reads the requested hook sites of
every block plus the input embedding (``hook_embed``, layer ``"embed"``), and measures the
neighborhood pattern of :mod:`~nopelens.measure` in each layer: the batch-mean self-similarity
matrix, the adjacency probability (AP) and neighborhood concordance (NC) of every sequence with a
confidence interval over sequences (studentized bootstrap by default, coverage measured in
``benchmarks/bench_coverage.py``, see :mod:`nopelens.measure.intervals`), their chance levels (exact
under the within-sequence permutation null, see :mod:`nopelens.measure.chance`), and the distance
profile.

Activations are streamed batch by batch (:func:`~nopelens.measure.iter_activations`): only the
running sum of the similarity matrices (``layers x pos^2``) and the per-sequence scores are kept,
so memory does not grow with the number of sequences. Everything runs on the model's device.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int

from nopelens.measure import chance as chance_levels, concordance, intervals, similarity
from nopelens.measure.activations import (
    GLOBAL_SITES,
    check_layers,
    check_sites,
    check_tokens,
    iter_activations,
)
from nopelens.memory import analysis_bytes, check_fits
from nopelens.models import HookedModel, describe_model, model_spec, nope_layers as find_nope
from nopelens.spec import METRICS, SCORE_COLUMNS
from nopelens.validation import InvalidParameterError, check_choice, check_float, check_int

logger = logging.getLogger(__name__)

#: Sites whose activations are attention patterns, not hidden states.
_NOT_HIDDEN = ("pattern", "attn_scores")


@dataclasses.dataclass(frozen=True)
class AnalysisReport:
    """What :func:`analyze` measured.

    Attributes:
        matrices: Site -> batch-mean cosine self-similarity ``[layer, pos, pos]`` (float32, CPU),
            one matrix per entry of ``layer_labels``.
        layer_labels: ``("embed", "0", "1", ...)``: the input embedding (``hook_embed``, the same
            for every site) and then the analysed blocks.
        scores: Tidy frame, one row per (site, layer, metric), columns
            :data:`nopelens.spec.SCORE_COLUMNS`: ``nope`` is True for the blocks in
            :attr:`nope_layers` (and for ``"embed"`` only when every block is NoPE); ``value``
            is the mean over sequences of the per-sequence score; ``chance`` its exact
            expectation when the positions of every analysed sequence are shuffled (the
            within-sequence permutation null, ties included: ``2/seq_len`` for AP, 0.5 for NC;
            proofs in :mod:`nopelens.measure.chance`); ``ci_low`` / ``ci_high`` a confidence
            interval of the mean over sequences, computed by ``ci_method`` (``"studentized"``
            bootstrap by default; NaN and ``"none"`` when ``n_bootstrap=0`` or with a single
            sequence); ``n_seqs`` the number of sequences and ``seq_len`` the number of positions
            analysed (one less than the token length with ``exclude_first``).
        profiles: Tidy frame ``[site, layer, distance, value]``: the mean similarity at each
            distance ``|i-j|`` of the batch-mean matrix (equal to the mean of per-sequence
            profiles).
        per_sequence: Tidy frame ``[site, layer, metric, seq, value]`` with every sequence's
            score (``seq`` indexes the rows of ``tokens``), for custom statistics.
        model_label: :func:`nopelens.models.build.describe_model` of the model.
        spec: :func:`nopelens.models.build.model_spec` of the model (JSON-able).
        settings: The analysis options (sites, layers, centered, exclude_first, n_bootstrap,
            confidence, ci_method, seed, batch_size), JSON-able.
        theory: The layer-wise theory (``analyze(..., theory=True)``) or None.
        nope_layers: The model's blocks without a positional encoding of their own
            (:func:`nopelens.models.nope_layers`: every block of a NoPE model, the stripped
            blocks of a hybrid rotary model, none otherwise), analysed or not.
    """

    matrices: dict[str, torch.Tensor]
    layer_labels: tuple[str, ...]
    scores: pd.DataFrame
    profiles: pd.DataFrame
    per_sequence: pd.DataFrame
    model_label: str
    spec: dict[str, Any]
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    theory: Any = None
    nope_layers: tuple[int, ...] = ()

    def to_frame(self) -> pd.DataFrame:
        """The scores table (a copy of :attr:`scores`)."""
        return self.scores.copy()

    def __repr__(self) -> str:
        sites = ", ".join(self.matrices)
        n = int(self.scores["n_seqs"].iloc[0]) if len(self.scores) else 0
        pos = int(self.scores["seq_len"].iloc[0]) if len(self.scores) else 0
        return (
            f"AnalysisReport({self.model_label!r}, sites=[{sites}], "
            f"layers={list(self.layer_labels)}, {n} sequences x {pos} positions)"
        )


def _check_bool(value: Any, name: str, func: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidParameterError(
            f"The {name!r} parameter of {func} must be a bool. Got {value!r} instead."
        )
    return value


def _hidden(tensor: torch.Tensor, site: str) -> torch.Tensor:
    """``[layer, batch, pos, ...]`` -> ``[layer, batch, pos, features]`` (heads flattened)."""
    if tensor.ndim == 5:  # q, k, v, z: [layer batch pos head_index d_head]
        return tensor.flatten(-2)
    if tensor.ndim != 4:
        raise InvalidParameterError(
            f"Site {site!r} gives activations of shape {tuple(tensor.shape[1:])}, not hidden "
            f"states [batch pos d_model]."
        )
    return tensor


def _layer(
    hidden: torch.Tensor, centered: bool, pos: int, total: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer of one batch: the sum of its similarity matrices, per-sequence AP and NC."""
    sim = similarity.self_similarity(hidden.float(), centered)  # [batch, pos, pos]
    hits, counts = concordance.neighborhood_counts(sim)  # one pass over the matrices
    ap = hits.mean(dim=-1)
    nc = counts.sum(dim=-1).double() / (2 * total)
    return sim.sum(dim=0).double(), ap.double().cpu(), nc.cpu()


def analyze(
    model: HookedModel,
    tokens: Int[torch.Tensor, "*batch pos"],
    *,
    sites: Sequence[str] | str = ("resid_post",),
    layers: Sequence[int] | int | None = None,
    centered: bool = False,
    exclude_first: bool = False,
    batch_size: int = 64,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    ci_method: str = "studentized",
    seed: int = 0,
    fwd_hooks: Sequence[Any] = (),
    theory: bool = False,
) -> AnalysisReport:
    """Measure the neighborhood pattern at every layer of ``model`` on ``tokens``.

    For each site and each layer (``"embed"`` = ``hook_embed``, then blocks ``0..L-1``) and each
    sequence, the cosine self-similarity matrix ``S`` of the hidden states is computed
    (:func:`nopelens.measure.similarity.self_similarity`) and scored with the adjacency probability
    ``AP = mean_i [ |argmax_{j!=i} S_ij - i| = 1 ]`` (ties split evenly, chance ``2/n``) and the
    neighborhood concordance ``NC = P(S_ij > S_ik | |i-j| < |i-k|)`` (ties 1/2, chance 0.5); both
    chance levels are exact expectations when the positions of the analysed sequences are
    shuffled (:mod:`nopelens.measure.chance`). A layer's value is the mean of its per-sequence
    scores, with a confidence interval over sequences by ``ci_method``
    (:func:`nopelens.measure.intervals.mean_interval`; the default studentized bootstrap covers
    the truth 94-96% of the time at nominal 95% from 8 to 64 sequences of random-init scores,
    where the percentile bootstrap covered 88-95%) from ``n_bootstrap`` resamples of the
    sequences (drawn from a private generator seeded with ``seed``, shared by all rows). The
    batch-mean matrices and their distance profiles are returned too. Per-sequence scores are
    exact and do not depend on ``batch_size``.

    Activations at ``q``/``k``/``v``/``z`` have their heads concatenated (``head_index d_head``
    flattened); attention patterns (``pattern``, ``attn_scores``) are not hidden states and are
    refused.

    Args:
        model: A TransformerLens model (``HookedTransformer``; any model with ``run_with_cache``
            and TransformerLens hook names).
        tokens: Token ids ``[batch, pos]`` (a 1-D tensor is one sequence); ``pos >= 3``
            (``>= 4`` with ``exclude_first``).
        sites: Block hook sites (see ``measure.activations.SITES``), e.g. ``"resid_post"``,
            ``"resid_mid"``, ``"attn_out"``, or raw suffixes such as ``"ln1.hook_normalized"``.
        layers: Block indices to analyse; ``None`` means all. ``"embed"`` is always included.
        centered: Subtract each sequence's mean hidden state before taking cosines.
        exclude_first: Drop position 0 (a BOS / attention-sink position) before computing.
        batch_size: Sequences per forward pass.
        n_bootstrap: Bootstrap resamples for the confidence interval (0: no interval, NaN).
        confidence: Confidence level of the interval, in ``(0, 1)``.
        ci_method: ``"studentized"``, ``"percentile"``, ``"bca"`` or ``"t"`` (see
            :mod:`nopelens.measure.intervals`); recorded in the ``ci_method`` column.
        seed: Seed of the bootstrap generator.
        fwd_hooks: TransformerLens ``(name_or_filter, fn)`` hooks active during the forward
            passes (ablations, e.g. from :mod:`nopelens.measure.ablation`).
        theory: Also set every layer beside the attention-pattern theory
            (:func:`nopelens.analyzer.layer_theory`: the first-layer theory held against each
            layer, one-step, propagated and Kim et al.'s closed form, with fit metrics and CIs)
            and attach it as ``report.theory``. Off by default: it costs extra forward passes.

    Returns:
        An :class:`AnalysisReport`.

    Raises:
        ValueError: For invalid tokens, sites, layers or options, with the argument named.

    Examples:
        >>> from nopelens import build_model, random_tokens
        >>> model = build_model(n_layers=1, d_model=32, n_heads=4, d_vocab=50, n_ctx=16)
        >>> report = analyze(model, random_tokens(8, 12, 50), n_bootstrap=100)
        >>> report.layer_labels, report.matrices["resid_post"].shape
        (('embed', '0'), torch.Size([2, 12, 12]))
        >>> list(report.scores.columns)  # doctest: +NORMALIZE_WHITESPACE
        ['site', 'layer', 'nope', 'metric', 'value', 'chance', 'ci_low', 'ci_high', 'ci_method',
         'n_seqs', 'seq_len']
        >>> report.nope_layers, bool(report.scores["nope"].all())  # NoPE: every layer
        ((0,), True)
    """
    _check_bool(theory, "theory", "analyze")
    tokens, layers, sites = _check_arguments(
        model,
        tokens,
        sites,
        layers,
        centered,
        exclude_first,
        batch_size,
        n_bootstrap,
        confidence,
        ci_method,
        seed,
    )
    n_seqs, token_len = tokens.shape
    pos = token_len - int(exclude_first)
    labels = ("embed", *(str(layer) for layer in layers))
    sums, per_seq = _stream_scores(
        model, tokens, sites, layers, pos, centered, exclude_first, batch_size, fwd_hooks
    )
    matrices = {site: (sums[site] / n_seqs).float().cpu() for site in sites}
    interval = _IntervalOptions(n_bootstrap, confidence, ci_method, seed)
    nope = tuple(find_nope(model))
    all_nope = set(nope) == set(range(model.cfg.n_layers))
    nope_flags = [all_nope, *(layer in nope for layer in layers)]
    scores, per_sequence = _score_frames(per_seq, sites, labels, nope_flags, pos, interval)
    settings = {
        "sites": list(sites),
        "layers": list(layers),
        "centered": centered,
        "exclude_first": exclude_first,
        "n_bootstrap": n_bootstrap,
        "confidence": confidence,
        "ci_method": ci_method,
        "seed": seed,
        "batch_size": batch_size,
        "n_seqs": n_seqs,
        "seq_len": pos,
    }
    return AnalysisReport(
        matrices=matrices,
        layer_labels=labels,
        scores=scores,
        profiles=_profile_frame(matrices, labels, pos),
        per_sequence=per_sequence,
        model_label=describe_model(model),
        spec=model_spec(model),
        settings=settings,
        theory=_layer_theory(
            model, tokens, sites, layers, batch_size, n_bootstrap, confidence, seed, fwd_hooks
        )
        if theory
        else None,
        nope_layers=nope,
    )


def _layer_theory(
    model: HookedModel,
    tokens: torch.Tensor,
    sites: Sequence[str],
    layers: Sequence[int],
    batch_size: int,
    n_bootstrap: int,
    confidence: float,
    seed: int,
    fwd_hooks: Sequence[Any],
) -> Any:
    """The layer-wise theory for the theory-covered sites among ``sites``."""
    from nopelens.analyzer.theory_by_layer import LAYER_THEORY_SITES, layer_theory

    covered = [s for s in sites if s in LAYER_THEORY_SITES] or None
    return layer_theory(
        model,
        tokens,
        sites=covered,
        layers=list(layers),
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        seed=seed,
        batch_size=batch_size,
        fwd_hooks=fwd_hooks,
    )


def _check_arguments(
    model: HookedModel,
    tokens: Any,
    sites: Any,
    layers: Any,
    centered: Any,
    exclude_first: Any,
    batch_size: Any,
    n_bootstrap: Any,
    confidence: Any,
    ci_method: Any,
    seed: Any,
) -> tuple[torch.Tensor, tuple[int, ...], tuple[str, ...]]:
    """Validate every argument of :func:`analyze` before any work; return the canonical forms."""
    func = "analyze"
    tokens = check_tokens(model, tokens, func=func)
    layers = check_layers(model, layers, func=func)
    if isinstance(sites, str):
        sites = (sites,)
    sites = check_sites(model, sites, layers, func=func)
    for site in sites:
        if site in GLOBAL_SITES:
            raise InvalidParameterError(
                f"The 'sites' parameter of {func} must name block sites; the input embedding is "
                f"always analysed as layer 'embed'. Got {site!r} instead."
            )
        if any(site == s or site.endswith("hook_" + s) for s in _NOT_HIDDEN):
            raise InvalidParameterError(
                f"The 'sites' parameter of {func} must name hidden-state sites; {site!r} holds "
                f"attention patterns [batch head_index query_pos key_pos]."
            )
    _check_bool(centered, "centered", func)
    _check_bool(exclude_first, "exclude_first", func)
    check_int(batch_size, "batch_size", func, min=1)
    check_int(n_bootstrap, "n_bootstrap", func, min=0)
    check_float(confidence, "confidence", func, min=0.0, max=1.0, min_inclusive=False)
    if confidence >= 1.0:
        raise InvalidParameterError(
            f"The 'confidence' parameter of {func} must be a finite float > 0.0 and < 1.0. "
            f"Got {confidence!r} instead."
        )
    check_choice(ci_method, "ci_method", intervals.CI_METHODS, func)
    check_int(seed, "seed", func, min=0)
    token_len = tokens.shape[-1]
    if token_len - int(exclude_first) < 3:
        need = 4 if exclude_first else 3
        raise InvalidParameterError(
            f"The 'tokens' parameter of {func} must have at least {need} positions"
            f"{' with exclude_first=True' if exclude_first else ''} (the scores need pos >= 3). "
            f"Got pos={token_len} instead."
        )
    return tokens, layers, tuple(sites)


def _stream_scores(
    model: HookedModel,
    tokens: torch.Tensor,
    sites: Sequence[str],
    layers: Sequence[int],
    pos: int,
    centered: bool,
    exclude_first: bool,
    batch_size: int,
    fwd_hooks: Sequence[Any],
) -> tuple[dict[str, torch.Tensor], dict[tuple[str, str], np.ndarray]]:
    """Stream the activations batch by batch; sum the matrices and keep per-sequence scores.

    Returns the per-site sums of similarity matrices ``[layer, pos, pos]`` and, for every
    ``(site, metric)``, the per-sequence scores ``[layer, n_seqs]``.
    """
    cfg = model.cfg
    sizes = {
        "n_layers": len(layers),
        "d_model": cfg.d_model,
        "n_heads": cfg.n_heads,
        "d_head": cfg.d_head,
        "d_mlp": cfg.d_mlp,
        "d_vocab": cfg.d_vocab,
        "attn_only": cfg.attn_only,
        "seq_len": pos,
        "n_seqs": int(tokens.shape[0]),
        "sites": list(sites),
    }
    check_fits(
        analysis_bytes(sizes, batch_size=batch_size, include_model=False),
        what="the activations and similarity matrices",
        func="analyze",
        hint="Use fewer sequences, shorter sequences, fewer sites or layers, or a smaller "
        "batch_size.",
    )
    n_layers = 1 + len(layers)
    total = int(concordance.concordance_triples(pos).sum())
    sums = {
        site: torch.zeros(n_layers, pos, pos, dtype=torch.float64, device=tokens.device)
        for site in sites
    }
    ap_parts: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    nc_parts: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    start = 1 if exclude_first else 0
    seen = 0
    stream = iter_activations(
        model,
        tokens,
        sites=("embed", *sites),
        layers=layers,
        batch_size=batch_size,
        fwd_hooks=fwd_hooks,
    )
    for acts in stream:
        # One layer at a time: the peak holds one [batch, pos, pos] stack, not one per layer.
        embed = acts["embed"][0, :, start:]
        embed_sum, embed_ap, embed_nc = _layer(embed, centered, pos, total)
        for site in sites:
            hidden = _hidden(acts[site], site)
            sums[site][0] += embed_sum
            aps, ncs = [embed_ap], [embed_nc]
            for li in range(hidden.shape[0]):
                layer_sum, ap, nc = _layer(hidden[li, :, start:], centered, pos, total)
                sums[site][li + 1] += layer_sum
                aps.append(ap)
                ncs.append(nc)
            ap_parts[site].append(torch.stack(aps))
            nc_parts[site].append(torch.stack(ncs))
        seen += embed.shape[0]
        logger.debug("analyze: %d/%d sequences", seen, tokens.shape[0])
    per_seq = {
        (site, metric): torch.cat(parts[site], dim=1).numpy()  # [layer, n_seqs]
        for site in sites
        for metric, parts in zip(METRICS, (ap_parts, nc_parts), strict=True)
    }
    return sums, per_seq


@dataclasses.dataclass(frozen=True)
class _IntervalOptions:
    """How :func:`analyze` computes its confidence intervals."""

    n_bootstrap: int
    confidence: float
    method: str
    seed: int


def _score_frames(
    per_seq: dict[tuple[str, str], np.ndarray],
    sites: Sequence[str],
    labels: Sequence[str],
    nope: Sequence[bool],
    pos: int,
    interval: _IntervalOptions,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scores table (means, chance, intervals) and the per-sequence table."""
    keys = list(per_seq)
    stacked = np.concatenate([per_seq[k] for k in keys])  # [(site, metric, layer), n_seqs]
    n_seqs = stacked.shape[1]
    if interval.n_bootstrap == 0 or n_seqs < 2:
        low = high = np.full(stacked.shape[0], np.nan)
        method: str = "none"
    else:  # one call: every row shares the resamples (a paired bootstrap)
        low, high = intervals.mean_interval(
            stacked,
            method=interval.method,
            n_resamples=interval.n_bootstrap,
            confidence=interval.confidence,
            seed=interval.seed,
            bounds=(0.0, 1.0),
        )
        method = interval.method
    n_labels = len(labels)
    chances = [chance_levels.chance_level(metric, pos) for _, metric in keys]
    rows = []
    # Rows in report order (sites as given, layers in model order, metrics as in METRICS), so
    # no sort is needed; ``index`` is the row block of (site, metric) in ``stacked``.
    block = {key: index for index, key in enumerate(keys)}
    for site in sites:
        for li, label in enumerate(labels):
            for metric in METRICS:
                index = block.get((site, metric))
                if index is None:
                    continue
                row = index * n_labels + li
                mean = float(per_seq[(site, metric)][li].mean())
                ci = (float(low[row]), float(high[row]))
                rows.append(
                    (
                        site,
                        label,
                        bool(nope[li]),
                        metric,
                        mean,
                        chances[index],
                        *ci,
                        method,
                        n_seqs,
                        pos,
                    )
                )
    scores = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    # The per-sequence table: (site, metric) blocks, each layer's sequences in order.
    site_col = np.repeat(np.array([site for site, _ in keys], dtype=object), n_labels * n_seqs)
    metric_col = np.repeat(
        np.array([metric for _, metric in keys], dtype=object), n_labels * n_seqs
    )
    layer_col = np.tile(np.repeat(np.array(list(labels), dtype=object), n_seqs), len(keys))
    per_sequence = pd.DataFrame(
        {
            "site": site_col,
            "layer": layer_col,
            "metric": metric_col,
            "seq": np.tile(np.arange(n_seqs), len(keys) * n_labels),
            "value": stacked.reshape(-1),
        }
    )
    return scores, per_sequence


def _profile_frame(
    matrices: dict[str, torch.Tensor], labels: Sequence[str], pos: int
) -> pd.DataFrame:
    """The distance profile of every batch-mean matrix, as a tidy frame."""
    sites = list(matrices)
    profiles = [similarity.distance_profile(mats.double()).numpy() for mats in matrices.values()]
    n_labels = len(labels)
    return pd.DataFrame(
        {
            "site": np.repeat(np.array(sites, dtype=object), n_labels * pos),
            "layer": np.tile(np.repeat(np.array(list(labels), dtype=object), pos), len(sites)),
            "distance": np.tile(np.arange(pos), len(sites) * n_labels),
            "value": np.concatenate([prof.reshape(-1) for prof in profiles]),
        }
    )
