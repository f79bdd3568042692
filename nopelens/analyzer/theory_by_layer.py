# ruff: noqa: F722 (jaxtyping shape strings are not Python expressions)
"""The theory at every layer: each layer's observed neighborhood pattern beside its predictions.

:func:`layer_theory` runs a TransformerLens model over a token batch and sets the observed
batch-mean self-similarity of every block (sites ``attn_out``, ``resid_mid``, ``resid_post``)
beside what the attention-pattern theory predicts for it. Each prediction is named for what it
observes and what it assumes:

* ``first_layer``: observes block 0 only (its embeddings, value vectors and patterns); assumes
  block 0's Gram model (:mod:`nopelens.theory.gram`) describes layer L unchanged: how far the
  first layer's pattern carries;
* ``first_layer_closed_form``: observes block 0's variances ``s^2, a^2``; assumes uniform
  attention and isotropic values, and layer L = block 0;
* ``one_step``: observes the Gram of layer L's input ``blocks.L.hook_resid_pre`` (per sequence)
  and layer L's patterns; assumes the block's value/output maps (and its MLP) act on directions
  that are isotropic relative to its weights (:mod:`nopelens.theory.propagation`);
* ``propagated``: observes only the embedding Gram (``blocks.0.hook_resid_pre``) and the
  patterns of blocks 0..L; assumes the same at every block, composed through LN, the residual
  cross terms and the MLP;
* ``kim``: observes the embeddings' mean cosine and norm, ``d_model`` and ``eps``; assumes the
  model is Kim et al.'s parameter-free L2-normalised layer stacked L+1 times
  (:mod:`nopelens.theory.kim`).

None of them reads the output it predicts: ``one_step`` and ``propagated`` read attention
patterns, residual-stream Grams at or before the block's input, and the weights (scrambling
``blocks.L.hook_attn_out`` leaves every prediction for block L unchanged; tested).

The fit of each prediction to each (site, layer) is a tidy frame (:data:`FIT_COLUMNS`; see
:mod:`nopelens.analyzer.theory_fit`): Pearson r, RMSE and max error over off-diagonal entries of
the batch means, and the AP and NC of both matrices, with percentile-bootstrap intervals over
sequences.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int

from nopelens.analyzer.theory_fit import (
    FIT_COLUMNS,
    FitRow,
    GroupSums,
    fit_frame,
    sequence_scores,
)
from nopelens.analyzer.theory_plan import (
    LAYER_PREDICTIONS,
    LAYER_THEORY_SITES,
    PER_SEQUENCE,
    Plan,
    make_plan,
)
from nopelens.models import HookedModel

logger = logging.getLogger(__name__)

__all__ = ["FIT_COLUMNS", "LAYER_PREDICTIONS", "LAYER_THEORY_SITES", "LayerTheory", "layer_theory"]


@dataclasses.dataclass(frozen=True, repr=False)
class LayerTheory:
    """Observed and predicted similarity at every layer, and the fit of each prediction.

    Returned by :func:`layer_theory`.

    Attributes:
        observed: Site -> batch-mean cosine self-similarity ``[layer, pos, pos]`` (float32, CPU),
            one matrix per entry of :attr:`layers`.
        predicted: Prediction -> site -> batch-mean predicted similarity ``[layer, pos, pos]``.
        fit: Tidy frame, one row per (site, layer, prediction), columns :data:`FIT_COLUMNS`.
        layers: The block indices along the layer dimension.
        hooks: Site -> the TransformerLens hook of each layer that was observed.
        sharpness: Tidy frame ``[layer, attention_entropy, relative_entropy, max_attention]``
            of each block's attention patterns (1 = uniform, 0 = one-hot for the relative
            entropy).
        kim_alpha: The embeddings' mean off-diagonal cosine fed to the ``kim`` overlay (``None``
            when it was not computed).
        model_label: :func:`nopelens.models.describe_model` of the model.
        n_sequences: Number of sequences.
        n_positions: Sequence length.
        settings: The options of the call (JSON-able).
    """

    observed: dict[str, torch.Tensor]
    predicted: dict[str, dict[str, torch.Tensor]]
    fit: pd.DataFrame
    layers: tuple[int, ...]
    hooks: dict[str, tuple[str, ...]]
    sharpness: pd.DataFrame
    kim_alpha: float | None
    model_label: str
    n_sequences: int
    n_positions: int
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def sites(self) -> tuple[str, ...]:
        """The observed sites."""
        return tuple(self.observed)

    @property
    def predictions(self) -> tuple[str, ...]:
        """The predictions compared with the observation."""
        return tuple(self.predicted)

    def matrices(self, site: str, layer: int) -> dict[str, torch.Tensor]:
        """``{"observed": ..., <prediction>: ...}`` ``[pos, pos]`` at one site and block."""
        if site not in self.observed:
            raise KeyError(f"Site {site!r} is not in this theory; sites: {', '.join(self.sites)}.")
        if layer not in self.layers:
            raise KeyError(f"Layer {layer} is not in this theory; layers: {list(self.layers)}.")
        index = self.layers.index(layer)
        out = {"observed": self.observed[site][index]}
        for name, by_site in self.predicted.items():
            out[name] = by_site[site][index]
        return out

    def to_frame(self) -> pd.DataFrame:
        """Every matrix in long form: ``[site, layer, matrix, pos, pos_other, value]``."""
        n = self.n_positions
        grid_i, grid_j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        frames = []
        for site in self.sites:
            for layer in self.layers:
                for kind, matrix in self.matrices(site, layer).items():
                    frames.append(
                        pd.DataFrame(
                            {
                                "site": site,
                                "layer": layer,
                                "matrix": kind,
                                "pos": grid_i.ravel(),
                                "pos_other": grid_j.ravel(),
                                "value": matrix.numpy().ravel().astype(np.float64),
                            }
                        )
                    )
        return pd.concat(frames, ignore_index=True)

    def __repr__(self) -> str:
        """The model, the sizes and the median r of each prediction, in a few lines."""
        lines = [
            f"LayerTheory(model={self.model_label!r}, n_sequences={self.n_sequences}, "
            f"n_positions={self.n_positions}, layers={list(self.layers)}, "
            f"sites={list(self.sites)},"
        ]
        for name in self.predictions:
            rows = self.fit[self.fit["prediction"] == name]
            lines.append(
                f"  {name}: r {rows['pearson_r'].min():.3f}..{rows['pearson_r'].max():.3f}, "
                f"RMSE {rows['rmse'].min():.3g}..{rows['rmse'].max():.3g}"
            )
        return "\n".join(lines) + ")"


def layer_theory(
    model: HookedModel,
    tokens: Int[torch.Tensor, "batch pos"],
    *,
    sites: Sequence[str] | str | None = None,
    layers: Sequence[int] | int | None = None,
    predictions: Sequence[str] | str | None = None,
    mlp: str = "kernel",
    batch_size: int = 64,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    fwd_hooks: Sequence[Any] = (),
) -> LayerTheory:
    """Set each layer's observed neighborhood pattern beside the attention-pattern theory.

    For every requested block ``L`` and site, the observed batch-mean cosine self-similarity is
    compared with each prediction of the module table (``first_layer``,
    ``first_layer_closed_form``, ``one_step``, ``propagated``, ``kim``). Activations are read
    batch by batch; only per-sequence matrix sums are kept.

    Args:
        model: A TransformerLens ``HookedTransformer`` (``one_step`` and ``propagated`` need a
            block of a modelled kind: LN/LNPre/RMS/RMSPre/no normalisation, standard MLP with an
            element-wise activation or attention-only; see
            :func:`nopelens.theory.unmodelled_reason`).
        tokens: Token ids ``[batch, pos]`` with ``pos >= 3``; the theory assumes sequences without
            repeated tokens (``random_tokens(..., distinct=True)``) but handles repeats.
        sites: Sites from :data:`LAYER_THEORY_SITES` (default: all that exist).
        layers: Block indices (default: every block).
        predictions: Names from :data:`LAYER_PREDICTIONS` (default: all that apply; ``kim`` needs
            causal attention).
        mlp: How ``one_step`` and ``propagated`` treat the MLP: ``"kernel"`` (gain plus correlated
            noise, :mod:`nopelens.theory.mlp_kernel`) or ``"ignore"`` (``resid_post =
            resid_mid``; to measure what modelling it is worth).
        batch_size: Sequences per forward pass.
        n_bootstrap: Bootstrap resamples for the intervals (0: none).
        confidence: Confidence level of the intervals.
        seed: Seed of the bootstrap's private generator.
        fwd_hooks: TransformerLens ``(name, fn)`` hooks active during every forward pass (e.g.
            :func:`nopelens.theory.query_scale_hooks` to sharpen or flatten attention).

    Returns:
        :class:`LayerTheory`.

    Raises:
        ValueError: For bad arguments (every problem at once), a prediction that does not apply
            to the model, or ``pos < 3``.

    Examples:
        >>> from nopelens import build_model, random_tokens
        >>> model = build_model(n_layers=2, d_model=32, n_heads=2, d_vocab=64, n_ctx=8)
        >>> theory = layer_theory(model, random_tokens(6, 8, 64, distinct=True), n_bootstrap=20)
        >>> theory.layers, theory.sites
        ((0, 1), ('attn_out', 'resid_mid', 'resid_post'))
        >>> sorted(theory.fit["prediction"].unique())[:2]
        ['first_layer', 'first_layer_closed_form']
    """
    from nopelens.models import describe_model

    plan = make_plan(
        model, tokens, sites, layers, predictions, mlp, batch_size, n_bootstrap, confidence, seed
    )
    logger.info(
        "layer_theory: %s, layers %s, predictions %s",
        describe_model(model),
        plan.layers,
        plan.predictions,
    )
    with torch.no_grad():
        inputs = _fixed_inputs(model, plan, fwd_hooks)
        sums, scores, sharpness, kim_stats = _stream(model, plan, inputs, fwd_hooks)
        fixed = _fixed_predictions(model, plan, inputs, kim_stats)
    rows = _fit_rows(plan, fixed)
    fit = fit_frame(sums, scores, rows, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    means = sums.mean().float()
    return LayerTheory(
        observed={
            site: torch.stack(
                [means[plan.index[("observed", site, layer)]] for layer in plan.layers]
            )
            for site in plan.sites
        },
        predicted=_predicted_means(plan, means, fixed),
        fit=fit,
        layers=plan.layers,
        hooks={site: tuple(plan.hook(site, layer) for layer in plan.layers) for site in plan.sites},
        sharpness=sharpness,
        kim_alpha=None if kim_stats is None else kim_stats[0],
        model_label=describe_model(model),
        n_sequences=int(plan.tokens.shape[0]),
        n_positions=int(plan.tokens.shape[1]),
        settings={
            "sites": list(plan.sites),
            "layers": list(plan.layers),
            "predictions": list(plan.predictions),
            "mlp": mlp,
            "batch_size": batch_size,
            "n_bootstrap": n_bootstrap,
            "confidence": confidence,
            "seed": seed,
            "fwd_hooks": len(fwd_hooks),
        },
    )


# ------------------------------------------------------------------------------------------------
# the computation


def _fixed_inputs(model: Any, plan: Plan, fwd_hooks: Sequence[Any]) -> dict[str, Any]:
    """Block 0's first-layer theory (per-sequence Grams and closed forms) and the block weights."""
    from nopelens.theory import block_weights, first_layer_closed_form, first_layer_gram

    out: dict[str, Any] = {}
    if "first_layer" in plan.predictions:
        out["first_gram"] = first_layer_gram(
            model, plan.tokens, batch_size=plan.batch_size, fwd_hooks=fwd_hooks
        )
    if "first_layer_closed_form" in plan.predictions:
        out["first_closed"] = first_layer_closed_form(
            model, plan.tokens, batch_size=plan.batch_size, fwd_hooks=fwd_hooks
        )
    if any(p in plan.predictions for p in PER_SEQUENCE):
        out["weights"] = [block_weights(model, layer) for layer in range(plan.deepest + 1)]
    return out


def _first_site(site: str, available: dict[str, Any]) -> Any:
    """Block 0's prediction for ``site`` (``resid_post`` falls back to ``resid_mid``)."""
    return available[site] if site in available else available["resid_mid"]


def _stream(
    model: Any, plan: Plan, inputs: dict[str, Any], fwd_hooks: Sequence[Any]
) -> tuple[GroupSums, tuple[np.ndarray, np.ndarray], pd.DataFrame, tuple[float, float] | None]:
    """One pass over the batches: the per-sequence matrices and everything measured beside them.

    The matrices go into the sums; their AP and NC, the attention sharpness and the embedding
    statistics of Kim's overlay are kept on the side.
    """
    from nopelens.measure import iter_activations

    n_seqs, n = plan.tokens.shape
    sums = GroupSums(n_seqs, len(plan.index), n)
    needed = {"resid_pre", "pattern"} | {
        "resid_post" if (plan.attn_only and s == "resid_mid") else s for s in plan.sites
    }
    sharp: dict[int, list[tuple[int, dict[str, float]]]] = {layer: [] for layer in plan.layers}
    kim = [0.0, 0.0, 0]
    ap_parts, nc_parts = [], []
    start = 0
    batches = iter_activations(
        model,
        plan.tokens,
        sites=tuple(sorted(needed)),
        layers=tuple(range(plan.deepest + 1)),
        batch_size=plan.batch_size,
        fwd_hooks=fwd_hooks,
    )
    for acts in batches:
        matrices = _batch_matrices(plan, acts, inputs, start)
        sums.add(start, matrices)
        ap, nc = sequence_scores(matrices)
        ap_parts.append(ap)
        nc_parts.append(nc)
        size = matrices.shape[0]
        _record_sharpness(plan, acts, size, sharp)
        _record_embedding(acts, kim)
        start += size
    sharpness = _sharpness_frame(plan, sharp)
    kim_stats = (kim[0] / kim[2], kim[1] / kim[2]) if "kim" in plan.predictions else None
    scores = (np.concatenate(ap_parts), np.concatenate(nc_parts))
    return sums, scores, sharpness, kim_stats


def _batch_matrices(plan: Plan, acts: Any, inputs: dict[str, Any], start: int) -> torch.Tensor:
    """The per-sequence matrices of one batch, in the layout of ``plan.index``."""
    from nopelens.measure import self_similarity
    from nopelens.theory import block_step, gram_to_cosine, initial_state

    size, n = acts["pattern"].shape[1], acts["pattern"].shape[-1]
    out = torch.zeros(size, len(plan.index), n, n, dtype=torch.float64)
    for site in plan.sites:
        name = "resid_post" if (plan.attn_only and site == "resid_mid") else site
        for layer in plan.layers:
            hidden = acts[name][layer].float()
            out[:, plan.index[("observed", site, layer)]] = self_similarity(hidden).double().cpu()
    if "first_layer" in plan.predictions:
        for site in plan.sites:
            gram = _first_site(site, inputs["first_gram"])[start : start + size]
            out[:, plan.index[("first_layer", site, -1)]] = gram_to_cosine(gram).cpu()
    if not any(p in plan.predictions for p in PER_SEQUENCE):
        return out
    weights = inputs["weights"]

    def gram_of(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        return x @ x.transpose(-1, -2)

    def record(kind: str, layer: int, pred: Any) -> None:
        for site in plan.sites:
            state = getattr(pred, site)
            out[:, plan.index[(kind, site, layer)]] = state.cosine().cpu()

    block_0 = None  # block 0's one-step prediction is also its propagated one: computed once
    if "one_step" in plan.predictions:
        for layer in plan.layers:
            state = initial_state(gram_of(acts["resid_pre"][layer]))
            pred = block_step(state, acts["pattern"][layer], weights[layer], mlp=plan.mlp)
            record("one_step", layer, pred)
            block_0 = pred if layer == 0 else block_0
    if "propagated" in plan.predictions:
        state = initial_state(gram_of(acts["resid_pre"][0]))
        for layer in range(plan.deepest + 1):
            if layer == 0 and block_0 is not None:
                pred = block_0
            else:
                pred = block_step(state, acts["pattern"][layer], weights[layer], mlp=plan.mlp)
            if layer in plan.layers:
                record("propagated", layer, pred)
            state = pred.resid_post
    return out


def _record_sharpness(
    plan: Plan, acts: Any, size: int, sharp: dict[int, list[tuple[int, dict[str, float]]]]
) -> None:
    from nopelens.theory import sharpness_summary

    direction: Literal["causal", "bidirectional"] = "causal" if plan.causal else "bidirectional"
    for layer in plan.layers:
        sharp[layer].append((size, sharpness_summary(acts["pattern"][layer], attention=direction)))


def _sharpness_frame(
    plan: Plan, sharp: dict[int, list[tuple[int, dict[str, float]]]]
) -> pd.DataFrame:
    rows = []
    for layer in plan.layers:
        total = sum(size for size, _ in sharp[layer])
        row: dict[str, Any] = {"layer": layer}
        for key in ("attention_entropy", "relative_entropy", "max_attention"):
            row[key] = sum(size * stats[key] for size, stats in sharp[layer]) / total
        rows.append(row)
    return pd.DataFrame(
        rows, columns=["layer", "attention_entropy", "relative_entropy", "max_attention"]
    )


def _record_embedding(acts: Any, kim: list[Any]) -> None:
    """Running sums of the embeddings' mean off-diagonal cosine and mean squared norm."""
    from nopelens.measure import self_similarity

    x = acts["resid_pre"][0].double()
    n = x.shape[1]
    cos = self_similarity(x)
    rows, cols = torch.triu_indices(n, n, offset=1)
    kim[0] += float(cos[:, rows, cols].mean(-1).sum())
    kim[1] += float(x.pow(2).sum(-1).mean(-1).sum())
    kim[2] += x.shape[0]


def _fixed_predictions(
    model: Any, plan: Plan, inputs: dict[str, Any], kim_stats: tuple[float, float] | None
) -> dict[str, dict[str, torch.Tensor]]:
    """Sequence-independent predictions: prediction -> site -> ``[layer, pos, pos]``."""
    from nopelens.theory import kim_closed_form

    n, n_layers = plan.tokens.shape[1], len(plan.layers)
    fixed: dict[str, dict[str, torch.Tensor]] = {}
    if "first_layer_closed_form" in plan.predictions:
        closed = inputs["first_closed"]
        fixed["first_layer_closed_form"] = {
            site: _first_site(site, closed).float().expand(n_layers, n, n).clone()
            for site in plan.sites
        }
    if kim_stats is not None:
        alpha, norm2 = kim_stats
        depth = plan.deepest + 1
        by_kim_site = {
            kim_site: kim_closed_form(
                n,
                alpha=alpha,
                d_model=int(model.cfg.d_model),
                depth=depth,
                residual=True,
                eps=float(getattr(model.cfg, "eps", 1e-5)),
                norm2=norm2,
                site=kim_site,
            )
            for kim_site in ("attn_out", "resid_post")
        }
        fixed["kim"] = {
            site: by_kim_site["attn_out" if site == "attn_out" else "resid_post"][list(plan.layers)]
            for site in plan.sites
        }
    return fixed


def _fit_rows(plan: Plan, fixed: dict[str, dict[str, torch.Tensor]]) -> list[FitRow]:
    rows = []
    for site in plan.sites:
        for position, layer in enumerate(plan.layers):
            observed = plan.index[("observed", site, layer)]
            for name in plan.predictions:
                if name in fixed:
                    rows.append(
                        FitRow(site, layer, name, observed, fixed=fixed[name][site][position])
                    )
                elif name == "first_layer":
                    rows.append(FitRow(site, layer, name, observed, plan.index[(name, site, -1)]))
                else:
                    rows.append(
                        FitRow(site, layer, name, observed, plan.index[(name, site, layer)])
                    )
    return rows


def _predicted_means(
    plan: Plan, means: torch.Tensor, fixed: dict[str, dict[str, torch.Tensor]]
) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name in plan.predictions:
        if name in fixed:
            out[name] = {site: fixed[name][site].float() for site in plan.sites}
        elif name == "first_layer":
            out[name] = {
                site: means[plan.index[(name, site, -1)]].expand(len(plan.layers), -1, -1).clone()
                for site in plan.sites
            }
        else:
            out[name] = {
                site: torch.stack([means[plan.index[(name, site, layer)]] for layer in plan.layers])
                for site in plan.sites
            }
    return out
