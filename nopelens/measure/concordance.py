# ruff: noqa: F722 (jaxtyping shape strings are not Python expressions)
"""Neighborhood concordance (NC): exact counts without an ``O(n^3)`` loop (pure, no model).

NC of a square matrix ``S`` is the probability, over all triples ``(i, j, k)`` with ``j != i``,
``k != i`` and ``|i-j| < |i-k|``, that ``S_ij > S_ik`` (a tie counts 1/2). Chance for exchangeable
hidden states is :data:`CONCORDANCE_CHANCE` ``= 0.5``; a perfect pattern scores 1.

Three code paths give the same exact integer counts (tests check them against an ``O(n^3)``
loop and against each other):

* CPU, with numba installed (the default when the work is large enough to repay loading numba,
  1-2 s once per process): :mod:`~nopelens.measure.kernels`, one 32-bit-key sort per
  row and a bitset walk: ``O(n^2 log n)`` per matrix for the sorts plus ``n^3 / 64`` word
  additions (about 0.4 ms for a ``256 x 256`` matrix on one core).
* CPU without numba (or ``NOPELENS_NUMBA=0``): each row is ranked once, then inversions between
  the distance order and the similarity order are counted with one short-key NumPy sort per bit
  of the position index (``O(n^2 log^2 n)``). Keys are 16-bit only where NumPy has a SIMD sort
  for them (AVX-512 ICL or later); on AVX2 32-bit keys sort an order of magnitude faster.
* Tensors on an accelerator stay there: the same inversion count with ``torch.sort``.

Rows are processed in chunks so memory stays ``O(n^2)``, on ``torch.get_num_threads()`` threads
(NumPy sorts and the compiled kernels release the GIL).
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int

from nopelens.measure.similarity import _adjacency_hits, _check_sim

#: The expected neighborhood concordance of exchangeable hidden states.
CONCORDANCE_CHANCE: float = 0.5

#: Rows are processed in chunks of about this many matrix entries (bounds temporary memory).
_CHUNK_ELEMENTS = 1 << 17
#: Sequence lengths up to this use cached per-level key tables.
_TABLE_MAX_N = 512


def _cpu_features() -> dict[str, bool]:
    """NumPy's runtime CPU features (what ``numpy.show_runtime()`` reports), or {} if hidden."""
    for name in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # 2.x, 1.x
        try:
            return dict(importlib.import_module(name).__cpu_features__)
        except (ImportError, AttributeError):
            continue
    return {}


#: NumPy sorts 16-bit integers with SIMD only from AVX-512 ICL on (elsewhere 32-bit keys win).
_SORT16 = bool(_cpu_features().get("AVX512_ICL") or _cpu_features().get("AVX512_SPR"))
#: The compiled kernels are loaded (1-2 s, once per process) when the matrix entries
#: counted so far in this process reach this many; smaller work stays on the NumPy path.
_COMPILE_AFTER = 1 << 21
_entries_seen = 0


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
    if top < 2**16 and _SORT16:
        return np.dtype(np.uint16)
    return np.dtype(np.int32 if top < 2**31 else np.int64)


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
        np.right_shift(s, 1, out=s)


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
        small = np.dtype(np.uint16 if 2 * shift <= 16 and _SORT16 else np.uint32)
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
    wrong: Any = 0
    for level, offset in enumerate(offsets):
        np.add(base, offset, out=key)
        key.sort(axis=-1)
        if level == 0:
            wrong = _equal_distance_pairs(key, row_lo)
        key &= 1
        acc += key
    exact32 = levels * n * n < 2**24  # float32 dot products stay exact below 2^24
    t = np.arange(n, dtype=np.float32 if exact32 else np.float64)
    dots = np.dot(acc.astype(t.dtype), t).astype(np.int64)
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
    wrong: Any = 0
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


def _compiled_counts(entries: int) -> Callable[[np.ndarray, int], np.ndarray] | None:
    """The compiled CPU counter, once this process has counted enough entries to repay loading it.

    Loading numba and the cached kernels costs 1-2 s once per process, more than the
    NumPy path needs for a few small matrices (doctests, tiny tests, a short CLI call); from
    :data:`_COMPILE_AFTER` entries on (e.g. 32 matrices of ``256 x 256``) the kernels are used.
    Returns None without numba or with ``NOPELENS_NUMBA=0``.
    """
    global _entries_seen
    _entries_seen += entries
    if _entries_seen < _COMPILE_AFTER and "nopelens.measure.kernels" not in sys.modules:
        return None
    from nopelens.measure import kernels

    return kernels.concordance_counts if kernels.COMPILED else None


def concordance_counts(
    sim: Float[torch.Tensor, "*batch pos pos"],
) -> Int[torch.Tensor, "*batch pos"]:
    """Twice the concordance count of every row: ``2 #[S_ij > S_ik] + #[S_ij = S_ik]``.

    Over the pairs ``(j, k)``, ``j != i != k``, ``|i-j| < |i-k|`` of row ``i``: the exact integer
    numerator of :func:`neighborhood_concordance` (doubled so that ties stay integers; divide by
    ``2 * concordance_triples(pos)`` for the fraction). Summed over rows and over matrices it
    pools exactly, which is how :func:`nopelens.analyze` streams batches.

    Row ``i``'s other positions are placed in (distance, index) order (the diagonal last); each
    row is ranked once (one sort; tied values share a rank); then for every bit ``k`` of the slot
    index, sorting the keys ``(slot >> (k+1), rank, bit k of slot)`` puts each dyadic block of
    slots in rank order, and the sum of the sorted slots of its nearer half, minus their own
    slots, counts the pairs (nearer half, farther half) where the nearer one ranks strictly higher.
    Summed over the bits this is every strictly concordant pair; tied pairs add 1/2 and the
    equal-distance pairs ``(i-d, i+d)`` are taken out. On the CPU the compiled kernel of
    :mod:`~nopelens.measure.kernels` gives the same counts faster when numba is available.

    Args:
        sim: Similarity matrices ``[..., pos, pos]`` with ``pos >= 3``.

    Returns:
        ``[..., pos]`` int64 on the device of ``sim``.

    Raises:
        ValueError: If ``sim`` is not a floating tensor of square matrices with ``pos >= 3``, or
            contains NaN or infinity.

    Examples:
        >>> sim = torch.tensor([[1.0, 0.9, 0.5, 0.1], [0.9, 1.0, 0.9, 0.5],
        ...                     [0.5, 0.9, 1.0, 0.9], [0.1, 0.5, 0.9, 1.0]])
        >>> concordance_counts(sim).tolist(), (2 * concordance_triples(4)).tolist()
        ([6, 4, 4, 6], [6, 4, 4, 6])
        >>> concordance_counts(torch.ones(4, 4)).tolist()  # all ties: half of every pair
        [3, 2, 2, 3]
    """
    sim = _check_sim(sim, "concordance_counts")
    return _counts(sim, False)[1]


def neighborhood_counts(
    sim: Float[torch.Tensor, "*batch pos pos"],
) -> tuple[Float[torch.Tensor, "*batch pos"], Int[torch.Tensor, "*batch pos"]]:
    """Every row's adjacency hit and concordance count, in one pass over the matrices.

    The same values as ``(adjacency_hits(sim), concordance_counts(sim))``
    (:func:`~nopelens.measure.adjacency_hits`, :func:`concordance_counts`), bit for bit: on the
    CPU with numba the compiled kernel finds each row's maximum while it counts, instead of
    reading the matrices again. :func:`nopelens.analyze` scores every layer with it.

    Args:
        sim: Similarity matrices ``[..., pos, pos]`` with ``pos >= 3``.

    Returns:
        ``(hits, counts)``: ``[..., pos]`` hits in the dtype of ``sim`` (float32 or float64) and
        ``[..., pos]`` int64 counts, on the device of ``sim``.

    Raises:
        ValueError: If ``sim`` is not a floating tensor of square matrices with ``pos >= 3``, or
            contains NaN or infinity.

    Examples:
        >>> sim = torch.tensor([[1.0, 0.9, 0.1], [0.9, 1.0, 0.2], [0.1, 0.3, 1.0]])
        >>> hits, counts = neighborhood_counts(sim)
        >>> hits.tolist(), counts.tolist()
        ([1.0, 1.0, 1.0], [2, 0, 2])
    """
    sim = _check_sim(sim, "neighborhood_counts")
    hits, counts = _counts(sim, True)
    assert hits is not None
    return hits, counts


def _counts(sim: torch.Tensor, with_hits: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Twice the concordance count of every row ``[..., pos]`` int64, and the hits if asked.

    The matrices are cut into chunks of rows, counted on ``torch.get_num_threads()`` threads by
    the compiled kernel, the NumPy path (CPU) or the torch path (accelerators).
    """
    n = sim.shape[-1]
    mats = sim.reshape(-1, n, n)
    count = mats.shape[0]
    out = torch.empty(count, n, dtype=torch.int64)
    per_chunk = max(1, _CHUNK_ELEMENTS // (n * n))
    rows_per_chunk = n if n * n <= _CHUNK_ELEMENTS else max(1, _CHUNK_ELEMENTS // n)
    on_cpu = mats.device.type == "cpu"
    data: Any = mats.detach().numpy() if on_cpu else mats.detach()
    compiled = _compiled_counts(count * n * n) if on_cpu else None
    counts_cpu = (compiled or _counts_numpy) if on_cpu else None
    fused = None
    hits: torch.Tensor | None = None
    if with_hits:
        if compiled is not None:
            from nopelens.measure import kernels

            fused = kernels.neighborhood_counts
            hits = torch.empty(count, n, dtype=sim.dtype)
        else:
            hits = _adjacency_hits(sim)
    jobs = [
        (lo, min(lo + per_chunk, count), row_lo, min(row_lo + rows_per_chunk, n))
        for lo in range(0, count, per_chunk)
        for row_lo in range(0, n, rows_per_chunk)
    ]

    def work(job: tuple[int, int, int, int]) -> None:
        lo, hi, row_lo, row_hi = job
        block = data[lo:hi, row_lo:row_hi]
        if fused is not None:
            counted, hit = fused(block, row_lo)
            out[lo:hi, row_lo:row_hi] = torch.from_numpy(counted)
            hits[lo:hi, row_lo:row_hi] = torch.from_numpy(hit)  # type: ignore[index]
        elif counts_cpu is not None:
            out[lo:hi, row_lo:row_hi] = torch.from_numpy(counts_cpu(block, row_lo))
        else:
            out[lo:hi, row_lo:row_hi] = _counts_torch(block, row_lo).cpu()

    workers = min(torch.get_num_threads(), len(jobs)) if on_cpu else 1
    if workers > 1:  # NumPy sorts, ufunc loops and the compiled kernels release the GIL
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, jobs))
    else:
        for job in jobs:
            work(job)
    counts = out.reshape(sim.shape[:-1]).to(sim.device)
    if fused is not None:
        assert hits is not None
        hits = hits.reshape(sim.shape[:-1])
    return hits, counts


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
    frac = _counts(sim, False)[1].to(torch.float64) / (2 * triples)
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
    order and value order. On the CPU with numba (:mod:`~nopelens.measure.kernels`), one sort of
    32-bit keys per row orders the columns by value, and a walk from the least to the most
    similar column, with a bitset of the slots already passed, counts for each column the
    farther positions that are strictly less similar (a popcount and a running sum per 64-bit
    word): ``O(n^2 log n)`` per matrix for the sorts and ``n^3 / 64`` word additions.
    Otherwise (NumPy, or ``torch.sort`` for tensors on an accelerator) each row is ranked once
    (tied values share a rank); for each bit ``k`` of the slot index, one sort of the small
    integer keys ``(slot >> (k+1), rank, bit k)`` puts every dyadic block of slots in rank
    order, and the sorted places of the block's nearer half, minus their own slots, count the
    pairs (nearer half, farther half) in which the nearer one is strictly more similar; every
    pair is counted at exactly one bit (the highest where the slots differ), ``O(n^2 log^2 n)``
    in ``2 + log2 n`` vectorised sorts per row. Both count tied pairs 1/2 and leave out the
    pairs at equal distance, and give the same exact integer counts.
    Memory ``O(n^2)``: rows are processed in chunks of about 128K entries, so one 4096-position
    matrix needs a few hundred MB on top of its own 64 MB.

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
    counts = _counts(sim, False)[1].sum(dim=-1).to(torch.float64)
    return (counts / (2 * total)).to(sim.dtype)
