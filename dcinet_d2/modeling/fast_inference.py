"""An inference copy of a model that computes the same outputs with less GPU work.

Measured on an H200 (paper configuration, batch 32, fp16 autocast; docs/benchmarks.md): the
FrozenBatchNorm layers of a ResNet run as a separate pass over every activation (a third of the
GPU time), and cuDNN's fp16 convolutions want NHWC tensors, so an NCHW model spends another
seventh of its time converting layouts. :func:`inference_model` removes both on a copy:

* :func:`fold_batchnorm`: every Detectron2 ``Conv2d`` followed by a norm with fixed statistics
  (``FrozenBatchNorm2d``, or a ``BatchNorm2d`` evaluated with its running statistics) gets the
  norm's scale and shift in its weight and bias, and the norm is removed. Exact up to float
  rounding. Norms with statistics of their input (GroupNorm) stay.
* ``channels_last``: the copy's weights in NHWC, so cuDNN keeps activations in NHWC (CUDA only:
  on the CPU this was not measured to pay, and the copy keeps NCHW there).

The model given is left untouched (training continues from it after an evaluation). The copy of a
model wrapped in DistributedDataParallel takes rank 0's buffers on every rank: trained BatchNorm
statistics drift apart between ranks (each updates them with its own batches; the trainer wraps
with ``broadcast_buffers=False``, as Detectron2), and rank 0's are the ones the checkpoint saves,
so evaluation during training gives what ``--eval-only`` on that checkpoint gives.
:func:`inference_autocast` is the fp16 autocast of ``TEST.AMP`` (CUDA only).
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.distributed as dist
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["fold_batchnorm", "inference_model", "inference_model_from_config", "inference_autocast"]


def _fixed_affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scale, shift)`` with ``norm(x) == x * scale + shift`` per channel, for norms whose output
    does not depend on the batch; None for any other module."""
    batch_norm = (nn.BatchNorm2d, nn.SyncBatchNorm)  # SyncBN: a BatchNorm2d once in eval mode
    if not isinstance(norm, (FrozenBatchNorm2d, *batch_norm)):
        return None
    if isinstance(norm, batch_norm) and (norm.training or norm.running_mean is None):
        return None  # batch statistics, or no running ones (track_running_stats=False)
    var, mean = norm.running_var.double(), norm.running_mean.double()
    weight = norm.weight.double() if norm.weight is not None else torch.ones_like(var)
    bias = norm.bias.double() if norm.bias is not None else torch.zeros_like(var)
    scale = weight / torch.sqrt(var + norm.eps)
    return scale, bias - mean * scale


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold fixed-statistics norms into the Detectron2 ``Conv2d`` layers that carry them, in
    place. Returns the number of folded layers.

    ``conv(x) = W * x + b`` followed by ``s * (.) + t`` equals ``(s W) * x + (s b + t)``; the new
    weight and bias are computed in float64 and stored in the weight's dtype.
    """
    folded = 0
    for module in model.modules():
        if not isinstance(module, Conv2d) or module.norm is None:
            continue
        affine = _fixed_affine(module.norm)
        if affine is None:
            continue
        scale, shift = affine
        dtype = module.weight.dtype
        weight = module.weight.double() * scale.view(-1, 1, 1, 1)
        bias = module.bias.double() if module.bias is not None else torch.zeros_like(shift)
        module.weight.copy_(weight.to(dtype))
        module.bias = nn.Parameter((bias * scale + shift).to(dtype), requires_grad=False)
        module.norm = None
        folded += 1
    return folded


def inference_model(
    model: nn.Module, *, fold_norms: bool = True, channels_last: bool = False
) -> nn.Module:
    """An eval-mode copy of ``model`` (unwrapped from DistributedDataParallel, with rank 0's
    buffers when several processes run it) with its norms folded (``fold_norms``) and, on CUDA,
    its weights in channels-last layout. Without either option, and unless buffers have to be
    taken from rank 0, the (unwrapped) model itself is returned, its mode unchanged."""
    ddp = model if isinstance(model, DistributedDataParallel) else None
    if ddp is not None:
        model = ddp.module
    on_cuda = any(p.is_cuda for p in model.parameters())
    use_channels_last = channels_last and on_cuda
    sync_buffers = ddp is not None and dist.is_initialized() and dist.get_world_size() > 1
    if not fold_norms and not use_channels_last and not sync_buffers:
        return model
    copied = copy.deepcopy(model).eval()
    for p in copied.parameters():
        p.requires_grad_(False)
    if sync_buffers:
        for buffer in copied.buffers():
            dist.broadcast(buffer, src=0, group=ddp.process_group)
    if fold_norms:
        fold_batchnorm(copied)
    if use_channels_last:
        copied = copied.to(memory_format=torch.channels_last)
    return copied


def inference_model_from_config(cfg, model: nn.Module) -> nn.Module:
    """:func:`inference_model` with ``TEST.FOLD_NORMS`` and ``TEST.CHANNELS_LAST``."""
    return inference_model(
        model, fold_norms=cfg.TEST.FOLD_NORMS, channels_last=cfg.TEST.CHANNELS_LAST
    )


def inference_autocast(cfg, device: str | torch.device):
    """fp16 autocast around inference when ``TEST.AMP`` is on and ``device`` is CUDA, else a
    no-op context (the losses' and evaluator's numbers stay fp32: the model returns fp32
    embeddings, see :class:`~dcinet_d2.modeling.meta_arch.PersonSearchRCNN`)."""
    if cfg.TEST.AMP and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
