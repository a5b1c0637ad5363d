"""Multi-process launch on GPUs (Detectron2's ``launch``) or on CPUs (gloo).

Detectron2 v0.6's ``launch`` requires CUDA (it hard-codes NCCL); later upstream versions also run
on CPU with gloo. :func:`launch` uses Detectron2's on GPU machines and, without CUDA, starts the
same process layout itself with the gloo backend, so ``train_net.py --num-gpus N`` runs N CPU
processes (and several machines, with ``--num-machines/--machine-rank/--dist-url``) anywhere.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

from ..compat import find_free_port, forget_cached_gloo_group, set_local_process_group

__all__ = ["launch", "leaving_process_group"]
logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT = timedelta(minutes=30)


def launch(
    main_func,
    num_processes_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: tuple = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Run ``main_func(*args)`` in ``num_machines x num_processes_per_machine`` processes.

    With CUDA available this is Detectron2's ``launch`` (one process per GPU, NCCL). Without CUDA,
    processes use the gloo backend and the CPU; ``dist_url="auto"`` picks a free local port.
    """
    if torch.cuda.is_available():
        d2_launch(
            main_func,
            num_processes_per_machine,
            num_machines=num_machines,
            machine_rank=machine_rank,
            dist_url=dist_url,
            args=args,
            timeout=timeout,
        )
        return
    world_size = num_machines * num_processes_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url is None or dist_url == "auto":
        if num_machines > 1:
            raise ValueError(
                "dist_url must name the first machine (tcp://host:port) in multi-machine jobs"
            )
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    logger.info("Launching %d CPU processes (gloo) at %s", world_size, dist_url)
    mp.spawn(
        _cpu_worker,
        nprocs=num_processes_per_machine,
        args=(
            main_func,
            world_size,
            num_processes_per_machine,
            machine_rank,
            dist_url,
            args,
            timeout,
        ),
        daemon=False,
    )


def _cpu_worker(
    local_rank, main_func, world_size, per_machine, machine_rank, dist_url, args, timeout
):
    global_rank = machine_rank * per_machine + local_rank
    dist.init_process_group(
        backend="gloo",
        init_method=dist_url,
        world_size=world_size,
        rank=global_rank,
        timeout=timeout,
    )
    # The local process group that Detectron2's comm.get_local_rank()/get_local_size() rely on.
    for i in range(world_size // per_machine):
        group = dist.new_group(list(range(i * per_machine, (i + 1) * per_machine)))
        if i == machine_rank:
            set_local_process_group(group)
    comm.synchronize()
    with leaving_process_group():
        main_func(*args)


@contextlib.contextmanager
def leaving_process_group():
    """Run the body, then destroy this process's default process group (and Detectron2's cached
    handle on it), whatever happened.

    After a body that completed, the processes first meet at a barrier: a gather's non-root ranks
    return as soon as their data is sent, and one that tore its group down while the root was
    still receiving was seen to abort ("terminate called without an active exception", about 1
    run in 12 of the 2-process evaluator test). After a failure there is no barrier (the peers
    may never arrive); the launcher stops them."""
    completed = False
    try:
        yield
        completed = True
    finally:
        try:
            if completed:
                dist.barrier()
        finally:
            forget_cached_gloo_group()
            dist.destroy_process_group()
