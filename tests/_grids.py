"""Test inputs about mlp-small on digits: sweep files (the keys a test varies) and rows."""

from __future__ import annotations

import json
from pathlib import Path


def digits_grid(folder: Path, *, train: dict | None = None, probe: dict | None = None, **sweep):
    """Write ``folder/grid.toml`` (out "out", models ["mlp-small"], datasets ["digits"], then
    ``sweep``'s keys, and optional [train] / [probe] tables); returns its path."""
    keys = {"out": "out", "models": ["mlp-small"], "datasets": ["digits"], **sweep}
    lines = ["[sweep]", *(f"{key} = {json.dumps(value)}" for key, value in keys.items())]
    for name, table in (("train", train), ("probe", probe)):
        if table:
            lines += [f"[{name}]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
    path = Path(folder) / "grid.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def model_row(**fields) -> dict:
    """A results-table row about mlp-small on digits as a whole (layer "model", no
    subspaces), from the learning-curves experiment unless ``fields`` say otherwise."""
    base = {
        "model": "mlp-small",
        "dataset": "digits",
        "experiment": "learning-curves",
        "layer": "model",
        "subspaces": "",
    }
    return {**base, **fields}
