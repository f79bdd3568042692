"""Kim et al.'s parameter-free L2-normalised causal layer: recursion, closed form, simulation."""

from __future__ import annotations

import math

import pytest
import torch


def _simulate(model, tokens, residual):
    from nopelens.measure import collect_activations, remove_residual_hooks

    hooks = [] if residual else remove_residual_hooks(model, None)
    acts = collect_activations(
        model, tokens, sites=("resid_pre", "attn_out", "resid_post"), fwd_hooks=hooks
    )
    return acts


@pytest.mark.parametrize("residual", [False, True])
def test_recursion_equals_the_simulated_layer_at_depth_one_to_three(residual):
    """The Gram recursion carries each sequence through 3 layers exactly (float64 model)."""
    from nopelens import random_tokens
    from nopelens.theory import gram_to_cosine, kim_model, kim_recursion

    model = kim_model(d_model=32, n_layers=3, n_ctx=10, d_vocab=100, alpha=0.4, dtype="float64")
    tokens = random_tokens(6, 10, 100, seed=0, distinct=True)
    acts = _simulate(model, tokens, residual)
    x = acts["resid_pre"][0]
    for site in ("resid_post", "attn_out"):
        grams = kim_recursion(
            x @ x.transpose(-1, -2),
            depth=3,
            d_model=32,
            residual=residual,
            eps=model.cfg.eps,
            site=site,
        )
        for depth in range(3):
            h = acts[site][depth]
            torch.testing.assert_close(
                grams[depth],
                h @ h.transpose(-1, -2),
                rtol=1e-9,
                atol=1e-9,
                msg=f"recursion vs simulated {site} at depth {depth + 1} (residual={residual})",
            )
            torch.testing.assert_close(gram_to_cosine(grams[depth]), gram_to_cosine(h @ h.mT))


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9])
def test_closed_form_is_exact_for_inputs_with_the_expected_gram(alpha, residual):
    """Token vectors sqrt(1-alpha) e_t + sqrt(alpha) e_0 (orthonormal e) have exactly the Gram the
    closed form assumes, so the simulated similarity equals it at depth 1-3."""
    from nopelens.measure import self_similarity
    from nopelens.theory import kim_closed_form, kim_model

    d, n = 32, 8
    model = kim_model(d_model=d, n_layers=3, n_ctx=n, d_vocab=n, dtype="float64")
    basis = torch.eye(d, dtype=torch.float64)
    with torch.no_grad():
        model.embed.W_E.copy_(math.sqrt(1 - alpha) * basis[1 : n + 1] + math.sqrt(alpha) * basis[0])
    acts = _simulate(model, torch.arange(n)[None], residual)
    closed = kim_closed_form(
        n, alpha=alpha, d_model=d, depth=3, residual=residual, eps=model.cfg.eps, norm2=1.0
    )
    for depth in range(3):
        torch.testing.assert_close(
            closed[depth],
            self_similarity(acts["resid_post"][depth])[0].float(),
            atol=1e-5,
            rtol=0,
            msg=f"closed form vs simulation at depth {depth + 1}",
        )


@pytest.mark.parametrize("alpha", [0.5, 0.9])
def test_closed_form_describes_random_inputs_within_the_fluctuation_bound(alpha):
    """Kim's random inputs (z_t + l c)/sqrt(d), d = 256, 64 sequences: with alpha and |x|^2 measured
    from the embeddings, the closed form is the batch mean within 4 (1 - alpha^2)/sqrt(d B) + 1/d
    (each cosine fluctuates by (1 - alpha^2)/sqrt(d); the mean over B sequences by 1/sqrt(B) of
    that; the mean-field treatment of exp(sqrt(d) cos) is off by O(1/d) once alpha is measured)."""
    from nopelens import random_tokens
    from nopelens.measure import self_similarity
    from nopelens.theory import kim_closed_form, kim_model

    d, n, batch = 256, 10, 64
    model = kim_model(d_model=d, n_layers=3, n_ctx=n, d_vocab=2048, alpha=alpha, seed=1)
    acts = _simulate(model, random_tokens(batch, n, 2048, seed=2, distinct=True), True)
    x = acts["resid_pre"][0].double()
    cos = self_similarity(x)
    rows, cols = torch.triu_indices(n, n, offset=1)
    measured = float(cos[:, rows, cols].mean())
    assert abs(measured - alpha) < 0.1  # the embeddings are Kim's inputs
    closed = kim_closed_form(
        n,
        alpha=measured,
        d_model=d,
        depth=3,
        residual=True,
        eps=model.cfg.eps,
        norm2=float(x.pow(2).sum(-1).mean()),
    )
    tol = 4 * (1 - alpha**2) / math.sqrt(d * batch) + 1 / d
    for depth in range(3):
        observed = self_similarity(acts["resid_post"][depth].double()).mean(0)
        error = float((closed[depth].double() - observed).abs().max())
        assert error <= tol, f"depth {depth + 1}: max error {error:.4f} > {tol:.4f}"


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.8])
def test_the_papers_layer_one_output_scale(alpha, residual):
    """Kim et al.'s h(j) (concept/alpha.ipynb), written independently, equals the recursion's
    output norm at layer 1 for unit-variance inputs (|x|^2 = d) without eps."""
    from nopelens.theory import kim_input_gram, kim_layer, kim_output_scale

    d, n = 16, 10
    _, _, out = kim_layer(
        kim_input_gram(n, alpha, norm2=float(d)), d_model=d, residual=residual, eps=0.0
    )
    torch.testing.assert_close(
        out.diagonal().div(d).rsqrt(),
        kim_output_scale(n, alpha=alpha, d_model=d, residual=residual),
    )


def test_the_layer_attends_to_itself_and_sharpens_with_width():
    """Self score sqrt(d) vs alpha sqrt(d) for earlier tokens: the paper's D_j weights."""
    from nopelens.theory import kim_input_gram, kim_layer

    n, alpha = 6, 0.5
    for d in (16, 64):
        a, _, _ = kim_layer(kim_input_gram(n, alpha), d_model=d, eps=0.0)
        j = n
        dj = math.exp(math.sqrt(d)) + (j - 1) * math.exp(alpha * math.sqrt(d))
        assert float(a[-1, -1]) == pytest.approx(math.exp(math.sqrt(d)) / dj)
        assert float(a[-1, 0]) == pytest.approx(math.exp(alpha * math.sqrt(d)) / dj)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t: t.kim_input_gram(4, 1.0), "'alpha' parameter of kim_input_gram must be < 1"),
        (lambda t: t.kim_input_gram(4, 1.5), "'alpha' parameter of kim_input_gram"),
        (lambda t: t.kim_recursion(torch.eye(3), depth=0, d_model=4), "'depth' parameter"),
        (
            lambda t: t.kim_recursion(torch.eye(3), depth=1, d_model=4, site="mlp_out"),
            "'site' parameter of kim_recursion",
        ),
        (
            lambda t: t.kim_model(d_model=4, n_layers=1, n_ctx=4, d_vocab=8, alpha=1.0),
            "'alpha' parameter of kim_model must be < 1",
        ),
    ],
)
def test_bad_arguments(call, match):
    import nopelens.theory as theory

    with pytest.raises(ValueError, match=match):
        call(theory)
