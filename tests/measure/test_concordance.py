"""measure.concordance / measure.kernels: every code path gives the exact counts of an O(n^3) loop.

Paths: the compiled numba kernel (skipped without numba), the same kernel run as plain Python
(``NOPELENS_NUMBA=0``, in a subprocess), the NumPy inversion count (with 16- and 32-bit keys),
the torch path (CPU here; CUDA with the ``gpu`` marker). No timing is asserted anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import nopelens.measure.concordance as conc
from nopelens.measure import kernels

needs_numba = pytest.mark.skipif(not kernels.COMPILED, reason=kernels.UNAVAILABLE_REASON)

# ----------------------------------------------------------------------------------------------
# references, straight from the definition


def loop_counts(S):
    """Twice the concordance count of each row: a literal triple loop (tiny n only)."""
    n = len(S)
    out = []
    for i in range(n):
        twice = 0
        for j in range(n):
            for k in range(n):
                if j != i and k != i and abs(i - j) < abs(i - k):
                    twice += 2 if S[i][j] > S[i][k] else 1 if S[i][j] == S[i][k] else 0
        out.append(twice)
    return out


def brute_counts(S):
    """The same O(n^3) count, vectorised over all triples ``[i, j, k]`` of one matrix."""
    S = np.asarray(S)
    n = S.shape[-1]
    idx = np.arange(n)
    dist = np.abs(idx[:, None] - idx[None, :])  # [i, j]
    # |i-j| >= 1 excludes j = i; |i-k| > |i-j| >= 1 then excludes k = i.
    triple = (dist[:, :, None] < dist[:, None, :]) & (dist[:, :, None] > 0)
    gt = S[:, :, None] > S[:, None, :]
    eq = S[:, :, None] == S[:, None, :]
    return 2 * (gt & triple).sum(axis=(1, 2)) + (eq & triple).sum(axis=(1, 2))


def row_counts(S, rows):
    """O(n^2) per row: for long rows, a few rows at a time."""
    S = np.asarray(S)
    n = S.shape[-1]
    out = []
    for i in rows:
        dist = np.abs(np.arange(n) - i)
        keep = dist > 0
        v, d = S[i][keep], dist[keep]
        nearer = d[:, None] < d[None, :]
        out.append(
            2 * ((v[:, None] > v[None, :]) & nearer).sum()
            + ((v[:, None] == v[None, :]) & nearer).sum()
        )
    return np.array(out)


def random_matrices(rng, n, batch, kind, dtype):
    """``batch`` matrices ``n x n``: continuous, few levels (many ties), or adversarial values."""
    if kind == "continuous":
        x = rng.standard_normal((batch, n, n))
    elif kind.startswith("levels"):
        x = rng.integers(0, int(kind[6:]), (batch, n, n)) / 4.0 - 0.5
    elif kind == "adversarial":  # near-equal values, signed zeros, extremes, subnormals
        tiny = float(np.finfo(dtype).smallest_subnormal)
        big = float(np.finfo(dtype).max)
        eps = float(np.finfo(dtype).eps)
        pool = np.array(
            [0.0, -0.0, tiny, -tiny, 2 * tiny, big, -big, 1.0, -1.0]
            + [1.0 + k * eps for k in range(1, 8)]
            + [-(1.0 + k * eps) for k in range(1, 4)]
            + [1e-30, -1e-30, 3e-30],
            dtype=dtype,
        )
        x = pool[rng.integers(0, len(pool), (batch, n, n))]
    else:
        raise ValueError(kind)
    return np.ascontiguousarray(x, dtype=dtype)


def check_against_brute(counts_fn, x, label):
    for b, matrix in enumerate(x):
        expected = brute_counts(matrix)
        got = np.asarray(counts_fn(matrix))
        np.testing.assert_array_equal(got, expected, err_msg=f"{label} vs O(n^3) loop, matrix {b}")


# ----------------------------------------------------------------------------------------------
# the references agree with each other


def test_vectorised_reference_matches_the_literal_loop():
    rng = np.random.default_rng(0)
    for n in (3, 4, 5, 8):
        for kind in ("continuous", "levels2", "levels3", "adversarial"):
            (S,) = random_matrices(rng, n, 1, kind, np.float64)
            assert brute_counts(S).tolist() == loop_counts(S.tolist()), (n, kind)
    S = rng.standard_normal((9, 9))
    assert row_counts(S, range(9)).tolist() == brute_counts(S).tolist()


def test_hand_counted_rows():
    # Row 0 of [1, .9, .5, .1]: pairs (1,2) (1,3) (2,3) all concordant -> 2 x 3 = 6.
    # Row 1: nearer {0: .9, 2: .9} vs farther {3: .5}: 2 concordant pairs -> 4; (0, 2) are at
    # equal distance: not a triple.
    s = np.array(
        [[1.0, 0.9, 0.5, 0.1], [0.9, 1.0, 0.9, 0.5], [0.5, 0.9, 1.0, 0.9], [0.1, 0.5, 0.9, 1.0]]
    )
    assert brute_counts(s).tolist() == [6, 4, 4, 6]
    assert brute_counts(s[::-1, ::-1]).tolist() == [6, 4, 4, 6]
    assert brute_counts(np.ones((4, 4))).tolist() == [3, 2, 2, 3]  # every pair tied: 1 each
    assert brute_counts(-s).tolist() == [0, 0, 0, 0]  # the reverse pattern


# ----------------------------------------------------------------------------------------------
# the compiled kernel


SIZES = (3, 4, 5, 6, 7, 9, 11, 16, 17, 31, 33, 63, 64, 65, 66)


@needs_numba
def test_compiled_kernel_hand_counted_rows():
    s = np.array(
        [[1.0, 0.9, 0.5, 0.1], [0.9, 1.0, 0.9, 0.5], [0.5, 0.9, 1.0, 0.9], [0.1, 0.5, 0.9, 1.0]],
        dtype=np.float32,
    )
    assert kernels.concordance_counts(s[None]).tolist() == [[6, 4, 4, 6]]
    assert kernels.concordance_counts(np.ones((1, 4, 4))).tolist() == [[3, 2, 2, 3]]
    assert kernels.concordance_counts(-s[None]).tolist() == [[0, 0, 0, 0]]


KINDS = ("continuous", "levels2", "levels3", "levels5", "adversarial")


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_kernel_matches_the_brute_force_count(kind, dtype):
    rng = np.random.default_rng(abs(hash((kind, np.dtype(dtype).name))) % 2**32)
    for n in SIZES:
        x = random_matrices(rng, n, 12, kind, dtype)
        got = kernels.concordance_counts(x)
        assert got.dtype == np.int64 and got.shape == (12, n)
        expected = np.stack([brute_counts(m) for m in x])
        np.testing.assert_array_equal(got, expected, err_msg=f"numba vs O(n^3), n={n} {kind}")


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_kernel_row_blocks_and_views(dtype):
    """Rows given from ``row_lo`` on, and non-contiguous inputs, give the same counts."""
    rng = np.random.default_rng(3)
    x = random_matrices(rng, 23, 4, "levels3", dtype)
    full = np.stack([brute_counts(m) for m in x])
    for lo, hi in ((0, 23), (1, 2), (5, 17), (22, 23)):
        got = kernels.concordance_counts(x[:, lo:hi], lo)
        np.testing.assert_array_equal(got, full[:, lo:hi], err_msg=f"rows {lo}:{hi}")
    strided = np.asfortranarray(x)  # same values, another memory layout
    np.testing.assert_array_equal(kernels.concordance_counts(strided), full)
    np.testing.assert_array_equal(kernels.concordance_counts(x[::2]), full[::2])


@needs_numba
@pytest.mark.parametrize("n", [255, 256, 257, 300])
def test_compiled_kernel_across_the_16_bit_and_word_boundaries(n):
    """n around 256 (column bits 8 -> 9, 4 -> 5 bitset words) and beyond, with and without ties."""
    rng = np.random.default_rng(n)
    x = np.stack(
        [
            random_matrices(rng, n, 1, "continuous", np.float32)[0],
            random_matrices(rng, n, 1, "levels3", np.float32)[0],
            random_matrices(rng, n, 1, "adversarial", np.float32)[0],
        ]
    )
    got = kernels.concordance_counts(x)
    rows = [0, 1, 2, n // 2 - 1, n // 2, n - 2, n - 1]
    for b in range(len(x)):
        np.testing.assert_array_equal(got[b, rows], row_counts(x[b], rows), err_msg=f"kind {b}")


@needs_numba
def test_compiled_kernel_on_a_long_sequence_with_many_shared_key_bits():
    """n = 1100: 11 column bits leave 21 value bits, so most rows need the exact-order path."""
    n = 1100
    rng = np.random.default_rng(11)
    x = (1.0 + rng.integers(0, 4000, (1, 24, n)) * np.finfo(np.float32).eps).astype(np.float32)
    got = kernels.concordance_counts(x, 500)  # rows 500..523 of an n x n matrix
    full = np.zeros((n, n), dtype=np.float32)
    full[500:524] = x[0]
    np.testing.assert_array_equal(got[0], row_counts(full, range(500, 524)))


def reference_hits(x):
    """Adjacency hits straight from the definition: |argmax set ∩ neighbours| / |argmax set|."""
    n = x.shape[-1]
    out = np.empty(x.shape[:-1])
    for b, matrix in enumerate(x):
        for i in range(n):
            others = [j for j in range(n) if j != i]
            top = max(matrix[i][j] for j in others)
            tied = [j for j in others if matrix[i][j] == top]
            out[b, i] = sum(abs(j - i) == 1 for j in tied) / len(tied)
    return out


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_fused_kernel_gives_the_counts_and_the_adjacency_hits_bit_for_bit(kind, dtype):
    """neighborhood_counts: the same counts, and hits identical to adjacency_hits (ties, -0.0)."""
    from nopelens.measure import adjacency_hits

    rng = np.random.default_rng(abs(hash((kind, "fused", np.dtype(dtype).name))) % 2**32)
    for n in (3, 4, 5, 8, 17, 65):
        x = random_matrices(rng, n, 6, kind, dtype)
        counts, hits = kernels.neighborhood_counts(x)
        np.testing.assert_array_equal(counts, kernels.concordance_counts(x))
        assert hits.dtype == dtype and hits.shape == (6, n)
        np.testing.assert_array_equal(hits, reference_hits(x).astype(dtype), err_msg=f"n={n}")
        np.testing.assert_array_equal(hits, adjacency_hits(torch.from_numpy(x)).numpy())
        lo = n // 3
        part_counts, part_hits = kernels.neighborhood_counts(x[:, lo:], lo)
        np.testing.assert_array_equal(part_counts, counts[:, lo:])
        np.testing.assert_array_equal(part_hits, hits[:, lo:])


@pytest.mark.parametrize("compiled", [False, True])
def test_neighborhood_counts_match_the_separate_functions_on_every_path(compiled, monkeypatch):
    """The analyzer's one-pass (hits, counts) equals (adjacency_hits, concordance_counts)."""
    from nopelens.measure import adjacency_hits, neighborhood_counts

    if compiled and not kernels.COMPILED:
        pytest.skip(kernels.UNAVAILABLE_REASON)
    monkeypatch.setattr(conc, "_COMPILE_AFTER", 0 if compiled else 2**62)
    monkeypatch.setattr(conc, "_entries_seen", 0)
    if not compiled:
        monkeypatch.setattr(conc, "_compiled_counts", lambda entries: None)
    rng = np.random.default_rng(12)
    cases = (
        (3, "levels2", np.float32),
        (40, "levels3", np.float32),
        (33, "adversarial", np.float64),
        (130, "continuous", np.float32),
    )
    for n, kind, dtype in cases:
        sim = torch.from_numpy(random_matrices(rng, n, 3, kind, dtype)).reshape(3, 1, n, n)
        hits, counts = neighborhood_counts(sim)
        assert hits.shape == counts.shape == (3, 1, n) and hits.dtype == sim.dtype
        assert torch.equal(hits, adjacency_hits(sim))
        assert torch.equal(counts, conc.concordance_counts(sim))
        expected = np.stack([brute_counts(m) for m in sim.reshape(3, n, n).numpy()])
        np.testing.assert_array_equal(counts.reshape(3, n).numpy(), expected)


# ----------------------------------------------------------------------------------------------
# the NumPy and torch paths, and the dispatch


@pytest.mark.parametrize("sort16", [False, True])
def test_numpy_path_matches_the_brute_force_count(sort16, monkeypatch):
    """16-bit keys (AVX-512 ICL machines) and 32-bit keys (AVX2 machines): the same counts."""
    monkeypatch.setattr(conc, "_SORT16", sort16)
    conc._full_offsets.cache_clear()  # its key tables follow the key width
    try:
        rng = np.random.default_rng(5)
        for n in (3, 4, 7, 16, 17, 33):
            assert conc._key_dtype(n) == (np.uint16 if sort16 else np.int32)
            for kind in ("continuous", "levels2", "adversarial"):
                for dtype in (np.float32, np.float64):
                    x = random_matrices(rng, n, 3, kind, dtype)
                    check_against_brute(lambda m: conc._counts_numpy(m[None], 0)[0], x, "numpy")
        monkeypatch.setattr(conc, "_TABLE_MAX_N", 2)  # key offsets computed level by level
        x = random_matrices(rng, 19, 3, "levels3", np.float32)
        check_against_brute(lambda m: conc._counts_numpy(m[None], 0)[0], x, "numpy untabled")
        rows = conc._counts_numpy(x[:, 4:11], 4)
        np.testing.assert_array_equal(rows, np.stack([brute_counts(m)[4:11] for m in x]))
    finally:
        conc._full_offsets.cache_clear()


def test_torch_path_matches_the_brute_force_count():
    rng = np.random.default_rng(6)
    for n in (3, 5, 8, 17):
        for kind in ("continuous", "levels3", "adversarial"):
            x = random_matrices(rng, n, 3, kind, np.float64)
            check_against_brute(
                lambda m: conc._counts_torch(torch.from_numpy(m)[None], 0)[0].numpy(), x, "torch"
            )


@needs_numba
def test_public_functions_give_the_same_scores_on_both_cpu_paths(monkeypatch):
    rng = np.random.default_rng(7)
    sim = torch.from_numpy(random_matrices(rng, 40, 6, "levels3", np.float32))
    sim[0] = torch.randn(40, 40, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(conc, "_compiled_counts", lambda entries: None)
    numpy_nc = conc.neighborhood_concordance(sim)
    numpy_rows = conc.concordance_by_position(sim)
    numpy_counts = conc.concordance_counts(sim)
    monkeypatch.undo()
    monkeypatch.setattr(conc, "_COMPILE_AFTER", 0)
    assert conc._compiled_counts(1) is kernels.concordance_counts
    assert torch.equal(conc.concordance_counts(sim), numpy_counts)
    assert torch.equal(conc.neighborhood_concordance(sim), numpy_nc)
    assert torch.equal(conc.concordance_by_position(sim), numpy_rows)
    expected = torch.tensor(np.stack([brute_counts(m) for m in sim.numpy()]))
    assert torch.equal(numpy_counts, expected)


def test_small_work_stays_on_the_numpy_path(monkeypatch):
    """Below the threshold the kernels module is not even imported (no numba start-up cost)."""
    monkeypatch.setattr(conc, "_entries_seen", 0)
    monkeypatch.delitem(sys.modules, "nopelens.measure.kernels", raising=False)
    assert conc._compiled_counts(1000) is None
    assert "nopelens.measure.kernels" not in sys.modules
    expected = kernels.concordance_counts if kernels.COMPILED else None
    assert conc._compiled_counts(conc._COMPILE_AFTER) is expected  # cumulative work counts


def test_disabling_numba_runs_the_kernel_as_plain_python():
    """NOPELENS_NUMBA=0: COMPILED is False, the NumPy path runs, and the kernel as plain Python
    still gives the exact counts (so its doctests run without numba)."""
    code = """
import json, numpy as np, torch
import nopelens.measure.concordance as conc
from nopelens.measure import kernels
rng = np.random.default_rng(0)
x = rng.integers(0, 3, (2, 6, 6)).astype(np.float32)
y = np.array([[[0.0, -0.0, 1.0, 0.0, -0.0], [2.0] * 5, [-0.0] * 5, [1e-30, 0.0, -1e-30, 5.0, 1.0],
               [3.0, 1.0, -0.0, 0.0, 3.0]]])
conc._entries_seen = 1 << 40
print(json.dumps({"compiled": kernels.COMPILED, "reason": kernels.UNAVAILABLE_REASON,
                  "dispatch": conc._compiled_counts(1) is None,
                  "x": kernels.concordance_counts(x).tolist(),
                  "y": kernels.concordance_counts(y).tolist(),
                  "x64": kernels.concordance_counts(x.astype(np.float64), 0).tolist()}))
"""
    env = dict(os.environ, NOPELENS_NUMBA="0")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["compiled"] is False and "NOPELENS_NUMBA" in result["reason"]
    assert result["dispatch"] is True
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (2, 6, 6)).astype(np.float32)
    assert result["x"] == result["x64"] == [brute_counts(m).tolist() for m in x]
    y = np.array(
        [
            [0.0, -0.0, 1.0, 0.0, -0.0],
            [2.0] * 5,
            [-0.0] * 5,
            [1e-30, 0.0, -1e-30, 5.0, 1.0],
            [3.0, 1.0, -0.0, 0.0, 3.0],
        ]
    )
    assert result["y"] == [brute_counts(y).tolist()]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_the_cpu_counts():
    rng = np.random.default_rng(8)
    for n in (3, 9, 64, 257):
        for kind in ("continuous", "levels3", "adversarial"):
            x = random_matrices(rng, n, 4, kind, np.float32)
            cpu = conc.concordance_counts(torch.from_numpy(x))
            gpu = conc.concordance_counts(torch.from_numpy(x).cuda())
            assert gpu.device.type == "cuda"
            assert torch.equal(gpu.cpu(), cpu), (n, kind)
            if n <= 64:
                assert torch.equal(cpu, torch.tensor(np.stack([brute_counts(m) for m in x])))
