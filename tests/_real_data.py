"""Where the real Fashion-MNIST is on this machine, for the tests that need it."""

from __future__ import annotations

import os
from pathlib import Path

from masc_fast.data.idx_folder import idx_folder

DEBIAN_ROOT = Path("/usr/share/datasets")
MISSING = (
    "the real Fashion-MNIST is not here: apt-get install dataset-fashion-mnist (files in "
    "/usr/share/datasets/fashion-mnist/) or set MASC_FAST_DATA_ROOT"
)


def real_fashion_root() -> Path | None:
    """``MASC_FAST_DATA_ROOT`` or Debian's folder, whichever holds Fashion-MNIST first."""
    roots = (
        [Path(os.environ["MASC_FAST_DATA_ROOT"])] if os.environ.get("MASC_FAST_DATA_ROOT") else []
    )
    for root in [*roots, DEBIAN_ROOT]:
        if idx_folder("fashion-mnist", root) or (root / "FashionMNIST" / "raw").is_dir():
            return root
    return None
