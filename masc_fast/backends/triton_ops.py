"""Adapter for the Triton kernels ``masc_fast.kernels``.

Triton and the kernels are imported lazily, once, on first use; ``import masc_fast`` never
needs them. The backend runs on CUDA tensors, or on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1``, which tests use to run the kernels without a GPU). Inputs are
validated upstream (``masc_fast._validation``); here we only assert what protects memory
(device, dtype, shape) and call the fused scoring kernel ``kernels.subspace_scores``.
"""

from __future__ import annotations

import os
from types import ModuleType

import torch

from masc_fast._magnitude import rows_in_range
from masc_fast.backends import optional_import, required_import, torch_ops

__all__ = ["DELEGATED", "IMPORTS", "is_available", "gram_update", "subspace_scores"]

#: Ops this adapter runs with another backend's code: no Triton Gram kernel ships (none was
#: measured to beat cuBLAS), so ``select_backend(op="gram_update")`` names ``torch``.
DELEGATED = {"gram_update": "torch"}

_FLOAT_DTYPES = (torch.float32, torch.float64)


#: What this adapter imports, lazily (:func:`masc_fast.backends.optional_import`); triton first,
#: because ``@triton.jit`` fixes compiled-or-interpreted when the kernel module is first imported.
IMPORTS = ("triton", "masc_fast.kernels")


def _kernels() -> ModuleType:
    """``masc_fast.kernels``, imported once; raises ImportError (with the cause) if absent."""
    return required_import("masc_fast.kernels")


def _is_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def is_available() -> tuple[bool, str]:
    """``(True, "")`` if triton imports and there is a CUDA device or ``TRITON_INTERPRET=1``.

    Triton itself is checked before the kernels are imported, because ``@triton.jit`` fixes
    compiled-or-interpreted when the kernel module is first imported.
    """
    missing = []
    error = optional_import("triton")[1]
    if error is not None:
        missing.append(f"triton is not importable ({error}); install masc_fast[cuda]")
    if not (torch.cuda.is_available() or _is_interpreting()):
        missing.append(
            "no CUDA device (torch.cuda.is_available() is False) and TRITON_INTERPRET is not '1'"
        )
    if missing:
        return False, "; ".join(missing)
    _, error = optional_import("masc_fast.kernels")
    if error is not None:
        return False, f"masc_fast.kernels is not importable ({error})"
    return True, ""


def _check_float(name: str, tensor: torch.Tensor, ndim: int) -> None:
    if tensor.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"triton backend: {name} must be float32 or float64, got {tensor.dtype}")
    if tensor.ndim != ndim:
        raise ValueError(
            f"triton backend: {name} must be {ndim}-D, got shape {tuple(tensor.shape)}"
        )


def subspace_scores(
    x: torch.Tensor,
    basis: torch.Tensor,
    offsets: torch.Tensor,
    *,
    complement: torch.Tensor | None = None,
    block_rows: int | None = None,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-class cos² scores and the predicted class for every row of ``x``, with Triton.

    .. math:: s_{ik} = \min\left(\lVert U_k^\top x_i \rVert^2 / \lVert x_i \rVert^2,\ 1\right)

    Parameters
    ----------
    x : torch.Tensor, shape (n, d), float32 or float64, CUDA (or CPU under TRITON_INTERPRET=1)
        Rows to score.
    basis : torch.Tensor, shape (d, R), same dtype and device as ``x``
        Concatenated class bases ``[U_1 … U_K]``.
    offsets : torch.Tensor, shape (K + 1,), int64, any device (moved to ``x``'s)
        Class k owns columns ``offsets[k]:offsets[k+1]`` of ``basis``; an empty segment marks
        an absent class (score 0, never predicted).
    complement : torch.Tensor, shape (K,), bool, optional
        Classes whose columns hold the complement ``W_k`` of their subspace: scored as
        ``1 − ‖W_kᵀ x_i‖² / ‖x_i‖²``, clamped to [0, 1].
    block_rows : int, optional
        Rows per launch; default: all rows in one launch (the fused kernel's extra memory is
        the (n, K) energies, so blocking is only needed to bound that).
    precision : {"fp32", "tf32", "tf32x3", "bf16"}
        Products of the fused GEMM (see ``masc_fast.kernels.subspace_scores``); float64 ``x``
        takes "fp32" only.

    Returns
    -------
    scores : torch.Tensor, shape (n, K), dtype and device of ``x``
        In [0, 1]; 0 for a zero row or an absent class.
    pred : torch.Tensor, shape (n,), int64, device of ``x``
        Largest score among present classes, lowest index on ties; -1 if no class is present.

    Raises
    ------
    ImportError
        Triton or the kernels are not importable.
    TypeError, ValueError
        Wrong dtype, or wrong device/shape/precision.

    Notes
    -----
    One fused kernel per launch: tiles of ``X·U`` are squared and summed into per-class
    energies in registers and never written out; a second kernel takes ‖x‖² (float64), the
    ratio and the argmax. One small device-to-host sync per launch checks ``offsets``.

    Examples
    --------
    >>> import torch  # CPU tensors as here need TRITON_INTERPRET=1 set before the first call
    >>> from masc_fast.backends import triton_ops
    >>> basis = torch.eye(3, dtype=torch.float64)[:, :2]  # class 0: e0, class 1: e1
    >>> x = torch.tensor([[3.0, 4.0, 0.0]], dtype=torch.float64)
    >>> triton_ops.subspace_scores(x, basis, torch.tensor([0, 1, 2]))
    (tensor([[0.3600, 0.6400]], dtype=torch.float64), tensor([1]))
    """
    kernels = _kernels()
    _check_float("x", x, 2)
    _check_float("basis", basis, 2)
    if basis.dtype != x.dtype:
        raise TypeError(f"triton backend: basis dtype {basis.dtype} differs from x dtype {x.dtype}")
    if basis.shape[0] != x.shape[1]:
        raise ValueError(
            f"triton backend: basis has {basis.shape[0]} rows but x has {x.shape[1]} columns"
        )
    if basis.device != x.device:
        raise ValueError(f"triton backend: basis is on {basis.device} but x is on {x.device}")
    if x.device.type != "cuda" and not _is_interpreting():
        raise ValueError(
            f"triton backend: x must be a CUDA tensor (got device {x.device}); CPU tensors run "
            "only under TRITON_INTERPRET=1"
        )
    if offsets.dtype != torch.int64:
        raise TypeError(f"triton backend: offsets must be int64, got {offsets.dtype}")
    if offsets.ndim != 1:
        raise ValueError(f"triton backend: offsets must be 1-D, got shape {tuple(offsets.shape)}")
    if block_rows is not None and block_rows < 1:
        raise ValueError(f"triton backend: block_rows must be >= 1, got {block_rows}")

    x = rows_in_range(x)  # the kernel's ‖x‖² and energies in range for rows of 1e-30 … 1e30
    offsets = offsets.to(device=x.device).contiguous()
    flags = torch_ops.complement_flags(complement, offsets.shape[0] - 1, x.device)
    n = x.shape[0]
    if block_rows is None or block_rows >= n:
        return kernels.subspace_scores(x, basis, offsets, flags, precision=precision)
    parts = [
        kernels.subspace_scores(
            x[start : start + block_rows], basis, offsets, flags, precision=precision
        )
        for start in range(0, n, block_rows)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def gram_update(gram: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
    """The torch Gram update (cuBLAS GEMMs on CUDA), under this adapter's name.

    A Triton Gram kernel is only worth keeping where it beats the torch forms on a GPU
    (``masc_fast.backends.gram_forms``); none has been measured there yet, so none ships, and
    :data:`DELEGATED` makes the dispatcher record ``torch`` for this op.
    """
    torch_ops.gram_update(gram, x, y)
