"""Arpit et al.'s regularisers: parsing, dropout in the MLPs, weight decay, input noise, the
sweep axis, a real regularised run and the report's figure from a results table alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from masc_fast.models import build_model
from masc_fast.pipeline.experiments import run_experiment
from masc_fast.pipeline.report import build_report
from masc_fast.pipeline.report.figures_arpit import regularization_figure
from masc_fast.pipeline.runs.config import RunConfig, parse_regularization
from masc_fast.pipeline.runs.passes import train_epoch
from masc_fast.pipeline.runs.train import train_run
from masc_fast.pipeline.runs.training import make_optimizer
from masc_fast.pipeline.sweeps.grid import load_sweep
from tests._grids import digits_grid, model_row


def test_parse_regularization():
    assert parse_regularization("none") == {}
    assert parse_regularization("dropout=0.5+input_noise=0.2+weight_decay=5e-4") == {
        "dropout": 0.5,
        "input_noise": 0.2,
        "weight_decay": 5e-4,
    }
    for bad, match in [
        ("dropout=1", r"dropout must be in \(0, 1\)"),
        ("l2=0.1", "is not one of dropout=X"),
        ("weight_decay=0", "weight_decay must be > 0"),
        ("dropout=0.1+dropout=0.2", "each once"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_regularization(bad)
    with pytest.raises(ValueError, match="dropout is built into the MLPs"):
        RunConfig("cnn", "mnist", regularization="dropout=0.5")


def test_mlp_dropout_acts_in_training_only():
    torch.manual_seed(0)
    plain = build_model("mlp-1x512", input_shape=(64,), num_classes=10)
    dropped = build_model("mlp-1x512", input_shape=(64,), num_classes=10, dropout=0.5)
    dropped.load_state_dict(plain.state_dict())  # same parameters, nothing else to load
    x = torch.randn(8, 64)
    plain.eval(), dropped.eval()
    assert torch.equal(plain(x), dropped(x))
    dropped.train()
    assert not torch.equal(dropped(x), dropped(x))
    assert dropped.masc_layers == plain.masc_layers
    with pytest.raises(ValueError, match="dropout is built into the MLPs only"):
        build_model("cnn", input_shape=(1, 28, 28), num_classes=10, dropout=0.5)


def test_weight_decay_reaches_the_optimizer():
    layer = torch.nn.Linear(3, 2)
    for name in ("sgd", "adam", "adam-fused"):
        optimizer = make_optimizer(name, layer.parameters(), 0.1, weight_decay=1e-3)
        assert optimizer.param_groups[0]["weight_decay"] == 1e-3


def test_input_noise_perturbs_the_training_inputs():
    x, y = torch.randn(64, 5), torch.randint(0, 2, (64,))
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    losses = {}
    for noise in (0.0, 0.5):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        losses[noise] = train_epoch(model, batches, optimizer, input_noise=noise).step_losses
    assert losses[0.0][0] != losses[0.5][0]  # the first step already sees noisy inputs
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 2)
    again = train_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.1)).step_losses
    assert again == losses[0.0]


def test_a_regularised_run_names_its_regularisation(tmp_path):
    config = RunConfig(
        "mlp-small",
        "digits",
        p=0.4,
        max_epochs=2,
        regularization="dropout=0.3+input_noise=0.1+weight_decay=0.001",
    )
    assert config.to_dict()["regularization"] == config.regularization
    train_run(config, tmp_path / "run", progress=False)
    rows = run_experiment(tmp_path / "run", "learning-curves")
    assert set(rows["regularization"]) == {config.regularization}


def test_sweep_regularization_axis(tmp_path):
    grid = digits_grid(
        tmp_path, p=[0.4], regularization=["none", "dropout=0.5", "weight_decay=0.0005"]
    )
    ids = [cell.cell_id for cell in load_sweep(grid).cells()]
    assert ids == [
        "mlp-small-digits-p0.4-s0-exp1",
        "mlp-small-digits-p0.4-s0-dropout=0.5-exp1",
        "mlp-small-digits-p0.4-s0-weight_decay=0.0005-exp1",
    ]
    grid.write_text(grid.read_text().replace('"dropout=0.5"', '"dropout=2"'))
    with pytest.raises(ValueError, match=r"sweep.regularization: .*dropout must be in"):
        load_sweep(grid)


def _table() -> pd.DataFrame:
    rows = []
    for regularization, drop in (("none", 0.0), ("dropout=0.5", 0.2), ("weight_decay=0.001", 0.1)):
        for seed in (0, 1):
            for p in (0.0, 0.4, 0.8):
                rows.append(
                    model_row(
                        p=p,
                        seed=seed,
                        split="test",
                        labels="true",
                        metric="test_error",
                        value=p * (0.9 - drop) + 0.01 * seed,
                        regularization=regularization,
                    )
                )
                rows.append(
                    {
                        **rows[-1],
                        "split": "train",
                        "labels": "corrupted",
                        "metric": "steps_to_fit",
                        "value": 100 + 200 * p + seed,
                    }
                )
    return pd.DataFrame(rows)


def test_regularisation_figure_and_the_report_from_a_table_alone(tmp_path):
    figure = regularization_figure(_table())
    lines = {bars.get_label(): bars.lines[0] for bars in figure.axes[0].containers}
    assert set(lines) == {"none", "dropout=0.5", "weight_decay=0.001"}
    accuracy = lines["dropout=0.5"].get_ydata()  # 1 − mean error over the two seeds
    np.testing.assert_allclose(
        accuracy, [1 - 0.005, 1 - (0.4 * 0.7 + 0.005), 1 - (0.8 * 0.7 + 0.005)]
    )
    build_report(_table(), tmp_path / "report")  # Zhang's figures read the unregularised runs
    figures = {path.stem for path in (tmp_path / "report" / "figures").glob("*.png")}
    assert figures == {
        "mlp-small-digits-arpit-regularization",
        "mlp-small-digits-zhang1b",
        "mlp-small-digits-zhang1c",
    }
