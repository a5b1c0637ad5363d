"""PersonSearchEvaluator under torch.distributed (2 gloo processes on CPU): each process sees half
of the images; rank 0 gathers everything and gets the single-process numbers, rank 1 returns {}."""

from __future__ import annotations

import json
import os

import pytest
import torch.multiprocessing as mp

from ..ddp import free_port, gloo_group


def _worker(rank, world, port, out):
    with gloo_group(rank, world, port, timeout_s=60):
        from dcinet_d2.evaluation import PersonSearchEvaluator

        from .test_evaluator import E1, PRW_DICTS, PRW_OUTPUTS, model_io, register_memory

        name = register_memory(PRW_DICTS, "prw")
        ev = PersonSearchEvaluator(name, os.path.join(out, "files"), cross_camera=True)
        ev.reset()
        # rank 0 gets q.jpg (with the query) and f.jpg, rank 1 e.jpg and g.jpg; batches of one
        for inp, outp in model_io(PRW_DICTS, PRW_OUTPUTS, {0: E1})[rank::world]:
            ev.process([inp], [outp])
        res = ev.evaluate()
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(res, f)


@pytest.mark.timeout(120)
def test_gather_on_two_processes(tmp_path):
    from .test_evaluator import PRW_EXPECTED, assert_results

    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    with open(tmp_path / "rank0.json") as f:
        assert_results(json.load(f), PRW_EXPECTED)
    with open(tmp_path / "rank1.json") as f:
        assert json.load(f) == {}
    assert sorted(os.listdir(tmp_path / "files")) == [
        "person_search_metrics.json",
        "person_search_predictions.pth",
    ]
