"""The weights of one transformer block, as plain tensors for the Gram recursion.

:mod:`nopelens.theory.propagation` is pure maths over tensors; this module is the thin adapter
that reads a TransformerLens block (``model.blocks[L]``) into frozen dataclasses: the
normalisation in front of the attention and of the MLP (kind, ``w``, ``b``, ``eps``), the value and
output weights per head (grouped-query ``W_V``/``b_V`` expanded to every query head, as
TransformerLens does), the MLP weights and its activation function. Everything is float64 on the
model's device.

Examples:
    >>> from nopelens.models import build_model
    >>> model = build_model(n_layers=2, d_model=16, n_heads=4, d_vocab=10, n_ctx=8)
    >>> weights = block_weights(model, 1)
    >>> weights.attn.W_V.shape, weights.mlp.W_in.shape, weights.attn.norm.kind
    (torch.Size([4, 16, 4]), torch.Size([16, 64]), 'LN')
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from jaxtyping import Float

from nopelens.models import HookedModel
from nopelens.validation import InvalidParameterError

#: Normalisations the Gram recursion models (TransformerLens ``normalization_type``; ``none``
#: is ``None``).
MODELLED_NORMS: tuple[str, ...] = ("LN", "LNPre", "RMS", "RMSPre", "none")
#: Element-wise activation functions the MLP kernel models (TransformerLens ``act_fn``).
MODELLED_ACTIVATIONS: tuple[str, ...] = (
    "relu",
    "gelu",
    "gelu_new",
    "gelu_fast",
    "gelu_pytorch_tanh",
    "silu",
    "relu2",
)


@dataclasses.dataclass(frozen=True)
class NormWeights:
    """A pre-normalisation: ``w * P x / sqrt(|P x|^2 / d + eps) + b``.

    ``P`` removes the mean over hidden dimensions for ``LN``/``LNPre`` and is the identity for
    ``RMS``/``RMSPre``; ``none`` is the identity map (``scale`` 1).

    Attributes:
        kind: ``"LN"``, ``"LNPre"``, ``"RMS"``, ``"RMSPre"`` or ``"none"``.
        weight: ``w`` ``[d_model]`` (ones for the ``Pre`` kinds and ``none``).
        bias: ``b`` ``[d_model]`` (zeros unless ``LN``).
        eps: The ``eps`` added to the mean square.
    """

    kind: str
    weight: Float[torch.Tensor, " d_model"]
    bias: Float[torch.Tensor, " d_model"]
    eps: float

    @property
    def centred(self) -> bool:
        """Whether the mean over hidden dimensions is removed (``LN``, ``LNPre``)."""
        return self.kind in ("LN", "LNPre")

    @property
    def scaled(self) -> bool:
        """Whether the vector is divided by its root mean square (every kind but ``none``)."""
        return self.kind != "none"

    def project(
        self, x: Float[torch.Tensor, "*shape d_model"]
    ) -> Float[torch.Tensor, "*shape d_model"]:
        """``P x``: the mean over hidden dimensions removed when :attr:`centred`."""
        return x - x.mean(-1, keepdim=True) if self.centred else x


@dataclasses.dataclass(frozen=True)
class AttentionWeights:
    """The value/output path of one attention block (grouped-query heads expanded).

    Attributes:
        norm: ``ln1``.
        W_V: ``[head_index, d_model, d_head]``.
        b_V: ``[head_index, d_head]``.
        W_O: ``[head_index, d_head, d_model]``.
        b_O: ``[d_model]``.
    """

    norm: NormWeights
    W_V: Float[torch.Tensor, "head_index d_model d_head"]
    b_V: Float[torch.Tensor, "head_index d_head"]
    W_O: Float[torch.Tensor, "head_index d_head d_model"]
    b_O: Float[torch.Tensor, " d_model"]


@dataclasses.dataclass(frozen=True)
class MLPWeights:
    """A standard (non-gated) MLP ``act(LN2(x) W_in + b_in) W_out + b_out``.

    Attributes:
        norm: ``ln2``.
        W_in: ``[d_model, d_mlp]``.
        b_in: ``[d_mlp]``.
        W_out: ``[d_mlp, d_model]``.
        b_out: ``[d_model]``.
        act_fn: TransformerLens activation name (one of :data:`MODELLED_ACTIVATIONS`).
    """

    norm: NormWeights
    W_in: Float[torch.Tensor, "d_model d_mlp"]
    b_in: Float[torch.Tensor, " d_mlp"]
    W_out: Float[torch.Tensor, "d_mlp d_model"]
    b_out: Float[torch.Tensor, " d_model"]
    act_fn: str


@dataclasses.dataclass(frozen=True)
class BlockWeights:
    """One block: its attention path and its MLP (``None`` when attention-only).

    Attributes:
        layer: The block index.
        attn: :class:`AttentionWeights`.
        mlp: :class:`MLPWeights`, or ``None`` for attention-only models.
    """

    layer: int
    attn: AttentionWeights
    mlp: MLPWeights | None


def _f64(t: Any) -> torch.Tensor:
    return t.detach().to(torch.float64)


def _norm(
    module: Any, kind: str | None, d_model: int, eps: float, like: torch.Tensor
) -> NormWeights:
    kind = "none" if kind is None else str(kind)
    ones, zeros = (
        torch.ones(d_model, dtype=torch.float64, device=like.device),
        torch.zeros(d_model, dtype=torch.float64, device=like.device),
    )
    weight = _f64(module.w) if kind in ("LN", "RMS") else ones
    bias = _f64(module.b) if kind == "LN" else zeros
    return NormWeights(kind=kind, weight=weight, bias=bias, eps=float(eps))


def unmodelled_reason(model: HookedModel) -> str | None:
    """Why the Gram recursion cannot model ``model``'s blocks (``None`` when it can).

    Examples:
        >>> from nopelens.models import build_model
        >>> unmodelled_reason(build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=5, n_ctx=4))
        >>> unmodelled_reason(build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=5, n_ctx=4,
        ...                               gated_mlp=True))
        'gated MLPs (gated_mlp=True) are not modelled'
    """
    cfg = model.cfg
    norm = "none" if cfg.normalization_type is None else str(cfg.normalization_type)
    if norm not in MODELLED_NORMS:
        return f"normalization_type={cfg.normalization_type!r} is not modelled"
    if getattr(cfg, "use_normalization_before_and_after", False):
        return "post-normalisation (use_normalization_before_and_after=True) is not modelled"
    if not getattr(cfg, "attn_only", False):
        if getattr(cfg, "parallel_attn_mlp", False):
            return "parallel attention/MLP blocks (parallel_attn_mlp=True) are not modelled"
        if getattr(cfg, "gated_mlp", False):
            return "gated MLPs (gated_mlp=True) are not modelled"
        if getattr(cfg, "act_fn", None) not in MODELLED_ACTIVATIONS:
            return (
                f"act_fn={cfg.act_fn!r} is not modelled (element-wise activations only: "
                f"{', '.join(MODELLED_ACTIVATIONS)})"
            )
    return None


def block_weights(model: HookedModel, layer: int) -> BlockWeights:
    """Read block ``layer`` of a TransformerLens model into :class:`BlockWeights` (float64).

    Raises:
        ValueError: When the block is of a kind the recursion does not model
            (:func:`unmodelled_reason`).
    """
    reason = unmodelled_reason(model)
    if reason is not None:
        raise InvalidParameterError(f"block_weights: {reason}.")
    cfg = model.cfg
    block = model.blocks[layer]
    attn = block.attn
    like = _f64(attn.W_O)
    n_heads = attn.W_O.shape[0]
    W_V, b_V = _f64(attn.W_V), _f64(attn.b_V)
    if W_V.shape[0] != n_heads:  # older grouped-query layouts: expand key/value heads
        W_V = W_V.repeat_interleave(n_heads // W_V.shape[0], dim=0)
        b_V = b_V.repeat_interleave(n_heads // b_V.shape[0], dim=0)
    eps = float(getattr(cfg, "eps", 1e-5))
    attention = AttentionWeights(
        norm=_norm(getattr(block, "ln1", None), cfg.normalization_type, cfg.d_model, eps, like),
        W_V=W_V,
        b_V=b_V,
        W_O=like,
        b_O=_f64(attn.b_O),
    )
    mlp = None
    if not getattr(cfg, "attn_only", False):
        mlp = MLPWeights(
            norm=_norm(getattr(block, "ln2", None), cfg.normalization_type, cfg.d_model, eps, like),
            W_in=_f64(block.mlp.W_in),
            b_in=_f64(block.mlp.b_in),
            W_out=_f64(block.mlp.W_out),
            b_out=_f64(block.mlp.b_out),
            act_fn=str(cfg.act_fn),
        )
    return BlockWeights(
        layer=int(layer),
        attn=attention,
        mlp=mlp,
    )
