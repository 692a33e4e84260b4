"""How each probed layer is fitted, chosen from its size and a memory budget.

* ``gram``: stream the (K, d, d) Grams (:class:`~masc_fast.GramAccumulator`), nothing stored.
* ``stored``: keep the rows on disk, grouped by class, and fit each class afterwards with the
  Gram trick or randomized PCA (:mod:`masc_fast.probing.stored_fit`), whichever its row count allows.
* ``gram_trick`` / ``randomized``: ``stored`` with that method forced for every class.

``auto`` gives ``gram`` to the layers whose Grams (K·d²·8 bytes per label set) fit half the
budget, smallest first, and ``stored`` to the rest; the other half is left for the fitted bases,
scoring and the model. The budget defaults to half the machine's memory (CPU) or half the free
memory of the device (CUDA).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

__all__ = [
    "STRATEGIES",
    "default_memory_budget",
    "parse_bytes",
    "plan_strategies",
    "planned_disk_bytes",
]

STRATEGIES = ("auto", "gram", "stored", "gram_trick", "randomized")
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20}
_UNITS |= {"mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tib": 2**40}


def parse_bytes(value: int | str) -> int:
    """A byte count from an int or a string like ``"8GiB"``, ``"512 MB"`` (powers of two)."""
    if isinstance(value, bool):
        raise TypeError(f"memory_budget must be bytes (int) or a string like '8GiB', got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"memory_budget must be positive, got {value}")
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        if match and match.group(2).lower() in _UNITS:
            parsed = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
            if parsed > 0:
                return parsed
        raise ValueError(f"memory_budget {value!r} is not a size like '8GiB' or '512MB'")
    raise TypeError(f"memory_budget must be bytes (int) or a string like '8GiB', got {value!r}")


def default_memory_budget(device: torch.device) -> int:
    """Half the free memory of a CUDA device, else half the host's physical memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def _check(name: str | None, value: str) -> str:
    if value not in STRATEGIES:
        subject = "strategy" if name is None else f"strategy for layer {name!r}"
        raise ValueError(f"{subject} must be one of {', '.join(STRATEGIES)}, got {value!r}")
    return value


def plan_strategies(
    dims: Mapping[str, int],
    *,
    num_classes: int,
    label_sets: int,
    memory_budget: int,
    requested: str | Mapping[str, str] = "auto",
) -> dict[str, str]:
    """The strategy of every layer: ``requested`` where it names one, else the ``auto`` rule."""
    if isinstance(requested, str):
        wanted = {layer: _check(None, requested) for layer in dims}
    else:
        unknown = set(requested) - set(dims)
        if unknown:
            raise ValueError(f"strategy names layers that are not probed: {sorted(unknown)}")
        wanted = {layer: _check(layer, requested.get(layer, "auto")) for layer in dims}
    room = memory_budget // 2
    plan = {}
    for layer in sorted(dims, key=lambda name: dims[name]):
        if wanted[layer] != "auto":
            plan[layer] = wanted[layer]
            continue
        gram_bytes = num_classes * dims[layer] ** 2 * 8 * label_sets
        if gram_bytes <= room:
            plan[layer], room = "gram", room - gram_bytes
        else:
            plan[layer] = "stored"
    return {layer: plan[layer] for layer in dims}


def planned_disk_bytes(
    dims: Mapping[str, int],
    plan: Mapping[str, str],
    *,
    rows: int,
    num_classes: int,
    label_sets: int,
    checkpoint: bool,
    store_itemsize: int = 4,
) -> int:
    """Bytes a probe writes for ``rows`` training rows under ``plan``: the stored layers' rows
    (``store_itemsize`` per value, plus an int32 label per extra label set) and, with
    ``checkpoint``, a new fit-pass state beside the old one holding every streamed Gram
    (K·d² float64 per label set)."""
    need = sum(
        rows * (dims[layer] * store_itemsize + 4 * (label_sets - 1))
        for layer, strategy in plan.items()
        if strategy != "gram"
    )
    if checkpoint:
        need += 2 * sum(
            label_sets * num_classes * dims[layer] ** 2 * 8
            for layer, strategy in plan.items()
            if strategy == "gram"
        )
    return need
