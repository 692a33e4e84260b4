"""The authors' MASC procedure, step by step (SPEC §5.2 and §5.3), for the benchmarks.

What the paper's code does, with its costs, so benchmarks can time it next to the engine:

* fit (SPEC §5.2): per class, the rows in dataset order interleaved with their negatives
  (``x₁, −x₁, x₂, −x₂, …``), ``np.cov(·, rowvar=False)`` in float64, ``np.linalg.eigh``,
  eigenpairs reordered by descending eigenvalue, ratios ``λ_i / Σλ`` (Python ``sum``), and
  ``k = #(cumulative ratios <= t) + 1`` leading eigenvectors kept, rows L2-normalised;
* predict (SPEC §5.3): float64 chunks of 100 rows; per class ``p = (x Vᵀ) V``, the cosine
  from the diagonal of the full 100 × 100 product ``x pᵀ`` over ``‖x‖ ‖p‖``, arccos in
  degrees, and the first class with the smallest angle (``torch.min``).

Left out: the per-sample Python gathering and pickling of activations (SPEC §5.1), which are
I/O, not MASC. Bases are ``(r_k, d)`` float64 tensors, as the authors saved them.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.preprocessing import normalize

__all__ = ["authors_fit", "authors_predict"]

CHUNK_ROWS = 100  # SPEC §5.3: the authors score 100 rows at a time


def authors_fit(x, y, num_classes: int, variance: float = 0.99) -> list[torch.Tensor | None]:
    """Class bases ``V_c`` (r_c, d), float64, by the authors' recipe; ``None`` for no rows.

    ``x`` (n, d) float array or tensor, ``y`` (n,) integer labels; ``variance`` in (0, 1).
    """
    if not 0 < variance < 1:
        raise ValueError(f"authors_fit takes a fractional threshold in (0, 1), got {variance}")
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    y = np.asarray(y.numpy() if isinstance(y, torch.Tensor) else y)
    bases: list[torch.Tensor | None] = []
    for label in range(num_classes):
        rows = x[y == label]
        if len(rows) == 0:
            bases.append(None)
            continue
        doubled = np.empty((2 * len(rows), x.shape[1]), dtype=rows.dtype)
        doubled[0::2], doubled[1::2] = rows, -rows
        values, vectors = np.linalg.eigh(np.cov(doubled, rowvar=False))
        order = np.argsort(values)[::-1]
        values, vectors = values[order], vectors[:, order]
        ratios = values / sum(values)  # the Python sum, as theirs
        keep = int((np.cumsum(ratios) <= variance).sum()) + 1
        bases.append(torch.from_numpy(normalize(vectors[:, :keep].T, axis=1)))
    return bases


def authors_predict(x: torch.Tensor, bases: list[torch.Tensor | None]) -> torch.Tensor:
    """Class at the smallest angle per row of ``x`` (n, d), float64 in chunks of 100.

    ``bases``: per class ``V_c`` (r_c, d) on ``x``'s device (``None``: the class is skipped
    and can never win; the authors had no such case). Zero rows give NaN angles and, by
    ``torch.min``'s NaN rule, the first class, as in the authors' code (SPEC §5.4).
    """
    present = [label for label, basis in enumerate(bases) if basis is not None]
    vs = [bases[label].to(device=x.device, dtype=torch.float64) for label in present]
    labels = torch.tensor(present, device=x.device)
    predictions = []
    for start in range(0, x.shape[0], CHUNK_ROWS):
        chunk = x[start : start + CHUNK_ROWS].double()
        angles = []
        for v in vs:
            p = (chunk @ v.T) @ v
            inner = torch.diagonal(chunk @ p.T)
            cos = inner / (
                torch.linalg.vector_norm(chunk, dim=1) * torch.linalg.vector_norm(p, dim=1)
            )
            angles.append(torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0))))
        predictions.append(labels[torch.stack(angles).min(dim=0).indices])
    return torch.cat(predictions)
