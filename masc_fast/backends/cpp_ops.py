"""Adapter for the compiled CPU extension ``masc_fast._C``.

The extension is imported lazily, once, on first use; ``import masc_fast`` never needs it.
Inputs are validated upstream (``masc_fast._validation``); here we only assert what protects
memory (device, dtype, shape), make arrays contiguous and typed on purpose, and hand CPU
tensors to the bindings with ``Tensor.numpy()`` (no copy).
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch

from masc_fast.backends import torch_ops

__all__ = ["is_available", "gram_update", "subspace_scores"]

_FLOAT_DTYPES = (torch.float32, torch.float64)


@functools.lru_cache(maxsize=1)
def _import_ext() -> tuple[ModuleType | None, ImportError | None]:
    try:
        from masc_fast import _C
    except ImportError as exc:
        return None, exc
    return _C, None


def _ext() -> ModuleType:
    """``masc_fast._C``, imported once; raises ImportError (with the original cause) if absent."""
    module, error = _import_ext()
    if module is None:
        raise ImportError(f"masc_fast._C is not importable: {error}") from error
    return module


def is_available() -> tuple[bool, str]:
    """``(True, "")`` if the extension imports, else ``(False, reason)``."""
    module, error = _import_ext()
    if module is None:
        return False, (
            f"the C++ extension masc_fast._C is not importable ({error}); reinstall with "
            "MASC_FAST_BUILD_EXT=1 to make a failed build an error"
        )
    return True, ""


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
    block_rows: int | None = None,
    precision: str = "fp32",
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
    block_rows : int, optional
        Rows per block; default keeps one block's (rows, R) projection near 32 MiB.
    precision : {"fp32"}
        The CPU computes exact products in ``x``'s dtype; the reduced modes ("tf32",
        "tf32x3", "bf16") are GPU modes and raise here.

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
    Each block costs one BLAS GEMM (``x_blk @ basis``) plus the C++ reduction, which sums
    energies and ‖x_i‖² in float64. Extra memory is O(block_rows × R), never O(n × R).

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

    offsets_np = offsets.contiguous().numpy()

    def epilogue(proj: torch.Tensor, sq_norms: torch.Tensor):
        scores, pred = ext.projection_scores(
            proj.contiguous().numpy(), offsets_np, sq_norms.contiguous().numpy()
        )
        return torch.from_numpy(scores), torch.from_numpy(pred)

    return torch_ops.blocked_projection_scores(x, basis, offsets, epilogue, block_rows)


def gram_update(gram: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
    """The cpp backend reuses the torch (BLAS) Gram update until the C++ Gram op lands."""
    torch_ops.gram_update(gram, x, y)
