"""Untrained models kept between configurations of one process, their weights redrawn.

Constructing TransformerLens' modules is most of a small model's build time, and a sweep runs many
configurations that differ only in their seed. A worker therefore keeps the last untrained CPU
models it analysed and gives a configuration of the same architecture the kept model with its
weights redrawn (:func:`nopelens.models.redraw_weights`): the same weights, bit for bit, as a
fresh :func:`~nopelens.models.build_model`. Trained models and models on other devices are always
built anew.
"""

from __future__ import annotations

import threading
from typing import Any

from nopelens.experiments.grid import context_length, model_extra

#: The last untrained CPU models this process analysed (up to :data:`_KEEP_MODELS` and
#: :data:`_KEEP_BYTES` of weights in all; a larger model is not kept), each under its
#: architecture (every build argument but the seed) with its
#: :func:`~nopelens.models.fixed_parameters` and size in bytes: a configuration of a kept
#: architecture redraws that model's weights instead of constructing it again (same weights).
#: A model is taken out while a configuration uses it and put back when its analysis is done,
#: under a lock, so threads of one process never share one.
_KEPT: dict[str, tuple[Any, dict[str, Any], int]] = {}
_KEPT_LOCK = threading.Lock()
_KEEP_MODELS = 8
_KEEP_BYTES = 64 * 2**20  # small models: the extra memory stays small


def untrained_model(config: dict[str, Any]) -> tuple[Any, tuple[str, Any] | None]:
    """The configuration's model before any training, and what to keep once it is analysed."""
    from nopelens.models import build_model, fixed_parameters, redraw_weights

    kwargs = {
        "n_layers": config["n_layers"],
        "d_model": config["d_model"],
        "n_heads": config["n_heads"],
        "d_vocab": config["d_vocab"],
        "n_ctx": context_length(config),
        "positional": config["positional"],
        "attention": config["attention"],
        "device": config["device"],
        **model_extra(config),
    }
    if config["task"] is not None or str(config["device"]) != "cpu":
        return build_model(**kwargs, seed=config["seed"]), None
    architecture = repr(sorted(kwargs.items()))
    with _KEPT_LOCK:
        kept = _KEPT.pop(architecture, None)
    if kept is not None:
        model = redraw_weights(kept[0], config["seed"], kept[1])  # equal to a fresh build
        return model, (architecture, (model, kept[1], kept[2]))
    model = build_model(**kwargs, seed=config["seed"])
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return model, (architecture, (model, fixed_parameters(model), size))


def keep_model(entry: tuple[str, Any] | None) -> None:
    """Put an analysed model back in :data:`_KEPT` (the most recent last), oldest out first."""
    if entry is None:
        return
    architecture, item = entry
    with _KEPT_LOCK:
        _KEPT[architecture] = item
        while _KEPT and (
            len(_KEPT) > _KEEP_MODELS or sum(kept[2] for kept in _KEPT.values()) > _KEEP_BYTES
        ):
            del _KEPT[next(iter(_KEPT))]
