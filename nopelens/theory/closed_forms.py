r"""Closed forms: block 0's similarity and variance by position under uniform attention.

These are the uniform-attention limit of the Gram model (:mod:`nopelens.theory.gram`). Positions
are 1-indexed, ``i = pos + 1``. Take uniform causal attention ``A_ij = 1/i`` for ``j <= i``
(exactly what ``W_Q = 0`` or ``W_K = 0`` gives), distinct tokens (``T = I``), no shared component
(``D = 0``, ``b_O = 0``) and one total value variance ``a^2`` per hidden dimension
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

Every cosine here is ``K_ik / sqrt(K_ii K_kk)`` of a Gram matrix ``K`` (:func:`gram_to_cosine`).
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from nopelens.theory.attention import _DIRECTIONS, AttentionDirection
from nopelens.validation import InvalidParameterError, check_choice, check_float, check_int


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
