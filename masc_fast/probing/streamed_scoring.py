"""Scoring host rows that do not fit the device: chunks streamed through pinned buffers.

:func:`score_streamed` is :meth:`ClassSubspaces.score` for a source in host memory (CPU tensor,
NumPy array, ``numpy.memmap``): chunks sized by a ``memory_budget`` stream through
:class:`masc_fast.probing.streaming.HostChunkStream`, the packed basis stays resident on the device and
results come back as they are computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from masc_fast._validation import check_activation_shape, check_activations, where
from masc_fast.backends import select_backend
from masc_fast.probing.streaming import (
    ALLOCATOR_SLACK,
    MAX_CHUNK_ROWS,
    HostChunkStream,
    chunk_rows,
    host_dtype,
)
from masc_fast.scoring import compute_dtype, score_rows, scores_to_angles

__all__ = ["StreamedScores", "score_streamed"]


@dataclass(frozen=True)
class StreamedScores:
    """Host results of :func:`score_streamed`, NumPy for NumPy input and torch otherwise.

    ``scores`` (n, K): cos² (or angles in degrees when asked), float32, or float64 for float64
    input; ``pred`` (n,) int64; ``backend`` that ran; the chunking that was used.
    """

    scores: Any
    pred: Any
    backend: str
    rows_per_chunk: int
    num_chunks: int


class _HostSink:
    """Per-chunk results written into host outputs; on CUDA through two pinned slots.

    A slot's device→host copy is enqueued (non_blocking) on the compute stream and copied on
    into the pageable outputs two chunks later, once its event has passed, so the host never
    waits for the chunk the device is working on and pinned memory stays two chunks' worth.
    """

    def __init__(self, scores: torch.Tensor, pred: torch.Tensor, rows: int, device):
        self.scores, self.pred = scores, pred
        self.is_pinned = torch.device(device).type == "cuda" and len(pred) > 0
        if self.is_pinned:
            rows = min(rows, len(pred))
            self.slots = [
                (
                    torch.empty((rows, scores.shape[1]), dtype=scores.dtype, pin_memory=True),
                    torch.empty(rows, dtype=pred.dtype, pin_memory=True),
                )
                for _ in range(2)
            ]
            self.events = [torch.cuda.Event() for _ in range(2)]
            self.pending: list[int | None] = [None, None]

    def put(self, index: int, start: int, scores: torch.Tensor, pred: torch.Tensor) -> None:
        stop = start + len(pred)
        if not self.is_pinned:
            self.scores[start:stop].copy_(scores)
            self.pred[start:stop].copy_(pred)
            return
        slot = index % 2
        self._drain(slot)
        slot_scores, slot_pred = self.slots[slot]
        slot_scores[: stop - start].copy_(scores, non_blocking=True)
        slot_pred[: stop - start].copy_(pred, non_blocking=True)
        self.events[slot].record(torch.cuda.current_stream(scores.device))
        self.pending[slot] = start

    def _drain(self, slot: int) -> None:
        start = self.pending[slot]
        if start is None:
            return
        self.events[slot].synchronize()
        slot_scores, slot_pred = self.slots[slot]
        count = min(len(slot_pred), len(self.pred) - start)
        self.scores[start : start + count].copy_(slot_scores[:count])
        self.pred[start : start + count].copy_(slot_pred[:count])
        self.pending[slot] = None

    def finish(self) -> None:
        """Wait for the outstanding copies and land them."""
        if self.is_pinned:
            for slot in range(2):
                self._drain(slot)


def _scoring_row_bytes(
    dim: int, components: int, classes: int, source_dtype, dtype, *, mapped: bool, angles: bool
) -> tuple[int, int]:
    """(bytes per row per buffer, bytes per row once) that scoring a chunk takes on the device.

    Per buffer: the staged source row (none when mapped) and its cast copy (the caller may still
    hold the previous cast chunk while the next is made). Once: the torch op's temporaries, an
    upper bound for the fused backends: ‖x‖² via ``x.double().square()`` (16·d), the projection
    and its float64 square (R·(itemsize + 8)), three float64 and three ``dtype`` (rows, K)
    blocks in the epilogue and output, the labels; angles add two (rows, K) temporaries.
    """
    itemsize = dtype.itemsize
    per_buffer = (0 if mapped else dim * source_dtype.itemsize) + (
        dim * itemsize if dtype != source_dtype else 0
    )
    once = 16 * dim + components * (itemsize + 8) + classes * (24 + 3 * itemsize) + 48
    return per_buffer, once + (2 * classes * itemsize if angles else 0)


def score_streamed(
    subspaces,
    source,
    *,
    device: torch.device | str,
    memory_budget: int | None = None,
    backend: str | None = "auto",
    angles: bool = False,
    mapped: bool = False,
    precision: str = "fp32",
) -> StreamedScores:
    """Score host rows against fitted subspaces chunk by chunk on ``device``.

    ``score[i, k] = ‖U_kᵀ x_i‖² / ‖x_i‖²`` and ``pred[i] = argmax_k score[i, k]``, exactly as
    :meth:`ClassSubspaces.score`, but ``source`` never has to fit the device: chunks sized by
    :func:`chunk_rows` stream through :class:`HostChunkStream`, the packed basis stays resident
    on ``device`` (cached by ``subspaces.packed``) and results are copied back as they come.

    Parameters
    ----------
    subspaces : ClassSubspaces
        The fit; ``subspaces.dim`` = d, ``subspaces.num_classes`` = K.
    source : torch.Tensor (CPU), numpy.ndarray or numpy.memmap, shape (n, d)
        float16/bfloat16/float32 rows are scored in float32, float64 rows in float64 (the cast
        happens on the device). Each chunk is checked for NaN/Inf before it is sent.
    device : torch.device or str
        Where the scoring runs.
    memory_budget : int, optional
        Bytes of device memory the pass may use: the basis, two staged chunks and one chunk's
        temporaries and outputs, as estimated by ``_scoring_row_bytes``. ``None``: chunks of at
        most 65536 rows.
    backend : str, default "auto"
        Which backend's ``subspace_scores`` runs (see :mod:`masc_fast.backends`).
    angles : bool, default False
        Return angles in degrees (``ClassSubspaces.angles``) instead of cos².
    mapped : bool, default False
        CUDA only: read rows from CuPy mapped host memory instead of copying them.
    precision : {"fp32", "tf32", "tf32x3", "bf16"}
        Products of the scoring GEMM, as in :meth:`ClassSubspaces.score`.

    Returns
    -------
    StreamedScores
        ``scores`` (n, K) and ``pred`` (n,) on the host, NumPy for NumPy input, plus the backend
        and the chunking used.

    Raises
    ------
    ValueError
        Bad shape, NaN/Inf rows (naming the chunk and its rows), no present class, or a budget
        too small for one row (naming the budget).
    TypeError
        A source that is not a float tensor or array.

    Notes
    -----
    Work: the same as unstreamed scoring. Host memory: the (n, K) outputs plus, on CUDA, two
    pinned input chunks and two pinned output chunks. The budget bounds the bytes this pass
    asks the caching allocator for (``torch.cuda.max_memory_allocated``, which counts whole
    blocks, so a reused block larger than the request counts in full); it leaves out the CUDA
    context, cached free segments (``memory_reserved``) and library workspaces (cuBLAS
    allocates one per stream on its first GEMM). Streamed scores can differ from unstreamed
    ones in the last bits: a BLAS GEMM may round differently for another row count.

    Example
    -------
    >>> import torch, masc_fast
    >>> from masc_fast.probing.streamed_scoring import score_streamed
    >>> acc = masc_fast.GramAccumulator(num_classes=3, dim=8)
    >>> x, y = torch.randn(300, 8), torch.arange(300) % 3
    >>> acc.update(x, y)
    >>> result = score_streamed(acc.fit(variance=0.9), x, device="cpu", memory_budget=2**17)
    >>> result.scores.shape, result.num_chunks > 1
    (torch.Size([300, 3]), True)
    """
    layer = subspaces.layer
    source_dtype = host_dtype(source)
    check_activation_shape(source.shape, layer=layer, dim=subspaces.dim)
    if not bool(subspaces.present.any()):
        raise ValueError(f"{where(layer)}no class has a subspace; nothing can be predicted")
    device = torch.device(device)
    dtype = compute_dtype(torch.empty(0, dtype=source_dtype))
    name = select_backend(backend, device)
    n, dim, classes = int(source.shape[0]), subspaces.dim, subspaces.num_classes
    components = int(subspaces.num_components.sum())
    per_buffer, once = _scoring_row_bytes(
        dim, components, classes, source_dtype, dtype, mapped=mapped, angles=angles
    )
    reserved = dim * components * dtype.itemsize + ALLOCATOR_SLACK
    rows = chunk_rows(
        per_buffer,
        memory_budget,
        reserved=reserved,
        scratch_row_bytes=once,
        max_rows=max(1, min(n, MAX_CHUNK_ROWS)),
    )

    def check(host_rows: torch.Tensor, start: int) -> None:
        try:
            check_activations(host_rows, layer=layer, batch=start // rows, dim=dim)
        except ValueError as error:
            stop = start + len(host_rows)
            raise ValueError(f"{error} (streamed chunk rows {start}:{stop} of {n})") from None

    scores = torch.empty((n, classes), dtype=dtype)
    pred = torch.empty(n, dtype=torch.int64)
    sink = _HostSink(scores, pred, rows, device)
    stream = HostChunkStream(
        source, device=device, rows_per_chunk=rows, dtype=dtype, mapped=mapped, validate=check
    )
    with torch.no_grad(), stream:
        basis, offsets, complement = subspaces.packed(dtype, stream.device)
        for index, (start, chunk) in enumerate(stream):
            result = score_rows(
                chunk, basis, offsets, complement=complement, backend=name, precision=precision
            )
            values = scores_to_angles(result.scores) if angles else result.scores
            sink.put(index, start, values, result.pred)
            del chunk, result, values  # free this chunk's device memory before the next is cast
        sink.finish()
    if isinstance(source, np.ndarray):
        return StreamedScores(scores.numpy(), pred.numpy(), name, rows, len(stream))
    return StreamedScores(scores, pred, name, rows, len(stream))
