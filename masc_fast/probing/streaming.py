"""Host rows streamed to a device in bounded chunks.

Activations that do not fit the accelerator stay in host memory (a CPU tensor, a NumPy array or
a ``numpy.memmap``) and reach it chunk by chunk: :func:`chunk_rows` sizes the chunks so that a
``memory_budget`` holds, :class:`HostChunkStream` moves them to the device (on CUDA through
pinned staging buffers and a copy stream, so the copy of chunk i+1 overlaps the compute on
chunk i). :mod:`masc_fast.probing.streamed_scoring` scores them.

Nothing here imports CuPy or touches CUDA at import time.
"""

from __future__ import annotations

import ctypes
import math
import operator
from collections.abc import Callable, Iterator

import numpy as np
import torch

__all__ = ["ALLOCATOR_SLACK", "MAX_CHUNK_ROWS", "HostChunkStream", "chunk_rows", "host_dtype"]

# Rows per chunk when there is no budget: the torch backend's largest scoring block
# (backends.torch_ops.default_block_rows), so a chunk is never split further. Not tuned.
MAX_CHUNK_ROWS = 65536
# The CUDA caching allocator rounds each block up to 512 bytes; about 20 tensors are alive per
# chunk, so 10 KiB would do. 64 KiB leaves room for the small (K,) and (R,) index tensors.
ALLOCATOR_SLACK = 64 * 1024
# cudaHostAllocMapped (cuda_runtime_api.h); CuPy's runtime module does not export the flag.
_HOST_ALLOC_MAPPED = 2

_NUMPY_DTYPES = {
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}
_TORCH_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _count(value, name: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; TypeError for non-integers (bool included)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def chunk_rows(
    row_bytes: int,
    memory_budget: int | None,
    *,
    reserved: int = 0,
    buffers: int = 2,
    scratch_row_bytes: int = 0,
    min_rows: int = 1,
    max_rows: int = MAX_CHUNK_ROWS,
) -> int:
    """Rows per chunk so that ``buffers`` chunks, their scratch and ``reserved`` fit the budget.

    The largest ``rows`` in ``[min_rows, max_rows]`` with
    ``reserved + rows · (buffers · row_bytes + scratch_row_bytes) <= memory_budget``.

    Parameters
    ----------
    row_bytes : int
        Bytes one row takes in one buffer (``d · itemsize`` for a (n, d) source).
    memory_budget : int or None
        Bytes available on the device; ``None`` means no limit (``max_rows`` is returned).
    reserved : int, default 0
        Bytes held for the whole pass whatever the chunk size (the packed basis, ...).
    buffers : int, default 2
        Chunks alive at once: 2 for double buffering.
    scratch_row_bytes : int, default 0
        Bytes per row needed once, not per buffer: the compute's temporaries and outputs.
    min_rows, max_rows : int
        Bounds on the answer.

    Returns
    -------
    int
        Rows per chunk.

    Raises
    ------
    ValueError
        When even ``min_rows`` rows do not fit; the message gives the budget and every term.
    TypeError
        When an argument is not an integer.

    Example
    -------
    >>> chunk_rows(4096, 2**20, reserved=2**18)  # 2 · 96 · 4 KiB + 256 KiB = 1 MiB
    96
    """
    row_bytes = _count(row_bytes, "row_bytes", 0)
    reserved = _count(reserved, "reserved", 0)
    buffers = _count(buffers, "buffers", 1)
    scratch_row_bytes = _count(scratch_row_bytes, "scratch_row_bytes", 0)
    min_rows = _count(min_rows, "min_rows", 1)
    max_rows = _count(max_rows, "max_rows", min_rows)
    per_row = buffers * row_bytes + scratch_row_bytes
    if per_row == 0:
        raise ValueError("row_bytes and scratch_row_bytes are both 0; a row must take memory")
    if memory_budget is None:
        return max_rows
    memory_budget = _count(memory_budget, "memory_budget", 0)
    rows = (memory_budget - reserved) // per_row
    if rows < min_rows:
        raise ValueError(
            f"memory_budget={memory_budget} bytes is too small: {reserved} bytes reserved plus "
            f"{min_rows} row(s) × ({buffers} buffers × {row_bytes} + {scratch_row_bytes} scratch) "
            f"bytes per row needs {reserved + min_rows * per_row} bytes"
        )
    return min(rows, max_rows)


# ----------------------------------------------------------------- host sources
def host_dtype(source) -> torch.dtype:
    """The torch dtype of a host source (tensor, array or memmap); TypeError if not float."""
    if isinstance(source, torch.Tensor):
        if source.dtype not in _TORCH_DTYPES:
            raise TypeError(f"source must be floating point (float16/32/64), got {source.dtype}")
        return source.dtype
    if isinstance(source, np.ndarray):
        dtype = _NUMPY_DTYPES.get(source.dtype.newbyteorder("="))
        if dtype is None:
            raise TypeError(f"source must be float16, float32 or float64, got {source.dtype}")
        return dtype
    raise TypeError(
        f"source must be a torch.Tensor, numpy.ndarray or numpy.memmap, got {type(source).__name__}"
    )


def _read_rows(source, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` as a tensor, a view of the source when torch can alias it."""
    if isinstance(source, torch.Tensor):
        return source[start:stop]
    rows = np.asarray(source[start:stop])  # a memmap slice becomes a plain ndarray view
    if not (rows.flags.writeable and rows.dtype.isnative and min(rows.strides, default=0) >= 0):
        # torch cannot alias read-only (memmap mode "r"), byte-swapped or reversed memory
        rows = np.array(rows, dtype=rows.dtype.newbyteorder("="))
    return torch.from_numpy(rows)


def _fill(buffer: torch.Tensor, source, start: int, stop: int) -> None:
    """Copy rows ``start:stop`` into a host ``buffer`` on the host (reads a memmap's pages)."""
    if isinstance(source, torch.Tensor):
        buffer.copy_(source[start:stop])
    else:  # NumPy copies straight into the buffer's memory: no read-only view, any byte order
        np.copyto(buffer.numpy(), source[start:stop], casting="equiv")


def _import_cupy():
    try:
        import cupy
    except ImportError as error:
        raise ImportError(
            "mapped=True needs CuPy for mapped (zero-copy) host memory; install it with "
            "`pip install 'masc_fast[cuda]'`"
        ) from error
    return cupy


def _mapped_buffer(cupy, shape: tuple, dtype: torch.dtype, device: torch.device):
    """A host view, a device view and the owner of one mapped, page-locked allocation."""
    nbytes = math.prod(shape) * dtype.itemsize
    with cupy.cuda.Device(device.index):
        memory = cupy.cuda.PinnedMemory(max(nbytes, 1), _HOST_ALLOC_MAPPED)
        owner = cupy.cuda.PinnedMemoryPointer(memory, 0)
        device_ptr = cupy.cuda.runtime.pointerGetAttributes(owner.ptr).devicePointer
        alias = cupy.cuda.UnownedMemory(device_ptr, max(nbytes, 1), owner, device.index)
        array = cupy.ndarray((nbytes,), dtype=cupy.uint8, memptr=cupy.cuda.MemoryPointer(alias, 0))
    raw = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(owner.ptr))
    host = torch.from_numpy(raw).view(dtype).view(shape)
    return host, torch.from_dlpack(array).view(dtype).view(shape), owner


class HostChunkStream:
    """Rows of a host array delivered to ``device`` in order, ``rows_per_chunk`` at a time.

    Iterating yields ``(start, chunk)``: rows ``start : start + len(chunk)`` of ``source`` on
    ``device`` in ``dtype``, every row exactly once, in order. Three routes:

    * CUDA device, host source: rows are copied on the host into one of two pinned staging
      buffers, then copied asynchronously on a dedicated stream into one of two device buffers,
      so the copy of chunk i+1 overlaps the work on chunk i (ordering in ``_staged_chunks``).
    * ``mapped=True`` (CUDA, needs CuPy): two mapped page-locked host buffers that kernels read
      directly over the bus (zero-copy); no device memory is used for the rows.
    * otherwise (CPU, or a source already on ``device``): slices moved with ``.to``; views of the
      source when device and dtype already match.

    Parameters
    ----------
    source : torch.Tensor, numpy.ndarray or numpy.memmap, shape (n, ...)
        float16, bfloat16 (torch only), float32 or float64; chunked along the first axis.
        Only the rows of the current and the next chunk are read at a time.
    device : torch.device or str, default "cpu"
    rows_per_chunk : int
        Rows per chunk (see :func:`chunk_rows`); the last chunk may be shorter.
    dtype : torch.dtype, optional
        dtype of the yielded chunks, cast on the device; default the source's.
    mapped : bool, default False
        Use CuPy mapped host memory instead of copies (``pip install 'masc_fast[cuda]'``).
    validate : callable, optional
        ``validate(rows, start)`` is called on each chunk's rows as read, before they are cast
        and sent (host memory on the CUDA routes), and may raise.

    Notes
    -----
    On the CUDA routes, work on a chunk must be enqueued on the device's current stream (the
    one current when iteration starts), and, for a chunk that was not cast (a view of a staging
    buffer), before the next chunk is asked for: from then on the copy of the chunk after next
    may overwrite it. Clone a chunk to keep it. Device memory: two chunks of the source dtype,
    plus the cast chunks the caller keeps; host: two pinned chunks.

    Example
    -------
    >>> import numpy as np
    >>> rows = np.arange(10, dtype=np.float32).reshape(5, 2)
    >>> [start for start, chunk in HostChunkStream(rows, rows_per_chunk=2)]
    [0, 2, 4]
    """

    def __init__(
        self,
        source,
        *,
        device: torch.device | str = "cpu",
        rows_per_chunk: int,
        dtype: torch.dtype | None = None,
        mapped: bool = False,
        validate: Callable[[torch.Tensor, int], None] | None = None,
    ):
        self.source_dtype = host_dtype(source)
        if source.ndim < 1:
            raise ValueError(f"source must have a row axis, got shape {tuple(source.shape)}")
        self._source = source.detach() if isinstance(source, torch.Tensor) else source
        self.n = int(source.shape[0])
        self.rows_per_chunk = _count(rows_per_chunk, "rows_per_chunk", 1)
        self.dtype = self.source_dtype if dtype is None else dtype
        if self.dtype not in _TORCH_DTYPES:
            raise TypeError(f"dtype must be a floating point torch dtype, got {self.dtype}")
        self._validate = validate
        self.device = torch.device(device)
        is_host = not isinstance(source, torch.Tensor) or source.device.type == "cpu"
        if mapped:
            self._cupy = _import_cupy()
            if self.device.type != "cuda" or not is_host:
                raise ValueError(
                    f"mapped=True streams host rows to a CUDA device, got a source on "
                    f"{'cpu' if is_host else source.device} and device {self.device}"
                )
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if mapped:
            self._route = self._mapped_chunks
        elif self.device.type == "cuda" and is_host:
            self._route = self._staged_chunks
        else:
            self._route = self._direct_chunks
        self._chunks: Iterator | None = None

    def __len__(self) -> int:
        """Number of chunks."""
        return -(-self.n // self.rows_per_chunk)

    def __iter__(self) -> HostChunkStream:
        return self

    def __next__(self) -> tuple[int, torch.Tensor]:
        if self._chunks is None:
            self._chunks = self._route()
        return next(self._chunks)

    def __enter__(self) -> HostChunkStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop early: release the buffers (after pending copies); iteration then ends."""
        if self._chunks is not None:
            self._chunks.close()
        self._chunks = iter(())

    def _rows_at(self, start: int) -> tuple[int, int]:
        return start, min(start + self.rows_per_chunk, self.n)

    def _check(self, rows: torch.Tensor, start: int) -> None:
        if self._validate is not None:
            self._validate(rows, start)

    def _buffer_shape(self) -> tuple:
        return (min(self.rows_per_chunk, self.n), *self._source.shape[1:])

    def _direct_chunks(self):
        for start in range(0, self.n, self.rows_per_chunk):
            rows = _read_rows(self._source, *self._rows_at(start))
            self._check(rows, start)
            yield start, rows.to(device=self.device, dtype=self.dtype)

    def _staged_chunks(self):
        # Ordering, for chunk i in slot s = i % 2 (host[s] pinned, staged[s] on the device):
        # (1) the host refills host[s] only after `copied[s]`: the DMA that read it for chunk
        #     i-2 has finished;
        # (2) the copy stream writes staged[s] only after `released[s]`: the compute stream has
        #     finished every kernel that read staged[s] for chunk i-2 (the cast, or the
        #     caller's work, recorded when the caller asks for the next chunk);
        # (3) chunk i+1 is filled and its copy issued before chunk i is yielded, so that copy
        #     runs while the caller's kernels on chunk i run;
        # (4) the compute stream waits for `copied[s]` of chunk i only when chunk i is handed
        #     over, not before. Events not yet recorded are no-ops in both waits.
        # staged[s].record_stream(copier) keeps the caching allocator from reusing the buffers
        # before copy-stream work on them ends, even if the stream is dropped mid-way; the
        # pinned buffers are safe the same way (torch records their copies' streams).
        if self.n == 0:
            return
        shape, device = self._buffer_shape(), self.device
        compute = torch.cuda.current_stream(device)
        copier = torch.cuda.Stream(device)
        host = [torch.empty(shape, dtype=self.source_dtype, pin_memory=True) for _ in range(2)]
        staged = [torch.empty(shape, dtype=self.source_dtype, device=device) for _ in range(2)]
        for buffer in staged:
            buffer.record_stream(copier)
        copied = [torch.cuda.Event() for _ in range(2)]
        released = [torch.cuda.Event() for _ in range(2)]
        starts = range(0, self.n, self.rows_per_chunk)

        def issue(index: int) -> None:
            slot, (start, stop) = index % 2, self._rows_at(starts[index])
            rows = host[slot][: stop - start]
            copied[slot].synchronize()  # (1)
            _fill(rows, self._source, start, stop)
            self._check(rows, start)
            with torch.cuda.stream(copier):
                copier.wait_event(released[slot])  # (2)
                staged[slot][: stop - start].copy_(rows, non_blocking=True)
                copied[slot].record(copier)

        try:
            issue(0)
            for index, start in enumerate(starts):
                if index + 1 < len(starts):
                    issue(index + 1)  # (3)
                slot, stop = index % 2, self._rows_at(start)[1]
                compute.wait_event(copied[slot])  # (4)
                chunk = staged[slot][: stop - start]
                if self.dtype != self.source_dtype:
                    chunk = chunk.to(self.dtype)
                    released[slot].record(compute)  # the cast was the last read of staged[slot]
                    yield start, chunk
                else:
                    yield start, chunk
                    released[slot].record(compute)  # after all the caller enqueued on chunk
        finally:
            compute.wait_stream(copier)

    def _mapped_chunks(self):
        # Kernels read a mapped buffer over the bus while they run, so the host refills slot s
        # only after the compute stream has passed `released[s]` of chunk i-2. The buffers are
        # freed with cudaFreeHost when this generator ends, hence the final synchronize.
        if self.n == 0:
            return
        compute = torch.cuda.current_stream(self.device)
        buffers = [
            _mapped_buffer(self._cupy, self._buffer_shape(), self.source_dtype, self.device)
            for _ in range(2)
        ]
        released = [torch.cuda.Event() for _ in range(2)]
        try:
            for index, start in enumerate(range(0, self.n, self.rows_per_chunk)):
                slot, stop = index % 2, self._rows_at(start)[1]
                host, mapped, _ = buffers[slot]
                released[slot].synchronize()
                _fill(host[: stop - start], self._source, start, stop)
                self._check(host[: stop - start], start)
                chunk = mapped[: stop - start]
                if self.dtype != self.source_dtype:
                    chunk = chunk.to(self.dtype)
                    released[slot].record(compute)
                    yield start, chunk
                else:
                    yield start, chunk
                    released[slot].record(compute)
        finally:
            compute.synchronize()


# ----------------------------------------------------------------- scoring
