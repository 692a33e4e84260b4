"""Disk-backed activations of one layer, grouped by class, for fits that need the rows again.

The Gram trick and randomized PCA (:mod:`masc_fast.probing.stored_fit`) read a class's rows after the
streaming pass, and more than once. :class:`LayerShards` keeps them on disk: one raw row file
per class of the *primary* label set (the labels the model was trained on), appended in the
streaming pass, in float32 or float16, plus, per row, its label in every other label set. A
class of the primary set is one contiguous file; a class of another set is gathered from the
primary files with the stored labels. Reads go through ``numpy.memmap`` slices copied out in
chunks, and the map is dropped after each read so mapped pages do not pile up in RSS.

Rows are staged in memory up to ``stage_bytes`` and appended class by class. What is durable is
what :meth:`LayerShards.commit` returned; :meth:`LayerShards.restore` cuts every file back to
such a state, so a probe killed mid-pass resumes from its last checkpoint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from masc_fast._io import disk_full_named

__all__ = ["STORE_DTYPES", "LayerShards"]

STORE_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}
_LABEL_DTYPE = np.int32


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


class LayerShards:
    """Class-grouped row files of one layer under ``root/<layer>/``.

    Parameters
    ----------
    root : path
        Store directory (shared by all layers of a probe).
    layer : str
        Layer name (made file-name safe).
    num_classes, dim : int
        K and d.
    label_sets : sequence of str
        Label set names; the first one groups the files.
    dtype : torch.float32 or torch.float16
        Storage dtype of the rows; reads return float32.
    stage_bytes : int
        Staged rows are appended to disk once they exceed this many bytes.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        layer: str,
        num_classes: int,
        dim: int,
        label_sets: tuple[str, ...],
        dtype: torch.dtype = torch.float32,
        stage_bytes: int = 64 << 20,
    ):
        if dtype not in STORE_DTYPES:
            raise TypeError(f"activation store dtype must be float32 or float16, got {dtype}")
        self.layer = layer
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.label_sets = tuple(label_sets)
        self.dtype = dtype
        self._np_dtype = STORE_DTYPES[dtype]
        self.directory = Path(root) / _safe(layer)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._stage_bytes = int(stage_bytes)
        self._staged: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
        self._staged_bytes = 0
        self.rows = np.zeros(self.num_classes, dtype=np.int64)  # appended rows per file
        self._index: dict[str, list[list[tuple[int, np.ndarray]]]] = {}

    # ---- files
    def _rows_path(self, label: int) -> Path:
        return self.directory / f"rows_{label:05d}.bin"

    def _labels_path(self, label_set: str, label: int) -> Path:
        return self.directory / f"labels_{_safe(label_set)}_{label:05d}.i32"

    @property
    def row_bytes(self) -> int:
        return self.dim * np.dtype(self._np_dtype).itemsize

    @property
    def disk_bytes(self) -> int:
        return int(self.rows.sum()) * (self.row_bytes + 4 * (len(self.label_sets) - 1))

    # ---- writing
    def append(self, x: torch.Tensor, labels: Mapping[str, torch.Tensor]) -> None:
        """Stage a (n, d) batch with its labels in every label set."""
        if x.shape[0] == 0:
            return
        host = x.detach().to("cpu", self.dtype)
        self._staged.append((host, {name: labels[name].cpu() for name in self.label_sets}))
        self._staged_bytes += host.numel() * host.element_size()
        if self._staged_bytes >= self._stage_bytes:
            self.flush()

    def flush(self) -> None:
        """Append every staged row to its class file (sorted by the primary label)."""
        if not self._staged:
            return
        x = torch.cat([rows for rows, _ in self._staged]).numpy()
        labels = {
            name: torch.cat([sets[name] for _, sets in self._staged]).numpy()
            for name in self.label_sets
        }
        self._staged, self._staged_bytes = [], 0
        primary = labels[self.label_sets[0]]
        order = np.argsort(primary, kind="stable")
        bounds = np.searchsorted(primary[order], np.arange(self.num_classes + 1))
        for label in np.flatnonzero(np.diff(bounds)):
            rows = order[bounds[label] : bounds[label + 1]]
            block = np.ascontiguousarray(x[rows])
            with disk_full_named(self._rows_path(label), block.nbytes):
                with open(self._rows_path(label), "ab") as handle:
                    handle.write(block.tobytes())
                for name in self.label_sets[1:]:
                    with open(self._labels_path(name, label), "ab") as handle:
                        handle.write(labels[name][rows].astype(_LABEL_DTYPE).tobytes())
            self.rows[label] += len(rows)
        self._index.clear()

    def commit(self) -> list[int]:
        """Flush and fsync; returns the durable row count per class file (for a checkpoint)."""
        self.flush()
        for label in np.flatnonzero(self.rows):
            paths = [self._rows_path(label)]
            paths += [self._labels_path(name, label) for name in self.label_sets[1:]]
            for path in paths:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return self.rows.tolist()

    def restore(self, rows: list[int]) -> None:
        """Cut every class file back to ``rows`` (a :meth:`commit` result); drop what is staged."""
        if len(rows) != self.num_classes:
            raise ValueError(
                f"layer {self.layer!r}: checkpoint has {len(rows)} classes, store has "
                f"{self.num_classes}"
            )
        self._staged, self._staged_bytes = [], 0
        for label, count in enumerate(rows):
            files = [(self._rows_path(label), self.row_bytes)]
            files += [(self._labels_path(name, label), 4) for name in self.label_sets[1:]]
            for path, width in files:
                size = path.stat().st_size if path.exists() else 0
                if size < count * width:
                    raise ValueError(
                        f"layer {self.layer!r}: shard {path.name} holds {size // width} rows, "
                        f"the checkpoint needs {count}; the store is incomplete, start afresh"
                    )
                if size > count * width:
                    os.truncate(path, count * width)
        self.rows = np.asarray(rows, dtype=np.int64)
        self._index.clear()

    def remove(self) -> None:
        """Delete this layer's files."""
        for path in self.directory.glob("*"):
            path.unlink()
        self.directory.rmdir()

    # ---- reading
    def _segments(self, label_set: str, label: int) -> list[tuple[int, np.ndarray | None]]:
        """(file, row positions or None for the whole file) holding class ``label`` of a set.

        Staged rows are flushed first, so reads see every appended row."""
        self.flush()
        if label_set == self.label_sets[0]:
            return [(label, None)] if self.rows[label] else []
        if label_set not in self._index:
            if label_set not in self.label_sets:
                raise KeyError(f"layer {self.layer!r}: no label set {label_set!r} in the store")
            index: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(self.num_classes)]
            for source in np.flatnonzero(self.rows):
                path = self._labels_path(label_set, source)
                labels = np.fromfile(path, dtype=_LABEL_DTYPE, count=int(self.rows[source]))
                order = np.argsort(labels, kind="stable")
                bounds = np.searchsorted(labels[order], np.arange(self.num_classes + 1))
                for target in np.flatnonzero(np.diff(bounds)):
                    index[target].append((int(source), order[bounds[target] : bounds[target + 1]]))
            self._index[label_set] = index
        return self._index[label_set][label]

    def count(self, label_set: str, label: int) -> int:
        """Rows of class ``label`` in ``label_set``."""
        return sum(
            int(self.rows[source]) if rows is None else len(rows)
            for source, rows in self._segments(label_set, label)
        )

    def _map(self, source: int) -> np.memmap:
        return np.memmap(
            self._rows_path(source),
            dtype=self._np_dtype,
            mode="r",
            shape=(int(self.rows[source]), self.dim),
        )

    def chunks(
        self,
        label_set: str,
        label: int,
        *,
        chunk_rows: int,
        columns: slice = slice(None),
        device: torch.device | str = "cpu",
    ) -> Iterator[torch.Tensor]:
        """Class ``label``'s rows (of ``label_set``) as float32 chunks of <= ``chunk_rows`` on
        ``device``. On CUDA, whole contiguous rows go through pinned double buffers
        (:class:`~masc_fast.probing.streaming.HostChunkStream`); consume each chunk before the next."""
        chunk_rows = max(1, int(chunk_rows))
        device = torch.device(device)
        for source, positions in self._segments(label_set, label):
            mapped = self._map(source)
            try:
                if device.type == "cuda" and positions is None and columns == slice(None):
                    from masc_fast.probing.streaming import HostChunkStream

                    with HostChunkStream(
                        mapped, device=device, rows_per_chunk=chunk_rows, dtype=torch.float32
                    ) as stream:
                        for _, block in stream:
                            yield block
                    continue
                total = len(mapped) if positions is None else len(positions)
                for start in range(0, total, chunk_rows):
                    stop = min(total, start + chunk_rows)
                    if positions is None:
                        block = mapped[start:stop, columns]
                    else:
                        block = mapped[positions[start:stop], columns]
                    yield torch.from_numpy(np.array(block, dtype=np.float32)).to(device)
            finally:
                del mapped

    def read(
        self,
        label_set: str,
        label: int,
        *,
        columns: slice = slice(None),
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """All rows of a class (of ``label_set``) as one float32 tensor, optionally some columns."""
        width = len(range(self.dim)[columns])
        parts = [
            chunk.clone() if torch.device(device).type == "cuda" else chunk
            for chunk in self.chunks(
                label_set, label, chunk_rows=1 << 30, columns=columns, device=device
            )
        ]
        if not parts:
            return torch.zeros(0, width, device=device)
        return parts[0] if len(parts) == 1 else torch.cat(parts)
