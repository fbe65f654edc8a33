"""A multi-process run that loses a process (a machine killed, a worker hung): which rank, and how to resume.

torch reports a lost peer only as the survivors' gloo/NCCL error ("Connection reset by peer", or a timeout once
``--ddp-timeout`` has passed) followed by the launcher's ``ChildFailedError`` summary: neither names the process
that was lost nor says what to do. :func:`watch_peers` turns that failure into a :class:`LostProcessError` that
does both. The lost ranks are the ones that do not check in on the launcher's rendezvous store (a TCPStore held
by machine 0's launcher) within :data:`CHECK_IN_S` of the failure; if the store itself is gone, machine 0 is.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from hf_transfer import run_folder
from hf_transfer.config import TrainConfig
from hf_transfer.errors import LostProcessError
from hf_transfer.training.distributed import world_size

CHECK_IN_S = 10.0  # how long the survivors wait for one another on the store before naming who is missing
_CHECK_IN_KEY = "hf_transfer/still_here/{}"
# How gloo and NCCL word a lost peer ("Connection reset by peer", "Timed out waiting 30000ms for recv operation",
# "Application timeout caused pair closure", ...) when it reaches Python as a plain RuntimeError.
_PEER_FAILURE_WORDS = ("gloo", "nccl", "peer", "pair", "connection", "socket", "timed out", "timeout")


@contextmanager
def watch_peers(train: TrainConfig) -> Iterator[None]:
    """Run the body (``train``'s run); when another process is lost, raise a :class:`LostProcessError` naming it and
    the resume command. Either way, tear the process group down on the way out (gloo/NCCL otherwise sometimes abort
    at exit)."""
    try:
        yield
    except Exception as error:
        if world_size() <= 1 or not is_peer_failure(error):
            raise
        raise LostProcessError(describe_loss(error, train)) from error
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def is_peer_failure(error: BaseException) -> bool:
    """torch's distributed errors, and gloo/NCCL errors raised as plain RuntimeErrors (from autograd's backward)."""
    text = str(error).lower()
    return isinstance(error, dist.DistError) or (isinstance(error, RuntimeError) and
                                                  any(word in text for word in _PEER_FAILURE_WORDS))


def missing_ranks(*, wait_s: float = CHECK_IN_S) -> list[int] | None:
    """The ranks that do not check in on the launcher's store within ``wait_s``; None when the store itself does
    not answer (it lives with machine 0's launcher, so machine 0 is the one lost)."""
    rank, size = int(os.environ.get("RANK", "0")), world_size()
    try:
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                              timeout=timedelta(seconds=wait_s))
        store.set(_CHECK_IN_KEY.format(rank), "1")
        missing, deadline = list(range(size)), time.monotonic() + wait_s
        while True:
            missing = [r for r in missing if not store.check([_CHECK_IN_KEY.format(r)])]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.2)
    except (KeyError, ValueError, RuntimeError):  # no launcher variables, or the store is unreachable
        return None


def describe_loss(error: BaseException, train: TrainConfig) -> str:
    """The message: who was lost and how it looked, what is kept, and the command that resumes."""
    rank, per_machine = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1")) or 1
    text = str(error).lower()
    how = (f"it did not answer within --ddp-timeout ({train.ddp_timeout} s): hung, stopped or unreachable"
           if "timed out" in text or "timeout" in text else "its connection closed: the process or its machine died")
    missing = missing_ranks()
    if missing is None:
        who = "machine 0 (rank 0: its launcher holds the rendezvous store, which no longer answers)"
    elif missing:
        who = ", ".join(f"rank {r} (machine {r // per_machine})" for r in missing)
    else:
        who = "a connection between processes (every rank still answers)"
    checkpoint = run_folder.latest_checkpoint(Path(train.output_dir).expanduser())
    kept = (f"the newest complete checkpoint, {checkpoint}, is kept" if checkpoint else
            "no checkpoint was complete yet, so --resume starts from the beginning")
    command = shlex.join(sys.argv) + ("" if "--resume" in sys.argv else " --resume")
    return (f"lost {who}; {how}. Rank {rank} stopped too; {kept}. To resume, start the same command on every machine "
            f"again with --resume added, e.g. here: accelerate launch <the same launch options> {command}")
