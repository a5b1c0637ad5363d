"""Paired loading under torch.distributed (2 gloo processes on CPU): each process gets other
pairs."""

from __future__ import annotations

import os

import pytest
import torch.multiprocessing as mp

from ..ddp import free_port, gloo_group
from .test_pairing import _cfg, _image_dicts


def _worker(rank, world, port, tmp, out):
    with gloo_group(rank, world, port, timeout_s=60):
        import pathlib

        from detectron2.utils.env import seed_all_rng

        from dcinet_d2.data import build_paired_train_loader

        seed_all_rng(7 + rank)  # as Detectron2's default_setup does: seed + rank
        cfg = _cfg(**{"SOLVER.IMS_PER_BATCH": 4})  # 2 images = 1 pair per process
        loader = build_paired_train_loader(cfg, dataset_dicts=_image_dicts(pathlib.Path(tmp)))
        it = iter(loader)
        anchors = []
        for _ in range(4):  # 8 images, one epoch of the sharded sampler = 4 anchors per process
            batch = next(it)
            assert len(batch) == 2
            anchors.append(batch[0]["image_id"])
            assert int(batch[0]["image_id"][2:-4]) ^ 1 == int(batch[1]["image_id"][2:-4])
        with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
            f.write("\n".join(anchors))


@pytest.mark.timeout(120)
def test_two_processes_draw_disjoint_anchors(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    mp.spawn(_worker, args=(2, free_port(), str(imgs), str(out)), nprocs=2, join=True)
    r0 = (out / "rank0.txt").read_text().split("\n")
    r1 = (out / "rank1.txt").read_text().split("\n")
    # TrainingSampler shards one shared permutation: within the first epoch ranks see disjoint
    # anchors, and together all 8 images
    assert len(set(r0)) == 4 and len(set(r1)) == 4
    assert set(r0).isdisjoint(r1) and len(set(r0) | set(r1)) == 8
