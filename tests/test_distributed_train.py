"""Training on two gloo ranks (DistributedDataParallel, each rank its part of every batch)
against one process; a rank that dies and the resume; and the CLI under torchrun: train,
probe and a sweep, against the same commands in one process."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from masc_fast.pipeline.runs.checkpoints import load_model_weights
from masc_fast.pipeline.runs.config import RunConfig
from masc_fast.pipeline.runs.files import read_steps
from masc_fast.pipeline.runs.train import train_run
from masc_fast.testing.ranks import run_ranks, values
from tests._grids import digits_grid

pytestmark = pytest.mark.slow

# mlp-small on digits: no dropout, no batch norm, so one and two processes differ only in
# the order of float sums (the README's "identical metrics" conditions).
CONFIG = RunConfig("mlp-small", "digits", p=0.2, seed=3, max_epochs=2)


def _metrics(run_dir):
    return pd.read_csv(run_dir / "metrics.csv")


def _weights(run_dir):
    from masc_fast.models import build_model

    model = build_model("mlp-small", input_shape=(64,), num_classes=10)
    load_model_weights(run_dir / "checkpoints" / "final.safetensors", model)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _assert_same_training(run_dir, expected_dir):
    """Losses within 1e-5 (relative), accuracies within one sample, weights within 1e-4."""
    got, want = _metrics(run_dir), _metrics(expected_dir)
    assert list(got["epoch"]) == list(want["epoch"]) == [0, 1, 2]
    for column in ("train_loss",):
        assert ((got[column] - want[column]).abs() <= 1e-5 * want[column].abs()).all(), column
    for column in ("train_accuracy", "train_accuracy_true"):
        assert ((got[column] - want[column]).abs() <= 1.5 / 1347).all(), column
    assert ((got["test_accuracy"] - want["test_accuracy"]).abs() <= 1.5 / 450).all()
    steps, expected_steps = (
        read_steps(run_dir / "steps.csv"),
        read_steps(expected_dir / "steps.csv"),
    )
    assert len(steps["loss"]) == len(expected_steps["loss"]) == 2 * 43  # 43 batches of 32
    torch.testing.assert_close(
        torch.tensor(steps["loss"]),
        torch.tensor(expected_steps["loss"]),
        rtol=1e-4,
        atol=1e-6,
    )
    torch.testing.assert_close(_weights(run_dir), _weights(expected_dir), rtol=0, atol=1e-4)


def _train(rank, run_dir, die_after):
    def on_epoch(row):
        if rank == 1 and die_after is not None and row["epoch"] == die_after:
            os._exit(3)

    summary = train_run(
        CONFIG, run_dir, resume=die_after is None and (run_dir / "config.json").exists(),
        progress=False, on_epoch=on_epoch,
    )  # fmt: skip
    return summary.to_dict()


def test_two_ranks_train_like_one_process_and_resume_after_a_dead_rank(tmp_path):
    single = tmp_path / "single"
    train_run(CONFIG, single, progress=False)
    two = tmp_path / "two"
    summaries = values(run_ranks(_train, two, None, folder=tmp_path / "ranks"))
    for summary in summaries:
        summary.pop("seconds")  # each rank's own clock
    assert summaries[0] == summaries[1]
    _assert_same_training(two, single)
    # Only rank 0 wrote: one set of files, no leftovers from rank 1.
    assert not [path for path in two.rglob("*") if path.name.startswith((".", "tmp"))]
    # A rank that dies after epoch 1's commit: the other stops with a clear error, and the
    # same job resumed ends where the uninterrupted one did.
    killed = tmp_path / "killed"
    outcomes = run_ranks(_train, killed, 1, folder=tmp_path / "dies", group_timeout=30)
    assert outcomes[1].exitcode == 3
    assert outcomes[0].error is not None and outcomes[0].error[0] == "RankFailure"
    assert "--resume" in outcomes[0].error[1] and outcomes[0].seconds < 60
    assert not (killed / "summary.json").exists()
    values(run_ranks(_train, killed, None, folder=tmp_path / "resumed"))
    _assert_same_training(killed, single)


def _torchrun(*argv, cwd):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    # "--": torchrun's own parser would read --p and --run as its --print-completion and
    # --run-path (abbreviations); after "--" it passes everything on
    command += ["--nproc_per_node", "2", "-m", "masc_fast.cli", "--", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_cli_train_probe_and_sweep_under_torchrun(tmp_path):
    from masc_fast.cli.main import main

    run = tmp_path / "run"
    argv = ["train", "--model", "mlp-small", "--dataset", "digits", "--p", "0.2", "--seed", "3"]
    argv += ["--max-epochs", "2", "--no-progress"]
    out = _torchrun(*argv, "--out", str(run), cwd=tmp_path)
    assert out.count("mlp-small/digits p=0.2 seed=3") == 1  # rank 1 prints nothing
    single = tmp_path / "single"
    assert main([*argv, "--out", str(single)]) == 0
    _assert_same_training(run, single)
    # The probe of the two-rank run, under torchrun, equals the one-process probe of it.
    probe = ["probe", "--run", str(run), "--experiment", "exp1", "--no-progress"]
    _torchrun(*probe, cwd=tmp_path)
    distributed = pd.read_csv(run / "results.csv")
    assert main([*probe, "--out", str(tmp_path / "local.csv")]) == 0
    local = pd.read_csv(tmp_path / "local.csv")
    keys = [c for c in local.columns if c != "value"]
    merged = local.merge(distributed, on=keys, suffixes=("", "_ranks"), validate="one_to_one")
    assert len(merged) == len(local) == len(distributed)
    counts = merged["metric"].isin(["components", "class_components"])
    assert (merged.loc[counts, "value"] == merged.loc[counts, "value_ranks"]).all()
    accuracy = merged["metric"] == "accuracy"
    assert (merged.loc[accuracy, "value"] - merged.loc[accuracy, "value_ranks"]).abs().max() <= 1e-4
    # A one-cell sweep under torchrun: every rank trains and probes the cell, rank 0 writes.
    grid = digits_grid(
        tmp_path,
        out="grid-out",
        p=[0.2],
        seeds=[3],
        experiments=["exp1"],
        train={"max_epochs": 2},
        probe={"progress": False},
    )
    _torchrun("sweep", str(grid), "--no-progress", cwd=tmp_path)
    table = pd.read_csv(tmp_path / "grid-out" / "results" / "results.csv")
    swept_run = tmp_path / "grid-out" / "runs" / "mlp-small-digits-p0.2-s3"
    _assert_same_training(swept_run, single)
    assert set(table["experiment"]) == {"exp1"} and (table["metric"] == "accuracy").any()


def _retrain(rank, run_dir, retrain_dir):
    from masc_fast.pipeline.experiments import ProbeSettings, run_experiment
    from masc_fast.pipeline.experiments.retrain import retrain_run

    baselines = run_experiment(run_dir, "baselines", settings=ProbeSettings(progress=False))
    retrained = retrain_run(
        run_dir, variants=("retrain-10",), max_epochs=2, retrain_dir=retrain_dir, progress=False
    )
    return retrained, baselines


def test_retrain_and_baselines_on_two_ranks_equal_one_process(tmp_path):
    """Retraining: the relabelling probe is distributed (same relabels), the fine-tuning DDP
    (same metrics up to float order), rank 0 writes the work folders. Baselines: rank 0's
    rows on both ranks."""
    from masc_fast.pipeline.experiments.retrain import retrain_run

    run = tmp_path / "run"
    train_run(CONFIG, run, progress=False)
    single = retrain_run(
        run, variants=("retrain-10",), max_epochs=2, retrain_dir=tmp_path / "one", progress=False
    )
    outcomes = values(run_ranks(_retrain, run, tmp_path / "two", folder=tmp_path / "ranks"))
    # the baselines: fitted on rank 0 alone, its rows on every rank
    from masc_fast.pipeline.experiments import ProbeSettings, run_experiment

    baselines = run_experiment(run, "baselines", settings=ProbeSettings(progress=False))
    pd.testing.assert_frame_equal(outcomes[0][1], outcomes[1][1])  # rank 0's, timings too
    accuracy = baselines["metric"] == "accuracy"
    assert accuracy.sum() > 0
    pd.testing.assert_frame_equal(outcomes[0][1][accuracy], baselines[accuracy])
    for table, _ in outcomes:
        keys = [c for c in single.columns if c != "value"]
        merged = single.merge(table, on=keys, suffixes=("", "_ranks"), validate="one_to_one")
        assert len(merged) == len(single) == len(table)
        close = (merged["value"] - merged["value_ranks"]).abs() <= 1.5 / 450 + 1e-6
        assert close.all(), merged[~close]
    for which in ("corrupted", "true"):
        one = (tmp_path / "one" / f"retrain-10-{which}" / "relabels.npz").read_bytes()
        two = (tmp_path / "two" / f"retrain-10-{which}" / "relabels.npz").read_bytes()
        assert len(one) > 0 and one == two  # the same relabels, written once
