r"""The Gram model: expected inner products of block 0's hidden states, from its attention.

Notation as in :mod:`nopelens.theory.decomposition` (positions 1-indexed): ``x_i`` is the residual
input, ``u^h_j`` the value-output vector of key ``j`` in head ``h``, ``A^h`` the attention pattern,
``b_O`` the output bias, ``T_jl = [t_j = t_l]`` (:func:`same_token_matrix`).

**Assumptions.**

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

**Estimation** (:func:`estimate_gram_parameters`). Every parameter is estimated from the layer's
own vectors: ``S`` over token occurrences, ``D`` over pairs of different tokens *within the same
sequence*, which is unbiased for the way the tokens were drawn (e.g. without replacement by
``random_tokens(distinct=True)``, where ``D`` is ``|mu|^2 - sigma^2/(V-1)`` for a vocabulary of
``V`` tokens, not ``|mu|^2``).

**Prediction** (:func:`predict_gram`). With row sums ``r^h_i = sum_j A^h_ij`` (1 unless attention
sinks) the expected Gram matrices are

    K^attn_ik = sum_hh' (S-D)_hh' (A^h T A^h'^T)_ik                    (the "A G A^T" term)
                + sum_hh' r^h_i r^h'_k D_hh' + sum_h (r^h_i + r^h_k) <mu_h, b_O> + |b_O|^2
    K^resid   = X + Q + Q^T + K^attn,
    X_ik      = (E_S - E_D) T_ik + E_D + <mu_E, P_i + P_k> + <P_i, P_k>   (embedding Gram)
    Q_ik      = sum_h (X_S - X_D)_h (T A^h^T)_ik                         (cross terms)
                + sum_h r^h_k (X_D,h + <P_i, mu_h>) + <mu_E + P_i, b_O>

and the predicted similarity is ``K_ik / sqrt(K_ii K_kk)``
(:func:`nopelens.theory.closed_forms.gram_to_cosine`), computed per sequence and averaged over
the batch, like the observed one. The variance across hidden dimensions (Chi et al.) is the same
model applied to vectors projected onto the zero-mean subspace of the hidden dimensions
(:func:`center_hidden_dims`): ``var(h_i) = |Pi h_i|^2 / d_model``, ``Pi = I - 11^T / d_model``.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import torch
from jaxtyping import Float, Int


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


@dataclasses.dataclass(frozen=True, repr=False)
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

    def __repr__(self) -> str:
        """Shapes and the headline variances, never the tensors."""
        return (
            f"GramParameters(head_index={self.value_same.shape[0]}, d_model={self.d_model}, "
            f"pos={self.pos_embed.shape[0]}, sigma2={self.sigma2:.4g}, mu2={self.mu2:.4g}, "
            f"embed_var={self.embed_var:.4g}, s2={self.s2:.4g}, a2={self.a2:.4g}, "
            f"n_samples={self.n_samples}, n_pairs={self.n_pairs})"
        )

    def cpu(self) -> GramParameters:
        """The same parameters with every tensor moved to the CPU."""
        changes = {
            f.name: getattr(self, f.name).cpu()
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **changes)

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
    device = pattern.device
    a = pattern.to(torch.float64)
    t = _float64(same_token, device)
    rows = a.sum(-1)  # r^h_i, 1 unless attention sinks  [batch head pos]
    eye = torch.eye(t.shape[-1], dtype=torch.float64, device=device)
    at = a @ t[:, None] if not torch.equal(t, eye.expand_as(t)) else a  # A^h T (T = I: distinct)
    k_attn = _attention_gram(params, a, at, rows)
    q = _cross_gram(params, at, rows)
    k_resid = _embedding_gram(params, t) + q + q.transpose(-1, -2) + k_attn
    return {"attn_out": k_attn, "resid_mid": k_resid}


def _float64(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.to(device=device, dtype=torch.float64)


def _attention_gram(
    params: GramParameters,
    a: Float[torch.Tensor, "batch head_index pos pos"],
    at: Float[torch.Tensor, "batch head_index pos pos"],
    rows: Float[torch.Tensor, "batch head_index pos"],
) -> Float[torch.Tensor, "batch pos pos"]:
    """``K^attn``: the ``A G A^T`` term plus the shared-component and bias terms."""
    device = a.device
    cov, shared = _float64(params.value_cov, device), _float64(params.value_diff, device)
    mu_h, bias = _float64(params.value_mean, device), _float64(params.bias, device)
    value_bias = rows.transpose(1, 2) @ (mu_h @ bias)  # sum_h r^h_i <mu_h, b_O>  [batch pos]
    k_shared = (
        torch.einsum("bhi,hk,bkj->bij", rows, shared, rows)
        + value_bias[:, :, None]
        + value_bias[:, None, :]
        + bias @ bias
    )
    mixed = torch.einsum("hk,bkij->bhij", cov, a)  # sum_h' (S-D)_hh' A^h'
    return torch.einsum("bhil,bhkl->bik", at, mixed) + k_shared


def _embedding_gram(
    params: GramParameters, t: Float[torch.Tensor, "batch pos pos"]
) -> Float[torch.Tensor, "batch pos pos"]:
    """``X``: the Gram matrix of the residual input (token plus positional embeddings)."""
    mu_e, pos = _float64(params.embed_mean, t.device), _float64(params.pos_embed, t.device)
    pe = pos @ mu_e  # <P_i, mu_E>
    return (params.embed_diff + pe[:, None] + pe[None, :] + pos @ pos.T)[None] + (
        params.embed_var * t
    )


def _cross_gram(
    params: GramParameters,
    at: Float[torch.Tensor, "batch head_index pos pos"],
    rows: Float[torch.Tensor, "batch head_index pos"],
) -> Float[torch.Tensor, "batch pos pos"]:
    """``Q``: inner products of the residual input at ``i`` with the attention output at ``k``."""
    device = at.device
    mu_h, bias = _float64(params.value_mean, device), _float64(params.bias, device)
    mu_e, pos = _float64(params.embed_mean, device), _float64(params.pos_embed, device)
    cross_cov = _float64(params.cross_same - params.cross_diff, device)
    cross_shared = _float64(params.cross_diff, device)
    base = cross_shared[None, :] + pos @ mu_h.T  # X_D,h + <P_i, mu_h>  [pos_i, head]
    return (
        torch.einsum("ih,bhk->bik", base, rows)
        + ((mu_e + pos) @ bias)[None, :, None]
        + torch.einsum("h,bhki->bik", cross_cov, at)
    )


def center_hidden_dims(
    x: Float[torch.Tensor, "*shape d_model"],
) -> Float[torch.Tensor, "*shape d_model"]:
    """Project onto the zero-mean subspace of the last (hidden) dimension (``Pi x``).

    Examples:
        >>> center_hidden_dims(torch.tensor([1.0, 2.0, 3.0]))
        tensor([-1.,  0.,  1.])
    """
    return x - x.mean(-1, keepdim=True)
