"""The MLP probe: one hidden layer, seeded, early-stopped on the validation rows.

:func:`mlp_predict` is the nonlinear classifier beside the linear ones (Hewitt & Liang 2019 compare
the two: an MLP can memorise, so its selectivity is the number to read). Its capacity is fixed by
the hidden width ``h``: ``(dim + 1) * h + (h + 1) * n_classes`` parameters per target. Its only
regulariser besides an optional L2 penalty is early stopping: each target keeps the weights of the
epoch with the lowest validation cross-entropy.

All targets are trained at once as independent networks (batched matrix products; Adam and its
weight decay act element by element, and a target stops for good once out of patience, so the
joint run gives each target what its own run would). The weights and
the mini-batch order come from a private generator seeded with ``seed``: no global random state is
read or changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int

#: Tokens per mini-batch of the MLP probe.
MLP_BATCH: int = 256


def _generator(*entropy: int) -> torch.Generator:
    """A private CPU generator seeded from ``entropy`` (numpy's ``SeedSequence`` mixes it)."""
    state = np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _init_params(
    dim: int, hidden: int, n_classes: int, seed: int, ids: Sequence[int], device: torch.device
) -> list[torch.Tensor]:
    """``W1, b1, W2, b2`` of every target, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (as ``Linear``).

    Target ``t``'s weights come from its own generator, seeded with ``(seed, ids[t])``.
    """
    shapes = (
        (dim, hidden, dim),
        (1, hidden, dim),
        (hidden, n_classes, hidden),
        (1, n_classes, hidden),
    )
    per_target = []
    for target_id in ids:
        generator = _generator(seed, target_id)
        per_target.append(
            [
                (torch.rand(rows, cols, generator=generator) * 2 - 1) / math.sqrt(fan_in)
                for rows, cols, fan_in in shapes
            ]
        )
    return [
        torch.stack([weights[i] for weights in per_target]).to(device).requires_grad_(True)
        for i in range(len(shapes))
    ]


def _logits(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``[targets, n, n_classes]`` logits of every target's network on the rows ``x``."""
    w1, b1, w2, b2 = params
    return torch.relu(x @ w1 + b1) @ w2 + b2


def _losses(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each target, ``[targets]`` (``y`` is ``[n, targets]``)."""
    logits = _logits(params, x)
    n_targets, n, n_classes = logits.shape
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, n_classes), y.T.reshape(-1), reduction="none"
    )
    return per_token.view(n_targets, n).mean(dim=1)


def mlp_predict(
    x_fit: Float[torch.Tensor, "n_fit n_features"],
    y_fit: Int[torch.Tensor, "n_fit n_targets"],
    x_val: Float[torch.Tensor, "n_val n_features"],
    y_val: Int[torch.Tensor, "n_val n_targets"],
    x_test: Float[torch.Tensor, "n_test n_features"],
    n_classes: int,
    *,
    hidden: int = 64,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    max_epochs: int = 100,
    patience: int = 5,
    seed: int = 0,
    target_ids: Sequence[int] | None = None,
) -> tuple[Int[torch.Tensor, "n_test n_targets"], list[float]]:
    """A one-hidden-layer ReLU classifier per target, early-stopped on the validation rows.

    ``logits = relu(x W1 + b1) W2 + b2`` with ``h = hidden`` units, trained by Adam on mini-batches
    of :data:`MLP_BATCH` fit rows (mean cross-entropy, plus ``weight_decay`` times the weights as
    an L2 gradient). After every epoch each target's validation cross-entropy is computed; the
    weights of its best epoch are kept, and training stops once every target has gone
    ``patience`` epochs without improving, or after ``max_epochs``.

    Args:
        x_fit: Training features (ideally standardised).
        y_fit: Training class labels in ``[0, n_classes)``, one column per target.
        x_val: Validation features (early stopping).
        y_val: Validation labels.
        x_test: Test features.
        n_classes: Number of classes.
        hidden: Hidden units ``h``.
        lr: Adam learning rate.
        weight_decay: L2 penalty on the weights (Adam's ``weight_decay``).
        max_epochs: Most passes over the fit rows.
        patience: Epochs without a lower validation loss before a target stops.
        seed: Seed of the private generators of the initial weights and the mini-batch order.
        target_ids: A stable id per target column (default ``0, 1, ...``): target ``t``'s
            initial weights are drawn from ``(seed, target_ids[t])``, so a target gets the same
            network whichever other targets are fitted beside it.

    Returns:
        Predicted test classes ``[n_test, n_targets]`` and the chosen (best) epoch of each target.

    Examples:
        >>> x = torch.linspace(-1, 1, 200)[:, None]
        >>> y = (x[:, 0].abs() > 0.5).long()[:, None]      # not linearly separable
        >>> pred, epochs = mlp_predict(x, y, x, y, torch.tensor([[0.0], [0.9], [-0.9]]), 2,
        ...                            lr=0.05, max_epochs=40)
        >>> pred.flatten().tolist()
        [0, 1, 1]
    """
    device = x_fit.device
    x_fit, x_val, x_test = x_fit.float(), x_val.float(), x_test.float()
    n_fit, dim = x_fit.shape
    n_targets = y_fit.shape[1]
    ids = list(range(n_targets)) if target_ids is None else list(target_ids)
    params = _init_params(dim, hidden, n_classes, seed, ids, device)
    generator = _generator(seed)  # the mini-batch order, shared by the targets
    best = [p.detach().clone() for p in params]
    best_loss = torch.full((n_targets,), math.inf, device=device)
    best_epoch = torch.zeros(n_targets, dtype=torch.long, device=device)
    waited = torch.zeros(n_targets, dtype=torch.long, device=device)
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for epoch in range(1, max_epochs + 1):
            order = torch.randperm(n_fit, generator=generator).to(device)
            for start in range(0, n_fit, MLP_BATCH):
                rows = order[start : start + MLP_BATCH]
                optimizer.zero_grad()
                _losses(params, x_fit[rows], y_fit[rows]).sum().backward()
                optimizer.step()
            with torch.no_grad():
                val_loss = _losses(params, x_val, y_val)
                # a target that has run out of patience is final, whatever the others still do
                better = (val_loss < best_loss) & (waited < patience)
                for kept, current in zip(best, params, strict=True):
                    kept[better] = current[better]
                best_loss = torch.where(better, val_loss, best_loss)
                best_epoch = torch.where(better, epoch, best_epoch)
                waited = torch.where(better, 0, waited + 1)
            if bool((waited >= patience).all()):
                break
    with torch.no_grad():
        pred = _logits(best, x_test).argmax(dim=-1).T
    return pred.contiguous(), [float(e) for e in best_epoch.tolist()]
