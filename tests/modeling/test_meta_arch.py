"""Tests of PersonSearchRCNN: pairing check in training, inference outputs (detections with
embeddings, query embeddings), ``embed_boxes`` and its coordinate scaling."""

from __future__ import annotations

import os

import pytest
import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from dcinet_d2.modeling import PersonSearchRCNN
from tests.modeling.common import (
    build_test_model,
    config_files,
    load_cfg,
    make_pair_batch,
    make_test_inputs,
    paper_config_files,
    reduce_for_cpu,
    small_config_files,
)

SMALL_INET = os.path.join("configs", "synthetic", "inet_small.yaml")

# Queries of make_test_inputs(): image 0 (input 128 x 96, original 256 x 192) has two, image 1
# none; boxes in original image coordinates.
QUERIES = [
    [
        {"query_id": 7, "bbox": [20.0, 30.0, 90.0, 200.0], "person_id": 3},
        {"query_id": 2, "bbox": [100.0, 10.0, 180.0, 250.0], "person_id": 5},
    ],
    None,
]


def _eval_model(config_file, score_thresh=None, embed_stripes=None):
    cfg = load_cfg(config_file)
    if embed_stripes is not None:
        cfg.MODEL.REID.EMBED_STRIPES = embed_stripes
    if score_thresh is not None:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_thresh
    if config_file in paper_config_files() or config_file.endswith("Base-DCINet-C4.yaml"):
        reduce_for_cpu(cfg, rois_per_image=16, test_proposals=20)
    else:
        reduce_for_cpu(cfg)
    return build_test_model(cfg).eval(), cfg


def test_training_needs_an_even_batch():
    model = build_test_model(reduce_for_cpu(load_cfg(SMALL_INET))).train()
    assert isinstance(model, PersonSearchRCNN)
    with EventStorage(), pytest.raises(ValueError, match="pairs"):
        model(make_pair_batch()[:3])


def test_training_checks_the_identities_on_the_host_before_the_step():
    """The ROI heads do not range-check the identities (that would read them back from the
    device every step): the meta-architecture does, on the mapper's CPU tensors, before the
    backbone runs."""
    model = build_test_model(reduce_for_cpu(load_cfg(SMALL_INET))).train()
    num_ids = model.roi_heads.criterion.num_classes
    batch = make_pair_batch()
    batch[1]["instances"].gt_pids[0] = num_ids
    calls = []
    model.backbone.register_forward_hook(lambda *args: calls.append(1))
    with (
        EventStorage(),
        pytest.raises(
            ValueError,
            match=rf"must be in \[-1, {num_ids - 1}\], "
            rf"got \[-?\d+, {num_ids}\]",
        ),
    ):
        model(batch)
    assert not calls  # failed before any computation
    batch[1]["instances"].gt_pids[0] = num_ids - 1
    with EventStorage():
        losses = model(batch)
    assert calls and all(torch.isfinite(v) for v in losses.values())


def test_person_search_rcnn_needs_person_search_heads():
    cfg = reduce_for_cpu(load_cfg(SMALL_INET))
    cfg.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
    with pytest.raises(ValueError, match="INetROIHeads or DCINetROIHeads"):
        build_test_model(cfg)


@pytest.mark.parametrize("config_file", config_files())
def test_inference_outputs(config_file):
    model, cfg = _eval_model(config_file)
    dim = cfg.MODEL.REID.EMBED_DIM
    inputs = make_test_inputs(queries=QUERIES)
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    for x, out in zip(inputs, outputs):
        inst = out["instances"]
        assert inst.image_size == (x["height"], x["width"])
        for field in ("pred_boxes", "scores", "pred_classes", "pred_embeds"):
            assert inst.has(field), field
        assert inst.pred_embeds.shape == (len(inst), dim)
        if len(inst):  # unit vectors times score ** MODEL.REID.EMBED_SCORE_POWER
            expected = inst.scores.pow(cfg.MODEL.REID.EMBED_SCORE_POWER)
            torch.testing.assert_close(inst.pred_embeds.norm(dim=1), expected)
    assert "query_embeds" not in outputs[1]
    query_embeds = outputs[0]["query_embeds"]
    assert query_embeds.shape == (2, dim)
    torch.testing.assert_close(query_embeds.norm(dim=1), torch.ones(2))

    # a query's embedding is the embedding of its box, in the order of `queries`
    boxes = [torch.tensor([q["bbox"] for q in QUERIES[0]]), torch.zeros(0, 4)]
    with torch.no_grad():
        embedded = model.embed_boxes(inputs, boxes)
    assert embedded[1].shape == (0, dim)
    torch.testing.assert_close(embedded[0], query_embeds, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        swapped = model.embed_boxes(inputs, [boxes[0].flip(0), boxes[1]])
    torch.testing.assert_close(swapped[0], query_embeds.flip(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config_file", small_config_files())
def test_embed_boxes_scales_original_to_input_coordinates(config_file):
    model, _ = _eval_model(config_file)
    # the ROI heads' embedding of the scaled boxes alone; the flip has its own tests
    model.test_flip = False
    inputs = make_test_inputs(queries=QUERIES)  # original = 2 x input size
    original = torch.tensor([[20.0, 30.0, 90.0, 200.0], [100.0, 10.0, 180.0, 250.0]])
    with torch.no_grad():
        embedded = model.embed_boxes(inputs, [original, torch.zeros(0, 4)])[0]
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        none = Boxes(torch.zeros(0, 4))
        by_hand = model.roi_heads.embed_boxes(features, [Boxes(original / 2.0), none])
        unscaled = model.roi_heads.embed_boxes(features, [Boxes(original), none])
    torch.testing.assert_close(embedded, by_hand[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(embedded, unscaled[0], atol=1e-3)


@pytest.mark.parametrize("config_file", small_config_files())
def test_detections_embeddings_are_the_embeddings_of_the_final_boxes(config_file):
    # random weights: keep every detection after NMS, so that there are some to check
    model, cfg = _eval_model(config_file, score_thresh=0.0)
    if hasattr(model.roi_heads, "embed_detections_from"):
        model.roi_heads.embed_detections_from = (
            "boxes"  # I-Net: second res5 pass on the final boxes
        )
    inputs = make_test_inputs()
    with torch.no_grad():
        outputs = model(inputs)
        assert all(len(o["instances"]) > 0 for o in outputs)
        boxes = [o["instances"].pred_boxes.tensor for o in outputs]
        embedded = model.embed_boxes(inputs, boxes)
    power = cfg.MODEL.REID.EMBED_SCORE_POWER  # detections: unit embeddings times score ** power
    for out, emb in zip(outputs, embedded):
        weighted = emb * out["instances"].scores[:, None].pow(power)
        torch.testing.assert_close(out["instances"].pred_embeds, weighted, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config_file", small_config_files())
def test_embed_score_power_scales_each_detection_embedding_by_its_score(config_file):
    model, _ = _eval_model(config_file, score_thresh=0.0)
    inputs = make_test_inputs(queries=QUERIES)
    with torch.no_grad():
        model.embed_score_power = 0.0
        unit = model(inputs)
        model.embed_score_power = 2.0
        weighted = model(inputs)
    assert sum(len(o["instances"]) for o in unit) > 0
    for u, w in zip(unit, weighted):
        scores = u["instances"].scores
        torch.testing.assert_close(w["instances"].scores, scores)
        torch.testing.assert_close(
            w["instances"].pred_embeds, u["instances"].pred_embeds * (scores * scores)[:, None]
        )
    # the queries (given boxes, no score) stay unit vectors
    torch.testing.assert_close(weighted[0]["query_embeds"], unit[0]["query_embeds"])


def test_embed_score_power_must_not_be_negative():
    cfg = reduce_for_cpu(load_cfg(SMALL_INET))
    cfg.MODEL.REID.EMBED_SCORE_POWER = -1.0
    with pytest.raises(ValueError, match="MODEL.REID.EMBED_SCORE_POWER must be >= 0, got -1.0"):
        build_test_model(cfg)


@pytest.mark.parametrize("embed_stripes", [1, 2])
def test_inet_embeds_detections_from_their_proposals(embed_stripes):
    # With the box regression zeroed every detection's box is its proposal's box, so embedding the
    # detection from its proposal's features ("proposals", one ROI pass) must give exactly what a
    # second pass on the final box gives ("boxes"): this checks the proposal index bookkeeping,
    # with the spatial mean and with stripes (which need the res5 maps, not their mean).
    model, _ = _eval_model(SMALL_INET, score_thresh=0.0, embed_stripes=embed_stripes)
    assert model.roi_heads.embed_head.stripes == embed_stripes
    assert model.roi_heads.embed_detections_from == "proposals"  # the default
    with torch.no_grad():
        model.roi_heads.box_predictor.bbox_pred.weight.zero_()
        model.roi_heads.box_predictor.bbox_pred.bias.zero_()
        inputs = make_test_inputs()
        from_proposals = model(inputs)
        model.roi_heads.embed_detections_from = "boxes"
        from_boxes = model(inputs)
    for a, b in zip(from_proposals, from_boxes):
        assert len(a["instances"]) > 1
        torch.testing.assert_close(
            a["instances"].pred_boxes.tensor, b["instances"].pred_boxes.tensor
        )
        torch.testing.assert_close(
            a["instances"].pred_embeds, b["instances"].pred_embeds, rtol=1e-4, atol=1e-5
        )
    # and without zeroing, the two differ (the regressed box is not the proposal box)
    model2, _ = _eval_model(SMALL_INET, score_thresh=0.0, embed_stripes=embed_stripes)
    with torch.no_grad():
        a = model2(inputs)[0]["instances"].pred_embeds
        model2.roi_heads.embed_detections_from = "boxes"
        b = model2(inputs)[0]["instances"].pred_embeds
    assert not torch.allclose(a, b, atol=1e-4)


def test_inference_with_given_boxes_and_without_postprocessing():
    model, cfg = _eval_model(SMALL_INET)
    inputs = make_test_inputs(scale=1.0)
    given = []
    for x in inputs:
        inst = Instances(tuple(x["image"].shape[-2:]))
        inst.pred_boxes = Boxes(torch.tensor([[5.0, 5.0, 40.0, 90.0], [30.0, 10.0, 80.0, 70.0]]))
        inst.pred_classes = torch.zeros(2, dtype=torch.long)
        given.append(inst)
    with torch.no_grad():
        raw = model.inference(inputs, detected_instances=given, do_postprocess=False)
        embedded = model.embed_boxes(inputs, [g.pred_boxes.tensor for g in given])
    assert isinstance(raw[0], Instances)
    for inst, emb in zip(raw, embedded):
        assert inst.pred_embeds.shape == (2, cfg.MODEL.REID.EMBED_DIM)
        torch.testing.assert_close(inst.pred_embeds, emb, rtol=1e-4, atol=1e-5)


def test_embed_boxes_checks_the_number_of_box_tensors():
    model, _ = _eval_model(SMALL_INET)
    with pytest.raises(ValueError, match="box tensors"):
        model.embed_boxes(make_test_inputs(), [torch.zeros(0, 4)])
