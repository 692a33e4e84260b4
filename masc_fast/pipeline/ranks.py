"""The pipeline under torchrun: which rank this is, who writes, and decisions every rank shares.

``masc-fast train``, ``retrain``, ``probe``, ``baselines`` and ``sweep`` run under
``torchrun --nproc_per_node N`` with the meaning they have in one process. The rules:

* every rank runs every training step and every probe (DistributedDataParallel,
  :func:`masc_fast.probe` with ``distributed="auto"``), each on its own part of every batch
  (:func:`shard`);
* only rank 0 writes files (:func:`is_main`); the others read what it wrote after a
  :func:`barrier`;
* a choice made from files (a cached probe, a finished cell) is rank 0's, shared
  (:func:`agree`, :func:`on_main`), so every rank takes the same branch and meets the same
  collectives;
* the steps that do not spread over ranks (``baselines``: scikit-learn fits on one
  machine's activations) run on rank 0 alone (:func:`on_main`), the others waiting for its
  result.

Without a process group of more than one rank every function is the one-process identity.
"""

from __future__ import annotations

from masc_fast.probing.distributed import RankGroup, resolve_group

__all__ = [
    "agree",
    "barrier",
    "current_group",
    "data_parallel",
    "is_main",
    "on_main",
    "probe_distributed",
    "shard",
]


_ALONE = {"depth": 0}  # > 0 while rank 0 runs an on_main function: no collectives inside


def current_group(resume_hint: str | None = None) -> RankGroup | None:
    """The default process group when one of more than one rank is initialised (and this
    is not rank 0 working alone inside :func:`on_main`), else None. ``resume_hint``: what
    a :class:`~masc_fast.probing.distributed.RankFailure` says about resuming (default: the
    probe's)."""
    if _ALONE["depth"]:
        return None
    hint = {} if resume_hint is None else {"resume_hint": resume_hint}
    return resolve_group("auto", **hint)


def data_parallel(model, device, group: RankGroup | None):
    """``model`` wrapped in DistributedDataParallel on ``group`` (``model`` itself alone)."""
    if group is None:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def probe_distributed() -> bool | str:
    """``masc_fast.probe``'s ``distributed=`` for a pipeline step: ``"auto"``, or ``False``
    inside :func:`on_main` (the other ranks wait; a collective would hang)."""
    return False if _ALONE["depth"] else "auto"


def is_main() -> bool:
    """Whether this process writes: rank 0, or the only process."""
    group = current_group()
    return group is None or group.rank == 0


def shard() -> dict:
    """``BatchLoader`` keywords that give this rank its part of every batch (``{}`` alone)."""
    group = current_group()
    return {} if group is None else {"rank": group.rank, "world_size": group.size}


def agree(value, what: str):
    """Rank 0's ``value`` on every rank (``value`` itself in one process)."""
    group = current_group()
    return value if group is None else group.broadcast(value, what)


def barrier(what: str) -> None:
    """Wait for every rank (nothing in one process)."""
    group = current_group()
    if group is not None:
        group.barrier(what)


def on_main(function, what: str, group: RankGroup | None = None):
    """``function()`` run on rank 0 (it reads or writes files), its value, or its exception,
    on every rank, so all ranks go on, or stop, together. ``group``: default the current
    one."""
    group = current_group() if group is None else group
    if group is None:
        return function()
    answer = None
    if group.rank == 0:
        _ALONE["depth"] += 1
        try:
            answer = ("value", function())
        except Exception as error:  # noqa: BLE001 - re-raised on every rank below
            answer = ("error", error)
        finally:
            _ALONE["depth"] -= 1
    answer = group.broadcast(answer, what)
    if answer[0] == "error":
        raise answer[1]
    return answer[1]
