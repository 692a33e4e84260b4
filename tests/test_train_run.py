"""train_run on digits: run directory, metrics, checkpoints, stop rule, resume and a real kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import masc_fast.pipeline.runs.train as train_run_module
from masc_fast.data import load_dataset
from masc_fast.data.corruption import corrupt_labels, noisy_labels
from masc_fast.models import MLP, build_model
from masc_fast.pipeline.runs.checkpoints import checkpoint_metadata, load_model_weights
from masc_fast.pipeline.runs.files import METRIC_COLUMNS, read_metrics
from masc_fast.pipeline.runs.train import RunConfig, RunSummary, train_run

# The paper's MLP takes ~1 s per digits epoch here; tests train a 64-32-10 one instead.
HIDDEN = (32,)
SMALL_MODEL_SOURCE = f"""
import torch
import masc_fast.pipeline.runs.train as _train_run
from masc_fast.models import MLP as _MLP

def _small_model(config, info):
    torch.manual_seed(config.seed)
    return _MLP(info.input_shape[0], info.num_classes, hidden={HIDDEN!r})

_train_run._build_model = _small_model
"""


@pytest.fixture
def small_model(monkeypatch):
    def build(config, info):
        torch.manual_seed(config.seed)
        return MLP(info.input_shape[0], info.num_classes, hidden=HIDDEN)

    monkeypatch.setattr(train_run_module, "_build_model", build)
    return build


@pytest.fixture(scope="module")
def digits_splits():
    return load_dataset("digits")


def _config(**changes) -> RunConfig:
    values = {"model": "mlp", "dataset": "digits", "p": 0.4, "seed": 1, "max_epochs": 5}
    values.update(changes)
    return RunConfig(**values)


def _run(config, run_dir, **kwargs) -> RunSummary:
    return train_run(config, run_dir, progress=False, **kwargs)


def _accuracy(model, inputs, labels) -> float:
    model.eval()
    with torch.no_grad():
        return (model(inputs).argmax(dim=1) == labels).double().mean().item()


def _without_seconds(rows):
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def _tensors(path):
    return load_file(str(path))


def _assert_same_tensors(first, second, prefixes=("model/", "optimizer/", "rng/torch")):
    """Equal weights, optimizer state and torch RNG; NumPy's and Python's global generators
    belong to the process (a child process starts with its own), so they are not compared."""
    a, b = _tensors(first), _tensors(second)
    assert a.keys() == b.keys()
    compared = [key for key in a if key.startswith(prefixes)]
    assert any(key.startswith("model/") for key in compared)
    for key in compared:
        assert torch.equal(a[key], b[key]), key


def test_train_run_writes_the_documented_layout(small_model, tmp_path):
    summary = _run(_config(checkpoint_every=2), tmp_path / "run")
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints",
        "config.json",
        "labels.npz",
        "metrics.csv",
        "recipe.json",
        "steps.csv",
        "summary.json",
    ]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.safetensors",
        "epoch_0002.safetensors",
        "epoch_0004.safetensors",
        "final.safetensors",
        "init.safetensors",
        "last.safetensors",
    ]
    assert RunConfig.from_dict(json.loads((run / "config.json").read_text())) == _config(
        checkpoint_every=2
    )
    recipe = json.loads((run / "recipe.json").read_text())["recipe"]
    assert recipe == {**_config().recipe().to_dict(), "max_epochs": 5}
    assert RunSummary.from_dict(json.loads((run / "summary.json").read_text())) == summary
    assert summary.epochs == 5 and summary.device == "cpu"
    assert summary.torch_version == torch.__version__
    assert checkpoint_metadata(run / "checkpoints" / "epoch_0004.safetensors")["epoch"] == 4
    assert checkpoint_metadata(run / "checkpoints" / "final.safetensors")["epoch"] == 5


def test_train_run_metrics_columns_and_epoch_zero_row(small_model, tmp_path, digits_splits):
    summary = _run(_config(), tmp_path / "run")
    run = tmp_path / "run"
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert header == ",".join(METRIC_COLUMNS)
    rows = read_metrics(run / "metrics.csv")
    assert [row["epoch"] for row in rows] == [0, 1, 2, 3, 4, 5]

    # Row 0: eval-mode accuracies of the initialised weights, recomputed independently.
    train, test = digits_splits
    labels = np.load(run / "labels.npz")
    init = small_model(_config(), train.info)
    x_train, x_test = train.inputs(slice(None)), test.inputs(slice(None))
    corrupted, true = torch.from_numpy(labels["corrupted"]), torch.from_numpy(labels["true"])
    assert rows[0]["test_accuracy"] == pytest.approx(_accuracy(init, x_test, test.labels))
    assert rows[0]["train_accuracy"] == pytest.approx(_accuracy(init, x_train, corrupted))
    assert rows[0]["train_accuracy_true"] == pytest.approx(_accuracy(init, x_train, true))
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(init(x_train).double(), corrupted).item()
    assert rows[0]["train_loss"] == pytest.approx(loss, rel=1e-5)

    # init.safetensors holds exactly those weights; final.safetensors gives the last row.
    loaded = MLP(64, 10, hidden=HIDDEN)
    assert load_model_weights(run / "checkpoints" / "init.safetensors", loaded).epoch == 0
    assert all(torch.equal(a, b) for a, b in zip(init.parameters(), loaded.parameters()))
    load_model_weights(run / "checkpoints" / "final.safetensors", loaded)
    assert rows[-1]["test_accuracy"] == pytest.approx(_accuracy(loaded, x_test, test.labels))
    assert summary.final_test_accuracy == rows[-1]["test_accuracy"]
    assert summary.final_train_accuracy == rows[-1]["train_accuracy"]
    assert summary.seconds == pytest.approx(sum(row["seconds"] for row in rows))


def test_train_run_true_and_corrupted_accuracy_agree_at_p0(small_model, tmp_path):
    _run(_config(p=0.0, max_epochs=3), tmp_path / "run")
    labels = np.load(tmp_path / "run" / "labels.npz")
    assert np.array_equal(labels["corrupted"], labels["true"])
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert all(row["train_accuracy"] == row["train_accuracy_true"] for row in rows)


def test_train_run_true_accuracy_differs_under_noise(small_model, tmp_path):
    _run(_config(p=0.6, max_epochs=3), tmp_path / "run")
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    # The model learns the true classes faster than the noise, so it is right more often on
    # the true labels than on the corrupted ones.
    assert all(row["train_accuracy_true"] > row["train_accuracy"] for row in rows[1:])


def test_train_run_best_checkpoint_is_argmax_of_test_accuracy(small_model, tmp_path, digits_splits):
    summary = _run(_config(p=0.8, max_epochs=6), tmp_path / "run")
    rows = read_metrics(tmp_path / "run" / "metrics.csv")[1:]
    accuracies = [row["test_accuracy"] for row in rows]
    best = 1 + int(np.argmax(accuracies))  # np.argmax returns the first maximum
    assert summary.best_epoch == best and summary.best_test_accuracy == max(accuracies)
    path = tmp_path / "run" / "checkpoints" / "best.safetensors"
    model = MLP(64, 10, hidden=HIDDEN)
    info = load_model_weights(path, model)
    assert info.epoch == best and info.metadata["metrics"]["test_accuracy"] == max(accuracies)
    _, test = digits_splits
    assert _accuracy(model, test.inputs(slice(None)), test.labels) == pytest.approx(max(accuracies))


def test_train_run_stops_at_first_epoch_reaching_target(small_model, tmp_path):
    summary = _run(_config(p=0.0, target_accuracy=0.9, max_epochs=50), tmp_path / "run")
    rows = read_metrics(tmp_path / "run" / "metrics.csv")[1:]
    assert summary.reached_target and summary.epochs == len(rows) < 50
    assert rows[-1]["train_accuracy"] >= 0.9
    assert all(row["train_accuracy"] < 0.9 for row in rows[:-1])


def test_train_run_labels_npz_holds_true_and_noisy_labels(small_model, tmp_path, digits_splits):
    train, _ = digits_splits
    for recipe in ("seeded", "paper"):
        run = tmp_path / recipe
        _run(_config(p=0.4, seed=3, noise_recipe=recipe, max_epochs=1), run)
        labels = np.load(run / "labels.npz")
        assert np.array_equal(labels["true"], train.labels.numpy())
        expected = noisy_labels(train.labels.numpy(), 0.4, 10, recipe=recipe, seed=3)
        assert np.array_equal(labels["corrupted"], expected)
        assert float(labels["p"]) == 0.4 and str(labels["recipe"]) == recipe
        assert int(labels["seed"]) == 3 and not bool(labels["strict"])
    paper = np.load(tmp_path / "paper" / "labels.npz")["corrupted"]
    assert np.array_equal(paper, corrupt_labels(train.labels.numpy(), 0.4, 10, seed=42))
    changed = np.mean(paper != train.labels.numpy())
    assert 0.25 < changed < 0.45  # p - p/K = 0.36 expected


def test_train_run_same_config_same_run_and_shuffle_matters(small_model, tmp_path):
    _run(_config(max_epochs=2), tmp_path / "a")
    _run(_config(max_epochs=2), tmp_path / "b")
    _run(_config(max_epochs=2, shuffle=False), tmp_path / "c")
    _assert_same_tensors(
        tmp_path / "a/checkpoints/final.safetensors", tmp_path / "b/checkpoints/final.safetensors"
    )
    _assert_same_tensors(
        tmp_path / "a/checkpoints/init.safetensors", tmp_path / "c/checkpoints/init.safetensors"
    )
    a = _tensors(tmp_path / "a/checkpoints/final.safetensors")
    c = _tensors(tmp_path / "c/checkpoints/final.safetensors")
    assert not torch.equal(a["model/fc1.weight"], c["model/fc1.weight"])


def test_train_run_resume_of_finished_run_does_nothing(small_model, tmp_path, monkeypatch):
    summary = _run(_config(max_epochs=2), tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.safetensors"
    stamp = last.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("a finished run must not train or load data")

    monkeypatch.setattr("masc_fast.pipeline.runs.train_prepared.train_epoch", fail)
    monkeypatch.setattr("masc_fast.data.load_dataset", fail)
    assert _run(_config(max_epochs=2), tmp_path / "run", resume=True) == summary
    assert last.stat().st_mtime_ns == stamp


def test_train_run_refuses_a_used_directory_without_resume(small_model, tmp_path):
    _run(_config(max_epochs=1), tmp_path / "run")
    with pytest.raises(FileExistsError, match=r"run directory .*run is not empty.*--resume"):
        _run(_config(max_epochs=1), tmp_path / "run")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="has no config.json"):
        _run(_config(max_epochs=1), tmp_path / "other", resume=True)


def test_train_run_resume_refuses_another_config(small_model, tmp_path):
    _run(_config(max_epochs=1), tmp_path / "run")
    with pytest.raises(ValueError, match=r"cannot resume .*p: 0.4 in the run, 0.5 now"):
        _run(_config(max_epochs=1, p=0.5), tmp_path / "run", resume=True)
    # Where it runs may change: device is not part of what a run computes.
    _run(_config(max_epochs=1, device="cpu"), tmp_path / "run", resume=True)


class Stop(Exception):
    """Stands in for a kill right after an epoch is committed."""


def _stop_after(epoch: int):
    def interrupt(row):
        if row["epoch"] == epoch:
            raise Stop

    return interrupt


def test_train_run_resume_after_an_interrupt_matches_uninterrupted(small_model, tmp_path):
    config = _config(max_epochs=4, checkpoint_every=2)
    reference = _run(config, tmp_path / "whole")

    with pytest.raises(Stop):
        _run(config, tmp_path / "cut", on_epoch=_stop_after(2))
    # Pretend the kill came right after last.safetensors: derived files are rebuilt on resume.
    for name in ("best.safetensors", "epoch_0002.safetensors"):
        (tmp_path / "cut" / "checkpoints" / name).unlink(missing_ok=True)
    (tmp_path / "cut" / "checkpoints" / ".last.abc123.safetensors").write_bytes(b"partial")
    resumed = _run(config, tmp_path / "cut", resume=True)

    for name in ("final", "last", "best", "epoch_0002", "epoch_0004", "init"):
        _assert_same_tensors(
            tmp_path / f"whole/checkpoints/{name}.safetensors",
            tmp_path / f"cut/checkpoints/{name}.safetensors",
        )
    assert not (tmp_path / "cut" / "checkpoints" / ".last.abc123.safetensors").exists()
    assert _without_seconds(read_metrics(tmp_path / "whole/metrics.csv")) == _without_seconds(
        read_metrics(tmp_path / "cut/metrics.csv")
    )
    assert (tmp_path / "whole/steps.csv").read_text() == (tmp_path / "cut/steps.csv").read_text()
    assert {**resumed.to_dict(), "seconds": 0} == {**reference.to_dict(), "seconds": 0}


def test_train_run_resume_before_the_first_epoch_starts_over(small_model, tmp_path):
    config = _config(max_epochs=2)
    _run(config, tmp_path / "whole")
    early = tmp_path / "early"
    (early / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "recipe.json", "labels.npz", "checkpoints/init.safetensors"):
        shutil.copy(tmp_path / "whole" / name, early / name)
    _run(config, early, resume=True)
    _assert_same_tensors(
        tmp_path / "whole/checkpoints/final.safetensors", early / "checkpoints/final.safetensors"
    )


def test_train_run_resume_after_the_last_epoch_only_finalises(small_model, tmp_path):
    summary = _run(_config(max_epochs=2), tmp_path / "run")
    final = tmp_path / "run" / "checkpoints" / "final.safetensors"
    reference = _tensors(final)
    final.unlink()
    (tmp_path / "run" / "summary.json").unlink()
    assert _run(_config(max_epochs=2), tmp_path / "run", resume=True) == summary
    assert [row["epoch"] for row in read_metrics(tmp_path / "run" / "metrics.csv")] == [0, 1, 2]
    again = _tensors(final)
    assert all(torch.equal(reference[key], again[key]) for key in reference)


def test_train_run_rejects_amp_without_cuda(small_model, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so amp is allowed")
    with pytest.raises(ValueError, match="amp=True .* needs a CUDA device"):
        _run(_config(max_epochs=1, amp=True, device="cpu"), tmp_path / "run")


def test_train_run_on_cuda_with_amp_resumes_to_the_same_weights(small_model, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    config = _config(max_epochs=3, amp=True, device="cuda")
    reference = _run(config, tmp_path / "whole")
    assert reference.device.startswith("cuda") and reference.epochs == 3

    with pytest.raises(Stop):
        _run(config, tmp_path / "cut", on_epoch=_stop_after(2))
    resumed = _run(config, tmp_path / "cut", resume=True)
    _assert_same_tensors(
        tmp_path / "whole/checkpoints/final.safetensors",
        tmp_path / "cut/checkpoints/final.safetensors",
    )
    assert {**resumed.to_dict(), "seconds": 0} == {**reference.to_dict(), "seconds": 0}


def test_train_run_with_the_paper_mlp(tmp_path):
    """No seam: build_model's full MLP (5.4 M weights less the MNIST input), one epoch."""
    summary = _run(_config(p=0.0, max_epochs=1), tmp_path / "run")
    model = build_model("mlp", input_shape=(64,), num_classes=10)
    info = load_model_weights(tmp_path / "run" / "checkpoints" / "final.safetensors", model)
    assert info.epoch == 1 and summary.epochs == 1
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    # One epoch of lr 0.05 SGD already learns digits far beyond the untrained ~10 %.
    assert summary.final_test_accuracy > rows[0]["test_accuracy"] + 0.2


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"p": 1.5}, ValueError, r"p must be a number in \[0, 1\]"),
        ({"seed": -1}, ValueError, "seed must be at least 0"),
        ({"checkpoint_every": 0}, ValueError, "checkpoint_every must be at least 1"),
        ({"noise_recipe": "fresh"}, ValueError, "noise_recipe must be one of"),
        ({"shuffle": 1}, TypeError, "shuffle must be True or False"),
    ],
)
def test_run_config_rejects_bad_fields(changes, error, match):
    with pytest.raises(error, match=match):
        _config(**changes)


def test_run_config_round_trips_through_json():
    config = _config(lr=0.01, data_root=Path("/data"), device="cuda:1", amp=True)
    assert config.data_root == "/data"
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"unknown RunConfig field\(s\) \['hidden'\]"):
        RunConfig.from_dict({**config.to_dict(), "hidden": 3})


@pytest.mark.slow
def test_train_run_resume_after_sigkill_is_bitwise_identical(small_model, tmp_path):
    """Kill a real training process with SIGKILL mid-run, resume, compare with a whole run."""
    config = _config(p=0.5, max_epochs=6, checkpoint_every=2)
    reference = _run(config, tmp_path / "whole")

    killed = tmp_path / "killed"
    child = (
        SMALL_MODEL_SOURCE
        + f"""
import json, time
torch.set_num_threads({torch.get_num_threads()})
from masc_fast.pipeline.runs.train import RunConfig, train_run
config = RunConfig.from_dict(json.loads({json.dumps(json.dumps(config.to_dict()))}))
# A pause after each committed epoch gives the parent time to kill between epochs 2 and 6.
train_run(config, {str(killed)!r}, progress=False, on_epoch=lambda row: time.sleep(0.4))
"""
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    process = subprocess.Popen([sys.executable, "-c", child], env=env, stderr=subprocess.PIPE)
    metrics = killed / "metrics.csv"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if metrics.is_file() and len(read_metrics(metrics)) >= 3:  # rows 0, 1, 2
                break
            time.sleep(0.02)
        assert process.poll() is None, process.stderr.read().decode()
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()
    done = max(row["epoch"] for row in read_metrics(metrics))
    assert 2 <= done < 6

    resumed = _run(config, killed, resume=True)
    final_whole = MLP(64, 10, hidden=HIDDEN)
    final_killed = MLP(64, 10, hidden=HIDDEN)
    load_model_weights(tmp_path / "whole/checkpoints/final.safetensors", final_whole)
    load_model_weights(killed / "checkpoints/final.safetensors", final_killed)
    for a, b in zip(final_whole.state_dict().values(), final_killed.state_dict().values()):
        assert torch.equal(a, b)
    _assert_same_tensors(
        tmp_path / "whole/checkpoints/last.safetensors", killed / "checkpoints/last.safetensors"
    )
    _assert_same_tensors(
        tmp_path / "whole/checkpoints/best.safetensors", killed / "checkpoints/best.safetensors"
    )
    assert _without_seconds(read_metrics(tmp_path / "whole/metrics.csv")) == _without_seconds(
        read_metrics(metrics)
    )
    assert resumed.epochs == reference.epochs == 6
    assert resumed.best_epoch == reference.best_epoch
    assert resumed.final_test_accuracy == reference.final_test_accuracy


def test_train_run_records_every_steps_loss(small_model, tmp_path):
    """steps.csv holds one loss per optimiser step (ceil(1347 / 32) = 43 per digits epoch),
    numbered across epochs, whose mean over an epoch's samples is that epoch's train_loss."""
    from masc_fast.pipeline.runs.files import read_steps

    _run(_config(max_epochs=3), tmp_path / "run")
    steps = read_steps(tmp_path / "run" / "steps.csv")
    assert steps["step"].tolist() == list(range(1, 3 * 43 + 1))
    assert steps["epoch"].tolist() == [1] * 43 + [2] * 43 + [3] * 43
    sizes = np.array([32] * 42 + [1347 - 42 * 32], dtype=np.float64)
    for row in read_metrics(tmp_path / "run" / "metrics.csv")[1:]:
        losses = steps["loss"][steps["epoch"] == row["epoch"]]
        assert np.dot(losses, sizes) / sizes.sum() == pytest.approx(row["train_loss"], rel=1e-5)


def test_memorization_measures_survive_an_interrupt(small_model, tmp_path):
    """A resumed run's memorization/ files hold the same measures as an uninterrupted run's
    (only the seconds differ), one per epoch from the initial model on."""
    from masc_fast.pipeline.runs.memorization import read_memorization

    config = _config(max_epochs=4, memorization=True, memorization_examples=200)
    _run(config, tmp_path / "whole")
    with pytest.raises(Stop):
        _run(config, tmp_path / "cut", on_epoch=_stop_after(2))
    _run(config, tmp_path / "cut", resume=True)
    whole = read_memorization(tmp_path / "whole" / "memorization")
    cut = read_memorization(tmp_path / "cut" / "memorization")
    assert [int(r["epoch"]) for r in cut] == [0, 1, 2, 3, 4]
    for a, b in zip(whole, cut, strict=True):
        for name in ("correct", "sensitivity", "critical"):
            np.testing.assert_array_equal(a[name], b[name])
