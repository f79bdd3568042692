"""The Gram recursion: traces, exact limits, the MLP kernel against Monte Carlo, and depth."""

from __future__ import annotations

import math

import pytest
import torch

F64 = {"dtype": torch.float64}


def _norm(kind="none", d=8):
    from nopelens.theory import NormWeights

    return NormWeights(kind, torch.ones(d, **F64), torch.zeros(d, **F64), 0.0)


# --------------------------------------------------------------------------------------------
# attention


def test_value_traces_agree_with_explicit_matrices():
    """tau_hh' = tr(Pw V_h V_h'^T Pw^T)/d and rho_h = tr(Pw V_h)/d, with P centring and w a gain."""
    from nopelens.theory import AttentionWeights, NormWeights, value_traces

    g = torch.Generator().manual_seed(0)
    d, h, k = 12, 3, 4
    weight = 1 + 0.5 * torch.rand(d, generator=g, **F64)
    norm = NormWeights("LN", weight, torch.zeros(d, **F64), 1e-5)
    w_v = torch.randn(h, d, k, generator=g, **F64)
    w_o = torch.randn(h, k, d, generator=g, **F64)
    tau, rho = value_traces(AttentionWeights(norm, w_v, torch.zeros(h, k, **F64), w_o, weight))
    p = torch.eye(d, **F64) - 1.0 / d
    pw = p @ torch.diag(weight)
    for a in range(h):
        v_a = w_v[a] @ w_o[a]
        assert rho[a] == pytest.approx(float(torch.trace(pw @ v_a)) / d)
        for b in range(h):
            v_b = w_v[b] @ w_o[b]
            expected = float(torch.trace(pw @ v_a @ v_b.T @ pw.T)) / d
            assert tau[a, b] == pytest.approx(expected), f"tau[{a},{b}] vs explicit trace"


def _identity_model(n_layers, d, norm, n_ctx=10, seed=0):
    """One head, d_head = d, W_V = W_O = I, random queries/keys: the value map is exactly I."""
    from nopelens import build_model

    model = build_model(
        n_layers=n_layers,
        d_model=d,
        n_heads=1,
        d_head=d,
        d_vocab=200,
        n_ctx=n_ctx,
        attn_only=True,
        normalization_type=norm,
        seed=seed,
        dtype="float64",
    )
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_V.copy_(torch.eye(d).unsqueeze(0))
            block.attn.W_O.copy_(torch.eye(d).unsqueeze(0))
            block.attn.W_Q.mul_(4.0)  # sharp, non-uniform attention
    return model


@pytest.mark.parametrize("norm", ["RMSPre", None])
def test_recursion_is_exact_when_the_value_map_is_the_identity(norm):
    """With V = I and no centring, E[z^T V z'] = <z, z'> tr(V)/d holds exactly: the propagated Gram
    (residual cross terms included) equals the model's at every block, whatever the patterns."""
    from nopelens import random_tokens
    from nopelens.measure import collect_activations
    from nopelens.theory import block_step, block_weights, initial_state

    model = _identity_model(3, 16, norm)
    tokens = random_tokens(4, 10, 200, seed=0)
    acts = collect_activations(
        model, tokens, sites=("resid_pre", "pattern", "attn_out", "resid_post")
    )
    x0 = acts["resid_pre"][0]
    state = initial_state(x0 @ x0.transpose(-1, -2))
    for layer in range(3):
        pred = block_step(state, acts["pattern"][layer], block_weights(model, layer))
        for site, ps in (("attn_out", pred.attn_out), ("resid_post", pred.resid_post)):
            h = acts[site][layer]
            torch.testing.assert_close(
                ps.gram(),
                h @ h.transpose(-1, -2),
                rtol=1e-9,
                atol=1e-9,
                msg=f"propagated vs observed Gram, {site} block {layer} ({norm})",
            )
        state = pred.resid_post


def test_deterministic_parts_follow_the_biases_exactly():
    """A stream that is all deterministic (G = 0) is pushed through b_V, W_O and b_O exactly."""
    from nopelens.theory import AttentionWeights, GramState, attention_step
    from nopelens.theory.attention import uniform_pattern

    g = torch.Generator().manual_seed(1)
    d, h, k, n = 6, 2, 3, 4
    w_v, w_o = torch.randn(h, d, k, generator=g, **F64), torch.randn(h, k, d, generator=g, **F64)
    b_v, b_o = torch.randn(h, k, generator=g, **F64), torch.randn(d, generator=g, **F64)
    weights = AttentionWeights(_norm("none", d), w_v, b_v, w_o, b_o)
    mean = torch.randn(1, n, d, generator=g, **F64)
    pattern = uniform_pattern(n).double().expand(1, h, n, n)
    attn, mid = attention_step(GramState(torch.zeros(1, n, n, **F64), mean), pattern, weights)
    out = torch.einsum("bhij,bjd,hdk->bihk", pattern, mean, w_v) + b_v
    expected = torch.einsum("bihk,hkd->bid", out, w_o) + b_o
    torch.testing.assert_close(attn.mean, expected, msg="deterministic attn_out vs explicit")
    torch.testing.assert_close(mid.mean, mean + expected, msg="deterministic resid_mid")
    assert float(attn.random.abs().max()) == 0.0


def test_block_zero_recovers_the_first_layer_closed_form():
    """Uniform attention, distinct isotropic inputs, no residual weight: sqrt(min/max)."""
    from nopelens.theory import (
        AttentionWeights,
        attention_step,
        initial_state,
        uniform_attention_similarity,
    )
    from nopelens.theory.attention import uniform_pattern

    d = 8
    eye = torch.eye(d, **F64)
    weights = AttentionWeights(
        _norm("none", d), eye[None], torch.zeros(1, d, **F64), eye[None], torch.zeros(d, **F64)
    )
    attn, _ = attention_step(
        initial_state(torch.eye(7, **F64)[None]), uniform_pattern(7).double()[None, None], weights
    )
    torch.testing.assert_close(attn.cosine()[0].float(), uniform_attention_similarity(7))


# --------------------------------------------------------------------------------------------
# MLP kernel


@pytest.mark.parametrize("rho", [-0.5, 0.0, 0.3, 0.8, 0.99])
def test_relu_noise_plus_gain_is_the_arc_cosine_kernel(rho):
    """Cho & Saul's arc-cosine kernel: Cov(relu(u), relu(v)) for unit Gaussians of correlation
    rho is (sqrt(1 - rho^2) + rho (pi - arccos rho)) / (2 pi) - 1 / (2 pi); orders >= 2 plus the
    linear part rho / 4."""
    from nopelens.theory import mlp_moments

    one = torch.ones(1, 2, 1, **F64)
    corr = torch.tensor([[[1.0, rho], [rho, 1.0]]], **F64)
    _, noise, slope = mlp_moments("relu", 0 * one, one, corr, torch.ones(1, **F64))
    exact = (math.sqrt(1 - rho**2) + rho * (math.pi - math.acos(rho)) - 1) / (2 * math.pi)
    total = float(noise[0, 0, 1]) + rho * float(slope[0, 0, 0]) ** 2
    assert total == pytest.approx(exact, abs=2e-3 if rho > 0.9 else 2e-4)


def _random_mlp(g, d, d_mlp, act, coupled, norm="RMSPre"):
    from nopelens.theory import MLPWeights

    w_in = torch.randn(d, d_mlp, generator=g, **F64) / math.sqrt(d)
    w_out = torch.randn(d_mlp, d, generator=g, **F64) / math.sqrt(d_mlp)
    if coupled:  # a strong linear part: W_out aligned with W_in
        w_out = w_out + 2.0 * w_in.T / math.sqrt(d_mlp)
    b_in = 0.3 * torch.randn(d_mlp, generator=g, **F64)
    b_out = torch.zeros(d, **F64)
    return MLPWeights(_norm(norm, d), w_in, b_in, w_out, b_out, act)


def _apply(weights, x):
    from nopelens.theory.mlp_kernel import ACTIVATIONS

    d = x.shape[-1]
    if weights.norm.kind == "RMSPre":
        x = x / (x.pow(2).sum(-1, keepdim=True) / d).sqrt()
    return ACTIVATIONS[weights.act_fn](x @ weights.W_in + weights.b_in) @ weights.W_out


@pytest.mark.parametrize(("act", "coupled"), [("relu", False), ("gelu", False), ("relu", True)])
def test_mlp_step_matches_monte_carlo_over_random_weights(act, coupled):
    """Averaged over Gaussian weights (rotation invariant, so the isotropy assumption holds in
    expectation), the predicted resid_post Gram equals the simulated one within 4 standard
    errors."""
    from nopelens.theory import initial_state, mlp_step

    g = torch.Generator().manual_seed(3)
    d, d_mlp, n, draws = 32, 128, 4, 120
    x = torch.randn(n, d, generator=g, **F64)
    x[1] = 0.8 * x[0] + 0.6 * x[1]  # a correlated pair
    state = initial_state((x @ x.T)[None])
    diffs = []
    for _ in range(draws):
        weights = _random_mlp(g, d, d_mlp, act, coupled)
        _, post = mlp_step(state, weights)
        y = x + _apply(weights, x)
        diffs.append(post.gram()[0] - y @ y.T)
    diffs = torch.stack(diffs)
    bias, se = diffs.mean(0), diffs.std(0) / math.sqrt(draws)
    assert (bias.abs() <= 4 * se + 1e-6).all(), f"bias {bias} vs 4 SE {4 * se}"


def test_deterministic_and_random_splits_agree():
    """A stream m + z with m orthogonal to z predicts the same resid_post whether m is carried as
    the deterministic part or folded into the random Gram (both exact in expectation)."""
    from nopelens.theory import GramState, initial_state, mlp_step

    g = torch.Generator().manual_seed(4)
    d, n = 32, 5
    z = torch.randn(n, d, generator=g, **F64)
    z[:, 0] = 0
    m = torch.zeros(1, n, d, **F64)
    m[0, :, 0] = torch.linspace(0.5, 2.0, n, **F64)
    diffs = []
    for _ in range(60):
        weights = _random_mlp(g, d, 64, "relu", False, norm="none")
        split = mlp_step(GramState((z @ z.T)[None], m), weights)[1].gram()
        folded = mlp_step(initial_state((z @ z.T)[None] + m @ m.transpose(-1, -2)), weights)[1]
        diffs.append(split - folded.gram())
    diffs = torch.stack(diffs)
    assert (diffs.mean(0).abs() <= 4 * diffs.std(0) / math.sqrt(len(diffs)) + 1e-6).all()


# --------------------------------------------------------------------------------------------
# depth


def _value_output_rank(model, layer):
    """Participation ratio (tr S)^2 / tr(S^2) of the block's summed value-output map."""
    v = torch.einsum("hdk,hkm->dm", model.W_V[layer].detach(), model.W_O[layer].detach()).double()
    s = v @ v.T
    return float(torch.trace(s) ** 2 / torch.trace(s @ s))


@pytest.mark.slow
def test_propagated_matches_observation_under_uniform_attention_at_every_layer():
    """Queries scaled to 0 at every block (exactly uniform attention), attention-only, d_model 512.

    Tolerance (derived): each observed entry is the mean over B sequences of a cosine between two
    vectors with about d_eff independent directions (d_eff = the participation ratio of the
    block's value-output map, the smallest over blocks) and population correlation c. Its
    standard deviation is about (1 - c^2) / sqrt(d_eff B) (Fisher) and its bias about
    c (1 - c^2) / (2 d_eff);
    the isotropic treatment of LN's centring and of the ratio E[cos] ~ E<a,b>/sqrt(E|a|^2 E|b|^2)
    add O(1/d). So |observed - predicted| <= 4 (1 - c^2) / sqrt(d_eff B) + 2 / d_eff, c the
    prediction, entry by entry.
    """
    from nopelens import build_model, random_tokens
    from nopelens.measure import collect_activations, self_similarity
    from nopelens.theory import (
        block_step,
        block_weights,
        initial_state,
        query_scale_hooks,
        uniform_pattern,
    )

    n_layers, d, n, batch = 4, 512, 16, 32
    model = build_model(
        n_layers=n_layers, d_model=d, n_heads=8, d_vocab=4096, n_ctx=n, attn_only=True, seed=0
    )
    tokens = random_tokens(batch, n, 4096, seed=0, distinct=True)
    hooks = [h for layer in range(n_layers) for h in query_scale_hooks(0.0, layer=layer)]
    acts = collect_activations(
        model, tokens, sites=("resid_pre", "pattern", "attn_out", "resid_post"), fwd_hooks=hooks
    )
    torch.testing.assert_close(acts["pattern"], uniform_pattern(n).expand_as(acts["pattern"]))
    d_eff = min(_value_output_rank(model, layer) for layer in range(n_layers))
    assert d_eff > d / 4  # the bound is meaningful
    x0 = acts["resid_pre"][0].double()
    state = initial_state(x0 @ x0.transpose(-1, -2))
    for layer in range(n_layers):
        pred = block_step(state, acts["pattern"][layer], block_weights(model, layer))
        for site, ps in (("attn_out", pred.attn_out), ("resid_post", pred.resid_post)):
            predicted = ps.cosine().mean(0)
            observed = self_similarity(acts[site][layer].double()).mean(0)
            tol = 4 * (1 - predicted.pow(2)) / math.sqrt(d_eff * batch) + 2 / d_eff
            excess = (observed - predicted).abs() - tol
            assert float(excess.max()) <= 0, (
                f"{site} block {layer}: max |obs - pred| "
                f"{float((observed - predicted).abs().max()):.4f} exceeds the tolerance"
            )
        state = pred.resid_post


@pytest.mark.parametrize("act", ["gelu", "silu"])
def test_quadrature_chunks_do_not_change_the_coefficients(act, monkeypatch):
    """The quadrature is evaluated in cache-sized chunks; any chunk size gives the same values.

    The same to the last bits: the matrix library may sum a product of another shape in another
    order (seen on an AVX-512 AMD EPYC: 1 ulp of the largest coefficient with one chunk).
    """
    from nopelens.theory import mlp_kernel

    g = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 5, 7, generator=g, **F64)
    std = torch.rand(3, 5, 7, generator=g, **F64) * 2.5  # some spreads > 2: doubled nodes
    results = []
    for elements in (1, 100, 1 << 22):
        monkeypatch.setattr(mlp_kernel, "_QUADRATURE_ELEMENTS", elements)
        results.append(mlp_kernel.hermite_coefficients(act, mean, std))
    ulp = torch.finfo(torch.float64).eps * float(results[0][0].abs().max())
    for coef, second in results[1:]:
        torch.testing.assert_close(coef, results[0][0], rtol=0, atol=8 * ulp)
        torch.testing.assert_close(second, results[0][1], rtol=0, atol=8 * ulp)
    assert results[0][0].shape == (3, 5, 7, mlp_kernel.HERMITE_ORDER + 1)
    empty = mlp_kernel.hermite_coefficients(act, mean[:0], std[:0])
    assert empty[0].shape == (0, 5, 7, mlp_kernel.HERMITE_ORDER + 1) and empty[1].shape == (0, 5, 7)


def test_first_layer_closed_form_is_first_layer_theorys():
    from nopelens import build_model, random_tokens
    from nopelens.theory import first_layer_closed_form, first_layer_gram, first_layer_theory

    for attn_only in (False, True):
        model = build_model(
            n_layers=1, d_model=16, n_heads=2, d_vocab=40, n_ctx=8, attn_only=attn_only, seed=1
        )
        tokens = random_tokens(5, 8, 40, seed=2, distinct=True)
        theory = first_layer_theory(model, tokens)
        closed = first_layer_closed_form(model, tokens)
        assert closed.keys() == theory.closed_form.keys()
        for site, matrix in closed.items():
            assert torch.equal(matrix, theory.closed_form[site])
        grams = first_layer_gram(model, tokens)
        assert set(grams) == set(closed)
