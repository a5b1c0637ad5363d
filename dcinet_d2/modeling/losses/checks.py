"""Input checks shared by the re-id losses, the criterion and the memories.

Only torch is used (no Detectron2).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from ...utils.distributed import get_rank, is_distributed

__all__ = ["check_reid_inputs", "check_rows", "check_pid_range", "check_pids_below"]


def check_reid_inputs(embeds: Tensor, pids: Tensor, image_ids: Tensor) -> None:
    """Shape checks shared by the re-id losses."""
    if embeds.dim() != 2:
        raise ValueError(f"embeds must be [N, D], got {tuple(embeds.shape)}")
    n = embeds.shape[0]
    if pids.shape != (n,) or image_ids.shape != (n,):
        raise ValueError(
            f"pids and image_ids must be [{n}], got {tuple(pids.shape)}, {tuple(image_ids.shape)}"
        )


def check_rows(feats: Tensor, pids: Tensor, dim: int) -> None:
    """Raise ValueError unless ``feats`` is ``[N, dim]`` and ``pids`` is ``[N]``."""
    if feats.dim() != 2 or feats.shape[1] != dim:
        raise ValueError(f"feats must be [N, {dim}], got {tuple(feats.shape)}")
    if pids.dim() != 1 or pids.shape[0] != feats.shape[0]:
        raise ValueError(f"pids must be [N] with N = {feats.shape[0]}, got {tuple(pids.shape)}")


def check_pids_below(pids: Tensor, num_classes: int) -> None:
    """Fail when an identity is ``>= num_classes``, without the host waiting for the device.

    ``torch._assert_async``: on the CPU a RuntimeError at once; on a GPU a device-side assert
    (the process stops at its next synchronisation), since reading the identities on the host
    at every step would stall it. The clear, named error comes earlier on the training path:
    :class:`~dcinet_d2.modeling.meta_arch.PersonSearchRCNN` checks a batch's identities on the
    host before the step (``check_pid_range``), as ``ReIDCriterion`` does when called directly.
    """
    if pids.numel():
        torch._assert_async(
            pids.max() < num_classes, f"an identity (pid) is >= num_classes = {num_classes}"
        )


def check_pid_range(pids: Tensor, num_classes: int, collective: bool = True) -> None:
    """Raise when an identity lies outside ``[-1, num_classes - 1]``, on every process at once.

    Under ``torch.distributed`` (and ``collective``) the processes first agree on the global range
    with one all-reduce of two numbers, so a bad identity on one process makes every process raise
    here, instead of one raising and the others waiting in the memories' all-gather until the
    process group's timeout. Every process must then call it, as it calls the memories' updates.
    ``pids`` may live on the CPU (PersonSearchRCNN checks a batch's ``gt_pids`` before moving
    them to the device: no wait for the device without ``torch.distributed``).
    """
    if pids.numel():
        low_high = torch.stack([-pids.min(), pids.max()]).long()
    else:
        low_high = torch.tensor([1, -1], dtype=torch.long, device=pids.device)
    distributed = collective and is_distributed()
    if distributed:
        if dist.get_backend() == "nccl":  # NCCL reduces CUDA tensors only
            low_high = low_high.to(torch.device("cuda", torch.cuda.current_device()))
        local = low_high.clone()
        dist.all_reduce(low_high, op=dist.ReduceOp.MAX)
    low, high = -int(low_high[0]), int(low_high[1])
    if low < -1 or high >= num_classes:
        where = ""
        if distributed:
            here = (-int(local[0]) < -1) or int(local[1]) >= num_classes
            where = f" (on {'this' if here else 'another'} process; rank {get_rank()})"
        raise ValueError(
            f"identities (pids) must be in [-1, {num_classes - 1}], got [{low}, {high}]{where}; "
            f"C = {num_classes} is MODEL.REID.NUM_IDS, or the training sets' num_train_ids when "
            "NUM_IDS is 0"
        )
