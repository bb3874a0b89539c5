"""Devices and the process group: single process or ``torchrun --nproc_per_node=N``.

``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from torchrun start a process group (nccl on GPU, gloo on
CPU). In a single process every helper here is the identity, so the training loop calls them
unconditionally.

Example:
    >>> ctx = DistributedContext()
    >>> ctx.active, ctx.is_main, all_reduce([1.0, 2.0], ctx, torch.device("cpu"))
    (False, True, [1.0, 2.0])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DeviceError", "DEVICE_TYPES", "DistributedContext", "resolve_device", "start_distributed", "current_context", "all_reduce",
           "all_agree", "average_buffers", "is_main_process"]


#: The device types the library runs on (``"auto"`` picks cuda when available, else cpu).
DEVICE_TYPES = ("cpu", "cuda", "mps")


class DeviceError(ValueError):
    """A device that is unknown (``"gpu"``) or not present on this machine (``"cuda:7"``)."""


@dataclass
class DistributedContext:
    """Where this process stands: its rank among ``world_size`` and whether it started the
    process group (and so must end it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(spec: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """``"auto"`` -> ``cuda`` (``cuda:local_rank`` under torchrun) when available, else ``cpu``.

    A device that is not one of :data:`DEVICE_TYPES` (``"gpu"``), or that this machine does not
    have (``"cuda"`` without CUDA, ``"cuda:7"`` with two GPUs), raises :class:`DeviceError`
    naming it and what is available.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("gpu")
        Traceback (most recent call last):
        ...
        hybridflow.training.distributed.DeviceError: unknown device 'gpu': use auto, cpu, cuda, cuda:N or mps
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise DeviceError(f"device must be a string such as 'cpu' or 'cuda:0', got {spec!r}")
    if spec.strip().lower() == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec.strip())
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES or (device.index is not None and device.index < 0):
        raise DeviceError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cpu" and device.index not in (None, 0):
        raise DeviceError(f"unknown device {spec!r}: the CPU has no index (use cpu)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} asked for, but CUDA is not available on this machine (use cpu or auto)")
        if device.index is None:
            device = torch.device("cuda", local_rank or 0)
        if device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceError(f"device {spec!r} asked for, but MPS is not available on this machine (use cpu or auto)")
    return device


def current_context() -> DistributedContext:
    """The process group already started (by torchrun and :func:`start_distributed`, or by the
    caller), or a single process."""
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistributedContext()


def is_main_process() -> bool:
    """Whether this process is rank 0: of the process group when one is running, else of the
    ``RANK`` torchrun set (the loop ends the group it started, so after training only ``RANK``
    tells rank 1 apart). Only the main process prints a run's summary.

    Example:
        >>> is_main_process()  # a single process
        True
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def start_distributed(device_spec: str) -> DistributedContext:
    """Join the process group torchrun describes (or the one already started)."""
    if dist.is_available() and dist.is_initialized():
        return current_context()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def all_reduce(values: list[float], ctx: DistributedContext, device: torch.device,
               use_max: bool = False) -> list[float]:
    """Sum (or max) ``values`` over the ranks; the identity in a single process."""
    if not ctx.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if use_max else dist.ReduceOp.SUM)
    return tensor.tolist()


def all_agree(flags: list[bool], ctx: DistributedContext, device: torch.device) -> list[bool]:
    """Each flag true on every rank if it is true on any (one tiny all-reduce), so that every
    rank skips, or stops, at the same step."""
    return [bool(v) for v in all_reduce([float(f) for f in flags], ctx, device, use_max=True)]


def average_buffers(modules: Iterable[nn.Module], ctx: DistributedContext) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the ranks.

    DDP broadcasts rank 0's buffers at the start of every forward, but each rank then updates
    its copy from its own batch; averaging before validating, checkpointing and returning makes
    every rank hold the same model (and uses every rank's data). One all-reduce of all of them.
    """
    if not ctx.active:
        return
    buffers = [b for m in modules for b in m.buffers() if b.is_floating_point()]
    if not buffers:
        return
    with torch.no_grad():
        flat = torch.cat([b.reshape(-1).to(torch.float64) for b in buffers])
        dist.all_reduce(flat)
        flat /= ctx.world_size
        for b, value in zip(buffers, flat.split([b.numel() for b in buffers])):
            b.copy_(value.view_as(b))
