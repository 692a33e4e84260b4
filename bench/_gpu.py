"""Where the GPU benchmarks run: CUDA, or Triton's interpreter on the CPU as a smoke check.

``MASC_FAST_BENCH_INTERPRET=1`` runs the GPU benchmarks' code on tiny shapes on the CPU (to
check the benchmarks, not to time anything); without it and without CUDA the caller skips.
Import this before anything imports triton: it sets ``TRITON_INTERPRET`` for the smoke run.
"""

from __future__ import annotations

import os

import torch

INTERPRET = os.environ.get("MASC_FAST_BENCH_INTERPRET") == "1"
if INTERPRET:
    os.environ.setdefault("TRITON_INTERPRET", "1")

SKIP_REASON = (
    None
    if INTERPRET or torch.cuda.is_available()
    else "no CUDA device: GPU benchmarks are not run, and not estimated"
)
DEVICE = torch.device("cuda" if torch.cuda.is_available() and not INTERPRET else "cpu")
