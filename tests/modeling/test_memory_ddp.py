"""Memories under torch.distributed: two gloo processes on CPU hold identical buffers.

Each rank feeds DIFFERENT embeddings, with different numbers of rows per step (zero included),
into a ReIDCriterion (feature dictionary + class centres) for several steps. Afterwards the
buffers of both ranks must be identical, and equal to those of a single-process criterion fed
the concatenation of the ranks' inputs in rank order.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from dcinet_d2.modeling.losses import ReIDCriterion
from dcinet_d2.utils import all_gather_rows, get_rank, get_world_size

from ..ddp import free_port, gloo_group

WORLD_SIZE = 2
NUM_CLASSES, DIM = 6, 3
# rows per step: rank 0, rank 1 (step 3 brings 10 rows at once into a dictionary of 8)
COUNTS = [(3, 2), (0, 4), (5, 0), (4, 6), (2, 0), (0, 0)]


def make_criterion() -> ReIDCriterion:
    return ReIDCriterion(
        num_classes=NUM_CLASSES,
        dim=DIM,
        losses=["olp", "hep", "c2hep"],
        dictionary_size=8,
        options={
            "olp": {"scale": 10.0},
            "hep": {"pool_size": 4, "num_hard": 2},
            "c2hep": {"pool_size": 4, "num_hard": 2, "momentum": 0.5},
        },
    )


def make_batch(rank: int, step: int):
    """Inputs of ``rank`` at ``step``: deterministic, different for every (rank, step)."""
    n = COUNTS[step][rank]
    g = torch.Generator().manual_seed(1000 * rank + step)
    embeds = F.normalize(torch.randn(n, DIM, generator=g), dim=1)
    pids = torch.randint(-1, NUM_CLASSES, (n,), generator=g)
    image_ids = (torch.arange(n) >= n // 2).long()  # first half image 0, the rest image 1
    return embeds, pids, image_ids


def _worker(rank: int, port: int, out_dir: str) -> None:
    with gloo_group(rank, WORLD_SIZE, port, timeout_s=60):
        assert get_world_size() == WORLD_SIZE and get_rank() == rank
        # all_gather_rows: rank 0 has 1 row, rank 1 has 3 (then 0 and 2, then 0 and 0)
        for sizes in ((1, 3), (0, 2), (0, 0)):
            x = torch.arange(sizes[rank] * 2, dtype=torch.float32).view(-1, 2) + 100 * rank
            flags = torch.arange(sizes[rank]) % 2 == rank
            gx, gflags = all_gather_rows(x, flags)
            expected = torch.cat(
                [
                    torch.arange(sizes[r] * 2, dtype=torch.float32).view(-1, 2) + 100 * r
                    for r in range(WORLD_SIZE)
                ]
            )
            assert torch.equal(gx, expected), (rank, sizes, gx)
            assert gflags.dtype == torch.bool
            expected_flags = [i % 2 == r for r in range(WORLD_SIZE) for i in range(sizes[r])]
            assert gflags.tolist() == expected_flags

        torch.manual_seed(0)
        crit = make_criterion()
        for step in range(len(COUNTS)):
            embeds, pids, image_ids = make_batch(rank, step)
            embeds.requires_grad_()
            losses, _ = crit(embeds, pids, image_ids)
            sum(losses.values()).backward()
        buffers = {name: b.clone() for name, b in crit.named_buffers()}
        torch.save(buffers, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_buffers_identical_across_ranks_and_equal_to_single_process(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]

    # single-process reference fed the concatenation in rank order (rank 1's images are 2, 3)
    ref = make_criterion()
    for step in range(len(COUNTS)):
        batches = [make_batch(r, step) for r in range(WORLD_SIZE)]
        embeds = torch.cat([b[0] for b in batches])
        pids = torch.cat([b[1] for b in batches])
        image_ids = torch.cat([b[2] + 2 * r for r, b in enumerate(batches)])
        ref(embeds, pids, image_ids)
    expected = dict(ref.named_buffers())

    assert (
        set(per_rank[0])
        == set(expected)
        == {
            "dictionary.feats",
            "dictionary.pids",
            "dictionary.ptr",
            "dictionary.num_filled",
            "c2hep.centres.centres",
            "c2hep.centres.initialized",
        }
    )
    for name, value in expected.items():
        for r in range(WORLD_SIZE):
            assert torch.equal(per_rank[r][name], value), (name, r)
    # rows per step 5, 4, 5, 10, 2, 0 into 8 slots: ptr 5, 1, 6, then the burst of 10 keeps its
    # newest 8 and fills all slots once (ptr stays 6), then 2 more: ptr (6 + 2) % 8 = 0
    assert expected["dictionary.num_filled"].item() == 8
    assert expected["dictionary.ptr"].item() == 0
    assert expected["c2hep.centres.initialized"].any()
