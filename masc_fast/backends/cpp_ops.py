"""Adapter for the compiled CPU extension ``masc_fast._C``.

The extension is imported lazily, once, on first use; ``import masc_fast`` never needs it.
Inputs are validated upstream (``masc_fast._validation``); here we only assert what protects
memory (device, dtype, shape), make arrays contiguous and typed on purpose, and hand CPU
tensors to the bindings with ``Tensor.numpy()`` (no copy).

Threads. The ops parallelise with OpenMP over ``threads`` workers (default: torch's own count,
``torch.get_num_threads()``, or ``MASC_FAST_NUM_THREADS``), and each worker calls SciPy's BLAS
single-threaded: :func:`_single_threaded_blas` limits every BLAS pool to one thread (with
threadpoolctl) for the duration of a call, and torch's MKL GEMM, where the ops use it
(:mod:`masc_fast.backends.cpu_gemm`), is kept to the calling thread around each call, so the
process never runs more than ``threads`` busy threads. The extension's OpenMP runtime is the
one torch already loaded (the dynamic loader resolves ``libgomp.so.1`` to torch's copy), so
the two pools are one runtime;
``tests/test_cpp_threads.py`` checks both in one process.
"""

from __future__ import annotations

import contextlib
import functools
import os
from types import ModuleType

import torch

from masc_fast.backends import optional_import, required_import
from masc_fast.backends.cpu_gemm import choose_gemm
from masc_fast.backends.torch_ops import complement_flags

__all__ = [
    "IMPORTS",
    "default_threads",
    "describe",
    "gram_blocks",
    "gram_panel_cols",
    "gram_update",
    "is_available",
    "scoring_block_rows",
    "subspace_scores",
]

_FLOAT_DTYPES = (torch.float32, torch.float64)
# Rows per scoring block: GEMM speed grows with the block (the bases are repacked once per
# block) up to about 512 rows, so blocks are 512 rows unless one worker's tile (block_rows × R)
# would pass 16 MiB, and never fewer than 128 rows. Sweep: bench/sweep_cpu_blocks.py, recorded
# in bench/RESULTS.md ("C++ block sizes").
_TILE_BYTES = 16 * 2**20
_MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS = 128, 512
# Gram buckets: at most 1024 rows per SYRK (the precision policy of the torch per-class form,
# a float32 product over about 1024 staged rows per class; 2048 was no faster in the sweep),
# at most 16 MiB per worker. Column blocks of 512 were fastest in the same sweep (fewer
# gathers); narrower ones only spread the work when there are too few classes.
_BUCKET_BYTES = 16 * 2**20
_MAX_BUCKET_ROWS, _MIN_BUCKET_ROWS = 1024, 64
_BLOCK_COLS, _MIN_BLOCK_COLS = 512, 64
# Narrow Grams (d <= 512) go as GEMM sub-panels of 16 (d <= 256) or 32 columns instead of one
# SYRK per block: a SYRK of a small block runs no faster than the square GEMM, while the
# sub-panels skip most products below the diagonal (60 000 x 128 into 10 classes: 29.6 -> 19.7
# ms, the floor's grouped GEMMs 19.7 ms; python bench/sweep_cpu_blocks.py panels, recorded in
# bench/RESULTS.md, "Gram panels").
_PANEL_COLS = ((256, 16), (512, 32))


#: What this adapter imports, lazily (:func:`masc_fast.backends.optional_import`).
IMPORTS = ("masc_fast._C",)


@functools.cache
def _ext() -> ModuleType:
    """``masc_fast._C``, imported once with its GEMM chosen (:mod:`.cpu_gemm`); raises
    ImportError (with the original cause) if absent."""
    ext = required_import(IMPORTS[0])
    choose_gemm(ext)
    return ext


def is_available() -> tuple[bool, str]:
    """``(True, "")`` if the extension imports, else ``(False, reason)``."""
    module, error = optional_import(IMPORTS[0])
    if module is None:
        return False, (
            f"the C++ extension masc_fast._C is not importable ({error}); reinstall with "
            "MASC_FAST_BUILD_EXT=1 to make a failed build an error"
        )
    return True, ""


def default_threads() -> int:
    """Workers the ops use when ``threads`` is not given: ``MASC_FAST_NUM_THREADS``, else
    torch's intra-op thread count (so masc_fast and torch share one budget)."""
    value = os.environ.get("MASC_FAST_NUM_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"MASC_FAST_NUM_THREADS must be a positive integer, got {value!r}")
        return int(value)
    return max(1, torch.get_num_threads())


def _threads(threads: int | None) -> int:
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"cpp backend: threads must be a positive integer, got {threads!r}")
    return threads


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's view of the BLAS pools loaded once ``_C`` (and so SciPy's BLAS) is."""
    _ext()
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


def _single_threaded_blas():
    """Context in which every BLAS pool runs one thread: the ops' workers call BLAS in parallel
    themselves, and a full BLAS pool per worker would oversubscribe the cores."""
    controller = _blas_controller()
    if all(info.get("num_threads") == 1 for info in controller.info()):
        return contextlib.nullcontext()
    return controller.limit(limits=1)


def describe() -> str:
    """OpenMP, worker count and BLAS of the extension, in one line (``masc-fast env``)."""
    ext = _ext()
    blas = [
        f"{info.get('internal_api')} {info.get('version')}"
        for info in _blas_controller().info()
        if "scipy.libs" in info.get("filepath", "")  # SciPy's wheel, not NumPy's copy
    ]
    openmp = "OpenMP" if ext.has_openmp else "no OpenMP (one thread)"
    return (
        f"{openmp}, {default_threads()} threads, {ext.blas_source()}"
        f" ({', '.join(blas) or 'version unknown'})"
    )


def scoring_block_rows(total_components: int, itemsize: int) -> int:
    """Rows per scoring block: 512, fewer (down to 128) where a worker's tile would pass 16 MiB."""
    rows = _TILE_BYTES // max(1, total_components * itemsize)
    return max(_MIN_BLOCK_ROWS, min(_MAX_BLOCK_ROWS, rows))


def gram_blocks(num_classes: int, dim: int, itemsize: int, threads: int) -> tuple[int, int]:
    """``(bucket_rows, block_cols)`` for :func:`gram_update`.

    Buckets hold at most 1024 rows and 16 MiB. Column blocks are 512 wide unless the classes
    alone give fewer than four tasks per worker, then narrower (down to 64) to spread the work.
    """
    bucket_rows = _BUCKET_BYTES // max(1, dim * itemsize)
    bucket_rows = max(_MIN_BUCKET_ROWS, min(_MAX_BUCKET_ROWS, bucket_rows))
    block_cols = _BLOCK_COLS
    wanted_blocks = -(-4 * threads // max(1, num_classes))
    if wanted_blocks > 1:
        block_cols = max(_MIN_BLOCK_COLS, -(-dim // wanted_blocks))
    return bucket_rows, min(block_cols, dim)


def gram_panel_cols(dim: int) -> int:
    """GEMM sub-panel width for :func:`gram_update` on a ``dim``-wide Gram; 0: one SYRK per
    column block (wide Grams, where it is the faster)."""
    for widest, cols in _PANEL_COLS:
        if dim <= widest:
            return cols
    return 0


def _check_cpu_float(name: str, tensor: torch.Tensor, ndim: int) -> None:
    if tensor.device.type != "cpu":
        raise ValueError(f"cpp backend: {name} must be a CPU tensor, got device {tensor.device}")
    if tensor.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"cpp backend: {name} must be float32 or float64, got {tensor.dtype}")
    if tensor.ndim != ndim:
        raise ValueError(f"cpp backend: {name} must be {ndim}-D, got shape {tuple(tensor.shape)}")


def subspace_scores(
    x: torch.Tensor,
    basis: torch.Tensor,
    offsets: torch.Tensor,
    *,
    complement: torch.Tensor | None = None,
    block_rows: int | None = None,
    precision: str = "fp32",
    threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-class cos² scores and the predicted class for every row of ``x``, on CPU.

    .. math:: s_{ik} = \min\left(\lVert U_k^\top x_i \rVert^2 / \lVert x_i \rVert^2,\ 1\right)

    Parameters
    ----------
    x : torch.Tensor, shape (n, d), float32 or float64, CPU
        Rows to score.
    basis : torch.Tensor, shape (d, R), same dtype as ``x``, CPU
        Concatenated class bases ``[U_1 … U_K]``.
    offsets : torch.Tensor, shape (K + 1,), int64, CPU
        Class k owns columns ``offsets[k]:offsets[k+1]`` of ``basis``; an empty segment marks
        an absent class (score 0, never predicted).
    complement : torch.Tensor, shape (K,), bool, optional
        Classes whose columns hold the complement ``W_k`` of their subspace (the trailing
        eigenvectors): scored as ``1 − ‖W_kᵀ x_i‖² / ‖x_i‖²``, clamped to [0, 1].
    block_rows : int, optional
        Rows per block; default :func:`scoring_block_rows` (a worker's tile ≤ 16 MiB).
    precision : {"fp32"}
        The CPU computes exact products in ``x``'s dtype; the reduced modes ("tf32",
        "tf32x3", "bf16") are GPU modes and raise here.
    threads : int, optional
        OpenMP workers; default :func:`default_threads`.

    Returns
    -------
    scores : torch.Tensor, shape (n, K), dtype of ``x``
        In [0, 1]; 0 for a zero row or an absent class.
    pred : torch.Tensor, shape (n,), int64
        Largest score among present classes, lowest index on ties; -1 if no class is present.

    Raises
    ------
    ImportError
        The extension was not built.
    TypeError, ValueError
        Wrong dtype, or wrong device/shape.

    Notes
    -----
    One fused pass: each worker multiplies a block of rows by the bases with one
    single-threaded BLAS GEMM into its own (column-major) tile, then sums each class's squared
    columns along the rows, the ratio to ‖x_i‖² and the argmax while the tile is in cache
    (energies and norms in float64). Extra memory is ``threads × block_rows × R`` elements and
    ``threads × block_rows × K`` float64, never O(n × R).

    Examples
    --------
    >>> import torch
    >>> from masc_fast.backends import cpp_ops
    >>> basis = torch.eye(3, dtype=torch.float64)[:, :2]  # class 0: e0, class 1: e1
    >>> x = torch.tensor([[3.0, 4.0, 0.0]], dtype=torch.float64)
    >>> scores, pred = cpp_ops.subspace_scores(x, basis, torch.tensor([0, 1, 2]))
    >>> scores, pred
    (tensor([[0.3600, 0.6400]], dtype=torch.float64), tensor([1]))
    """
    ext = _ext()
    _check_cpu_float("x", x, 2)
    _check_cpu_float("basis", basis, 2)
    if basis.dtype != x.dtype:
        raise TypeError(f"cpp backend: basis dtype {basis.dtype} differs from x dtype {x.dtype}")
    if basis.shape[0] != x.shape[1]:
        raise ValueError(
            f"cpp backend: basis has {basis.shape[0]} rows but x has {x.shape[1]} columns"
        )
    if offsets.device.type != "cpu":
        raise ValueError(f"cpp backend: offsets must be a CPU tensor, got device {offsets.device}")
    if offsets.dtype != torch.int64:
        raise TypeError(f"cpp backend: offsets must be int64, got {offsets.dtype}")
    if offsets.ndim != 1:
        raise ValueError(f"cpp backend: offsets must be 1-D, got shape {tuple(offsets.shape)}")
    if block_rows is not None and block_rows < 1:
        raise ValueError(f"cpp backend: block_rows must be >= 1, got {block_rows}")
    if precision != "fp32":
        raise ValueError(
            f"cpp backend: precision {precision!r} is a GPU mode; the CPU computes exact "
            "products (precision='fp32'); use backend='torch' or 'triton' for reduced precision"
        )

    threads = _threads(threads)
    block_rows = block_rows or scoring_block_rows(basis.shape[1], x.element_size())
    with torch.no_grad(), _single_threaded_blas():
        scores, pred = ext.subspace_scores(
            x.detach().contiguous().numpy(),
            basis.detach().contiguous().numpy(),
            offsets.contiguous().numpy(),
            block_rows,
            threads,
            complement_flags(complement, offsets.shape[0] - 1, x.device).to(torch.uint8).numpy(),
        )
    return torch.from_numpy(scores), torch.from_numpy(pred)


def gram_update(
    gram: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, threads: int | None = None
) -> float:
    r"""Add ``X_kᵀ X_k`` to ``gram[k]`` for every class k present in ``y`` (in place), on CPU.

    Rows are bucketed per class (a counting sort, no copy of ``x``) and each bucket of at most
    1024 rows is folded in with BLAS SYRK on the diagonal blocks and GEMM above them, in
    column blocks spread over ``threads`` OpenMP workers (:func:`gram_blocks`); Grams up to
    512 wide by narrow GEMM sub-panels instead (:func:`gram_panel_cols`).

    Parameters
    ----------
    gram : torch.Tensor, shape (K, d, d), float32 or float64, CPU, contiguous
        Updated in place; both triangles are written (exactly symmetric).
    x : torch.Tensor, shape (n, d), float32 or float64, CPU
        Rows; float32 rows go into a float64 Gram as float32 products over each bucket summed
        in float64 (the torch backend's policy); rows for a float32 Gram are rounded to
        float32 first.
    y : torch.Tensor, shape (n,), int64, CPU
        Labels in ``[0, K)``.
    threads : int, optional
        OpenMP workers; default :func:`default_threads`.

    Returns
    -------
    float
        The largest ``|x|`` entry read (every entry of ``x``), or NaN when ``x`` holds a NaN or
        an Inf: the buckets holding one are left out of the Gram, so a caller that relies on
        this as its finiteness check must restore the Grams (``GramAccumulator`` does).

    Raises
    ------
    ImportError
        The extension was not built.
    TypeError, ValueError
        Wrong dtype, or wrong device, layout or shape, or a label outside ``[0, K)``.

    Notes
    -----
    Work ``n · d²`` multiply-adds (SYRK computes one triangle). Extra memory per worker: one
    bucket (≤ 16 MiB) and one d × block_cols panel, plus ``n`` int64 for the sort.

    Examples
    --------
    >>> import torch
    >>> from masc_fast.backends import cpp_ops
    >>> gram = torch.zeros(2, 2, 2, dtype=torch.float64)
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
    >>> cpp_ops.gram_update(gram, x, torch.tensor([0, 1]))
    3.0
    >>> gram[0]
    tensor([[1., 2.],
            [2., 4.]], dtype=torch.float64)
    """
    ext = _ext()
    _check_cpu_float("gram", gram, 3)
    _check_cpu_float("x", x, 2)
    if not gram.is_contiguous():
        raise ValueError("cpp backend: gram must be contiguous (it is updated in place)")
    if y.device.type != "cpu":
        raise ValueError(f"cpp backend: y must be a CPU tensor, got device {y.device}")
    if y.dtype != torch.int64:
        raise TypeError(f"cpp backend: y must be int64, got {y.dtype}")
    if gram.dtype == torch.float32:
        x = x.float()  # float64 rows into a float32 Gram: round once, as torch's form does
    threads = _threads(threads)
    bucket_rows, block_cols = gram_blocks(gram.shape[0], gram.shape[1], x.element_size(), threads)
    with torch.no_grad(), _single_threaded_blas():
        return ext.gram_update(
            gram.detach().numpy(),
            x.detach().contiguous().numpy(),
            y.contiguous().numpy(),
            bucket_rows,
            block_cols,
            threads,
            gram_panel_cols(gram.shape[1]),
        )
