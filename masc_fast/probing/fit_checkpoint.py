"""Durable state of a probe's fit pass, so a killed probe resumes where it stopped.

Under the probe's ``activation_dir``: ``checkpoint.json`` (batches done, a fingerprint of each
batch's labels, layer plans, shard row counts, the model's running accuracy counts) and
``state_<n>.safetensors`` (Grams, class energies and counts). The tensors are written first
under a new name, then the manifest is replaced atomically, then the old tensors are deleted:
at every instant the manifest names a complete tensor file. Shard files may hold rows past the
manifest; :meth:`masc_fast.probing.activation_store.LayerShards.restore` cuts them back.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from masc_fast._io import atomic_write_text, read_json, read_tensors, write_tensors

__all__ = ["FitCheckpoint", "label_fingerprint"]

MANIFEST = "checkpoint.json"
FORMAT = 1


def label_fingerprint(*labels) -> int:
    """CRC32 of a batch's label tensors (None skipped): resume checks the loader replays."""
    checksum = 0
    for value in labels:
        if value is None:
            continue
        array = np.ascontiguousarray(torch.as_tensor(value).cpu().numpy().astype(np.int64))
        checksum = zlib.crc32(array.tobytes(), checksum)
    return checksum


class FitCheckpoint:
    """Read and write the fit-pass checkpoint in ``directory``."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def load(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(manifest, tensors) of the last complete checkpoint; ``ValueError`` naming the file
        when the manifest or the tensors are damaged."""
        manifest = read_json(self.manifest_path)
        if manifest.get("format") != FORMAT:
            raise ValueError(
                f"{self.manifest_path}: checkpoint format {manifest.get('format')!r}, this "
                f"version reads {FORMAT}; start afresh in an empty directory"
            )
        name = manifest.get("tensors")
        tensors = read_tensors(self.directory / name)[0] if name else {}
        return manifest, tensors

    def save(self, manifest: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Write ``tensors`` then ``manifest`` (atomically), then drop the previous tensors."""
        previous, serial = None, 1
        if self.exists():
            last = read_json(self.manifest_path)
            previous, serial = last.get("tensors"), int(last.get("serial", 0)) + 1
        name = f"state_{serial:06d}.safetensors"
        write_tensors(
            self.directory / name, {key: value.contiguous() for key, value in tensors.items()}, {}
        )
        manifest = dict(manifest, format=FORMAT, serial=serial, tensors=name)
        atomic_write_text(self.manifest_path, json.dumps(manifest))
        if previous and previous != name:
            (self.directory / previous).unlink(missing_ok=True)

    def remove_orphans(self) -> None:
        """Delete tensor files the manifest does not name: a kill after the new tensors were
        written and before the manifest was replaced leaves one (all of them when there is no
        manifest)."""
        named = None
        if self.exists():
            named = read_json(self.manifest_path).get("tensors")
        for path in self.directory.glob("state_*.safetensors"):
            if path.name != named:
                path.unlink(missing_ok=True)

    def remove(self) -> None:
        """Delete the manifest and its tensors (the shards are removed by their owners)."""
        if self.exists():
            name = read_json(self.manifest_path).get("tensors")
            if name:
                (self.directory / name).unlink(missing_ok=True)
            self.manifest_path.unlink()
