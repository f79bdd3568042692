r"""Kim et al.'s parameter-free causal layer with L2 normalisation, and its depth recursion.

Kim, Liu, Lin, Ji, Gong & Choi, "LayerNorm Induces Recency Bias in Transformer Decoders"
(arXiv 2509.21042, ACL Findings 2026) study the simplest causal attention layer there is: no
weights at all. Following their released code (``concept/simulation.ipynb``,
``SimpleResModel``), one layer maps the rows ``x_1..x_n`` of a sequence (``d`` dimensions) to

    h_i = x_i / sigma_i,   sigma_i = sqrt(|x_i|^2 / d + eps)     (L2 normalisation, times sqrt d)
    A   = causal_softmax(H H^T / sqrt(d)),   y_i = sum_j A_ij h_j   (+ x_i with the residual)

and the inputs are ``x_i = (z_i + l c) / sqrt(d)`` with ``z_i, c ~ N(0, I_d)`` and
``l^2 = alpha / (1 - alpha)``, so that different tokens have cosine ``alpha``. (Their code centres
the vectors as well, ``LayerNorm`` without affine parameters; for isotropic inputs centring
changes every inner product by a factor ``1 - 1/d``. We use pure L2 normalisation, which is
TransformerLens' ``RMSPre``, so that the layer is *exactly* a function of the Gram matrix.)

**The recursion** (derived here; the paper writes out layer 1). Everything the layer does
depends on the inputs only through their Gram matrix ``G = X X^T``:

    <h_i, h_k>  = G_ik / (sigma_i sigma_k),        scores = <h_i, h_k> / sqrt(d),
    <y_i, y_k>  = (A H H^T A^T)_ik,
    <x_i, y_k>  = sum_l A_kl G_il / sigma_l,
    G'          = A H H^T A^T                      (no residual)
    G'          = G + X Y^T + Y X^T + A H H^T A^T  (residual),

so :func:`kim_recursion` carries a sequence's Gram matrix through any number of layers exactly
(to float precision), and :func:`kim_model` builds the same layer as a TransformerLens model
(``RMSPre``, one head with ``d_head = d``, ``W_Q = W_K = W_V = W_O = I``, no biases) to check it
against.

**The closed form** (:func:`kim_closed_form`) is the recursion applied to the *expected* input
Gram ``s^2 ((1 - alpha) I + alpha 1 1^T)`` (``s^2 = |x|^2 = 1 / (1 - alpha)`` for Kim's inputs),
which is how the paper evaluates the layer: at layer 1 it gives their attention weights
``e^{sqrt d} / D_j`` (self) and ``e^{alpha sqrt d} / D_j`` (each earlier token) with
``D_j = e^{sqrt d} + (j - 1) e^{alpha sqrt d}``, and their output scale
``h(j)^-2 = |y_j|^2 / d = alpha + (1 - alpha)(e^{2 sqrt d} + (j - 1) e^{2 alpha sqrt d}) / D_j^2``
(``concept/alpha.ipynb``; :func:`kim_output_scale`). It is exact when the inputs have exactly that
Gram (e.g. orthogonal token vectors plus a shared one). For random inputs the cosines fluctuate by
about ``(1 - alpha^2) / sqrt(d)`` around ``alpha`` and the scores ``sqrt(d) cos`` by
``1 - alpha^2``, *whatever d is*: ``E[e^score]`` exceeds ``e^{E score}`` by about
``e^{(1 - alpha^2)^2 / 2}``, so the closed form under-weights the earlier tokens unless
``alpha`` is close to 1 (measured in the tests and the README).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Float

from nopelens.models import HookedModel
from nopelens.theory.closed_forms import gram_to_cosine
from nopelens.validation import InvalidParameterError, check_choice, check_float, check_int

#: TransformerLens' default ``eps`` of the normalisation.
DEFAULT_EPS = 1e-5
#: Sites of the parameter-free layer: its output and its attention output.
KIM_SITES: tuple[str, ...] = ("resid_post", "attn_out")


def _causal_softmax(scores: torch.Tensor) -> torch.Tensor:
    n = scores.shape[-1]
    mask = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(1)
    return scores.masked_fill(mask, -math.inf).softmax(-1)


def kim_layer(
    gram: Float[torch.Tensor, "*batch pos pos"],
    *,
    d_model: int,
    residual: bool = False,
    eps: float = DEFAULT_EPS,
) -> tuple[
    Float[torch.Tensor, "*batch pos pos"],
    Float[torch.Tensor, "*batch pos pos"],
    Float[torch.Tensor, "*batch pos pos"],
]:
    """One parameter-free layer on a Gram matrix: its pattern, attention-output and output Grams.

    Args:
        gram: ``G = X X^T`` of the layer's input, per sequence.
        d_model: Width ``d`` (the score scale ``sqrt(d)`` and the normalisation ``|x|^2 / d``).
        residual: Add the input to the attention output.
        eps: The normalisation's ``eps``.

    Returns:
        ``(A, A H H^T A^T, G')``: the causal attention pattern, the Gram matrix of the attention
        output ``y`` and that of the layer's output (``y``, or ``x + y`` with the residual).

    Examples:
        >>> a, _, g = kim_layer(torch.eye(3, dtype=torch.float64), d_model=4, eps=0.0)
        >>> a[2]  # equal cosines 0 with earlier tokens, 1 with itself: weights e^0, e^0, e^2
        tensor([0.1065, 0.1065, 0.7870], dtype=torch.float64)
    """
    g = gram.to(torch.float64)
    sigma = (g.diagonal(dim1=-2, dim2=-1).clamp_min(0) / d_model + eps).sqrt()
    gh = g / sigma[..., :, None] / sigma[..., None, :]
    a = _causal_softmax(gh / math.sqrt(d_model))
    attn = a @ gh @ a.transpose(-1, -2)
    out = attn
    if residual:
        cross = (g / sigma[..., None, :]) @ a.transpose(-1, -2)  # <x_i, y_k>
        out = attn + g + cross + cross.transpose(-1, -2)
    return a, attn, out


def kim_recursion(
    gram: Float[torch.Tensor, "*batch pos pos"],
    *,
    depth: int,
    d_model: int,
    residual: bool = False,
    eps: float = DEFAULT_EPS,
    site: str = "resid_post",
) -> Float[torch.Tensor, "depth *batch pos pos"]:
    """The Gram matrix after each of ``depth`` parameter-free layers (exact).

    ``site="resid_post"`` gives each layer's output, ``"attn_out"`` its attention output ``y``
    (the same without the residual).

    Examples:
        >>> g = kim_recursion(torch.eye(4, dtype=torch.float64), depth=2, d_model=4)
        >>> g.shape, bool((gram_to_cosine(g[1])[3, :3] > 0).all())
        (torch.Size([2, 4, 4]), True)
    """
    check_int(depth, "depth", "kim_recursion", min=1)
    check_choice(site, "site", KIM_SITES, "kim_recursion")
    out = []
    for _ in range(depth):
        _, attn, gram = kim_layer(gram, d_model=d_model, residual=residual, eps=eps)
        out.append(attn if site == "attn_out" else gram)
    return torch.stack(out)


def kim_input_gram(n: int, alpha: float, *, norm2: float | None = None) -> torch.Tensor:
    """The expected input Gram ``s^2 ((1 - alpha) I + alpha 1 1^T)`` (``s^2 = 1/(1-alpha)``).

    Examples:
        >>> kim_input_gram(2, 0.5)
        tensor([[2., 1.],
                [1., 2.]], dtype=torch.float64)
    """
    func = "kim_input_gram"
    check_int(n, "n", func, min=1)
    alpha = check_float(alpha, "alpha", func, min=-1.0, max=1.0)
    if norm2 is None:
        if alpha >= 1.0:
            raise InvalidParameterError(
                f"The 'alpha' parameter of {func} must be < 1 unless 'norm2' is given. Got 1.0."
            )
        norm2 = 1.0 / (1.0 - alpha)
    eye = torch.eye(n, dtype=torch.float64)
    return float(norm2) * ((1.0 - alpha) * eye + alpha * torch.ones_like(eye))


def kim_closed_form(
    n: int,
    *,
    alpha: float,
    d_model: int,
    depth: int,
    residual: bool = False,
    eps: float = DEFAULT_EPS,
    norm2: float | None = None,
    site: str = "resid_post",
) -> Float[torch.Tensor, "depth pos pos"]:
    """Expected cosine self-similarity after each of ``depth`` layers (the mean-field closed form).

    The recursion of :func:`kim_recursion` applied to the expected input Gram of Kim et al.'s
    inputs (pairwise cosine ``alpha``, squared norm ``norm2``, default ``1 / (1 - alpha)``).

    Args:
        n: Number of positions.
        alpha: Cosine between the inputs of two different positions, in ``[-1, 1)`` (a Gram
            matrix needs ``alpha >= -1 / (n - 1)``; estimates from data can be slightly negative).
        d_model: Width ``d``.
        depth: Number of layers.
        residual: With the residual connection.
        eps: The normalisation's ``eps``.
        norm2: Squared norm of each input (default ``1 / (1 - alpha)``).
        site: ``"resid_post"`` (each layer's output) or ``"attn_out"`` (its attention output).

    Returns:
        ``[depth, pos, pos]`` float32 cosines, layer 1 first.

    Examples:
        >>> s = kim_closed_form(4, alpha=0.5, d_model=16, depth=2)
        >>> s.shape, bool(s[1, 3, 2] > s[1, 3, 0])  # nearer positions are more similar
        (torch.Size([2, 4, 4]), True)
    """
    func = "kim_closed_form"
    check_int(d_model, "d_model", func, min=1)
    check_int(depth, "depth", func, min=1)
    grams = kim_recursion(
        kim_input_gram(n, alpha, norm2=norm2),
        depth=depth,
        d_model=d_model,
        residual=residual,
        eps=eps,
        site=site,
    )
    return gram_to_cosine(grams).float()


def kim_output_scale(n: int, *, alpha: float, d_model: int, residual: bool = False) -> torch.Tensor:
    """Kim et al.'s layer-1 formula ``h(j) = (|y_j|^2 / d)^(-1/2)`` (``concept/alpha.ipynb``).

    ``D_j = e^{sqrt d} + (j-1) e^{alpha sqrt d}`` and, with ``r = 1`` for the residual (inputs of
    unit norm per dimension, i.e. already normalised) and 0 without,
    ``|y_j|^2 / d = [D_j^2 (r^2 + 2 r alpha + alpha) + D_j (1 - alpha)(2 r e^{sqrt d} + e^{alpha
    sqrt d}) + (1 - alpha)(e^{2 sqrt d} - e^{sqrt d (1 + alpha)})] / D_j^2``, for ``j = 1..n``.
    Written independently of :func:`kim_layer` so that the two can be checked against each other.

    Examples:
        >>> round(float(kim_output_scale(3, alpha=0.0, d_model=4)[0]), 6)  # position 1: itself
        1.0
    """
    sd = math.sqrt(d_model)
    r = 1.0 if residual else 0.0
    j = torch.arange(1, n + 1, dtype=torch.float64)
    dj = math.exp(sd) + (j - 1) * math.exp(alpha * sd)
    num = (
        dj.pow(2) * (r**2 + 2 * r * alpha + alpha)
        + dj * (1 - alpha) * (2 * r * math.exp(sd) + math.exp(alpha * sd))
        + (1 - alpha) * (math.exp(2 * sd) - math.exp(sd * (1 + alpha)))
    )
    return (num / dj.pow(2)).rsqrt()


def kim_model(
    *,
    d_model: int,
    n_layers: int,
    n_ctx: int,
    d_vocab: int,
    alpha: float = 0.0,
    seed: int = 0,
    eps: float = DEFAULT_EPS,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
) -> HookedModel:
    """Kim et al.'s parameter-free layer stacked ``n_layers`` times, as a TransformerLens model.

    Built with :func:`nopelens.build_model` (NoPE, causal, attention-only, ``RMSPre``, one head
    with ``d_head = d_model``), then ``W_Q = W_K = W_V = W_O = I`` and every bias zero, so block
    ``L`` computes ``resid_post = x + causal_softmax(H H^T / sqrt(d)) H`` with ``H`` the
    L2-normalised rows of ``x``. The token embeddings are Kim's inputs
    ``(z_t + l c) / sqrt(d)`` (``l^2 = alpha / (1 - alpha)``), drawn from ``seed``; feed distinct
    tokens for independent positions. Without the residual, pass
    ``nopelens.measure.remove_residual_hooks(model, None)`` as ``fwd_hooks``.

    Examples:
        >>> model = kim_model(d_model=8, n_layers=2, n_ctx=4, d_vocab=10)
        >>> model.cfg.normalization_type, float(model.W_V[1, 0].detach().trace())
        ('RMSPre', 8.0)
    """
    from nopelens.models import build_model

    func = "kim_model"
    alpha = check_float(alpha, "alpha", func, min=0.0, max=1.0)
    if alpha >= 1.0:
        raise InvalidParameterError(f"The 'alpha' parameter of {func} must be < 1. Got {alpha}.")
    model = build_model(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=1,
        d_head=d_model,
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        attn_only=True,
        normalization_type="RMSPre",
        seed=seed,
        device=device,
        eps=eps,
        dtype=dtype,
    )
    _make_parameter_free(model, alpha, seed)
    return model


def _make_parameter_free(model: Any, alpha: float, seed: int) -> None:
    d = model.cfg.d_model
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(model.cfg.d_vocab, d, generator=generator, dtype=torch.float64)
    c = torch.randn(1, d, generator=generator, dtype=torch.float64)
    embed = (z + math.sqrt(alpha / (1.0 - alpha)) * c) / math.sqrt(d)
    with torch.no_grad():
        model.embed.W_E.copy_(embed.to(model.embed.W_E.dtype))
        for block in model.blocks:
            attn = block.attn
            for name in ("W_Q", "W_K", "W_V"):
                getattr(attn, name).copy_(torch.eye(d).unsqueeze(0))
            attn.W_O.copy_(torch.eye(d).unsqueeze(0))
            for name in ("b_Q", "b_K", "b_V", "b_O"):
                getattr(attn, name).zero_()
