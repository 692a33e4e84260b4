"""Decoded arrays cached as ``.npy`` files, written atomically, trusted only while fresh."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from masc_fast._io import atomic_path

logger = logging.getLogger(__name__)


def newest_mtime_ns(paths) -> int:
    """The latest modification time (ns) among ``paths`` (0 for none)."""
    return max((os.stat(path).st_mtime_ns for path in paths), default=0)


def read_cache(files: dict[str, Path], source_mtime_ns: int) -> dict[str, np.ndarray] | None:
    """The cached arrays, or ``None`` if a file is missing or older than the source.

    A cache file is fresh when it was written at or after ``source_mtime_ns``, the newest
    modification time of the folders it was decoded from (adding, removing or renaming a file
    in a folder updates that folder's time).
    """
    try:
        if min(newest_mtime_ns([path]) for path in files.values()) < source_mtime_ns:
            logger.info("cache in %s is older than the dataset; decoding again", _folder(files))
            return None
        return {key: np.load(path, allow_pickle=False) for key, path in files.items()}
    except (FileNotFoundError, NotADirectoryError):  # no cache yet
        return None
    except (OSError, ValueError) as error:  # unreadable or truncated: rebuild it
        logger.warning("ignoring unreadable cache in %s: %s", _folder(files), error)
        return None


def write_cache(files: dict[str, Path], arrays: dict[str, np.ndarray]) -> bool:
    """Save each array to its file via a temporary file and ``os.replace``; False on failure.

    A reader therefore sees either no file or a complete one. A folder that cannot be written
    (read-only dataset location) is not an error: the data are used uncached and a warning is
    logged.
    """
    folder = _folder(files)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for key, path in files.items():
            with atomic_path(path) as tmp, open(tmp, "wb") as stream:
                np.save(stream, arrays[key], allow_pickle=False)
                stream.flush()
                os.fsync(stream.fileno())
    except OSError as error:
        logger.warning(
            "cannot write the decoded-data cache in %s (%s); continuing without it", folder, error
        )
        return False
    logger.info("cached decoded data in %s", folder)
    return True


def _folder(files: dict[str, Path]) -> Path:
    return next(iter(files.values())).parent
