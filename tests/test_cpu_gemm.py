"""Choosing the C++ ops' GEMM (:mod:`masc_fast.backends.cpu_gemm`): the switch, its errors, and
that the adapter's results do not depend on it (the ops themselves run under both GEMMs in
``test_cpp_ext.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masc_fast.backends import cpu_gemm

ext = pytest.importorskip("masc_fast._C", reason="the C++ extension is not built")
HAS_MKL = cpu_gemm.torch_mkl_gemm()[0] is not None


@pytest.fixture(autouse=True)
def default_gemm_after():
    yield
    cpu_gemm.choose_gemm(ext)


def test_scipy_choice_names_scipy():
    cpu_gemm.choose_gemm(ext, "scipy")
    assert ext.blas_source().startswith("GEMM from scipy.linalg.cython_blas")


@pytest.mark.skipif(not HAS_MKL, reason="this torch has no MKL GEMM")
def test_auto_takes_torch_mkl_where_it_is():
    cpu_gemm.choose_gemm(ext, "auto")
    assert f"torch {torch.__version__} (MKL)" in ext.blas_source()


def test_environment_variable_is_read(monkeypatch):
    monkeypatch.setenv("MASC_FAST_CPU_GEMM", "scipy")
    cpu_gemm.choose_gemm(ext)
    assert "MKL" not in ext.blas_source()


def test_unknown_choice_is_named(monkeypatch):
    monkeypatch.setenv("MASC_FAST_CPU_GEMM", "openblas")
    with pytest.raises(
        ValueError, match="MASC_FAST_CPU_GEMM must be one of auto, mkl, scipy, got 'openblas'"
    ):
        cpu_gemm.choose_gemm(ext)


def test_mkl_demanded_without_mkl_is_an_error_and_auto_falls_back(monkeypatch):
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: False)
    assert cpu_gemm.torch_mkl_gemm() == (None, "this torch build has no MKL")
    with pytest.raises(RuntimeError, match="MASC_FAST_CPU_GEMM=mkl but this torch build has no"):
        cpu_gemm.choose_gemm(ext, "mkl")
    cpu_gemm.choose_gemm(ext, "auto")
    assert ext.blas_source().startswith("GEMM from scipy")


@pytest.mark.skipif(not HAS_MKL, reason="this torch has no MKL GEMM")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_both_gemms_score_real_digits_like_float64(dtype):
    """Real rows (scikit-learn's digits) scored by the adapter under each GEMM, two workers:
    the same scores as a float64 NumPy reference within float32 rounding (or 1e-12)."""
    from sklearn.datasets import load_digits

    from masc_fast.backends import cpp_ops

    x, y = load_digits(return_X_y=True)
    bases = [np.linalg.svd(x[y == c][:80].T, full_matrices=False)[0][:, :12] for c in range(10)]
    basis = np.concatenate(bases, axis=1)
    offsets = np.arange(0, 121, 12, dtype=np.int64)
    norms = (x**2).sum(1)
    reference = np.stack([((x @ b) ** 2).sum(1) / norms for b in bases], 1)
    tolerance = 2e-6 if dtype == torch.float32 else 1e-12
    for choice in ("scipy", "mkl"):
        cpu_gemm.choose_gemm(ext, choice)
        scores, _ = cpp_ops.subspace_scores(
            torch.from_numpy(x).to(dtype),
            torch.from_numpy(basis).to(dtype),
            torch.from_numpy(offsets),
            threads=2,
            block_rows=128,
        )
        assert np.abs(scores.numpy() - reference).max() < tolerance, choice
