"""Several processes under torchrun: set-up, agreement and a guard against unsynchronised gradients.

MeanFlow's JVP pass must not bypass DistributedDataParallel: a JVP on ``model.module`` computes the
loss without DDP's gradient hooks, and each process then silently trains its own model. mfkit runs
every gradient-carrying forward through the DDP wrapper, and :func:`assert_in_sync` checks that the
processes still hold identical weights (at start, and at every checkpoint).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: Whether mfkit joined the process group (and so may leave it); False when the caller had set it up.
    owned: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_environment(device_type: str) -> ProcessGroup:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ProcessGroup()
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owned)


def shutdown(group: ProcessGroup) -> None:
    """Leave the process group mfkit joined (one set up by the caller stays). No barrier: the last collective
    of a run is behind every process by then, and a process that failed meanwhile must not hold the others."""
    if group.distributed and group.owned and dist.is_initialized():
        dist.destroy_process_group()


def exit_worker(group: ProcessGroup, code: int) -> None:
    """End a torchrun worker of `mfkit train` with ``code``, skipping the interpreter's teardown; returns at
    once for a single process, or when the caller set up the process group (mfkit then leaves the process
    to its owner).

    Everything is on disk by then (checkpoint, logs, previews). Without this, gloo's threads sometimes abort
    the process while C++ static objects are destroyed at exit ("terminate called without an active
    exception", SIGABRT; measured 3 runs in 8 on a busy 2-core machine with torch 2.14): torchrun then
    reports a failed run and stops the other workers, though the training finished.
    """
    if not (group.distributed and group.owned):
        return
    shutdown(group)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to say anyway
            pass
    os._exit(code)


def any_true(flag: bool, group: ProcessGroup, device: torch.device) -> bool:
    """True on every process if it is true on any (so all processes take the same branch)."""
    return max_over_processes(1 if flag else 0, group, device) > 0


def max_over_processes(value: int, group: ProcessGroup, device: torch.device) -> int:
    """The largest of the processes' values, on every process (e.g. the stop signal any of them received)."""
    if not group.distributed:
        return value
    tensor = torch.tensor([float(value)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def mean_over_processes(values: dict[str, float], group: ProcessGroup, device: torch.device) -> dict[str, float]:
    if not group.distributed:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], device=device, dtype=torch.float64)
    dist.all_reduce(tensor)
    return {k: float(v) / group.world_size for k, v in zip(keys, tensor.tolist())}


class OutOfSyncError(RuntimeError):
    """The processes hold different weights: gradients were not synchronised."""


@torch.no_grad()
def assert_in_sync(model: nn.Module, group: ProcessGroup, device: torch.device) -> None:
    """Compare a fingerprint of the weights across processes; raise if any process differs."""
    if not group.distributed:
        return
    fingerprint = torch.stack([p.double().sum() + p.double().pow(2).sum() for p in model.parameters()]).to(device)
    low, high = fingerprint.clone(), fingerprint.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise OutOfSyncError("the processes hold different weights: gradients are not being synchronised "
                             "(is a gradient-carrying forward bypassing DistributedDataParallel?)")
