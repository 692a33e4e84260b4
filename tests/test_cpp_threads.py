"""Threads of the C++ extension next to torch's and SciPy's pools, in one process.

Mixing OpenMP runtimes is a known source of clashes (two libgomp copies each with its own
pool, or a fork-unsafe mix). The extension links ``libgomp.so.1`` by SONAME, so whichever of
torch and the extension loads first provides the one runtime both use; the BLAS pool is held
to one thread while the extension's workers call it. Each check runs in a fresh interpreter so
the import order is the one under test.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

# The body every child runs after its imports: torch and the extension, interleaved, each
# checked against NumPy float64, then the loaded OpenMP runtimes counted.
_WORKLOAD = textwrap.dedent(
    """
    import re
    import numpy as np
    import torch
    from masc_fast.backends import cpp_ops

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 48))
    basis = np.linalg.qr(rng.standard_normal((48, 30)))[0]
    offsets = np.array([0, 10, 20, 30], dtype=np.int64)
    labels = rng.integers(0, 3, 600).astype(np.int64)
    ref_energy = np.stack(
        [np.sum((x @ basis[:, a:b]) ** 2, 1) for a, b in zip(offsets[:-1], offsets[1:])], 1
    )
    ref_scores = ref_energy / np.sum(x**2, 1, keepdims=True)
    ref_gram = np.stack([x[labels == c].T @ x[labels == c] for c in range(3)])
    for round_ in range(3):
        product = torch.from_numpy(x) @ torch.from_numpy(x.T)  # torch's OpenMP/MKL pool
        assert np.allclose(product.numpy(), x @ x.T, atol=1e-9)
        scores, _ = cpp_ops.subspace_scores(
            torch.from_numpy(x), torch.from_numpy(basis), torch.from_numpy(offsets), threads=2
        )
        assert np.abs(scores.numpy() - ref_scores).max() < 1e-12, round_
        gram = torch.zeros(3, 48, 48, dtype=torch.float64)
        cpp_ops.gram_update(gram, torch.from_numpy(x), torch.from_numpy(labels), threads=2)
        assert np.abs(gram.numpy() - ref_gram).max() < 1e-9, round_
    with open("/proc/self/maps") as maps:
        runtimes = sorted({line.split()[-1] for line in maps if re.search(r"/libgomp\\.so\\.1(\\.[0-9]+)*$", line)})
    print("LIBGOMP", len(runtimes), runtimes)
    """
)

_ORDERS = {
    "torch-first": "import torch\nimport masc_fast\n",
    "scipy-blas-first": "import scipy.linalg.cython_blas\nimport numpy\nimport masc_fast\n",
    # The extension's shared object loaded on its own, before torch exists in the process.
    "extension-first": textwrap.dedent(
        """
        import importlib.util, sys
        spec = importlib.util.find_spec("masc_fast")
        import glob, os
        path = glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so"))[0]
        ext_spec = importlib.util.spec_from_file_location("masc_fast._C", path)
        module = importlib.util.module_from_spec(ext_spec)
        ext_spec.loader.exec_module(module)
        sys.modules["masc_fast._C"] = module
        assert "torch" not in sys.modules
        import torch
        import masc_fast
        """
    ),
}


@pytest.fixture(scope="module")
def ext():
    try:
        return importlib.import_module("masc_fast._C")
    except ImportError as exc:
        required = "cpp" in os.environ.get("MASC_FAST_REQUIRE", "").split(",")
        (pytest.fail if required else pytest.skip)(f"masc_fast._C is not built: {exc}")


@pytest.mark.parametrize("order", list(_ORDERS))
def test_one_openmp_runtime_and_correct_results_in_one_process(ext, order):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}
    env.pop("OPENBLAS_NUM_THREADS", None)  # let the BLAS pool be multi-threaded, as users have it
    result = subprocess.run(
        [sys.executable, "-c", _ORDERS[order] + _WORKLOAD],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("LIBGOMP"))
    count = int(line.split()[1])
    if ext.has_openmp:
        assert count == 1, f"expected one libgomp.so.1 in the process, found: {line}"


def test_blas_pool_is_single_threaded_inside_calls_and_restored_after(ext):
    from threadpoolctl import threadpool_info, threadpool_limits

    from masc_fast.backends import cpp_ops

    def blas_threads():
        return {
            info["filepath"]: info["num_threads"]
            for info in threadpool_info()
            if info["user_api"] == "blas"
        }

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        with cpp_ops._single_threaded_blas():
            inside = blas_threads()
        after = blas_threads()
    assert set(inside.values()) == {1}
    assert after == before


def test_calls_leave_torch_thread_settings_alone(ext):
    from masc_fast.backends import cpp_ops

    threads = torch.get_num_threads()
    x = torch.randn(100, 20, dtype=torch.float64)
    basis = torch.linalg.qr(torch.randn(20, 6, dtype=torch.float64))[0]
    cpp_ops.subspace_scores(x, basis, torch.tensor([0, 3, 6]), threads=1)
    cpp_ops.gram_update(torch.zeros(2, 20, 20, dtype=torch.float64), x, torch.arange(100) % 2)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_changes_no_result(ext, threads):
    from masc_fast.backends import cpp_ops

    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((333, 41)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 4, 333).astype(np.int64))
    basis = torch.linalg.qr(torch.randn(41, 12))[0].contiguous()
    offsets = torch.tensor([0, 3, 7, 9, 12])
    scores_1, pred_1 = cpp_ops.subspace_scores(x, basis, offsets, threads=1)
    scores_t, pred_t = cpp_ops.subspace_scores(x, basis, offsets, threads=threads)
    assert torch.equal(scores_1, scores_t) and torch.equal(pred_1, pred_t)
    gram_1 = torch.zeros(4, 41, 41, dtype=torch.float64)
    gram_t = torch.zeros_like(gram_1)
    cpp_ops._ext().gram_update(gram_1.numpy(), x.numpy(), y.numpy(), 64, 16, 1)
    cpp_ops._ext().gram_update(gram_t.numpy(), x.numpy(), y.numpy(), 64, 16, threads)
    assert torch.equal(gram_1, gram_t)
