# ruff: noqa: F722 (jaxtyping shape strings are not Python expressions)
r"""Chance levels of the neighborhood scores: the null they test, and why they are exact.

**The null ("no position information").** The hidden states ``h_0..h_{n-1}`` of a sequence are
*exchangeable*: for every permutation ``pi`` of the positions, ``(h_pi(0), ..., h_pi(n-1))`` has
the same joint distribution as ``(h_0, ..., h_{n-1})``. Only the similarity matrix enters the
scores, and :func:`~nopelens.measure.self_similarity` is permutation-equivariant (centring
subtracts the mean over positions, which a permutation does not change):
``S(h o pi) = P S(h) P^T`` with ``(P S P^T)_ij = S_pi(i)pi(j)``. The null holds, for example, for
the input embedding of i.i.d. tokens (repeated tokens included), for every layer of a
bidirectional NoPE model fed i.i.d. tokens (the model is permutation-equivariant), and for any
hidden states whose positions are shuffled. It fails for causal models (the causal mask is what
the scores detect) and also for token sequences that are not exchangeable, such as real text,
whose own order can make even the embedding layer score above chance: compare with layer
``"embed"`` there.

**The permutation null, conditional on the data.** A stronger statement holds, and it is the
one the analyzer's ``chance`` column uses. Fix *any* matrix ``S`` (the data actually analysed)
and draw ``pi`` uniformly; then

    E_pi[ AP(P S P^T) ] = 2/n   and   E_pi[ NC(P S P^T) ] = 1/2   exactly, ties included.

The null above follows by averaging over ``S`` (its law equals that of ``P S P^T``). The mean
over sequences of per-sequence scores has the same expectation (linearity), so the chance of a
reported ``value`` is the score the same sequences would get, on average, with their positions
shuffled within each sequence. :func:`permuted_scores` draws those shuffles (seeded), to check
the statement on any data.

*Proof for AP* (:func:`~nopelens.measure.adjacency_probability`, ties split evenly). Row ``i``
of a matrix ``S`` puts weight ``w_ij = [j in M_i] / |M_i|`` on each ``j != i``, where ``M_i`` is
the set of maximisers of ``S_ij`` over ``j != i``; the weights sum to 1, and the hit of row ``i``
is ``w_i,i-1 + w_i,i+1``. In ``P S P^T`` row ``i`` is row ``r = pi(i)`` of ``S`` with its columns
relabelled, so its weight at ``j`` is ``w_r,pi(j)``. Given ``pi(i) = r``, ``pi(j)`` is uniform on
the ``n-1`` columns ``c != r``, hence ``E[w_r,pi(j)] = (1/(n-1)) sum_{c != r} w_rc = 1/(n-1)``
whatever ``S``. Row ``i`` has ``a_i`` neighbours (2 inside, 1 at either end), so
``E[AP] = (1/n) sum_i a_i / (n-1) = 2 (n-1) / (n (n-1)) = 2/n``. QED. The nearest-first tie rule
(a hit whenever *some* neighbour is in ``M_i``) has expectation
``1 - C(n-1-k, a_i) / C(n-1, a_i) >= a_i / (n-1)`` for a tie set of size ``k``, strictly larger
when ``k > 1`` and a neighbour can land in it: repeated tokens (identical states) biased it to
0.0663 against 2/n = 0.0625 (``n = 32``, 256-token vocabulary, 4096 sequences).

*Proof for NC* (:func:`~nopelens.measure.neighborhood_concordance`, ties count 1/2). A triple
``(i, j, k)``, ``|i-j| < |i-k|``, scores ``c(S'_ij, S'_ik)`` in ``S' = P S P^T``, with
``c(x, y) = 1`` if ``x > y``, 1/2 if ``x = y``, 0 otherwise; so ``c(x, y) + c(y, x) = 1``. Given
``pi(i) = r``, the pair ``(pi(j), pi(k))`` is uniform over ordered pairs of distinct columns
``!= r``, a law that is symmetric under swapping the two; hence
``E[c(S_r,pi(j), S_r,pi(k))] = E[c(S_r,pi(k), S_r,pi(j))]`` and both equal 1/2. NC (and every row
of :func:`~nopelens.measure.concordance_by_position`) is a fixed-weight average of triples, so
its expectation is 1/2. QED. Ties need no other rule.

Both statements are checked exactly in the tests by enumerating all ``n!`` permutations of small
matrices full of ties, and by simulation on model activations with repeated tokens.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from nopelens.measure.concordance import CONCORDANCE_CHANCE, neighborhood_concordance
from nopelens.measure.similarity import _adjacency_hits, _check_sim, adjacency_chance
from nopelens.validation import check_choice, check_int

#: The scores whose chance level :func:`chance_level` gives.
SCORES: tuple[str, ...] = ("adjacency_probability", "neighborhood_concordance")


def chance_level(metric: str, n: int) -> float:
    """Expected score under the within-sequence permutation null (exact, ties included).

    ``2/n`` for ``"adjacency_probability"`` (:func:`~nopelens.measure.adjacency_chance`), 0.5 for
    ``"neighborhood_concordance"``; see the module docstring for the null and the proofs.

    Args:
        metric: One of :data:`SCORES`.
        n: Number of positions scored (``>= 3``).

    Returns:
        The chance level.

    Raises:
        ValueError: For an unknown metric or ``n < 3``.

    Examples:
        >>> chance_level("adjacency_probability", 32), chance_level("neighborhood_concordance", 32)
        (0.0625, 0.5)
    """
    check_choice(metric, "metric", SCORES, "chance_level")
    check_int(n, "n", "chance_level", min=3)
    return adjacency_chance(n) if metric == SCORES[0] else CONCORDANCE_CHANCE


def permuted_scores(
    sim: Float[torch.Tensor, "*batch pos pos"],
    *,
    n_permutations: int = 100,
    seed: int = 0,
) -> dict[str, Float[torch.Tensor, " permutation *batch"]]:
    """AP and NC of every matrix after seeded shuffles of its positions (the permutation null).

    Draw ``n_permutations`` independent uniform permutations ``pi`` for every matrix (from a
    private generator seeded with ``seed``) and score ``P S P^T``, ``(P S P^T)_ij =
    S_pi(i)pi(j)``. Their mean estimates the expectation under the null, which is exactly
    :func:`chance_level` for any matrix (module docstring); their spread is the null
    distribution of one sequence's score.

    Args:
        sim: Similarity matrices ``[..., pos, pos]`` (``pos >= 3``).
        n_permutations: Shuffles per matrix (``>= 1``).
        seed: Seed of the permutations.

    Returns:
        ``{"adjacency_probability": [permutation, ...], "neighborhood_concordance": [...]}``,
        in the dtype of ``sim`` (float32 or float64).

    Raises:
        ValueError: For a bad ``sim`` or option.

    Examples:
        >>> idx = torch.arange(8.0)
        >>> sim = 1.0 / (1.0 + (idx[:, None] - idx[None, :]).abs())  # a perfect pattern
        >>> null = permuted_scores(sim, n_permutations=2000, seed=0)
        >>> null["adjacency_probability"].shape
        torch.Size([2000])
        >>> se = float(null["adjacency_probability"].std()) / 2000**0.5  # Monte-Carlo error
        >>> abs(float(null["adjacency_probability"].mean()) - 2 / 8) < 4 * se
        True
        >>> abs(float(null["neighborhood_concordance"].mean()) - 0.5) < 0.01
        True
    """
    func = "permuted_scores"
    sim = _check_sim(sim, func)
    check_int(n_permutations, "n_permutations", func, min=1)
    check_int(seed, "seed", func, min=0)
    n = sim.shape[-1]
    lead = sim.shape[:-2]
    generator = torch.Generator().manual_seed(seed)
    keys = torch.rand(n_permutations, *lead, n, generator=generator, dtype=torch.float64)
    perm = keys.argsort(dim=-1).to(sim.device)  # uniform permutations, one per (draw, matrix)
    expanded = sim.expand(n_permutations, *sim.shape)
    rows = torch.take_along_dim(expanded, perm[..., :, None], dim=-2)
    shuffled = torch.take_along_dim(rows, perm[..., None, :], dim=-1)
    return {
        SCORES[0]: _adjacency_hits(shuffled).mean(dim=-1),
        SCORES[1]: neighborhood_concordance(shuffled),
    }
