"""Reading a model: is it NoPE, which positional type, its spec and a short label.

These work on any model with a TransformerLens config (``model.cfg``), built by nopelens or not.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nopelens.models.build import build_model  # noqa: F401  (doctests)
from nopelens.models.positional import nope_layers
from nopelens.models.protocol import HookedModel
from nopelens.spec import EXTRA_CONFIG, ModelSpec


def is_nope(model: HookedModel) -> bool:
    """Whether ``model`` has no positional information path besides the attention mask.

    True for models built with ``positional="none"``, for any learned-embedding model whose
    ``W_pos`` is exactly zero and frozen (the TransformerLens demo recipe) or was removed by
    :func:`~nopelens.models.strip_positional`, and for rotary models whose every block had its
    rotation removed. A hybrid RoPE/NoPE stack is not NoPE (:func:`nope_layers` lists its NoPE
    blocks); ALiBi models never are.

    Examples:
        >>> is_nope(build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=5, n_ctx=4,
        ...                     positional="learned"))
        False
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None or not isinstance(getattr(cfg, "n_layers", None), int):
        return False
    return len(nope_layers(model)) == cfg.n_layers


def _encoding(model: HookedModel) -> str:
    """The positional encoding the architecture has: none, learned, rotary, alibi (or TL's)."""
    kind = model.cfg.positional_embedding_type
    if kind in ("standard", "shortformer"):
        return "none" if nope_layers(model) else "learned"
    return str(kind)


def positional_kind(model: HookedModel) -> str:
    """The ``positional`` value that describes ``model``: none, learned, rotary or alibi.

    A rotary model stripped in every block is ``"none"``; a hybrid stack is ``"rotary"``.
    """
    return "none" if is_nope(model) else _encoding(model)


def model_spec(model: HookedModel) -> dict[str, Any]:
    """A JSON-able description of ``model``: the ``build_model`` arguments that rebuild it.

    Models built elsewhere get the fields read off their config (``seed`` is then ``None``).

    Examples:
        >>> spec = model_spec(build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=5, n_ctx=4))
        >>> spec["positional"], spec["seed"]
        ('none', 0)
    """
    spec = getattr(model, "_nopelens_spec", None)
    if isinstance(spec, ModelSpec):
        return {
            **spec.to_kwargs(),
            "positional": spec.positional,
            "attention": spec.attention,
            "seed": spec.seed,
        }
    if isinstance(spec, dict):
        return dict(spec)
    cfg = model.cfg
    return {
        "n_layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "n_heads": cfg.n_heads,
        "d_vocab": cfg.d_vocab,
        "n_ctx": cfg.n_ctx,
        "positional": positional_kind(model),
        "attention": cfg.attention_dir,
        "seed": None,
        "d_head": cfg.d_head,
        "act_fn": cfg.act_fn,
        "normalization_type": cfg.normalization_type,
        "attn_only": cfg.attn_only,
        "d_mlp": cfg.d_mlp,
        "nope_layers": list(nope_layers(model)) if _encoding(model) == "rotary" else [],
    }


#: Config fields that describe where a model came from, not what it computes; a checkpoint
#: neither stores nor compares them.
_DESCRIPTIVE = frozenset(
    {
        "model_name",
        "n_params",
        "device",
        "seed",
        "n_devices",
        "init_weights",
        "original_architecture",
        "tokenizer_name",
        "tokenizer_prepends_bos",
        "from_checkpoint",
        "checkpoint_index",
        "checkpoint_label_type",
        "checkpoint_value",
        "trust_remote_code",
        "default_prepend_bos",
        "initializer_range",
        "init_mode",
    }
)


def spec_of(model: HookedModel) -> ModelSpec:
    """The :class:`~nopelens.ModelSpec` that rebuilds ``model``'s architecture.

    Models built by :func:`~nopelens.build_model` carry their spec. For any other
    ``HookedTransformer`` it is read off ``model.cfg`` and checked by rebuilding the config: every
    field that changes the computation must come out equal, else the fields nopelens cannot
    describe are named in a ValueError (so nothing is stored that would not load back the same).

    Examples:
        >>> model = build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=5, n_ctx=4, seed=7)
        >>> spec_of(model).seed
        7
    """
    spec = getattr(model, "_nopelens_spec", None)
    if isinstance(spec, ModelSpec):
        return spec
    from nopelens.models.build import hooked_config, model_spec_from_kwargs

    if isinstance(spec, dict):  # a model loaded by nopelens 0.1
        return model_spec_from_kwargs({k: v for k, v in spec.items() if k != "device"})
    cfg = model.cfg
    fields: dict[str, Any] = {
        "n_layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "n_heads": cfg.n_heads,
        "d_vocab": cfg.d_vocab,
        "n_ctx": cfg.n_ctx,
        "positional": _encoding(model),
        "attention": cfg.attention_dir,
        "normalization_type": cfg.normalization_type,
        "act_fn": cfg.act_fn,
        "d_head": cfg.d_head,
        "d_mlp": cfg.d_mlp,
        "attn_only": cfg.attn_only,
        "n_key_value_heads": cfg.n_key_value_heads,
    }
    if fields["positional"] == "rotary":
        fields["rotary_dim"] = cfg.rotary_dim
        fields["nope_layers"] = nope_layers(model)
    defaults = hooked_config(ModelSpec(**fields))
    extra = {}
    for key in EXTRA_CONFIG:
        value = getattr(cfg, key)
        if value != getattr(defaults, key):
            extra[key] = str(value).removeprefix("torch.") if key == "dtype" else value
    rebuilt = hooked_config(ModelSpec(**fields, config=extra))
    differ = [
        f"{f.name}={getattr(cfg, f.name)!r}"
        for f in dataclasses.fields(cfg)
        if f.name not in _DESCRIPTIVE
        and f.name not in ("positional_embedding_type",)
        and getattr(cfg, f.name) != getattr(rebuilt, f.name)
    ]
    if differ:
        raise ValueError(
            "nopelens cannot describe this model as a ModelSpec (so it cannot store it): "
            f"{', '.join(differ)} are outside the allowlist (nopelens.spec.EXTRA_CONFIG)."
        )
    return ModelSpec(**fields, config=extra)


def describe_model(model: HookedModel) -> str:
    """A short human label, e.g. ``"NoPE causal L2 d64 h4 LN gelu"``.

    Hybrid stacks name their NoPE blocks (``"RoPE+NoPE[3] ..."``); pretrained models start with
    their name (``"gpt2: learned-PE causal L12 ..."``).

    Examples:
        >>> describe_model(build_model(n_layers=2, d_model=16, n_heads=4, d_vocab=5, n_ctx=4))
        'NoPE causal L2 d16 h4 LN gelu'
        >>> describe_model(build_model(n_layers=4, d_model=16, n_heads=4, d_vocab=5, n_ctx=4,
        ...                            positional="rotary", nope_layers=[3]))
        'RoPE+NoPE[3] causal L4 d16 h4 LN gelu'
    """
    cfg = model.cfg
    kind = positional_kind(model)
    pos = {"none": "NoPE", "learned": "learned-PE", "rotary": "RoPE", "alibi": "ALiBi"}.get(
        kind, kind
    )
    hybrid = nope_layers(model) if kind == "rotary" else ()
    if hybrid:
        pos += f"+NoPE[{','.join(str(layer) for layer in hybrid)}]"
    name = getattr(cfg, "model_name", "custom")
    parts = [
        pos,
        cfg.attention_dir,
        f"L{cfg.n_layers}",
        f"d{cfg.d_model}",
        f"h{cfg.n_heads}",
        str(cfg.normalization_type or "noLN"),
        "attn-only" if cfg.attn_only else cfg.act_fn,
    ]
    label = " ".join(str(p) for p in parts)
    return label if name in (None, "", "custom") else f"{name}: {label}"
