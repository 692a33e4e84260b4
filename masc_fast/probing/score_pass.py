"""The probe's scoring passes: every split through the model again, every layer against every fit.

For each batch the labels and each layer's rows are checked once
(:class:`masc_fast._validation.BatchChecks`; on CUDA read back at the end of each split, not per
batch), then scored against each fitted :class:`~masc_fast.ClassSubspaces` (one threshold, by the
backend dispatcher) or its :class:`~masc_fast.probing.threshold_scoring.ThresholdScorer` (every
threshold from one projection). Correct counts and all-zero rows are summed on the device and
read once at the end.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from masc_fast._progress import progress_bar
from masc_fast._validation import BatchChecks, as_tensor
from masc_fast.probing.batches import CORRUPTED, TRUE, Counter, labels_of, unpack
from masc_fast.probing.phases import LayerTimer, PhaseClock
from masc_fast.probing.threshold_scoring import ThresholdScorer

__all__ = ["EmptySplitWarning", "ScoreOutcome", "ScorePass"]


class EmptySplitWarning(UserWarning):
    """A split's loader yielded no rows, so it has no accuracy."""


@dataclass
class ScoreOutcome:
    """What the scoring passes counted."""

    counter: Counter  # (layer, label set, split, labels scored against, threshold) -> counts
    zero_rows: dict  # (layer, split) -> all-zero rows (device sums until the passes end)
    backends: set  # backends that scored a batch
    # (layer, label set, split) -> seconds of scoring
    inference_seconds: dict = field(default_factory=dict)


class ScorePass:
    """Score ``subspaces`` ({(layer, label set): ClassSubspaces}) on every split through ``tap``.

    ``thresholds``: score every threshold from one fit per class (a ThresholdScorer per fit,
    built, and so checked, before any pass); ``None`` scores each fit at its own variance.
    """

    def __init__(self, tap, subspaces: dict, *, thresholds, backend, precision, device):
        self.tap, self.subspaces = tap, subspaces
        self.backend, self.precision, self.device = backend, precision, device
        self.num_classes = next(iter(subspaces.values())).num_classes
        self.dims = {layer: fitted.dim for (layer, _), fitted in subspaces.items()}
        self.scorers = (
            None
            if thresholds is None
            else {key: ThresholdScorer(fitted, thresholds) for key, fitted in subspaces.items()}
        )
        self.timer = LayerTimer(device)
        self.checks = BatchChecks()

    def cuts(self, variance: float) -> dict:
        """(layer, label set) -> [(threshold, ClassSubspaces cut at it)]."""
        if self.scorers is None:
            return {key: [(variance, fitted)] for key, fitted in self.subspaces.items()}
        return {key: list(scorer.subspaces_at.items()) for key, scorer in self.scorers.items()}

    def run(
        self,
        splits: dict,
        model_counter: Counter,
        clock: PhaseClock,
        *,
        progress: bool,
        warn_empty: bool = True,
    ):
        """Score every split; the model's own test accuracy goes into ``model_counter``.
        ``warn_empty``: warn about a split without rows (a distributed probe asks every
        rank's total instead)."""
        outcome = ScoreOutcome(Counter(), {}, set(), self.timer.seconds)
        for split, loader in splits.items():
            bar = progress_bar(
                desc=f"probe: score {split}", unit="rows", unit_scale=True, disable=not progress
            )
            rows = 0
            try:
                for index, batch in enumerate(loader):
                    rows += self._batch(split, index, batch, outcome, model_counter, clock, bar)
                self.checks.raise_pending()
            except (ValueError, TypeError) as error:  # name the split the batch came from
                raise type(error)(f"split {split!r}: {error}") from error
            finally:
                bar.close()
            if rows == 0 and warn_empty:
                warnings.warn(
                    f"probe: split {split!r} yielded no rows; the table has no rows for it",
                    EmptySplitWarning,
                    stacklevel=3,
                )
        outcome.zero_rows = {key: int(count) for key, count in outcome.zero_rows.items()}
        return outcome

    def _labels(self, split, index, y, y_true, n):
        checks, classes, device = self.checks, self.num_classes, self.device
        if split != "train":
            return {TRUE: labels_of(checks, y, classes, n, index, "labels", device)}
        label_sets = {CORRUPTED: labels_of(checks, y, classes, n, index, "labels", device)}
        if y_true is not None:
            label_sets[TRUE] = labels_of(checks, y_true, classes, n, index, "true labels", device)
        return label_sets

    def _batch(self, split, index, batch, outcome, model_counter, clock, bar) -> int:
        """Score one batch of ``split``; returns its rows."""
        x, y, y_true = unpack(batch, index, train=split == "train")
        with clock.phase("forward"):
            output, activations = self.tap.forward(as_tensor(x, "x", device=self.device))
        n = output.shape[0]
        bar.update(n)
        label_sets = self._labels(split, index, y, y_true, n)
        if split != "train" and output.ndim == 2 and output.shape[1] == self.num_classes:
            model_counter.add((split, TRUE), output.argmax(dim=1), label_sets[TRUE])
        for layer, act in activations.items():
            self.checks.activations(act, layer=layer, batch=index, dim=self.dims.get(layer))
            zero = (~act.any(dim=1)).sum()
            outcome.zero_rows[(layer, split)] = outcome.zero_rows.get((layer, split), 0) + zero
        with clock.phase("scoring"):
            for (layer, fitted_on), fitted in self.subspaces.items():
                bar.set_postfix_str(f"layer {layer}", refresh=False)
                with self.timer.time((layer, fitted_on, split)):
                    ran, predictions = self._predict(layer, fitted_on, fitted, activations[layer])
                    outcome.backends.add(ran)
                    for threshold, pred in predictions:
                        for name, labels in label_sets.items():
                            key = (layer, fitted_on, split, name, threshold)
                            outcome.counter.add(key, pred, labels)
        return n

    def _predict(self, layer, fitted_on, fitted, act):
        """The backend that ran and [(threshold, predictions)] of one layer's checked rows
        against one fit."""
        if self.scorers is None:
            result = fitted.score_validated(act, backend=self.backend, precision=self.precision)
            return result.backend, [(fitted.variance, result.pred)]
        swept = self.scorers[(layer, fitted_on)].score_validated(act, precision=self.precision)
        # the prefix-sum scoring is plain torch (threshold_scoring)
        return "torch", list(zip(swept.thresholds, swept.pred))
