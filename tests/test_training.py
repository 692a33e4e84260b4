"""train_until on tiny problems: early stop, history, cap, and make_optimizer."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from masc_fast.data.in_memory import labelled_loader
from masc_fast.models import MLP
from masc_fast.pipeline.runs.training import TrainHistory, make_optimizer, train_until


def _tiny_problem(n=96, d=8, num_classes=3, seed=0):
    """Linearly separable blobs: any reasonable model gets them all right quickly."""
    generator = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(num_classes, d, generator=generator)
    y = torch.arange(n) % num_classes
    x = centres[y] + 0.3 * torch.randn(n, d, generator=generator)
    return x, y


def _model(d=8, num_classes=3, hidden=(32,), seed=0):
    torch.manual_seed(seed)
    return MLP(d, num_classes, hidden=hidden)


def test_train_until_reaches_target_and_stops_early():
    x, y = _tiny_problem()
    model = _model()
    history = train_until(
        model,
        labelled_loader(x, y, batch_size=16),
        optimizer=make_optimizer("sgd", model.parameters(), lr=0.05),
        max_epochs=200,
        eval_loader=labelled_loader(x, y, batch_size=32),
        progress=False,
    )
    assert isinstance(history, TrainHistory)
    assert history.reached_target
    assert history.epochs < 200
    assert history.train_accuracy[-1] == 1.0
    assert all(acc < 1.0 for acc in history.train_accuracy[:-1])
    assert history.test_accuracy is not None and len(history.test_accuracy) == history.epochs


def test_train_until_history_fields():
    x, y = _tiny_problem()
    model = _model()
    history = train_until(
        model,
        labelled_loader(x, y, batch_size=32),
        optimizer=make_optimizer("adam", model.parameters(), lr=1e-2),
        max_epochs=50,
        progress=False,
    )
    assert history.epoch == list(range(1, history.epochs + 1))
    assert len(history.train_accuracy) == len(history.train_loss) == history.epochs
    assert history.test_accuracy is None and history.final_test_accuracy is None
    assert all(0.0 <= acc <= 1.0 for acc in history.train_accuracy)
    assert all(loss >= 0.0 for loss in history.train_loss)
    assert history.final_train_accuracy == history.train_accuracy[-1]
    assert history.seconds > 0
    with pytest.raises(AttributeError):
        history.epochs = 3  # frozen


def test_train_until_respects_epoch_cap():
    # random labels on 64 points cannot be fitted in 3 epochs at this learning rate
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 8, generator=generator), torch.randint(0, 5, (64,), generator=generator)
    model = _model(num_classes=5)
    history = train_until(
        model,
        labelled_loader(x, y, batch_size=16),
        optimizer=make_optimizer("sgd", model.parameters(), lr=1e-3),
        max_epochs=3,
        progress=False,
    )
    assert history.epochs == 3 and not history.reached_target
    assert history.epoch == [1, 2, 3]


def test_train_until_lower_target_stops_sooner():
    x, y = _tiny_problem()
    runs = {}
    for target in (0.5, 1.0):
        model = _model()
        runs[target] = train_until(
            model,
            labelled_loader(x, y, batch_size=16),
            optimizer=make_optimizer("sgd", model.parameters(), lr=0.01),
            target_accuracy=target,
            max_epochs=300,
            progress=False,
        )
    assert runs[0.5].reached_target and runs[0.5].train_accuracy[-1] >= 0.5
    assert runs[0.5].epochs <= runs[1.0].epochs


def test_train_until_trains_on_loader_labels_not_true_labels():
    x, y = _tiny_problem()
    flipped = (y + 1) % 3  # a consistent relabelling the model can learn just as well
    model = _model()
    history = train_until(
        model,
        labelled_loader(x, flipped, y, batch_size=16),
        optimizer=make_optimizer("sgd", model.parameters(), lr=0.05),
        max_epochs=200,
        eval_loader=labelled_loader(x, y, batch_size=32),
        progress=False,
    )
    assert history.reached_target
    assert history.test_accuracy[-1] == 0.0  # it learnt the flipped labels


def test_train_until_evaluates_against_true_labels_when_given():
    x, y = _tiny_problem()
    flipped = (y + 1) % 3
    model = _model()
    history = train_until(
        model,
        labelled_loader(x, flipped, batch_size=16),
        optimizer=make_optimizer("sgd", model.parameters(), lr=0.05),
        max_epochs=200,
        eval_loader=labelled_loader(x, flipped, y, batch_size=32),
        progress=False,
    )
    assert history.reached_target
    assert history.test_accuracy[-1] == 0.0  # scored against y_true, not the flipped y


def test_train_until_restores_mode_and_counts_running_accuracy():
    x, y = _tiny_problem(n=10)
    model = _model()
    model.eval()
    history = train_until(
        model,
        labelled_loader(x, y, batch_size=3),
        optimizer=make_optimizer("sgd", model.parameters(), lr=1e-3),
        max_epochs=1,
        progress=False,
    )
    assert not model.training
    # n = 10: a running accuracy is a multiple of 1/10
    assert round(history.train_accuracy[0] * 10, 9).is_integer()


def test_train_until_logs_outcome(caplog):
    x, y = _tiny_problem(n=12)
    model = _model()
    with caplog.at_level(logging.INFO, logger="masc_fast.pipeline.runs.training"):
        train_until(
            model,
            labelled_loader(x, y, batch_size=4),
            optimizer=make_optimizer("sgd", model.parameters(), lr=1e-4),
            max_epochs=2,
            progress=False,
        )
    assert "stopped at the epoch cap after 2 epoch(s)" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target_accuracy": 0.0}, r"target_accuracy must be in \(0, 1\]"),
        ({"target_accuracy": 1.5}, r"target_accuracy must be in \(0, 1\]"),
        ({"max_epochs": 0}, "max_epochs must be a positive integer"),
    ],
)
def test_train_until_rejects_bad_arguments(kwargs, match):
    model = _model()
    x, y = _tiny_problem(n=6)
    with pytest.raises(ValueError, match=match):
        train_until(
            model,
            labelled_loader(x, y, batch_size=2),
            optimizer=make_optimizer("sgd", model.parameters(), lr=1e-3),
            progress=False,
            **kwargs,
        )


def test_train_until_rejects_empty_loader():
    model = _model()
    with pytest.raises(ValueError, match="yielded no samples"):
        train_until(
            model,
            [],
            optimizer=make_optimizer("sgd", model.parameters(), lr=1e-3),
            progress=False,
        )


def test_make_optimizer_builds_sgd_and_adam():
    params = list(nn.Linear(3, 2).parameters())
    sgd = make_optimizer("SGD", params, lr=0.1, momentum=0.5)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["lr"] == 0.1 and sgd.defaults["momentum"] == 0.5
    assert sgd.defaults["weight_decay"] == 0
    adam = make_optimizer("adam", params, lr=2e-4)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["betas"] == (0.9, 0.999)
    assert not adam.defaults["fused"]
    fused = make_optimizer("adam-fused", params, lr=2e-4)
    assert isinstance(fused, torch.optim.Adam) and fused.defaults["fused"]


def test_make_optimizer_fused_adam_steps_as_adam_up_to_rounding():
    torch.manual_seed(0)
    plain, fused = nn.Linear(64, 10), nn.Linear(64, 10)
    fused.load_state_dict(plain.state_dict())
    optimizers = [
        make_optimizer("adam", plain.parameters(), lr=2e-3),
        make_optimizer("adam-fused", fused.parameters(), lr=2e-3),
    ]
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    for _ in range(3):
        for model, optimizer in zip((plain, fused), optimizers):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    for a, b in zip(plain.parameters(), fused.parameters()):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "lr", "momentum", "match"),
    [
        ("rmsprop", 0.1, 0.9, "unknown optimizer 'rmsprop'"),
        ("sgd", 0.0, 0.9, "lr must be a positive number, got 0.0"),
        ("sgd", 0.1, 1.0, r"momentum must be in \[0, 1\), got 1.0"),
    ],
)
def test_make_optimizer_rejects_bad_arguments(name, lr, momentum, match):
    with pytest.raises(ValueError, match=match):
        make_optimizer(name, nn.Linear(3, 2).parameters(), lr=lr, momentum=momentum)
