"""How an experiment probes a run: the settings every experiment takes, and its cache key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

__all__ = ["ProbeSettings"]


@dataclass(frozen=True)
class ProbeSettings:
    """How a run is probed.

    Attributes
    ----------
    variance : float
        Explained-variance threshold t (a whole number >= 1 = components per class); unused
        when ``thresholds`` is set.
    thresholds : tuple of float, optional
        Score every threshold in it from one fit per class (:func:`masc_fast.probe`'s
        ``thresholds``, e.g. :data:`masc_fast.probing.threshold_scoring.DEFAULT_THRESHOLDS`); the
        MASC, ``components`` and ``class_components`` rows then come once per threshold.
    batch_size : int
        Rows per forward pass of the probe (does not change any result).
    bn_train_mode : bool
        Normalise every BatchNorm per sample, as the authors' train-mode, batch-1 extraction
        did (changes ResNet-18 numbers; no effect on models without BatchNorm).
    device, backend, memory_budget
        Passed to :func:`masc_fast.probe`.
    progress : bool
        progress bars.
    """

    variance: float = 0.99
    thresholds: tuple | None = None
    batch_size: int = 512
    bn_train_mode: bool = False
    device: str | None = None
    backend: str = "auto"
    memory_budget: int | str | None = None
    progress: bool = True

    def __post_init__(self):
        from masc_fast._validation import check_variance
        from masc_fast.backends import check_backend_name
        from masc_fast.probing.strategy import parse_bytes

        check_variance(self.variance)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise TypeError(f"batch_size must be a whole number, got {self.batch_size!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        check_backend_name(self.backend)
        if self.memory_budget is not None:
            parse_bytes(self.memory_budget)
        if self.thresholds is not None:  # a TOML list or any iterable: validated, sorted tuple
            from masc_fast.probing.threshold_scoring import check_thresholds

            object.__setattr__(self, "thresholds", check_thresholds(self.thresholds))

    def cache_key(self) -> str:
        """What changes a probe's numbers (not the device, bars or batch size)."""
        relevant = {"variance": self.variance, "bn_train_mode": self.bn_train_mode}
        if self.thresholds is not None:  # absent otherwise, so single-threshold keys stay put
            relevant = {"thresholds": list(self.thresholds), "bn_train_mode": self.bn_train_mode}
        return hashlib.sha1(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:10]
