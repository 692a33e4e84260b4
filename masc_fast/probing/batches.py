"""Batch plumbing shared by the probe's fit and scoring passes: unpacking, labels, counts."""

from __future__ import annotations

import torch
from torch import nn

from masc_fast._validation import as_tensor, check_labels

__all__ = ["CORRUPTED", "TRUE", "Counter", "labels_of", "model_device", "unpack"]

CORRUPTED, TRUE = "corrupted", "true"


def unpack(batch, index: int, *, train: bool):
    """``(x, y, y_true or None)`` of a training batch, ``(x, y_true, None)`` of an evaluation one."""
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        kind = "(x, y) or (x, y, y_true)" if train else "(x, y_true)"
        raise ValueError(
            f"batch {index}: expected a tuple {kind}, got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    if train:
        return batch[0], batch[1], (batch[2] if len(batch) == 3 else None)
    return batch[0], batch[-1], None


def labels_of(value, num_classes: int, n: int, index: int, name: str, device) -> torch.Tensor:
    """Checked labels of batch ``index`` on ``device``."""
    return check_labels(as_tensor(value, name), num_classes, n=n, name=name, batch=index).to(device)


def model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


class Counter:
    """Running correct/total counts keyed by tuples of strings."""

    def __init__(self):
        self.correct: dict = {}
        self.total: dict = {}

    def add(self, key, pred: torch.Tensor, labels: torch.Tensor) -> None:
        self.correct[key] = self.correct.get(key, 0) + int((pred == labels).sum())
        self.total[key] = self.total.get(key, 0) + int(labels.numel())

    def accuracy(self, key) -> float:
        return self.correct[key] / self.total[key] if self.total.get(key) else float("nan")

    def to_json(self) -> list:
        return [[*key, self.correct[key], self.total[key]] for key in self.total]

    @classmethod
    def from_json(cls, rows: list) -> Counter:
        counter = cls()
        for *key, correct, total in rows:
            counter.correct[tuple(key)], counter.total[tuple(key)] = correct, total
        return counter
