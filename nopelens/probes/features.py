"""Feature families for the position probes, and the maps that make them comparable.

Everything here maps tensors to tensors: no model, no I/O, no global random state.
:func:`~nopelens.probes.probe_positions` (:mod:`nopelens.probes.positions`) fits probes on them.

**Feature families.**
Three families describe each token's hidden state ``h_i`` (``i`` = position, 0-indexed, within a
sequence of ``n`` tokens); each is a pure function of a ``[batch, pos, d_model]`` tensor:

- **hidden** (:func:`hidden_features`): ``h_i`` itself, ``d_model`` numbers.
- **cosine** (:func:`cosine_features`, the neighborhood hypothesis of Zuo et al. 2025): the
  token's cosine similarities to the other tokens of its own sequence, summarised so that the
  position index cannot leak: the *sorted* off-diagonal row of the full (symmetric) similarity
  matrix, the similarity to the first other token, and the row's mean and standard deviation,
  ``n + 2`` numbers.
- **variance** (:func:`variance_features`, the variance hypothesis of Chi et al. 2023): the log of
  the variance of ``h_i`` across hidden dimensions, one number.

Why the cosine summaries do not leak the index. A raw similarity row ``S_i = (S_i0, ...,
S_i,n-1)`` does: its diagonal entry ``S_ii = 1`` sits at column ``i``. Sorting the row after
removing the diagonal keeps the multiset of similarities to the *other* tokens and forgets which
column each came from; the row always has ``n - 1`` entries because the matrix is the full
symmetric one (not a causal, lower-triangular row whose length would be ``i``). The similarity to
the first token uses column 0 for every row except row 0, where column 0 is the diagonal (a
constant 1 that would give position 0 away); row 0 uses column 1 instead. Under the null where the
hidden states of a sequence are exchangeable (e.g. the token embeddings of random tokens), every
feature has the same distribution at every position, so a probe is at chance, which the tests
check. What remains is information carried by the hidden states themselves.

**Comparable scales and capacities.** :func:`standardize` z-scores every part of a split with the
training statistics. Capacity-fair comparisons use :func:`pca_projection` (top-k principal
components of the training features) and :func:`polynomial_features` (k powers of the
standardised log-variance), so that every family can be compared at the same dimension ``k``.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from nopelens.measure import position_variance, self_similarity

#: Feature families, in report order.
FEATURE_FAMILIES: tuple[str, ...] = ("hidden", "cosine", "variance")


def hidden_features(
    hidden: Float[torch.Tensor, "batch pos d_model"],
) -> Float[torch.Tensor, "batch pos d_model"]:
    """The raw hidden state of each token (the identity feature map).

    Args:
        hidden: Hidden states ``[batch, pos, d_model]``.

    Returns:
        ``hidden`` as float (same shape).

    Examples:
        >>> hidden_features(torch.ones(2, 3, 4)).shape
        torch.Size([2, 3, 4])
    """
    return hidden if hidden.is_floating_point() else hidden.float()


def cosine_features(
    hidden: Float[torch.Tensor, "batch pos d_model"],
    *,
    centered: bool = False,
) -> Float[torch.Tensor, "batch pos n_cos"]:
    """Position-index-free summaries of each token's similarity row (``n + 2`` features).

    With ``S = self_similarity(hidden)`` (full, symmetric, ``[batch, pos, pos]``), the features of
    token ``i`` are, in order:

    1. the ``n - 1`` off-diagonal entries of row ``S_i``, sorted in decreasing order;
    2. the similarity to the first other token: ``S_i0`` for ``i > 0`` and ``S_01`` for ``i = 0``;
    3. the mean and 4. the standard deviation of the ``n - 1`` off-diagonal entries.

    No feature depends on where in the row a value sits, so the position index does not leak
    (see the module docstring).

    Args:
        hidden: Hidden states ``[batch, pos, d_model]``, ``pos >= 2``.
        centered: Passed to :func:`~nopelens.self_similarity` (subtract each sequence's
            mean hidden state first).

    Returns:
        ``[batch, pos, pos + 2]`` features.

    Raises:
        ValueError: If ``pos < 2`` (a token needs another token to be similar to).

    Examples:
        >>> h = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
        >>> f = cosine_features(h)
        >>> f.shape
        torch.Size([2, 5, 7])
        >>> bool((f[..., :4].diff(dim=-1) <= 0).all())  # sorted rows
        True
    """
    batch, pos, _ = hidden.shape
    if pos < 2:
        raise ValueError(
            f"The 'hidden' parameter of cosine_features must have pos >= 2 [batch pos d_model]. "
            f"Got shape {tuple(hidden.shape)} instead."
        )
    sim = self_similarity(hidden_features(hidden), centered=centered)
    off_diagonal = ~torch.eye(pos, dtype=torch.bool, device=sim.device)
    rows = sim[:, off_diagonal].view(batch, pos, pos - 1)
    sorted_rows = rows.sort(dim=-1, descending=True).values
    first = sim[:, :, 0].clone()
    first[:, 0] = sim[:, 0, 1]
    mean = rows.mean(dim=-1)
    std = rows.std(dim=-1, correction=0)
    return torch.cat([sorted_rows, first[..., None], mean[..., None], std[..., None]], dim=-1)


def variance_features(
    hidden: Float[torch.Tensor, "batch pos d_model"],
) -> Float[torch.Tensor, "batch pos 1"]:
    """The log of each token's variance across hidden dimensions (Chi et al. 2023), one feature.

    The variance comes from :func:`nopelens.measure.position_variance`. The log makes the
    ``1/i`` decay of the variance hypothesis linear in ``log i`` and tames its range; it is
    monotone, so the nonparametric (isotonic) readout is unaffected by it. Zero variances are
    clamped to the smallest positive float before the log.

    Args:
        hidden: Hidden states ``[batch, pos, d_model]``.

    Returns:
        ``[batch, pos, 1]`` log-variances.

    Examples:
        >>> h = torch.randn(1, 4, 64, generator=torch.Generator().manual_seed(0))
        >>> h = h / torch.arange(1, 5).sqrt()[:, None]   # std 1/sqrt(i): variance 1/i
        >>> v = variance_features(h)[0, :, 0]
        >>> bool((v.diff() < 0).all())
        True
    """
    hidden = hidden_features(hidden)
    variance = position_variance(hidden)
    tiny = torch.finfo(variance.dtype).tiny
    return variance.clamp_min(tiny).log()[..., None]


def family_features(
    hidden: Float[torch.Tensor, "batch pos d_model"],
    family: str,
    *,
    centered: bool = False,
) -> Float[torch.Tensor, "batch pos n_features"]:
    """The features of one family (``"hidden"``, ``"cosine"`` or ``"variance"``).

    Examples:
        >>> family_features(torch.randn(1, 3, 4), "variance").shape
        torch.Size([1, 3, 1])
    """
    if family == "hidden":
        return hidden_features(hidden)
    if family == "cosine":
        return cosine_features(hidden, centered=centered)
    if family == "variance":
        return variance_features(hidden)
    raise ValueError(
        f"The 'family' parameter of family_features must be one of "
        f"{', '.join(map(repr, FEATURE_FAMILIES))}. Got {family!r} instead."
    )


def standardize(
    fit: Float[torch.Tensor, "n_fit n_features"],
    *others: Float[torch.Tensor, "_ n_features"],
) -> tuple[torch.Tensor, ...]:
    """Z-score ``fit`` and ``others`` with the mean and standard deviation of ``fit``.

    Constant columns (standard deviation 0 on ``fit``) are centred and left unscaled, so they stay
    zero and carry no signal.

    Returns:
        The standardised ``fit`` followed by the standardised ``others``.

    Examples:
        >>> a, b = standardize(torch.tensor([[0.0], [2.0]]), torch.tensor([[4.0]]))
        >>> a.flatten().tolist(), b.flatten().tolist()
        ([-1.0, 1.0], [3.0])
    """
    mean = fit.mean(dim=0)
    std = fit.std(dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple((x - mean) / std for x in (fit, *others))


def pca_projection(
    fit: Float[torch.Tensor, "n_fit n_features"],
    k: int,
    *,
    gram: Float[torch.Tensor, "n_features n_features"] | None = None,
) -> Float[torch.Tensor, "n_features k"]:
    """The top-``k`` principal directions of the (already centred) training features ``fit``.

    Args:
        fit: Training features, centred (e.g. by :func:`standardize`).
        k: Number of directions, ``1 <= k <= n_features``.
        gram: ``(fit.T @ fit).double()`` when the caller has it (the ridge probe on ``fit``
            needs the same product); computed here otherwise.

    Returns:
        Orthonormal columns ``[n_features, k]``, by decreasing explained variance.

    Examples:
        >>> x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.1], [0.0, -0.1]])
        >>> pca_projection(x, 1).abs().flatten().tolist()
        [1.0, 0.0]
    """
    gram = (fit.T @ fit).double() if gram is None else gram
    _, vectors = torch.linalg.eigh(gram)
    return vectors[:, -k:].flip(-1).to(fit.dtype)


def polynomial_features(
    x: Float[torch.Tensor, "n 1"],
    k: int,
) -> Float[torch.Tensor, "n k"]:
    """Powers ``x, x^2, ..., x^k`` of a standardised scalar feature.

    Examples:
        >>> polynomial_features(torch.tensor([[2.0]]), 3).tolist()
        [[2.0, 4.0, 8.0]]
    """
    powers = torch.arange(1, k + 1, device=x.device, dtype=x.dtype)
    return x**powers
