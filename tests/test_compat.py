"""The private Detectron2 / iopath names of dcinet_d2.compat still exist and do what we rely on."""

from __future__ import annotations

import socket

import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

import dcinet_d2  # noqa: F401  (registers the dcinet_d2:// prefix)
from dcinet_d2 import compat


def test_find_free_port_can_be_bound():
    port = compat.find_free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))  # free: binding succeeds


def test_set_local_process_group_is_what_comm_reads():
    before = comm._LOCAL_PROCESS_GROUP
    marker = object()
    try:
        compat.set_local_process_group(marker)
        assert comm._LOCAL_PROCESS_GROUP is marker
    finally:
        compat.set_local_process_group(before)


def test_forget_cached_gloo_group_empties_comms_cache(tmp_path):
    import torch.distributed as dist

    cache = comm._get_global_gloo_group
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert cache() is dist.group.WORLD  # what comm.gather uses, now held by the cache
        assert cache.cache_info().currsize == 1
        compat.forget_cached_gloo_group()
        assert cache.cache_info().currsize == 0
    finally:
        compat.forget_cached_gloo_group()
        dist.destroy_process_group()


def test_postprocess_detections_rescales_to_the_requested_size():
    # Input resized from 200 x 100 (h x w) to 400 x 200: every coordinate halves.
    inst = Instances((400, 200))
    inst.pred_boxes = Boxes(torch.tensor([[20.0, 40.0, 100.0, 200.0]]))
    inst.scores = torch.tensor([0.9])
    out = compat.postprocess_detections([inst], [{"height": 200, "width": 100}], [(400, 200)])
    assert len(out) == 1 and set(out[0]) == {"instances"}
    box = out[0]["instances"].pred_boxes.tensor
    assert torch.allclose(box, torch.tensor([[10.0, 20.0, 50.0, 100.0]]))


def test_path_prefix_registered():
    assert compat.path_prefix_registered(PathManager, "dcinet_d2://")
    assert not compat.path_prefix_registered(PathManager, "no_such_prefix_xyz://")
