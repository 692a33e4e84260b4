"""Benchmark fixtures: machine info, peak-memory sampling, and the commit under test."""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from contextlib import contextmanager

import pytest
import torch


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak resident memory above the starting level while a block runs (sampled every 5 ms).

    torch's CPU allocations bypass tracemalloc, so the process RSS is what we measure. On CUDA
    the device's own peak counter is used as well.
    """

    def __init__(self):
        self.peak_mb = 0.0
        self.cuda_peak_mb = 0.0

    @contextmanager
    def measure(self):
        baseline = _rss_bytes()
        peak = [baseline]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_bytes())
                time.sleep(0.005)

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield self
        finally:
            stop.set()
            sampler.join()
            peak[0] = max(peak[0], _rss_bytes())
            self.peak_mb = max(self.peak_mb, (peak[0] - baseline) / 2**20)
            if torch.cuda.is_available():
                self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20


@pytest.fixture
def peak_memory():
    return PeakMemory()


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@pytest.fixture(scope="session")
def machine_info() -> dict:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else _cpu_name()
    return {
        "device": device or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "commit": _commit(),
    }


@pytest.fixture
def record(benchmark, machine_info, peak_memory):
    """``record(**fields)``: store machine, peak memory and op fields in ``extra_info``."""

    def store(**extra) -> None:
        benchmark.extra_info.update(machine_info)
        benchmark.extra_info["peak_memory_mb"] = round(peak_memory.peak_mb, 1)
        if peak_memory.cuda_peak_mb:
            benchmark.extra_info["cuda_peak_memory_mb"] = round(peak_memory.cuda_peak_mb, 1)
        benchmark.extra_info.update(extra)

    return store
