"""What gets probed: the hidden states of every layer, from a model, an Activations or a mapping.

:func:`gather_subjects` turns the first argument of :func:`~nopelens.probes.probe_positions` into
*subjects*: the given model(s) (or precomputed activations), copies at other init seeds and, for a
trained model, its random-init twin(s) (:mod:`nopelens.probes.twins`), each with the
``[batch, pos, d_model]`` hidden states of every layer to probe (:class:`ProbedLayer`) and the
token ids they came from. Every input problem is reported here,
before any probe is fitted.

TransformerLens is imported only when a model or an ``Activations`` is given (inside functions),
so probing a mapping of precomputed tensors stays light.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from nopelens.models import HookedModel
from nopelens.probes.config import ProbeConfig
from nopelens.probes.splits import split_sequences
from nopelens.probes.twins import model_description, models_across_seeds

_FUNC = "probe_positions"


@dataclasses.dataclass(frozen=True)
class ProbedLayer:
    """The hidden states of one (site, layer), with the labels its report rows carry."""

    site: str
    """Hook site (``"embed"`` for the input embedding, ``"given"`` for a mapping entry)."""
    layer: str
    """Layer label: ``"embed"``, ``"0"``, ... or the key of a precomputed mapping."""
    layer_index: int
    """-1 for the embedding, the block (or mapping) index otherwise: the x-axis order."""
    hidden: torch.Tensor
    """Hidden states ``[batch, pos, d_model]``."""

    def __repr__(self) -> str:
        """Labels and the shape of the hidden states."""
        return (
            f"ProbedLayer(site={self.site!r}, layer={self.layer!r}, "
            f"hidden={tuple(self.hidden.shape)} [batch pos d_model])"
        )


@dataclasses.dataclass(frozen=True)
class Subject:
    """One model's layers to probe: the given model (or activations) or its random-init twin."""

    label: str
    """``"given"`` or ``"random_init"`` (the ``model`` column of the report)."""
    layers: list[ProbedLayer]
    """The layers to probe, in report order."""
    tokens: torch.Tensor | None
    """Token ids ``[batch, pos]`` the hidden states came from (None: no control task)."""
    init_seed: int | None = None
    """The model's initialisation seed (the ``init_seed`` column; None when unknown)."""

    def __repr__(self) -> str:
        """Label, init seed, layer count and the shared ``[batch pos]`` shape."""
        shape = tuple(self.layers[0].hidden.shape[:2]) if self.layers else ()
        return (
            f"Subject({self.label!r}, init_seed={self.init_seed}, {len(self.layers)} layers, "
            f"[batch pos]={shape})"
        )


def gather_subjects(
    obj: Any, tokens: torch.Tensor | None, config: ProbeConfig
) -> tuple[list[Subject], dict[str, Any]]:
    """The subjects to probe and what the report says about the model.

    Args:
        obj: A model, a list of models (one architecture, distinct init seeds), an
            ``Activations`` or a mapping of layer labels to hidden states.
        tokens: Token ids ``[batch, pos]`` or None.
        config: The run's settings.

    Returns:
        The subjects, and ``{"model": ..., "given_is_random_init": ..., "model_init_seeds": ...}``
        for models (``{}`` for precomputed activations).

    Raises:
        ValueError: For an input that cannot be probed (wrong type, shapes, too few sequences or
            positions, missing tokens, models of different architectures).
    """
    if isinstance(obj, HookedModel):
        return _model_subjects([obj], tokens, config)
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(m, HookedModel) for m in obj):
        return _model_subjects(list(obj), tokens, config)
    if config.init_seed_list is not None:
        raise ValueError(
            f"The 'init_seeds' parameter of {_FUNC} needs a model (it is rebuilt at every "
            f"seed); precomputed activations have none. Got {type(obj).__name__}."
        )
    return [_activations_subject(obj, tokens, config)], {}


def _model_subjects(
    models: list[HookedModel], tokens: torch.Tensor | None, config: ProbeConfig
) -> tuple[list[Subject], dict[str, Any]]:
    """The layers of every model to probe (:func:`~nopelens.probes.twins.models_across_seeds`)."""
    from nopelens.measure import check_tokens

    if tokens is None:
        raise ValueError(
            f"The 'tokens' parameter of {_FUNC} is required when a model is given. Got None."
        )
    for model in models:
        tokens = check_tokens(model, tokens, func=_FUNC)
    check_sizes(config, tokens.shape[0], tokens.shape[1])
    triples, all_random = models_across_seeds(
        models, config.init_seed_list, config.random_init_baseline
    )
    subjects = [
        Subject(label, layers_from_model(model, tokens, config), tokens, seed)
        for label, seed, model in triples
    ]
    seeds: dict[str, list[int | None]] = {}
    for label, seed, _ in triples:
        seeds.setdefault(label, []).append(seed)
    description: dict[str, Any] = {
        "model": model_description(models[0]),
        "given_is_random_init": all_random,
        "model_init_seeds": seeds,
    }
    return subjects, description


def _activations_subject(obj: Any, tokens: torch.Tensor | None, config: ProbeConfig) -> Subject:
    """Precomputed hidden states: their layers, checked to share one ``[batch pos]`` shape."""
    if isinstance(obj, Mapping):
        layers = layers_from_mapping(obj, config.layers)
    else:
        from nopelens.measure import Activations

        if not isinstance(obj, Activations):
            raise ValueError(
                f"The 'model_or_activations' parameter of {_FUNC} must be a TransformerLens "
                f"model, a nopelens Activations, a mapping of layer labels to tensors "
                f"[batch pos d_model], or a list of models of one architecture. Got "
                f"{type(obj).__name__} instead."
            )
        layers = layers_from_activations(
            obj, tuple(config.sites), config.layers, config.include_embed
        )
    if not layers:
        raise ValueError(f"The 'model_or_activations' parameter of {_FUNC} has no layer to probe.")
    shape = _common_shape(layers)
    if tokens is not None:
        tokens = check_tokens_shape(tokens, shape)
    elif config.control_task:
        raise ValueError(
            f"The 'tokens' parameter of {_FUNC} is needed for the control task (each token "
            f"type gets a random label): pass the token ids [batch pos] the activations came "
            f"from, or control_task=False."
        )
    check_sizes(config, shape[0], shape[1])
    return Subject("given", layers, tokens)


def _common_shape(layers: list[ProbedLayer]) -> tuple[int, int]:
    shape = (int(layers[0].hidden.shape[0]), int(layers[0].hidden.shape[1]))
    for layer in layers:
        if tuple(layer.hidden.shape[:2]) != shape:
            raise ValueError(
                f"The 'model_or_activations' parameter of {_FUNC} must hold tensors of one "
                f"[batch pos] shape. Got {shape} for {layers[0].layer!r} and "
                f"{tuple(layer.hidden.shape[:2])} for {layer.layer!r}."
            )
    return shape


def check_sizes(config: ProbeConfig, n_sequences: int, pos: int) -> None:
    """Check that the data hold enough positions and sequences for the config's splits.

    Raises:
        ValueError: If fewer than 2 positions are left (after ``drop_first``), the length split
            leaves fewer than 2 positions on a side, an explicit split indexes a missing
            sequence, or the random splits would leave a part empty.
    """
    drop_first = config.drop_first
    if pos - int(drop_first) < 2:
        raise ValueError(
            f"The 'tokens' parameter of {_FUNC} must have at least {2 + int(drop_first)} "
            f"positions per sequence{' with drop_first=True' if drop_first else ''}. Got pos={pos} "
            f"instead."
        )
    cut = config.extrapolate_from
    if cut is not None and not 2 + int(drop_first) <= cut <= pos - 2:
        raise ValueError(
            f"The 'extrapolate_from' parameter of {_FUNC} must leave at least 2 positions on "
            f"each side of the length split: {2 + int(drop_first)} <= extrapolate_from <= "
            f"{pos - 2} for pos={pos}{' with drop_first=True' if drop_first else ''}. Got {cut} "
            f"instead."
        )
    if config.split_list is not None:
        for split in config.split_list:
            split.check(n_sequences)
        return
    if n_sequences < 3:
        raise ValueError(
            f"The 'tokens' parameter of {_FUNC} must hold at least 3 sequences (train, "
            f"validation and test are split by sequence). Got {n_sequences} instead."
        )
    split_sequences(
        n_sequences, test_fraction=config.test_fraction, val_fraction=config.val_fraction, seed=0
    )


def check_tokens_shape(tokens: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """Token ids that match precomputed activations: non-negative ints of shape ``[batch pos]``."""
    if (
        not isinstance(tokens, torch.Tensor)
        or tokens.is_floating_point()
        or tokens.dtype == torch.bool
        or tuple(tokens.shape) != shape
        or tokens.min() < 0
    ):
        got = (
            f"shape {tuple(tokens.shape)} dtype {tokens.dtype}"
            if isinstance(tokens, torch.Tensor)
            else type(tokens).__name__
        )
        raise ValueError(
            f"The 'tokens' parameter of {_FUNC} must be non-negative integer ids of the "
            f"activations' shape {shape} [batch pos]. Got {got} instead."
        )
    return tokens.long()


# --------------------------------------------------------------------------------------------
# Layers from a model, an Activations or a mapping
# --------------------------------------------------------------------------------------------


def layers_from_model(
    model: HookedModel, tokens: torch.Tensor, config: ProbeConfig
) -> list[ProbedLayer]:
    """Collect the config's sites and layers (plus ``embed``) from a forward pass of ``model``.

    Raises:
        ValueError: If a layer or site does not exist, or a site is not residual-stream-shaped.
    """
    from nopelens.measure import check_layers, check_sites, collect_activations

    block_layers = check_layers(model, config.layers, func=_FUNC)
    sites = check_sites(model, config.sites, block_layers, func=_FUNC)
    embed = ("embed",) if config.include_embed and "embed" not in sites else ()
    acts = collect_activations(
        model, tokens, sites=embed + sites, layers=block_layers, batch_size=config.batch_size
    )
    for site in sites:
        if acts[site].ndim != 4:
            raise ValueError(
                f"The 'sites' parameter of {_FUNC} must name residual-stream-shaped sites "
                f"([batch pos d_model] per layer, e.g. resid_post, attn_out). Site {site!r} has "
                f"shape {tuple(acts[site].shape)} [layer ...]."
            )
    return layers_from_activations(acts, sites, None, config.include_embed)


def layers_from_activations(
    acts: Any, sites: tuple[str, ...], layers: Any, include_embed: bool
) -> list[ProbedLayer]:
    """The ``embed`` layer (if collected and wanted), then every (site, layer) of ``acts``.

    Args:
        acts: A :class:`~nopelens.measure.Activations`.
        sites: Collected sites to probe.
        layers: Collected block indices to probe; None means all.
        include_embed: Probe the collected ``embed`` site even when ``sites`` does not name it.
    """
    found = []
    if include_embed and "embed" in acts.tensors and "embed" not in sites:
        found.append(ProbedLayer("embed", "embed", -1, _check_hidden(acts["embed"][0], "embed")))
    wanted = acts.layers if layers is None else _layer_tuple(layers)
    missing = [layer for layer in wanted if layer not in acts.layers]
    if missing:
        raise ValueError(
            f"The 'layers' parameter of {_FUNC} must name collected layers "
            f"{list(acts.layers)}. Got {list(wanted)!r} instead."
        )
    for site in sites:
        if site not in acts.tensors:
            raise ValueError(
                f"The 'sites' parameter of {_FUNC} must name collected sites "
                f"({', '.join(acts.tensors)}). Got {site!r} instead."
            )
        stacked = acts[site]
        if site == "embed":
            found.append(ProbedLayer("embed", "embed", -1, _check_hidden(stacked[0], "embed")))
            continue
        for layer in wanted:
            hidden = _check_hidden(stacked[acts.layers.index(layer)], f"{site}/{layer}")
            found.append(ProbedLayer(site, str(layer), layer, hidden))
    return found


def layers_from_mapping(mapping: Mapping[Any, Any], layers: Any) -> list[ProbedLayer]:
    """One layer per mapping entry (or per key named in ``layers``), with ``site="given"``."""
    if not mapping:
        raise ValueError(
            f"The 'model_or_activations' parameter of {_FUNC} must not be an empty mapping."
        )
    keys = list(mapping)
    if layers is not None:
        wanted = [str(layer) for layer in _layer_tuple(layers)]
        by_label = {str(key): key for key in keys}
        unknown = [layer for layer in wanted if layer not in by_label]
        if unknown:
            raise ValueError(
                f"The 'layers' parameter of {_FUNC} must name keys of the activations mapping "
                f"({', '.join(map(str, keys))}). Got {unknown!r} instead."
            )
        keys = [by_label[layer] for layer in wanted]
    found = []
    for index, key in enumerate(keys):
        label = str(key)
        layer_index = -1 if label == "embed" else index
        found.append(ProbedLayer("given", label, layer_index, _check_hidden(mapping[key], label)))
    return found


def _layer_tuple(layers: Any) -> tuple[Any, ...]:
    if isinstance(layers, (str, int)):
        return (layers,)
    return tuple(layers)


def _check_hidden(tensor: Any, label: str) -> torch.Tensor:
    """A finite float ``[batch pos d_model]`` tensor, detached."""
    where = f"The 'model_or_activations' parameter of {_FUNC}"
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise ValueError(
            f"{where} must map layer labels to float tensors [batch pos d_model]. Entry "
            f"{label!r} is {type(tensor).__name__}"
            f"{'' if not isinstance(tensor, torch.Tensor) else f' of dtype {tensor.dtype}'}."
        )
    if tensor.ndim != 3:
        hint = (
            (
                " Token-level features [tokens d_model] cannot be probed: splits are by "
                "sequence, so pass [batch pos d_model]."
            )
            if tensor.ndim == 2
            else ""
        )
        raise ValueError(
            f"{where} must hold tensors of shape [batch pos d_model]. Entry {label!r} has shape "
            f"{tuple(tensor.shape)} instead.{hint}"
        )
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{where} entry {label!r} holds NaN or infinite values.")
    return tensor.detach()
