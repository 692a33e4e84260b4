"""Shared test fixtures: seeding, the tolerance table, backends and devices.

Nothing here queries a GPU at import time except the one ``torch.cuda.is_available()`` call
that decides whether Triton kernels must run under the interpreter (it does not initialise
CUDA). Backends that cannot run here are skipped with the reason
``masc_fast.backends.available()`` gives, unless ``MASC_FAST_REQUIRE`` (a comma list, e.g.
``cpp,triton``) names them: then the test fails instead (CI).
"""

from __future__ import annotations

import os
import random

# Thread pools on a small shared box. torch's OpenMP threads and OpenBLAS's (NumPy/SciPy, used
# by the reference) both busy-wait after a parallel region; on 2 cores each starves the other
# and a 2 ms SVD takes 250 ms. Sleeping OpenMP threads and a single-threaded reference remove
# that without changing any result beyond summation order. Must precede the imports below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


def _has_cuda() -> bool:
    return torch.cuda.is_available()


# Without a GPU, Triton kernels can still be tested by the interpreter (STYLE habit 11).
os.environ.setdefault("TRITON_INTERPRET", "1") if not _has_cuda() else None

SEED = 1234

BACKEND_NAMES = ("torch", "cpp", "triton", "reference")

# dtype -> (atol, rtol). Scores are cos² in [0, 1], so absolute tolerances are meaningful.
# Loosening an entry needs a comment saying why (STYLE habit 9).
TOLERANCES = {
    # Unit roundoff 1.1e-16. The engine takes eigenvectors of X_kᵀX_k (which squares the
    # condition number) while the reference takes the SVD of the data, so bases differ by about
    # u · λ_1 / (λ_r − λ_{r+1}); for the spectra tested (cut-off gaps ≥ 1e-4 λ_1) that is
    # ≲ 1e-12. 1e-10 / 1e-8 leaves two orders of headroom and still catches any real error.
    torch.float64: (1e-10, 1e-8),
    # Unit roundoff 6e-8. A float32 GEMM over d ≤ 1500 features makes each projection
    # coefficient wrong by ~√d·u ≈ 2.3e-6 relative (typical, not worst case), and squaring and
    # summing r_k coefficients about doubles it. 2e-5 is ~10× that estimate; rtol 1e-4 covers
    # large projector entries. Far below any score gap that decides a label.
    torch.float32: (2e-5, 1e-4),
}
TOLERANCES[np.float64] = TOLERANCES[np.dtype(np.float64)] = TOLERANCES[torch.float64]
TOLERANCES[np.float32] = TOLERANCES[np.dtype(np.float32)] = TOLERANCES[torch.float32]


def required_backends() -> set[str]:
    """Backends named in ``MASC_FAST_REQUIRE``; a skip of one of them is a failure."""
    return {
        part.strip() for part in os.environ.get("MASC_FAST_REQUIRE", "").split(",") if part.strip()
    }


def backend_status() -> dict[str, tuple[bool, str]]:
    """``masc_fast.backends.available()``, or a per-backend probe if that call itself fails.

    The fallback keeps one broken adapter from erroring every backend test; the failure of
    ``available()`` itself is asserted in ``test_backends.py``.
    """
    from masc_fast import backends

    try:
        return backends.available()
    except Exception as exc:  # noqa: BLE001 - reported as the reason below
        status = {}
        for name in BACKEND_NAMES:
            try:
                backends.get_backend(name)
            except backends.BackendUnavailableError as unavailable:
                status[name] = (False, str(unavailable))
            except Exception as error:  # noqa: BLE001
                status[name] = (False, f"available() raised {exc!r}; {name}: {error!r}")
            else:
                status[name] = (True, "")
        return status


def skip_or_fail(name: str, reason: str) -> None:
    """Skip a test that needs ``name``, or fail it when ``MASC_FAST_REQUIRE`` names it."""
    if name in required_backends():
        pytest.fail(f"MASC_FAST_REQUIRE names {name!r} but it is unavailable: {reason}")
    pytest.skip(f"backend {name!r} unavailable: {reason}")


@pytest.fixture(autouse=True)
def _reseed():
    """Every test starts from the same random state, whatever ran before it."""
    random.seed(SEED)
    np.random.seed(SEED)  # noqa: NPY002 - the legacy global state that sklearn checks use
    torch.manual_seed(SEED)
    yield


@pytest.fixture
def tolerances():
    """The dtype -> (atol, rtol) table."""
    return TOLERANCES


@pytest.fixture(params=BACKEND_NAMES)
def backend(request) -> str:
    """Each backend that can run here; the rest skip (or fail if required)."""
    name = request.param
    usable, reason = backend_status()[name]
    if not usable:
        skip_or_fail(name, reason)
    return name


@pytest.fixture
def devices() -> list[torch.device]:
    """``cpu``, plus ``cuda`` when a GPU is present (queried here, not at import)."""
    found = [torch.device("cpu")]
    if torch.cuda.is_available():
        found.append(torch.device("cuda"))
    return found


@pytest.fixture(params=["cpu", "cuda"])
def device(request) -> torch.device:
    """One device per test; ``cuda`` skips without a GPU."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device(request.param)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled 8×8 digits (1797 × 64, float64), a small real dataset."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float64), y.astype(np.int64)
