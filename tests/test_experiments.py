"""The paper's experiments on real training runs (digits): rows, checkpoints, labels, caching.

Values are checked against the float64 scikit-learn reference (``masc_fast.reference``) fitted
on activations recomputed here from the checkpoint the experiment should have loaded.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import masc_fast.pipeline.experiments.masc as experiments
from masc_fast.cli import main
from masc_fast.data import load_dataset
from masc_fast.data.corruption import noisy_labels
from masc_fast.models import build_model
from masc_fast.pipeline.experiments import ProbeSettings, run_experiment
from masc_fast.pipeline.results_table import RESULT_COLUMNS
from masc_fast.pipeline.runs.checkpoints import load_model_weights
from masc_fast.pipeline.runs.config import RunConfig
from masc_fast.pipeline.runs.train import train_run
from masc_fast.reference import fit_subspaces_ref, predict_ref

SETTINGS = ProbeSettings(progress=False)


def _train(path, p: float, epochs: int = 3):
    config = RunConfig("mlp", "digits", p=p, seed=0, max_epochs=epochs, checkpoint_every=1)
    train_run(config, path, progress=False)
    return path


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("runs") / "p04", 0.4)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("runs") / "p0", 0.0, epochs=2)


def _activations(run_dir, checkpoint: str, layer: str):
    """(train, test) activations of one layer, recomputed from the checkpoint file."""
    train, test = load_dataset("digits", progress=False)
    model = build_model("mlp", input_shape=train.info.input_shape, num_classes=10)
    load_model_weights(run_dir / "checkpoints" / f"{checkpoint}.safetensors", model)
    model.eval()
    inputs = [train.inputs(slice(None)), test.inputs(slice(None))]
    if model.masc_layers[layer] == "input":
        captured = [x.flatten(1) for x in inputs]
    else:
        module = dict(model.named_modules())[model.masc_layers[layer]]
        captured = []
        handle = module.register_forward_hook(lambda m, i, o: captured.append(o.flatten(1)))
        with torch.no_grad():
            for x in inputs:
                model(x)
        handle.remove()
    return captured[0].double().numpy(), captured[1].double().numpy(), train, test


def _value(rows, **where) -> float:
    match = rows
    for key, value in where.items():
        match = match[match[key] == value]
    assert len(match) == 1, where
    return float(match["value"].iloc[0])


def test_exp1_rows_follow_the_schema_and_match_the_reference(noisy_run):
    rows = run_experiment(noisy_run, "exp1", settings=SETTINGS)
    assert list(rows.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    masc = rows[rows["metric"] == "accuracy"]
    assert set(masc["subspaces"]) == {"corrupted"}
    assert set(masc["layer"]) == {"input", "fc1", "fc2", "fc3", "fc4"}
    assert set(zip(masc["split"], masc["labels"])) == {
        ("train", "corrupted"),
        ("train", "true"),
        ("test", "true"),
    }
    assert set(rows["checkpoint"]) == {"final"} and set(rows["epoch"]) == {3}

    x_train, x_test, train, test = _activations(noisy_run, "final", "fc1")
    corrupted = np.load(noisy_run / "labels.npz")["corrupted"]
    bases = fit_subspaces_ref(x_train, corrupted, 10)
    expected_test = float((predict_ref(x_test, bases) == test.labels.numpy()).mean())
    expected_train = float((predict_ref(x_train, bases) == corrupted).mean())
    got_test = _value(masc, layer="fc1", split="test")
    got_train = _value(masc, layer="fc1", split="train", labels="corrupted")
    assert abs(got_test - expected_test) <= 2 / len(x_test)  # near-ties may flip a point
    assert abs(got_train - expected_train) <= 2 / len(x_train)
    components = _value(rows[rows["metric"] == "components"], layer="fc1")
    assert abs(components - sum(b.shape[1] for b in bases)) <= 10  # ±1 per class (SPEC §9.8)


def test_exp2_uses_true_labels_and_reuses_the_probe_of_exp1(noisy_run, monkeypatch):
    run_experiment(noisy_run, "exp1", settings=SETTINGS)

    def no_probe(*args, **kwargs):
        raise AssertionError("exp2 should reuse the cached probe of exp1")

    monkeypatch.setattr(experiments, "probe_run", no_probe)
    rows = run_experiment(noisy_run, "exp2", settings=SETTINGS)
    masc = rows[rows["metric"] == "accuracy"]
    assert set(masc["subspaces"]) == {"true"}
    x_train, x_test, train, test = _activations(noisy_run, "final", "input")
    bases = fit_subspaces_ref(x_train, train.labels.numpy(), 10)
    expected = float((predict_ref(x_test, bases) == test.labels.numpy()).mean())
    assert abs(_value(masc, layer="input", split="test") - expected) <= 2 / len(x_test)


def test_probe_cache_depends_on_the_threshold(noisy_run):
    loose = run_experiment(noisy_run, "exp1", settings=ProbeSettings(variance=0.5, progress=False))
    tight = run_experiment(noisy_run, "exp1", settings=SETTINGS)
    components = lambda rows: rows[rows["metric"] == "components"]["value"].sum()  # noqa: E731
    assert components(loose) < components(tight)
    assert set(loose["variance"]) == {0.5}


def test_exp3_probes_the_clean_model_with_post_hoc_noise(clean_run):
    rows = run_experiment(clean_run, "exp3", p=0.6, settings=SETTINGS)
    assert set(rows["p"]) == {0.6} and set(rows["experiment"]) == {"exp3"}
    x_train, x_test, train, test = _activations(clean_run, "final", "input")
    config = json.loads((clean_run / "config.json").read_text())
    labels = noisy_labels(train.labels.numpy(), 0.6, 10, recipe=config["noise_recipe"], seed=0)
    assert (labels != train.labels.numpy()).mean() > 0.4  # really relabelled
    bases = fit_subspaces_ref(x_train, labels, 10)
    expected = float((predict_ref(x_train, bases) == labels).mean())
    masc = rows[rows["metric"] == "accuracy"]
    got = _value(masc, layer="input", split="train", labels="corrupted")
    assert abs(got - expected) <= 2 / len(x_train)


def test_random_init_probes_the_initialised_weights(noisy_run):
    rows = run_experiment(noisy_run, "random-init", settings=SETTINGS)
    assert set(rows["checkpoint"]) == {"init"} and set(rows["epoch"]) == {0}
    assert set(rows[rows["metric"] == "accuracy"]["subspaces"]) == {"corrupted", "true"}
    metrics = pd.read_csv(noisy_run / "metrics.csv")
    model_test = _value(rows, metric="model_accuracy", split="test")
    assert model_test == pytest.approx(
        float(metrics.loc[metrics.epoch == 0, "test_accuracy"].iloc[0])
    )


def test_early_stop_probes_the_best_checkpoint(noisy_run):
    rows = run_experiment(noisy_run, "early-stop", settings=SETTINGS)
    summary = json.loads((noisy_run / "summary.json").read_text())
    assert set(rows["epoch"]) == {summary["best_epoch"]}
    model_test = _value(rows, metric="model_accuracy", split="test")
    assert model_test == pytest.approx(summary["best_test_accuracy"])


def test_experiment_errors_name_the_problem(noisy_run, clean_run, tmp_path):
    with pytest.raises(ValueError, match="unknown experiment 'exp9'"):
        run_experiment(noisy_run, "exp9")
    with pytest.raises(ValueError, match="exp3 probes a model trained at p = 0"):
        run_experiment(noisy_run, "exp3", p=0.2)
    with pytest.raises(ValueError, match="exp3 needs the post-hoc corruption degree"):
        run_experiment(clean_run, "exp3")
    with pytest.raises(ValueError, match="uses the run's own p = 0.4"):
        run_experiment(noisy_run, "exp1", p=0.2)
    with pytest.raises(FileNotFoundError, match="no checkpoint missing.safetensors"):
        experiments.probe_run(noisy_run, checkpoint="missing", settings=SETTINGS)


def test_cli_probe_writes_rows_and_prints_the_best_layer(noisy_run, tmp_path, capsys):
    out = tmp_path / "rows.csv"
    code = main(
        ["probe", "--run", str(noisy_run), "--experiment", "exp1", "exp2", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    rows = pd.read_csv(out)
    assert set(rows["experiment"]) == {"exp1", "exp2"}
    printed = capsys.readouterr().out
    assert "MASC test" in printed and f"wrote {len(rows)} rows" in printed


def test_run_cell_trains_what_a_sweep_cell_needs(tmp_path):
    from masc_fast.pipeline.sweeps.cells import run_cell
    from masc_fast.pipeline.sweeps.run import Cell, SweepSpec

    spec = SweepSpec(
        out=tmp_path, models=("mlp",), datasets=("digits",), p=(0.2,), experiments=("exp3",),
        train={"max_epochs": 1}, probe={"progress": False},
    )  # fmt: skip
    rows = run_cell(Cell("mlp", "digits", 0.2, 0, "exp3"), spec)
    assert (tmp_path / "runs" / "mlp-digits-p0-s0" / "summary.json").exists()
    assert not (tmp_path / "runs" / "mlp-digits-p0.2-s0").exists()  # exp3 needs only p = 0
    assert set(rows["p"]) == {0.2}


# ---------------------------------------------------------------- threshold sweep and layer times

SWEEP_SETTINGS = ProbeSettings(
    thresholds=(0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1), progress=False
)


def test_threshold_sweep_rows_one_set_per_threshold(noisy_run):
    from masc_fast.pipeline.results_table import tidy_rows

    rows = run_experiment(noisy_run, "exp1", settings=SWEEP_SETTINGS)
    tidy_rows(rows)  # the schema holds
    masc = rows[rows["metric"] == "accuracy"]
    assert sorted(masc["variance"].unique()) == [0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]
    assert masc.groupby("variance").size().eq(5 * 3).all()  # layers × (split, labels)
    totals = rows[rows["metric"] == "components"].set_index(["layer", "variance"])["value"]
    per_class = rows[rows["metric"] == "class_components"]
    assert per_class.groupby(["layer", "variance"]).size().eq(10).all()
    assert per_class["class"].tolist() == list(range(10)) * (5 * 8)
    sums = per_class.groupby(["layer", "variance"])["value"].sum()
    pd.testing.assert_series_equal(sums.sort_index(), totals.sort_index(), check_names=False)
    assert set(per_class.loc[per_class["variance"] == 1.0, "value"]) == {1}
    assert rows.loc[rows["metric"] == "model_accuracy", "variance"].isna().all()

    x_train, x_test, train, test = _activations(noisy_run, "final", "fc1")
    corrupted = np.load(noisy_run / "labels.npz")["corrupted"]
    for threshold in (1, 0.5):
        bases = fit_subspaces_ref(x_train, corrupted, 10, threshold)
        expected = float((predict_ref(x_test, bases) == test.labels.numpy()).mean())
        got = _value(masc, layer="fc1", split="test", variance=threshold)
        assert abs(got - expected) <= 2 / len(x_test), threshold
        counts = per_class[(per_class["layer"] == "fc1") & (per_class["variance"] == threshold)]
        assert counts["value"].tolist() == [b.shape[1] for b in bases]
    single = run_experiment(noisy_run, "exp1", settings=SETTINGS)
    for split, labels in [("train", "corrupted"), ("test", "true")]:
        alone = _value(
            single[single["metric"] == "accuracy"], layer="fc2", split=split, labels=labels
        )
        swept = _value(masc, layer="fc2", split=split, labels=labels, variance=0.99)
        assert abs(swept - alone) <= 2 / 1000


def test_layer_time_rows_per_layer_and_split(noisy_run):
    rows = run_experiment(noisy_run, "exp2", settings=SETTINGS)
    build = rows[rows["metric"] == "build_seconds"]
    inference = rows[rows["metric"] == "inference_seconds"]
    layers = ["input", "fc1", "fc2", "fc3", "fc4"]
    assert build["layer"].tolist() == layers and set(build["subspaces"]) == {"true"}
    assert (build["value"] > 0).all() and set(build["split"]) == {"train"}
    assert sorted(zip(inference["layer"], inference["split"])) == sorted(
        (layer, split) for layer in layers for split in ("train", "test")
    )
    assert (inference["value"] > 0).all() and set(inference["labels"]) == {""}
    assert set(rows.loc[rows["metric"].str.endswith("_seconds"), "variance"]) == {0.99}
    per_class = rows[rows["metric"] == "class_components"]
    assert set(per_class["variance"]) == {0.99} and len(per_class) == 5 * 10


def test_cli_probe_thresholds(noisy_run, tmp_path, capsys):
    out = tmp_path / "sweep.csv"
    code = main(
        ["probe", "--run", str(noisy_run), "--experiment", "exp1", "--thresholds", "1", "0.5",
         "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    rows = pd.read_csv(out)
    assert set(rows.loc[rows["metric"] == "accuracy", "variance"]) == {0.5, 1.0}
    assert "variance" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["probe", "--run", str(noisy_run), "--variance", "0.9", "--thresholds", "0.5"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_probe_settings_thresholds_are_validated_and_keyed():
    settings = ProbeSettings(thresholds=[0.99, 0.5])
    assert settings.thresholds == (0.5, 0.99)
    assert settings.cache_key() != ProbeSettings().cache_key()
    assert settings.cache_key() == ProbeSettings(thresholds=(0.5, 0.99), variance=0.3).cache_key()
    with pytest.raises(ValueError, match=r"thresholds\[0\] must be > 0"):
        ProbeSettings(thresholds=[0])


def test_baselines_run_as_an_experiment(noisy_run):
    rows = run_experiment(noisy_run, "baselines", settings=SETTINGS)
    assert set(rows["experiment"]) == {"baselines"}
    assert set(rows["probe"]) == {"logistic_regression", "ncm", "knn", "lda", "qda"}
    assert "input" not in set(rows["layer"])


def test_retrain_runs_as_an_experiment_with_the_probe_settings(noisy_run, monkeypatch):
    import masc_fast.pipeline.experiments.retrain as retrain

    seen = {}

    def fake_retrain_run(run_dir, **options):
        seen.update(options, run_dir=run_dir)
        return pd.DataFrame({"experiment": ["retrain"]})

    monkeypatch.setattr(retrain, "retrain_run", fake_retrain_run)
    settings = ProbeSettings(variance=0.9, progress=False, device="cpu")
    rows = run_experiment(noisy_run, "retrain", settings=settings)
    assert list(rows["experiment"]) == ["retrain"]
    assert seen["run_dir"] == noisy_run and seen["variance"] == 0.9 and seen["device"] == "cpu"
    assert seen["variants"] == ("retrain",)
    assert seen["resume"] is False  # nothing retrained yet in this run
    run_experiment(noisy_run, "retrain-10", settings=settings)
    assert seen["variants"] == ("retrain-10",)
    with pytest.raises(ValueError, match="uses the run's own p = 0.4"):
        run_experiment(noisy_run, "retrain", p=0.8, settings=settings)


def test_probe_run_resumes_a_probe_killed_in_its_fit_pass(noisy_run, tmp_path, monkeypatch):
    import importlib

    from masc_fast.probing.fit_checkpoint import FitCheckpoint

    probe_module = importlib.import_module("masc_fast.probe")  # the package re-exports probe()
    calls = []
    monkeypatch.setattr(probe_module, "probe", lambda *a, **kw: calls.append(kw))
    store = tmp_path / "store"
    experiments.probe_run(noisy_run, settings=SETTINGS, activation_dir=store)
    store.mkdir(exist_ok=True)
    FitCheckpoint(store).manifest_path.write_text("{}")  # what a killed fit pass leaves
    experiments.probe_run(noisy_run, settings=SETTINGS, activation_dir=store)
    assert [(c["activation_dir"], c["resume"]) for c in calls] == [(store, False), (store, True)]


def test_run_experiment_leaves_no_shards_behind(noisy_run):
    run_experiment(noisy_run, "exp1", settings=ProbeSettings(variance=0.75, progress=False))
    stores = list((noisy_run / "probes").glob("*/store"))
    assert stores and not any(path.is_file() for store in stores for path in store.rglob("*"))
