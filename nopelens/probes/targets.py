"""The labels a probe is fitted on: positions, the control task, and shuffled positions.

- ``"position"``: the token's absolute position (class ``p - offset``, where ``offset = 1`` with
  ``drop_first``).
- ``"control"``: the Hewitt & Liang (2019) control task: each token *type* is mapped, per seed,
  to a fixed position drawn uniformly (a private ``torch`` generator seeded with the seed), so a
  probe can only score by memorising token identities. Selectivity is task minus control score.
- ``"shuffled"``: the position labels permuted across the tokens of the training (fit and
  validation) sequences and, independently, of the test sequences (a private ``numpy``
  generator seeded with ``[seed, 1]``): the noise floor of every metric at these sample sizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nopelens.probes.config import ProbeConfig

#: Targets: the true positions, the Hewitt & Liang control task, labels permuted across tokens.
TARGETS: tuple[str, ...] = ("position", "control", "shuffled")


def make_targets(
    position_labels: torch.Tensor,
    tokens: torch.Tensor | None,
    parts: dict[str, torch.Tensor],
    seed: int,
    n_classes: int,
    config: ProbeConfig,
) -> dict[str, dict[str, Any]]:
    """Class labels (``0 .. n_classes - 1``) per part and target.

    Args:
        position_labels: ``[batch, n_classes]`` position classes of every token.
        tokens: Token ids ``[batch, pos]`` (needed for the control task).
        parts: ``"train"`` / ``"val"`` / ``"test"`` -> sequence indices on the labels' device.
        seed: The run's seed (control-task mapping and shuffle).
        n_classes: Number of position classes.
        config: The run's settings (``control_task``, ``shuffled_control``, ``drop_first``).

    Returns:
        ``part -> target -> labels``: flat tensors for ``"train"`` and ``"val"``; for ``"test"``
        numpy arrays of *positions* (the class plus the ``drop_first`` offset), ready to score.
    """
    offset = int(config.drop_first)
    device = position_labels.device
    per_target = {"position": position_labels}
    if config.control_task:
        assert tokens is not None, "gather_subjects refuses control_task without tokens"
        per_target["control"] = _control_labels(tokens, offset, seed, n_classes, device)
    out: dict[str, dict[str, Any]] = {"train": {}, "val": {}, "test": {}}
    for target, labels in per_target.items():
        for part, index in parts.items():
            out[part][target] = labels[index].reshape(-1)
    if config.shuffled_control:
        _add_shuffled(out, seed, device)
    out["test"] = {k: v.cpu().numpy() + offset for k, v in out["test"].items()}
    return out


def _control_labels(
    tokens: torch.Tensor, offset: int, seed: int, n_classes: int, device: torch.device
) -> torch.Tensor:
    """Each token type's fixed random class, for every token from position ``offset`` on.

    The mapping covers every type in ``tokens`` (including position 0 when it is dropped).
    """
    generator = torch.Generator().manual_seed(seed)
    vocab = int(tokens.max()) + 1
    mapping = torch.randint(0, n_classes, (vocab,), generator=generator).to(device)
    return mapping[tokens[:, offset:].to(device)]


def _add_shuffled(out: dict[str, dict[str, Any]], seed: int, device: torch.device) -> None:
    """Add ``"shuffled"`` labels: one permutation of train + val positions, another of test."""
    rng = np.random.default_rng([seed, 1])
    n_fit = out["train"]["position"].shape[0]
    joint = torch.cat([out["train"]["position"], out["val"]["position"]])
    shuffled = joint[torch.as_tensor(rng.permutation(joint.shape[0]), device=device)]
    out["train"]["shuffled"], out["val"]["shuffled"] = shuffled[:n_fit], shuffled[n_fit:]
    test = out["test"]["position"]
    out["test"]["shuffled"] = test[torch.as_tensor(rng.permutation(test.shape[0]), device=device)]
