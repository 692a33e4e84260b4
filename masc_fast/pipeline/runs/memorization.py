"""Arpit et al.'s per-epoch measures of memorisation (ICML 2017), recorded while a run trains.

Off unless the run asks (``RunConfig.memorization``). After every epoch, on a fixed subset of
the training set (its first ``memorization_examples`` samples in dataset order, so seeds and
settings measure the same examples), in eval mode:

* ``correct``: whether the model classifies each example as its training label (per-example
  learnability is this after epoch 1, averaged over seeds; their Fig. 1);
* ``sensitivity``: the loss-sensitivity ḡ_x = ‖∂L/∂x‖₁ of each example (their Figs. 2-4;
  one backward pass: in eval mode example i's loss depends on x_i alone);
* ``critical``: on the first :data:`CSR_FRACTION` of those examples, whether an input within
  the ℓ∞ box of radius ``csr_radius`` around the example changes the model's prediction,
  searched by :data:`CSR_STEPS` projected signed-gradient steps of size radius / 4 ascending
  the loss of the predicted class, from the centre (the critical sample ratio is their mean;
  their CSR figures). The box is in the model's input units (after normalisation) and not
  clipped to the data range. The search costs about two passes per step, so it runs on a
  fifth of the examples: all measures then cost about four forward-backward passes over the
  measured examples (measured in ``seconds``; README: 0.2-0.3 of a digits epoch).

Each epoch's arrays go to ``memorization/epoch_NNNN.npz`` (written atomically before the epoch
is committed, so a resumed run rewrites any it lost) with the seconds the measures took.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from masc_fast._io import atomic_path

__all__ = [
    "CSR_FRACTION",
    "CSR_STEPS",
    "MemorizationRecorder",
    "critical_samples",
    "gini",
    "loss_sensitivity",
    "read_memorization",
]

#: Projected gradient steps of the critical-sample search.
CSR_STEPS = 10
#: Share of the measured examples the critical-sample search runs on (the first ones).
CSR_FRACTION = 0.2


def loss_sensitivity(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """‖∂L(x_i, y_i)/∂x_i‖₁ per example (cross-entropy), shape (n,), float64 on the CPU."""
    x = x.detach().clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, x)
    return gradient.flatten(1).abs().sum(dim=1).double().cpu()


def critical_samples(
    model: nn.Module, x: torch.Tensor, radius: float, *, steps: int = CSR_STEPS
) -> torch.Tensor:
    """Whether each example has an input within ``radius`` (ℓ∞) that changes the predicted
    class, found by ``steps`` signed-gradient steps (module docstring); bool (n,) on the CPU."""
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    flipped = torch.zeros_like(predicted, dtype=torch.bool)
    adversarial = x.detach().clone()
    step = radius / 4
    for _ in range(steps):
        adversarial.requires_grad_(True)
        logits = model(adversarial)
        flipped |= logits.argmax(dim=1) != predicted
        loss = nn.functional.cross_entropy(logits, predicted, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, adversarial)
        with torch.no_grad():
            adversarial = adversarial + step * gradient.sign()
            adversarial = torch.minimum(torch.maximum(adversarial, x - radius), x + radius)
    with torch.no_grad():
        flipped |= model(adversarial).argmax(dim=1) != predicted
    return flipped.cpu()


def gini(values) -> float:
    """The Gini coefficient of non-negative values: 0 when all are equal, → 1 when one holds
    everything (mean absolute difference over twice the mean)."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    if values.size == 0 or values.sum() == 0:
        return 0.0
    n = values.size
    ranks = np.arange(1, n + 1)
    return float((2 * ranks - n - 1) @ values / (n * values.sum()))


class MemorizationRecorder:
    """Measures a model after each epoch on a fixed training subset and writes the arrays."""

    def __init__(
        self,
        folder: Path,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        radius: float,
        batch_size: int = 500,
    ):
        self.folder, self.x, self.y = Path(folder), x, y
        self.radius, self.batch_size = radius, batch_size

    def record(self, model: nn.Module, epoch: int, device: torch.device) -> float:
        """Measure ``model`` (put in eval mode, then restored) and write
        ``epoch_{epoch:04d}.npz``; returns the seconds it took."""
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        parts = {"correct": [], "sensitivity": [], "critical": []}
        searched = max(1, int(len(self.y) * CSR_FRACTION))
        try:
            for start in range(0, len(self.y), self.batch_size):
                x = self.x[start : start + self.batch_size].to(device)
                y = self.y[start : start + self.batch_size].to(device)
                with torch.no_grad():
                    parts["correct"].append((model(x).argmax(dim=1) == y).cpu())
                parts["sensitivity"].append(loss_sensitivity(model, x, y))
                if start < searched:
                    parts["critical"].append(
                        critical_samples(model, x[: searched - start], self.radius)
                    )
        finally:
            model.train(was_training)
        seconds = time.perf_counter() - started
        arrays = {name: torch.cat(values).numpy() for name, values in parts.items()}
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / f"epoch_{epoch:04d}.npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, epoch=epoch, radius=self.radius, seconds=seconds, **arrays)
        return seconds


def read_memorization(folder: str | Path) -> list[dict]:
    """Every ``epoch_NNNN.npz`` of a run's ``memorization/`` folder, in epoch order."""
    records = []
    for path in sorted(Path(folder).glob("epoch_*.npz")):
        with np.load(path) as data:
            records.append({name: data[name] for name in data.files})
    return records
