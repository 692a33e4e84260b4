"""One writer per run folder or sweep output: an advisory lock with its holder's name.

``masc-fast train``, ``probe`` and ``sweep`` hold :class:`FolderLock` on the folder they write
for as long as they run. The lock is ``fcntl.flock`` on ``<folder>/.masc-lock``, whose text
names the holder (command, pid, host, start time). The operating system releases a flock when
its process dies, however it dies, so a lock is never stale for long: a holder killed with
``kill -9`` leaves only its text behind, and the next command takes the lock over and says
whose it was. A second command on a held folder waits up to ``wait`` seconds, then stops with
:class:`FolderBusyError` naming the lock file and its holder.

Within one process the lock is re-entrant (a sweep holding its output folder may train and
probe cells inside it). ``flock`` is local to one machine on most network file systems: two
hosts sharing a folder over NFS are not kept apart.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

__all__ = ["LOCK_NAME", "FolderBusyError", "FolderLock"]

LOCK_NAME = ".masc-lock"
_POLL_SECONDS = 0.5
_HELD: dict[Path, tuple[int, int]] = {}  # folder -> (file descriptor, depth), this process


class FolderBusyError(RuntimeError):
    """Another process holds the folder's lock."""


def _holder_text(path: Path) -> str:
    """The holder named in a lock file, in words ('' when it names none)."""
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return ""
    if not holder:
        return ""
    return (
        f"{holder.get('command', '?')} (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, since {holder.get('since', '?')})"
    )


class FolderLock:
    """Hold ``folder``'s lock inside a ``with`` block (created if absent).

    ``command`` names the holder in messages; ``wait`` is how long to wait for another holder
    (seconds, default 0: stop at once).
    """

    def __init__(self, folder: str | os.PathLike, command: str, *, wait: float = 0.0):
        self.folder = Path(folder).resolve()
        self.path = self.folder / LOCK_NAME
        self.command = command
        self.wait = float(wait)

    def __enter__(self) -> FolderLock:
        from masc_fast.pipeline.ranks import is_main

        self._held = is_main()  # under torchrun rank 0 is the writer and holds the lock
        if not self._held:
            return self
        if self.folder in _HELD:
            descriptor, depth = _HELD[self.folder]
            _HELD[self.folder] = (descriptor, depth + 1)
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(descriptor)
                    raise FolderBusyError(
                        f"{self.folder} is in use by {_holder_text(self.path) or 'another process'}"
                        f" (lock {self.path}); wait for it to finish or pass a longer --wait"
                    ) from None
                time.sleep(_POLL_SECONDS)
        previous = _holder_text(self.path)
        if previous:  # a holder that ended without releasing: killed
            print(
                f"{self.command}: took over the lock of {self.folder} from {previous}, which "
                "is no longer running",
                file=sys.stderr,
            )
        holder = {
            "command": self.command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder).encode(), 0)
        _HELD[self.folder] = (descriptor, 1)
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._held:
            return
        descriptor, depth = _HELD[self.folder]
        if depth > 1:
            _HELD[self.folder] = (descriptor, depth - 1)
            return
        del _HELD[self.folder]
        os.ftruncate(descriptor, 0)  # released cleanly: no holder named
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)
