"""Atomic file output: write in a private temporary folder beside the target, then rename.

Each write gets its own folder ``.masc-tmp-<pid>-XXXX`` next to the target, so whatever the
writer creates there (safetensors, for one, writes through its own ``.tmpXXXXXX`` file and
renames it) stays inside it. The folder is removed after the rename or on an error; a process
killed mid-write leaves it behind, with its pid in the name, and
:func:`remove_stale_temporaries` (called when a probe, a training run or a sweep starts)
removes the folders of processes that no longer run.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "TEMPORARY_PREFIX",
    "atomic_path",
    "atomic_write_text",
    "process_alive",
    "remove_stale_temporaries",
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
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        handle.write(text)
    return Path(path)
