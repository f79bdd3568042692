"""The probe estimators against scikit-learn, and on degenerate inputs."""

from __future__ import annotations

import numpy as np
import torch


def test_ridge_and_logistic_agree_with_sklearn():
    from sklearn.linear_model import LogisticRegression, Ridge

    from nopelens.probes import logistic_predict, ridge_predict

    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g)
    y = x @ torch.randn(5, generator=g) + 0.3 * torch.randn(400, generator=g)
    pred, (alpha,) = ridge_predict(
        x[:200], y[:200, None], x[200:300], y[200:300, None], x[300:], alphas=(0.1,)
    )
    x_train = x[:300].double()
    scale = float(((x_train - x_train.mean(0)) ** 2).sum()) / 5
    sk = Ridge(alpha=alpha * scale).fit(x_train.numpy(), y[:300].double().numpy())
    np.testing.assert_allclose(
        pred[:, 0].numpy(),
        sk.predict(x[300:].double().numpy()),
        rtol=1e-4,
        atol=1e-4,
        err_msg="ridge_predict vs sklearn Ridge",
    )

    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()
    cls, (lam,) = logistic_predict(
        x[:200],
        labels[:200, None],
        x[200:300],
        labels[200:300, None],
        x[300:],
        3,
        lambdas=(0.01,),
        max_iter=200,
    )
    sk = LogisticRegression(C=1 / (0.01 * 200), max_iter=1000, tol=1e-8).fit(
        x[:200].numpy(), labels[:200].numpy()
    )
    agreement = float((cls[:, 0].numpy() == sk.predict(x[300:].numpy())).mean())
    assert agreement >= 0.97, f"logistic_predict vs sklearn LogisticRegression: {agreement}"


def test_ridge_handles_more_features_than_rows_and_constant_columns():
    from nopelens.probes import ridge_predict, standardize

    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 50, generator=g)
    x[:, 3] = 1.0
    y = x[:, :1] * 2
    xf, xv, xt = standardize(x[:15], x[15:20], x[20:])
    pred, _ = ridge_predict(xf, y[:15], xv, y[15:20], xt)
    assert torch.isfinite(pred).all()
