"""Model construction: TransformerLens ``HookedTransformer``s with and without positional encodings.

This is the only module that constructs models or knows how positional information is removed, so
that a later move to TransformerLens 4's ``TransformerBridge`` touches one file.

NoPE ("no positional encoding") models are built with ``positional_embedding_type="standard"`` and
the learned positional embedding replaced by :class:`ZeroPosEmbed`, a parameter-free module that
returns zeros. Compared with the official recipe (zero ``W_pos`` and freeze it) this has no
parameter that ``model.init_weights()``, weight decay, an optimiser or a stray
``load_state_dict`` could make non-zero again, while ``hook_pos_embed`` still fires (with zeros)
and ``model.W_pos`` still reads as a zero matrix, so TransformerLens utilities keep working.

TransformerLens 3.x quirks handled here, once:

* ``HookedTransformerConfig(seed=...)`` reseeds the global torch/numpy/random generators. We never
  pass it a seed; weights are drawn inside :func:`torch.random.fork_rng` from ``seed``, on the CPU
  (so a seed gives the same weights on every device), and the caller's RNG state is untouched.
* Constructing a ``HookedTransformer`` emits ``DeprecationWarning`` (it is removed in 4.0); it is
  silenced in :func:`_construct` only.
* An unknown ``init_mode`` silently leaves uninitialised weights, and an unknown positional type
  fails only at the first forward pass: both are validated up front.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import nn

from nopelens.files import atomic_torch_save
from nopelens.validation import check_choice, raise_all

#: Allowed values of ``positional`` / ``attention``. Annotated as ``str`` in signatures so that a
#: bad value reaches build_model's own validation (a clear ValueError) rather than a runtime
#: type-checker's error.
Positional = Literal["none", "learned", "rotary", "alibi"]
Attention = Literal["causal", "bidirectional"]

POSITIONAL: tuple[str, ...] = ("none", "learned", "rotary", "alibi")
ATTENTION: tuple[str, ...] = ("causal", "bidirectional")
NORMALIZATION: tuple[str | None, ...] = (None, "LN", "LNPre", "RMS", "RMSPre")
INIT_MODES: tuple[str, ...] = (
    "gpt2",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "muP",
)
_TL_POSITIONAL = {"none": "standard", "learned": "standard", "rotary": "rotary", "alibi": "alibi"}
#: Config fields that build_model sets itself or that cannot work offline / would leave garbage.
_RESERVED = {
    "positional_embedding_type": "use positional='none'|'learned'|'rotary'|'alibi'",
    "attention_dir": "use attention='causal'|'bidirectional'",
    "seed": "use the seed argument of build_model",
    "device": "use the device argument of build_model",
    "init_weights": "weights are always initialised from the seed",
    "tokenizer_name": "tokenizers are downloaded from the hub; nopelens models are tokenizer-free",
    "n_devices": "nopelens models live on one device",
}
_FORMAT = "nopelens-model"
_FORMAT_VERSION = 1


class ZeroPosEmbed(nn.Module):
    """A parameter-free stand-in for TransformerLens' ``PosEmbed`` that returns zeros.

    ``W_pos`` is a non-persistent zero buffer, so ``model.W_pos`` works, nothing is trained or
    re-initialised, and checkpoints hold no positional weights.
    """

    def __init__(self, n_ctx: int, d_model: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.register_buffer("W_pos", torch.zeros(n_ctx, d_model, dtype=dtype), persistent=False)

    def forward(
        self,
        tokens: Int[torch.Tensor, "batch pos"],
        past_kv_pos_offset: int = 0,
        attention_mask: Int[torch.Tensor, "batch offset_pos"] | None = None,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Return zeros of shape ``[batch, pos, d_model]``."""
        batch, pos = tokens.shape
        return self.W_pos.new_zeros(batch, pos, self.W_pos.shape[-1])


def _config_class() -> type:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from transformer_lens import HookedTransformerConfig
    return HookedTransformerConfig


def _construct(cfg: Any, *, init: bool) -> Any:
    """Instantiate a HookedTransformer, silencing the 3.x deprecation warning in one place."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from transformer_lens import HookedTransformer

        cfg.init_weights = init
        return HookedTransformer(cfg, move_to_device=False)


def validate_model_config(
    kwargs: dict[str, Any],
    *,
    n_layers: Any,
    d_model: Any,
    n_heads: Any,
    d_vocab: Any,
    n_ctx: Any,
    positional: Any,
    attention: Any,
    seed: Any,
    device: Any,
) -> list[str]:
    """Return every problem with the build_model arguments (empty when they are valid).

    Used by :func:`build_model` and by sweeps, which validate every configuration of a grid before
    running any.

    Examples:
        >>> validate_model_config({"init_mode": "Xavier"}, n_layers=1, d_model=8, n_heads=2,
        ...                       d_vocab=5, n_ctx=4, positional="none", attention="causal",
        ...                       seed=0, device="cpu")  # doctest: +ELLIPSIS
        ["The 'init_mode' parameter of build_model must be one of 'gpt2', ...]
    """
    func = "build_model"
    problems: list[str] = []

    def need_int(value: Any, name: str, minimum: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            problems.append(
                f"The {name!r} parameter of {func} must be an int >= {minimum}. "
                f"Got {value!r} instead."
            )

    need_int(n_layers, "n_layers", 1)
    need_int(d_model, "d_model", 1)
    need_int(n_heads, "n_heads", 1)
    need_int(d_vocab, "d_vocab", 1)
    need_int(n_ctx, "n_ctx", 1)
    need_int(seed, "seed", 0)
    for value, name, allowed in (
        (positional, "positional", POSITIONAL),
        (attention, "attention", ATTENTION),
    ):
        try:
            check_choice(value, name, allowed, func)
        except ValueError as err:
            problems.append(str(err))
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        problems.append(
            f"The 'device' parameter of {func} must be a torch device such as 'cpu' or 'cuda'. "
            f"Got {device!r} instead."
        )

    cfg_cls = _config_class()
    fields = {f.name: f for f in dataclasses.fields(cfg_cls)}
    for key, value in kwargs.items():
        if key in _RESERVED:
            problems.append(f"The {key!r} parameter of {func} cannot be set: {_RESERVED[key]}.")
        elif key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            problems.append(
                f"{func} got an unknown parameter {key!r}: it is not a HookedTransformerConfig "
                f"field.{hint}"
            )
        else:
            default = fields[key].default
            if isinstance(default, bool) and not isinstance(value, bool):
                problems.append(
                    f"The {key!r} parameter of {func} must be a bool. Got {value!r} instead."
                )

    def check(key: str, allowed: tuple[Any, ...]) -> None:
        if key in kwargs and kwargs[key] not in allowed:
            problems.append(
                f"The {key!r} parameter of {func} must be one of "
                f"{', '.join(repr(a) for a in allowed)}. Got {kwargs[key]!r} instead."
            )

    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    check("act_fn", tuple(SUPPORTED_ACTIVATIONS))
    check("normalization_type", NORMALIZATION)
    check("init_mode", INIT_MODES)
    for key in ("d_head", "d_mlp", "d_vocab_out", "n_key_value_heads", "rotary_dim"):
        if key in kwargs and kwargs[key] is not None:
            need_int(kwargs[key], key, 1)
    if "initializer_range" in kwargs:
        value = kwargs["initializer_range"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            problems.append(
                f"The 'initializer_range' parameter of {func} must be a float > 0. "
                f"Got {value!r} instead."
            )
    if "dtype" in kwargs and kwargs["dtype"] not in (torch.float32, torch.float64, torch.bfloat16):
        problems.append(
            f"The 'dtype' parameter of {func} must be one of torch.float32, torch.float64, "
            f"torch.bfloat16. Got {kwargs['dtype']!r} instead."
        )
    shape_ok = all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (d_model, n_heads)
    )
    if shape_ok and kwargs.get("d_head") is None and d_model % n_heads != 0:
        problems.append(
            f"The 'n_heads' parameter of {func} must divide d_model={d_model} (or pass d_head). "
            f"Got n_heads={n_heads} instead."
        )
    if "rotary_dim" in kwargs and positional != "rotary":
        problems.append(
            f"The 'rotary_dim' parameter of {func} is only used with positional='rotary'. "
            f"Got positional={positional!r}."
        )
    if positional == "rotary" and shape_ok:
        d_head = kwargs.get("d_head") or (d_model // n_heads if d_model % n_heads == 0 else None)
        rotary_dim = kwargs.get("rotary_dim", d_head)
        if (
            d_head is not None
            and isinstance(rotary_dim, int)
            and (rotary_dim % 2 or rotary_dim > d_head)
        ):
            problems.append(
                f"The 'rotary_dim' parameter of {func} must be even and <= d_head={d_head} "
                f"with positional='rotary'. Got {rotary_dim!r} instead."
            )
    return problems


def build_model(
    *,
    n_layers: int,
    d_model: int,
    n_heads: int,
    d_vocab: int,
    n_ctx: int,
    positional: str = "none",
    attention: str = "causal",
    seed: int = 0,
    device: str | torch.device = "cpu",
    **config: Any,
) -> Any:
    """Build a randomly initialised TransformerLens ``HookedTransformer``.

    ``positional="none"`` gives a NoPE model: token embeddings are the only input to the residual
    stream, and the only source of order information is the causal mask. ``"learned"`` (absolute
    learned embeddings), ``"rotary"`` and ``"alibi"`` are the controls.
    ``attention="bidirectional"`` removes the causal mask (a bidirectional NoPE model is
    permutation-equivariant).

    Args:
        n_layers: Number of transformer blocks.
        d_model: Residual stream width.
        n_heads: Attention heads per block; ``d_head`` defaults to ``d_model // n_heads``.
        d_vocab: Vocabulary size (models are tokenizer-free).
        n_ctx: Maximum sequence length.
        positional: ``"none"``, ``"learned"``, ``"rotary"`` or ``"alibi"``.
        attention: ``"causal"`` or ``"bidirectional"``.
        seed: Seed of the weight initialisation. The same seed gives the same weights on every
            device; the caller's global random state is left untouched.
        device: Device to put the model on.
        **config: Any other ``HookedTransformerConfig`` field (``d_mlp``, ``act_fn``,
            ``normalization_type``, ``attn_only``, ``init_mode``, ``initializer_range``, ...),
            validated before anything is built.

    Returns:
        The model, in eval mode.

    Raises:
        ValueError: Listing every invalid argument at once.

    Examples:
        >>> model = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=10, n_ctx=8)
        >>> is_nope(model), model.cfg.attention_dir
        (True, 'causal')
        >>> float(model.W_pos.abs().sum())
        0.0
    """
    problems = validate_model_config(
        config,
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        positional=positional,
        attention=attention,
        seed=seed,
        device=device,
    )
    raise_all(problems, "build_model")
    d_head = config.pop("d_head", None) or d_model // n_heads
    fields: dict[str, Any] = {
        "act_fn": "gelu",
        **config,
        "n_layers": n_layers,
        "d_model": d_model,
        "n_heads": n_heads,
        "d_head": d_head,
        "d_vocab": d_vocab,
        "n_ctx": n_ctx,
        "positional_embedding_type": _TL_POSITIONAL[positional],
        "attention_dir": attention,
        "device": "cpu",
        "seed": None,
    }
    if positional == "rotary":
        fields.setdefault("rotary_dim", d_head)
    cfg = _config_class()(**fields)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _construct(cfg, init=True)
    if positional == "none":
        _remove_positional_embedding(model)
    model._nopelens_spec = {  # what build_model received, for model_spec and checkpoints
        "n_layers": n_layers,
        "d_model": d_model,
        "n_heads": n_heads,
        "d_vocab": d_vocab,
        "n_ctx": n_ctx,
        "positional": positional,
        "attention": attention,
        "seed": seed,
        **{k: v for k, v in config.items() if k != "dtype"},
        **({"d_head": d_head} if d_head != d_model // n_heads else {}),
    }
    return model.to(torch.device(device), print_details=False).eval()


def _remove_positional_embedding(model: Any) -> None:
    cfg = model.cfg
    model.pos_embed = ZeroPosEmbed(cfg.n_ctx, cfg.d_model, dtype=cfg.dtype)
    # hook_dict / mod_dict are built at construction; refresh them so the swap is visible.
    model.setup()


def is_nope(model: Any) -> bool:
    """Whether ``model`` has no positional information path besides the attention mask.

    True for models built with ``positional="none"``, and for any ``"standard"`` model whose
    ``W_pos`` is exactly zero and frozen (the TransformerLens demo recipe). Rotary and ALiBi
    models are never NoPE.

    Examples:
        >>> is_nope(build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=5, n_ctx=4,
        ...                     positional="learned"))
        False
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None or getattr(cfg, "positional_embedding_type", None) != "standard":
        return False
    pos_embed = getattr(model, "pos_embed", None)
    if isinstance(pos_embed, ZeroPosEmbed):
        return True
    w_pos = getattr(pos_embed, "W_pos", None)
    return bool(isinstance(w_pos, torch.Tensor) and not w_pos.requires_grad and not w_pos.any())


def positional_kind(model: Any) -> str:
    """The ``positional`` value that describes ``model``: none, learned, rotary or alibi."""
    if is_nope(model):
        return "none"
    kind = model.cfg.positional_embedding_type
    return {"standard": "learned"}.get(kind, kind)


def model_spec(model: Any) -> dict[str, Any]:
    """A JSON-able description of ``model``: the ``build_model`` arguments that rebuild it.

    Models built elsewhere get the fields read off their config (``seed`` is then ``None``).

    Examples:
        >>> spec = model_spec(build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=5, n_ctx=4))
        >>> spec["positional"], spec["seed"]
        ('none', 0)
    """
    spec = getattr(model, "_nopelens_spec", None)
    if spec is not None:
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
    }


def describe_model(model: Any) -> str:
    """A short human label, e.g. ``"NoPE causal L2 d64 h4 LN gelu"``.

    Examples:
        >>> describe_model(build_model(n_layers=2, d_model=16, n_heads=4, d_vocab=5, n_ctx=4))
        'NoPE causal L2 d16 h4 LN gelu'
    """
    cfg = model.cfg
    pos = {"none": "NoPE", "learned": "learned-PE", "rotary": "RoPE", "alibi": "ALiBi"}[
        positional_kind(model)
    ]
    parts = [
        pos,
        cfg.attention_dir,
        f"L{cfg.n_layers}",
        f"d{cfg.d_model}",
        f"h{cfg.n_heads}",
        str(cfg.normalization_type or "noLN"),
        "attn-only" if cfg.attn_only else cfg.act_fn,
    ]
    return " ".join(str(p) for p in parts)


def _config_to_json(cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        elif isinstance(value, torch.device):
            value = str(value)
        out[f.name] = value
    json.dumps(out)  # fail here, not at load time, if something is not serialisable
    return out


def save_model(model: Any, path: str | os.PathLike[str]) -> Path:
    """Save weights and config to one file, atomically (temporary file + rename).

    The file is a ``torch.save`` archive holding the full ``HookedTransformerConfig`` as JSON, the
    nopelens spec, and the ``state_dict``. It loads with ``weights_only=True`` (no pickled code).

    Args:
        model: A ``HookedTransformer`` (built by :func:`build_model` or not).
        path: Destination file, conventionally ``*.pt``; parent folders are created.

    Returns:
        The path written.

    Examples:
        >>> import tempfile, pathlib, torch
        >>> model = build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=5, n_ctx=4)
        >>> path = save_model(model, pathlib.Path(tempfile.mkdtemp()) / "m.pt")
        >>> tokens = torch.tensor([[1, 2, 3]])
        >>> bool(torch.equal(load_model(path)(tokens), model(tokens)))
        True
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "config_json": json.dumps(_config_to_json(model.cfg)),
        "spec_json": json.dumps(model_spec(model)),
        "nope": is_nope(model),
        "state_dict": state,
    }
    return atomic_torch_save(payload, path)


def load_model(path: str | os.PathLike[str], device: str | torch.device | None = None) -> Any:
    """Load a model written by :func:`save_model`, with identical weights.

    Uses plain ``load_state_dict`` (strict), never TransformerLens' folding loader, so the logits
    are bit-identical to the saved model's.

    Args:
        path: A file written by :func:`save_model`.
        device: Where to put the model; defaults to the CPU.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is truncated, corrupt or not a nopelens checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The 'path' parameter of load_model: no such file {str(path)!r}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/corrupt archives
        raise ValueError(
            f"{str(path)!r} is not a readable nopelens checkpoint (truncated or corrupt file?): "
            f"{type(err).__name__}: {err}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a nopelens checkpoint (written by nopelens.save_model)."
        )
    if payload.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has checkpoint format version {payload.get('format_version')!r}; "
            f"this nopelens reads version {_FORMAT_VERSION}."
        )
    fields = json.loads(payload["config_json"])
    fields["dtype"] = getattr(torch, fields["dtype"])
    fields["device"] = "cpu"
    fields["seed"] = None
    cfg_cls = _config_class()
    known = {f.name for f in dataclasses.fields(cfg_cls)}
    cfg = cfg_cls(**{k: v for k, v in fields.items() if k in known})
    model = _construct(cfg, init=False)
    if (
        payload["nope"]
        and isinstance(model.pos_embed, nn.Module)
        and ("pos_embed.W_pos" not in payload["state_dict"])
    ):
        _remove_positional_embedding(model)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"{str(path)!r} does not match its own config: {err}") from None
    model._nopelens_spec = json.loads(payload["spec_json"])
    return model.to(torch.device(device or "cpu"), print_details=False).eval()
