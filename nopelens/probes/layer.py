"""Probe one layer: features, splits per seed, targets, and one tidy row per score.

:func:`probe_layer` is the inner loop of :func:`~nopelens.probes.probe_positions`. For each seed
the sequences are split (:mod:`nopelens.probes.splits`) and the labels built
(:mod:`nopelens.probes.targets`); then, for the split by sequence and (with
``extrapolate_from``) the length split, every feature family is cut into independent probe fits
(:func:`~nopelens.probes.scores.family_fits`: one per capacity and probe kind, and one per target
for the logistic probe), which run on ``torch.get_num_threads()`` threads at once, each fit on
one thread, and are scored in report order.

Each worker thread sets ``torch.set_num_threads(1)`` itself: a new thread does not inherit the
setting, and without it every worker's matrix products ran on all cores' OpenMP threads (4
threads on a 2-core machine).

Why one thread per fit. A probe fit is thousands of small tensor operations (an L-BFGS step on
``10^4 x 10^2`` features); split across threads, each waits for the slowest thread at every
operation, which on a busy machine cost 10x the CPU time (164 s wall instead of 18 s measured at
load 8 on 2 cores). And the split changes floating-point sums, so the fitted probes (an L-BFGS
path amplifies the last bit) depended on the number of threads. Fits on one thread each are
independent of the thread count: the results are the same on any machine with the same CPU
kernels, and equal, bit for bit, what the sequential code gave with ``torch.set_num_threads(1)``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from nopelens.probes.config import ProbeConfig
from nopelens.probes.features import family_features
from nopelens.probes.inputs import ProbedLayer
from nopelens.probes.metrics import regression_chance
from nopelens.probes.scores import REGRESSIONS, Fit, LabelSet, family_fits, fits_rows, run_fit
from nopelens.probes.splits import split_sequences
from nopelens.probes.targets import Part, control_labels, make_targets

#: Fits submitted ahead of the one being waited for, per thread (bounds the features in memory).
_LOOKAHEAD = 6

_Result = tuple[dict[str, np.ndarray], dict[str, float]]
_Group = tuple[list[Fit], LabelSet]


def probe_layer(
    model_label: str,
    init_seed: int | None,
    layer: ProbedLayer,
    tokens: torch.Tensor | None,
    config: ProbeConfig,
) -> list[dict[str, Any]]:
    """Per-seed report rows of one layer (see :class:`~nopelens.probes.ProbeReport`).

    The fits run on ``torch.get_num_threads()`` threads (CPU tensors; one at a time on an
    accelerator), every tensor operation on one thread (``torch.set_num_threads(1)`` while the
    layer is probed, restored after), so the rows do not depend on the number of threads.

    Args:
        model_label: ``"given"`` or ``"random_init"``.
        init_seed: The model's initialisation seed (None when unknown).
        layer: The hidden states to probe.
        tokens: Token ids ``[batch, pos]`` (for the control task) or None.
        config: The run's settings.

    Returns:
        One dict per (seed, split, feature, capacity, probe, target, metric).
    """
    workers = torch.get_num_threads() if layer.hidden.device.type == "cpu" else 1
    with _one_thread():
        groups = _groups(model_label, init_seed, layer, tokens, config)
        n_classes = layer.hidden.shape[1] - int(config.drop_first)

        def run(fit: Fit, labels: LabelSet) -> _Result:
            return run_fit(fit, labels, n_classes, config)

        rows: list[dict[str, Any]] = []
        for fits, labels, results in _run_in_order(groups, run, workers):
            rows.extend(fits_rows(fits, results, labels))
        return rows


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """``torch.set_num_threads(1)`` inside the block, restored after.

    This thread only: worker threads set their own (:func:`_single_thread`).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _single_thread() -> None:
    """Start a worker thread at one torch thread (a new thread does not inherit the setting).

    Without it, each worker's matrix products ran on the OpenMP default of the new thread (all
    cores): ``workers`` x cores threads, spinning against each other, on a 2-core machine 4
    threads for 2 cores. The results are the same either way (the tests compare them).
    """
    torch.set_num_threads(1)


def _run_in_order(
    groups: Iterator[_Group], run: Callable[[Fit, LabelSet], _Result], workers: int
) -> Iterator[tuple[list[Fit], LabelSet, list[_Result]]]:
    """Run every fit of every group on ``workers`` threads; yield the groups' results in order.

    Groups are drawn (their features standardised) only while fewer than
    ``_LOOKAHEAD * workers`` fits wait, so memory holds a few families' features, not all.
    """
    if workers <= 1:
        for fits, labels in groups:
            yield fits, labels, [run(fit, labels) for fit in fits]
        return
    with concurrent.futures.ThreadPoolExecutor(workers, initializer=_single_thread) as pool:
        pending: collections.deque[Any] = collections.deque()
        waiting = 0
        for fits, labels in groups:
            futures = [pool.submit(run, fit, labels) for fit in fits]
            pending.append((fits, labels, futures))
            waiting += len(futures)
            while waiting > _LOOKAHEAD * workers:
                done_fits, done_labels, done = pending.popleft()
                yield done_fits, done_labels, [f.result() for f in done]
                waiting -= len(done)
        while pending:
            done_fits, done_labels, done = pending.popleft()
            yield done_fits, done_labels, [f.result() for f in done]


def _groups(
    model_label: str,
    init_seed: int | None,
    layer: ProbedLayer,
    tokens: torch.Tensor | None,
    config: ProbeConfig,
) -> Iterator[_Group]:
    """The fits of the layer, one list per (seed, split, family, capacity, probe), in order."""
    hidden = layer.hidden
    n_seq, pos = hidden.shape[:2]
    offset = int(config.drop_first)
    n_classes = pos - offset
    feats = {
        family: family_features(hidden, family, centered=config.centered)[:, offset:]
        for family in config.features
    }
    classes = torch.arange(n_classes, device=hidden.device).expand(n_seq, n_classes)
    for index, seed in enumerate(config.seed_list):
        sequences = _split_sequences(config, index, seed, n_seq, hidden.device)
        base = {
            "model": model_label,
            "init_seed": init_seed,
            "site": layer.site,
            "layer": layer.layer,
            "layer_index": layer.layer_index,
        }
        labels = {"position": classes}
        if config.control_task:
            assert tokens is not None, "gather_subjects refuses control_task without tokens"
            labels["control"] = control_labels(tokens, offset, seed, n_classes).to(hidden.device)
        for split, parts, split_labels, probes in _splits(config, sequences, labels, offset):
            label_set = _label_set(split_labels, parts, seed, offset, config.shuffled_control)
            for family, feat in feats.items():
                for fits in family_fits(
                    {**base, "split": split, "seed": seed},
                    family,
                    feat,
                    parts,
                    label_set,
                    probes,
                    config.equal_dim,
                ):
                    yield fits, label_set


def _split_sequences(
    config: ProbeConfig, index: int, seed: int, n_seq: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """The sequence indices of each part for run ``index`` (explicit split or drawn from seed)."""
    split = (
        config.split_list[index]
        if config.split_list is not None
        else split_sequences(
            n_seq, test_fraction=config.test_fraction, val_fraction=config.val_fraction, seed=seed
        )
    )
    return {
        name: torch.as_tensor(getattr(split, name), device=device)
        for name in ("train", "val", "test")
    }


def _splits(
    config: ProbeConfig,
    sequences: dict[str, torch.Tensor],
    labels: dict[str, torch.Tensor],
    offset: int,
) -> list[tuple[str, dict[str, Part], dict[str, torch.Tensor], tuple[str, ...]]]:
    """(split name, parts, labels, probe kinds) of the split by sequence and the length split.

    The length split keeps the sequences of the split by sequence and cuts the positions at
    ``extrapolate_from``: fit and validation rows below, test rows at or above it. Only the
    regression probes and the position labels (and their shuffle) apply to it.
    """
    whole = slice(None)
    out = [
        (
            "sequence",
            {name: (index, whole) for name, index in sequences.items()},
            labels,
            tuple(config.probes),
        )
    ]
    if config.extrapolate_from is not None:
        cut = config.extrapolate_from - offset
        below, above = slice(0, cut), slice(cut, None)
        parts = {
            "train": (sequences["train"], below),
            "val": (sequences["val"], below),
            "test": (sequences["test"], above),
        }
        probes = tuple(p for p in config.probes if p in REGRESSIONS)
        out.append(("length", parts, {"position": labels["position"]}, probes))
    return out


def _label_set(
    labels: dict[str, torch.Tensor],
    parts: dict[str, Part],
    seed: int,
    offset: int,
    shuffled: bool,
) -> LabelSet:
    """The labels of every part and target, and the regression chance of every target."""
    per_part = make_targets(labels, parts, seed, offset, shuffled)
    regression = {}
    for target, test in per_part["test"].items():
        train = torch.cat([per_part["train"][target], per_part["val"][target]])
        regression[target] = regression_chance(train.cpu().numpy() + offset, test)
    return LabelSet(
        train=per_part["train"],
        val=per_part["val"],
        test=per_part["test"],
        regression_chance=regression,
        offset=offset,
    )
