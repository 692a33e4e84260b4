"""``masc-fast`` under torchrun: join the process group torchrun describes, quiet the copies.

``torchrun --nproc_per_node N -m masc_fast.cli -- COMMAND ...`` starts N copies (the ``--``
keeps torchrun's own parser off the command's flags: it would take ``--p`` and ``--run`` as
abbreviations of its ``--print-completion`` and ``--run-path``) with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous in their environment. Before the command runs,
:func:`join_group` initialises the default process group from them: NCCL with one GPU per
local rank when the command runs on CUDA, gloo on the CPU, with ``--dist-timeout`` as the
group's timeout (how long a rank waits for a dead or stuck peer before it stops with an
error). Ranks other than 0 print nothing to stdout (:func:`quiet_unless_main`): their
results are rank 0's.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from collections.abc import Iterator

__all__ = ["DISTRIBUTED_COMMANDS", "join_group", "leave_group", "quiet_unless_main"]

#: The commands that run under torchrun (the others refuse a WORLD_SIZE above one).
DISTRIBUTED_COMMANDS = ("train", "retrain", "probe", "baselines", "sweep")


def _world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def join_group(command: str, device: str | None, timeout_seconds: float) -> bool:
    """Initialise the default process group when started by torchrun with several ranks;
    returns whether it did. A command that does not run distributed raises ``SystemExit``."""
    if _world_size() <= 1:
        return False
    if command not in DISTRIBUTED_COMMANDS:
        raise SystemExit(
            f"masc-fast {command} does not run under torchrun (WORLD_SIZE="
            f"{_world_size()}); these do: {', '.join(DISTRIBUTED_COMMANDS)}"
        )
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(
        "nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_seconds)
    )
    return True


def leave_group() -> None:
    """Destroy the default process group if :func:`join_group` made one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def quiet_unless_main() -> Iterator[None]:
    """On ranks other than 0, send stdout to the void (stderr stays: errors show)."""
    if int(os.environ.get("RANK", "0")) == 0 or _world_size() <= 1:
        yield
        return
    with open(os.devnull, "w") as void, contextlib.redirect_stdout(void):
        yield
        sys.stdout.flush()
