"""Splits by sequence: which whole sequences a probe is fitted, tuned and tested on.

Tokens of one sequence share their context (and, in a causal model, their prefix), so a
token-level split leaks: :class:`SequenceSplit` only holds 1-D *sequence* indices and refuses a
split whose parts share a sequence. :func:`split_sequences` draws one at random from a seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from nopelens.validation import check_float, check_int

#: The entry point whose ``splits`` argument these checks report on.
_FUNC = "probe_positions"


@dataclasses.dataclass(frozen=True)
class SequenceSplit:
    """Disjoint sets of *sequence* indices for training, validation and testing.

    A probe never sees a token whose sequence is on another side of the split: tokens of one
    sequence share their context (and, in a causal model, their prefix), so a token-level split
    leaks. Only 1-D sequence indices are accepted; there is no way to name single tokens.

    Each part is given as 1-D integer sequence indices (list, array or tensor) and stored as a
    tuple of ints.

    Attributes:
        train: Sequences the probes are fitted on.
        val: Sequences used to choose the regularisation (carved from the training sequences;
            ridge is refitted on ``train`` and ``val`` together once the penalty is chosen).
        test: Held-out sequences all reported metrics are computed on.

    Raises:
        ValueError: If a part is empty, is not 1-D integer indices, repeats an index, or shares a
            sequence with another part.

    Examples:
        >>> SequenceSplit(train=[0, 1], val=[2], test=[3]).test
        (3,)
        >>> SequenceSplit(train=[0, 1], val=[2], test=[3])
        SequenceSplit(train: 2 sequences, val: 1, test: 1 [3])
        >>> SequenceSplit(train=[0, 1], val=[2], test=[1])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: ... Sequence 1 is in both train and test.
    """

    train: Sequence[int] | np.ndarray | torch.Tensor
    val: Sequence[int] | np.ndarray | torch.Tensor
    test: Sequence[int] | np.ndarray | torch.Tensor

    def __post_init__(self) -> None:
        where = f"The 'split' parameter of {_FUNC}"
        seen: dict[int, str] = {}
        for part in ("train", "val", "test"):
            values = _sequence_indices(getattr(self, part), f"{where} ({part})")
            object.__setattr__(self, part, values)
            if not values:
                raise ValueError(f"{where} must have at least one {part} sequence. Got none.")
            if len(set(values)) != len(values):
                raise ValueError(f"{where} repeats a sequence index in {part}: {list(values)}.")
            for index in values:
                if index in seen:
                    raise ValueError(
                        f"{where} must put every sequence on one side only (splits are by "
                        f"sequence). Sequence {index} is in both {seen[index]} and {part}."
                    )
                seen[index] = part

    def __repr__(self) -> str:
        """Part sizes and, when short, the test indices (never the full index lists)."""
        test = f" {list(self.test)}" if len(self.test) <= 8 else ""
        return (
            f"SequenceSplit(train: {len(self.train)} sequences, val: {len(self.val)}, "
            f"test: {len(self.test)}{test})"
        )

    def check(self, n_sequences: int) -> SequenceSplit:
        """Check that every index is a valid sequence index for ``n_sequences`` sequences."""
        high = max(max(self.train), max(self.val), max(self.test))
        low = min(min(self.train), min(self.val), min(self.test))
        if low < 0 or high >= n_sequences:
            raise ValueError(
                f"The 'split' parameter of {_FUNC} must index sequences in [0, {n_sequences}). "
                f"Got indices from {low} to {high} instead."
            )
        return self


def _sequence_indices(values: Any, where: str) -> tuple[int, ...]:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype == bool or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(
            f"{where} must be 1-D integer sequence indices (splits are by sequence, not token). "
            f"Got dtype {array.dtype} instead."
        )
    if array.ndim != 1:
        raise ValueError(
            f"{where} must be 1-D sequence indices (splits are by sequence, not token). "
            f"Got an array of shape {array.shape} instead."
        )
    return tuple(int(v) for v in array)


def split_sequences(
    n_sequences: int,
    *,
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> SequenceSplit:
    """Randomly split ``n_sequences`` sequences into train, validation and test sequences.

    ``round(test_fraction * n_sequences)`` sequences (at least 1) are held out for testing, then
    ``round(val_fraction * rest)`` (at least 1) of the rest for validation.

    Args:
        n_sequences: Number of sequences (``>= 3``).
        test_fraction: Fraction of sequences held out for testing, in (0, 1).
        val_fraction: Fraction of the training sequences used for validation, in (0, 1).
        seed: Seed of a private ``numpy`` generator.

    Returns:
        A :class:`SequenceSplit`.

    Raises:
        ValueError: If the sizes leave a part empty.

    Examples:
        >>> s = split_sequences(10, seed=0)
        >>> len(s.train), len(s.val), len(s.test)
        (6, 2, 2)
        >>> sorted(s.train + s.val + s.test) == list(range(10))
        True
    """
    func = "split_sequences"
    check_int(n_sequences, "n_sequences", func, min=3)
    check_float(test_fraction, "test_fraction", func, min=0.0, max=1.0, min_inclusive=False)
    check_float(val_fraction, "val_fraction", func, min=0.0, max=1.0, min_inclusive=False)
    n_test = max(1, round(test_fraction * n_sequences))
    n_val = max(1, round(val_fraction * (n_sequences - n_test)))
    if n_sequences - n_test - n_val < 1:
        raise ValueError(
            f"The 'test_fraction' and 'val_fraction' parameters of {func} leave no training "
            f"sequence out of {n_sequences} ({n_test} test, {n_val} validation). Use more "
            f"sequences or smaller fractions."
        )
    order = np.random.default_rng(seed).permutation(n_sequences)
    test = np.sort(order[:n_test])
    val = np.sort(order[n_test : n_test + n_val])
    train = np.sort(order[n_test + n_val :])
    return SequenceSplit(train=train, val=val, test=test)
