"""``all_gather`` of tensors whose first dimension differs between processes.

Only torch and ``torch.distributed`` are used, so the memories of the re-id losses
(:mod:`dcinet_d2.modeling.memory`) stay usable without Detectron2. Every function works, and
does no communication, when ``torch.distributed`` is unavailable or not initialised.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["is_distributed", "get_world_size", "get_rank", "all_gather_rows"]


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is available and a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_world_size(group: dist.ProcessGroup | None = None) -> int:
    """Number of processes in ``group`` (the default group if None); 1 when not distributed."""
    if not is_distributed():
        return 1
    return dist.get_world_size(group)


def get_rank(group: dist.ProcessGroup | None = None) -> int:
    """Rank of this process in ``group`` (the default group if None); 0 when not distributed."""
    if not is_distributed():
        return 0
    return dist.get_rank(group)


@torch.no_grad()
def all_gather_rows(*tensors: Tensor, group: dist.ProcessGroup | None = None) -> tuple[Tensor, ...]:
    """Gather row-aligned tensors of every process and concatenate them in rank order.

    On process ``r`` all ``tensors`` share their first dimension ``N_r``, which may differ between
    processes (zero included); the other dimensions and the dtypes must be the same everywhere.
    Each result is ``cat([t from rank 0, t from rank 1, ...])``, identical on every process.
    Collective: every process of ``group`` must call it, with the same number of tensors.
    Results are detached (no gradient flows through the gather).

    Without an initialised process group the inputs are returned detached, without a copy.

    Args:
        *tensors: tensors of shape ``[N_r, *S_i]`` (same ``N_r`` for all of them on one process).
        group: process group; the default group if None.

    Returns:
        One tensor per input, of shape ``[sum_r N_r, *S_i]``, on the device of the input.
    """
    if not tensors:
        return ()
    n = tensors[0].shape[0]
    for t in tensors:
        if t.dim() == 0 or t.shape[0] != n:
            raise ValueError(
                f"all_gather_rows: every tensor needs the same first dimension, got "
                f"{[tuple(t.shape) for t in tensors]}"
            )
    world_size = get_world_size(group)
    if world_size == 1:
        return tuple(t.detach() for t in tensors)

    device = tensors[0].device
    # 1) exchange the row counts.
    local_size = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(local_size) for _ in range(world_size)]
    dist.all_gather(sizes, local_size, group=group)
    counts = [int(s.item()) for s in sizes]
    max_n = max(counts)

    outputs = []
    for t in tensors:
        t = t.detach().contiguous()
        if max_n == 0:
            outputs.append(t.new_empty((0,) + tuple(t.shape[1:])))
            continue
        # bool is not supported by every backend: carry it as uint8.
        is_bool = t.dtype == torch.bool
        if is_bool:
            t = t.to(torch.uint8)
        # 2) pad to the longest, gather, 3) cut the padding off again.
        if n < max_n:
            pad = t.new_zeros((max_n - n,) + tuple(t.shape[1:]))
            t = torch.cat([t, pad], dim=0)
        gathered = [torch.empty_like(t) for _ in range(world_size)]
        dist.all_gather(gathered, t, group=group)
        out = torch.cat([g[:c] for g, c in zip(gathered, counts)], dim=0)
        outputs.append(out.bool() if is_bool else out)
    return tuple(outputs)
