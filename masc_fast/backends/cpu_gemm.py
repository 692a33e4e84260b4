"""Which GEMM the C++ ops call: torch's MKL where torch exports it, else SciPy's OpenBLAS.

The extension takes every BLAS routine from SciPy (``csrc/blas.h``): it builds against no BLAS
and runs wherever SciPy does. But on Intel CPUs PyTorch's wheels carry MKL, whose single-thread
``sgemm`` ran 1.7× SciPy's OpenBLAS on the AVX-512 dev box (10 000 × 1024 by 1024 × 5120:
0.72-0.8 s against 1.2-1.4 s; ``bench/bench_floor.py`` measures the floor with torch's GEMM),
and scoring is one GEMM. ``libtorch_cpu`` exports MKL's Fortran ``sgemm_`` and ``dgemm_`` (32-bit
integers, the convention the extension uses) and ``MKL_Set_Num_Threads_Local``, which keeps each
call on the worker thread that makes it (threadpoolctl does not see torch's static MKL). SYRK
is not exported, so the Gram's diagonal blocks stay on SciPy's.

``MASC_FAST_CPU_GEMM``: ``auto`` (default: MKL when found), ``mkl`` (an error when it is not),
``scipy``.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["CHOICES", "choose_gemm", "torch_mkl_gemm"]

CHOICES = ("auto", "mkl", "scipy")
# MKL_Set_Num_Threads_Local is the C entry (by value); the lower-case export is the Fortran one.
_SYMBOLS = ("sgemm_", "dgemm_", "MKL_Set_Num_Threads_Local")


def torch_mkl_gemm() -> tuple[tuple[int, int, int] | None, str]:
    """Addresses of torch's MKL ``sgemm_``, ``dgemm_`` and ``MKL_Set_Num_Threads_Local``, or
    ``None`` with the reason they are not there."""
    if not torch.backends.mkl.is_available():
        return None, "this torch build has no MKL"
    library_dir = Path(torch.__file__).parent / "lib"
    candidates = sorted(library_dir.glob("libtorch_cpu.*"))
    if not candidates:
        return None, f"no libtorch_cpu in {library_dir}"
    try:
        library = ctypes.CDLL(str(candidates[0]))  # already loaded by torch: same handle
        addresses = [
            ctypes.cast(getattr(library, name), ctypes.c_void_p).value for name in _SYMBOLS
        ]
    except (OSError, AttributeError) as error:
        return None, f"{candidates[0].name} does not export MKL's GEMM ({error})"
    return (addresses[0], addresses[1], addresses[2]), ""


def choose_gemm(ext: ModuleType, choice: str | None = None) -> None:
    """Point the extension's GEMMs at torch's MKL or SciPy's BLAS (``choice`` or
    ``MASC_FAST_CPU_GEMM``, default ``auto``)."""
    choice = (choice or os.environ.get("MASC_FAST_CPU_GEMM", "auto")).strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"MASC_FAST_CPU_GEMM must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "scipy":
        ext.use_scipy_blas()
        return
    addresses, reason = torch_mkl_gemm()
    if addresses is None:
        if choice == "mkl":
            raise RuntimeError(f"MASC_FAST_CPU_GEMM=mkl but {reason}")
        ext.use_scipy_blas()
        return
    ext.use_gemm(*addresses, source=f"torch {torch.__version__} (MKL)")
