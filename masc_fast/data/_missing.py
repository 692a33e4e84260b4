"""The error raised when a dataset is not on disk: what was looked for and how to get it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def missing_dataset(
    name: str,
    root: Path | None,
    holds: str,
    looked_at: Sequence[Path] = (),
    *,
    url: str | None = None,
) -> FileNotFoundError:
    """A ``FileNotFoundError`` naming the dataset, the paths looked at and the ways to get it.

    ``holds`` is the layout expected under the data root (``"MNIST/raw/"``); ``url`` is the
    archive ``download=True`` fetches, when the message should name it.
    """
    fetch = f" fetches {url}" if url else ""
    if root is None:
        return FileNotFoundError(
            f"dataset {name!r} needs a data root and none was given (root=None), so no path "
            f"was looked at. Pass root=DIR (CLI: --data-root DIR), the folder that holds or "
            f"will hold {holds}; add download=True (CLI: --download) to fetch it there"
            f"{' from ' + url if url else ''}."
        )
    paths = ", ".join(str(path) for path in looked_at)
    return FileNotFoundError(
        f"dataset {name!r} not found under data root {root}: missing {paths}. To get it, "
        f"pass download=True (CLI: --download), which{fetch or ' downloads it'} into {root}, "
        f"or point root (CLI: --data-root) at the folder that holds {holds}."
    )
