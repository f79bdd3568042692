"""Compiled kernels for exact neighborhood-concordance counts (numba; pure-Python fallback).

:func:`concordance_counts` returns, for every row ``i`` of square matrices ``S``, twice the
number of concordant pairs ``2 #[S_ij > S_ik] + #[S_ij = S_ik]`` over the pairs ``(j, k)``,
``j != i != k``, ``|i-j| < |i-k|`` (the numerator of
:func:`~nopelens.measure.neighborhood_concordance`, doubled so that ties stay integers). The
result is the same exact integer count as the NumPy and torch paths of
:mod:`~nopelens.measure.concordance`; this module only makes it fast on a CPU.

Algorithm, per row ``i`` (one sort, then ``n`` steps; no pairs are enumerated):

1. Sort once. Each entry ``S_ij`` becomes a 32-bit key: the top bits of an order-preserving
   integer image of the float (sign flipped, magnitude kept), then the column ``j`` in the low
   ``ceil(log2 n)`` bits; the diagonal gets the largest key. One vectorised NumPy sort of these
   ``int32`` keys per row orders the columns by value (x86-simd-sort is fast for 32-bit keys on
   AVX2 as well as AVX-512, unlike 16-bit keys).
2. Walk the columns from the least to the most similar, keeping a bitset of the *slots* already
   seen: slot = place of ``j`` in row ``i``'s (distance, index) order, so ``|i-j| < |i-k|``
   exactly when ``k``'s slot is at or past ``t(j) = d + min(d, c)``, with ``d = |i-j|`` and
   ``c = min(i, n-1-i)``. When column ``j`` is reached, the slots seen so far at or
   past ``t(j)`` are the farther positions with a smaller value: the strictly concordant pairs in
   which ``j`` is the nearer one. A popcount of one 64-bit word plus a running count per word
   (suffix sums) answers that in ``O(1)``; inserting a slot costs ``O(n / 64)`` additions
   (4 for ``n = 256``).
3. Exactness. Keys keep only the top ``32 - ceil(log2 n)`` bits of the value, so two different
   values may share them, and equal values must count 1/2. Neighbouring sorted keys that share
   their value bits (in about 1 row in 10 at ``n = 256`` for float32 cosines; in most rows at
   ``n = 4096``) form a run that is put in exact value order (an insertion sort of a few
   columns), and each group of equal values in it is counted twice, once before and once after
   its slots are inserted (``2 #smaller + #equal``). ``-0.0`` gets the key of ``0.0``: they are
   equal, as in the definition.

Work per ``n x n`` matrix: ``n`` sorts of ``n`` keys and ``n^2`` steps of ``O(n / 64)`` word
operations; at ``n = 256`` one 64K-key sort and 64K steps of a handful of instructions.

Without numba the same functions run as plain Python (correct, but only for tiny inputs:
:data:`COMPILED` is then False and :mod:`~nopelens.measure.concordance` uses its NumPy path).
Set the environment variable ``NOPELENS_NUMBA=0`` to use the NumPy path even where numba is
installed. Compiled code is cached on disk (``cache=True``, in ``__pycache__`` or numba's
user cache): the first call after installing (or editing this file) compiles, about 15 s for
the float32 and float64 versions together on a busy 2-core machine; later processes import numba
and load the cached code in 1-2 s, and :mod:`~nopelens.measure.concordance` only does so once a
process has counted enough matrix entries to repay it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, no_type_check

import numpy as np

logger = logging.getLogger(__name__)

#: Why the kernels are not compiled ("" when they are).
UNAVAILABLE_REASON = ""
try:
    if os.environ.get("NOPELENS_NUMBA", "1").strip().lower() in ("0", "false", "no", "off"):
        raise ImportError("disabled by NOPELENS_NUMBA")
    import numba
    from numba.core import types as _nbtypes
    from numba.extending import intrinsic as _intrinsic
except Exception as error:  # not installed, disabled, or a broken install: the NumPy path runs
    numba = None  # type: ignore[assignment]
    UNAVAILABLE_REASON = f"numba unavailable ({type(error).__name__}: {error})"
    logger.info("neighborhood concordance: %s; using the NumPy path", UNAVAILABLE_REASON)

#: True when the kernels are compiled by numba (else they run as plain Python, slowly).
COMPILED: bool = numba is not None

_U1 = np.uint64(1)


def _jit(func: Callable[..., Any]) -> Callable[..., Any]:
    """``numba.njit`` (no GIL, cached on disk, no bounds checks) or the function itself."""
    if numba is None:
        return func
    return numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")(func)


if numba is not None:

    @_intrinsic
    @no_type_check
    def _popcount(typingctx, x):  # noqa: D103 (LLVM ctpop: the popcnt instruction)
        sig = _nbtypes.uint64(_nbtypes.uint64)

        @no_type_check
        def codegen(context, builder, signature, args):
            return builder.ctpop(args[0])

        return sig, codegen

else:

    @no_type_check
    def _popcount(x):  # noqa: D103
        return int(x).bit_count()


@_jit
@no_type_check
def _column_bits(n):
    """Bits that hold a column index ``0..n-1``."""
    bits = 0
    while (1 << bits) < n:
        bits += 1
    return bits


@_jit
@no_type_check
def _make_keys(bits, row_lo, sign, drop, keys):
    """Fill ``keys`` ``[mats, rows, n]`` int32 from the float bits ``bits`` (int32 or int64).

    ``sign`` is 31 (float32) or 63 (float64); ``drop`` the extra low value bits to discard (0 or
    32). The diagonal (column ``row_lo + r`` of row ``r``) gets ``2^31 - 1``, the largest key.
    """
    mats, rows, n = bits.shape
    cb = _column_bits(n)
    magnitude = np.int64(0x7FFFFFFFFFFFFFFF) if sign == 63 else np.int64(0x7FFFFFFF)
    negative_zero = -magnitude - 1  # the bits of -0.0: the sign bit alone
    for b in range(mats):
        for r in range(rows):
            src = bits[b, r]
            dst = keys[b, r]
            for j in range(n):
                v = np.int64(src[j])
                v = 0 if v == negative_zero else v  # -0.0 == 0.0: the same key bits
                ordered = v ^ ((v >> sign) & magnitude)  # monotone in the float value
                dst[j] = np.int32(((ordered >> (drop + cb)) << cb) | j)
            dst[row_lo + r] = 0x7FFFFFFF


@_jit
@no_type_check
def _query(seen, suffix, t):
    """Slots ``>= t`` already seen (``0 <= t < 2^30``)."""
    w = (t >> 6) & 0xFFFFFF  # the mask proves w >= 0: no negative-index wraparound code
    return np.int64(_popcount(seen[w] >> np.uint64(t & 63))) + suffix[w + 1]


@_jit
@no_type_check
def _insert(seen, suffix, slot):
    """Mark ``slot`` seen; add 1 to the counts of the words at or before it."""
    w = (slot >> 6) & 0xFFFFFF
    seen[w] |= _U1 << np.uint64(slot & 63)
    for k in range(seen.shape[0]):
        suffix[k] += k <= w


@_jit
@no_type_check
def _clear(seen, suffix):
    for k in range(seen.shape[0]):
        seen[k] = 0
    for k in range(suffix.shape[0]):
        suffix[k] = 0


@_jit
@no_type_check
def _run(values, keys, lo, hi, i, c, mask, seen, suffix, cols):
    """Twice the count of sorted entries ``lo..hi-1``, whose keys share their value bits.

    Their exact order is restored (an insertion sort of at most a few columns), then every run
    of equal values is counted twice, once before and once after its slots are inserted:
    ``2 #(farther, smaller) + #(farther, equal)``.
    """
    size = hi - lo
    for p in range(size):
        j = keys[lo + p] & mask
        v = values[j]
        q = p
        while q > 0 and values[cols[q - 1]] > v:
            cols[q] = cols[q - 1]
            q -= 1
        cols[q] = j
    total = 0
    p = 0
    while p < size:
        v = values[cols[p]]
        e = p + 1
        while e < size and values[cols[e]] == v:
            e += 1
        for q in range(p, e):  # farther and strictly smaller
            d = abs(i - cols[q])
            total += _query(seen, suffix, d + min(d, c))
        for q in range(p, e):
            j = cols[q]
            d = abs(i - j)
            _insert(seen, suffix, d + min(d, c) - 1 - ((d <= c) & (j < i)))
        for q in range(p, e):  # ... and farther and equal (1 more)
            d = abs(i - cols[q])
            total += _query(seen, suffix, d + min(d, c))
        p = e
    return total


@_jit
@no_type_check
def _row(values, keys, i, cb, seen, suffix, cols):
    """Twice the count of row ``i``: ``values`` in column order, ``keys`` sorted."""
    n = values.shape[0]
    mask = (1 << cb) - 1
    m = n - 1  # keys[m] is the diagonal's
    c = min(i, n - 1 - i)
    _clear(seen, suffix)
    clash = False
    for p in range(m - 1):
        clash |= (keys[p + 1] >> cb) == (keys[p] >> cb)
    single = 0
    if not clash:  # most rows: every value distinct, and in key order
        for p in range(m):
            j = keys[p] & mask
            d = abs(i - j)
            t = d + min(d, c)
            single += _query(seen, suffix, t)
            _insert(seen, suffix, t - 1 - ((d <= c) & (j < i)))
        return 2 * single
    runs = 0
    p = 0
    while p < m:
        k = keys[p]
        if p + 1 < m and (keys[p + 1] >> cb) == (k >> cb):  # a run: needs exact values
            e = p + 2
            while e < m and (keys[e] >> cb) == (k >> cb):
                e += 1
            runs += _run(values, keys, p, e, i, c, mask, seen, suffix, cols)
            p = e
        else:
            j = k & mask
            d = abs(i - j)
            t = d + min(d, c)
            single += _query(seen, suffix, t)
            _insert(seen, suffix, t - 1 - ((d <= c) & (j < i)))
            p += 1
    return 2 * single + runs


@_jit
@no_type_check
def _row_hits(values, i):
    """Row ``i``'s adjacency hit: ``|M_i ∩ {i-1, i+1}| / |M_i|``, ``M_i`` its off-diagonal argmax.

    Exact float comparisons (``-0.0 == 0.0``), as :func:`~nopelens.measure.adjacency_hits`; the
    ratio is a float64 division of small integers, which rounds to the same float32 as the
    float32 division of torch's path (float64 has more than ``2 * 24 + 2`` bits).
    """
    n = values.shape[0]
    top = values[1] if i == 0 else values[0]
    for j in range(n):
        if j != i and values[j] > top:
            top = values[j]
    tied = 0
    for j in range(n):
        tied += (j != i) & (values[j] == top)
    adjacent = 0
    if i > 0 and values[i - 1] == top:
        adjacent += 1
    if i < n - 1 and values[i + 1] == top:
        adjacent += 1
    return adjacent / tied


@_jit
@no_type_check
def _count_rows(values, keys, row_lo, out, hits, with_hits):
    """``out[b, r]``: twice the count of row ``row_lo + r`` of ``values[b]``, from sorted keys.

    With ``with_hits`` also ``hits[b, r]``, the row's adjacency hit (:func:`_row_hits`).
    """
    mats, rows, n = values.shape
    cb = _column_bits(n)
    words = (n + 63) >> 6
    seen = np.zeros(words, np.uint64)
    suffix = np.zeros(words + 1, np.int64)
    cols = np.empty(n, np.int64)
    for b in range(mats):
        for r in range(rows):
            out[b, r] = _row(values[b, r], keys[b, r], row_lo + r, cb, seen, suffix, cols)
            if with_hits:
                hits[b, r] = _row_hits(values[b, r], row_lo + r)


def warm() -> None:
    """Load the compiled code of every kernel now (float32 and float64; no-op without numba).

    A fork server calls it once (:mod:`nopelens.experiments.preload`), so the workers it forks
    start with the kernels loaded. The first call after an install compiles them (about 15 s).
    """
    if not COMPILED:
        return
    for dtype in (np.float32, np.float64):
        neighborhood_counts(np.eye(4, dtype=dtype)[None])


def concordance_counts(block: np.ndarray, row_lo: int = 0) -> np.ndarray:
    """Twice the concordance count of rows ``row_lo..`` of square matrices (exact integers).

    The first call in a process loads numba and the cached machine code (1-2 s; after installing
    or editing this module, compiling takes about 15 s once), so this module
    has no doctest: ``tests/measure/test_concordance.py`` checks it against an ``O(n^3)`` loop.

    Args:
        block: ``[mats, rows, n]`` float32 or float64, finite: rows ``row_lo .. row_lo+rows-1``
            of ``mats`` matrices of size ``n x n`` (``n >= 3``, ``n < 2^20``).
        row_lo: Index of the first row in ``block``.

    Returns:
        ``[mats, rows]`` int64: ``2 #[S_ij > S_ik] + #[S_ij = S_ik]`` over the pairs ``(j, k)``,
        ``j != i != k``, ``|i-j| < |i-k|`` of each row ``i``.
    """
    return _counts(block, row_lo, False)[0]


def neighborhood_counts(block: np.ndarray, row_lo: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`concordance_counts` and the adjacency hits of the same rows, in one pass.

    The hit of row ``i`` is ``|M_i ∩ {i-1, i+1}| / |M_i|`` with ``M_i`` the off-diagonal argmax
    set (exact float equality), in the dtype of ``block``: bit for bit
    :func:`~nopelens.measure.adjacency_hits` of the same rows.

    Returns:
        ``([mats, rows]`` int64 counts, ``[mats, rows]`` hits).
    """
    return _counts(block, row_lo, True)


def _counts(block: np.ndarray, row_lo: int, with_hits: bool) -> tuple[np.ndarray, np.ndarray]:
    mats, rows, n = block.shape
    block = np.ascontiguousarray(block)
    wide = block.dtype == np.float64
    keys = np.empty(block.shape, dtype=np.int32)
    bits = block.view(np.int64 if wide else np.int32)
    _make_keys(bits, row_lo, 63 if wide else 31, 32 if wide else 0, keys)
    keys.sort(axis=-1)
    out = np.empty((mats, rows), dtype=np.int64)
    hits = np.empty((mats, rows) if with_hits else (1, 1), dtype=block.dtype)
    _count_rows(block, keys, row_lo, out, hits, with_hits)
    return out, hits
