"""Backend registry: which implementation of the MASC ops runs, and why.

Precedence: an explicit ``backend=`` argument, then ``MASC_FAST_BACKEND``, then ``auto``
(CUDA tensors → ``triton`` if importable, else ``torch``; CPU tensors → ``cpp`` if the
extension is built, else ``torch``; with ``op=`` and ``shape=``, the CPU choice between ``cpp``
and ``torch`` follows the medians measured for that op, :mod:`masc_fast.backends.cpu_choice`).
``reference`` is never chosen automatically. An explicit backend that cannot run raises
:class:`BackendUnavailableError`; an automatic fallback is logged once at INFO. With ``op=``,
the name returned is the backend whose code runs that op: an adapter without a kernel of its
own for an op lists it in ``DELEGATED`` (the Triton adapter runs ``gram_update`` with the torch
forms), so callers record what actually ran.
"""

from __future__ import annotations

import importlib
import logging
import os
from functools import cache
from types import ModuleType

import torch

from masc_fast.backends.cpu_choice import cpu_winner

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "BackendUnavailableError",
    "available",
    "check_backend_name",
    "get_backend",
    "optional_import",
    "required_import",
    "select_backend",
]

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "cpp", "triton", "reference")
# Precision of the scoring GEMM's products for float32 rows: "fp32" exact (the default);
# "tf32", "tf32x3" and "bf16" are GPU tensor-core modes (triton backend; torch where the
# device has them). Their agreement with float64 is in bench/RESULTS.md. The Triton kernels
# keep their own copy (kernels import nothing from masc_fast but kernels._utils).
PRECISIONS = ("fp32", "tf32", "tf32x3", "bf16")
_MODULES = {
    "torch": "torch_ops",
    "cpp": "cpp_ops",
    "triton": "triton_ops",
    "reference": "reference_ops",
}


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run here; ``__cause__`` holds the reason."""


@cache
def optional_import(name: str) -> tuple[ModuleType | None, ImportError | None]:
    """``(module, None)`` when ``name`` imports, else ``(None, its ImportError)``; tried once.

    How the adapters reach their heavy dependencies (``masc_fast._C``, ``triton``,
    ``masc_fast.kernels``): lazily, once, keeping the original error for
    :class:`BackendUnavailableError`.
    """
    try:
        return importlib.import_module(name), None
    except ImportError as error:
        return None, error


def required_import(name: str) -> ModuleType:
    """``name``, imported once; ImportError naming it (with the original cause) if absent."""
    module, error = optional_import(name)
    if module is None:
        raise ImportError(f"{name} is not importable: {error}") from error
    return module


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{_MODULES[name]}")


@cache
def _availability(name: str) -> tuple[bool, str]:
    try:
        module = _module(name)
    except ImportError as error:
        return False, f"its adapter does not import ({error})"
    check = getattr(module, "is_available", None)
    return check() if check is not None else (True, "")


def available() -> dict[str, tuple[bool, str]]:
    """``{backend: (usable, reason it is not)}`` for every backend."""
    return {name: _availability(name) for name in BACKENDS}


def check_backend_name(name: str, *, allow_auto: bool = True) -> None:
    """Raise ``ValueError`` unless ``name`` is a backend name (or ``"auto"``, where allowed);
    whether it can run here is not asked: a grid for a GPU machine is checked on a laptop."""
    if name not in BACKENDS and not (allow_auto and name == "auto"):
        expected = ", ".join(BACKENDS)
        raise ValueError(f"unknown backend {name!r}; expected one of {expected} or 'auto'")


def get_backend(name: str) -> ModuleType:
    """The ops module of backend ``name``; raises if it cannot run here."""
    check_backend_name(name, allow_auto=False)
    usable, reason = _availability(name)
    if not usable:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}") from (
            _import_error(name) or ImportError(reason)
        )
    return _module(name)


def _import_error(name: str) -> BaseException | None:
    """The original exception that makes backend ``name`` unusable: the adapter's own import
    error, else the first of its ``IMPORTS`` that fails."""
    try:
        module = _module(name)
    except ImportError as error:
        return error
    for needed in getattr(module, "IMPORTS", ()):
        error = optional_import(needed)[1]
        if error is not None:
            return error
    return None


@cache
def _log_fallback_once(wanted: str, reason: str) -> None:
    logger.info("backend %r unavailable (%s); falling back to 'torch'", wanted, reason)


def select_backend(
    requested: str | None = "auto",
    device: torch.device | str = "cpu",
    *,
    op: str | None = None,
    shape: tuple[int, ...] | None = None,
) -> str:
    """Resolve ``requested`` (or ``MASC_FAST_BACKEND``, or auto) to a usable backend name.

    ``op`` and ``shape`` (``(n, d, R)`` for "subspace_scores", ``(K, d, rows)`` for
    "gram_update") let auto pick, on a CPU with the extension built, whichever of cpp and
    torch was measured faster there (:func:`masc_fast.backends.cpu_choice.cpu_winner`). With
    ``op``, an adapter that delegates the op (``DELEGATED``) resolves to the backend that runs
    it, so the name returned is always the code that runs.
    """
    if requested in (None, "auto"):
        requested = os.environ.get("MASC_FAST_BACKEND", "auto") or "auto"
    if requested != "auto":
        get_backend(requested)
        return _runs(requested, op)
    wanted = "triton" if torch.device(device).type == "cuda" else "cpp"
    usable, reason = _availability(wanted)
    if usable:
        if wanted == "cpp" and op is not None and shape is not None:
            return cpu_winner(op, shape)
        return _runs(wanted, op)
    _log_fallback_once(wanted, reason)
    return "torch"


def _runs(name: str, op: str | None) -> str:
    """The backend whose code runs ``op`` when backend ``name`` is asked for it."""
    if op is None:
        return name
    return getattr(_module(name), "DELEGATED", {}).get(op, name)
