"""measure.similarity: definitions, chance levels, ties, invariances, brute-force agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

# ----------------------------------------------------------------------------------------------
# brute-force references, written straight from the definitions (O(n^3), loops)


def ref_cos(h):
    n = h.shape[0]
    out = torch.empty(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            a, b = h[i].double(), h[j].double()
            na, nb = a.norm(), b.norm()
            if i == j:
                out[i, j] = 1.0
            elif na == 0 or nb == 0:
                out[i, j] = 0.0
            else:
                out[i, j] = (a @ b) / (na * nb)
    return out


def ref_nearest(S):
    n = len(S)
    best = []
    for i in range(n):
        top = max(S[i][j] for j in range(n) if j != i)
        ties = [j for j in range(n) if j != i and S[i][j] == top]
        best.append(min(ties, key=lambda j: (abs(i - j), j)))
    return best


def ref_ap(S):
    """Ties split evenly: row i scores (adjacent maximisers) / (maximisers) (issue 14)."""
    n = len(S)
    total = 0.0
    for i in range(n):
        top = max(S[i][j] for j in range(n) if j != i)
        ties = [j for j in range(n) if j != i and S[i][j] == top]
        total += sum(abs(j - i) == 1 for j in ties) / len(ties)
    return total / n


def ref_ap_nearest_first(S):
    """The rule before issue 14: a hit whenever a neighbour is among the maximisers."""
    n = len(S)
    return sum(abs(j - i) == 1 for i, j in enumerate(ref_nearest(S))) / n


def ref_nc_rows(S):
    n = len(S)
    rows = []
    for i in range(n):
        num, den = 0.0, 0
        for j in range(n):
            for k in range(n):
                if j != i and k != i and abs(i - j) < abs(i - k):
                    den += 1
                    num += 1.0 if S[i][j] > S[i][k] else 0.5 if S[i][j] == S[i][k] else 0.0
        rows.append((num, den))
    return rows


def ref_nc(S):
    rows = ref_nc_rows(S)
    return sum(r[0] for r in rows) / sum(r[1] for r in rows)


def ref_profile(S):
    n = len(S)
    return [
        np.mean([S[i][j] for i in range(n) for j in range(n) if abs(i - j) == d]) for d in range(n)
    ]


def cesaro(n, d, batch=1, seed=0):
    """h_i = mean of i.i.d. v_1..v_i (uniform causal attention over random values)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(batch, n, d, generator=g)
    return v.cumsum(dim=1) / torch.arange(1, n + 1).view(1, n, 1)


# ----------------------------------------------------------------------------------------------
# self_similarity


def test_self_similarity_matches_reference_and_is_a_cosine_matrix():
    from nopelens.measure import self_similarity

    h = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(0))
    sim = self_similarity(h)
    assert sim.shape == (3, 7, 7)
    for b in range(3):
        torch.testing.assert_close(
            sim[b].double(),
            ref_cos(h[b]),
            atol=1e-6,
            rtol=0,
            msg="self_similarity vs loop reference",
        )
    torch.testing.assert_close(sim, sim.transpose(-1, -2))
    assert torch.equal(torch.diagonal(sim, dim1=-2, dim2=-1), torch.ones(3, 7))
    assert sim.abs().max() <= 1.0


def test_self_similarity_centered_subtracts_the_sequence_mean():
    from nopelens.measure import self_similarity

    h = torch.randn(5, 8, generator=torch.Generator().manual_seed(1)) + 3.0
    expected = ref_cos(h - h.mean(dim=0, keepdim=True))
    torch.testing.assert_close(
        self_similarity(h, centered=True).double(), expected, atol=1e-6, rtol=0
    )
    assert self_similarity(h).min() > self_similarity(h, centered=True).min()


def test_zero_vectors_give_zero_off_diagonal_and_one_on_the_diagonal():
    from nopelens.measure import self_similarity

    h = torch.tensor([[1.0, 2.0], [0.0, 0.0], [2.0, 1.0], [0.0, 0.0]])
    sim = self_similarity(h)
    assert not sim.isnan().any()
    assert torch.equal(sim[1], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert sim[1, 3] == 0 and sim[3, 3] == 1
    # A constant sequence is all (numerically) zero once centred: the identity, not NaN.
    const = torch.full((6, 4), 0.1).expand(2, 6, 4)
    torch.testing.assert_close(self_similarity(const, centered=True), torch.eye(6).expand(2, 6, 6))
    torch.testing.assert_close(self_similarity(torch.zeros(4, 3)), torch.eye(4))


def test_low_precision_inputs_are_computed_in_float32():
    from nopelens.measure import self_similarity

    h = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    out = self_similarity(h.to(torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, self_similarity(h.to(torch.bfloat16).float()))


# ----------------------------------------------------------------------------------------------
# chance levels


@pytest.mark.parametrize("n", [3, 4, 5, 10, 31, 256])
def test_adjacency_chance_is_the_exact_expectation(n):
    from nopelens.measure import adjacency_chance

    exact = ((n - 2) * 2 / (n - 1) + 2 * 1 / (n - 1)) / n  # interior rows + the two end rows
    assert adjacency_chance(n) == pytest.approx(exact, abs=1e-15)
    assert adjacency_chance(n) == 2 / n


def _all_permutations(sim):
    """``P S P^T`` for every permutation of the positions: ``[n!, ..., pos, pos]``."""
    import itertools

    n = sim.shape[-1]
    perms = torch.tensor(list(itertools.permutations(range(n))))
    return sim[..., perms[:, :, None], perms[:, None, :]].movedim(-3, 0)


@pytest.mark.parametrize("n", [3, 4, 5, 6])
@pytest.mark.parametrize("levels", [2, 3, 0])  # 2, 3: matrices full of ties; 0: continuous
def test_chance_is_exact_over_all_permutations_whatever_the_matrix(n, levels):
    """The proof in measure.chance, checked exactly: averaged over all n! relabellings of the
    positions, AP is 2/n and NC (and every row's concordance) 1/2, for any fixed matrix, ties
    included. The nearest-first tie rule is biased upward on the same matrices."""
    from nopelens.measure import (
        adjacency_chance,
        adjacency_probability,
        concordance_by_position,
        neighborhood_concordance,
    )

    g = torch.Generator().manual_seed(10 * n + levels)
    if levels:
        sim = torch.randint(0, levels, (4, n, n), generator=g).double()
    else:
        sim = torch.randn(4, n, n, generator=g, dtype=torch.float64)
    shuffled = _all_permutations(sim)  # [n!, 4, n, n]
    ap = adjacency_probability(shuffled).mean(dim=0)
    torch.testing.assert_close(ap, torch.full((4,), adjacency_chance(n), dtype=torch.float64))
    nc = neighborhood_concordance(shuffled).mean(dim=0)
    torch.testing.assert_close(nc, torch.full((4,), 0.5, dtype=torch.float64))
    rows = concordance_by_position(shuffled).mean(dim=0)[..., [0, -1]]  # defined for every n
    torch.testing.assert_close(rows, torch.full((4, 2), 0.5, dtype=torch.float64))
    if levels == 2 and n >= 4:
        old = [
            sum(ref_ap_nearest_first(m[b].tolist()) for m in shuffled) / len(shuffled)
            for b in range(4)
        ]
        assert min(old) > adjacency_chance(n) + 0.02, old


def test_repeated_tokens_keep_adjacency_at_chance():
    """Identical states (a token repeated within the sequence) tie exactly: 4096 sequences of
    32 i.i.d. tokens from a vocabulary of 64 put AP at 2/n with the even split, and measurably
    above it with the nearest-first rule (the bias reported in issue 14)."""
    from nopelens.measure import adjacency_hits, adjacency_probability, self_similarity

    g = torch.Generator().manual_seed(0)
    table = torch.randn(64, 16, generator=g)
    tokens = torch.randint(0, 64, (4096, 32), generator=g)
    sim = self_similarity(table[tokens])
    ap = adjacency_probability(sim).double()
    se = float(ap.std()) / math.sqrt(4096)
    assert abs(float(ap.mean()) - 2 / 32) < 3 * se
    repeated = (tokens[:, :, None] == tokens[:, None, :]).sum(dim=-1) > 1
    assert repeated.float().mean() > 0.35  # 1 - (63/64)^31 of the positions
    hits = adjacency_hits(sim)
    whole = (hits > 0).double().mean(dim=-1)  # the nearest-first rule: any adjacent maximiser
    assert float(whole.mean()) - 2 / 32 > 8 * se


def test_concordance_triples_counts_the_definition():
    from nopelens.measure import concordance_triples

    for n in (3, 4, 5, 8):
        S = [[0.0] * n for _ in range(n)]
        assert concordance_triples(n).tolist() == [den for _, den in ref_nc_rows(S)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iid_gaussian_states_score_at_chance(seed):
    from nopelens.measure import (
        CONCORDANCE_CHANCE,
        adjacency_chance,
        adjacency_probability,
        neighborhood_concordance,
        self_similarity,
    )

    batch, n, d = 400, 16, 64
    h = torch.randn(batch, n, d, generator=torch.Generator().manual_seed(seed))
    sim = self_similarity(h)
    ap = adjacency_probability(sim)
    # Sequences are independent: the standard error of the mean is the per-sequence sd / sqrt(B).
    se = float(ap.std()) / math.sqrt(batch)
    assert abs(float(ap.mean()) - adjacency_chance(n)) < 4 * se
    nc = neighborhood_concordance(sim)
    assert abs(float(nc.mean()) - CONCORDANCE_CHANCE) < 4 * float(nc.std()) / math.sqrt(batch)


def test_cesaro_means_show_a_perfect_adjacency_and_near_perfect_concordance():
    from nopelens.measure import adjacency_probability, neighborhood_concordance, self_similarity

    n = 16
    sim = self_similarity(cesaro(n, 8192, batch=2))
    assert adjacency_probability(sim).tolist() == [1.0, 1.0]
    # The limit is cos(h_i, h_j) = sqrt(min(i,j) / max(i,j)) (1-indexed): NC of that matrix.
    i = torch.arange(1, n + 1, dtype=torch.float64)
    limit = (torch.minimum(i[:, None], i[None, :]) / torch.maximum(i[:, None], i[None, :])).sqrt()
    expected = float(neighborhood_concordance(limit))
    assert expected > 0.9
    assert neighborhood_concordance(sim).tolist() == pytest.approx([expected] * 2, abs=0.02)


def test_a_random_permutation_of_positions_destroys_the_pattern():
    from nopelens.measure import (
        adjacency_chance,
        adjacency_probability,
        neighborhood_concordance,
        self_similarity,
    )

    batch, n = 200, 24
    h = cesaro(n, 256, batch=batch, seed=3)
    g = torch.Generator().manual_seed(4)
    perms = torch.stack([torch.randperm(n, generator=g) for _ in range(batch)])
    shuffled = torch.take_along_dim(h, perms[:, :, None], dim=1)
    ap = adjacency_probability(self_similarity(shuffled))
    nc = neighborhood_concordance(self_similarity(shuffled))
    assert abs(float(ap.mean()) - adjacency_chance(n)) < 4 * float(ap.std()) / math.sqrt(batch)
    assert abs(float(nc.mean()) - 0.5) < 4 * float(nc.std()) / math.sqrt(batch)
    assert float(neighborhood_concordance(self_similarity(h)).mean()) > 0.85


# ----------------------------------------------------------------------------------------------
# invariances and ties


@pytest.mark.parametrize("centered", [False, True])
def test_scores_are_invariant_to_positive_rescaling(centered):
    from nopelens.measure import (
        adjacency_probability,
        distance_profile,
        neighborhood_concordance,
        self_similarity,
    )

    h = cesaro(12, 32, batch=4, seed=5)
    scale = torch.tensor([0.001, 1.0, 7.0, 1e4]).view(4, 1, 1)
    if not centered:  # without centring each position may even be rescaled on its own
        scale = scale * torch.rand(4, 12, 1, generator=torch.Generator().manual_seed(6)) + 0.1
    a, b = self_similarity(h, centered), self_similarity(h * scale, centered)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert torch.equal(adjacency_probability(a), adjacency_probability(b))
    torch.testing.assert_close(
        neighborhood_concordance(a), neighborhood_concordance(b), atol=0.01, rtol=0
    )
    torch.testing.assert_close(distance_profile(a), distance_profile(b), atol=1e-5, rtol=0)


def test_ties_nearest_first_for_nearest_neighbor_split_evenly_for_adjacency():
    from nopelens.measure import (
        adjacency_hits,
        adjacency_probability,
        concordance_by_position,
        nearest_neighbor,
        neighborhood_concordance,
    )

    flat = torch.full((6, 6), 0.3)
    assert nearest_neighbor(flat).tolist() == [1, 0, 1, 2, 3, 4] == ref_nearest(flat.tolist())
    # All 5 others tie: the ends have 1 neighbour among them, the interior rows 2; AP = 2/n
    # (the nearest-first rule, used for AP before issue 14, scored 1.0 here)
    assert adjacency_hits(flat).tolist() == pytest.approx([0.2, 0.4, 0.4, 0.4, 0.4, 0.2])
    assert float(adjacency_probability(flat)) == pytest.approx(2 / 6) == ref_ap(flat.tolist())
    assert ref_ap_nearest_first(flat.tolist()) == 1.0
    assert float(neighborhood_concordance(flat)) == 0.5  # every pair tied: 1/2 each
    assert concordance_by_position(flat).tolist() == [0.5] * 6
    # Row 0: tie at distances 2 and 4 -> 2. Row 2: tie between i-2 and i+2 -> the smaller, 0.
    # Row 3: tie between distance 1 (j=4) and distance 2 (j=1) -> the nearer, 4; for AP the
    # tie is split: one of the two maximisers is adjacent, a hit of 1/2.
    sim = torch.tensor(
        [
            [1.0, 0.0, 0.5, 0.0, 0.5],
            [0.0, 1.0, 0.0, 0.9, 0.0],
            [0.9, 0.0, 1.0, 0.0, 0.9],
            [0.0, 0.2, 0.0, 1.0, 0.2],
            [0.1, 0.0, 0.0, 0.0, 1.0],
        ]
    )
    assert nearest_neighbor(sim).tolist() == [2, 3, 0, 4, 0] == ref_nearest(sim.tolist())
    assert adjacency_hits(sim).tolist() == [0.0, 0.0, 0.0, 0.5, 0.0]
    assert float(adjacency_probability(sim)) == pytest.approx(0.1) == ref_ap(sim.tolist())
    # Deterministic: same answer whatever the batch it sits in, and on repeated calls.
    batch = torch.stack([flat[:5, :5], sim, sim])
    assert nearest_neighbor(batch)[1].tolist() == nearest_neighbor(sim).tolist()


def test_in_place_hits_agree_and_restore_the_diagonal():
    """The analyzer's overwrite path (diagonal as scratch) gives the same split ties."""
    from nopelens.measure import adjacency_hits
    from nopelens.measure.similarity import _adjacency_hits

    g = torch.Generator().manual_seed(8)
    sim = torch.randint(0, 3, (5, 9, 9), generator=g).float()
    sim.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    scratch = sim.clone()
    assert torch.equal(_adjacency_hits(scratch, overwrite=True), adjacency_hits(sim))
    assert torch.equal(scratch, sim)


def test_distance_profile_accumulates_in_float64():
    """float32 entries near 3e37: their sums overflow float32, the means do not."""
    from nopelens.measure import distance_profile

    sim = torch.full((16, 16), 3e37)
    prof = distance_profile(sim)
    assert prof.dtype == torch.float32 and torch.isfinite(prof).all()
    torch.testing.assert_close(prof, torch.full((16,), 3e37))


def test_negative_zero_ties_with_zero():
    from nopelens.measure import neighborhood_concordance

    a = torch.tensor(
        [[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, -0.0, 0.0], [0.0, 0.0, 1.0, -0.0], [0.5, -0.0, 0.0, 1.0]]
    )
    assert float(neighborhood_concordance(a)) == pytest.approx(ref_nc(a.abs().tolist()))


# ----------------------------------------------------------------------------------------------
# the hand-computed n = 5 example

HAND = [
    [1.0, 0.8, 0.6, 0.1, 0.2],
    [0.8, 1.0, 0.3, 0.7, 0.0],
    [0.6, 0.3, 1.0, 0.5, 0.4],
    [0.1, 0.7, 0.5, 1.0, 0.9],
    [0.2, 0.0, 0.4, 0.9, 1.0],
]


def test_hand_computed_example_n5():
    """Worked by hand, then re-checked by the O(n^3) references above.

    Nearest other position per row: 0->1 (0.8), 1->0 (0.8), 2->0 (0.6), 3->4 (0.9), 4->3 (0.9):
    rows 0, 1, 3, 4 hit a neighbour, row 2 does not, so AP = 4/5.

    NC, row by row, (nearer, farther) pairs with |i-j| < |i-k|:
      row 0, others at d=1..4 with S = .8 .6 .1 .2: 6 pairs, concordant: (.8>.6 .1 .2), (.6>.1 .2),
             (.1 < .2) -> 5 of 6.
      row 1, d=1: {0: .8, 2: .3}, d=2: {3: .7}, d=3: {4: 0}: pairs (1-vs-2): .8>.7 yes, .3>.7 no;
             (1-vs-3): .8>0, .3>0 yes; (2-vs-3): .7>0 yes -> 4 of 5.
      row 2, d=1: {1: .3, 3: .5}, d=2: {0: .6, 4: .4}: .3>.6 no, .3>.4 no, .5>.6 no, .5>.4 yes
             -> 1 of 4.
      row 3, d=1: {2: .5, 4: .9}, d=2: {1: .7}, d=3: {0: .1}: .5>.7 no, .9>.7 yes, .5>.1, .9>.1,
             .7>.1 yes -> 4 of 5.
      row 4, others at d=1..4 with S = .9 .4 0 .2: .9 beats all 3, .4 beats 0 and .2, 0 < .2
             -> 5 of 6.
    NC = (5 + 4 + 1 + 4 + 5) / (6 + 5 + 4 + 5 + 6) = 19/26.

    Distance profile: d=0: 1; d=1: (.8+.3+.5+.9)/4 = .625; d=2: (.6+.7+.4)/3 = 17/30;
    d=3: (.1+0)/2 = .05; d=4: .2.
    """
    from nopelens.measure import (
        adjacency_probability,
        concordance_by_position,
        distance_profile,
        nearest_neighbor,
        neighborhood_concordance,
    )

    sim = torch.tensor(HAND, dtype=torch.float64)
    assert nearest_neighbor(sim).tolist() == [1, 0, 0, 4, 3] == ref_nearest(HAND)
    assert float(adjacency_probability(sim)) == 4 / 5 == ref_ap(HAND)
    assert float(neighborhood_concordance(sim)) == pytest.approx(19 / 26, abs=1e-12)
    assert ref_nc(HAND) == pytest.approx(19 / 26, abs=1e-12)
    by_row = [5 / 6, 4 / 5, 1 / 4, 4 / 5, 5 / 6]
    assert concordance_by_position(sim).tolist() == pytest.approx(by_row, abs=1e-12)
    assert [num / den for num, den in ref_nc_rows(HAND)] == pytest.approx(by_row, abs=1e-12)
    expected = [1.0, 0.625, 17 / 30, 0.05, 0.2]
    assert distance_profile(sim).tolist() == pytest.approx(expected, abs=1e-12)
    assert ref_profile(HAND) == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# vectorised vs loop code


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(3, 11),
    batch=st.integers(1, 3),
    levels=st.sampled_from([0, 2, 3, 5]),  # 0: continuous values; k: only k distinct values
    seed=st.integers(0, 2**16),
    double=st.booleans(),
)
def test_vectorised_scores_agree_with_loops(n, batch, levels, seed, double):
    from nopelens.measure import (
        adjacency_probability,
        concordance_by_position,
        distance_profile,
        nearest_neighbor,
        neighborhood_concordance,
    )

    g = torch.Generator().manual_seed(seed)
    if levels:
        sim = torch.randint(0, levels, (batch, n, n), generator=g).float() / levels - 0.5
    else:
        sim = torch.randn(batch, n, n, generator=g)
    sim = sim.double() if double else sim
    ap, nc = adjacency_probability(sim), neighborhood_concordance(sim)
    nn, rows, prof = nearest_neighbor(sim), concordance_by_position(sim), distance_profile(sim)
    for b in range(batch):
        S = sim[b].tolist()
        assert nn[b].tolist() == ref_nearest(S), "nearest_neighbor vs loop"
        assert float(ap[b]) == pytest.approx(ref_ap(S), abs=1e-6), "AP vs loop"
        assert float(nc[b]) == pytest.approx(ref_nc(S), abs=1e-6), "NC vs O(n^3) loop"
        expected = [num / den if den else math.nan for num, den in ref_nc_rows(S)]
        assert rows[b].tolist() == pytest.approx(expected, abs=1e-6, nan_ok=True)
        assert prof[b].tolist() == pytest.approx(ref_profile(S), abs=1e-6), "profile vs loop"


@pytest.mark.parametrize("n", [3, 5, 8, 9, 17, 40])
def test_concordance_code_paths_agree(n, monkeypatch):
    """NumPy path, torch (accelerator) path, uncached tables and tiny row chunks: same counts."""
    import nopelens.measure.concordance as sim_mod

    g = torch.Generator().manual_seed(n)
    sim = torch.randint(0, 4, (3, n, n), generator=g).float()
    sim[1] = torch.randn(n, n, generator=g)
    expected = torch.tensor([[2 * num for num, _ in ref_nc_rows(s.tolist())] for s in sim])
    expected = expected.round().long()
    assert torch.equal(sim_mod.concordance_counts(sim), expected), "numpy path"
    assert torch.equal(sim_mod._counts_torch(sim, 0), expected), "torch path"
    assert torch.equal(sim_mod._counts_torch(sim[:, 2:], 2), expected[:, 2:]), "torch rows"
    assert torch.equal(
        torch.from_numpy(sim_mod._counts_numpy(sim[:, 1:].numpy(), 1)), expected[:, 1:]
    ), "numpy rows"
    monkeypatch.setattr(sim_mod, "_TABLE_MAX_N", 2)
    monkeypatch.setattr(sim_mod, "_CHUNK_ELEMENTS", 2 * n)
    assert torch.equal(sim_mod.concordance_counts(sim), expected), "uncached, chunked rows"
    assert torch.equal(sim_mod.concordance_counts(sim.double()), expected), "float64"


def test_longer_sequences_match_the_quadratic_per_row_count():
    """n = 300 (16-bit keys no longer fit): compare with an O(n^3)-free but slow per-row count."""
    from nopelens.measure.concordance import concordance_counts

    n = 300
    sim = torch.randn(1, n, n, generator=torch.Generator().manual_seed(7)).double()
    counts = concordance_counts(sim)[0]
    for i in (0, 1, 150, 298, 299):
        row = sim[0, i].numpy()
        dist = np.abs(np.arange(n) - i)
        mask = dist > 0
        v, dd = row[mask], dist[mask]
        nearer = dd[:, None] < dd[None, :]
        twice = (
            2 * ((v[:, None] > v[None, :]) & nearer).sum()
            + ((v[:, None] == v[None, :]) & nearer).sum()
        )
        assert int(counts[i]) == int(twice), f"row {i}"


# ----------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("func", "arg", "match"),
    [
        ("neighborhood_concordance", torch.eye(2), "must have pos >= 3"),
        ("adjacency_probability", torch.eye(2).expand(3, 2, 2), "pos >= 3 .*Got pos=2 instead"),
        ("distance_profile", torch.full((4, 4), math.nan), "contains NaN or infinity"),
        ("nearest_neighbor", torch.full((4, 4), math.inf), "contains NaN or infinity"),
        ("concordance_by_position", torch.eye(2), "must have pos >= 3"),
        ("adjacency_hits", torch.eye(2), "must have pos >= 3"),
        ("self_similarity", torch.ones(3, 0), "must have pos >= 1 and d_model >= 1"),
        ("self_similarity", torch.tensor([[math.nan, 1.0]]), "contains NaN or infinity"),
        ("adjacency_chance", 2, "must be an int >= 3. Got 2 instead"),
    ],
)
def test_bad_values_raise(func, arg, match):
    import nopelens.measure as sim_mod

    with pytest.raises(ValueError, match=match):
        getattr(sim_mod, func)(arg)


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        ([[1.0, 0.0], [0.0, 1.0]], "must be a floating-point torch.Tensor.*Got list"),
        (torch.eye(4, dtype=torch.long), "Got dtype torch.int64"),
        (torch.ones(4), r"must have shape \[\.\.\. pos pos\]. Got shape \(4,\)"),
        (torch.ones(2, 4, 5), r"must be square .* Got shape \(2, 4, 5\)"),
    ],
)
def test_bad_types_and_shapes_raise(arg, match):
    """The validator says why; the public functions raise a TypeError (maybe the type checker)."""
    import nopelens.measure as measure
    import nopelens.measure.similarity as sim_mod

    with pytest.raises(ValueError, match=match):
        sim_mod._check_sim(arg, "neighborhood_concordance")
    for func in (
        "adjacency_probability",
        "neighborhood_concordance",
        "distance_profile",
        "nearest_neighbor",
        "concordance_by_position",
    ):
        with pytest.raises(TypeError):
            getattr(measure, func)(arg)


def test_self_similarity_and_chance_reject_wrong_types():
    from nopelens.measure import adjacency_chance, self_similarity

    with pytest.raises(TypeError):
        self_similarity(torch.ones(3, 2), centered="yes")
    with pytest.raises(TypeError):
        self_similarity(torch.ones(5))
    with pytest.raises(TypeError):
        adjacency_chance(4.0)
