"""Seeded random token batches, the default input of every analysis."""

from __future__ import annotations

import torch
from jaxtyping import Int

from nopelens.validation import InvalidParameterError, check_int


def random_tokens(
    batch: int, pos: int, d_vocab: int, *, seed: int = 0, distinct: bool = False
) -> Int[torch.Tensor, "batch pos"]:
    """Draw a ``[batch, pos]`` batch of uniformly random token ids from a local generator.

    Args:
        batch: Number of sequences.
        pos: Sequence length.
        d_vocab: Ids are drawn from ``range(d_vocab)``.
        seed: Seed of a private ``torch.Generator``; the global RNG is not touched.
        distinct: If True, no token repeats within a sequence (each row is the first ``pos``
            entries of a random permutation), which the first-layer theory assumes.

    Returns:
        Int64 tensor ``[batch, pos]`` on the CPU.

    Raises:
        ValueError: If a size is not a positive int, or ``distinct`` and ``d_vocab < pos``.

    Examples:
        >>> random_tokens(2, 4, 10, seed=1).shape
        torch.Size([2, 4])
        >>> bool(torch.equal(random_tokens(2, 4, 10, seed=1), random_tokens(2, 4, 10, seed=1)))
        True
        >>> row = random_tokens(1, 10, 10, distinct=True)[0]
        >>> len(set(row.tolist()))
        10
    """
    func = "random_tokens"
    check_int(batch, "batch", func, min=1)
    check_int(pos, "pos", func, min=1)
    check_int(d_vocab, "d_vocab", func, min=1)
    check_int(seed, "seed", func, min=0)
    if distinct and d_vocab < pos:
        raise InvalidParameterError(
            f"The 'd_vocab' parameter of {func} must be >= pos={pos} when distinct=True. "
            f"Got {d_vocab} instead."
        )
    generator = torch.Generator().manual_seed(seed)
    if not distinct:
        return torch.randint(0, d_vocab, (batch, pos), generator=generator)
    keys = torch.rand(batch, d_vocab, generator=generator)
    return keys.argsort(dim=-1)[:, :pos]
