# ruff: noqa: F722 (jaxtyping shape strings are not Python expressions)
"""Self-similarity of hidden states and the neighborhood scores (pure functions, no model).

The neighborhood hypothesis (Zuo, Guerzhoy & Guerzhoy, COLING 2025) says that in a causal
transformer without positional encodings the hidden states of nearby positions are more
cosine-similar than those of distant positions. This module turns that sentence into numbers:

* :func:`self_similarity`: ``S_ij = cos(h_i, h_j)`` for the hidden states of one sequence,
  optionally centred on the sequence mean.
* :func:`adjacency_probability` (AP): the fraction of positions whose most similar other position
  is an immediate neighbour. Chance for exchangeable states is :func:`adjacency_chance` ``= 2/n``.
* :func:`neighborhood_concordance` (NC): over all triples ``(i, j, k)`` with
  ``|i-j| < |i-k|``, the probability that ``S_ij > S_ik`` (ties count 1/2). Chance is
  :data:`CONCORDANCE_CHANCE` ``= 0.5``, a perfect pattern scores 1.
* :func:`distance_profile`: the mean of ``S_ij`` over pairs at each distance ``|i-j| = d``.

Positions are 0-indexed. Every score function takes any square ``[..., pos, pos]`` matrix (it
need not be symmetric: scores are computed row by row, row ``i`` being "seen from position i"),
requires ``pos >= 3`` and returns one value per leading index. Everything is vectorised and nothing
is ``O(n^3)``: NC ranks each row once and counts inversions with one short-key sort per bit of the
position index (``O(n^2 log n)`` per matrix, in row chunks so memory stays ``O(n^2)``). Tensors on
the CPU are sorted with NumPy (its SIMD sort is many times faster than ``torch.sort`` on CPU);
tensors on an accelerator stay there and use ``torch.sort``. Both give the same exact counts.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from jaxtyping import Float, Int

from nopelens.validation import InvalidParameterError

#: The expected neighborhood concordance of exchangeable hidden states.
CONCORDANCE_CHANCE: float = 0.5

#: Rows are processed in chunks of about this many matrix entries (bounds temporary memory).
_CHUNK_ELEMENTS = 1 << 17
#: Sequence lengths up to this use cached per-level key tables.
_TABLE_MAX_N = 512


# ---------------------------------------------------------------------------------------------
# validation


def _check_tensor(x: object, name: str, func: str, min_dims: int, dims: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InvalidParameterError(
            f"The {name!r} parameter of {func} must be a floating-point torch.Tensor [{dims}]. "
            f"Got {type(x).__name__} instead."
        )
    if not x.is_floating_point():
        raise InvalidParameterError(
            f"The {name!r} parameter of {func} must be a floating-point torch.Tensor [{dims}]. "
            f"Got dtype {x.dtype} instead."
        )
    if x.ndim < min_dims:
        raise InvalidParameterError(
            f"The {name!r} parameter of {func} must have shape [{dims}]. "
            f"Got shape {tuple(x.shape)} instead."
        )
    return x


def _check_sim(sim: object, func: str) -> torch.Tensor:
    sim = _check_tensor(sim, "sim", func, 2, "... pos pos")
    n, n2 = sim.shape[-2:]
    if n != n2:
        raise InvalidParameterError(
            f"The 'sim' parameter of {func} must be square in its last two dimensions "
            f"[... pos pos]. Got shape {tuple(sim.shape)} instead."
        )
    if n < 3:
        raise InvalidParameterError(
            f"The 'sim' parameter of {func} must have pos >= 3 (with fewer positions every other "
            f"position is a neighbour and the score is undefined). Got pos={n} instead."
        )
    if not bool(torch.isfinite(sim.sum())) and not bool(torch.isfinite(sim).all()):
        raise InvalidParameterError(f"The 'sim' parameter of {func} contains NaN or infinity.")
    return sim if sim.dtype in (torch.float32, torch.float64) else sim.float()


def adjacency_chance(n: int) -> float:
    """Expected adjacency probability of exchangeable hidden states at sequence length ``n``.

    If the states are exchangeable (i.i.d., or any distribution invariant to permuting the
    positions), the most similar other position ``j*(i)`` is uniform over the ``n-1`` others. An
    interior row has two neighbours (probability ``2/(n-1)``), the two end rows one
    (``1/(n-1)``), so the expectation is exactly::

        ((n - 2) * 2/(n-1) + 2 * 1/(n-1)) / n = 2 (n-1) / (n (n-1)) = 2 / n.

    Args:
        n: Sequence length (``>= 3``).

    Returns:
        ``2 / n``.

    Raises:
        ValueError: If ``n`` is not an int ``>= 3``.

    Examples:
        >>> adjacency_chance(4)
        0.5
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise InvalidParameterError(
            f"The 'n' parameter of adjacency_chance must be an int >= 3. Got {n!r} instead."
        )
    return 2.0 / n


def concordance_triples(n: int) -> Int[torch.Tensor, " pos"]:
    """Number of NC pairs ``(j, k)``, ``|i-j| < |i-k|``, both ``!= i``, of each row ``i``.

    Row ``i`` has ``n-1`` other positions, i.e. ``C(n-1, 2)`` unordered pairs, of which
    ``min(i, n-1-i)`` are at equal distance (``i-d`` and ``i+d``) and do not count.

    Examples:
        >>> concordance_triples(5).tolist()
        [6, 5, 4, 5, 6]
    """
    i = torch.arange(n)
    return (n - 1) * (n - 2) // 2 - torch.minimum(i, n - 1 - i)


# ---------------------------------------------------------------------------------------------
# self-similarity


def self_similarity(
    hidden: Float[torch.Tensor, "*batch pos d_model"], centered: bool = False
) -> Float[torch.Tensor, "*batch pos pos"]:
    """Cosine self-similarity matrix of each sequence of hidden states.

    ``S_ij = <h_i, h_j> / (|h_i| |h_j|)``. With ``centered=True`` each sequence's mean hidden
    state (over positions) is subtracted first, which removes the component shared by every
    position (it pushes all similarities towards 1 and hides the neighborhood structure).

    Zero-vector rule: a hidden state whose norm is zero, or numerically zero (at most
    ``32 * eps(dtype)`` times the largest norm of that sequence's *uncentred* states, e.g. the
    centred states of a constant sequence), has cosine ``0`` with every other position and ``1``
    with itself. The result never contains NaN; its diagonal is exactly 1 and its entries lie in
    ``[-1, 1]``. Rescaling a sequence by a positive factor leaves ``S`` unchanged.

    Computed in float32 (float64 inputs stay float64) with one batched matrix product:
    ``O(pos^2 d_model)`` time, ``O(pos^2)`` memory per sequence.

    Args:
        hidden: Hidden states ``[..., pos, d_model]`` (any leading batch dimensions).
        centered: Subtract the per-sequence mean over positions before taking cosines.

    Returns:
        ``[..., pos, pos]`` cosine similarities.

    Raises:
        ValueError: If ``hidden`` is not a floating tensor with at least 2 dimensions, has an empty
            ``pos`` or ``d_model``, or contains NaN or infinity.

    Examples:
        >>> h = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
        >>> self_similarity(h)
        tensor([[1.0000, 0.7071, 0.0000],
                [0.7071, 1.0000, 0.0000],
                [0.0000, 0.0000, 1.0000]])
    """
    func = "self_similarity"
    hidden = _check_tensor(hidden, "hidden", func, 2, "... pos d_model")
    if not isinstance(centered, bool):
        raise InvalidParameterError(
            f"The 'centered' parameter of {func} must be a bool. Got {centered!r} instead."
        )
    if hidden.shape[-1] == 0 or hidden.shape[-2] == 0:
        raise InvalidParameterError(
            f"The 'hidden' parameter of {func} must have pos >= 1 and d_model >= 1. "
            f"Got shape {tuple(hidden.shape)} [... pos d_model] instead."
        )
    x = hidden if hidden.dtype in (torch.float32, torch.float64) else hidden.float()
    norms = torch.linalg.vector_norm(x, dim=-1)  # [..., pos]
    scale = norms.amax(dim=-1, keepdim=True)
    if not bool(torch.isfinite(scale).all()):  # NaN and inf propagate into the norms
        raise InvalidParameterError(
            f"The 'hidden' parameter of {func} contains NaN or infinity (or values too large "
            f"for {x.dtype} norms)."
        )
    if centered:
        x = x - x.mean(dim=-2, keepdim=True)
        norms = torch.linalg.vector_norm(x, dim=-1)
    tol = 32 * torch.finfo(x.dtype).eps * scale
    nonzero = norms > tol
    inv = torch.where(nonzero, 1.0 / norms.clamp_min(torch.finfo(x.dtype).tiny), 0.0)
    unit = x * inv.unsqueeze(-1)
    sim = unit @ unit.transpose(-1, -2)
    sim.clamp_(-1.0, 1.0)
    sim.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    return sim


# ---------------------------------------------------------------------------------------------
# adjacency probability


def _offdiag_rowmax(sim: torch.Tensor) -> torch.Tensor:
    n = sim.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    return sim.masked_fill(eye, -math.inf).amax(dim=-1)


def adjacency_hits(
    sim: Float[torch.Tensor, "*batch pos pos"],
) -> Float[torch.Tensor, "*batch pos"]:
    """Per position: 1.0 if the most similar other position is an immediate neighbour, else 0.0.

    ``j*(i) = argmax_{j != i} S_ij`` with the tie rule of :func:`nearest_neighbor` (nearest
    ``j`` first), so row ``i`` scores 1 exactly when ``max(S_{i,i-1}, S_{i,i+1})`` equals the
    row's off-diagonal maximum. :func:`adjacency_probability` is the mean over positions.

    Examples:
        >>> sim = torch.tensor([[1.0, 0.9, 0.1], [0.9, 1.0, 0.2], [0.1, 0.3, 1.0]])
        >>> adjacency_hits(sim)
        tensor([1., 1., 1.])
    """
    sim = _check_sim(sim, "adjacency_hits")
    return _adjacency_hits(sim)


def _adjacency_hits(sim: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """Hits of a validated ``sim``; ``overwrite`` borrows its diagonal as scratch (restored)."""
    if overwrite:
        diagonal = sim.diagonal(dim1=-2, dim2=-1)
        saved = diagonal.clone()
        diagonal.fill_(-math.inf)
        rowmax = sim.amax(dim=-1)
        diagonal.copy_(saved)
    else:
        rowmax = _offdiag_rowmax(sim)
    below = sim.diagonal(offset=-1, dim1=-2, dim2=-1)  # S[i+1, i], i = 0..n-2
    above = sim.diagonal(offset=1, dim1=-2, dim2=-1)  # S[i, i+1]
    left = torch.nn.functional.pad(below, (1, 0), value=-math.inf)  # S[i, i-1]
    right = torch.nn.functional.pad(above, (0, 1), value=-math.inf)  # S[i, i+1]
    return (torch.maximum(left, right) >= rowmax).to(sim.dtype)


def adjacency_probability(
    sim: Float[torch.Tensor, "*batch pos pos"],
) -> Float[torch.Tensor, "*batch"]:
    """Adjacency probability: fraction of positions whose most similar other position is adjacent.

    For each position ``i``, ``j*(i) = argmax_{j != i} S_ij`` and
    ``AP = (1/n) sum_i [ |j*(i) - i| = 1 ]``. Ties are broken deterministically: among the
    maximisers the nearest ``j`` wins, then the smaller ``j`` (see :func:`nearest_neighbor`);
    so a row counts as a hit whenever an immediate neighbour attains the row maximum.
    Chance for exchangeable states is :func:`adjacency_chance` ``(n) = 2/n``; a perfect
    neighborhood pattern gives 1. ``O(n^2)`` per matrix.

    Args:
        sim: Similarity matrices ``[..., pos, pos]`` with ``pos >= 3`` (row ``i`` is read as the
            similarities seen from position ``i``; symmetry is not required).

    Returns:
        ``[...]`` one score per matrix, in ``[0, 1]``.

    Raises:
        ValueError: If ``sim`` is not a floating tensor of square matrices with ``pos >= 3``, or
            contains NaN or infinity.

    Examples:
        >>> sim = torch.tensor([[1.0, 0.9, 0.1], [0.9, 1.0, 0.2], [0.1, 0.3, 1.0]])
        >>> float(adjacency_probability(sim))
        1.0
        >>> far = torch.tensor([[1.0, 0.1, 0.9], [0.1, 1.0, 0.2], [0.9, 0.2, 1.0]])
        >>> round(float(adjacency_probability(far)), 4)
        0.3333
    """
    sim = _check_sim(sim, "adjacency_probability")
    return _adjacency_hits(sim).mean(dim=-1)


def nearest_neighbor(
    sim: Float[torch.Tensor, "*batch pos pos"],
) -> Int[torch.Tensor, "*batch pos"]:
    """The most similar other position ``j*(i) = argmax_{j != i} S_ij`` of every position.

    Tie rule (deterministic, exact float equality): among the positions attaining the row
    maximum, the one nearest to ``i`` wins; if ``i-d`` and ``i+d`` tie, the smaller index
    ``i-d`` wins.

    Examples:
        >>> sim = torch.tensor([[1.0, 0.5, 0.5, 0.5], [0.5, 1.0, 0.5, 0.5],
        ...                     [0.5, 0.5, 1.0, 0.5], [0.5, 0.5, 0.5, 1.0]])
        >>> nearest_neighbor(sim).tolist()
        [1, 0, 1, 2]
    """
    sim = _check_sim(sim, "nearest_neighbor")
    n = sim.shape[-1]
    rowmax = _offdiag_rowmax(sim)
    idx = torch.arange(n, device=sim.device)
    dist = (idx[:, None] - idx[None, :]).abs()
    key = dist * n + idx[None, :]  # nearest first, then smaller j
    key.fill_diagonal_(n * n)
    candidate = sim == rowmax.unsqueeze(-1)
    return key.expand_as(sim).masked_fill(~candidate, n * n).argmin(dim=-1)


# ---------------------------------------------------------------------------------------------
# neighborhood concordance


def _slots(i: torch.Tensor, n: int) -> torch.Tensor:
    """Slot of every column ``j`` in row ``i``'s (distance, index) order; the diagonal is last.

    ``[len(i), n]`` int64: for ``d = |i-j| <= c = min(i, n-1-i)`` the pair ``i-d, i+d`` sits at
    slots ``2d-2, 2d-1``; farther columns (only on the longer side) follow from slot ``2c``; the
    diagonal takes slot ``n-1`` (farthest, and it is given the largest rank, so it never forms a
    concordant pair).
    """
    j = torch.arange(n, device=i.device)[None, :]
    i = i[:, None]
    d = (i - j).abs()
    c = torch.minimum(i, n - 1 - i)
    slot = torch.where(d <= c, 2 * (d - 1) + (j > i).long(), 2 * c + d - c - 1)
    return torch.where(d == 0, torch.full_like(slot, n - 1), slot)


def _level_bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _key_dtype(n: int) -> np.dtype:
    bits = _level_bits(n)
    top = (((n - 1) >> 1) << (bits + 1)) + 2 * (n - 1) + 1  # the largest key (level 0)
    return np.dtype(np.uint16 if top < 2**16 else np.int32 if top < 2**31 else np.int64)


def _row_offsets(n: int, row_lo: int, rows: int) -> Iterable[np.ndarray]:
    """Per-level key offsets, each ``[rows, n]``, for rows ``row_lo..row_lo+rows``.

    Small sizes slice a cached table; large ones compute each level on the fly (bounded memory).
    """
    if n <= _TABLE_MAX_N:
        return _full_offsets(n)[:, row_lo : row_lo + rows]
    return _level_offsets(_slots_numpy(row_lo, rows, n), n)


def _slots_numpy(row_lo: int, rows: int, n: int) -> np.ndarray:
    """:func:`_slots` for rows ``row_lo..row_lo+rows`` as int32 numpy (fewer passes)."""
    i = np.arange(row_lo, row_lo + rows, dtype=np.int32)[:, None]
    j = np.arange(n, dtype=np.int32)[None, :]
    c = np.minimum(i, n - 1 - i)
    d = np.abs(i - j)
    slot = np.where(d <= c, 2 * d - 2 + (j > i), d + c - 1)
    slot[np.arange(rows), np.arange(row_lo, row_lo + rows)] = n - 1
    return slot


def _level_offsets(slot: np.ndarray, n: int) -> Iterator[np.ndarray]:
    """Yield ``((slot >> (k+1)) << (bits+1)) | ((slot >> k) & 1)`` for ``k = 0..bits-1``."""
    bits, dtype = _level_bits(n), _key_dtype(n)
    s = slot.astype(np.int64 if dtype == np.int64 else np.int32)
    high = np.empty_like(s)
    low = np.empty_like(s)
    for _ in range(bits):
        np.right_shift(s, 1, out=high)
        np.left_shift(high, bits + 1, out=high)
        np.bitwise_and(s, 1, out=low)
        np.bitwise_or(high, low, out=high)
        yield high.astype(dtype, copy=False)
        s >>= 1


@functools.lru_cache(maxsize=8)
def _full_offsets(n: int) -> np.ndarray:
    return np.stack([o.copy() for o in _level_offsets(_slots_numpy(0, n, n), n)])


def _left_slot_sum(n: int) -> int:
    """Sum over levels k of the slots p < n whose bit k is 0 (the nearer half of each block)."""
    p = np.arange(n)
    return int(sum(p[((p >> k) & 1) == 0].sum() for k in range(_level_bits(n))))


def _ranks_numpy(x: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Twice the min-rank along the last axis (ties share a rank), and tied pairs per row.

    ``x`` is float32 or float64 with no NaN, no ``-0.0`` and a unique largest entry per row. Rows
    are sorted once: float32 as int64 keys (order-preserving value bits, column); float64 with an
    argsort. The ranks are moved back to column order by a second sort of small integer keys
    (column, rank) when those fit in 32 bits, else by a scatter. The result has ``dtype``.
    """
    shape = x.shape
    n = shape[-1]
    rows = x.reshape(-1, n)
    shift = int(n - 1).bit_length()
    if rows.dtype == np.float32:
        bits = rows.view(np.int32)
        flip = bits >> 31
        flip &= 0x7FFFFFFF
        flip ^= bits  # int32 whose order is the float order
        keys = np.left_shift(flip, shift, dtype=np.int64)
        keys |= np.arange(n, dtype=np.int64)
        keys.sort(axis=-1)
        cols = keys & ((1 << shift) - 1)
        equal = (keys[:, 1:] ^ keys[:, :-1]).view(np.uint64) < (1 << shift)  # same value
    else:
        cols = np.argsort(rows, axis=-1)
        vals = np.take_along_axis(rows, cols, axis=-1)
        equal = vals[:, 1:] == vals[:, :-1]
    ties = np.zeros(rows.shape[0], dtype=np.int64)
    tied = np.flatnonzero(equal.any(axis=-1)) if equal.any() else np.empty(0, dtype=np.int64)
    rank: np.ndarray = np.arange(n, dtype=np.int64)  # broadcast over rows
    if tied.size:  # runs of equal values share the rank of their first element
        t = np.arange(n, dtype=np.int64)
        new = np.ones((tied.size, n), dtype=bool)
        new[:, 1:] = ~equal[tied]
        run_start = np.maximum.accumulate(np.where(new, t, 0), axis=-1)
        ties[tied] = (t - run_start).sum(axis=-1)
        rank = np.broadcast_to(rank, rows.shape).copy()
        rank[tied] = run_start
    if 2 * shift <= 32:
        small = np.dtype(np.uint16 if 2 * shift <= 16 else np.uint32)
        back = cols.astype(small)
        back <<= shift
        back |= rank.astype(small)
        back.sort(axis=-1)
        back &= (1 << shift) - 1
        out = back.astype(dtype, copy=False)
    else:
        out = np.empty(rows.shape, dtype=dtype)
        cols += (np.arange(rows.shape[0], dtype=np.int64) * n)[:, None]
        out.reshape(-1)[cols.reshape(-1)] = np.broadcast_to(rank, rows.shape).reshape(-1)
    out <<= 1
    return out.reshape(shape), ties.reshape(shape[:-1])


def _counts_numpy(block: np.ndarray, row_lo: int) -> np.ndarray:
    """Twice the concordance count of rows ``row_lo..`` of matrices ``block`` [mats, rows, n]."""
    mats, rows, n = block.shape
    offsets = _row_offsets(n, row_lo, rows)
    dtype = _key_dtype(n)
    levels = _level_bits(n)
    x = block + 0.0  # a copy, with -0.0 turned into +0.0 (they are equal)
    ar = np.arange(rows)
    x[:, ar, ar + row_lo] = np.inf  # the diagonal: largest, unique (entries are finite)
    base, ties = _ranks_numpy(x, dtype)
    acc = np.zeros(x.shape, dtype=dtype)
    key = np.empty(x.shape, dtype=dtype)
    wrong = 0
    for level, offset in enumerate(offsets):
        np.add(base, offset, out=key)
        key.sort(axis=-1)
        if level == 0:
            wrong = _equal_distance_pairs(key, row_lo)
        key &= 1
        acc += key
    exact32 = levels * n * n < 2**24  # float32 dot products stay exact below 2^24
    t = np.arange(n, dtype=np.float32 if exact32 else np.float64)
    dots = (acc.astype(t.dtype) @ t).astype(np.int64)
    inversions = levels * (n * (n - 1) // 2) - dots - _left_slot_sum(n)
    return 2 * inversions + ties - wrong


def _equal_distance_pairs(key: np.ndarray, row_lo: int) -> np.ndarray:
    """From the level-0 sorted keys: twice the counted weight of the equal-distance pairs.

    Slots ``(2q, 2q+1)``, ``q < min(i, n-1-i)``, hold ``(i-q-1, i+q+1)``. They are not NC
    triples, but the inversion count compared them with ``i-q-1`` as the nearer one: 2 if that
    one ranks strictly higher (an odd key, i.e. slot ``2q+1``, sorted first), 1 if they tie (keys
    ``2r`` then ``2r+1``), else 0.
    """
    mats, rows, n = key.shape
    half = n // 2
    valid = _equal_distance_mask(n)[row_lo : row_lo + rows]
    pairs = key[..., : 2 * half].reshape(mats, rows, half, 2)
    first_odd = pairs[..., 0] & 1
    tied = (pairs[..., 1] - pairs[..., 0]) == 1
    weight = first_odd + (tied | first_odd.astype(bool))
    weight *= valid
    return weight.sum(axis=-1, dtype=np.int64)


@functools.lru_cache(maxsize=8)
def _equal_distance_mask(n: int) -> np.ndarray:
    """``[n, n // 2]``: True at ``(i, q)`` when slots ``(2q, 2q+1)`` of row ``i`` are a pair."""
    i = np.arange(n)[:, None]
    return np.arange(n // 2)[None, :] < np.minimum(i, n - 1 - i)


def _counts_torch(block: torch.Tensor, row_lo: int) -> torch.Tensor:
    """:func:`_counts_numpy` with torch ops (used for tensors on an accelerator)."""
    mats, rows, n = block.shape
    device = block.device
    bits = _level_bits(n)
    i = torch.arange(row_lo, row_lo + rows, device=device)
    slot = _slots(i, n)
    x = block.clone()
    ar = torch.arange(rows, device=device)
    x[:, ar, ar + row_lo] = math.inf
    values, cols = torch.sort(x, dim=-1)
    t = torch.arange(n, device=device)
    new = torch.ones_like(values, dtype=torch.bool)
    new[..., 1:] = values[..., 1:] != values[..., :-1]
    run_start = torch.where(new, t, torch.zeros_like(t)).cummax(dim=-1).values
    ties = (t - run_start).sum(dim=-1)
    ranks = torch.empty_like(run_start).scatter_(-1, cols, run_start)
    base = 2 * ranks
    acc = torch.zeros_like(base)
    wrong = 0
    for k in range(bits):
        key = torch.sort(base + (((slot >> (k + 1)) << (bits + 1)) + ((slot >> k) & 1))).values
        if k == 0:
            half = n // 2
            c = torch.minimum(i, n - 1 - i)[:, None]
            valid = torch.arange(half, device=device)[None, :] < c
            pairs = key[..., : 2 * half].reshape(mats, rows, half, 2)
            first_odd = pairs[..., 0] & 1
            tied = (pairs[..., 1] - pairs[..., 0]) == 1
            wrong = ((first_odd + (tied | first_odd.bool()).long()) * valid).sum(dim=-1)
        acc += key & 1
    inversions = bits * (n * (n - 1) // 2) - (acc * t).sum(dim=-1) - _left_slot_sum(n)
    return 2 * inversions + ties - wrong


def _concordance_counts(sim: torch.Tensor) -> torch.Tensor:
    """Twice the concordance count of every row: ``[..., pos]`` int64 (halves kept exact).

    Row ``i``'s other positions are placed in (distance, index) order (the diagonal last); each
    row is ranked once (one sort; tied values share a rank); then for every bit ``k`` of the slot
    index, sorting the keys ``(slot >> (k+1), rank, bit k of slot)`` puts each dyadic block of
    slots in rank order, and the sum of the sorted slots of its nearer half, minus their own
    slots, counts the pairs (nearer half, farther half) where the nearer one ranks strictly higher.
    Summed over the bits this is every strictly concordant pair; tied pairs add 1/2 and the
    equal-distance pairs ``(i-d, i+d)`` are taken out. Keys fit in 16 bits up to ``pos = 256``.
    """
    n = sim.shape[-1]
    mats = sim.reshape(-1, n, n)
    count = mats.shape[0]
    out = torch.empty(count, n, dtype=torch.int64)
    per_chunk = max(1, _CHUNK_ELEMENTS // (n * n))
    rows_per_chunk = n if n * n <= _CHUNK_ELEMENTS else max(1, _CHUNK_ELEMENTS // n)
    on_cpu = mats.device.type == "cpu"
    data = mats.detach().numpy() if on_cpu else mats.detach()
    jobs = [
        (lo, min(lo + per_chunk, count), row_lo, min(row_lo + rows_per_chunk, n))
        for lo in range(0, count, per_chunk)
        for row_lo in range(0, n, rows_per_chunk)
    ]

    def work(job: tuple[int, int, int, int]) -> None:
        lo, hi, row_lo, row_hi = job
        block = data[lo:hi, row_lo:row_hi]
        if on_cpu:
            out[lo:hi, row_lo:row_hi] = torch.from_numpy(_counts_numpy(block, row_lo))
        else:
            out[lo:hi, row_lo:row_hi] = _counts_torch(block, row_lo).cpu()

    workers = min(torch.get_num_threads(), len(jobs)) if on_cpu else 1
    if workers > 1:  # NumPy releases the GIL in its sorts and ufunc loops
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, jobs))
    else:
        for job in jobs:
            work(job)
    return out.reshape(sim.shape[:-1]).to(sim.device)


def concordance_by_position(
    sim: Float[torch.Tensor, "*batch pos pos"],
) -> Float[torch.Tensor, "*batch pos"]:
    """Neighborhood concordance of each row ``i`` on its own (see :func:`neighborhood_concordance`).

    Row ``i``'s value is its concordant fraction over its own pairs ``(j, k)``,
    ``|i-j| < |i-k|``. When ``pos = 3`` the middle row has no such pair and gets NaN (its only two
    others are both at distance 1); every other row is defined.

    Examples:
        >>> sim = torch.tensor([[1.0, 0.9, 0.5, 0.1], [0.9, 1.0, 0.9, 0.5],
        ...                     [0.5, 0.9, 1.0, 0.9], [0.1, 0.5, 0.9, 1.0]])
        >>> concordance_by_position(sim).tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    sim = _check_sim(sim, "concordance_by_position")
    n = sim.shape[-1]
    triples = concordance_triples(n).to(device=sim.device, dtype=torch.float64)
    frac = _concordance_counts(sim).to(torch.float64) / (2 * triples)
    return frac.to(sim.dtype)


def neighborhood_concordance(
    sim: Float[torch.Tensor, "*batch pos pos"],
) -> Float[torch.Tensor, "*batch"]:
    """Neighborhood concordance: how often a nearer position is more similar than a farther one.

    Over all triples ``(i, j, k)`` with ``j != i``, ``k != i`` and ``|i-j| < |i-k|``::

        NC = ( #[S_ij > S_ik] + 1/2 #[S_ij = S_ik] ) / #triples

    pooled over every row ``i`` (each triple weighs the same; pairs at equal distance
    ``i-d``, ``i+d`` are not triples). ``#triples = sum_i (C(n-1, 2) - min(i, n-1-i))``.
    Chance for exchangeable states is :data:`CONCORDANCE_CHANCE` ``= 0.5`` exactly (swapping
    ``j`` and ``k`` is a symmetry), a perfect pattern gives 1, the reverse pattern 0.

    Computed without the ``O(n^3)`` triple loop. Row ``i``'s other positions get slots in
    (distance, index) order; the strictly concordant pairs are then the inversions between slot
    order and value order. Each row is ranked once (tied values share a rank); for each bit ``k``
    of the slot index, one sort of the small integer keys ``(slot >> (k+1), rank, bit k)`` puts
    every dyadic block of slots in rank order, and the sorted places of the block's nearer half,
    minus their own slots, count the pairs (nearer half, farther half) in which the nearer one is
    strictly more similar. Every pair is counted at exactly one bit (the highest where the slots
    differ). Tied pairs add 1/2 and the pairs at equal distance are taken out. Time
    ``O(n^2 log^2 n)`` comparisons in ``2 + log2 n`` vectorised sorts per row (keys fit in 16 bits
    up to ``pos = 256``), memory ``O(n^2)``: rows are processed in chunks of about 128K entries,
    so one 4096-position matrix needs a few hundred MB on top of its own 64 MB.

    Args:
        sim: Similarity matrices ``[..., pos, pos]`` with ``pos >= 3``.

    Returns:
        ``[...]`` one score per matrix, in ``[0, 1]``.

    Raises:
        ValueError: If ``sim`` is not a floating tensor of square matrices with ``pos >= 3``, or
            contains NaN or infinity.

    Examples:
        >>> idx = torch.arange(6.0)
        >>> sim = 1.0 / (1.0 + (idx[:, None] - idx[None, :]).abs())  # decays with distance
        >>> float(neighborhood_concordance(sim))
        1.0
        >>> float(neighborhood_concordance(torch.ones(6, 6)))  # all ties
        0.5
    """
    sim = _check_sim(sim, "neighborhood_concordance")
    n = sim.shape[-1]
    total = int(concordance_triples(n).sum())
    counts = _concordance_counts(sim).sum(dim=-1).to(torch.float64)
    return (counts / (2 * total)).to(sim.dtype)


# ---------------------------------------------------------------------------------------------
# distance profile


def distance_profile(
    sim: Float[torch.Tensor, "*batch pos pos"],
) -> Float[torch.Tensor, "*batch distance"]:
    """Mean similarity at each distance: ``profile[d] = mean_{|i-j| = d} S_ij``, ``d = 0..n-1``.

    Both ``S_ij`` and ``S_ji`` are included (``2 (n-d)`` entries for ``d >= 1``, the ``n``
    diagonal entries for ``d = 0``), so non-symmetric matrices are averaged over both triangles.
    ``O(n^2)``, one pass.

    Args:
        sim: Similarity matrices ``[..., pos, pos]`` with ``pos >= 3``.

    Returns:
        ``[..., pos]``, indexed by distance ``d``.

    Examples:
        >>> sim = torch.tensor([[1.0, 0.8, 0.2], [0.8, 1.0, 0.6], [0.2, 0.6, 1.0]])
        >>> distance_profile(sim)
        tensor([1.0000, 0.7000, 0.2000])
    """
    sim = _check_sim(sim, "distance_profile")
    n = sim.shape[-1]
    lead = sim.shape[:-2]
    # Skew: lay each row out with n zeros after it and re-read the buffer with rows of 2n+1, so
    # that column c holds S[i, i+c] (c < n) and column 2n+1-d holds S[i+1, i+1-d]: column sums
    # are diagonal sums, in one pass and without index tensors.
    buffer = sim.new_zeros(*lead, n * (2 * n + 1))
    buffer[..., : 2 * n * n].view(*lead, n, 2 * n)[..., :n] = sim
    skewed = buffer.view(*lead, n, 2 * n + 1)
    sums = skewed.sum(dim=-2).double()  # torch's cascade summation: error ~ log2(n) eps
    total = sums[..., :n].clone()
    total[..., 1:] += sums[..., n + 2 :].flip(-1)
    d = torch.arange(n, dtype=torch.float64, device=sim.device)
    counts = torch.where(d == 0, float(n), 2.0 * (n - d))
    return (total / counts).to(sim.dtype)
