r"""The attention-pattern theory at depth: Gram matrices carried through every block.

Notation (one sequence; the batch dimension is carried along): the residual stream entering block
``L`` is ``x_i`` at position ``i``, the block computes

    n_j        = w (.) P x_j / sigma_j + b                      (ln1; P centres for LN/LNPre)
    attn_out_i = sum_h sum_j A^h_ij (n_j W_V^h + b_V^h) W_O^h + b_O
    resid_mid  = x + attn_out,      resid_post = resid_mid + MLP(resid_mid)

with ``sigma_j = sqrt(|P x_j|^2 / d + eps)`` and ``A^h`` the attention pattern of head ``h``.

**The isotropic model.** Each residual vector is split into a deterministic part and a random
part, ``x_i = m_i + z_i`` (:class:`GramState`): ``m_i`` collects what the biases put into the
stream (``b_O``, ``b_V W_O``, the norm bias ``b``, the MLP's mean output), ``z_i`` everything
else, summarised by its Gram matrix ``G_ik = <z_i, z_k>``. The one assumption, made at every
block, is that the random part is *isotropic relative to the block's weights*: for any fixed
matrix ``B``, ``E[z_i^T B z_k] = G_ik tr(B) / d`` and ``E<z_i, c> = 0`` for a fixed vector
``c`` (true at random initialisation, where each block's weights are drawn independently of
what earlier blocks wrote). The attention patterns are taken as observed and independent of the
random parts. Nothing else is assumed; every trace below uses the model's actual weights.

**LN.** ``|P z|^2 = (tr P / d) |z|^2`` (``1 - 1/d`` when centring), hence
``sigma_j^2 = (|P m_j|^2 + (tr P / d) G_jj) / d + eps``; the normalised vector is
``n_j = w (.) P z_j / sigma_j  +  (w (.) P m_j / sigma_j + b)``, random part plus deterministic
part ``D_j``.

**Attention** (:func:`attention_step`). With ``V_h = W_V^h W_O^h`` and ``Pw = P diag(w)``:

* deterministic part: ``a_i = sum_h ((A^h D)_i W_V^h + r^h_i b_V^h) W_O^h + b_O``
  (``r^h_i = sum_j A^h_ij``, 1 unless attention sinks);
* random Gram (the ``A G A^T`` term): ``E<z_j^T Pw V_h, z_l^T Pw V_h'> = G_jl tau_hh'`` with
  ``tau_hh' = tr(Pw V_h V_h'^T Pw^T) / d``, so
  ``K^attn = sum_hh' tau_hh' A^h S^-1 G S^-1 A^h'^T`` (``S = diag(sigma)``);
* residual cross term: ``E<z_i, z_l^T Pw V_h> = G_il rho_h`` with ``rho_h = tr(Pw V_h) / d``, so
  ``C = sum_h rho_h G S^-1 A^h^T``;
* the new stream: ``G' = G + C + C^T + K^attn``, ``m' = m + a`` (``resid_mid``); ``attn_out`` is
  ``(K^attn, a)``.

**MLP** (:func:`mlp_step`, derived in :mod:`nopelens.theory.mlp_kernel`): ``resid_post`` adds the
MLP's mean output to ``m``, and ``C_mlp + C_mlp^T + L + N`` to ``G``: its gain (the linear part,
with Gram ``L`` and cross term ``C_mlp = G S^-1 diag(g)`` with the residual) and its non-linear
noise ``N`` (a dual-activation kernel, correlated across positions as their inputs are).
``mlp="ignore"`` drops the MLP (``resid_post = resid_mid``) to measure what modelling it is worth.

The similarity the theory predicts is ``cos`` of the Gram ``G + m m^T`` (per sequence), like the
observation (:func:`nopelens.theory.gram_to_cosine`). In the uniform-attention limit with one
head, ``w = 1``, no biases and no residual, ``K^attn`` is ``tau A S^-1 G S^-1 A^T``: block 0
recovers the first-layer closed form ``sqrt(min(i,k)/max(i,k))``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from jaxtyping import Float

from nopelens.theory.closed_forms import gram_to_cosine
from nopelens.theory.mlp_kernel import mlp_moments
from nopelens.theory.weights import AttentionWeights, BlockWeights, MLPWeights, NormWeights
from nopelens.validation import check_choice

MLPModel = Literal["kernel", "ignore"]
#: How the MLP enters the recursion: ``kernel`` (gain plus correlated noise) or ``ignore``.
MLP_MODELS: tuple[str, ...] = ("kernel", "ignore")


@dataclasses.dataclass(frozen=True)
class GramState:
    """The residual stream of a batch of sequences as the isotropic model sees it.

    Attributes:
        random: ``G = <z_i, z_k>``, the Gram of the random parts ``[batch, pos, pos]`` (float64).
        mean: ``m_i``, the deterministic parts ``[batch, pos, d_model]``, or ``None`` when zero.
    """

    random: Float[torch.Tensor, "batch pos pos"]
    mean: Float[torch.Tensor, "batch pos d_model"] | None = None

    def gram(self) -> Float[torch.Tensor, "batch pos pos"]:
        """The full Gram matrix ``G + m m^T``."""
        if self.mean is None:
            return self.random
        return self.random + self.mean @ self.mean.transpose(-1, -2)

    def cosine(self) -> Float[torch.Tensor, "batch pos pos"]:
        """The predicted cosine self-similarity of every sequence."""
        return gram_to_cosine(self.gram())

    def plus(
        self,
        random: Float[torch.Tensor, "batch pos pos"],
        mean: Float[torch.Tensor, "batch pos d_model"] | None,
    ) -> GramState:
        """The state with ``random`` added to ``G`` and ``mean`` added to ``m``."""
        if mean is None:
            new_mean = self.mean
        else:
            new_mean = mean if self.mean is None else self.mean + mean
        return GramState(self.random + random, new_mean)


def initial_state(
    gram: Float[torch.Tensor, "batch pos pos"],
) -> GramState:
    """A state whose whole residual is random (isotropic) with Gram ``gram``.

    Examples:
        >>> initial_state(torch.eye(2)[None]).cosine()
        tensor([[[1., 0.],
                 [0., 1.]]], dtype=torch.float64)
    """
    return GramState(gram.to(torch.float64), None)


def _normalise(
    state: GramState, norm: NormWeights
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``sigma`` ``[b, pos]``, the deterministic normalised part ``D`` (or None), ``tr P / d``."""
    d = norm.weight.shape[0]
    trace_p = (1.0 - 1.0 / d) if norm.centred else 1.0
    mean_sq = state.random.diagonal(dim1=-2, dim2=-1) * trace_p
    projected = None if state.mean is None else norm.project(state.mean)
    if projected is not None:
        mean_sq = mean_sq + projected.pow(2).sum(-1)
    if not norm.scaled:
        sigma = torch.ones_like(mean_sq)
    else:
        sigma = (mean_sq.clamp_min(0) / d + norm.eps).sqrt()
    det = None
    if projected is not None or bool(norm.bias.any()):
        det = norm.bias.expand(*mean_sq.shape, d)
        if projected is not None:
            det = det + norm.weight * projected / sigma[..., None]
    return sigma, det, torch.tensor(trace_p, dtype=torch.float64)


def _project_columns(norm: NormWeights, w: torch.Tensor) -> torch.Tensor:
    """``P diag(w) W`` for ``W`` with ``d_model`` rows (the map seen through the norm)."""
    weighted = norm.weight[:, None] * w if w.ndim == 2 else norm.weight[None, :, None] * w
    if not norm.centred:
        return weighted
    return weighted - weighted.mean(-2, keepdim=True)


def value_traces(weights: AttentionWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """``tau_hh' = tr(Pw V_h V_h'^T Pw^T)/d`` ``[head, head]`` and ``rho_h = tr(Pw V_h)/d``.

    ``V_h = W_V^h W_O^h``; ``Pw = P diag(w)`` is the normalisation's linear part.

    Examples:
        >>> from nopelens.theory.weights import AttentionWeights, NormWeights
        >>> eye = torch.eye(4, dtype=torch.float64)
        >>> norm = NormWeights("RMSPre", torch.ones(4, dtype=torch.float64),
        ...                    torch.zeros(4, dtype=torch.float64), 0.0)
        >>> w = AttentionWeights(norm, eye[None], torch.zeros(1, 4, dtype=torch.float64), eye[None],
        ...                      torch.zeros(4, dtype=torch.float64))
        >>> [t.tolist() for t in value_traces(w)]
        [[[1.0]], [1.0]]
    """
    d = weights.W_O.shape[-1]
    seen = _project_columns(weights.norm, weights.W_V)  # Pw W_V^h  [h, d, d_head]
    gram_v = torch.einsum("hdk,gdl->hgkl", seen, seen)  # W_V^h^T Pw^T Pw W_V^g  [h, g, k, l]
    gram_o = torch.einsum("hkm,glm->hgkl", weights.W_O, weights.W_O)  # W_O^h W_O^g^T
    tau = torch.einsum("ghkl,hglk->hg", gram_v, gram_o) / d
    rho = torch.einsum("hdk,hkd->h", seen, weights.W_O) / d
    return tau, rho


def attention_step(
    state: GramState,
    pattern: Float[torch.Tensor, "batch head_index query_pos key_pos"],
    weights: AttentionWeights,
) -> tuple[GramState, GramState]:
    """One attention block: the predicted ``attn_out`` and ``resid_mid`` states.

    Implements the attention part of the module docstring: ``K^attn = sum tau A S^-1 G S^-1 A^T``,
    the cross term ``C = sum rho G S^-1 A^T`` and the deterministic parts through ``b_V``,
    ``b_O`` and the norm bias.

    Args:
        state: The block's input (``resid_pre``).
        pattern: The block's attention patterns (``attn.hook_pattern``).
        weights: :class:`~nopelens.theory.weights.AttentionWeights` of the block.

    Returns:
        ``(attn_out, resid_mid)`` states.

    Examples:
        >>> from nopelens.theory.attention import uniform_pattern
        >>> from nopelens.theory.weights import AttentionWeights, NormWeights
        >>> eye, one = torch.eye(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
        >>> w = AttentionWeights(NormWeights("none", one, 0 * one, 0.0), eye[None],
        ...                      torch.zeros(1, 4, dtype=torch.float64), eye[None], 0 * one)
        >>> attn, _ = attention_step(initial_state(torch.eye(3)[None] * 4),
        ...                          uniform_pattern(3)[None, None].double(), w)
        >>> attn.cosine()[0, 0]  # sqrt(min(i, j) / max(i, j)), 1-indexed
        tensor([1.0000, 0.7071, 0.5774], dtype=torch.float64)
    """
    a = pattern.to(torch.float64)
    g = state.random
    sigma, det, _ = _normalise(state, weights.norm)
    tau, rho = value_traces(weights)
    scaled = g / sigma[:, :, None] / sigma[:, None, :]  # S^-1 G S^-1
    mixed = torch.einsum("hg,bgkl->bhkl", tau, a)  # sum_g tau_hg A^g
    k_attn = torch.einsum("bhij,bjl,bhkl->bik", a, scaled, mixed)
    cross = torch.einsum("h,bil,bhkl->bik", rho, g / sigma[:, None, :], a)
    mean = _attention_mean(a, det, weights)
    attn = GramState(k_attn, mean)
    mid = state.plus(cross + cross.transpose(-1, -2) + k_attn, mean)
    return attn, mid


def _attention_mean(
    a: torch.Tensor, det: torch.Tensor | None, weights: AttentionWeights
) -> torch.Tensor | None:
    """``sum_h ((A^h D) W_V^h + r^h b_V^h) W_O^h + b_O`` (None when every term is zero)."""
    if det is None and not bool(weights.b_V.any()) and not bool(weights.b_O.any()):
        return None
    rows = a.sum(-1)  # [b, h, i]
    z = torch.einsum("bhi,hk->bihk", rows, weights.b_V)
    if det is not None:
        z = z + torch.einsum("bhij,bjd,hdk->bihk", a, det, weights.W_V)
    return torch.einsum("bihk,hkd->bid", z, weights.W_O) + weights.b_O


def mlp_step(
    state: GramState, weights: MLPWeights, *, mlp: MLPModel = "kernel"
) -> tuple[GramState, GramState]:
    """One MLP: the predicted ``mlp_out`` and ``resid_post`` states (gain plus noise).

    See :mod:`nopelens.theory.mlp_kernel` for the derivation. ``mlp="ignore"`` returns a zero
    ``mlp_out`` and ``resid_post = resid_mid``.

    Examples:
        >>> from nopelens.models import build_model
        >>> from nopelens.theory.weights import block_weights
        >>> weights = block_weights(build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=8,
        ...                                     n_ctx=4), 0).mlp
        >>> out, post = mlp_step(initial_state(torch.eye(3)[None]), weights)
        >>> post.random.shape, bool((out.random.diagonal(dim1=1, dim2=2) > 0).all())
        (torch.Size([1, 3, 3]), True)
    """
    check_choice(mlp, "mlp", MLP_MODELS, "mlp_step")
    g = state.random
    if mlp == "ignore":
        return GramState(torch.zeros_like(g), None), state
    d = weights.W_in.shape[0]
    sigma, _, _ = _normalise(state, weights.norm)
    seen = _project_columns(weights.norm, weights.W_in)  # a_n  [d, n]
    pre_mean = weights.b_in + weights.norm.bias @ weights.W_in  # [n]
    mu = pre_mean.expand(*sigma.shape, -1)
    if state.mean is not None:
        mu = mu + (state.mean @ seen) / sigma[..., None]
    diag = g.diagonal(dim1=-2, dim2=-1).clamp_min(0)
    std = seen.pow(2).sum(0).sqrt() * (diag / d).sqrt()[..., None] / sigma[..., None]
    norms = diag.sqrt()
    corr = torch.where(
        (norms[:, :, None] * norms[:, None, :]) > 0,
        g / (norms[:, :, None] * norms[:, None, :]).clamp_min(1e-300),
        torch.zeros_like(g),
    )
    mean_act, noise, slope = mlp_moments(
        weights.act_fn, mu, std, corr, weights.W_out.pow(2).sum(-1)
    )
    gain = (slope * (seen * weights.W_out.T).sum(0)).sum(-1) / d  # g_k = tr(J_k) / d  [b, k]
    cross = g * (gain / sigma)[:, None, :]
    coupling = (seen.T @ seen) * (weights.W_out @ weights.W_out.T)  # M  [n, n]
    linear = (
        g * (slope @ coupling @ slope.transpose(-1, -2)) / d / sigma[:, :, None] / sigma[:, None, :]
    )
    kernel = linear + noise
    out_mean = mean_act @ weights.W_out + weights.b_out
    out = GramState(kernel, out_mean)
    return out, state.plus(cross + cross.transpose(-1, -2) + kernel, out_mean)


@dataclasses.dataclass(frozen=True)
class BlockPrediction:
    """The predicted states of one block.

    In attention-only blocks ``mlp_out`` is ``None`` and ``resid_post`` is ``resid_mid``.

    Attributes:
        attn_out: Predicted ``hook_attn_out`` state.
        resid_mid: Predicted ``hook_resid_mid`` state.
        mlp_out: Predicted ``hook_mlp_out`` state (``None`` when attention-only).
        resid_post: Predicted ``hook_resid_post`` state: the next block's input.
    """

    attn_out: GramState
    resid_mid: GramState
    mlp_out: GramState | None
    resid_post: GramState


def block_step(
    state: GramState,
    pattern: Float[torch.Tensor, "batch head_index query_pos key_pos"],
    weights: BlockWeights,
    *,
    mlp: MLPModel = "kernel",
) -> BlockPrediction:
    """One whole block: the attention, then the MLP on ``resid_mid``.

    Examples:
        >>> from nopelens.models import build_model
        >>> from nopelens.theory.attention import uniform_pattern
        >>> from nopelens.theory.weights import block_weights
        >>> model = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=8, n_ctx=4)
        >>> pred = block_step(initial_state(torch.eye(3)[None]),
        ...                   uniform_pattern(3).expand(1, 2, 3, 3), block_weights(model, 0))
        >>> pred.resid_post.cosine().shape
        torch.Size([1, 3, 3])
    """
    attn, mid = attention_step(state, pattern, weights.attn)
    if weights.mlp is None:
        return BlockPrediction(attn, mid, None, mid)
    out, post = mlp_step(mid, weights.mlp, mlp=mlp)
    return BlockPrediction(attn, mid, out, post)
