"""probe_positions: synthetic oracles, controls, a random-init NoPE model, bad input, GPU."""

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
    "split",
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
    "interval",
    "init_seeds",
    "split_seeds",
]


def test_linear_position_features_are_decoded_and_shuffled_labels_are_not(linear_features, row):
    from nopelens.probes import probe_positions

    hidden = linear_features()
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
    r2 = row(df, probe="ridge", target="position", metric="r2", **common)
    assert r2["value"] > 0.99 and r2["n_seeds"] == 3
    assert row(df, probe="ridge", target="position", metric="spearman", **common)["value"] > 0.99
    mae = row(df, probe="ridge", target="position", metric="mae", **common)
    assert mae["value"] < 0.1 and mae["chance"] == 16 / 4
    acc = row(df, probe="logistic", target="position", metric="accuracy", **common)
    assert acc["value"] > 0.9 and acc["chance"] == 1 / 16
    mad = row(df, probe="logistic", target="position", metric="mad", **common)
    # MAD chance: predictions independent of the labels; this probe's predictions are nearly
    # uniform, so it is nearly Haviv's uniform-guess (n^2 - 1) / (3n) (exact only when uniform)
    assert mad["value"] < 0.2 and mad["chance"] == pytest.approx((16**2 - 1) / (3 * 16), rel=0.01)

    shuffled_r2 = row(df, probe="ridge", target="shuffled", metric="r2", **common)
    assert abs(shuffled_r2["value"]) < 0.03
    shuffled_rho = row(df, probe="ridge", target="shuffled", metric="spearman", **common)
    assert abs(shuffled_rho["value"]) < 0.1
    shuffled_acc = row(df, probe="logistic", target="shuffled", metric="accuracy", **common)
    assert abs(shuffled_acc["value"] - 1 / 16) < 0.04
    assert shuffled_acc["ci_low"] <= 1 / 16 + 0.02


def test_cesaro_variance_decodes_position_and_iid_variance_does_not(cesaro_states, row):
    from nopelens.probes import probe_positions

    cesaro, iid = cesaro_states()
    report = probe_positions(
        {"cesaro": cesaro, "iid": iid},
        features="variance",
        probes=("ridge", "isotonic"),
        equal_dim=3,
        control_task=False,
        shuffled_control=False,
    )
    df = report.results
    iso = row(df, layer="cesaro", probe="isotonic", target="position", metric="r2")
    assert iso["value"] > 0.6 and iso["ci_low"] > 0.4
    rho = row(df, layer="cesaro", probe="isotonic", target="position", metric="spearman")
    assert rho["value"] > 0.9
    # k = 3 polynomial features of the log-variance (capacity-matched rows) decode too
    poly = row(
        df, layer="cesaro", probe="ridge", capacity="matched", target="position", metric="r2"
    )
    assert poly["dim"] == 3 and poly["value"] > 0.6
    for probe in ("isotonic", "ridge"):
        for capacity in ("full",) if probe == "isotonic" else ("full", "matched"):
            null = row(
                df, layer="iid", probe=probe, capacity=capacity, target="position", metric="r2"
            )
            assert null["value"] < 0.05, (probe, capacity, null["value"])
    assert (
        abs(row(df, layer="iid", probe="isotonic", target="position", metric="spearman")["value"])
        < 0.15
    )


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


def test_control_task_selectivity_and_embedding_memorises_types(tiny_model, tiny_tokens, row):
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
    control = row(df, layer="embed", target="control", metric="accuracy")
    assert control["value"] > 0.5
    assert row(df, layer="embed", target="position", metric="selectivity")["value"] < -0.3


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
def test_bad_arguments(kwargs, match, linear_features):
    from nopelens.probes import probe_positions

    hidden = linear_features(n_seq=8, pos=4)
    kwargs = {"control_task": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        probe_positions({"0": hidden}, **kwargs)


def test_several_bad_arguments_are_listed_at_once():
    from nopelens.probes import probe_positions

    with pytest.raises(ValueError, match=r"received 2 invalid arguments"):
        probe_positions({"0": torch.zeros(4, 4, 2)}, features="x", max_iter=-1)


def test_bad_inputs(linear_features):
    from nopelens import build_model
    from nopelens.probes import probe_positions

    hidden = linear_features(n_seq=8, pos=4)
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
def test_probes_run_on_gpu_and_match_cpu(linear_features):
    from nopelens.probes import probe_positions

    hidden = linear_features()
    tokens = torch.randint(0, 20, hidden.shape[:2], generator=torch.Generator().manual_seed(0))
    kwargs = dict(features=("hidden", "cosine"), seeds=(0,))
    cpu = probe_positions({"0": hidden}, tokens, **kwargs).results
    # CUDA activations with the token ids on the CPU (the control task's labels move over)
    gpu = probe_positions({"0": hidden.cuda()}, tokens, **kwargs).results
    mlp = probe_positions({"0": hidden.cuda()}, tokens.cuda(), probes="mlp", **kwargs).results
    assert mlp["value"].notna().all() and set(mlp["probe"]) == {"mlp"}
    keys = ["feature", "capacity", "probe", "target", "metric"]
    assert cpu[keys].equals(gpu[keys])
    ridge = (cpu["probe"] == "ridge").to_numpy()
    # closed form: float noise only (it reorders the near-constant shuffled-label predictions)
    np.testing.assert_allclose(
        gpu["value"][ridge], cpu["value"][ridge], atol=2e-3, err_msg="ridge: GPU vs CPU"
    )
    # 20 L-BFGS steps per penalty do not converge at the weakest penalties: float differences
    # move the logistic path. Accuracy stays close; which wrong class is picked (the MAD) does
    # not (cosine features, lambda 1e-6 on an H200: MAD 3.09 on CPU, 2.18 on GPU).
    accuracy = (cpu["metric"] == "accuracy").to_numpy()
    np.testing.assert_allclose(
        gpu["value"][accuracy], cpu["value"][accuracy], atol=0.05, err_msg="logistic accuracy"
    )
    assert math.isfinite(gpu["value"].iloc[0])
