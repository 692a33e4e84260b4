"""Arpit et al.'s measures: loss-sensitivity against finite differences, the critical sample
ratio on a linear model where the radius is analytic, the Gini coefficient, a real recorded
run, its rows and the report's figures from a results table alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from masc_fast.pipeline.experiments import run_experiment
from masc_fast.pipeline.report import build_report
from masc_fast.pipeline.runs.config import RunConfig
from masc_fast.pipeline.runs.memorization import (
    critical_samples,
    gini,
    loss_sensitivity,
    read_memorization,
)
from masc_fast.pipeline.runs.train import train_run


def test_loss_sensitivity_matches_central_differences():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0])
    got = loss_sensitivity(model, x, y)
    h = 1e-6
    for i in range(5):
        gradient = torch.zeros(6, dtype=torch.float64)
        for j in range(6):
            step = torch.zeros_like(x[i])
            step[j] = h
            up = nn.functional.cross_entropy(model((x[i] + step)[None]), y[i : i + 1])
            down = nn.functional.cross_entropy(model((x[i] - step)[None]), y[i : i + 1])
            gradient[j] = (up - down) / (2 * h)
        assert got[i].item() == pytest.approx(gradient.abs().sum().item(), rel=1e-6)


def _linear(weights, bias):
    model = nn.Linear(weights.shape[1], weights.shape[0]).double()
    with torch.no_grad():
        model.weight.copy_(weights)
        model.bias.copy_(bias)
    return model.eval()


def _analytic_radius(weights, bias, x):
    """Smallest ℓ∞ perturbation that changes a linear model's prediction:
    min over j ≠ i of (z_i − z_j) / ‖w_i − w_j‖₁, i the predicted class."""
    logits = x @ weights.T + bias
    predicted = logits.argmax(dim=1)
    radii = []
    for row, i in enumerate(predicted.tolist()):
        radii.append(
            min(
                float((logits[row, i] - logits[row, j]) / (weights[i] - weights[j]).abs().sum())
                for j in range(weights.shape[0])
                if j != i
            )
        )
    return torch.tensor(radii, dtype=torch.float64)


@pytest.mark.parametrize("classes", [2, 3])
def test_critical_samples_on_a_linear_model_follow_the_analytic_radius(classes):
    """Points whose analytic radius is below r/2 are critical (found in the search; exact for
    two classes, and for three when one rival dominates), points above r never are."""
    generator = torch.Generator().manual_seed(classes)
    weights = torch.randn(classes, 10, generator=generator, dtype=torch.float64)
    bias = torch.randn(classes, generator=generator, dtype=torch.float64)
    model = _linear(weights, bias)
    x = 3 * torch.randn(4000, 10, generator=generator, dtype=torch.float64)
    radius = 0.2
    analytic = _analytic_radius(weights, bias, x)
    critical = critical_samples(model, x, radius)
    assert not critical[analytic > radius].any()  # no flip exists: none may be claimed
    near = analytic < radius / 2
    assert near.sum() > 50 and (~near & (analytic > radius)).sum() > 50
    if classes == 2:
        assert critical[near].all()
    else:
        assert critical[near].double().mean() > 0.95
    # the ratio itself: within the band the two bounds leave
    ratio = critical.double().mean().item()
    assert (analytic < radius / 2).double().mean() <= ratio <= (analytic <= radius).double().mean()


def test_gini_of_known_distributions():
    assert gini([3.0, 3.0, 3.0, 3.0]) == pytest.approx(0.0)
    assert gini([0.0, 0.0, 0.0, 5.0]) == pytest.approx(3 / 4)  # (n − 1) / n
    values = np.random.default_rng(0).exponential(size=200)
    pairs = np.abs(values[:, None] - values[None, :]).sum()
    assert gini(values) == pytest.approx(pairs / (2 * values.size**2 * values.mean()))
    assert gini(np.zeros(4)) == 0.0


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """mlp-small on digits, three epochs, measured on the first 300 training examples."""
    folder = tmp_path_factory.mktemp("memorization") / "run"
    config = RunConfig(
        "mlp-small", "digits", p=0.4, max_epochs=3, memorization=True, memorization_examples=300
    )
    train_run(config, folder, progress=False)
    return folder


def test_a_run_records_every_epoch_from_the_initial_model(recorded):
    records = read_memorization(recorded / "memorization")
    assert [int(record["epoch"]) for record in records] == [0, 1, 2, 3]
    for record in records:
        assert record["correct"].shape == record["sensitivity"].shape == (300,)
        assert record["critical"].shape == (60,)  # the first fifth
        assert record["critical"].dtype == bool and float(record["seconds"]) > 0
        assert (record["sensitivity"] >= 0).all()


def test_memorization_rows(recorded):
    rows = run_experiment(recorded, "memorization")
    per_epoch = rows[rows["metric"] == "critical_sample_ratio"]
    assert per_epoch["epoch"].tolist() == [0, 1, 2, 3]
    assert ((per_epoch["value"] >= 0) & (per_epoch["value"] <= 1)).all()
    learnability = rows[rows["metric"] == "correct_after_epoch1"]
    assert learnability["example"].tolist() == list(range(300))
    assert set(learnability["value"]) <= {0.0, 1.0}
    first = read_memorization(recorded / "memorization")[1]
    assert learnability["value"].sum() == first["correct"].sum()
    seconds = rows[rows["metric"] == "memorization_seconds"]["value"]
    assert len(seconds) == 4 and (seconds > 0).all()
    assert set(rows["experiment"]) == {"memorization"} and set(rows["p"]) == {0.4}


def test_runs_without_measures_are_told_how_to_record_them(tmp_path):
    train_run(RunConfig("mlp-small", "digits", max_epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(FileNotFoundError, match="train the run with memorization=True"):
        run_experiment(tmp_path / "run", "memorization")


def _table() -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for mode, p in (("true", 0.0), ("random-labels", 1.0), ("gaussian", 0.0)):
        for seed in (0, 1):
            base = {
                "model": "mlp-small",
                "dataset": "digits",
                "p": p,
                "seed": seed,
                "experiment": "memorization",
                "layer": "model",
                "subspaces": "",
                "split": "train",
                "labels": "corrupted",
                "randomize": mode,
            }
            for epoch in range(4):
                for metric in ("critical_sample_ratio", "loss_sensitivity_gini"):
                    rows.append({**base, "metric": metric, "epoch": epoch, "value": rng.uniform()})
            for example in range(50):
                rows.append(
                    {
                        **base,
                        "metric": "correct_after_epoch1",
                        "example": example,
                        "value": float(rng.uniform() < 0.5),
                    }
                )
                rows.append(
                    {
                        **base,
                        "metric": "loss_sensitivity",
                        "example": example,
                        "value": rng.exponential(),
                    }
                )
    return pd.DataFrame(rows)


def test_report_draws_arpits_figures_from_a_table_alone(tmp_path):
    build_report(_table(), tmp_path / "report")
    figures = {path.stem for path in (tmp_path / "report" / "figures").glob("*.png")}
    expected = {f"mlp-small-digits-arpit-{name}" for name in ("learnability", "sensitivity", "csr")}
    assert figures == expected
