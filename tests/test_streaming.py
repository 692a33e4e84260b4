"""Tests of masc_fast.probing.streaming (chunk sizing, the host→device chunk stream) and of
masc_fast.probing.streamed_scoring.

The CPU route runs everywhere; the CUDA routes (pinned staging with a copy stream, CuPy mapped
memory) run only where a GPU (and CuPy) is present and skip otherwise.
"""

from __future__ import annotations

import subprocess
import sys
import types
from functools import partial

import numpy as np
import pytest
import torch
from _compare import assert_close_report, assert_labels_match
from conftest import TOLERANCES

from masc_fast import ClassSubspaces, GramAccumulator
from masc_fast.probing.streamed_scoring import score_streamed
from masc_fast.probing.streaming import HostChunkStream, chunk_rows
from masc_fast.testing.synthetic import structured_classes

NUM_CLASSES, DIM = 5, 24


def _needs_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


@pytest.fixture(scope="module")
def fitted() -> tuple[ClassSubspaces, torch.Tensor]:
    """Subspaces fitted on structured rows, and fresh rows of the same classes to score."""
    x, y = structured_classes(600, DIM, NUM_CLASSES, rank=4, noise=0.05, seed=3)
    accumulator = GramAccumulator(NUM_CLASSES, DIM)
    accumulator.update(x, y)
    rows, _ = structured_classes(203, DIM, NUM_CLASSES, rank=4, noise=0.05, seed=4)
    return accumulator.fit(variance=0.9), rows


def _collect(stream) -> tuple[list[int], list[torch.Tensor]]:
    starts, chunks = [], []
    for start, chunk in stream:
        starts.append(start)
        chunks.append(chunk.cpu().clone())  # buffers may be reused two chunks later
    return starts, chunks


def _in_chunks(method, x, rows: int):
    """``method`` (e.g. ``subspaces.scores``) applied to ``x`` ``rows`` at a time, concatenated.

    The exact reference for streamed results: BLAS GEMMs (MKL's sgemm here) may round
    differently for another row count, so only the same chunking is bit-identical; the whole,
    unchunked result is compared within the tolerance table.
    """
    parts = [method(x[start : start + rows]) for start in range(0, len(x), rows)]
    return np.concatenate(parts) if isinstance(x, np.ndarray) else torch.cat(parts)


def _budget_for(subspaces, rows: int, source_dtype=torch.float32) -> int:
    """The smallest budget that gives ``rows`` rows per chunk (same arithmetic as the module)."""
    from masc_fast.probing import streamed_scoring, streaming

    dtype = torch.float64 if source_dtype == torch.float64 else torch.float32
    components = int(subspaces.num_components.sum())
    per_buffer, once = streamed_scoring._scoring_row_bytes(
        DIM, components, NUM_CLASSES, source_dtype, dtype, mapped=False, angles=False
    )
    reserved = DIM * components * dtype.itemsize + streaming.ALLOCATOR_SLACK
    return reserved + rows * (2 * per_buffer + once)


# ----------------------------------------------------------------- chunk_rows
def test_chunk_rows_is_the_largest_count_that_fits():
    rows = chunk_rows(10, 1000, reserved=200, buffers=2)
    assert rows == 40  # (1000 − 200) // (2 · 10)
    assert 200 + 2 * 10 * rows <= 1000 < 200 + 2 * 10 * (rows + 1)


def test_chunk_rows_counts_scratch_once_and_buffers_per_buffer():
    assert chunk_rows(10, 1000, buffers=3, scratch_row_bytes=20) == 20  # 1000 // (30 + 20)
    assert chunk_rows(10, 1000, buffers=1) == 100


def test_chunk_rows_respects_max_rows_and_no_budget():
    assert chunk_rows(8, 10**9, max_rows=17) == 17
    assert chunk_rows(8, None, max_rows=17) == 17
    assert chunk_rows(8, None) == 65536


def test_chunk_rows_too_small_budget_names_the_numbers():
    with pytest.raises(ValueError, match=r"memory_budget=100 bytes .* 90 bytes reserved .* 110"):
        chunk_rows(10, 100, reserved=90)
    with pytest.raises(ValueError, match=r"memory_budget=1000 bytes .* 3 row\(s\)"):
        chunk_rows(200, 1000, min_rows=3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"row_bytes": -1, "memory_budget": 10}, ValueError, "row_bytes must be >= 0"),
        ({"row_bytes": 0, "memory_budget": 10}, ValueError, "a row must take memory"),
        ({"row_bytes": 4, "memory_budget": -5}, ValueError, "memory_budget must be >= 0"),
        ({"row_bytes": 4, "memory_budget": 99, "buffers": 0}, ValueError, "buffers must be"),
        ({"row_bytes": 4, "memory_budget": 99, "min_rows": 5, "max_rows": 2}, ValueError, "max"),
        ({"row_bytes": 4.0, "memory_budget": 99}, TypeError, "row_bytes must be an integer"),
        ({"row_bytes": 4, "memory_budget": True}, TypeError, "memory_budget must be an integer"),
    ],
)
def test_chunk_rows_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        chunk_rows(**kwargs)


# ----------------------------------------------------------------- HostChunkStream, CPU route
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 64])
@pytest.mark.parametrize("rows_per_chunk", [1, 3, 8, 100])
def test_stream_yields_every_row_once_in_order(n, rows_per_chunk):
    source = torch.randn(n, 5)
    stream = HostChunkStream(source, rows_per_chunk=rows_per_chunk)
    starts, chunks = _collect(stream)
    assert starts == list(range(0, n, rows_per_chunk))
    assert len(stream) == len(starts)
    assert all(0 < len(chunk) <= rows_per_chunk for chunk in chunks)
    joined = torch.cat(chunks) if chunks else torch.empty(0, 5)
    assert torch.equal(joined, source)


def test_stream_yields_views_when_dtype_matches():
    source = torch.randn(10, 3)
    for start, chunk in HostChunkStream(source, rows_per_chunk=4):
        assert chunk.data_ptr() == source[start].data_ptr()


def test_stream_from_numpy_shares_memory():
    source = np.random.default_rng(0).standard_normal((11, 4))
    starts, chunks = [], []
    for start, chunk in HostChunkStream(source, rows_per_chunk=4):
        assert chunk.dtype == torch.float64
        assert np.shares_memory(chunk.numpy(), source)
        starts.append(start)
        chunks.append(chunk.numpy())
    assert starts == [0, 4, 8]
    np.testing.assert_array_equal(np.concatenate(chunks), source)


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_stream_from_memmap(tmp_path, mode):
    data = np.random.default_rng(1).standard_normal((37, 6)).astype(np.float32)
    path = tmp_path / "rows.f32"
    writer = np.memmap(path, dtype=np.float32, mode="w+", shape=data.shape)
    writer[:] = data
    writer.flush()
    del writer
    source = np.memmap(path, dtype=np.float32, mode=mode, shape=data.shape)
    _, chunks = _collect(HostChunkStream(source, rows_per_chunk=10))
    np.testing.assert_array_equal(torch.cat(chunks).numpy(), data)


def test_stream_from_big_endian_memmap(tmp_path):
    data = np.random.default_rng(2).standard_normal((9, 3))
    path = tmp_path / "rows.be"
    data.astype(">f8").tofile(path)
    source = np.memmap(path, dtype=">f8", mode="r", shape=data.shape)
    _, chunks = _collect(HostChunkStream(source, rows_per_chunk=4))
    np.testing.assert_array_equal(torch.cat(chunks).numpy(), data)


@pytest.mark.parametrize("as_numpy", [True, False], ids=["numpy", "torch"])
def test_stream_casts_float16_to_float32(as_numpy):
    data = np.random.default_rng(3).standard_normal((13, 5)).astype(np.float16)
    source = data if as_numpy else torch.from_numpy(data)
    stream = HostChunkStream(source, rows_per_chunk=5, dtype=torch.float32)
    _, chunks = _collect(stream)
    assert all(chunk.dtype == torch.float32 for chunk in chunks)
    np.testing.assert_array_equal(torch.cat(chunks).numpy(), data.astype(np.float32))


def test_stream_validates_each_chunk_as_read():
    source = torch.randn(10, 2)
    seen = []
    for _ in HostChunkStream(source, rows_per_chunk=4, validate=lambda r, s: seen.append((s, r))):
        pass
    assert [start for start, _ in seen] == [0, 4, 8]
    assert torch.equal(torch.cat([rows for _, rows in seen]), source)


def test_stream_close_ends_iteration():
    with HostChunkStream(torch.randn(10, 2), rows_per_chunk=3) as stream:
        assert next(stream)[0] == 0
    assert list(stream) == []


@pytest.mark.parametrize(
    ("source", "kwargs", "error", "match"),
    [
        ([[1.0, 2.0]], {}, TypeError, "torch.Tensor, numpy.ndarray or numpy.memmap"),
        (np.zeros((3, 2), dtype=np.int64), {}, TypeError, "float16, float32 or float64"),
        (torch.zeros(3, 2, dtype=torch.int32), {}, TypeError, "floating point"),
        (torch.tensor(1.0), {}, ValueError, "row axis"),
        (torch.zeros(3, 2), {"rows_per_chunk": 0}, ValueError, "rows_per_chunk must be >= 1"),
        (torch.zeros(3, 2), {"dtype": torch.int64}, TypeError, "dtype must be"),
    ],
)
def test_stream_rejects_bad_input(source, kwargs, error, match):
    kwargs = {"rows_per_chunk": 2, **kwargs}
    with pytest.raises(error, match=match):
        HostChunkStream(source, **kwargs)


def test_stream_mapped_without_cupy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(ImportError, match=r"masc_fast\[cuda\]"):
        HostChunkStream(torch.zeros(4, 2), rows_per_chunk=2, mapped=True)


def test_stream_mapped_needs_a_cuda_device(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    with pytest.raises(ValueError, match="CUDA device, got a source on cpu and device cpu"):
        HostChunkStream(torch.zeros(4, 2), rows_per_chunk=2, mapped=True)


def test_import_touches_neither_cupy_nor_cuda():
    code = (
        "import sys, torch, masc_fast.probing.streaming; "
        "assert 'cupy' not in sys.modules, 'cupy imported'; "
        "assert not torch.cuda.is_initialized(), 'CUDA initialised'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------- score_streamed, CPU
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [1, 7, 64, 1000])
def test_score_streamed_equals_unstreamed(fitted, tolerances, dtype, rows):
    subspaces, x = fitted
    x = x.to(dtype)
    budget = _budget_for(subspaces, rows, dtype)
    result = score_streamed(subspaces, x, device="cpu", memory_budget=budget, backend="torch")
    rows = min(rows, len(x))
    assert result.rows_per_chunk == rows
    assert result.num_chunks == -(-len(x) // rows)
    assert result.backend == "torch"
    assert result.scores.dtype == dtype and result.pred.dtype == torch.int64
    # the same rows through the same op in the same chunks: bit-identical
    scores = partial(subspaces.scores, backend="torch")
    predict = partial(subspaces.predict, backend="torch")
    assert torch.equal(result.scores, _in_chunks(scores, x, rows))
    assert torch.equal(result.pred, _in_chunks(predict, x, rows))
    # and the same as scoring all rows at once, up to GEMM rounding
    expected = subspaces.score(x, backend="torch")
    atol, rtol = tolerances[dtype]
    assert_close_report(result.scores, expected.scores, atol, rtol, "streamed scores")
    assert_labels_match(result.pred, expected.pred, expected.scores, atol, 0.01)


def test_score_streamed_numpy_and_memmap_return_numpy(fitted, tmp_path):
    subspaces, x = fitted
    data = x.numpy()
    path = tmp_path / "x.f32"
    writer = np.memmap(path, dtype=np.float32, mode="w+", shape=data.shape)
    writer[:] = data
    writer.flush()
    budget = _budget_for(subspaces, 16)
    for source in (data, np.memmap(path, dtype=np.float32, mode="r", shape=data.shape)):
        result = score_streamed(
            subspaces, source, device="cpu", memory_budget=budget, backend="torch"
        )
        assert result.num_chunks == 13
        assert isinstance(result.scores, np.ndarray) and isinstance(result.pred, np.ndarray)
        scores = partial(subspaces.scores, backend="torch")
        predict = partial(subspaces.predict, backend="torch")
        np.testing.assert_array_equal(result.scores, _in_chunks(scores, data, 16))
        np.testing.assert_array_equal(result.pred, _in_chunks(predict, data, 16))


def test_score_streamed_float16_source_is_scored_in_float32(fitted):
    subspaces, x = fitted
    half = x.half().numpy()
    result = score_streamed(
        subspaces, half, device="cpu", memory_budget=_budget_for(subspaces, 9, torch.float16)
    )
    assert result.scores.dtype == np.float32
    scores = partial(subspaces.scores, backend=result.backend)
    np.testing.assert_array_equal(result.scores, _in_chunks(scores, half.astype(np.float32), 9))


def test_score_streamed_angles(fitted):
    subspaces, x = fitted
    result = score_streamed(
        subspaces, x, device="cpu", memory_budget=_budget_for(subspaces, 10), angles=True
    )
    rows = result.rows_per_chunk  # angles need a little more scratch per row
    assert 1 < rows < 10
    angles = partial(subspaces.angles, backend=result.backend)
    predict = partial(subspaces.predict, backend=result.backend)
    assert torch.equal(result.scores, _in_chunks(angles, x, rows))
    assert torch.equal(result.pred, _in_chunks(predict, x, rows))


def test_score_streamed_auto_backend_matches_unstreamed(fitted, tolerances):
    subspaces, x = fitted
    result = score_streamed(subspaces, x, device="cpu", memory_budget=_budget_for(subspaces, 11))
    expected = subspaces.score(x)
    assert result.backend == expected.backend
    atol, rtol = tolerances[torch.float32]
    assert_close_report(result.scores, expected.scores, atol, rtol, "streamed scores")
    assert_labels_match(result.pred, expected.pred, expected.scores, atol, 0.01)


def test_score_streamed_no_rows(fitted):
    subspaces, _ = fitted
    result = score_streamed(subspaces, np.empty((0, DIM), dtype=np.float32), device="cpu")
    assert result.scores.shape == (0, NUM_CLASSES) and result.pred.shape == (0,)
    assert result.num_chunks == 0


def test_score_streamed_budget_too_small_names_the_budget(fitted):
    subspaces, x = fitted
    with pytest.raises(ValueError, match=r"memory_budget=67000 bytes is too small"):
        score_streamed(subspaces, x, device="cpu", memory_budget=67000)


def test_score_streamed_names_the_chunk_with_nan(fitted):
    subspaces, x = fitted
    x = x.clone()
    x[45, 3] = float("nan")
    budget = _budget_for(subspaces, 20)
    with pytest.raises(ValueError, match=r"batch 2: .*NaN.*first bad row 5.*rows 40:60 of 203"):
        score_streamed(subspaces, x, device="cpu", memory_budget=budget)


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        (torch.zeros(4, DIM + 1), ValueError, f"{DIM + 1} features, expected {DIM}"),
        (torch.zeros(4), ValueError, "must be 2-D"),
        (np.zeros((4, DIM), dtype=np.int32), TypeError, "float16, float32 or float64"),
    ],
)
def test_score_streamed_rejects_bad_input(fitted, source, error, match):
    subspaces, _ = fitted
    with pytest.raises(error, match=match):
        score_streamed(subspaces, source, device="cpu")


def test_score_streamed_without_any_class_raises():
    empty = ClassSubspaces([None, None], dim=3, variance=0.9, counts=torch.zeros(2), layer="fc1")
    with pytest.raises(ValueError, match="layer 'fc1': no class has a subspace"):
        score_streamed(empty, torch.ones(2, 3), device="cpu")


# ----------------------------------------------------------------- CUDA routes
def _assert_matches_unstreamed(result, subspaces, x) -> None:
    expected = subspaces.score(x.cuda(), backend=result.backend)
    scores, pred = torch.as_tensor(result.scores), torch.as_tensor(result.pred)
    assert scores.device.type == "cpu" and pred.device.type == "cpu"
    atol, rtol = TOLERANCES[torch.float32]
    # cuBLAS may pick another kernel for another row count, so compare within tolerance
    assert_close_report(scores, expected.scores.cpu(), atol, rtol, "streamed scores")
    assert_labels_match(pred, expected.pred.cpu(), expected.scores.cpu(), atol, 0.01)


@pytest.mark.parametrize("as_numpy", [False, True], ids=["torch", "numpy"])
def test_stream_cuda_yields_every_row(as_numpy):
    _needs_cuda()
    data = torch.randn(1001, 33)
    source = data.numpy() if as_numpy else data
    starts, chunks = _collect(HostChunkStream(source, device="cuda", rows_per_chunk=128))
    assert starts == list(range(0, 1001, 128))
    assert torch.equal(torch.cat(chunks), data)


def test_stream_cuda_casts_float16_memmap(tmp_path):
    _needs_cuda()
    data = np.random.default_rng(5).standard_normal((300, 17)).astype(np.float16)
    path = tmp_path / "rows.f16"
    data.tofile(path)
    source = np.memmap(path, dtype=np.float16, mode="r", shape=data.shape)
    stream = HostChunkStream(source, device="cuda", rows_per_chunk=64, dtype=torch.float32)
    _, chunks = _collect(stream)
    assert all(chunk.dtype == torch.float32 for chunk in chunks)
    np.testing.assert_array_equal(torch.cat(chunks).numpy(), data.astype(np.float32))


def test_stream_cuda_buffers_are_not_overwritten_under_a_slow_consumer():
    """Each chunk is summed after a long device sleep; a copy racing ahead would corrupt it."""
    _needs_cuda()
    data = torch.randn(64 * 8, 256, dtype=torch.float64)
    sums = []
    for _, chunk in HostChunkStream(data, device="cuda", rows_per_chunk=64):
        torch.cuda._sleep(2_000_000)  # keeps the compute stream busy while the next copy runs
        sums.append(chunk.sum(dim=1))
    assert torch.equal(torch.cat(sums).cpu(), data.sum(dim=1))


def test_stream_cuda_close_midway_is_safe():
    _needs_cuda()
    data = torch.randn(1000, 64)
    with HostChunkStream(data, device="cuda", rows_per_chunk=100) as stream:
        _, chunk = next(stream)
        assert torch.equal(chunk.cpu(), data[:100])
    assert list(stream) == []
    torch.cuda.synchronize()


@pytest.mark.parametrize("as_numpy", [False, True], ids=["torch", "numpy"])
def test_score_streamed_cuda_matches_unstreamed(fitted, as_numpy):
    _needs_cuda()
    subspaces, x = fitted
    source = x.numpy() if as_numpy else x
    result = score_streamed(
        subspaces, source, device="cuda", memory_budget=_budget_for(subspaces, 16)
    )
    assert result.num_chunks == 13
    assert isinstance(result.scores, np.ndarray) == as_numpy
    _assert_matches_unstreamed(result, subspaces, x)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_score_streamed_cuda_stays_under_budget(backend):
    """Peak allocated bytes (the caching allocator's blocks) stay under the budget.

    Warm-up first: cuBLAS allocates a per-stream workspace on its first GEMM and Triton
    compiles on its first launch; both are outside the budget by design.
    """
    _needs_cuda()
    x, y = structured_classes(4000, 256, 10, rank=16, noise=0.05, seed=6)
    accumulator = GramAccumulator(10, 256)
    accumulator.update(x, y)
    subspaces = accumulator.fit(variance=0.95)
    rows, _ = structured_classes(20000, 256, 10, rank=16, noise=0.05, seed=7)
    budget = 8 * 2**20  # rows are 20 MB; the budget forces many chunks
    score_streamed(subspaces, rows[:300], device="cuda", memory_budget=budget, backend=backend)
    fresh = subspaces.with_variance(subspaces.variance)  # its basis is not on the device yet
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = score_streamed(fresh, rows, device="cuda", memory_budget=budget, backend=backend)
    peak = torch.cuda.max_memory_allocated() - baseline
    assert result.num_chunks > 4
    assert peak <= budget, f"peak {peak} bytes above the budget {budget}"
    _assert_matches_unstreamed(result, subspaces, rows)


def test_score_streamed_cuda_mapped(fitted):
    _needs_cuda()
    pytest.importorskip("cupy")
    subspaces, x = fitted
    budget = _budget_for(subspaces, 32)
    result = score_streamed(subspaces, x.numpy(), device="cuda", memory_budget=budget, mapped=True)
    assert result.num_chunks > 1
    _assert_matches_unstreamed(result, subspaces, x)
