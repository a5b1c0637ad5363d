"""The inference copy of a DDP model under torch.distributed: two gloo processes on CPU whose
BatchNorm statistics differ (as after training with ``broadcast_buffers=False``) both evaluate
rank 0's statistics, the ones the checkpoint saves; their own models keep their own."""

from __future__ import annotations

import os

import torch
import torch.multiprocessing as mp
from detectron2.layers import Conv2d
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dcinet_d2.modeling.fast_inference import inference_model

from ..ddp import free_port, gloo_group

WORLD_SIZE = 2


def make_model() -> nn.Module:
    """Two convs with BatchNorm, identical weights on every rank, eval mode."""
    torch.manual_seed(0)
    return nn.Sequential(
        Conv2d(3, 4, kernel_size=3, padding=1, norm=nn.BatchNorm2d(4), activation=torch.relu),
        Conv2d(4, 2, kernel_size=1, norm=nn.BatchNorm2d(2)),
    ).eval()


def set_rank_statistics(model: nn.Module, rank: int) -> None:
    """Running statistics that differ between ranks: mean rank + 0.5, variance rank + 2."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(rank + 0.5)
            m.running_var.fill_(rank + 2.0)


def _worker(rank: int, port: int, out_dir: str) -> None:
    with gloo_group(rank, WORLD_SIZE, port, timeout_s=60):
        model = make_model()
        ddp = DistributedDataParallel(model, broadcast_buffers=False)
        set_rank_statistics(model, rank)  # after wrapping: DDP's initial broadcast is past
        for fold_norms in (True, False):
            copied = inference_model(ddp, fold_norms=fold_norms)
            x = torch.linspace(-1, 1, 2 * 3 * 5 * 5).view(2, 3, 5, 5)
            with torch.no_grad():
                out = copied(x)
            torch.save(out, os.path.join(out_dir, f"out_{rank}_{fold_norms}.pt"))
        torch.save(
            {k: v.clone() for k, v in model.state_dict().items()},
            os.path.join(out_dir, f"own_{rank}.pt"),
        )


def test_every_rank_evaluates_rank_0_statistics(tmp_path):
    mp.start_processes(
        _worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, start_method="spawn"
    )
    # rank 0's model evaluated in one process, without any wrapper or folding
    reference = make_model()
    set_rank_statistics(reference, 0)
    x = torch.linspace(-1, 1, 2 * 3 * 5 * 5).view(2, 3, 5, 5)
    with torch.no_grad():
        expected = reference(x)
    other = make_model()
    set_rank_statistics(other, 1)
    with torch.no_grad():
        assert not torch.allclose(other(x), expected, atol=1e-3)  # the ranks do differ
    for rank in range(WORLD_SIZE):
        for fold_norms in (True, False):
            out = torch.load(tmp_path / f"out_{rank}_{fold_norms}.pt")
            assert torch.allclose(out, expected, atol=1e-5), (rank, fold_norms)
        own = torch.load(tmp_path / f"own_{rank}.pt")
        assert torch.all(own["1.norm.running_mean"] == rank + 0.5)  # the model given is untouched
