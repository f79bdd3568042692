"""The labels a probe is fitted on: positions, the control task, and shuffled positions.

- ``"position"``: the token's absolute position (class ``p - offset``, where ``offset = 1`` with
  ``drop_first``).
- ``"control"``: the Hewitt & Liang (2019) control task: each token *type* is mapped, per seed,
  to a fixed random position, so a probe can only score by memorising token identities.
  Selectivity is task minus control score. The mapping is *balanced*: the types that occur are
  dealt out in a random order (a private ``torch`` generator seeded with the seed) to the classes
  in turn, so every class gets the same number of types (up to one). Independent draws per type
  (``randint``) would leave some classes with several types and others with none, and a probe
  that predicts the largest class would score well above ``1/n`` on noise. Token frequencies still
  make the control labels slightly unbalanced; the chance levels are computed from the labels
  actually used (:mod:`nopelens.probes.metrics`).
- ``"shuffled"``: the position labels permuted across the tokens of the training (fit and
  validation) rows and, independently, of the test rows (a private ``numpy`` generator seeded
  with ``[seed, 1]``): the noise floor of every metric at these sample sizes.

A *part* is the rows a probe is fitted, tuned or tested on: some sequences and, for the length
split, a range of positions (:data:`Part`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: Targets: the true positions, the Hewitt & Liang control task, labels permuted across tokens.
TARGETS: tuple[str, ...] = ("position", "control", "shuffled")

#: The rows of one part: sequence indices (on the labels' device) and a slice of positions.
Part = tuple[torch.Tensor, slice]


def part_rows(values: torch.Tensor, part: Part) -> torch.Tensor:
    """The rows of ``values`` (``[batch, pos, ...]``) in ``part``, flattened to ``[rows, ...]``."""
    index, positions = part
    rows = values[index][:, positions]
    return rows.reshape(-1, *values.shape[2:])


def control_labels(tokens: torch.Tensor, offset: int, seed: int, n_classes: int) -> torch.Tensor:
    """Each token type's balanced random class, for every token from position ``offset`` on.

    The types that occur from position ``offset`` on are put in a random order and dealt to the
    classes ``0, 1, ..., n_classes - 1, 0, 1, ...``: each class gets ``floor`` or ``ceil`` of
    ``n_types / n_classes`` types.

    Args:
        tokens: Token ids ``[batch, pos]``.
        offset: First position labelled (1 with ``drop_first``).
        seed: Seed of the private generator of the order.
        n_classes: Number of classes.

    Returns:
        ``[batch, pos - offset]`` class labels.

    Examples:
        >>> tokens = torch.arange(12).reshape(2, 6)
        >>> labels = control_labels(tokens, 0, seed=0, n_classes=4)
        >>> torch.bincount(labels.flatten()).tolist()    # 12 types, 3 per class
        [3, 3, 3, 3]
    """
    used = tokens[:, offset:]
    types, inverse = torch.unique(used, return_inverse=True)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(types), generator=generator)
    mapping = torch.empty(len(types), dtype=torch.long)
    mapping[order] = torch.arange(len(types)) % n_classes
    return mapping.to(used.device)[inverse]


def make_targets(
    labels: dict[str, torch.Tensor],
    parts: dict[str, Part],
    seed: int,
    offset: int,
    shuffled: bool,
) -> dict[str, dict[str, Any]]:
    """Class labels per part and target.

    Args:
        labels: Target name -> ``[batch, n_classes]`` classes of every token (``"position"``,
            and ``"control"`` when the control task runs).
        parts: ``"train"`` / ``"val"`` / ``"test"`` -> the rows of each part.
        seed: The run's seed (the shuffle).
        offset: Position of class 0 (1 with ``drop_first``).
        shuffled: Add the ``"shuffled"`` target.

    Returns:
        ``part -> target -> labels``: flat tensors for ``"train"`` and ``"val"``; for ``"test"``
        numpy arrays of *positions* (the class plus ``offset``), ready to score.
    """
    out: dict[str, dict[str, Any]] = {name: {} for name in parts}
    for target, values in labels.items():
        for name, part in parts.items():
            out[name][target] = part_rows(values, part)
    if shuffled:
        _add_shuffled(out, seed)
    out["test"] = {k: v.cpu().numpy() + offset for k, v in out["test"].items()}
    return out


def _add_shuffled(out: dict[str, dict[str, Any]], seed: int) -> None:
    """Add ``"shuffled"`` labels: one permutation of train + val positions, another of test."""
    rng = np.random.default_rng([seed, 1])
    device = out["train"]["position"].device
    n_fit = out["train"]["position"].shape[0]
    joint = torch.cat([out["train"]["position"], out["val"]["position"]])
    shuffled = joint[torch.as_tensor(rng.permutation(joint.shape[0]), device=device)]
    out["train"]["shuffled"], out["val"]["shuffled"] = shuffled[:n_fit], shuffled[n_fit:]
    test = out["test"]["position"]
    out["test"]["shuffled"] = test[torch.as_tensor(rng.permutation(test.shape[0]), device=device)]
