"""File output and input: atomic writes, checksummed tensor files, errors that name the file.

Atomic writes happen in a private temporary folder beside the target, then a rename.

Each write gets its own folder ``.masc-tmp-<pid>-<random>`` next to the target, so whatever
the writer creates there (safetensors, for one, writes through its own ``.tmp<random>`` file
and renames it) stays inside it. The folder is removed after the rename or on an error; a
process killed mid-write leaves it behind, with its pid in the name, and
:func:`remove_stale_temporaries` (called when a probe, a training run or a sweep starts)
removes the folders of processes that no longer run.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "CHECKSUM_KEY",
    "TEMPORARY_PREFIX",
    "atomic_path",
    "atomic_write_text",
    "disk_full_named",
    "process_alive",
    "read_json",
    "read_metadata",
    "read_tensors",
    "remove_stale_temporaries",
    "tensors_checksum",
    "write_tensors",
]

#: Start of the name of every temporary folder of an atomic write.
TEMPORARY_PREFIX = ".masc-tmp-"
_TEMPORARY = re.compile(re.escape(TEMPORARY_PREFIX) + r"(\d+)-")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path; on success it replaces ``path`` (ordinary permissions), so a
    crash never leaves a half-written file behind, and nothing else either (see the module)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{TEMPORARY_PREFIX}{os.getpid()}-"))
    tmp = work / path.name
    try:
        yield str(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def disk_full_named(path: str | os.PathLike, nbytes: int) -> Iterator[None]:
    """Turn a full disk (ENOSPC) inside the block into an error naming ``path``, the bytes
    the write needed and the bytes free there."""
    try:
        yield
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        folder = Path(path).parent
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        raise OSError(
            errno.ENOSPC,
            f"no space left on the device of {path}: the write needed {nbytes:,} bytes, "
            f"{free:,} are free there",
            str(path),
        ) from error


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (signal 0 reaches it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, *, recursive: bool = True) -> int:
    """Delete the temporary folders of atomic writes under ``folder`` whose process has ended
    (killed mid-write); returns how many. Folders of running processes are left alone."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    pattern = f"{TEMPORARY_PREFIX}*"
    removed = 0
    for entry in list(folder.rglob(pattern) if recursive else folder.glob(pattern)):
        match = _TEMPORARY.match(entry.name)
        if match and entry.is_dir() and not process_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with (
        disk_full_named(path, len(text.encode())),
        atomic_path(path) as tmp,
        open(tmp, "w") as handle,
    ):
        handle.write(text)
    return Path(path)


#: Metadata key of the CRC-32 that :func:`write_tensors` stores and :func:`read_tensors` checks.
CHECKSUM_KEY = "masc_fast_crc32"


def tensors_checksum(tensors) -> str:
    """CRC-32 (hex) over every tensor's name, dtype, shape and bytes, in name order."""
    import zlib

    import torch

    checksum = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        header = f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode()
        checksum = zlib.crc32(header, checksum)
        if tensor.numel():
            checksum = zlib.crc32(tensor.view(-1).view(torch.uint8).numpy(), checksum)
    return f"{checksum:08x}"


def write_tensors(path: str | os.PathLike, tensors, metadata: dict[str, str]) -> Path:
    """Write ``tensors`` (contiguous CPU tensors) and ``metadata`` to a safetensors file,
    atomically, with their checksum in the metadata."""
    from safetensors.torch import save_file

    metadata = {**metadata, CHECKSUM_KEY: tensors_checksum(tensors)}
    nbytes = sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
    with disk_full_named(path, nbytes), atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return Path(path)


@contextmanager
def _opened_tensors(path: Path):
    """``safe_open`` on ``path`` (CPU), with any failure to read it as a ``ValueError`` that
    names the path."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            yield handle
    except Exception as error:  # noqa: BLE001 - safetensors raises its own and OS errors
        raise ValueError(
            f"{path}: not a readable safetensors file ({type(error).__name__}: {error}); it "
            "may be truncated, corrupt or not written by masc_fast"
        ) from error


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file, without reading its tensors; ``ValueError`` naming
    the path when it is not a readable safetensors file."""
    with _opened_tensors(Path(path)) as handle:
        return dict(handle.metadata() or {})


def read_tensors(path: str | os.PathLike) -> tuple[dict, dict[str, str]]:
    """``(tensors on the CPU, metadata)`` of a safetensors file; ``ValueError`` naming the
    path when it is not a readable safetensors file (truncated, foreign, corrupt header) or
    its tensors do not match the checksum :func:`write_tensors` stored (files without one,
    written before, are read unchecked)."""
    path = Path(path)
    with _opened_tensors(path) as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    stored = metadata.get(CHECKSUM_KEY)
    if stored is not None and (actual := tensors_checksum(tensors)) != stored:
        raise ValueError(
            f"{path}: its tensors do not match their checksum (stored {stored}, read {actual}); "
            "the file is corrupt"
        )
    return tensors, metadata


def read_json(path: str | os.PathLike):
    """The JSON document in ``path``; ``ValueError`` naming the path and the position when it
    is not valid JSON (a truncated or hand-edited file)."""
    import json

    path = Path(path)
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: not valid JSON ({error}); it may be truncated or corrupt"
        ) from None
