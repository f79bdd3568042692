# ruff: noqa: F722 (jaxtyping shape strings are not Python expressions)
"""Self-similarity of hidden states and the neighborhood scores (pure functions, no model).

The neighborhood hypothesis (Zuo, Guerzhoy & Guerzhoy, COLING 2025) says that in a causal
transformer without positional encodings the hidden states of nearby positions are more
cosine-similar than those of distant positions. This module turns that sentence into numbers:

* :func:`self_similarity`: ``S_ij = cos(h_i, h_j)`` for the hidden states of one sequence,
  optionally centred on the sequence mean.
* :func:`adjacency_probability` (AP): the fraction of positions whose most similar other position
  is an immediate neighbour; a row whose maximum is shared by ``k`` other positions, ``m`` of
  them adjacent, counts ``m/k`` (ties split evenly). Chance is :func:`adjacency_chance`
  ``= 2/n``, exactly, under the within-sequence permutation null (:mod:`~nopelens.measure.chance`
  states the null and proves it, ties included).
* :func:`neighborhood_concordance` (NC): over all triples ``(i, j, k)`` with
  ``|i-j| < |i-k|``, the probability that ``S_ij > S_ik`` (ties count 1/2). Chance is
  :data:`CONCORDANCE_CHANCE` ``= 0.5`` under the same null, a perfect pattern scores 1.
* :func:`distance_profile`: the mean of ``S_ij`` over pairs at each distance ``|i-j| = d``.

Positions are 0-indexed. Every score function takes any square ``[..., pos, pos]`` matrix (it
need not be symmetric: scores are computed row by row, row ``i`` being "seen from position i"),
requires ``pos >= 3`` and returns one value per leading index. Everything is vectorised and nothing
is ``O(n^3)``; the concordance kernels live in :mod:`~nopelens.measure.concordance`.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int

from nopelens.validation import InvalidParameterError

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
    """Expected adjacency probability under the permutation null at sequence length ``n``.

    Under the within-sequence permutation null (the positions of the hidden states are shuffled
    uniformly, or the states are exchangeable), each row's evenly split tie weight
    ``[j in M_i] / |M_i|`` has expectation ``1/(n-1)`` at every other position ``j``, ties or not
    (proof in :mod:`~nopelens.measure.chance`). An interior row has two neighbours
    (``2/(n-1)``), the two end rows one (``1/(n-1)``), so the expectation is exactly::

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
    """Per position: the share of its most similar other positions that are immediate neighbours.

    Row ``i``'s maximisers are ``M_i = argmax_{j != i} S_ij`` (exact float equality, ``-0.0``
    equal to ``0.0``). The hit is ``|M_i ∩ {i-1, i+1}| / |M_i|``: 1 or 0 when the maximum is
    unique, and the probability of landing on a neighbour when one of the tied maximisers is
    drawn uniformly at random (ties split evenly). This rule keeps the chance level exactly
    ``2/n`` when similarities tie (repeated tokens give identical hidden states); the
    nearest-first rule of :func:`nearest_neighbor` would count every tie that includes a
    neighbour as a full hit and bias AP upward. :func:`adjacency_probability` is the mean over
    positions.

    Examples:
        >>> sim = torch.tensor([[1.0, 0.9, 0.1], [0.9, 1.0, 0.2], [0.1, 0.3, 1.0]])
        >>> adjacency_hits(sim)
        tensor([1., 1., 1.])
        >>> adjacency_hits(torch.full((4, 4), 0.5))  # all tied: 1 or 2 neighbours out of 3
        tensor([0.3333, 0.6667, 0.6667, 0.3333])
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
        tied = (sim == rowmax.unsqueeze(-1)).sum(dim=-1)  # |M_i| (the diagonal is -inf)
        diagonal.copy_(saved)
    else:
        n = sim.shape[-1]
        eye = torch.eye(n, dtype=torch.bool, device=sim.device)
        off = sim.masked_fill(eye, -math.inf)
        rowmax = off.amax(dim=-1)
        tied = (off == rowmax.unsqueeze(-1)).sum(dim=-1)
    below = sim.diagonal(offset=-1, dim1=-2, dim2=-1)  # S[i+1, i], i = 0..n-2
    above = sim.diagonal(offset=1, dim1=-2, dim2=-1)  # S[i, i+1]
    left = torch.nn.functional.pad(below, (1, 0), value=-math.inf)  # S[i, i-1]
    right = torch.nn.functional.pad(above, (0, 1), value=-math.inf)  # S[i, i+1]
    adjacent = (left == rowmax).to(sim.dtype) + (right == rowmax).to(sim.dtype)
    return adjacent / tied.to(sim.dtype)


def adjacency_probability(
    sim: Float[torch.Tensor, "*batch pos pos"],
) -> Float[torch.Tensor, "*batch"]:
    """Adjacency probability: fraction of positions whose most similar other position is adjacent.

    For each position ``i``, ``M_i = argmax_{j != i} S_ij`` (the set of maximisers) and
    ``AP = (1/n) sum_i |M_i ∩ {i-1, i+1}| / |M_i|``: with a unique maximiser ``j*(i)`` this is
    ``[ |j*(i) - i| = 1 ]``, and a tie is split evenly among the tied positions (the expected
    hit of a uniformly random tie-break; see :func:`adjacency_hits`). Chance is
    :func:`adjacency_chance` ``(n) = 2/n`` exactly under the within-sequence permutation null,
    ties included (proof in :mod:`~nopelens.measure.chance`); a perfect neighborhood pattern
    gives 1. ``O(n^2)`` per matrix.

    Changed in issue 14: ties used to be broken nearest-first (a row counted 1 whenever a
    neighbour attained the maximum), which biased AP above ``2/n`` when tokens repeat (0.0663 vs
    0.0625 at ``n = 32``, 256-token vocabulary). Rows without ties score as before.

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
        >>> round(float(adjacency_probability(torch.full((5, 5), 0.5))), 4)  # all tied: 2/n
        0.4
    """
    sim = _check_sim(sim, "adjacency_probability")
    return _adjacency_hits(sim).mean(dim=-1)


def nearest_neighbor(
    sim: Float[torch.Tensor, "*batch pos pos"],
) -> Int[torch.Tensor, "*batch pos"]:
    """The most similar other position ``j*(i) = argmax_{j != i} S_ij`` of every position.

    Tie rule (deterministic, exact float equality): among the positions attaining the row
    maximum, the one nearest to ``i`` wins; if ``i-d`` and ``i+d`` tie, the smaller index
    ``i-d`` wins. This picks one representative for display; :func:`adjacency_probability`
    does not use it (it splits ties evenly, see :func:`adjacency_hits`).

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
# distance profile


def distance_profile(
    sim: Float[torch.Tensor, "*batch pos pos"],
) -> Float[torch.Tensor, "*batch distance"]:
    """Mean similarity at each distance: ``profile[d] = mean_{|i-j| = d} S_ij``, ``d = 0..n-1``.

    Both ``S_ij`` and ``S_ji`` are included (``2 (n-d)`` entries for ``d >= 1``, the ``n``
    diagonal entries for ``d = 0``), so non-symmetric matrices are averaged over both triangles.
    ``O(n^2)``, one pass; sums are accumulated in float64 and the means returned in the dtype of
    ``sim`` (no overflow for float32 entries near its largest value).

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
    # Accumulated in float64 (float32 sums of entries near 3e37 would overflow to inf); torch's
    # cascade summation keeps the error ~ log2(n) eps.
    sums = skewed.sum(dim=-2, dtype=torch.float64)
    total = sums[..., :n].clone()
    total[..., 1:] += sums[..., n + 2 :].flip(-1)
    d = torch.arange(n, dtype=torch.float64, device=sim.device)
    counts = torch.where(d == 0, float(n), 2.0 * (n - d))
    return (total / counts).to(sim.dtype)
