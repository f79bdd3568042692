"""Feature families: the cosine summaries do not leak the position index."""

from __future__ import annotations

import torch


def test_cosine_features_do_not_leak_the_position_index():
    """Permuting the tokens of a sequence (keeping the first two in place) permutes the rows."""
    from nopelens.probes import cosine_features

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 9, 16, generator=g)
    perm = torch.cat([torch.tensor([0, 1]), 2 + torch.randperm(7, generator=g)])
    feats = cosine_features(hidden)
    permuted = cosine_features(hidden[:, perm])
    torch.testing.assert_close(permuted, feats[:, perm], msg="cosine features vs permutation")
    # the first row does not use its own (diagonal) similarity to the first token
    assert not torch.allclose(feats[:, 0, -3], torch.ones(3))
