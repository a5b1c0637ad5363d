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


def _assert_same_detections(a, b):
    """Instances ``a`` hold ``b``'s detections, each matched by its box (IoU > 0.99; NMS keeps no
    two boxes with IoU > 0.5, so the match is unique), with the same scores and embeddings."""
    from detectron2.structures import pairwise_iou

    assert len(a) == len(b) > 0
    best_iou, match = pairwise_iou(b.pred_boxes, a.pred_boxes).max(dim=1)
    same = best_iou > 0.99
    assert same.float().mean() >= 0.9
    assert torch.allclose(a.pred_embeds[match[same]], b.pred_embeds[same], atol=1e-3)
    assert torch.allclose(a.scores[match[same]], b.scores[same], atol=1e-3)


@pytest.fixture
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_batched_inference_matches_single_on_cuda(tmp_path, no_tf32):
    """A batch of four images gives the detections and embeddings of one-by-one inference. With
    random weights many scores nearly tie, and a batch runs other kernels than one image, so the
    kept detections may come in another order (seen on an H200): each single-image detection is
    matched to the batched one with the same box, and TF32 is off so that both runs compute in
    fp32."""
    from detectron2.modeling import build_model

    cfg = quick_cfg("dcinet", str(tmp_path), "MODEL.DEVICE", "cuda", "TEST.IMS_PER_BATCH", "4")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    batch = next(iter(PersonSearchTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])))
    with torch.no_grad():
        together = model(batch)
        alone = [model([d])[0] for d in batch]
    for a, b in zip(together, alone):
        _assert_same_detections(a["instances"], b["instances"])
    for a, b, d in zip(together, alone, batch):
        if d.get("queries"):
            assert torch.allclose(a["query_embeds"], b["query_embeds"], atol=1e-3)


def test_inference_copy_matches_the_model_on_cuda(tmp_path, no_tf32):
    """The copy that evaluation runs (norms folded, channels-last weights) detects and embeds as
    the model does; detections matched by box as above."""
    from detectron2.modeling import build_model

    from dcinet_d2.modeling.fast_inference import inference_model

    cfg = quick_cfg("dcinet", str(tmp_path), "MODEL.DEVICE", "cuda")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    fast = inference_model(model, channels_last=True)
    assert fast.backbone.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    batch = next(iter(PersonSearchTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])))
    with torch.no_grad():
        reference, outputs = model(batch), fast(batch)
    for a, b in zip(outputs, reference):
        _assert_same_detections(a["instances"], b["instances"])


def test_test_amp_returns_fp32_on_cuda(tmp_path):
    """TEST.AMP: inference under fp16 autocast returns fp32 boxes, scores, embeddings and query
    embeddings (the evaluator and the gallery index rank in fp32)."""
    from detectron2.modeling import build_model

    from dcinet_d2.modeling.fast_inference import inference_autocast, inference_model

    cfg = quick_cfg("dcinet", str(tmp_path), "MODEL.DEVICE", "cuda", "TEST.AMP", "True")
    torch.manual_seed(0)
    fast = inference_model(build_model(cfg), channels_last=True)
    batch = next(iter(PersonSearchTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])))[:1]
    with torch.no_grad(), inference_autocast(cfg, "cuda"):
        (out,) = fast(batch)
        boxes = out["instances"].pred_boxes.tensor[:3]
        (query_embeds,) = fast.embed_boxes(batch, [boxes])
    instances = out["instances"]
    assert len(instances) > 0
    for t in (instances.pred_embeds, instances.scores, instances.pred_boxes.tensor, query_embeds):
        assert t.dtype == torch.float32
