"""The C++ ops under AddressSanitizer: out-of-bounds reads or writes fail the test.

The extension is rebuilt from ``CMakeLists.txt`` with ``-fsanitize=address`` into a temporary
folder, then a fresh interpreter with ``libasan`` preloaded loads that build and runs both ops
on small, awkward shapes (one row, d = 1, prime d, buckets and blocks that do not divide the
data, K = 200, no class present) and through their error paths, checking results against
NumPy. Any ASan report aborts the child and fails the test. Skips when the toolchain has no
ASan runtime, unless ``MASC_FAST_REQUIRE`` names ``asan`` (CI), then it fails.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CHILD = textwrap.dedent(
    """
    import importlib.util, sys
    import numpy as np
    from threadpoolctl import threadpool_limits

    spec = importlib.util.spec_from_file_location("masc_fast._C", sys.argv[1])
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    rng = np.random.default_rng(0)

    def offsets_of(ranks):
        return np.concatenate([[0], np.cumsum(ranks)]).astype(np.int64)

    def check_scores(n, d, ranks, block_rows, dtype):
        x = rng.standard_normal((n, d)).astype(dtype)
        basis = rng.standard_normal((d, int(sum(ranks)))).astype(dtype)
        offsets = offsets_of(ranks)
        scores, pred = ext.subspace_scores(x, basis, offsets, block_rows, 2)
        x64, b64 = x.astype(np.float64), basis.astype(np.float64)
        norms = np.sum(x64**2, 1)
        for c in range(len(ranks)):
            energy = np.sum((x64 @ b64[:, offsets[c]:offsets[c + 1]]) ** 2, 1)
            expected = np.minimum(energy / norms, 1.0)
            assert np.allclose(scores[:, c], expected, atol=1e-4), (n, d, ranks)

    def check_gram(n, d, k, bucket_rows, block_cols, x_dtype, gram_dtype):
        x = rng.standard_normal((n, d)).astype(x_dtype)
        labels = rng.integers(0, k, n).astype(np.int64)
        gram = np.zeros((k, d, d), dtype=gram_dtype)
        ext.gram_update(gram, x, labels, bucket_rows, block_cols, 2)
        x64 = x.astype(np.float64)
        for c in range(k):
            expected = x64[labels == c].T @ x64[labels == c]
            assert np.allclose(gram[c], expected, atol=1e-3 * max(1, np.abs(expected).max()))

    with threadpool_limits(limits=1, user_api="blas"):
        for dtype in (np.float32, np.float64):
            check_scores(1, 1, [1], 1, dtype)
            check_scores(1, 7, [2, 0, 3], 4, dtype)
            check_scores(37, 13, [3, 5, 1], 5, dtype)
            check_scores(129, 31, [1, 2] * 100, 16, dtype)
            scores, pred = ext.subspace_scores(
                rng.standard_normal((3, 4)).astype(dtype), np.empty((4, 0), dtype),
                np.zeros(3, np.int64), 2, 2)
            assert (pred == -1).all()
        for x_dtype, gram_dtype in ((np.float32, np.float64), (np.float64, np.float64),
                                    (np.float32, np.float32)):
            check_gram(1, 5, 3, 4, 2, x_dtype, gram_dtype)
            check_gram(40, 1, 2, 3, 1, x_dtype, gram_dtype)
            check_gram(101, 23, 1, 7, 5, x_dtype, gram_dtype)
            check_gram(400, 11, 200, 2, 4, x_dtype, gram_dtype)
    for call in (
        lambda: ext.gram_update(np.zeros((2, 3, 3)), np.ones((4, 3)),
                                np.array([0, 1, 2, 0]), 2, 2, 1),
        lambda: ext.subspace_scores(np.ones((2, 3)), np.ones((3, 2)),
                                    np.array([0, 3, 2]), 2, 1),
        lambda: ext.subspace_scores(np.ones((2, 3), np.float32), np.ones((3, 2)),
                                    np.array([0, 2]), 2, 1),
    ):
        try:
            call()
        except (TypeError, ValueError):
            pass
        else:
            raise AssertionError("bad input was accepted")
    print("ASAN-CHILD-OK")
    """
)


def _asan_required() -> bool:
    return "asan" in {p.strip() for p in os.environ.get("MASC_FAST_REQUIRE", "").split(",")}


def _unavailable(reason: str):
    (pytest.fail if _asan_required() else pytest.skip)(reason)


def _cmake() -> str | None:
    try:
        import cmake

        candidate = Path(cmake.CMAKE_BIN_DIR) / "cmake"
        if candidate.exists():
            return str(candidate)
    except (ImportError, AttributeError):
        pass
    return shutil.which("cmake")


def _runtime_library(compiler: str, name: str) -> str | None:
    try:
        path = subprocess.run(
            [compiler, f"-print-file-name={name}"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return path if os.path.isabs(path) and os.path.exists(path) else None


def _asan_preload(compiler: str) -> str | None:
    """``LD_PRELOAD`` for the child: the ASan runtime, then libstdc++.

    libstdc++ must be loaded before the extension is dlopen-ed, or ASan's ``__cxa_throw``
    interceptor finds no real symbol and the first C++ exception aborts the process.
    """
    asan = _runtime_library(compiler, "libasan.so")
    if asan is None:
        return None
    stdcxx = _runtime_library(compiler, "libstdc++.so")
    return asan if stdcxx is None else f"{asan} {stdcxx}"


@pytest.fixture(scope="module")
def asan_build(tmp_path_factory):
    pybind11 = pytest.importorskip("pybind11")
    cmake = _cmake()
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cmake is None or compiler is None:
        _unavailable(f"needs cmake and a C++ compiler (cmake={cmake}, compiler={compiler})")
    runtime = _asan_preload(compiler)
    if runtime is None:
        _unavailable(f"{compiler} has no AddressSanitizer runtime (libasan.so)")
    build = tmp_path_factory.mktemp("asan-build")
    flags = "-fsanitize=address -fno-omit-frame-pointer -g -O1"
    configure = [
        cmake,
        str(ROOT),
        f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={build}",
        "-DCMAKE_BUILD_TYPE=Debug",
        f"-DCMAKE_CXX_FLAGS={flags}",
        "-DCMAKE_MODULE_LINKER_FLAGS=-fsanitize=address",
        f"-DPython_EXECUTABLE={sys.executable}",
        "-DPYBIND11_FINDPYTHON=ON",
        f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
    ]
    for step in (configure, [cmake, "--build", ".", "-j2"]):
        result = subprocess.run(step, cwd=build, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            pytest.fail(
                f"ASan build step {step[:2]} failed:\n{result.stdout[-2000:]}\n"
                f"{result.stderr[-2000:]}"
            )
    modules = glob.glob(str(build / "_C*.so"))
    assert modules, f"the ASan build produced no module in {build}"
    return modules[0], runtime


def test_ops_run_clean_under_address_sanitizer(asan_build):
    module, runtime = asan_build
    env = dict(os.environ)
    env["LD_PRELOAD"] = runtime
    # Python's own allocations are not leaks of ours; any memory error aborts with exit != 0.
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1:halt_on_error=1"
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, module],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0 and "ASAN-CHILD-OK" in result.stdout, (
        f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )
    assert "ERROR: AddressSanitizer" not in result.stderr
