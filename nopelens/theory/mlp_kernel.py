r"""The MLP in the Gram recursion: a gain (its linear part) plus correlated non-linear noise.

An MLP maps each position separately: ``y_i = act(LN2(x_i) W_in + b_in) W_out + b_out``. In the
isotropic model of :mod:`nopelens.theory.propagation` the residual vector at position ``i`` is
``x_i = z_i + m_i``: a deterministic part ``m_i`` and a random part ``z_i`` whose direction is
uniform relative to the weights, with Gram ``G_ik = <z_i, z_k>``. Write ``a_n = P w (.) W_in[:, n]``
for the input weights of neuron ``n`` seen through the normalisation (``P`` centring, ``w`` its
gain, ``sigma_i`` its scale at position ``i``). Then the pre-activation of neuron ``n`` is

    pre_i^n = <z_i, a_n> / sigma_i + mu_i^n,
    mu_i^n  = <m_i, a_n> / sigma_i + <b, W_in[:, n]> + b_in[n],

and, ``z`` being isotropic, ``<z_i, a_n>`` and ``<z_k, a_n>`` are centred jointly Gaussian (a sum
over ``d_model`` coordinates) with covariance ``G_ik |a_n|^2 / d``. So

* the spread of neuron ``n`` at position ``i`` is ``s_i^n = |a_n| sqrt(G_ii / d) / sigma_i``, and
  the correlation of its pre-activations at ``i`` and ``k`` is the same for every neuron:
  ``rho_ik = G_ik / sqrt(G_ii G_kk)``;
* **mean** (deterministic part of the output):
  ``E y_i = sum_n E[act(pre_i^n)] W_out[n] + b_out``;
* **the random part**, split by Hermite order. Mehler's formula expands the covariance of two
  neurons' activations in normalised Hermite polynomials ``h_k = He_k / sqrt(k!)`` of their
  standardised pre-activations, ``c_k(i, n) = E[act(mu_i^n + s_i^n u) h_k(u)]``,
  ``u ~ N(0, 1)``:

  - **gain** (order 1, the MLP's linear part; Stein's lemma gives ``E[act'] = c_1 / s``). The
    output's linear response to ``z_k`` is ``J_k^T z_k / sigma_k`` with the mean Jacobian
    ``J_k = sum_n E[act'(pre_k^n)] a_n W_out[n]`` (``d x d``). Its Gram is
    ``L_ik = G_ik tr(J_i J_k^T) / (d sigma_i sigma_k)``, computed exactly from the weights as
    ``e_i^T M e_k`` with ``e_in = E[act'(pre_i^n)]`` and ``M = (a^T a) (.) (W_out W_out^T)``:
    the linear parts of *different* neurons add coherently when ``W_out`` is aligned with
    ``W_in`` (a trained MLP), so no independence is assumed here. Its cross term with the
    residual is ``E<z_i, y_k> = G_ik g_k / sigma_k`` with ``g_k = tr(J_k) / d =
    (1/d) sum_n E[act'(pre_k^n)] <a_n, W_out[n]>`` (close to 0 at random init, where ``W_out``
    is independent of ``W_in``);
  - **noise** (orders ``>= 2``, the non-linear part): neurons are taken as independent (for
    order ``k`` two neurons correlate like ``<a_n, a_n'>^k``, and the higher orders of different
    neurons do not add coherently), and one neuron at two positions has
    ``sum_{k>=2} rho_ik^k c_k(i, n) c_k(k, n)``, so
    ``N_ik = sum_{k>=2} rho_ik^k sum_n |W_out[n]|^2 c_k(i, n) c_k(k, n)``. The sum is truncated
    at :data:`HERMITE_ORDER`; the remainder is bounded with its value at ``rho = 1``, which is
    known exactly on the diagonal: ``Var act(pre_i^n) - c_1^2``.

  The MLP output's random part has Gram ``L + N``.

For the smooth activations (``gelu``, ``silu`` and the tanh GELUs) every expectation over ``u``
is a Gauss-Hermite quadrature with :data:`QUADRATURE_NODES` nodes (absolute error below 1e-4 for
spreads ``s <= 2``; twice the nodes beyond). ``relu`` and ``relu2`` have a kink, where quadrature
converges slowly; Gaussian integration by parts (``E[f(u) He_k(u)] = E[f^(k)(u)]``, and
``E[delta^(m)(u - a)] = phi(a) He_m(a)``) gives them exactly. With ``t = mu/s`` and ``a = -t``:
``relu``: ``c_0 = mu Phi(t) + s phi(t)``, ``c_1 = s Phi(t)``, ``c_k = s phi(t) He_{k-2}(a) /
sqrt(k!)`` (``k >= 2``); ``relu2``: ``c_0 = (mu^2 + s^2) Phi(t) + mu s phi(t)``,
``c_1 = 2 s (mu Phi(t) + s phi(t))``, ``c_2 = 2 s^2 Phi(t) / sqrt 2``,
``c_k = 2 s^2 phi(t) He_{k-3}(a) / sqrt(k!)`` (``k >= 3``); second moments from the truncated
Gaussian moments ``M_j = E[u^j; u > a] = (j-1) M_{j-2} + a^{j-1} phi(a)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from jaxtyping import Float

#: Hermite terms of Mehler's expansion kept before the remainder bound.
HERMITE_ORDER = 12
#: Gauss-Hermite nodes for the Gaussian expectations (doubled when a spread exceeds 2).
QUADRATURE_NODES = 32
#: Elements of the ``[batch, pos, d_mlp, order]`` temporaries of :func:`mlp_moments` at once.
_CHUNK_ELEMENTS = 1 << 22
#: Activation values the quadrature evaluates at once: small enough for its temporaries to stay
#: in the CPU cache (large chunks make it memory-bound, about 3x slower; the values agree to the
#: last bits: the matrix library may sum a product of another shape in another order).
_QUADRATURE_ELEMENTS = 1 << 15


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


#: TransformerLens activation names -> element-wise torch functions (same formulas as
#: ``transformer_lens.utilities.activation_functions``).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "gelu": torch.nn.functional.gelu,
    "gelu_new": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "silu": torch.nn.functional.silu,
    "relu2": lambda x: torch.relu(x).pow(2),
}


def _quadrature(
    n_nodes: int, order: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nodes ``u_q``, probability weights ``p_q`` and ``h_k(u_q)`` ``[order + 1, nodes]``."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(n_nodes)
    u = torch.as_tensor(nodes, dtype=torch.float64, device=device)
    p = torch.as_tensor(weights / math.sqrt(2.0 * math.pi), dtype=torch.float64, device=device)
    h = [torch.ones_like(u), u.clone()]
    for k in range(1, order):  # He_{k+1} = u He_k - k He_{k-1}, normalised by sqrt(k!)
        h.append((u * h[k] - math.sqrt(k) * h[k - 1]) / math.sqrt(k + 1))
    return u, p, torch.stack(h[: order + 1])


def hermite_coefficients(
    act_fn: str,
    mean: Float[torch.Tensor, "*shape"],
    std: Float[torch.Tensor, "*shape"],
    *,
    order: int = HERMITE_ORDER,
    nodes: int = QUADRATURE_NODES,
) -> tuple[Float[torch.Tensor, "*shape order"], Float[torch.Tensor, "*shape"]]:
    """``c_k = E[act(mean + std u) h_k(u)]`` for ``k = 0..order``, and ``E[act(mean + std u)^2]``.

    ``h_k = He_k / sqrt(k!)`` are the orthonormal (probabilists') Hermite polynomials and
    ``u ~ N(0, 1)``; ``c_0`` is the mean of the activation and ``sum_k c_k^2`` its second moment.

    Examples:
        >>> c, m2 = hermite_coefficients("relu", torch.zeros(1), torch.ones(1), order=2)
        >>> [round(v, 4) for v in c[0].tolist()], round(float(m2[0]), 4)
        ([0.3989, 0.5, 0.2821], 0.5)
    """
    if act_fn in ("relu", "relu2"):
        return _relu_coefficients(mean, std, order, power=1 if act_fn == "relu" else 2)
    if std.numel() and float(std.max()) > 2.0:
        nodes *= 2
    u, p, h = _quadrature(nodes, order, mean.device)
    h_t = h.T.contiguous()
    flat_mean, flat_std = mean.reshape(-1), std.reshape(-1)
    coef = mean.new_empty(flat_mean.numel(), order + 1)
    second = mean.new_empty(flat_mean.numel())
    step = max(1, _QUADRATURE_ELEMENTS // nodes)  # [step, nodes] temporaries stay in cache
    activation = ACTIVATIONS[act_fn]
    for lo in range(0, flat_mean.numel(), step):
        points = flat_std[lo : lo + step, None] * u
        points.add_(flat_mean[lo : lo + step, None])  # mean + std u
        values = activation(points)
        weighted = values * p
        torch.matmul(weighted, h_t, out=coef[lo : lo + step])
        torch.sum(weighted.mul_(values), -1, out=second[lo : lo + step])
    return coef.reshape(*mean.shape, order + 1), second.reshape(mean.shape)


def _relu_coefficients(
    mean: torch.Tensor, std: torch.Tensor, order: int, *, power: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Hermite coefficients and second moment of ``relu(mean + std u) ** power``."""
    safe = std.clamp_min(1e-300)
    t = torch.where(std > 0, mean / safe, torch.sign(mean) * math.inf)
    cdf = torch.special.ndtr(t)
    finite = torch.isfinite(t)
    a = torch.where(finite, -t, torch.zeros_like(t))
    pdf = torch.where(finite, torch.exp(-0.5 * a.square()), torch.zeros_like(t))
    pdf = pdf / math.sqrt(2.0 * math.pi)
    moments = [cdf, pdf]  # M_j = E[u^j; u > a]
    for j in range(2, 2 * power + 1):
        moments.append((j - 1) * moments[j - 2] + a.pow(j - 1) * pdf)
    if power == 1:
        head = [mean * cdf + std * pdf, std * cdf]
        second = sum(math.comb(2, j) * mean.pow(2 - j) * std.pow(j) * moments[j] for j in range(3))
        scale, skip = std * pdf, 2
    else:
        head = [
            (mean.square() + std.square()) * cdf + mean * std * pdf,
            2 * std * (mean * cdf + std * pdf),
            2 * std.square() * cdf / math.sqrt(2.0),
        ]
        second = sum(math.comb(4, j) * mean.pow(4 - j) * std.pow(j) * moments[j] for j in range(5))
        scale, skip = 2 * std.square() * pdf, 3
    coef = head[: order + 1]
    he_prev, he = torch.zeros_like(a), torch.ones_like(a)  # He_{-1}, He_0 at a
    for k in range(skip, order + 1):
        coef.append(scale * he / math.sqrt(math.factorial(k)))
        he_prev, he = he, a * he - (k - skip) * he_prev  # He_{m+1} = a He_m - m He_{m-1}
    return torch.stack(coef, -1), torch.as_tensor(second)


def mlp_moments(
    act_fn: str,
    mean: Float[torch.Tensor, "batch pos d_mlp"],
    std: Float[torch.Tensor, "batch pos d_mlp"],
    corr: Float[torch.Tensor, "batch pos pos"],
    out_norm2: Float[torch.Tensor, " d_mlp"],
    *,
    order: int = HERMITE_ORDER,
) -> tuple[
    Float[torch.Tensor, "batch pos d_mlp"],
    Float[torch.Tensor, "batch pos pos"],
    Float[torch.Tensor, "batch pos d_mlp"],
]:
    """Mean activations, the non-linear noise Gram ``N`` and the slopes ``E[act']``.

    See the module docstring: ``N`` holds the Hermite orders ``>= 2`` (the linear part, order 1,
    is the gain, computed from the slopes and the weights by the caller).

    Args:
        act_fn: Activation name (:data:`ACTIVATIONS`).
        mean: ``mu_i^n``, the deterministic part of each pre-activation.
        std: ``s_i^n``, the spread of its random part.
        corr: ``rho_ik``, the correlation of the random parts at two positions.
        out_norm2: ``|W_out[n]|^2`` per neuron.
        order: Hermite terms kept.

    Returns:
        ``E[act(pre)]`` ``[batch pos d_mlp]``, ``N`` ``[batch pos pos]`` and ``E[act'(pre)]``
        ``[batch pos d_mlp]`` (0 where ``std`` is 0).

    Examples:
        >>> one = torch.ones(1, 2, 1, dtype=torch.float64)
        >>> corr = torch.tensor([[[1.0, 0.5], [0.5, 1.0]]], dtype=torch.float64)
        >>> out_norm2 = torch.ones(1, dtype=torch.float64)
        >>> _, n, slope = mlp_moments("relu", 0 * one, one, corr, out_norm2)
        >>> round(float(n[0, 0, 0]), 4), round(float(slope[0, 0, 0]), 4)  # Var - c_1^2, Phi(0)
        (0.0908, 0.5)
    """
    per_sequence = mean[0].numel() * (order + 1)
    step = max(1, _CHUNK_ELEMENTS // max(1, per_sequence))
    if mean.shape[0] > step:  # bound the [batch, pos, d_mlp, order] temporaries
        parts = [
            mlp_moments(
                act_fn,
                mean[lo : lo + step],
                std[lo : lo + step],
                corr[lo : lo + step],
                out_norm2,
                order=order,
            )
            for lo in range(0, mean.shape[0], step)
        ]
        means, noises, slopes = zip(*parts, strict=True)
        return torch.cat(means), torch.cat(noises), torch.cat(slopes)
    coef, second = hermite_coefficients(act_fn, mean, std, order=order)
    variance = (second - coef[..., :2].pow(2).sum(-1)).clamp_min(0)  # orders >= 2  [b, i, n]
    weighted = coef[..., 2:] * out_norm2[:, None].sqrt()  # [b, i, n, k - 2]
    powers = corr[..., None].pow(torch.arange(2, order + 1, device=corr.device))  # [b, i, j, k]
    kernel = torch.einsum("bink,bjnk,bijk->bij", weighted, weighted, powers)
    captured = weighted.pow(2).sum(2)  # [b, i, k] -> kept variance per order
    total = variance @ out_norm2  # [b, i]
    rest = (total - captured.sum(-1)).clamp_min(0)
    kernel = kernel + corr.pow(order + 1) * (rest[:, :, None] * rest[:, None, :]).sqrt()
    diag = torch.arange(kernel.shape[-1], device=kernel.device)
    kernel[:, diag, diag] = total
    slope = torch.where(std > 0, coef[..., 1] / std.clamp_min(1e-300), torch.zeros_like(std))
    return coef[..., 0], kernel, slope
