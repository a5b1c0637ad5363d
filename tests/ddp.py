"""Helpers of the tests that start several gloo processes."""

from __future__ import annotations

import contextlib
import datetime
import socket

import torch
import torch.distributed as dist


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a process group's init_method)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gloo_group(rank: int, world_size: int, port: int, timeout_s: float):
    """In a spawned process: one intra-op thread (the processes share the CPUs), then the gloo
    process group of ``world_size`` processes at 127.0.0.1:``port`` joined as ``rank``, with
    ``timeout_s`` as its timeout; the group is left as the CPU launcher leaves it
    (:func:`dcinet_d2.engine.launch.leaving_process_group`), whatever happened."""
    from dcinet_d2.engine.launch import leaving_process_group

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    with leaving_process_group():
        yield
