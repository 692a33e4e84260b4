"""The probe under ``torch.distributed``: one process group, each rank its own shard of rows.

Every rank streams the batches its own loaders yield (disjoint shards, uneven allowed). What
the fit needs is then summed over the ranks in float64 (:meth:`RankGroup.sum`): the class Grams
of ``gram`` layers, the exact energies and row counts of every layer, the scoring counts. The
eigen step is spread by class (class k on rank ``k mod world``) and the bases shared, so every
rank ends with the same subspaces and the same :class:`~masc_fast.results.ProbeResult`, equal
to the one-process probe over all the rows up to the order of float64 sums.

Stored layers keep their shards on their rank: randomized PCA applies its operator
``v ↦ Σ_ranks X_rᵀ (X_r v)`` as a sum over ranks (every rank iterates every class in step),
and a Gram-trick class (``n_k <= d``, small by construction) gathers its rows on its owner.

Failures: a collective that fails (a peer died, the group timed out) raises
:class:`RankFailure` naming this rank and the step; a bad batch on one rank raises there with
the rank in the message (:func:`on_rank`), and the others stop at their next collective within
the process group's timeout (``init_process_group(timeout=...)``; the CLI sets it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = [
    "RankFailure",
    "RankGroup",
    "merge_counters",
    "merge_sums",
    "on_rank",
    "rank_folder",
    "resolve_group",
    "share_eigens",
]


_PROBE_RESUME = (
    "With activation_dir= the probe resumes from its fit-pass checkpoints (resume=True)."
)


class RankFailure(RuntimeError):
    """A collective of the distributed probe failed: another rank died or timed out."""


def resolve_group(distributed, resume_hint: str = _PROBE_RESUME) -> RankGroup | None:
    """The :class:`RankGroup` a probe runs on, or ``None`` for a local probe.

    ``"auto"``: the default process group when one is initialised and has more than one
    rank; ``True``: the default group, which must be initialised (one rank is allowed);
    ``False``: local, even inside a process group. ``resume_hint``: what
    :class:`RankFailure` tells about resuming.
    """
    if distributed not in ("auto", True, False):
        raise ValueError(f"distributed must be 'auto', True or False, got {distributed!r}")
    if distributed is False:
        return None
    import torch.distributed as dist

    ready = dist.is_available() and dist.is_initialized()
    if distributed is True and not ready:
        raise ValueError(
            "distributed=True needs an initialised default process group "
            "(torch.distributed.init_process_group, or run the script under torchrun)"
        )
    if not ready:
        return None
    group = RankGroup(resume_hint)
    return None if distributed == "auto" and group.size == 1 else group


class RankGroup:
    """The default process group as the probe uses it: rank, size, and the collectives.

    Collectives run on the CPU under gloo and on the current CUDA device under NCCL; tensors
    are moved there and back as needed.
    """

    def __init__(self, resume_hint: str = _PROBE_RESUME):
        import torch.distributed as dist

        self._dist = dist
        self.resume_hint = resume_hint
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        self.backend = str(dist.get_backend())
        if self.backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")

    def __repr__(self) -> str:
        return f"RankGroup(rank={self.rank}, size={self.size}, backend={self.backend!r})"

    def owner(self, label: int) -> int:
        """The rank that solves class ``label``."""
        return label % self.size

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Turn a failed collective into :class:`RankFailure` naming the rank and ``what``."""
        try:
            yield
        except RankFailure:
            raise
        except (RuntimeError, ConnectionError, OSError) as error:
            raise RankFailure(
                f"rank {self.rank} of {self.size}: {what} failed; another rank probably died "
                f"or timed out (its own error says why). {self.resume_hint} Cause: {error}"
            ) from error

    def sum(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place (also returned)."""
        with self.step(what):
            work = tensor if tensor.device == self.device else tensor.to(self.device)
            self._dist.all_reduce(work, op=self._dist.ReduceOp.SUM)
            if work is not tensor:
                tensor.copy_(work)
        return tensor

    def minimum(self, value: int, what: str) -> int:
        """The smallest ``value`` over the ranks."""
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        with self.step(what):
            self._dist.all_reduce(tensor, op=self._dist.ReduceOp.MIN)
        return int(tensor.item())

    def gather(self, value, what: str) -> list:
        """Every rank's picklable ``value``, in rank order, on every rank (small objects, or
        tensors moved to the CPU first)."""
        values = [None] * self.size
        with self.step(what):
            self._dist.all_gather_object(values, value)
        return values

    def broadcast(self, value, what: str, source: int = 0):
        """Rank ``source``'s picklable ``value`` on every rank."""
        values = [value if self.rank == source else None]
        with self.step(what):
            self._dist.broadcast_object_list(values, src=source)
        return values[0]

    def barrier(self, what: str) -> None:
        """Wait until every rank is here."""
        with self.step(what):
            self._dist.barrier()

    def gather_to(self, value, owner: int, what: str) -> list | None:
        """Every rank's ``value`` on rank ``owner`` (rank order); ``None`` elsewhere."""
        values = [None] * self.size if self.rank == owner else None
        with self.step(what):
            self._dist.gather_object(value, values, dst=owner)
        return values


def rank_folder(activation_dir, group: RankGroup | None):
    """Where this rank keeps its shards and fit-pass checkpoint under ``activation_dir``:
    ``rank-<r>-of-<n>`` in a distributed probe, the folder itself otherwise."""
    from pathlib import Path

    if group is None:
        return Path(activation_dir)
    return Path(activation_dir) / f"rank-{group.rank}-of-{group.size}"


@contextlib.contextmanager
def on_rank(group: RankGroup | None) -> Iterator[None]:
    """Prefix the message of a ``ValueError`` or ``TypeError`` raised inside with this rank
    (a bad batch on one rank of many)."""
    if group is None:
        yield
        return
    try:
        yield
    except (ValueError, TypeError) as error:
        raise type(error)(f"rank {group.rank} of {group.size}: {error}") from error


def share_eigens(group: RankGroup, eigens: list, owned: list[int], device, what: str) -> list:
    """Each rank's solved classes (``eigens[k]`` for ``k`` in ``owned``) on every rank."""
    from masc_fast.linalg.spectra import ClassEigen

    mine = {}
    for label in owned:
        eigen = eigens[label]
        if eigen is not None:
            eigen = (
                eigen.values.cpu(),
                eigen.vectors.cpu(),
                eigen.total,
                eigen.rank_cap,
                eigen.method,
            )
        mine[label] = eigen
    shared = list(eigens)
    for solved in group.gather(mine, what):
        for label, eigen in solved.items():
            if eigen is None:
                shared[label] = None
                continue
            values, vectors, total, rank_cap, method = eigen
            shared[label] = ClassEigen(
                values.to(device), vectors.to(device), total, rank_cap, method
            )
    return shared


def merge_counters(group: RankGroup, counter, what: str):
    """A :class:`~masc_fast.probing.batches.Counter` of every rank's counts."""
    from masc_fast.probing.batches import Counter

    merged: dict[tuple, list[int]] = {}
    for rows in group.gather(counter.to_json(), what):
        for *key, correct, total in rows:
            slot = merged.setdefault(tuple(key), [0, 0])
            slot[0] += correct
            slot[1] += total
    return Counter.from_json([[*key, correct, total] for key, (correct, total) in merged.items()])


def merge_sums(group: RankGroup, sums: dict, what: str) -> dict:
    """``{key: int}`` summed over the ranks (keys any rank has)."""
    merged: dict = {}
    for part in group.gather({key: int(value) for key, value in sums.items()}, what):
        for key, value in part.items():
            merged[key] = merged.get(key, 0) + value
    return merged
