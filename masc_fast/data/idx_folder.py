"""MNIST and Fashion-MNIST from a folder of idx files, gzipped or not: Debian's layout.

Debian's ``dataset-fashion-mnist`` package installs the four original files, gzipped, as
``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``, so with
``root=/usr/share/datasets`` the dataset is read from ``<root>/<name>/`` directly: each file is
decompressed in memory and its idx header parsed here (no unpacking to disk, no copy of the
folder, no torchvision). torchvision's own layout (``<root>/FashionMNIST/raw/``) is tried first
by :func:`masc_fast.data.load_dataset`; this one is the fallback.

The idx format (LeCun's): a big-endian header, magic ``0x00000800 | type`` with type ``0x08``
(unsigned bytes) and the number of dimensions in its last byte, then one int32 size per
dimension, then the values.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from masc_fast.data.catalog import dataset_info
from masc_fast.data.splits import LabelledSplit

__all__ = ["IDX_NAMES", "idx_folder", "idx_paths", "load_idx_folder", "read_idx"]

#: Datasets stored as idx files: the folder name under the data root is the dataset's name.
IDX_NAMES = ("mnist", "fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UNSIGNED_BYTE = 0x08


def idx_paths(folder: Path) -> list[Path] | None:
    """The four idx files of ``folder`` (each ``.gz`` or plain), or None if one is missing."""
    found = []
    for stems in _FILES.values():
        for stem in stems:
            candidates = [folder / f"{stem}.gz", folder / stem]
            path = next((path for path in candidates if path.is_file()), None)
            if path is None:
                return None
            found.append(path)
    return found


def idx_folder(name: str, root: Path) -> Path | None:
    """``<root>/<name>/`` when it holds the four idx files of ``name``, else None."""
    if name not in IDX_NAMES:
        return None
    folder = Path(root) / name
    return folder if idx_paths(folder) is not None else None


def read_idx(path: Path) -> np.ndarray:
    """The array an idx file holds (unsigned bytes), read from ``path`` (gzipped or not).

    Raises
    ------
    ValueError
        A file that is not idx: a bad magic number, a type other than unsigned bytes, or a size
        that disagrees with the header (the message names the file).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:  # gzip's "not a gzipped file", truncated streams
        raise ValueError(f"{path}: cannot read it as an idx file ({error})") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an idx file (magic number {raw[:4].hex() or 'missing'})")
    kind, dims = raw[2], raw[3]
    if kind != _UNSIGNED_BYTE:
        raise ValueError(f"{path}: idx type 0x{kind:02x}, expected unsigned bytes (0x08)")
    header = 4 + 4 * dims
    shape = tuple(int(size) for size in np.frombuffer(raw[4:header], dtype=">i4"))
    expected = int(np.prod(shape)) if shape else 0
    if len(shape) != dims or len(raw) - header != expected:
        raise ValueError(
            f"{path}: the header says {shape} values ({expected} bytes) but the file holds "
            f"{len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_idx_folder(name: str, folder: Path) -> tuple[LabelledSplit, LabelledSplit]:
    """Train and test splits of ``name`` from the idx files in ``folder`` (dataset order)."""
    info = dataset_info(name)
    paths = idx_paths(Path(folder))
    if paths is None:
        raise FileNotFoundError(f"{folder} does not hold the four idx files of {name!r}")
    splits = []
    for split, (images_path, labels_path) in zip(_FILES, (paths[:2], paths[2:])):
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{folder}: {images_path.name} holds {images.shape} and {labels_path.name} "
                f"{labels.shape}; expected (N, 28, 28) images and N labels"
            )
        data = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, 28, 28), owns its memory
        splits.append(
            LabelledSplit(name, split, data, torch.from_numpy(labels.astype(np.int64)), info)
        )
    return splits[0], splits[1]
