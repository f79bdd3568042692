"""Model construction: TransformerLens ``HookedTransformer``s with and without positional encodings.

This is the only module that constructs models or knows how positional information is removed, so
that a later move to TransformerLens 4's ``TransformerBridge`` touches one file.

NoPE ("no positional encoding") models are built with ``positional_embedding_type="standard"`` and
the learned positional embedding replaced by :class:`ZeroPosEmbed`, a parameter-free module that
returns zeros. Compared with the official recipe (zero ``W_pos`` and freeze it) this has no
parameter that ``model.init_weights()``, weight decay, an optimiser or a stray
``load_state_dict`` could make non-zero again, while ``hook_pos_embed`` still fires (with zeros)
and ``model.W_pos`` still reads as a zero matrix, so TransformerLens utilities keep working.

Hybrid stacks (``positional="rotary", nope_layers=[...]``, as in SmolLM3 and Llama 4) keep RoPE
in every block but the listed ones, whose attention skips the rotation (:func:`mark_nope_blocks`).

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

import contextlib
import dataclasses
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import nn

from nopelens.memory import check_fits, model_bytes
from nopelens.spec import DTYPES, ModelSpec, spec_problems, split_model_kwargs
from nopelens.validation import InvalidParameterError, check_int, raise_all

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
        w_pos: Any = self.W_pos
        return w_pos.new_zeros(batch, pos, w_pos.shape[-1])


#: TransformerLens draws weights from torch's global generator (its init functions take none), so
#: nopelens draws one model's weights at a time in a process: threads that build models side by
#: side (a sweep on a thread pool) each get the weights of their own seed.
_DRAW_LOCK = threading.Lock()


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Torch's global CPU generator seeded with ``seed``, for this thread alone, then restored.

    For libraries that draw from the global generator only (TransformerLens' and Hugging Face's
    weight initialisation): the caller's random state is untouched, and one draw runs at a time
    in this process, so threads never take each other's numbers.
    """
    with _DRAW_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _drawn(name: str) -> bool:
    """Whether TransformerLens draws parameter ``name`` from the seed (the ``W_*`` matrices)."""
    return "W_" in name


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
            ``normalization_type``, ``attn_only``, ``init_mode``, ``initializer_range``,
            ``nope_layers``, ...), validated before anything is built. ``nope_layers`` (with
            ``positional="rotary"``) lists the blocks that get no rotary encoding: a
            SmolLM3 / Llama 4 style hybrid stack (:func:`~nopelens.models.nope_layers` reads it
            back).

    Returns:
        The model, in eval mode.

    Raises:
        ValueError: Listing every invalid argument at once.

    Examples:
        >>> from nopelens import is_nope
        >>> model = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=10, n_ctx=8)
        >>> is_nope(model), model.cfg.attention_dir
        (True, 'causal')
        >>> float(model.W_pos.abs().sum())
        0.0
        >>> from nopelens.models import nope_layers
        >>> hybrid = build_model(n_layers=4, d_model=16, n_heads=2, d_vocab=10, n_ctx=8,
        ...                      positional="rotary", nope_layers=[3])
        >>> nope_layers(hybrid), is_nope(hybrid)
        ((3,), False)
    """
    spec = model_spec_from_kwargs(
        {
            "n_layers": n_layers,
            "d_model": d_model,
            "n_heads": n_heads,
            "d_vocab": d_vocab,
            "n_ctx": n_ctx,
            "positional": positional,
            "attention": attention,
            "seed": seed,
            **config,
        },
        device=device,
    )
    # The weights are drawn on the CPU first, so they must fit there (and on the device).
    check_fits(
        model_bytes(spec),
        what="the model's weights",
        func="build_model",
        hint="Use fewer layers, a smaller d_model/d_mlp/d_vocab or a shorter n_ctx.",
    )
    model = instantiate(spec, init=True)
    return model.to(torch.device(device), print_details=False).eval()


def model_spec_from_kwargs(kwargs: dict[str, Any], *, device: Any = "cpu") -> ModelSpec:
    """Validate ``build_model`` keyword arguments and return the :class:`~nopelens.ModelSpec`.

    Every problem is reported at once (one :class:`~nopelens.validation.InvalidParameterError`).
    Fields that nopelens sets itself (``positional_embedding_type``, ``tokenizer_name``, ...) get
    a message saying which argument to use instead.

    Examples:
        >>> model_spec_from_kwargs({"n_layers": 1, "d_model": 8, "n_heads": 2, "d_vocab": 5,
        ...                         "n_ctx": 4}).d_head is None
        True
    """
    func = "build_model"
    fields, extra = split_model_kwargs(kwargs)
    problems = [
        f"The {key!r} parameter of {func} cannot be set: {_RESERVED[key]}."
        for key in extra
        if key in _RESERVED
    ]
    extra = {k: v for k, v in extra.items() if k not in _RESERVED}
    if isinstance(extra.get("dtype"), torch.dtype):
        extra["dtype"] = str(extra["dtype"]).removeprefix("torch.")
    if (problem := device_problem(device, func)) is not None:
        problems.append(problem)
    problems += spec_problems({**fields, "config": extra}, func)
    raise_all(problems, func)
    return ModelSpec(**fields, config=extra)


def device_problem(device: Any, func: str) -> str | None:
    """Why ``device`` cannot be used on this machine (None when it can).

    Checked before anything is built, so ``--device cuda`` on a machine without CUDA is one clear
    sentence instead of an assertion deep inside torch.

    Examples:
        >>> device_problem("cpu", "build_model") is None
        True
        >>> device_problem("gpu:x", "build_model")[:60]
        "The 'device' parameter of build_model must be a torch device"
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        return (
            f"The 'device' parameter of {func} must be a torch device such as 'cpu' or 'cuda'. "
            f"Got {device!r} instead."
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return (
                f"The 'device' parameter of {func} is {str(dev)!r}, but CUDA is not available on "
                f"this machine (torch {torch.__version__}). Use device='cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return (
                f"The 'device' parameter of {func} is {str(dev)!r}, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        return f"The 'device' parameter of {func} is 'mps', but MPS is not available here."
    return None


def dtype_problem(dtype: Any, device: Any, func: str) -> str | None:
    """Why a model cannot run in ``dtype`` on ``device`` (None when it can).

    The dtype must be one of :data:`nopelens.spec.DTYPES`; CUDA bfloat16 needs a GPU that
    supports it (compute capability 8.0+), MPS has no float64, and any other gap is found by
    running the operations a transformer needs (matmul, softmax, layer norm, GELU) on a tiny
    tensor, so ``--dtype float16`` on a device without half-precision kernels is one clear
    sentence before any weights are loaded.

    Examples:
        >>> dtype_problem("bfloat16", "cpu", "load_pretrained") is None
        True
        >>> dtype_problem("int8", "cpu", "load_pretrained")[:60]
        "The 'dtype' parameter of load_pretrained must be one of 'flo"
    """
    name = str(dtype).removeprefix("torch.") if isinstance(dtype, (str, torch.dtype)) else dtype
    if name not in DTYPES:
        return (
            f"The 'dtype' parameter of {func} must be one of "
            f"{', '.join(repr(d) for d in DTYPES)}. Got {dtype!r} instead."
        )
    if device_problem(device, func) is not None:
        return None  # reported by device_problem
    dev = torch.device(device)
    where = f"The 'dtype' parameter of {func} is {name!r}, but {str(dev)!r}"
    if dev.type == "cuda" and name == "bfloat16" and not torch.cuda.is_bf16_supported():
        return f"{where} has no bfloat16 support (compute capability < 8.0). Use float16."
    if dev.type == "mps" and name == "float64":
        return f"{where} (Apple MPS) has no float64. Use float32."
    try:
        x = torch.linspace(-1, 1, 16, device=dev).reshape(4, 4).to(getattr(torch, name))
        y = torch.nn.functional.layer_norm((x @ x.T).softmax(-1), (4,))
        torch.nn.functional.gelu(y).sum().item()
    except (RuntimeError, TypeError, NotImplementedError) as err:
        return f"{where} cannot run it: {str(err).splitlines()[0][:200]}. Use float32."
    return None


def torch_dtype(name: str) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16`` (names from :data:`nopelens.spec.DTYPES`)."""
    return getattr(torch, name)


def hooked_config(spec: ModelSpec) -> Any:
    """The ``HookedTransformerConfig`` of ``spec`` (device CPU, no seed: weights come later)."""
    d_head = spec.d_head or spec.d_model // spec.n_heads
    extra = dict(spec.config)
    if "dtype" in extra:
        extra["dtype"] = getattr(torch, extra["dtype"])
    fields: dict[str, Any] = {
        **extra,
        "n_layers": spec.n_layers,
        "d_model": spec.d_model,
        "n_heads": spec.n_heads,
        "d_head": d_head,
        "d_vocab": spec.d_vocab,
        "n_ctx": spec.n_ctx,
        "act_fn": spec.act_fn,
        "normalization_type": None
        if spec.normalization_type in (None, "none")
        else spec.normalization_type,
        "attn_only": spec.attn_only,
        "init_mode": spec.init_mode,
        "positional_embedding_type": _TL_POSITIONAL[spec.positional],
        "attention_dir": spec.attention,
        "device": "cpu",
        "seed": None,
    }
    for key in ("d_mlp", "initializer_range", "n_key_value_heads"):
        if getattr(spec, key) is not None:
            fields[key] = getattr(spec, key)
    if spec.positional == "rotary":
        fields["rotary_dim"] = spec.rotary_dim or d_head
    return _config_class()(**fields)


def instantiate(spec: ModelSpec, *, init: bool) -> Any:
    """Build the CPU model of ``spec``; with ``init``, draw its weights from ``spec.seed``.

    The weights are drawn inside :func:`torch.random.fork_rng`, so the caller's global random
    state is untouched. Without ``init`` the weights are left for a checkpoint to fill.
    """
    cfg = hooked_config(spec)
    if init:
        with seeded_global_rng(spec.seed):
            model = _construct(cfg, init=True)
    else:
        model = _construct(cfg, init=False)
    if spec.positional == "none":
        remove_positional_embedding(model)
    if spec.nope_layers:
        mark_nope_blocks(model, spec.nope_layers)
    model._nopelens_spec = spec
    return model


def fixed_parameters(model: Any) -> dict[str, torch.Tensor]:
    """Copies of the parameters that the seed does not draw (biases, norm weights), as built.

    TransformerLens draws only the ``W_*`` matrices from the seed; the rest is set when the modules
    are constructed. :func:`redraw_weights` copies these back.
    """
    return {
        name: param.detach().clone() for name, param in model.named_parameters() if not _drawn(name)
    }


def redraw_weights(model: Any, seed: int, fixed: dict[str, torch.Tensor]) -> Any:
    """Give a CPU model of :func:`build_model` the weights that ``build_model(seed=seed)`` draws.

    Constructing TransformerLens' modules is most of a small model's build time, so a sweep
    worker keeps one model and redraws its weights for the next configuration with the same
    architecture. The result equals a fresh :func:`build_model` with the same arguments and
    ``seed``, bit for bit (tested on every preset's architectures and initialisations): the
    ``fixed`` parameters (from :func:`fixed_parameters` of the freshly built model) are copied
    back, and the ``W_*`` matrices are drawn in the same order from the same seed, the learned
    position matrix of a NoPE model included (a fresh build draws it before the matrix is
    dropped, so it is drawn into a throwaway ``PosEmbed`` here). Hooks left on the model are
    removed. The caller's random state is untouched.

    Args:
        model: A model from :func:`build_model` on the CPU, given up by the caller.
        seed: The new seed.
        fixed: :func:`fixed_parameters` of ``model`` as it was built.

    Returns:
        ``model``, in eval mode, with its new weights and ``seed`` in its spec.

    Examples:
        >>> model = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=10, n_ctx=8, seed=0)
        >>> fixed = fixed_parameters(model)
        >>> fresh = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=10, n_ctx=8, seed=1)
        >>> again = redraw_weights(model, 1, fixed)
        >>> all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
        ...                                      fresh.state_dict().values()))
        True
    """
    func = "redraw_weights"
    spec = getattr(model, "_nopelens_spec", None)
    weights = next(iter(model.parameters()), None) if spec is not None else None
    if spec is None or weights is None or weights.device.type != "cpu":
        raise InvalidParameterError(
            f"The 'model' parameter of {func} must be a CPU model from build_model. "
            f"Got {type(model).__name__} instead."
        )
    check_int(seed, "seed", func, min=0)
    expected = {name for name, _ in model.named_parameters() if not _drawn(name)}
    if not isinstance(fixed, dict) or set(fixed) != expected:
        raise InvalidParameterError(
            f"The 'fixed' parameter of {func} must be fixed_parameters(model) of this model as "
            f"built (the parameters {sorted(expected)[:3]}...)."
        )
    model.reset_hooks(including_permanent=True)
    zero_pos = model.pos_embed if spec.positional == "none" else None
    with seeded_global_rng(seed), torch.no_grad():
        for name, param in model.named_parameters():
            if name in fixed:
                param.copy_(fixed[name])
        if zero_pos is not None:
            from transformer_lens.components import PosEmbed

            model.pos_embed = PosEmbed(model.cfg)  # same place in the parameter order
        try:
            model.init_weights()
        finally:
            if zero_pos is not None:
                model.pos_embed = zero_pos
    model._nopelens_spec = dataclasses.replace(spec, seed=seed)
    return model.eval()


def remove_positional_embedding(model: Any) -> None:
    """Swap ``model.pos_embed`` for a :class:`ZeroPosEmbed` on the same device and dtype."""
    cfg = model.cfg
    old = getattr(model, "pos_embed", None)
    w_pos = getattr(old, "W_pos", None)
    device = w_pos.device if isinstance(w_pos, torch.Tensor) else torch.device("cpu")
    dtype = w_pos.dtype if isinstance(w_pos, torch.Tensor) else cfg.dtype
    model.pos_embed = ZeroPosEmbed(cfg.n_ctx, cfg.d_model, dtype=dtype).to(device)
    # hook_dict / mod_dict are built at construction; refresh them so the swap is visible.
    model.setup()


def identity_rotation(
    x: Float[torch.Tensor, "batch pos head_index d_head"],
    past_kv_pos_offset: int = 0,
    attention_mask: Int[torch.Tensor, "batch offset_pos"] | None = None,
) -> Float[torch.Tensor, "batch pos head_index d_head"]:
    """The rotary map of a NoPE block in a rotary model: queries and keys pass unrotated."""
    return x


def mark_nope_blocks(model: Any, layers: Any) -> None:
    """Make the attention of each block in ``layers`` of a rotary model skip the rotation.

    The block's ``apply_rotary`` is replaced (an instance attribute) by :func:`identity_rotation`
    and the block is marked ``nopelens_nope = True``. Zeroing the ``rotary_sin``/``rotary_cos``
    buffers instead would not last: TransformerLens rebuilds them for contexts beyond 2048
    positions and for dynamic NTK scaling, silently bringing RoPE back. ``hook_rot_q`` and
    ``hook_rot_k`` still fire in a NoPE block, equal to ``hook_q`` and ``hook_k``.
    """
    for layer in layers:
        attn = model.blocks[layer].attn
        attn.apply_rotary = identity_rotation
        attn.nopelens_nope = True
