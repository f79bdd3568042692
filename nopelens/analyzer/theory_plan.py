"""The validated arguments of :func:`~nopelens.analyzer.layer_theory` and its matrix layout.

Every argument is checked before any forward pass (each problem named with the parameter and the
allowed values); the plan then gives every per-sequence matrix (observed, and each per-sequence
prediction) its index in the running sums.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch

from nopelens.validation import InvalidParameterError, check_choice, check_float, check_int

#: Every prediction :func:`layer_theory` can compare with the observation.
LAYER_PREDICTIONS: tuple[str, ...] = (
    "first_layer",
    "first_layer_closed_form",
    "one_step",
    "propagated",
    "kim",
)
#: Sites the theory predicts (``resid_mid`` is ``resid_post`` in attention-only models).
LAYER_THEORY_SITES: tuple[str, ...] = ("attn_out", "resid_mid", "resid_post")


@dataclasses.dataclass
class Plan:
    """The validated arguments, and where each per-sequence matrix lives in the sums."""

    tokens: torch.Tensor
    sites: tuple[str, ...]
    layers: tuple[int, ...]
    predictions: tuple[str, ...]
    mlp: Literal["kernel", "ignore"]
    batch_size: int
    attn_only: bool
    causal: bool
    index: dict[tuple[str, str, int], int] = dataclasses.field(default_factory=dict)

    def hook(self, site: str, layer: int) -> str:
        """The hook read for ``site`` at ``layer`` (attention-only resid_mid: resid_post)."""
        from nopelens.measure import hook_name

        return hook_name("resid_post" if self.attn_only and site == "resid_mid" else site, layer)

    @property
    def deepest(self) -> int:
        """The deepest requested block."""
        return max(self.layers)


def make_plan(
    model: Any,
    tokens: Any,
    sites: Any,
    layers: Any,
    predictions: Any,
    mlp: str,
    batch_size: Any,
    n_bootstrap: Any,
    confidence: Any,
    seed: Any,
) -> Plan:
    """Validate every argument before any forward pass and lay out the matrices."""
    from nopelens.measure import check_layers, check_tokens
    from nopelens.theory import check_model, unmodelled_reason

    func = "layer_theory"
    check_model(model, func)
    tokens = check_tokens(model, tokens, func=func)
    if tokens.shape[-1] < 3:
        raise InvalidParameterError(
            f"The 'tokens' parameter of {func} must hold sequences of at least 3 tokens (the fit "
            f"needs off-diagonal pairs). Got shape {tuple(tokens.shape)} instead."
        )
    layers = check_layers(model, layers, func=func)
    check_choice(mlp, "mlp", ("kernel", "ignore"), func)
    check_int(batch_size, "batch_size", func, min=1)
    check_int(n_bootstrap, "n_bootstrap", func, min=0)
    confidence = check_float(confidence, "confidence", func, min=0.0, max=1.0, min_inclusive=False)
    if confidence >= 1.0:
        raise InvalidParameterError(
            f"The 'confidence' parameter of {func} must be a float in (0, 1). Got {confidence}."
        )
    check_int(seed, "seed", func, min=0)
    attn_only = bool(getattr(model.cfg, "attn_only", False))
    causal = getattr(model.cfg, "attention_dir", "causal") != "bidirectional"
    default_sites = tuple(s for s in LAYER_THEORY_SITES if not (attn_only and s == "resid_mid"))
    sites = _names(sites, "sites", LAYER_THEORY_SITES, default_sites, func)
    reason = unmodelled_reason(model)
    applicable = tuple(
        p
        for p in LAYER_PREDICTIONS
        if not (p == "kim" and not causal) and not (p in ("one_step", "propagated") and reason)
    )
    chosen = _names(predictions, "predictions", LAYER_PREDICTIONS, applicable, func)
    refused = [p for p in chosen if p not in applicable]
    if refused:
        why = "the model has bidirectional attention" if "kim" in refused and not causal else reason
        raise InvalidParameterError(
            f"The 'predictions' parameter of {func} asks for {', '.join(refused)}, which do not "
            f"apply to this model: {why}. Available: {', '.join(applicable)}."
        )
    mlp_model: Literal["kernel", "ignore"] = "ignore" if mlp == "ignore" else "kernel"
    plan = Plan(tokens, sites, layers, chosen, mlp_model, batch_size, attn_only, causal)
    layout(plan)
    return plan


def _names(
    value: Any, name: str, allowed: tuple[str, ...], default: tuple[str, ...], func: str
) -> tuple[str, ...]:
    if value is None:
        return default
    items = (value,) if isinstance(value, str) else tuple(value)
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise InvalidParameterError(
            f"The {name!r} parameter of {func} must name one or more of {', '.join(allowed)}. "
            f"Got {list(items)!r} instead."
        )
    return tuple(dict.fromkeys(items))


PER_SEQUENCE = ("one_step", "propagated")


def layout(plan: Plan) -> None:
    """Give every per-sequence matrix an index in the sums.

    Observed and per-sequence predictions per layer, block 0's ``first_layer`` once per site.
    """
    keys = [("observed", s, layer) for s in plan.sites for layer in plan.layers]
    keys += [
        (p, s, layer)
        for p in PER_SEQUENCE
        if p in plan.predictions
        for s in plan.sites
        for layer in plan.layers
    ]
    if "first_layer" in plan.predictions:
        keys += [("first_layer", s, -1) for s in plan.sites]
    plan.index = {key: i for i, key in enumerate(keys)}
