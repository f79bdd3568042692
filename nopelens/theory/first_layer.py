r"""First-layer theory: predict the layer-0 neighborhood pattern and compare it with the model.

The paper this toolkit is built around (Zuo, Guerzhoy & Guerzhoy, COLING 2025) explains why the
first causal attention layer already makes nearby hidden states more cosine-similar than distant
ones. This module makes the explanation executable, next to what the model actually does.

Setup (block 0 of a pre-norm TransformerLens model; positions are 1-indexed, ``i = pos + 1``):

* residual input ``x_i = W_E[t_i] + W_pos[i]`` (``hook_resid_pre``; ``W_pos = 0`` for NoPE);
* value-output vector of key ``j`` in head ``h``:
  ``u^h_j = LN1(x_j) W_V^h W_O^h + b_V^h W_O^h`` (``hook_v @ W_O``);
* ``attn_out_i = sum_h sum_j A^h_ij u^h_j + b_O`` with ``A^h`` the attention pattern;
* ``resid_mid_i = x_i + attn_out_i`` (in an attention-only model this is ``resid_post``).

:func:`decompose_first_layer` rebuilds ``hook_attn_out`` and ``hook_resid_mid`` from exactly
these terms, head by head (an identity, to float tolerance).

**Gram model** (the assumptions; ``T_jl = [t_j = t_l]``):

1. *Isotropy and independence of the values*: the value-output vectors of two occurrences have
   ``E<u^h_j, u^h'_l> = S_hh'`` if they are the same token (a NoPE model gives the same token the
   same vector) and ``D_hh'`` otherwise: the Gram matrix is ``G = sigma^2 T + mu^2 11^T`` with
   ``sigma^2 = S - D`` (token-specific variance) and ``mu^2 = D`` (shared component).
2. The same for the token embeddings (``E_S``, ``E_D``) and between embeddings and values
   (``X_S``, ``X_D``). A learned positional embedding ``P`` is taken exactly; its products with the
   random vectors use their means ``mu_E``, ``mu_h``.
3. The attention pattern is taken as given (from the model), independent of the token-specific
   parts of the values.
4. ``d_model`` is large, so norms concentrate and ``E[cos] ~= E<a, b> / sqrt(E|a|^2 E|b|^2)``.

Every parameter is estimated from the layer's own vectors: ``S`` over token occurrences, ``D``
over pairs of different tokens *within the same sequence*, which is unbiased for the way the
tokens were drawn (e.g. without replacement by ``random_tokens(distinct=True)``, where ``D`` is
``|mu|^2 - sigma^2/(V-1)`` for a vocabulary of ``V`` tokens, not ``|mu|^2``). With row sums
``r^h_i = sum_j A^h_ij`` (1 unless attention sinks) the expected Gram matrices are

    K^attn_ik = sum_hh' (S-D)_hh' (A^h T A^h'^T)_ik                    (the "A G A^T" term)
                + sum_hh' r^h_i r^h'_k D_hh' + sum_h (r^h_i + r^h_k) <mu_h, b_O> + |b_O|^2
    K^resid   = X + Q + Q^T + K^attn,
    X_ik      = (E_S - E_D) T_ik + E_D + <mu_E, P_i + P_k> + <P_i, P_k>   (embedding Gram)
    Q_ik      = sum_h (X_S - X_D)_h (T A^h^T)_ik                         (cross terms)
                + sum_h r^h_k (X_D,h + <P_i, mu_h>) + <mu_E + P_i, b_O>

and the predicted similarity is ``K_ik / sqrt(K_ii K_kk)``, computed per sequence and averaged over
the batch, like the observed one. The variance across hidden dimensions (Chi et al.) is the same
model applied to vectors projected onto the zero-mean subspace of the hidden dimensions:
``var(h_i) = |Pi h_i|^2 / d_model``, ``Pi = I - 11^T / d_model``.

**Closed forms** (the uniform-attention limit). Take uniform causal attention ``A_ij = 1/i`` for
``j <= i`` (exactly what ``W_Q = 0`` or ``W_K = 0`` gives), distinct tokens (``T = I``), no shared
component (``D = 0``, ``b_O = 0``) and one total value variance ``a^2`` per hidden dimension
(``sum_hh' (S-D)_hh' = d_model a^2``). Then

    (A A^T)_ik = sum_{j <= min(i,k)} 1/(i k) = min(i,k) / (i k) = 1 / max(i,k),

so ``K^attn_ik = d a^2 / max(i,k)`` and

    cos(attn_out_i, attn_out_k) = (1/max(i,k)) / sqrt((1/i)(1/k)) = sqrt(min(i,k) / max(i,k)),
    var(attn_out_i) = a^2 / i                                              (Chi et al.'s 1/i law).

Adding a residual of per-dimension variance ``s^2``, independent across positions and of the
values (``X = 0``): ``K^resid_ik = d s^2 [i = k] + d a^2 / max(i,k)``, hence for ``i != k``

    cos(resid_mid_i, resid_mid_k) = (a^2 / max(i,k)) / sqrt((s^2 + a^2/i)(s^2 + a^2/k)),

with ``var(resid_mid_i) = s^2 + a^2 / i`` (diagonal 1 by definition). ``s^2 = 0`` recovers the
attention form; as ``s^2 / a^2`` grows the pattern fades. With bidirectional uniform attention
``A_ij = 1/n`` every ``(A A^T)_ik = 1/n``: all attention outputs coincide (cosine 1) and the
residual form is the constant ``(a^2/n) / (s^2 + a^2/n)`` off the diagonal, i.e. no neighborhood
structure.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int

from nopelens.theory.attention import head_outputs, sharpness_summary, value_outputs
from nopelens.validation import InvalidParameterError, check_choice, check_float, check_int

logger = logging.getLogger(__name__)

AttentionDirection = Literal["causal", "bidirectional"]
_DIRECTIONS = ("causal", "bidirectional")
#: Sites that :func:`first_layer_theory` reports (``resid_post`` only when an MLP follows).
THEORY_SITES: tuple[str, ...] = ("attn_out", "resid_mid", "resid_post")
#: The two predictions compared with the observation.
PREDICTIONS: tuple[str, ...] = ("pattern", "closed_form")
#: Columns of :attr:`FirstLayerTheory.metrics`.
METRIC_COLUMNS: tuple[str, ...] = (
    "site",
    "prediction",
    "pearson_r",
    "rmse",
    "max_error",
    "ap_observed",
    "ap_predicted",
    "nc_observed",
    "nc_predicted",
)
#: Default attention-score multipliers of :func:`attention_sharpness_study`.
DEFAULT_SCALES: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


# --------------------------------------------------------------------------------------------
# Closed forms (pure)
# --------------------------------------------------------------------------------------------


def _positions(n: int) -> torch.Tensor:
    return torch.arange(1, n + 1, dtype=torch.float64)


def uniform_attention_similarity(
    n: int, *, attention: AttentionDirection = "causal"
) -> Float[torch.Tensor, "pos pos"]:
    """Expected ``cos(attn_out_i, attn_out_j)`` under uniform attention over isotropic values.

    Causal: ``sqrt(min(i, j) / max(i, j))`` with 1-indexed positions ``i, j`` (see the module
    docstring for the derivation and assumptions). Bidirectional: all ones.

    Args:
        n: Number of positions.
        attention: ``"causal"`` or ``"bidirectional"``.

    Returns:
        ``[pos, pos]`` float32 matrix: symmetric, diagonal 1, decreasing away from the diagonal.

    Examples:
        >>> uniform_attention_similarity(3)
        tensor([[1.0000, 0.7071, 0.5774],
                [0.7071, 1.0000, 0.8165],
                [0.5774, 0.8165, 1.0000]])
    """
    func = "uniform_attention_similarity"
    check_int(n, "n", func, min=1)
    check_choice(attention, "attention", _DIRECTIONS, func)
    if attention == "bidirectional":
        return torch.ones(n, n)
    i = _positions(n)
    return (
        (torch.minimum(i[:, None], i[None, :]) / torch.maximum(i[:, None], i[None, :]))
        .sqrt()
        .float()
    )


def uniform_residual_similarity(
    n: int, s2: float, a2: float, *, attention: AttentionDirection = "causal"
) -> Float[torch.Tensor, "pos pos"]:
    """Expected ``cos(resid_mid_i, resid_mid_j)`` under uniform attention, with the residual.

    ``(a2 / max(i, j)) / sqrt((s2 + a2/i) (s2 + a2/j))`` off the diagonal (1-indexed ``i, j``), 1 on
    it. ``s2`` is the per-dimension variance of the residual input (embeddings), ``a2`` that of the
    summed value-output vectors; only their ratio matters. ``s2 = 0`` gives
    :func:`uniform_attention_similarity`. Bidirectional: ``(a2/n) / (s2 + a2/n)`` off the diagonal.

    Args:
        n: Number of positions.
        s2: Residual (embedding) variance per hidden dimension, ``>= 0``.
        a2: Value-output variance per hidden dimension, ``>= 0``; ``s2 + a2 > 0``.
        attention: ``"causal"`` or ``"bidirectional"``.

    Returns:
        ``[pos, pos]`` float32 matrix.

    Raises:
        ValueError: For negative variances, both zero, or bad ``n``/``attention``.

    Examples:
        >>> uniform_residual_similarity(3, 0.0, 1.0)[0, 2]
        tensor(0.5774)
        >>> uniform_residual_similarity(3, 1.0, 1.0)
        tensor([[1.0000, 0.2887, 0.2041],
                [0.2887, 1.0000, 0.2357],
                [0.2041, 0.2357, 1.0000]])
    """
    func = "uniform_residual_similarity"
    check_int(n, "n", func, min=1)
    s2 = check_float(s2, "s2", func, min=0.0)
    a2 = check_float(a2, "a2", func, min=0.0)
    check_choice(attention, "attention", _DIRECTIONS, func)
    if s2 + a2 <= 0:
        raise InvalidParameterError(f"The 's2' and 'a2' parameters of {func} cannot both be 0.")
    i = _positions(n)
    if attention == "bidirectional":
        off = torch.full((n, n), (a2 / n) / (s2 + a2 / n), dtype=torch.float64)
    else:
        norm2 = s2 + a2 / i
        norms = (norm2[:, None] * norm2[None, :]).sqrt()
        off = (a2 / torch.maximum(i[:, None], i[None, :])) / norms
    off.fill_diagonal_(1.0)
    return off.float()


def uniform_variance(
    n: int, s2: float, a2: float, *, attention: AttentionDirection = "causal"
) -> Float[torch.Tensor, " pos"]:
    """Expected variance across hidden dimensions under uniform attention: ``s2 + a2 / i``.

    ``s2 = 0`` is Chi et al.'s ``1/i`` law for ``attn_out``; bidirectional attention gives the
    constant ``s2 + a2 / n``.

    Examples:
        >>> uniform_variance(4, 0.0, 1.0)
        tensor([1.0000, 0.5000, 0.3333, 0.2500])
    """
    func = "uniform_variance"
    check_int(n, "n", func, min=1)
    s2 = check_float(s2, "s2", func, min=0.0)
    a2 = check_float(a2, "a2", func, min=0.0)
    check_choice(attention, "attention", _DIRECTIONS, func)
    if attention == "bidirectional":
        return torch.full((n,), s2 + a2 / n)
    return (s2 + a2 / _positions(n)).float()


# --------------------------------------------------------------------------------------------
# Gram model (pure)
# --------------------------------------------------------------------------------------------


def gram_to_cosine(
    gram: Float[torch.Tensor, "*batch pos pos"],
) -> Float[torch.Tensor, "*batch pos pos"]:
    """Cosine similarities ``K_ik / sqrt(K_ii K_kk)`` from a Gram matrix (0 where a norm is 0).

    Examples:
        >>> gram_to_cosine(torch.tensor([[4.0, 2.0], [2.0, 1.0]]))
        tensor([[1., 1.],
                [1., 1.]])
    """
    diag = gram.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()
    denom = diag[..., :, None] * diag[..., None, :]
    return torch.where(
        denom > 0, gram / denom.clamp_min(torch.finfo(gram.dtype).tiny), torch.zeros_like(gram)
    )


def same_token_matrix(
    tokens: Int[torch.Tensor, "batch pos"],
) -> Float[torch.Tensor, "batch pos pos"]:
    """``T[b, i, j] = 1`` where ``tokens[b, i] == tokens[b, j]`` (the identity for distinct tokens).

    Examples:
        >>> same_token_matrix(torch.tensor([[3, 5, 3]]))[0]
        tensor([[1., 0., 1.],
                [0., 1., 0.],
                [1., 0., 1.]])
    """
    return (tokens[:, :, None] == tokens[:, None, :]).float()


@dataclasses.dataclass(frozen=True)
class GramParameters:
    """The estimated parameters of the Gram model (inner products, summed over ``d_model``).

    ``*_same`` are means over token occurrences of the inner product of an occurrence with itself;
    ``*_diff`` are means over pairs of occurrences of *different* tokens in the same sequence.

    Attributes:
        value_same: ``S_hh' = E<u^h_j, u^h'_j>`` ``[head_index, head_index]``.
        value_diff: ``D_hh' = E<u^h_j, u^h'_l>``, ``t_j != t_l`` ``[head_index, head_index]``.
        value_mean: ``mu_h``, mean value-output vector of each head ``[head_index, d_model]``.
        bias: ``b_O`` of block 0 ``[d_model]``.
        embed_same: ``E_S = E|W_E[t_j]|^2``.
        embed_diff: ``E_D = E<W_E[t_j], W_E[t_l]>``, ``t_j != t_l``.
        embed_mean: ``mu_E``, mean token embedding ``[d_model]``.
        cross_same: ``X_S,h = E<W_E[t_j], u^h_j>`` ``[head_index]``.
        cross_diff: ``X_D,h = E<W_E[t_j], u^h_l>``, ``t_j != t_l`` ``[head_index]``.
        pos_embed: ``P``, positional embedding added to the residual ``[pos, d_model]`` (zeros
            for NoPE, rotary and ALiBi models).
        resid_var: ``E|x_j - mean x|^2`` of the residual input ``hook_resid_pre``.
        d_model: Width of the residual stream (to turn sums into per-dimension values).
        n_samples: Number of token occurrences behind the ``*_same`` estimates.
        n_pairs: Number of different-token pairs behind the ``*_diff`` estimates (0: the ``*_diff``
            terms fell back to products of the means).
    """

    value_same: Float[torch.Tensor, "head_index head_index"]
    value_diff: Float[torch.Tensor, "head_index head_index"]
    value_mean: Float[torch.Tensor, "head_index d_model"]
    bias: Float[torch.Tensor, " d_model"]
    embed_same: float
    embed_diff: float
    embed_mean: Float[torch.Tensor, " d_model"]
    cross_same: Float[torch.Tensor, " head_index"]
    cross_diff: Float[torch.Tensor, " head_index"]
    pos_embed: Float[torch.Tensor, "pos d_model"]
    resid_var: float
    d_model: int
    n_samples: int
    n_pairs: int

    @property
    def value_cov(self) -> Float[torch.Tensor, "head_index head_index"]:
        """Token-specific value covariance ``S - D`` (the ``sigma^2 T`` part of ``G``)."""
        return self.value_same - self.value_diff

    @property
    def sigma2(self) -> float:
        """Token-specific variance of the summed value outputs, ``sum_hh' (S - D)_hh'``."""
        return float(self.value_cov.sum())

    @property
    def mu2(self) -> float:
        """Shared component of the attention output: ``sum D + 2 sum_h <mu_h, b_O> + |b_O|^2``."""
        return float(
            self.value_diff.sum() + 2 * (self.value_mean @ self.bias).sum() + self.bias.pow(2).sum()
        )

    @property
    def embed_var(self) -> float:
        """Token-specific embedding variance ``E_S - E_D``."""
        return self.embed_same - self.embed_diff

    @property
    def s2(self) -> float:
        """Per-dimension variance of the residual input (the closed form's ``s^2``)."""
        return max(self.resid_var, 0.0) / self.d_model

    @property
    def a2(self) -> float:
        """Per-dimension token-specific variance of the summed value outputs (``a^2``)."""
        return max(self.sigma2, 0.0) / self.d_model

    def to_frame(self) -> pd.DataFrame:
        """Tidy frame ``[parameter, head_index, head_index_other, value]`` (-1: not per head)."""
        rows: list[tuple[str, int, int, float]] = [
            ("sigma2", -1, -1, self.sigma2),
            ("mu2", -1, -1, self.mu2),
            ("embed_same", -1, -1, self.embed_same),
            ("embed_diff", -1, -1, self.embed_diff),
            ("embed_var", -1, -1, self.embed_var),
            ("pos_embed_norm2", -1, -1, float(self.pos_embed.pow(2).sum(-1).mean())),
            ("resid_var", -1, -1, self.resid_var),
            ("s2", -1, -1, self.s2),
            ("a2", -1, -1, self.a2),
            ("n_samples", -1, -1, float(self.n_samples)),
            ("n_pairs", -1, -1, float(self.n_pairs)),
        ]
        n_heads = self.value_same.shape[0]
        for h in range(n_heads):
            rows.append(("cross_same", h, -1, float(self.cross_same[h])))
            rows.append(("cross_diff", h, -1, float(self.cross_diff[h])))
            for k in range(n_heads):
                rows.append(("value_same", h, k, float(self.value_same[h, k])))
                rows.append(("value_diff", h, k, float(self.value_diff[h, k])))
        return pd.DataFrame(rows, columns=["parameter", "head_index", "head_index_other", "value"])


def _pair_means(
    a: torch.Tensor, b: torch.Tensor, same: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean inner products of ``a[b, j, h]`` and ``b[b, l, k]`` by kind of pair.

    Same occurrence (``j = l``), and different-token pairs in the same sequence (``T_jl = 0``).
    Returns ``(same_mean [h, k], diff_mean [h, k], n_diff_pairs)``; without different-token pairs
    ``diff_mean`` is the product of the means.
    """
    n_occ = a.shape[0] * a.shape[1]
    diagonal = torch.einsum("bjhd,bjkd->hk", a, b)
    same_mean = diagonal / n_occ
    total = torch.einsum("bhd,bkd->hk", a.sum(1), b.sum(1))  # all pairs (j, l) of a sequence
    repeats = same - torch.eye(same.shape[-1], dtype=same.dtype, device=same.device)
    same_tok = diagonal  # pairs with t_j = t_l: j = l, plus repeated tokens if any
    if repeats.any():
        same_tok = same_tok + torch.einsum(
            "bjhd,bjkd->hk", a, torch.einsum("bjl,blkd->bjkd", repeats, b)
        )
    n_pairs = int(round(float(same.numel() - same.sum())))
    if n_pairs == 0:
        return same_mean, torch.einsum("hd,kd->hk", a.mean((0, 1)), b.mean((0, 1))), 0
    return same_mean, (total - same_tok) / n_pairs, n_pairs


def estimate_gram_parameters(
    embed: Float[torch.Tensor, "batch pos d_model"],
    pos_embed: Float[torch.Tensor, "pos d_model"],
    values: Float[torch.Tensor, "batch pos head_index d_model"],
    bias: Float[torch.Tensor, " d_model"],
    resid_pre: Float[torch.Tensor, "batch pos d_model"],
    same_token: Float[torch.Tensor, "batch pos pos"],
) -> GramParameters:
    """Estimate the Gram-model parameters from one layer's vectors.

    Args:
        embed: Token embeddings ``hook_embed``.
        pos_embed: Positional embedding added to the residual (zeros if none).
        values: Value-output vectors ``u^h_j`` (:func:`nopelens.theory.attention.value_outputs`).
        bias: ``b_O``.
        resid_pre: ``hook_resid_pre`` of block 0 (``embed + pos_embed``).
        same_token: ``T`` from :func:`same_token_matrix`.

    Returns:
        :class:`GramParameters` (float64 tensors).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> u = torch.randn(64, 8, 1, 256, generator=g)
        >>> e = torch.zeros(64, 8, 256)
        >>> p = estimate_gram_parameters(e, torch.zeros(8, 256), u, torch.zeros(256), e,
        ...                              torch.eye(8).expand(64, 8, 8))
        >>> round(p.a2, 1), abs(p.mu2) < 1.0
        (1.0, True)
    """
    embed, values, resid_pre = embed.double(), values.double(), resid_pre.double()
    same = same_token.to(device=embed.device, dtype=torch.float64)
    n_occ = embed.shape[0] * embed.shape[1]
    value_same, value_diff, n_pairs = _pair_means(values, values, same)
    embed_same, embed_diff, _ = _pair_means(embed[:, :, None], embed[:, :, None], same)
    cross_same, cross_diff, _ = _pair_means(embed[:, :, None], values, same)
    centred = resid_pre - resid_pre.mean((0, 1))
    return GramParameters(
        value_same=value_same,
        value_diff=value_diff,
        value_mean=values.mean((0, 1)),
        bias=bias.double(),
        embed_same=float(embed_same),
        embed_diff=float(embed_diff),
        embed_mean=embed.mean((0, 1)),
        cross_same=cross_same[0],
        cross_diff=cross_diff[0],
        pos_embed=pos_embed.double(),
        resid_var=float(centred.pow(2).sum()) / max(n_occ - 1, 1),
        d_model=int(embed.shape[-1]),
        n_samples=int(n_occ),
        n_pairs=n_pairs,
    )


def predict_gram(
    params: GramParameters,
    pattern: Float[torch.Tensor, "batch head_index pos pos"],
    same_token: Float[torch.Tensor, "batch pos pos"],
) -> dict[str, Float[torch.Tensor, "batch pos pos"]]:
    """Expected Gram matrices of ``attn_out`` and ``resid_mid`` under the Gram model.

    Implements ``K^attn`` (``A G A^T`` plus the shared and bias terms) and
    ``K^resid = X + Q + Q^T + K^attn`` from the module docstring, per sequence.

    Args:
        params: Estimated parameters (:func:`estimate_gram_parameters`).
        pattern: Attention patterns of block 0 ``[batch, head_index, query_pos, key_pos]``.
        same_token: ``T`` from :func:`same_token_matrix`.

    Returns:
        ``{"attn_out": K^attn, "resid_mid": K^resid}``, float64 ``[batch, pos, pos]``.

    Examples:
        >>> from nopelens.theory.attention import uniform_pattern
        >>> f64 = dict(dtype=torch.float64)
        >>> one, zero = torch.ones(1, 1, **f64), torch.zeros(1, 1, **f64)
        >>> p = GramParameters(one, zero, torch.zeros(1, 2, **f64), torch.zeros(2, **f64), 0.0,
        ...     0.0, torch.zeros(2, **f64), torch.zeros(1, **f64), torch.zeros(1, **f64),
        ...     torch.zeros(3, 2, **f64), 0.0, 2, 3, 6)
        >>> predict_gram(p, uniform_pattern(3).expand(1, 1, 3, 3), torch.eye(3)[None])["attn_out"]
        tensor([[[1.0000, 0.5000, 0.3333],
                 [0.5000, 0.5000, 0.3333],
                 [0.3333, 0.3333, 0.3333]]], dtype=torch.float64)
    """
    dtype = torch.float64
    device = pattern.device

    def get(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=device, dtype=dtype)

    a = pattern.to(dtype)
    t = get(same_token)
    cov, shared = get(params.value_cov), get(params.value_diff)
    mu_h, bias, mu_e, pos = (
        get(params.value_mean),
        get(params.bias),
        get(params.embed_mean),
        get(params.pos_embed),
    )
    cross_cov = get(params.cross_same - params.cross_diff)
    cross_shared = get(params.cross_diff)

    rows = a.sum(-1)  # r^h_i, 1 unless attention sinks  [batch head pos]
    value_bias = rows.transpose(1, 2) @ (mu_h @ bias)  # sum_h r^h_i <mu_h, b_O>  [batch pos]
    k_shared = (
        torch.einsum("bhi,hk,bkj->bij", rows, shared, rows)
        + value_bias[:, :, None]
        + value_bias[:, None, :]
        + bias @ bias
    )
    mixed = torch.einsum("hk,bkij->bhij", cov, a)  # sum_h' (S-D)_hh' A^h'
    eye = torch.eye(t.shape[-1], dtype=dtype, device=device)
    at = a @ t[:, None] if not torch.equal(t, eye.expand_as(t)) else a  # A^h T (T = I: distinct)
    k_attn = torch.einsum("bhil,bhkl->bik", at, mixed) + k_shared

    pe = pos @ mu_e  # <P_i, mu_E>
    k_embed = (params.embed_diff + pe[:, None] + pe[None, :] + pos @ pos.T)[None] + (
        params.embed_var * t
    )
    base = cross_shared[None, :] + pos @ mu_h.T  # X_D,h + <P_i, mu_h>  [pos_i, head]
    q = (
        torch.einsum("ih,bhk->bik", base, rows)
        + ((mu_e + pos) @ bias)[None, :, None]
        + torch.einsum("h,bhki->bik", cross_cov, at)
    )
    k_resid = k_embed + q + q.transpose(-1, -2) + k_attn
    return {"attn_out": k_attn, "resid_mid": k_resid}


def _center_dims(x: torch.Tensor) -> torch.Tensor:
    """Project onto the zero-mean subspace of the last (hidden) dimension."""
    return x - x.mean(-1, keepdim=True)


def fit_metrics(
    observed: Float[torch.Tensor, "pos pos"], predicted: Float[torch.Tensor, "pos pos"]
) -> dict[str, float]:
    """Pearson r, RMSE and max absolute error over the off-diagonal entries ``i < j``.

    ``pearson_r`` is NaN when either matrix is constant off the diagonal (e.g. the bidirectional
    closed form) or there are fewer than two off-diagonal pairs.

    Examples:
        >>> s = uniform_attention_similarity(5)
        >>> fit_metrics(s, s)
        {'pearson_r': 1.0, 'rmse': 0.0, 'max_error': 0.0}
    """
    if observed.shape != predicted.shape:
        raise InvalidParameterError(
            f"fit_metrics: observed has shape {tuple(observed.shape)} [pos pos] but predicted has "
            f"shape {tuple(predicted.shape)}."
        )
    n = observed.shape[-1]
    rows, cols = torch.triu_indices(n, n, offset=1)
    x = observed[rows, cols].double().cpu().numpy()
    y = predicted[rows, cols].double().cpu().numpy()
    if x.size == 0:
        return {"pearson_r": math.nan, "rmse": math.nan, "max_error": math.nan}
    diff = x - y
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(xc @ xc) * float(yc @ yc))
    scale = max(float(np.abs(x).max()), float(np.abs(y).max()), 1e-30)
    pearson = (
        float(xc @ yc) / denom if x.size >= 2 and denom > 1e-12 * scale**2 * x.size else (math.nan)
    )
    return {
        "pearson_r": pearson,
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "max_error": float(np.abs(diff).max()),
    }


# --------------------------------------------------------------------------------------------
# Model-facing: decomposition and theory
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FirstLayerDecomposition:
    """Block 0 split into its additive parts, from one forward pass (tensors on the model device).

    ``attn_out = heads.sum(head_index) + bias`` and ``resid_mid = residual + attn_out`` hold to
    float tolerance (:meth:`reconstruction_error`).

    Attributes:
        tokens: The token ids ``[batch, pos]``.
        heads: Per-head contributions ``[batch, head_index, pos, d_model]``.
        bias: ``b_O`` of block 0 ``[d_model]``.
        residual: The residual input ``hook_resid_pre`` (``embed + pos_embed``).
        embed: ``hook_embed``.
        pos_embed: Positional embedding added to the residual ``[pos, d_model]`` (zeros if none).
        pattern: ``blocks.0.attn.hook_pattern`` ``[batch, head_index, query_pos, key_pos]``.
        values: Value-output vectors ``hook_v @ W_O`` ``[batch, pos, head_index, d_model]``.
        attn_out: Observed ``blocks.0.hook_attn_out``.
        resid_mid: Observed ``blocks.0.hook_resid_mid`` (``hook_resid_post`` for attention-only
            models, where the two are the same).
        resid_post: Observed ``blocks.0.hook_resid_post`` when an MLP follows, else ``None``.
        resid_mid_hook: The hook name ``resid_mid`` was read from.
    """

    tokens: Int[torch.Tensor, "batch pos"]
    heads: Float[torch.Tensor, "batch head_index pos d_model"]
    bias: Float[torch.Tensor, " d_model"]
    residual: Float[torch.Tensor, "batch pos d_model"]
    embed: Float[torch.Tensor, "batch pos d_model"]
    pos_embed: Float[torch.Tensor, "pos d_model"]
    pattern: Float[torch.Tensor, "batch head_index pos pos"]
    values: Float[torch.Tensor, "batch pos head_index d_model"]
    attn_out: Float[torch.Tensor, "batch pos d_model"]
    resid_mid: Float[torch.Tensor, "batch pos d_model"]
    resid_post: Float[torch.Tensor, "batch pos d_model"] | None
    resid_mid_hook: str

    def attn_out_rebuilt(self) -> Float[torch.Tensor, "batch pos d_model"]:
        """``sum_h heads[:, h] + bias``: the attention output rebuilt from its parts."""
        return self.heads.sum(1) + self.bias

    def resid_mid_rebuilt(self) -> Float[torch.Tensor, "batch pos d_model"]:
        """``residual + attn_out_rebuilt()``."""
        return self.residual + self.attn_out_rebuilt()

    def reconstruction_error(self) -> dict[str, float]:
        """Max absolute differences between rebuilt and hooked tensors (should be ~1e-7)."""
        return {
            "attn_out": float((self.attn_out_rebuilt() - self.attn_out).abs().max()),
            "resid_mid": float((self.resid_mid_rebuilt() - self.resid_mid).abs().max()),
            "resid_pre": float((self.embed + self.pos_embed - self.residual).abs().max()),
        }

    def head_labels(self) -> list[str]:
        """TransformerLens-style labels ``L0H0, L0H1, ...``."""
        return [f"L0H{h}" for h in range(self.heads.shape[1])]


def _check_model(model: Any, func: str) -> None:
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "run_with_cache"):
        raise InvalidParameterError(
            f"The 'model' parameter of {func} must be a TransformerLens HookedTransformer (e.g. "
            f"from nopelens.build_model). Got {type(model).__name__} instead."
        )


def _check_batch_size(batch_size: Any, func: str) -> None:
    if batch_size is not None:
        check_int(batch_size, "batch_size", func, min=1)


def _collect(
    model: Any, tokens: Any, batch_size: Any, fwd_hooks: Sequence[Any], func: str
) -> FirstLayerDecomposition:
    from nopelens.measure import check_tokens, collect_activations, hook_name

    _check_model(model, func)
    _check_batch_size(batch_size, func)
    tokens = check_tokens(model, tokens, func=func)
    cfg = model.cfg
    attn_only = bool(getattr(cfg, "attn_only", False))
    has_pos = getattr(cfg, "positional_embedding_type", "standard") == "standard"
    mid_site = "resid_post" if attn_only else "resid_mid"
    sites = ["embed", "resid_pre", "v", "pattern", "attn_out", mid_site]
    if has_pos:
        sites.append("pos_embed")
    if not attn_only:
        sites.append("resid_post")
    acts = collect_activations(
        model, tokens, sites=tuple(sites), layers=(0,), batch_size=batch_size, fwd_hooks=fwd_hooks
    )
    pattern = acts["pattern"][0]
    v = acts["v"][0]
    n_heads = pattern.shape[1]
    if v.shape[2] != n_heads:  # grouped-query attention: expand key/value heads
        v = v.repeat_interleave(n_heads // v.shape[2], dim=2)
    with torch.no_grad():
        w_o = model.W_O[0].to(v.device, v.dtype)
        b_o = model.b_O[0].to(v.device, v.dtype)
        heads = head_outputs(pattern.to(v.dtype), v, w_o)
        values = value_outputs(v, w_o)
    embed = acts["embed"][0]
    pos_embed = acts["pos_embed"][0][0] if has_pos else torch.zeros_like(embed[0])
    return FirstLayerDecomposition(
        tokens=tokens,
        heads=heads,
        bias=b_o,
        residual=acts["resid_pre"][0],
        embed=embed,
        pos_embed=pos_embed,
        pattern=pattern,
        values=values,
        attn_out=acts["attn_out"][0],
        resid_mid=acts[mid_site][0],
        resid_post=None if attn_only else acts["resid_post"][0],
        resid_mid_hook=hook_name(mid_site, 0),
    )


def decompose_first_layer(
    model: Any,
    tokens: Int[torch.Tensor, "batch pos"],
    *,
    batch_size: int | None = None,
    fwd_hooks: Sequence[Any] = (),
) -> FirstLayerDecomposition:
    """Split block 0 into per-head contributions, the output bias and the residual input.

    One forward pass caches only ``hook_embed``, ``hook_pos_embed``, ``blocks.0.hook_resid_pre``,
    ``attn.hook_v``, ``attn.hook_pattern``, ``hook_attn_out`` and ``hook_resid_mid`` (or
    ``hook_resid_post``); head ``h`` contributes ``pattern[:, h] @ v[:, :, h] @ W_O[h]``.

    Args:
        model: A TransformerLens ``HookedTransformer`` (any positional type, LN type, causal or
            bidirectional, with or without MLP).
        tokens: Token ids ``[batch, pos]``.
        batch_size: Sequences per forward pass (``None``: all at once).
        fwd_hooks: TransformerLens ``(name, fn)`` hooks active during the forward pass.

    Returns:
        :class:`FirstLayerDecomposition`; ``heads.sum(1) + bias`` rebuilds ``hook_attn_out`` and
        adding ``residual`` rebuilds ``hook_resid_mid``.

    Raises:
        ValueError: For a non-TransformerLens model, bad tokens or a bad ``batch_size``.

    Examples:
        >>> from nopelens.models import build_model
        >>> model = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=10, n_ctx=8)
        >>> parts = decompose_first_layer(model, torch.tensor([[1, 2, 3, 4]]))
        >>> parts.heads.shape
        torch.Size([1, 2, 4, 16])
        >>> max(parts.reconstruction_error().values()) < 1e-5
        True
    """
    return _collect(model, tokens, batch_size, fwd_hooks, "decompose_first_layer")


@dataclasses.dataclass(frozen=True)
class SiteTheory:
    """Observed and predicted batch-mean similarity matrices at one block-0 site (CPU float32).

    Attributes:
        site: ``"attn_out"``, ``"resid_mid"`` or ``"resid_post"``.
        hook: The TransformerLens hook the observation was read from.
        observed: Batch mean of the per-sequence cosine self-similarity ``[pos, pos]``.
        predicted: Pattern-based prediction (Gram model with the model's own attention patterns);
            for ``resid_post`` the ``resid_mid`` prediction (the MLP is not modelled).
        closed_form: Uniform-attention closed form (1-indexed positions; for ``resid_post`` the
            ``resid_mid`` form).
    """

    site: str
    hook: str
    observed: Float[torch.Tensor, "pos pos"]
    predicted: Float[torch.Tensor, "pos pos"]
    closed_form: Float[torch.Tensor, "pos pos"]

    @property
    def difference(self) -> Float[torch.Tensor, "pos pos"]:
        """``observed - predicted``."""
        return self.observed - self.predicted


@dataclasses.dataclass(frozen=True)
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
        model_label: :func:`nopelens.models.build.describe_model` of the model.
        attention: ``"causal"`` or ``"bidirectional"`` (which closed form applies).
        n_sequences: Number of sequences averaged.
        n_positions: Sequence length.
        sharpness: :func:`nopelens.theory.attention.sharpness_summary` of the block-0 patterns.
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
    model: Any,
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
    estimated from the model). See the module docstring for the derivation and assumptions: they
    hold best for random-init models fed sequences without repeated tokens
    (``random_tokens(..., distinct=True)``).

    Args:
        model: A TransformerLens ``HookedTransformer`` (causal or bidirectional, any positional
            type and normalisation, with or without MLP).
        tokens: Token ids ``[batch, pos]`` with ``pos >= 3``.
        batch_size: Sequences per forward pass (``None``: all at once).
        fwd_hooks: TransformerLens ``(name, fn)`` hooks active during the forward pass (e.g.
            scaling ``blocks.0.attn.hook_q``, see :func:`query_scale_hooks`).

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
    from nopelens.measure import (
        adjacency_probability,
        neighborhood_concordance,
        position_variance,
        self_similarity,
    )
    from nopelens.models import describe_model

    func = "first_layer_theory"
    _check_model(model, func)
    if isinstance(tokens, torch.Tensor) and tokens.shape[-1] < 3:
        raise InvalidParameterError(
            f"The 'tokens' parameter of {func} must hold sequences of at least 3 tokens (the "
            f"fit metrics need off-diagonal pairs). Got shape {tuple(tokens.shape)} instead."
        )
    parts = _collect(model, tokens, batch_size, fwd_hooks, func)
    direction = str(getattr(model.cfg, "attention_dir", "causal"))
    if direction not in _DIRECTIONS:
        direction = "causal"
    batch, n = parts.tokens.shape

    with torch.no_grad():
        same = same_token_matrix(parts.tokens)
        params = estimate_gram_parameters(
            parts.embed, parts.pos_embed, parts.values, parts.bias, parts.residual, same
        )
        grams = predict_gram(params, parts.pattern, same)
        params_c = estimate_gram_parameters(
            _center_dims(parts.embed),
            _center_dims(parts.pos_embed),
            _center_dims(parts.values),
            _center_dims(parts.bias),
            _center_dims(parts.residual),
            same,
        )
        grams_c = predict_gram(params_c, parts.pattern, same)

        hidden = {"attn_out": parts.attn_out, "resid_mid": parts.resid_mid}
        hooks = {"attn_out": "blocks.0.hook_attn_out", "resid_mid": parts.resid_mid_hook}
        if parts.resid_post is not None:
            hidden["resid_post"] = parts.resid_post
            hooks["resid_post"] = "blocks.0.hook_resid_post"
        closed = {
            "attn_out": uniform_attention_similarity(n, attention=direction),
            "resid_mid": uniform_residual_similarity(n, params.s2, params.a2, attention=direction)
            if params.s2 + params.a2 > 0
            else uniform_attention_similarity(n, attention=direction),
        }
        closed_var = {
            "attn_out": uniform_variance(n, 0.0, params_c.a2, attention=direction),
            "resid_mid": uniform_variance(n, params_c.s2, params_c.a2, attention=direction),
        }
        sites: dict[str, SiteTheory] = {}
        metric_rows: list[dict[str, Any]] = []
        var_frames: list[pd.DataFrame] = []
        for site, h in hidden.items():
            model_site = "attn_out" if site == "attn_out" else "resid_mid"
            observed = self_similarity(h.float()).mean(0).cpu()
            predicted = gram_to_cosine(grams[model_site]).mean(0).float().cpu()
            st = SiteTheory(site, hooks[site], observed, predicted, closed[model_site].clone())
            sites[site] = st
            ap_obs = float(adjacency_probability(observed))
            nc_obs = float(neighborhood_concordance(observed))
            for kind, matrix in (("pattern", predicted), ("closed_form", st.closed_form)):
                metric_rows.append(
                    {
                        "site": site,
                        "prediction": kind,
                        **fit_metrics(observed, matrix),
                        "ap_observed": ap_obs,
                        "ap_predicted": float(adjacency_probability(matrix)),
                        "nc_observed": nc_obs,
                        "nc_predicted": float(neighborhood_concordance(matrix)),
                    }
                )
            d_model = h.shape[-1]
            var_pred = grams_c[model_site].diagonal(dim1=-2, dim2=-1).mean(0) / d_model
            var_frames.append(
                pd.DataFrame(
                    {
                        "site": site,
                        "pos": np.arange(n),
                        "observed": position_variance(h.float()).double().mean(0).cpu().numpy(),
                        "predicted": var_pred.cpu().numpy(),
                        "closed_form": closed_var[model_site].double().numpy(),
                    }
                )
            )

    gram = pd.concat(
        [
            params.to_frame().assign(centering="none"),
            params_c.to_frame().assign(centering="hidden_dims"),
        ],
        ignore_index=True,
    )[["centering", "parameter", "head_index", "head_index_other", "value"]]
    return FirstLayerTheory(
        sites=sites,
        metrics=pd.DataFrame(metric_rows, columns=list(METRIC_COLUMNS)),
        gram=gram,
        parameters=_to_cpu(params),
        variance=pd.concat(var_frames, ignore_index=True),
        model_label=describe_model(model),
        attention=direction,
        n_sequences=int(batch),
        n_positions=int(n),
        sharpness=sharpness_summary(parts.pattern, attention=direction),
    )


def _to_cpu(params: GramParameters) -> GramParameters:
    changes = {
        f.name: getattr(params, f.name).cpu()
        for f in dataclasses.fields(params)
        if isinstance(getattr(params, f.name), torch.Tensor)
    }
    return dataclasses.replace(params, **changes)


# --------------------------------------------------------------------------------------------
# Sharpness study
# --------------------------------------------------------------------------------------------


def query_scale_hooks(scale: float, *, layer: int = 0) -> list[tuple[str, Any]]:
    """Forward hooks multiplying block ``layer``'s queries by ``scale``.

    Equivalent to scaling ``W_Q`` and ``b_Q`` by ``scale``: every attention score of the block is
    multiplied by ``scale`` (``0`` gives exactly uniform attention, large values sharpen it).

    Examples:
        >>> query_scale_hooks(2.0)[0][0]
        'blocks.0.attn.hook_q'
    """
    scale = check_float(scale, "scale", "query_scale_hooks", min=0.0)
    check_int(layer, "layer", "query_scale_hooks", min=0)

    def hook(q: torch.Tensor, hook: Any) -> torch.Tensor:
        return q * scale

    return [(f"blocks.{layer}.attn.hook_q", hook)]


_STUDY_DEFAULTS: dict[str, Any] = {
    "n_layers": 1,
    "d_model": 64,
    "n_heads": 4,
    "d_vocab": 256,
    "n_ctx": 32,
}


def attention_sharpness_study(
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    model: Any = None,
    tokens: Int[torch.Tensor, "batch pos"] | None = None,
    batch: int = 32,
    pos: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    **build_kwargs: Any,
) -> pd.DataFrame:
    """How well each prediction describes block 0 as its attention sharpens.

    For each ``scale`` the block-0 attention scores are multiplied by ``scale`` (queries scaled
    through :func:`query_scale_hooks`, i.e. ``W_Q`` and ``b_Q`` times ``scale``) and
    :func:`first_layer_theory` is run. At ``scale = 0`` attention is exactly uniform and both the
    closed form and the pattern prediction describe the model; as attention sharpens the closed
    form stops describing it while the pattern-based prediction (which uses the actual patterns)
    keeps tracking it.

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
        :attr:`FirstLayerTheory.metrics`.

    Raises:
        ValueError: For negative or no scales, both ``model`` and ``build_kwargs``, or bad sizes.

    Examples:
        >>> frame = attention_sharpness_study(scales=(0.0, 8.0), batch=2, pos=6, d_model=16)
        >>> sorted(frame["scale"].unique().tolist())
        [0.0, 8.0]
    """
    from nopelens.measure import random_tokens
    from nopelens.models import build_model

    func = "attention_sharpness_study"
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
    scales = tuple(check_float(s, "scales", func, min=0.0) for s in scales)
    check_int(batch, "batch", func, min=1)
    check_int(seed, "seed", func, min=0)
    if model is None:
        model = build_model(**{**_STUDY_DEFAULTS, "seed": seed, **build_kwargs})
    elif build_kwargs:
        raise InvalidParameterError(
            f"{func} got build_model arguments {', '.join(sorted(build_kwargs))} together with "
            f"'model'; pass one or the other."
        )
    _check_model(model, func)
    if tokens is None:
        n_ctx, d_vocab = model.cfg.n_ctx, model.cfg.d_vocab
        pos = min(32, n_ctx) if pos is None else check_int(pos, "pos", func, min=3, max=n_ctx)
        tokens = random_tokens(batch, pos, d_vocab, seed=seed, distinct=d_vocab >= pos)
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


__all__ = [
    "FirstLayerDecomposition",
    "FirstLayerTheory",
    "GramParameters",
    "SiteTheory",
    "attention_sharpness_study",
    "decompose_first_layer",
    "estimate_gram_parameters",
    "first_layer_theory",
    "fit_metrics",
    "gram_to_cosine",
    "predict_gram",
    "query_scale_hooks",
    "same_token_matrix",
    "uniform_attention_similarity",
    "uniform_residual_similarity",
    "uniform_variance",
]
