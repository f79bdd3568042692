"""Variance by position (Chi et al., ACL 2023): the other candidate carrier of position.

Chi et al. observe that at initialisation causal attention is nearly uniform, so the attention
output at the 1-indexed position ``i`` averages ``i`` value vectors and its variance across hidden
dimensions shrinks like ``1/i``. :func:`position_variance` measures that variance at any hook site
and :func:`fit_inverse_law` fits ``variance_i = scale / i + offset`` (``offset`` absorbs a
residual stream of constant variance, see :func:`nopelens.theory.closed_forms.uniform_variance`).

Pure functions over tensors; positions in frames are 0-indexed (``pos``, TransformerLens'
convention) and the law uses ``i = pos + 1``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from nopelens.validation import InvalidParameterError, check_int


def position_variance(
    hidden: Float[torch.Tensor, "*batch pos d_model"],
) -> Float[torch.Tensor, "*batch pos"]:
    """Variance of each hidden state across its ``d_model`` dimensions.

    ``var(h_i) = mean_d (h_id - mean_d h_i)^2`` (population variance, ``correction=0``), one value
    per position; the quantity whose ``1/i`` decay Chi et al. propose as the position signal.

    Args:
        hidden: Hidden states ``[..., pos, d_model]`` (e.g. ``blocks.0.hook_attn_out``).

    Returns:
        ``[..., pos]``, in the dtype of ``hidden``.

    Raises:
        ValueError: If ``hidden`` is not a floating-point tensor with at least 2 dimensions, or
            holds NaN or infinity.

    Examples:
        >>> position_variance(torch.tensor([[1.0, -1.0], [2.0, 2.0]]))
        tensor([1., 0.])
    """
    if not isinstance(hidden, torch.Tensor) or not hidden.is_floating_point() or hidden.ndim < 2:
        got = (
            f"shape {tuple(hidden.shape)} dtype {hidden.dtype}"
            if isinstance(hidden, torch.Tensor)
            else type(hidden).__name__
        )
        raise InvalidParameterError(
            "The 'hidden' parameter of position_variance must be a float torch.Tensor "
            f"[..., pos, d_model]. Got {got} instead."
        )
    if not bool(torch.isfinite(hidden).all()):
        bad = int((~torch.isfinite(hidden)).sum())
        raise InvalidParameterError(
            f"The 'hidden' parameter of position_variance contains NaN or infinity ({bad} of "
            f"{hidden.numel()} values)."
        )
    return hidden.var(dim=-1, correction=0)


def fit_inverse_law(
    variance: Float[torch.Tensor, "*batch pos"],
    *,
    intercept: bool = True,
    min_pos: int = 0,
) -> pd.DataFrame:
    """Least-squares fit of ``variance_i = scale / i + offset`` (1-indexed ``i = pos + 1``).

    Leading dimensions are averaged first (e.g. the batch of :func:`position_variance`). With
    ``intercept=False`` the fit is the pure ``1/i`` law (``offset = 0``), which is what uniform
    causal attention over isotropic values predicts for ``attn_out``; with an intercept it is the
    residual-stream form ``s^2 + a^2 / i``.

    Args:
        variance: Per-position variances ``[..., pos]``.
        intercept: Fit ``offset`` too (otherwise it is 0).
        min_pos: First 0-indexed position used in the fit (all positions are still reported, with
            ``in_fit`` False before it).

    Returns:
        Tidy frame, one row per position: ``pos``, ``observed``, ``fitted``, ``relative_error``
        (``(observed - fitted) / fitted``), ``in_fit``, and the fit's ``scale``, ``offset`` and
        ``r_squared`` (over the fitted rows) repeated on every row.

    Raises:
        ValueError: If ``variance`` is not a finite float tensor, or too few positions are left
            to fit.

    Examples:
        >>> i = torch.arange(1, 6, dtype=torch.float32)
        >>> fit = fit_inverse_law(2.0 / i + 0.5)
        >>> round(float(fit["scale"][0]), 4), round(float(fit["offset"][0]), 4)
        (2.0, 0.5)
        >>> float(fit["relative_error"].abs().max()) < 1e-5
        True
    """
    func = "fit_inverse_law"
    if (
        not isinstance(variance, torch.Tensor)
        or not variance.is_floating_point()
        or (variance.ndim < 1)
    ):
        raise InvalidParameterError(
            f"The 'variance' parameter of {func} must be a float torch.Tensor [..., pos]. "
            f"Got {type(variance).__name__} instead."
        )
    if not bool(torch.isfinite(variance).all()):
        raise InvalidParameterError(f"The 'variance' parameter of {func} contains NaN or infinity.")
    n = variance.shape[-1]
    check_int(min_pos, "min_pos", func, min=0, max=max(n - 1, 0))
    if not isinstance(intercept, bool):
        raise InvalidParameterError(
            f"The 'intercept' parameter of {func} must be a bool. Got {intercept!r} instead."
        )
    need = 2 if intercept else 1
    if n - min_pos < need:
        raise InvalidParameterError(
            f"{func} needs at least {need} positions from min_pos={min_pos} to fit "
            f"{'scale and offset' if intercept else 'scale'}. Got {n} positions."
        )
    observed = variance.detach().double().reshape(-1, n).mean(0).cpu().numpy()
    inv = 1.0 / np.arange(1, n + 1, dtype=np.float64)
    used = np.arange(n) >= min_pos
    design = np.stack([inv, np.ones(n)], axis=1) if intercept else inv[:, None]
    coef, *_ = np.linalg.lstsq(design[used], observed[used], rcond=None)
    scale = float(coef[0])
    offset = float(coef[1]) if intercept else 0.0
    fitted = scale * inv + offset
    resid = observed[used] - fitted[used]
    total = observed[used] - observed[used].mean()
    ss_tot = float(total @ total)
    r_squared = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(fitted != 0, (observed - fitted) / fitted, np.nan)
    return pd.DataFrame(
        {
            "pos": np.arange(n),
            "observed": observed,
            "fitted": fitted,
            "relative_error": relative,
            "in_fit": used,
            "scale": scale,
            "offset": offset,
            "r_squared": r_squared,
        }
    )
