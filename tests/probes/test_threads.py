"""Probe fits run on several threads, one thread per operation: the same rows as one by one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from nopelens.probes import probe_positions


def _layer(n_seq=40, pos=12, d_model=24, d_vocab=30, seed=3):
    """A causal-mean layer (as benchmarks/bench_probe.py): position, variance and token signal."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, d_vocab, (n_seq, pos), generator=g)
    embed = torch.randn(d_vocab, d_model, generator=g)
    values = torch.randn(d_vocab, d_model, generator=g) * 2.0
    cesaro = values[tokens].cumsum(dim=1) / torch.arange(1, pos + 1)[:, None]
    return torch.nn.functional.gelu(embed[tokens] + cesaro), tokens


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for column in a.columns:
        x, y = a[column].to_numpy(), b[column].to_numpy()
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(x, y, err_msg=column)  # NaN == NaN here
        else:
            assert a[column].astype(str).tolist() == b[column].astype(str).tolist(), column


def test_rows_do_not_depend_on_the_number_of_threads():
    """Bit for bit: 1 thread (the fits one after the other) and 2 threads (fits at once)."""
    hidden, tokens = _layer()
    kwargs = dict(probes=("ridge", "logistic", "isotonic"), seeds=(0, 1), extrapolate_from=8)
    before = torch.get_num_threads()
    reports = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            reports[threads] = probe_positions({"0": hidden}, tokens, **kwargs)
            assert torch.get_num_threads() == threads  # restored after the probes
    finally:
        torch.set_num_threads(before)
    _same(reports[1].per_seed, reports[2].per_seed)
    _same(reports[1].results, reports[2].results)
    assert set(reports[2].per_seed["probe"]) == {"ridge", "logistic", "isotonic"}


def test_family_rows_one_by_one_equal_the_layer_rows():
    """family_rows (sequential, the code path before the fits ran at once) gives the same rows."""
    from nopelens.probes.config import ProbeConfig
    from nopelens.probes.inputs import ProbedLayer
    from nopelens.probes.layer import _split_sequences, probe_layer

    hidden, tokens = _layer(n_seq=30, pos=10, d_model=12)
    config = ProbeConfig(seeds=(4,), probes=("ridge", "logistic", "isotonic"))
    layer = ProbedLayer(site="given", layer="0", layer_index=0, hidden=hidden)
    fast = probe_layer("given", None, layer, tokens, config)
    classes = torch.arange(10).expand(30, 10)
    sequences = _split_sequences(config, 0, 4, 30, hidden.device)
    labels = {"position": classes, "control": _control(tokens)}
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as inside probe_layer
    try:
        rows = _rows_one_by_one(config, sequences, labels, hidden)
    finally:
        torch.set_num_threads(before)
    _same(pd.DataFrame(rows), pd.DataFrame(fast))


def _rows_one_by_one(config, sequences, labels, hidden):
    from nopelens.probes.features import family_features
    from nopelens.probes.layer import _label_set, _splits
    from nopelens.probes.scores import family_rows

    rows = []
    for split, parts, split_labels, probes in _splits(config, sequences, labels, 0):
        label_set = _label_set(split_labels, parts, 4, 0, True)
        base = {"model": "given", "init_seed": None, "site": "given", "layer": "0",
                "layer_index": 0, "split": split, "seed": 4}  # fmt: skip
        for family in config.features:
            feat = family_features(hidden, family)
            rows.extend(family_rows(base, family, feat, parts, label_set, probes, 10, config))
    return rows


def _control(tokens):
    from nopelens.probes.targets import control_labels

    return control_labels(tokens, 0, 4, tokens.shape[1])
