"""nopelens: where do causal transformers without positional encodings keep position?

Build NoPE models on TransformerLens, read every layer through its hook points, and measure the
neighborhood pattern (nearby hidden states are more cosine-similar than distant ones), the
first-layer theory that predicts it, variance by position, and position probes.

Public names are imported lazily, so ``import nopelens`` is fast and a command that needs no
model does not pay for importing TransformerLens.

Examples:
    >>> import nopelens
    >>> model = nopelens.build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=10, n_ctx=8)
    >>> nopelens.is_nope(model)
    True
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # models
    "build_model": "models",
    "is_nope": "models",
    "save_model": "models",
    "load_model": "models",
    "model_spec": "models",
    # data
    "random_tokens": "data",
    # activations
    "collect_activations": "activations",
    "Activations": "activations",
    # similarity (pure)
    "self_similarity": "similarity",
    "adjacency_probability": "similarity",
    "neighborhood_concordance": "similarity",
    "distance_profile": "similarity",
    "adjacency_chance": "similarity",
    "CONCORDANCE_CHANCE": "similarity",
    # analysis
    "analyze": "analysis",
    "AnalysisReport": "analysis",
    # first-layer theory
    "first_layer_theory": "theory",
    "FirstLayerTheory": "theory",
    "decompose_first_layer": "theory",
    "attention_sharpness_study": "theory",
    "uniform_attention_similarity": "theory",
    "uniform_residual_similarity": "theory",
    # variance
    "position_variance": "variance",
    # probes
    "probe_positions": "probing",
    "ProbeReport": "probing",
    "SequenceSplit": "probing",
    # tasks, training, sweeps, ablations
    "get_task": "tasks",
    "TASKS": "tasks",
    "train": "training",
    "TrainConfig": "training",
    "TrainResult": "training",
    "build_task_model": "training",
    "load_initial_and_final": "training",
    "sweep": "sweeps",
    "load_grid": "sweeps",
    "PRESETS": "sweeps",
    "summarize": "sweeps",
    "remove_residual_hooks": "ablation",
    "shuffle_prefix_hooks": "ablation",
    # dashboards and the main job
    "write_dashboard": "dashboard",
    "reproduce": "reproduction",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nopelens' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"nopelens.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
