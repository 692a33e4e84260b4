"""Run a function on several gloo ranks in spawned processes: the distributed tests and bench.

:func:`run_ranks` starts one process per rank (``spawn``: a clean interpreter, as torchrun
gives), joins a gloo group through a file store, calls ``target(rank, *args)`` and hands back
each rank's return value or error. A rank that hangs past ``timeout`` is killed and reported,
so a test of a hang fails instead of hanging CI.
"""

from __future__ import annotations

import datetime
import os
import pickle
import time
from pathlib import Path

import torch.multiprocessing as mp


class RankOutcome:
    """What one rank did: ``value`` when it returned, ``error`` (type name, message) when it
    raised, ``exitcode`` of its process (None when it was killed for hanging)."""

    def __init__(self, rank, value=None, error=None, exitcode=None, seconds=None):
        self.rank, self.value, self.error = rank, value, error
        self.exitcode, self.seconds = exitcode, seconds

    def __repr__(self) -> str:
        return (
            f"RankOutcome(rank={self.rank}, error={self.error}, exitcode={self.exitcode}, "
            f"seconds={self.seconds})"
        )


def _rank_main(rank, world_size, folder, group_timeout, target, args):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # two ranks on a two-core machine
    started = time.monotonic()
    outcome = {"rank": rank}
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{folder}/store",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=group_timeout),
        )
        outcome["value"] = target(rank, *args)
    except BaseException as error:  # noqa: BLE001 - reported to the parent test
        outcome["error"] = (type(error).__name__, str(error))
    outcome["seconds"] = time.monotonic() - started
    path = Path(folder) / f"outcome-{rank}.pkl"
    path.with_suffix(".tmp").write_bytes(pickle.dumps(outcome))
    os.replace(path.with_suffix(".tmp"), path)
    if "error" in outcome:
        os._exit(1)  # like a crashed rank: no clean shutdown of the group
    dist.destroy_process_group()


def run_ranks(target, *args, folder, world_size=2, timeout=180.0, group_timeout=60.0):
    """``target(rank, *args)`` on ``world_size`` gloo ranks; a list of :class:`RankOutcome`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    context = mp.get_context("spawn")
    processes = [
        context.Process(
            target=_rank_main,
            args=(rank, world_size, str(folder), group_timeout, target, args),
        )
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    outcomes = []
    for rank, process in enumerate(processes):
        if process.is_alive():
            process.kill()
            process.join()
            outcomes.append(RankOutcome(rank, error=("Hang", f"killed after {timeout} s")))
            continue
        path = folder / f"outcome-{rank}.pkl"
        saved = pickle.loads(path.read_bytes()) if path.exists() else {}
        outcomes.append(
            RankOutcome(
                rank,
                value=saved.get("value"),
                error=saved.get("error"),
                exitcode=process.exitcode,
                seconds=saved.get("seconds"),
            )
        )
    return outcomes


def values(outcomes):
    """Every rank's value; fails with every rank's error when one raised or hung."""
    errors = [outcome for outcome in outcomes if outcome.error is not None]
    assert not errors, errors
    return [outcome.value for outcome in outcomes]
