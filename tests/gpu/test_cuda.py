"""CUDA checks (skipped without a GPU; run by tools/device_check.sh on a GPU machine)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dcinet_d2.engine import PersonSearchTrainer
from dcinet_d2.modeling.losses import ReIDCriterion

from ..engine.common import quick_cfg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("name", ["inet", "dcinet"])
def test_amp_trains_both_heads(name, tmp_path):
    cfg = quick_cfg(
        name,
        str(tmp_path),
        "MODEL.DEVICE",
        "cuda",
        "SOLVER.AMP.ENABLED",
        "True",
        "SOLVER.MAX_ITER",
        "4",
        "DATASETS.TEST",
        "()",
        "TEST.EVAL_PERIOD",
        "0",
    )
    trainer = PersonSearchTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    total = [v for v, _ in trainer.storage.histories()["total_loss"].values()]
    assert len(total) == 4 and all(torch.isfinite(torch.tensor(total)))
    reid = {"inet": "loss_hep", "dcinet": "loss_c2hep"}[name]
    assert reid in trainer.storage.histories()


@pytest.mark.parametrize("losses", [["olp", "hep"], ["olp", "c2hep"]])
def test_reid_training_path_does_not_synchronise(losses):
    """Issue 13, item 1: the re-id losses and memory updates as the ROI heads call them (number of
    images given, identities checked upstream on the host). The CPU counterpart, run in CI:
    tests/utils/test_periodic_means_and_host_sync.py."""
    crit = (
        ReIDCriterion(
            20,
            8,
            losses=losses,
            dictionary_size=32,
            options={
                "hep": {"pool_size": 8, "num_hard": 2},
                "c2hep": {"pool_size": 8, "num_hard": 2},
            },
        )
        .cuda()
        .train()
    )
    g = torch.Generator(device="cuda").manual_seed(0)
    embeds = F.normalize(torch.randn(12, 8, device="cuda", generator=g), dim=1).requires_grad_()
    pids = torch.randint(-1, 20, (12,), device="cuda", generator=g)
    image_ids = torch.arange(12, device="cuda") // 3
    crit(embeds, pids, image_ids)  # warm-up: lazy initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss_dict, _ = crit(embeds, pids, image_ids, num_images=4, check_pids=False)
        sum(loss_dict.values()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize(
    "config_file", ["configs/synthetic/inet_small.yaml", "configs/synthetic/dcinet_small.yaml"]
)
def test_training_step_reid_path_does_not_synchronise(config_file):
    """The same through a training step of each small model: its ``_reid_losses`` (criterion,
    memory updates, metric averaging) under ``set_sync_debug_mode("error")``, second step."""
    from detectron2.utils.events import EventStorage

    from tests.modeling.common import build_test_model, load_cfg, make_pair_batch, reduce_for_cpu

    cfg = reduce_for_cpu(load_cfg(config_file), rois_per_image=16)
    cfg.MODEL.DEVICE = "cuda"
    model = build_test_model(cfg).train()
    heads = model.roi_heads
    original = heads._reid_losses

    def strict(*args, **kwargs):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            return original(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    with EventStorage() as storage:
        sum(model(make_pair_batch()).values()).backward()  # warm-up
        storage.iter += 1
        heads._reid_losses = strict
        sum(model(make_pair_batch()).values()).backward()


def test_batched_inference_matches_single_on_cuda(tmp_path):
    from detectron2.modeling import build_model

    cfg = quick_cfg("dcinet", str(tmp_path), "MODEL.DEVICE", "cuda", "TEST.IMS_PER_BATCH", "4")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    batch = next(iter(PersonSearchTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])))
    with torch.no_grad():
        together = model(batch)
        alone = [model([d])[0] for d in batch]
    for a, b in zip(together, alone):
        assert torch.allclose(a["instances"].pred_embeds, b["instances"].pred_embeds, atol=1e-3)
