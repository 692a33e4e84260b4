"""Wall time and peak memory per phase of a long job (forward, Gram, eigensolve, scoring), and
wall time per layer (:class:`LayerTimer`).

:class:`PhaseClock` adds the time spent in each named phase across however many entries, and a
sampler thread (every 10 ms) attributes the process's resident memory to the phase running at
that moment; on CUDA the allocator's peak is read and reset at every phase switch. Peaks are
absolute (RSS of the whole process, bytes allocated on the device), not increments.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import torch

__all__ = ["LayerTimer", "PhaseClock", "rss_bytes"]


def rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class PhaseClock:
    """Seconds and peak RSS / GPU memory per phase; use as ``with clock: ... clock.phase(...)``."""

    def __init__(self, device: torch.device | str = "cpu", *, interval: float = 0.01):
        self.device = torch.device(device)
        self.seconds: dict[str, float] = {}
        self.peak_rss: dict[str, int] = {}
        self.peak_gpu: dict[str, int] = {}
        self._current: str | None = None
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PhaseClock:
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._note_rss()

    def _note_rss(self) -> None:
        phase = self._current
        if phase is not None:
            self.peak_rss[phase] = max(self.peak_rss.get(phase, 0), rss_bytes())

    def _cuda(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_available()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the enclosed time (and memory) towards ``name``; phases may nest."""
        outer = self._current
        if self._cuda():
            self._close_gpu(outer)
        self._current = name
        self._note_rss()
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
            self._note_rss()
            if self._cuda():
                self._close_gpu(name)
            self._current = outer

    def _close_gpu(self, phase: str | None) -> None:
        if phase is not None:
            peak = torch.cuda.max_memory_allocated(self.device)
            self.peak_gpu[phase] = max(self.peak_gpu.get(phase, 0), peak)
        torch.cuda.reset_peak_memory_stats(self.device)

    def table(self) -> pd.DataFrame:
        """One row per phase: seconds, peak_rss_mb, peak_gpu_mb (NaN without CUDA)."""
        rows = [
            {
                "phase": name,
                "seconds": seconds,
                "peak_rss_mb": self.peak_rss.get(name, 0) / 2**20,
                "peak_gpu_mb": self.peak_gpu[name] / 2**20
                if name in self.peak_gpu
                else float("nan"),
            }
            for name, seconds in self.seconds.items()
        ]
        return pd.DataFrame(rows, columns=["phase", "seconds", "peak_rss_mb", "peak_gpu_mb"])


class LayerTimer:
    """Wall seconds per key (e.g. ``(layer, label set)``), summed over however many entries.

    On a CUDA device every entry and exit synchronises the device, so a layer's queued kernels
    are charged to it rather than to whichever layer next waits on the GPU. That costs one
    stall per timed block (a few µs each, plus the lost overlap between layers); on the CPU
    nothing is synchronised.
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.seconds: dict = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def time(self, key) -> Iterator[None]:
        """Add the enclosed time to ``key``."""
        self._sync()
        started = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.add(key, time.perf_counter() - started)

    def add(self, key, seconds: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds
