"""Tests of the IoU-aware box predictor (``MODEL.ROI_BOX_HEAD.IOU_SCORE_WEIGHT``): targets, loss
and scores worked out by hand, and the switch in both heads."""

from __future__ import annotations

import math
import os

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from dcinet_d2.modeling.box_predictor import (
    IoUAwareOutputLayers,
    inference_with_proposal_indices,
    regressed_box_iou_targets,
)
from tests.modeling.common import (
    build_test_model,
    load_cfg,
    make_pair_batch,
    make_test_inputs,
    reduce_for_cpu,
)

SMALL_CONFIGS = [
    os.path.join("configs", "synthetic", f) for f in ("inet_small.yaml", "dcinet_small.yaml")
]


def _proposals():
    """Image 0: two proposals [0, 0, 10, 10] matched to a person [0, 0, 10, 20] (IoU 100 / 200
    = 1/2) and to a person [5, 0, 15, 10] (IoU 50 / 150 = 1/3). Image 1: no person."""
    a = Instances((40, 40))
    a.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10]]))
    a.gt_boxes = Boxes(torch.tensor([[0.0, 0, 10, 20], [5.0, 0, 15, 10]]))
    a.gt_classes = torch.tensor([0, 1])  # foreground, background (1 = num_classes)
    b = Instances((40, 40))
    b.proposal_boxes = Boxes(torch.tensor([[20.0, 20, 30, 30]]))
    b.gt_classes = torch.tensor([1])
    return [a, b]


def _predictor(iou_bias, score_weight=0.5):
    """One class, 4 input channels, all weights 0: zero deltas (regressed box = proposal), equal
    class logits, IoU logit = ``iou_bias`` everywhere."""
    layers = IoUAwareOutputLayers(
        ShapeSpec(channels=4),
        box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
        num_classes=1,
        iou_score_weight=score_weight,
        test_score_thresh=0.0,
    )
    with torch.no_grad():
        for layer in (layers.cls_score, layers.bbox_pred, layers.iou_pred):
            layer.weight.zero_()
            layer.bias.zero_()
        layers.iou_pred.bias.fill_(iou_bias)
    return layers


def test_targets_are_the_iou_of_the_regressed_box_with_the_matched_person():
    pred = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [20.0, 20, 30, 30]])
    targets = regressed_box_iou_targets(pred, _proposals())
    assert targets.tolist() == pytest.approx([1 / 2, 1 / 3, 0.0])
    with pytest.raises(ValueError, match="2 regressed boxes for 3 proposals"):
        regressed_box_iou_targets(pred[:2], _proposals())


def test_iou_loss_is_bce_against_the_iou_and_does_not_train_the_regressor():
    # IoU logit ln 3 (sigmoid 3/4): BCE = softplus(ln 3) - t ln 3 = ln 4 - t ln 3, with
    # t = 1/2, 1/3, 0: mean = ln 4 - ln 3 * (1/2 + 1/3) / 3.
    layers = _predictor(math.log(3.0))
    x = torch.randn(3, 4, requires_grad=True)
    with EventStorage():  # Detectron2's losses log classification statistics
        losses = layers.losses(layers(x), _proposals())
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_box_iou"}
    expected = math.log(4.0) - math.log(3.0) * (1 / 2 + 1 / 3) / 3
    assert float(losses["loss_box_iou"]) == pytest.approx(expected, rel=1e-6)
    losses["loss_box_iou"].backward()
    assert layers.iou_pred.bias.grad is not None and float(layers.iou_pred.bias.grad) != 0
    assert (
        layers.bbox_pred.weight.grad is None or float(layers.bbox_pred.weight.grad.abs().sum()) == 0
    )
    assert (
        layers.cls_score.weight.grad is None or float(layers.cls_score.weight.grad.abs().sum()) == 0
    )


def test_iou_loss_weight_scales_the_loss():
    layers = _predictor(math.log(3.0))
    layers.loss_weight["loss_box_iou"] = 2.5
    with EventStorage():
        loss = float(layers.losses(layers(torch.randn(3, 4)), _proposals())["loss_box_iou"])
    assert loss == pytest.approx(2.5 * (math.log(4.0) - math.log(3.0) * (5 / 6) / 3), rel=1e-6)


@pytest.mark.parametrize("score_weight, expected", [(0.5, math.sqrt(0.5 * 0.25)), (1.0, 0.25)])
def test_score_is_probability_and_iou_combined(score_weight, expected):
    # class logits equal: p = 1/2; IoU logit -ln 3: sigmoid = 1/4; score = p^(1-a) * iou^a
    layers = _predictor(-math.log(3.0), score_weight)
    props = _proposals()
    probs = layers.predict_probs(layers(torch.randn(3, 4)), props)
    assert [len(p) for p in probs] == [2, 1]
    for p in probs:
        assert p[:, 0].tolist() == pytest.approx([expected] * len(p), rel=1e-6)
        assert p[:, 1].tolist() == pytest.approx([0.5] * len(p), rel=1e-6)  # background: softmax
    boxes = layers.predict_boxes(layers(torch.randn(3, 4)), props)
    assert torch.allclose(torch.cat(boxes), torch.cat([p.proposal_boxes.tensor for p in props]))
    instances, _ = layers.inference(layers(torch.randn(3, 4)), props)
    assert sorted(instances[0].scores.tolist()) == pytest.approx([expected], rel=1e-6)  # NMS


@pytest.mark.parametrize("weight, message", [(1.5, "in \\(0, 1\\]"), (-0.1, ">= 0")])
def test_score_weight_out_of_range_is_refused(weight, message):
    cfg = reduce_for_cpu(load_cfg(SMALL_CONFIGS[1]))
    cfg.MODEL.ROI_BOX_HEAD.IOU_SCORE_WEIGHT = weight
    with pytest.raises(ValueError, match=f"IOU_SCORE_WEIGHT must be {message}"):
        build_test_model(cfg)


@pytest.mark.parametrize("config_file", SMALL_CONFIGS)
def test_heads_train_and_infer_with_the_iou_aware_score(config_file):
    cfg = reduce_for_cpu(load_cfg(config_file))
    assert type(build_test_model(cfg).roi_heads.box_predictor) is FastRCNNOutputLayers  # default
    cfg.MODEL.ROI_BOX_HEAD.IOU_SCORE_WEIGHT = 0.5
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # keep detections of the untrained model
    model = build_test_model(cfg)
    assert isinstance(model.roi_heads.box_predictor, IoUAwareOutputLayers)
    model.train()
    with EventStorage():
        losses = model(make_pair_batch())
    assert "loss_box_iou" in losses and math.isfinite(float(losses["loss_box_iou"]))
    sum(losses.values()).backward()
    assert float(model.roi_heads.box_predictor.iou_pred.weight.grad.abs().sum()) > 0
    model.eval()
    with torch.no_grad():
        outputs = model(make_test_inputs())
    assert sum(len(out["instances"]) for out in outputs) > 0
    for out in outputs:
        inst = out["instances"]
        assert len(inst.pred_embeds) == len(inst)
        assert ((inst.scores >= 0) & (inst.scores <= 1)).all()


def test_inference_indices_point_at_the_proposals_past_a_non_finite_prediction():
    # Three disjoint proposals; the first one's prediction is NaN. Person probabilities of the
    # others: softmax([2, 0])[0] = e^2 / (e^2 + 1) = 0.8808 and softmax([0, 0])[0] = 0.5. Zero
    # deltas: every detection's box is its proposal's box. Detectron2 numbers the kept rows after
    # dropping the NaN row (0, 1); the indices must be the proposals' (1, 2).
    predictor = FastRCNNOutputLayers(
        ShapeSpec(channels=4),
        box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
        num_classes=1,
        test_score_thresh=0.0,
    )
    props = Instances((100, 100))
    props.proposal_boxes = Boxes(
        torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30], [50.0, 50, 60, 70]])
    )
    logits = torch.tensor([[float("nan"), 0.0], [2.0, 0.0], [0.0, 0.0]])
    predictions = (logits, torch.zeros(3, 4))
    (inst,), (kept,) = inference_with_proposal_indices(predictor, predictions, [props])
    assert kept.tolist() == [1, 2]
    torch.testing.assert_close(inst.pred_boxes.tensor, props.proposal_boxes.tensor[[1, 2]])
    torch.testing.assert_close(inst.scores, torch.tensor([math.exp(2) / (math.exp(2) + 1), 0.5]))
    # the same inputs, all finite: the indices are those of Detectron2's own inference
    finite = (torch.tensor([[-1.0, 0.0], [2.0, 0.0], [0.0, 0.0]]), torch.zeros(3, 4))
    _, (ours,) = inference_with_proposal_indices(predictor, finite, [props])
    _, (theirs,) = predictor.inference(finite, [props])
    assert ours.tolist() == theirs.tolist() == [1, 2, 0]
    predictor.test_score_thresh = -0.1
    with pytest.raises(ValueError, match="SCORE_THRESH_TEST"):
        inference_with_proposal_indices(predictor, predictions, [props])
