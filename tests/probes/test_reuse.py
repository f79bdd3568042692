"""Work shared or reused by the probe fits gives the same numbers, bit for bit, as recomputing.

The speed-ups of issue 17 (a reused evaluation at every warm start of the logistic penalty path,
one transposed copy of the fit features for the targets of a logistic probe, one Gram matrix for
the principal components and the ridge probe, worker threads at one torch thread) must not
change a single result.
"""

from __future__ import annotations

import math
import threading

import pytest
import torch


def _classes(n=600, d=6, n_classes=5, seed=0):
    """Features with a noisy linear class signal and their labels (two targets)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, n_classes, (n,), generator=g)
    x = torch.randn(n, d, generator=g) + 0.8 * torch.randn(n_classes, d, generator=g)[y]
    control = torch.randint(0, n_classes, (n,), generator=g)
    return x, torch.stack([y, control], dim=1)


def _plain_path(x, y, n_classes, lambdas, max_iter):
    """The penalty path of one target with no reuse: every evaluation from scratch."""
    from nopelens.probes.fitting import _lbfgs

    dim = x.shape[1]
    theta = torch.zeros((dim + 1) * n_classes)
    thetas = []
    for lam in lambdas:
        _lbfgs(theta, x, y, lam, max_iter)
        thetas.append(theta.clone())
    return thetas


@pytest.mark.parametrize("n_buffers", [1, 2])
def test_objective_reuses_warm_start_evaluations_with_identical_results(n_buffers):
    from nopelens.probes.fitting import _lbfgs, _Objective

    x, y = _classes()
    lambdas, n_classes = (1e-1, 1e-2, 1e-3), 5
    expected = _plain_path(x, y[:, 0], n_classes, lambdas, 15)
    buffers = [torch.empty(x.shape[0], n_classes) for _ in range(n_buffers)]
    objective = _Objective(x, x.T.contiguous(), y[:, :1], buffers)
    theta = torch.zeros((x.shape[1] + 1) * n_classes)
    reusable = 0  # warm starts whose point is still kept: each must be reused, not recomputed
    for lam, want in zip(lambdas, expected, strict=True):
        before = objective.reused
        _lbfgs(theta, x, y[:, 0], lam, 15, None, objective)
        assert torch.equal(theta, want), lam
        if lam != lambdas[0]:
            assert objective.reused >= before + reusable  # the kept start was taken
        reusable = int(any(k is not None and torch.equal(k[0], theta) for k in objective.kept))
    # L-BFGS usually stops at its last evaluation, so some warm start is kept (machine-dependent
    # which: a stop after a rejected line-search step keeps another point)
    assert objective.reused >= 1


def test_objective_reuse_returns_the_recomputed_loss_and_gradients():
    from nopelens.probes.fitting import _loss_and_grad, _Objective

    x, y = _classes(n=200, d=3, n_classes=4)
    labels = y[:, :1] % 4
    theta = torch.randn(4 * 4, generator=torch.Generator().manual_seed(1))
    weight, bias = theta[:12].view(3, 4), theta[12:]
    objective = _Objective(x, x.T.contiguous(), labels, [torch.empty(200, 4)])
    first = objective(theta, weight, bias, 0.1)
    again = objective(theta, weight, bias, 0.01)  # same parameters, another penalty
    assert objective.reused == 1
    for got, want in zip(again, _loss_and_grad(x, labels, weight, bias, 0.01), strict=True):
        assert torch.equal(got, want)
    for got, want in zip(first, _loss_and_grad(x, labels, weight, bias, 0.1), strict=True):
        assert torch.equal(got, want)
    theta[0] += 1.0  # new parameters: evaluated, not reused
    objective(theta, weight, bias, 0.1)
    assert objective.reused == 1


def test_logistic_predict_with_a_shared_transpose_is_identical():
    from nopelens.probes import logistic_predict

    x, y = _classes()
    args = (x[:400], y[:400], x[400:500], y[400:500], x[500:], 5)
    pred, chosen = logistic_predict(*args, lambdas=(1e-1, 1e-2, 1e-3), max_iter=10)
    shared, chosen_shared = logistic_predict(
        *args, lambdas=(1e-1, 1e-2, 1e-3), max_iter=10, x_fit_t=x[:400].T.contiguous()
    )
    assert torch.equal(pred, shared) and chosen == chosen_shared


def test_logistic_predict_keeps_the_first_penalty_when_validation_never_improves():
    """A NaN validation loss stops the path at once: the prediction of all-zero parameters."""
    from nopelens.probes import logistic_predict

    x, y = _classes(n=90)
    x_val = x[60:80].clone()
    x_val[0, 0] = math.nan
    pred, chosen = logistic_predict(x[:60], y[:60], x_val, y[60:80], x[80:], 5, max_iter=3)
    assert chosen == [0.1, 0.1] and pred.eq(0).all()


def test_ridge_and_pca_with_a_shared_gram_are_identical():
    from nopelens.probes import pca_projection, ridge_predict, standardize

    x, y = _classes(n=300, d=7)
    xf, xv, xt = standardize(x[:200], x[200:250], x[250:])
    target = y[:200, :1].float() + xf[:, :1]
    val = y[200:250, :1].float() + xv[:, :1]
    gram = (xf.T @ xf).double()
    pred, chosen = ridge_predict(xf, target, xv, val, xt)
    shared, chosen_shared = ridge_predict(xf, target, xv, val, xt, fit_gram=gram)
    assert torch.equal(pred, shared) and chosen == chosen_shared
    assert torch.equal(pca_projection(xf, 3), pca_projection(xf, 3, gram=gram))


def test_worker_threads_run_at_one_torch_thread(monkeypatch):
    """A new thread does not inherit torch.set_num_threads(1): each worker sets its own."""
    from nopelens.probes import layer

    calls: list[tuple[int, int]] = []
    real = torch.set_num_threads

    def record(n: int) -> None:
        calls.append((threading.get_ident(), n))
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", record)
    seen: set[int] = set()
    barrier = threading.Barrier(2, timeout=10)

    def run(fit, labels):
        seen.add(threading.get_ident())
        barrier.wait()  # both workers busy at once: two distinct threads
        return fit, labels

    groups = iter([([1, 2], "a"), ([3, 4], "b")])
    before = torch.get_num_threads()
    try:
        out = list(layer._run_in_order(groups, run, 2))
    finally:
        real(before)
    assert [fits for fits, _, _ in out] == [[1, 2], [3, 4]]
    assert [results for _, _, results in out] == [[(1, "a"), (2, "a")], [(3, "b"), (4, "b")]]
    assert len(seen) == 2 and threading.get_ident() not in seen
    assert seen <= {ident for ident, n in calls if n == 1}
