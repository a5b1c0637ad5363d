"""A bad identity on one process fails every process promptly (issue 12, item 10).

Two gloo processes run a training step of the re-id criterion; rank 1's batch holds an identity
the model has no class for. Before, rank 1 raised and rank 0 waited in the memories' all-gather
until the process group's timeout; now both raise the same ValueError at once.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from dcinet_d2.modeling.losses import ReIDCriterion

from ..ddp import free_port, gloo_group

WORLD_SIZE = 2
NUM_CLASSES, DIM = 5, 4
TIMEOUT_S = 60  # the process group's timeout: a hang would end here, not in a ValueError


def _worker(rank: int, port: int, out_dir: str) -> None:
    with gloo_group(rank, WORLD_SIZE, port, TIMEOUT_S):
        outcome = "no error"
        try:
            crit = ReIDCriterion(
                NUM_CLASSES,
                DIM,
                losses=["olp", "c2hep"],
                dictionary_size=16,
                options={"c2hep": {"pool_size": 4, "num_hard": 2}},
            )
            embeds = F.normalize(torch.randn(4, DIM), dim=1)
            pids = torch.tensor([0, 1, 2, NUM_CLASSES if rank == 1 else 3])
            crit(embeds, pids, torch.tensor([0, 0, 1, 1]))
        except Exception as e:  # the outcome is what the test checks
            outcome = f"{type(e).__name__}: {e}"
        finally:
            with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
                f.write(outcome)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_bad_identity_on_one_rank_fails_every_rank_promptly(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    outcomes = [(tmp_path / f"rank{r}.txt").read_text() for r in range(WORLD_SIZE)]
    assert outcomes[1].startswith(
        "ValueError: identities (pids) must be in [-1, 4], got [0, 5] (on this process; rank 1)"
    )
    # rank 0's own batch is valid: it raises because of rank 1's (a hang would have ended in a
    # timeout error of the all-gather instead)
    assert outcomes[0].startswith(
        "ValueError: identities (pids) must be in [-1, 4], got [0, 5] (on another process; rank 0)"
    )
