"""Position probes: synthetic oracles, controls, splits by sequence, a random-init NoPE model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

RESULT_COLUMNS = [
    "model",
    "site",
    "layer",
    "layer_index",
    "feature",
    "capacity",
    "dim",
    "probe",
    "target",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "std",
    "n_seeds",
    "chance",
]


def _linear_position_features(n_seq=64, pos=16, d_model=8, noise=0.05, seed=0):
    """Hidden states whose first coordinate is the position, plus small noise elsewhere."""
    g = torch.Generator().manual_seed(seed)
    hidden = noise * torch.randn(n_seq, pos, d_model, generator=g)
    hidden[..., 0] += torch.arange(pos, dtype=torch.float32)
    return hidden


def _cesaro(n_seq=48, pos=16, d_model=256, seed=0):
    """Running means of i.i.d. standard normal vectors: var(h_i) = 1/i (1-indexed)."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(n_seq, pos, d_model, generator=g)
    return values.cumsum(dim=1) / torch.arange(1, pos + 1)[:, None], values


def _row(frame, **where):
    sel = frame
    for key, value in where.items():
        sel = sel[sel[key] == value]
    assert len(sel) == 1, (where, len(sel))
    return sel.iloc[0]


# ---------------------------------------------------------------------------------------------
# Synthetic oracles
# ---------------------------------------------------------------------------------------------


def test_linear_position_features_are_decoded_and_shuffled_labels_are_not():
    from nopelens.probes import probe_positions

    hidden = _linear_position_features()
    report = probe_positions(
        {"0": hidden},
        features="hidden",
        probes=("ridge", "logistic"),
        equal_dim=None,
        control_task=False,
    )
    df = report.results
    assert list(df.columns) == RESULT_COLUMNS
    common = dict(feature="hidden", capacity="full")
    r2 = _row(df, probe="ridge", target="position", metric="r2", **common)
    assert r2["value"] > 0.99 and r2["n_seeds"] == 3
    assert _row(df, probe="ridge", target="position", metric="spearman", **common)["value"] > 0.99
    mae = _row(df, probe="ridge", target="position", metric="mae", **common)
    assert mae["value"] < 0.1 and mae["chance"] == 16 / 4
    acc = _row(df, probe="logistic", target="position", metric="accuracy", **common)
    assert acc["value"] > 0.9 and acc["chance"] == 1 / 16
    mad = _row(df, probe="logistic", target="position", metric="mad", **common)
    assert mad["value"] < 0.2 and mad["chance"] == pytest.approx((16**2 - 1) / (3 * 16))

    shuffled_r2 = _row(df, probe="ridge", target="shuffled", metric="r2", **common)
    assert abs(shuffled_r2["value"]) < 0.03
    shuffled_rho = _row(df, probe="ridge", target="shuffled", metric="spearman", **common)
    assert abs(shuffled_rho["value"]) < 0.1
    shuffled_acc = _row(df, probe="logistic", target="shuffled", metric="accuracy", **common)
    assert abs(shuffled_acc["value"] - 1 / 16) < 0.04
    assert shuffled_acc["ci_low"] <= 1 / 16 + 0.02


def test_cesaro_variance_decodes_position_and_iid_variance_does_not():
    from nopelens.probes import probe_positions

    cesaro, iid = _cesaro()
    report = probe_positions(
        {"cesaro": cesaro, "iid": iid},
        features="variance",
        probes=("ridge", "isotonic"),
        equal_dim=3,
        control_task=False,
        shuffled_control=False,
    )
    df = report.results
    iso = _row(df, layer="cesaro", probe="isotonic", target="position", metric="r2")
    assert iso["value"] > 0.6 and iso["ci_low"] > 0.4
    rho = _row(df, layer="cesaro", probe="isotonic", target="position", metric="spearman")
    assert rho["value"] > 0.9
    # k = 3 polynomial features of the log-variance (capacity-matched rows) decode too
    poly = _row(
        df, layer="cesaro", probe="ridge", capacity="matched", target="position", metric="r2"
    )
    assert poly["dim"] == 3 and poly["value"] > 0.6
    for probe in ("isotonic", "ridge"):
        for capacity in ("full",) if probe == "isotonic" else ("full", "matched"):
            null = _row(
                df, layer="iid", probe=probe, capacity=capacity, target="position", metric="r2"
            )
            assert null["value"] < 0.05, (probe, capacity, null["value"])
    assert (
        abs(_row(df, layer="iid", probe="isotonic", target="position", metric="spearman")["value"])
        < 0.15
    )


def test_cosine_features_do_not_leak_the_position_index():
    """Permuting the tokens of a sequence (keeping the first two in place) permutes the rows."""
    from nopelens.probes import cosine_features

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 9, 16, generator=g)
    perm = torch.cat([torch.tensor([0, 1]), 2 + torch.randperm(7, generator=g)])
    feats = cosine_features(hidden)
    permuted = cosine_features(hidden[:, perm])
    torch.testing.assert_close(permuted, feats[:, perm], msg="cosine features vs permutation")
    # the first row does not use its own (diagonal) similarity to the first token
    assert not torch.allclose(feats[:, 0, -3], torch.ones(3))


def test_chance_levels_closed_forms():
    from nopelens.probes import chance_levels

    for n in (2, 7, 16, 1024):
        chance = chance_levels(range(n))
        p = np.arange(n)
        assert chance["mae"] == pytest.approx(np.abs(p - p.mean()).mean())
        assert chance["mad"] == pytest.approx((n * n - 1) / (3 * n))
        assert chance["accuracy"] == pytest.approx(1 / n)
    assert chance_levels(range(16))["mae"] == 4.0


# ---------------------------------------------------------------------------------------------
# Splits by sequence
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_random_splits_are_disjoint_sets_of_whole_sequences(seed):
    from nopelens.probes import split_sequences

    split = split_sequences(23, test_fraction=0.3, val_fraction=0.25, seed=seed)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert set().union(*parts) == set(range(23))
    assert sum(len(p) for p in parts) == 23
    assert len(split.test) == 7 and len(split.val) == 4


def test_split_mixing_tokens_of_one_sequence_is_refused():
    from nopelens.probes import SequenceSplit, probe_positions

    with pytest.raises(ValueError, match="one side only.*Sequence 2 is in both train and test"):
        SequenceSplit(train=[0, 1, 2], val=[3], test=[2, 4])
    token_mask = np.zeros((5, 4), dtype=bool)
    with pytest.raises(ValueError, match="by sequence, not token"):
        SequenceSplit(train=token_mask, val=[3], test=[4])
    with pytest.raises(ValueError, match="by sequence, not token"):
        SequenceSplit(train=np.array([[0, 1], [2, 3]]), val=[4], test=[5])
    hidden = _linear_position_features(n_seq=6, pos=4)
    with pytest.raises(ValueError, match="splits are by sequence"):
        probe_positions({"0": hidden.reshape(-1, hidden.shape[-1])}, control_task=False)
    with pytest.raises(ValueError, match="sequence indices; splits are by sequence"):
        probe_positions({"0": hidden}, control_task=False, seeds=(0,), splits=[token_mask])
    with pytest.raises(ValueError, match=r"index sequences in \[0, 6\)"):
        probe_positions(
            {"0": hidden},
            control_task=False,
            seeds=(0,),
            splits=[SequenceSplit(train=[0, 1], val=[2], test=[9])],
        )


def test_explicit_splits_are_used():
    from nopelens.probes import SequenceSplit, probe_positions

    hidden = _linear_position_features(n_seq=8, pos=4)
    split = SequenceSplit(train=torch.tensor([0, 1, 2, 3]), val=[4], test=[5, 6, 7])
    report = probe_positions(
        {"0": hidden},
        features="hidden",
        probes="ridge",
        seeds=(0,),
        splits=[split],
        equal_dim=None,
        control_task=False,
    )
    sizes = report.per_seed[["n_train", "n_test"]].drop_duplicates()
    assert sizes.values.tolist() == [[5 * 4, 3 * 4]]
    assert report.config["splits"][0]["test"] == (5, 6, 7)


# ---------------------------------------------------------------------------------------------
# A random-init causal NoPE model
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_init_nope_embedding_is_at_chance_and_layer0_is_above(seed):
    from nopelens import build_model, random_tokens
    from nopelens.probes import probe_positions

    model = build_model(n_layers=1, d_model=32, n_heads=4, d_vocab=50, n_ctx=16, seed=seed)
    tokens = random_tokens(96, 16, 50, seed=seed)
    report = probe_positions(
        model,
        tokens,
        features=("hidden", "cosine", "variance"),
        probes=("ridge",),
        equal_dim=None,
        control_task=False,
        shuffled_control=False,
    )
    df = report.results
    assert report.config["models"] == ["given"] and report.config["given_is_random_init"]
    r2 = df[(df["metric"] == "r2")].set_index(["layer", "feature"])
    rho = df[(df["metric"] == "spearman")].set_index(["layer", "feature"])
    for feature in ("hidden", "cosine", "variance"):
        assert abs(r2.loc[("embed", feature), "value"]) < 0.02, feature
        assert r2.loc[("embed", feature), "ci_high"] < 0.05, feature
        assert abs(rho.loc[("embed", feature), "value"]) < 0.1, feature
    best_embed = r2.loc["embed", "ci_high"].max()
    cosine = r2.loc[("0", "cosine")]
    assert cosine["value"] > 0.1 and cosine["value"] > best_embed + 0.1
    assert rho.loc[("0", "cosine"), "ci_low"] > rho.loc["embed", "ci_high"].max()
    assert r2.loc[("0", "variance"), "value"] > r2.loc[("embed", "variance"), "ci_high"]


def test_control_task_selectivity_and_embedding_memorises_types(tiny_model, tiny_tokens):
    from nopelens.probes import probe_positions

    report = probe_positions(
        tiny_model,
        tiny_tokens,
        layers=0,
        features="hidden",
        probes="logistic",
        equal_dim=None,
        shuffled_control=False,
        seeds=(0, 1),
    )
    per_seed = report.per_seed
    embed = per_seed[per_seed["layer"] == "embed"].set_index(["seed", "target", "metric"])
    for seed in (0, 1):
        task = embed.loc[(seed, "position", "accuracy"), "value"]
        control = embed.loc[(seed, "control", "accuracy"), "value"]
        assert embed.loc[(seed, "position", "selectivity"), "value"] == pytest.approx(
            task - control
        )
    # the embedding is a token lookup: the type-level control task is easy, position is not
    df = report.results
    control = _row(df, layer="embed", target="control", metric="accuracy")
    assert control["value"] > 0.5
    assert _row(df, layer="embed", target="position", metric="selectivity")["value"] < -0.3


def test_model_and_its_activations_give_the_same_report(tiny_model, tiny_tokens):
    from nopelens.measure import collect_activations
    from nopelens.probes import probe_positions

    kwargs = dict(
        features=("cosine", "variance"), probes=("ridge", "isotonic"), seeds=(0, 1), equal_dim=2
    )
    from_model = probe_positions(tiny_model, tiny_tokens, **kwargs).results
    acts = collect_activations(tiny_model, tiny_tokens, sites=("embed", "resid_post"))
    from_acts = probe_positions(acts, tiny_tokens, **kwargs).results
    again = probe_positions(tiny_model, tiny_tokens, **kwargs).results
    np.testing.assert_allclose(
        from_model["value"],
        from_acts["value"],
        rtol=1e-5,
        atol=1e-6,
        err_msg="model vs Activations input",
    )
    np.testing.assert_array_equal(from_model["value"], again["value"], err_msg="same call twice")
    assert from_model[["site", "layer"]].drop_duplicates().values.tolist() == [
        ["embed", "embed"],
        ["resid_post", "0"],
        ["resid_post", "1"],
    ]


def test_trained_model_gets_a_random_init_baseline():
    from nopelens import build_model, random_tokens
    from nopelens.probes import probe_positions

    model = build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8, seed=3)
    with torch.no_grad():  # stand-in for training: the weights move away from their init
        model.blocks[0].attn.W_Q.mul_(5.0)
    report = probe_positions(
        model,
        random_tokens(12, 8, 20),
        features="variance",
        probes="isotonic",
        seeds=(0, 1),
        equal_dim=None,
    )
    assert report.config["models"] == ["given", "random_init"]
    assert report.config["given_is_random_init"] is False
    df = report.results
    assert set(df["model"]) == {"given", "random_init"}
    given = df[(df["model"] == "given") & (df["layer"] == "0")]["value"].to_numpy()
    baseline = df[(df["model"] == "random_init") & (df["layer"] == "0")]["value"].to_numpy()
    assert not np.allclose(given, baseline)
    # embedding is untouched by the perturbation: identical rows
    emb = df[df["layer"] == "embed"].groupby("model")["value"].apply(list)
    assert emb["given"] == emb["random_init"]
    no_baseline = probe_positions(
        model,
        random_tokens(12, 8, 20),
        features="variance",
        probes="isotonic",
        seeds=(0,),
        equal_dim=None,
        random_init_baseline=False,
    )
    assert no_baseline.config["models"] == ["given"]


def test_drop_first_and_compare():
    from nopelens.probes import probe_positions

    cesaro, _ = _cesaro(n_seq=24, pos=8, d_model=64)
    hidden = _linear_position_features(n_seq=24, pos=8)
    hidden[..., 1] += 8 - torch.arange(8.0)  # variance now symmetric about position 4
    report = probe_positions(
        {"a": cesaro, "b": hidden},
        features=("hidden", "variance"),
        probes=("ridge", "isotonic"),
        drop_first=True,
        equal_dim=None,
        control_task=False,
        shuffled_control=False,
    )
    df = report.results
    np.testing.assert_allclose(
        df.loc[df["metric"] == "mae", "chance"], np.abs(np.arange(1, 8) - 4).mean()
    )
    np.testing.assert_allclose(df.loc[df["metric"] == "accuracy", "chance"], 1 / 7)
    assert report.per_seed["n_test"].iloc[0] == 6 * 7
    table = report.compare("r2")
    assert table["layer"].tolist() == ["a", "b"]
    assert table.set_index("layer").loc["b", "winner"] == "hidden"
    assert table.set_index("layer").loc["a", "winner_probe"] in ("ridge", "isotonic")
    row = table.set_index("layer").loc["b"]
    assert row["margin"] > 0 and row["margin_ci_low"] <= row["margin"] <= row["margin_ci_high"]
    mae = report.compare("mae", probe="ridge")
    assert mae.set_index("layer").loc["b", "winner"] == "hidden"
    with pytest.raises(ValueError, match="no rows for metric='accuracy'"):
        report.compare("accuracy")


# ---------------------------------------------------------------------------------------------
# Estimators against scikit-learn
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": ("hidden", "bogus")}, "The 'features' parameter of probe_positions must be"),
        ({"probes": "svm"}, "The 'probes' parameter of probe_positions must be one of"),
        ({"seeds": ()}, "The 'seeds' parameter of probe_positions must be a non-empty"),
        ({"seeds": (0, 0)}, "distinct ints"),
        ({"test_fraction": 1.5}, "The 'test_fraction' parameter of probe_positions"),
        ({"val_fraction": 0.0}, "The 'val_fraction' parameter of probe_positions"),
        ({"equal_dim": 0}, "The 'equal_dim' parameter of probe_positions must be an int >= 1"),
        ({"alphas": (1.0, -1.0)}, "The 'alphas' parameter of probe_positions"),
        ({"lambdas": ()}, "The 'lambdas' parameter of probe_positions"),
        ({"max_iter": 0}, "The 'max_iter' parameter of probe_positions"),
        ({"confidence": 1.0}, "The 'confidence' parameter of probe_positions"),
        ({"control_task": True}, "needed for the control task"),
        ({"layers": ["7"]}, "must name keys of the activations mapping"),
        ({"splits": [object()]}, "The 'splits' parameter of probe_positions must be None or"),
    ],
)
def test_bad_arguments(kwargs, match):
    from nopelens.probes import probe_positions

    hidden = _linear_position_features(n_seq=8, pos=4)
    kwargs = {"control_task": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        probe_positions({"0": hidden}, **kwargs)


def test_several_bad_arguments_are_listed_at_once():
    from nopelens.probes import probe_positions

    with pytest.raises(ValueError, match=r"received 2 invalid arguments"):
        probe_positions({"0": torch.zeros(4, 4, 2)}, features="x", max_iter=-1)


def test_bad_inputs():
    from nopelens import build_model
    from nopelens.probes import probe_positions

    hidden = _linear_position_features(n_seq=8, pos=4)
    with pytest.raises(ValueError, match="must be a TransformerLens model, a nopelens Activations"):
        probe_positions(hidden)
    with pytest.raises(ValueError, match="must not be an empty mapping"):
        probe_positions({}, control_task=False)
    with pytest.raises(ValueError, match="float tensors"):
        probe_positions({"0": torch.zeros(8, 4, 2, dtype=torch.long)}, control_task=False)
    with pytest.raises(ValueError, match="NaN or infinite"):
        probe_positions({"0": hidden * float("nan")}, control_task=False)
    with pytest.raises(ValueError, match="one \\[batch pos\\] shape"):
        probe_positions({"0": hidden, "1": hidden[:, :3]}, control_task=False)
    with pytest.raises(ValueError, match="at least 3 sequences"):
        probe_positions({"0": hidden[:2]}, control_task=False)
    with pytest.raises(ValueError, match="at least 2 positions"):
        probe_positions({"0": hidden[:, :1]}, control_task=False)
    with pytest.raises(ValueError, match="activations' shape \\(8, 4\\)"):
        probe_positions({"0": hidden}, torch.zeros(8, 5, dtype=torch.long))
    model = build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=10, n_ctx=4)
    with pytest.raises(ValueError, match="'tokens' parameter of probe_positions is required"):
        probe_positions(model)
    tokens = torch.zeros(6, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="residual-stream-shaped"):
        probe_positions(model, tokens, sites="pattern")
    with pytest.raises(ValueError, match="The 'layers' parameter of probe_positions"):
        probe_positions(model, tokens, layers=3)
    with pytest.raises(ValueError, match="n_ctx is 4"):
        probe_positions(model, torch.zeros(6, 5, dtype=torch.long))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_probes_run_on_gpu_and_match_cpu():
    from nopelens.probes import probe_positions

    hidden = _linear_position_features()
    kwargs = dict(features=("hidden", "cosine"), seeds=(0,), control_task=False)
    cpu = probe_positions({"0": hidden}, **kwargs).results["value"].to_numpy()
    gpu = probe_positions({"0": hidden.cuda()}, **kwargs).results["value"].to_numpy()
    assert np.allclose(cpu, gpu, atol=0.05, equal_nan=True)
    assert math.isfinite(gpu[0])
