"""Pure attention maths: per-head decomposition, uniform patterns and sharpness statistics.

Everything here maps tensors to tensors (no model, no I/O), with TransformerLens' shapes:
``pattern`` is ``blocks.L.attn.hook_pattern`` ``[batch, head_index, query_pos, key_pos]``, ``v`` is
``blocks.L.attn.hook_v`` ``[batch, pos, head_index, d_head]`` and ``W_O`` is ``model.W_O[L]``
``[head_index, d_head, d_model]``.

Per-head decomposition (Elhage et al. 2021, "A Mathematical Framework"): with no non-linearity
between the values and the output,

    attn_out[b, i] = sum_h sum_j pattern[b, h, i, j] * (v[b, j, h] @ W_O[h]) + b_O,

so the attention output is a sum of one ``[batch, query_pos, d_model]`` term per head plus the
output bias. ``v[b, j, h] @ W_O[h]`` (the *value-output vector* of key ``j`` in head ``h``) is the
vector that the first-layer theory models as an isotropic random vector
(:mod:`nopelens.theory.gram`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from jaxtyping import Float

from nopelens.validation import InvalidParameterError, check_choice, check_int

AttentionDirection = Literal["causal", "bidirectional"]
_DIRECTIONS = ("causal", "bidirectional")


def uniform_pattern(
    n: int, *, attention: AttentionDirection = "causal"
) -> Float[torch.Tensor, "query_pos key_pos"]:
    """The uniform attention pattern over ``n`` positions.

    Causal: query ``i`` (0-indexed) attends to keys ``0..i`` with weight ``1 / (i + 1)``, i.e.
    ``A_ij = 1/i`` for ``j <= i`` in the 1-indexed notation of the theory. Bidirectional: every
    query attends to every key with weight ``1 / n``. This is the exact pattern of a layer whose
    ``W_Q`` or ``W_K`` is zero (all attention scores equal).

    Args:
        n: Number of positions.
        attention: ``"causal"`` or ``"bidirectional"``.

    Returns:
        Row-stochastic ``[query_pos, key_pos]`` float32 tensor.

    Raises:
        ValueError: If ``n < 1`` or ``attention`` is unknown.

    Examples:
        >>> uniform_pattern(3)
        tensor([[1.0000, 0.0000, 0.0000],
                [0.5000, 0.5000, 0.0000],
                [0.3333, 0.3333, 0.3333]])
        >>> uniform_pattern(2, attention="bidirectional")
        tensor([[0.5000, 0.5000],
                [0.5000, 0.5000]])
    """
    check_int(n, "n", "uniform_pattern", min=1)
    check_choice(attention, "attention", _DIRECTIONS, "uniform_pattern")
    if attention == "bidirectional":
        return torch.full((n, n), 1.0 / n)
    mask = torch.ones(n, n).tril()
    return mask / mask.sum(-1, keepdim=True)


def _check_tensor(x: object, name: str, func: str, ndim: int, dims: str) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InvalidParameterError(
            f"The {name!r} parameter of {func} must be a float torch.Tensor [{dims}]. "
            f"Got {type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype} instead."
        )
    if x.ndim != ndim:
        raise InvalidParameterError(
            f"The {name!r} parameter of {func} must have shape [{dims}]. "
            f"Got shape {tuple(x.shape)} instead."
        )


def _check_heads(pattern: Any, v: Any, W_O: Any, func: str) -> None:
    _check_tensor(pattern, "pattern", func, 4, "batch head_index query_pos key_pos")
    _check_tensor(v, "v", func, 4, "batch pos head_index d_head")
    _check_tensor(W_O, "W_O", func, 3, "head_index d_head d_model")
    b, h, q, k = pattern.shape
    if v.shape[0] != b or v.shape[1] != k or v.shape[2] != h or W_O.shape[:2] != v.shape[2:]:
        raise InvalidParameterError(
            f"{func}: pattern has shape {tuple(pattern.shape)} [batch head_index query_pos "
            f"key_pos], v has shape {tuple(v.shape)} [batch pos head_index d_head] and W_O has "
            f"shape {tuple(W_O.shape)} [head_index d_head d_model]; batch, head_index, key_pos=pos "
            f"and d_head must agree."
        )


def value_outputs(
    v: Float[torch.Tensor, "batch pos head_index d_head"],
    W_O: Float[torch.Tensor, "head_index d_head d_model"],
) -> Float[torch.Tensor, "batch pos head_index d_model"]:
    """The value-output vectors ``u[b, j, h] = v[b, j, h] @ W_O[h]``.

    Head ``h`` writes ``sum_j pattern[b, h, i, j] * u[b, j, h]`` into the residual stream at query
    ``i``; ``u`` is what the first-layer theory treats as isotropic random vectors.

    Examples:
        >>> value_outputs(torch.ones(1, 2, 3, 4), torch.ones(3, 4, 5)).shape
        torch.Size([1, 2, 3, 5])
    """
    return torch.einsum("bphd,hdm->bphm", v, W_O)


def head_outputs(
    pattern: Float[torch.Tensor, "batch head_index query_pos key_pos"],
    v: Float[torch.Tensor, "batch key_pos head_index d_head"],
    W_O: Float[torch.Tensor, "head_index d_head d_model"],
) -> Float[torch.Tensor, "batch head_index query_pos d_model"]:
    """Per-head contributions to the attention output, from the pattern, values and ``W_O``.

    ``out[b, h, i] = (sum_j pattern[b, h, i, j] * v[b, j, h]) @ W_O[h]``; summing over
    ``head_index`` and adding ``b_O`` gives ``hook_attn_out`` (the same numbers as TransformerLens'
    ``ActivationCache.stack_head_results``, but computed from the pattern so that each term of the
    theory is visible).

    Args:
        pattern: Attention pattern (``attn.hook_pattern``).
        v: Value vectors (``attn.hook_v``), key positions along dim 1.
        W_O: Output weights of the same block (``model.W_O[layer]``).

    Returns:
        ``[batch, head_index, query_pos, d_model]``.

    Raises:
        ValueError: If the shapes do not agree.

    Examples:
        >>> pattern = uniform_pattern(3).expand(1, 2, 3, 3)
        >>> v = torch.arange(3.0).reshape(1, 3, 1, 1).expand(1, 3, 2, 1)
        >>> head_outputs(pattern, v, torch.ones(2, 1, 1))[0, 0, :, 0]
        tensor([0.0000, 0.5000, 1.0000])
    """
    _check_heads(pattern, v, W_O, "head_outputs")
    z = torch.einsum("bhqk,bkhd->bhqd", pattern, v)
    return torch.einsum("bhqd,hdm->bhqm", z, W_O)


def attention_entropy(
    pattern: Float[torch.Tensor, "*batch query_pos key_pos"],
) -> Float[torch.Tensor, "*batch query_pos"]:
    """Entropy (nats) of each query's attention distribution, with ``0 log 0 = 0``.

    Uniform causal attention has entropy ``log(i)`` at the 1-indexed query ``i``
    (:func:`uniform_entropy`); a one-hot pattern has entropy 0.

    Examples:
        >>> attention_entropy(uniform_pattern(3))
        tensor([0.0000, 0.6931, 1.0986])
    """
    return torch.special.entr(pattern).sum(-1) + 0.0  # entr(0) = 0; "+ 0.0" turns -0.0 into 0.0


def uniform_entropy(
    n: int, *, attention: AttentionDirection = "causal"
) -> Float[torch.Tensor, " query_pos"]:
    """The entropy of uniform attention: ``log(i)`` (causal, 1-indexed ``i``) or ``log(n)``.

    Examples:
        >>> uniform_entropy(3)
        tensor([0.0000, 0.6931, 1.0986])
    """
    check_int(n, "n", "uniform_entropy", min=1)
    check_choice(attention, "attention", _DIRECTIONS, "uniform_entropy")
    if attention == "bidirectional":
        return torch.full((n,), math.log(n))
    return torch.arange(1, n + 1, dtype=torch.float32).log()


def max_attention(
    pattern: Float[torch.Tensor, "*batch query_pos key_pos"],
) -> Float[torch.Tensor, "*batch query_pos"]:
    """The largest attention weight of each query (1 for a one-hot pattern, ``1/i`` if uniform).

    Examples:
        >>> max_attention(uniform_pattern(3))
        tensor([1.0000, 0.5000, 0.3333])
    """
    return pattern.max(-1).values


def sharpness_summary(
    pattern: Float[torch.Tensor, "*batch query_pos key_pos"],
    *,
    attention: AttentionDirection = "causal",
) -> dict[str, float]:
    """How far a set of attention patterns is from uniform, as a few scalars.

    Returns:
        ``attention_entropy``: mean entropy (nats) over every query row;
        ``uniform_entropy``: the same mean for uniform attention;
        ``relative_entropy``: mean over rows with more than one visible key of
        ``entropy / uniform entropy`` (1 = uniform, 0 = one-hot);
        ``max_attention``: mean largest weight per row (the uniform value for comparison is
        ``mean(1/i)``, returned as ``uniform_max_attention``).

    Examples:
        >>> stats = sharpness_summary(uniform_pattern(4).expand(2, 4, 4))
        >>> round(stats["relative_entropy"], 4), round(stats["max_attention"], 4)
        (1.0, 0.5208)
    """
    check_choice(attention, "attention", _DIRECTIONS, "sharpness_summary")
    n = pattern.shape[-1]
    entropy = attention_entropy(pattern.float())
    flat = entropy.reshape(-1, n)
    uniform = uniform_entropy(n, attention=attention).to(flat.device)
    rows = uniform > 0
    relative = (flat[:, rows] / uniform[rows]).mean() if rows.any() else torch.tensor(1.0)
    top = max_attention(pattern.float()).reshape(-1, n)
    uniform_top = uniform_pattern(n, attention=attention).max(-1).values
    return {
        "attention_entropy": float(flat.mean()),
        "uniform_entropy": float(uniform.mean()),
        "relative_entropy": float(relative),
        "max_attention": float(top.mean()),
        "uniform_max_attention": float(uniform_top.mean()),
    }
