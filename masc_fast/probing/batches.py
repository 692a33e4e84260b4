"""Batch plumbing shared by the probe's fit and scoring passes: unpacking, labels, counts."""

from __future__ import annotations

import torch

from masc_fast._validation import BatchChecks, as_tensor

__all__ = ["CORRUPTED", "TRUE", "Counter", "labels_of", "unpack"]

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


def labels_of(
    checks: BatchChecks, value, num_classes: int, n: int, index: int, name: str, device
) -> torch.Tensor:
    """Labels of batch ``index`` as int64 on ``device``, checked (or queued) by ``checks``."""
    labels = checks.labels(as_tensor(value, name), num_classes, n=n, name=name, batch=index)
    return labels.to(device)


class Counter:
    """Running correct/total counts keyed by tuples of strings.

    Correct counts are summed where the predictions are (on the device) and read back only when
    asked for (:attr:`correct`, :meth:`accuracy`, :meth:`to_json`), never per batch.
    """

    def __init__(self):
        self._correct: dict = {}
        self.total: dict = {}

    def add(self, key, pred: torch.Tensor, labels: torch.Tensor) -> None:
        self._correct[key] = self._correct.get(key, 0) + (pred == labels).sum()
        self.total[key] = self.total.get(key, 0) + int(labels.numel())

    @property
    def correct(self) -> dict:
        """``{key: correct count}`` as ints."""
        return {key: int(value) for key, value in self._correct.items()}

    def accuracy(self, key) -> float:
        if not self.total.get(key):
            return float("nan")
        return int(self._correct[key]) / self.total[key]

    def to_json(self) -> list:
        correct = self.correct
        return [[*key, correct[key], self.total[key]] for key in self.total]

    @classmethod
    def from_json(cls, rows: list) -> Counter:
        counter = cls()
        for *key, correct, total in rows:
            counter._correct[tuple(key)], counter.total[tuple(key)] = correct, total
        return counter
