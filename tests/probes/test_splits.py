"""Splits by sequence: random splits, refused token-level splits, explicit splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("seed", range(5))
def test_random_splits_are_disjoint_sets_of_whole_sequences(seed):
    from nopelens.probes import split_sequences

    split = split_sequences(23, test_fraction=0.3, val_fraction=0.25, seed=seed)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert set().union(*parts) == set(range(23))
    assert sum(len(p) for p in parts) == 23
    assert len(split.test) == 7 and len(split.val) == 4


def test_split_mixing_tokens_of_one_sequence_is_refused(linear_features):
    from nopelens.probes import SequenceSplit, probe_positions

    with pytest.raises(ValueError, match="one side only.*Sequence 2 is in both train and test"):
        SequenceSplit(train=[0, 1, 2], val=[3], test=[2, 4])
    token_mask = np.zeros((5, 4), dtype=bool)
    with pytest.raises(ValueError, match="by sequence, not token"):
        SequenceSplit(train=token_mask, val=[3], test=[4])
    with pytest.raises(ValueError, match="by sequence, not token"):
        SequenceSplit(train=np.array([[0, 1], [2, 3]]), val=[4], test=[5])
    hidden = linear_features(n_seq=6, pos=4)
    with pytest.raises(ValueError, match="splits are by sequence"):
        probe_positions({"0": hidden.reshape(-1, hidden.shape[-1])}, control_task=False)
    with pytest.raises(ValueError, match="sequence indices; splits are by sequence"):
        probe_positions({"0": hidden}, control_task=False, seeds=(0,), splits=[token_mask])
    with pytest.raises(ValueError, match=r"index sequences in \[0, 6\)"):
        probe_positions(
            {"0": hidden},
            control_task=False,
            seeds=(0,),
            splits=[SequenceSplit(train=[0, 1], val=[2], test=[9])],
        )


def test_explicit_splits_are_used(linear_features):
    from nopelens.probes import SequenceSplit, probe_positions

    hidden = linear_features(n_seq=8, pos=4)
    split = SequenceSplit(train=torch.tensor([0, 1, 2, 3]), val=[4], test=[5, 6, 7])
    report = probe_positions(
        {"0": hidden},
        features="hidden",
        probes="ridge",
        seeds=(0,),
        splits=[split],
        equal_dim=None,
        control_task=False,
    )
    sizes = report.per_seed[["n_train", "n_test"]].drop_duplicates()
    assert sizes.values.tolist() == [[5 * 4, 3 * 4]]
    assert report.config["splits"][0]["test"] == (5, 6, 7)
