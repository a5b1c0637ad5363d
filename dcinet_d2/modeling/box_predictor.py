"""Fast R-CNN output layers with an IoU-aware detection score (ours, off by default).

:class:`IoUAwareOutputLayers` is Detectron2's
:class:`~detectron2.modeling.roi_heads.fast_rcnn.FastRCNNOutputLayers` plus one linear layer that
predicts, for every ROI, the IoU of its *regressed* box with the ground-truth box the ROI is matched
to (the matcher's best one, also for a background ROI). Training adds ``loss_box_iou``: binary
cross-entropy between that prediction and the IoU, a soft target in [0, 1] (as in IoU-aware
RetinaNet and VarifocalNet), over every sampled ROI. At inference the score of each foreground class
becomes ``p ** (1 - alpha) * iou ** alpha``.

Why: the detectors of this project keep many boxes on *part* of a person (its upper or lower half),
which score about 0.75 against 0.95 for whole persons and are not suppressed by NMS
(docs/reid_recipe.md). Such a box overlaps its person by IoU 0.3-0.5, so the classifier learns it
only as "background" next to pure background, while an IoU target ranks it between the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference
from detectron2.structures import Boxes, Instances
from detectron2.structures.boxes import matched_pairwise_iou
from torch import Tensor, nn

__all__ = ["IoUAwareOutputLayers", "regressed_box_iou_targets", "inference_with_proposal_indices"]


def inference_with_proposal_indices(
    predictor: FastRCNNOutputLayers, predictions, proposals: list[Instances]
) -> tuple[list[Instances], list[Tensor]]:
    """``predictor.inference``, whose second output always indexes each image's proposals.

    ``FastRCNNOutputLayers.inference`` returns, per image, the index of the prediction each kept
    detection comes from; but ``fast_rcnn_inference`` drops predictions with a non-finite box or
    score *before* numbering, so past such a row its indices no longer point at the proposals.
    Here such a row gets a zero box and zero scores before the same public
    ``fast_rcnn_inference`` runs: every row is finite, the indices are the proposals', and the
    row cannot be kept (its scores are not above the score threshold, which must be >= 0).

    Returns:
        The detections of each image and ``[K_i]`` long indices into its proposals.
    """
    boxes = predictor.predict_boxes(predictions, proposals)
    scores = predictor.predict_probs(predictions, proposals)
    finite_boxes, finite_scores = [], []
    for b, s in zip(boxes, scores):
        valid = torch.isfinite(b).all(dim=1) & torch.isfinite(s).all(dim=1)
        if not bool(valid.all()):
            if predictor.test_score_thresh < 0:
                raise ValueError(
                    "MODEL.ROI_HEADS.SCORE_THRESH_TEST must be >= 0, got "
                    f"{predictor.test_score_thresh}"
                )
            b = torch.where(valid[:, None], b, torch.zeros_like(b))
            s = torch.where(valid[:, None], s, torch.zeros_like(s))
        finite_boxes.append(b)
        finite_scores.append(s)
    return fast_rcnn_inference(
        finite_boxes,
        finite_scores,
        [x.image_size for x in proposals],
        predictor.test_score_thresh,
        predictor.test_nms_thresh,
        predictor.test_topk_per_image,
    )


def regressed_box_iou_targets(pred_boxes: Tensor, proposals: list[Instances]) -> Tensor:
    """IoU of each ROI's regressed box with the ground-truth box it is matched to.

    Args:
        pred_boxes: ``[R, 4]`` regressed boxes (XYXY) of the concatenated ROIs of ``proposals``.
        proposals: the sampled proposals of each image; an image with persons carries
            ``gt_boxes`` (Detectron2 copies the matched ground truth onto every sampled proposal,
            foreground or not); an image without persons has none, and its targets are 0.

    Returns:
        ``[R]`` float IoUs in [0, 1].
    """
    targets = []
    start = 0
    for props in proposals:
        n = len(props)
        mine = pred_boxes[start : start + n]
        start += n
        if props.has("gt_boxes"):
            targets.append(matched_pairwise_iou(Boxes(mine), props.gt_boxes))
        else:
            targets.append(mine.new_zeros(n))
    if start != pred_boxes.shape[0]:
        raise ValueError(f"{pred_boxes.shape[0]} regressed boxes for {start} proposals")
    return cat(targets, dim=0) if targets else pred_boxes.new_zeros(0)


class IoUAwareOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` + a predicted IoU that tempers the classification score.

    ``forward`` returns ``(scores, proposal_deltas, iou_logits)``; every other method accepts that
    triple where Detectron2's accept ``(scores, proposal_deltas)``.
    """

    @configurable
    def __init__(
        self, input_shape, *, iou_score_weight: float, iou_loss_weight: float = 1.0, **kwargs
    ):
        """
        Args:
            input_shape: as :class:`FastRCNNOutputLayers`.
            iou_score_weight: ``alpha`` in ``p ** (1 - alpha) * iou ** alpha``, in (0, 1].
            iou_loss_weight: weight of ``loss_box_iou``.
            kwargs: the other arguments of :class:`FastRCNNOutputLayers`.
        """
        super().__init__(input_shape, **kwargs)
        if not 0.0 < iou_score_weight <= 1.0:
            raise ValueError(
                f"MODEL.ROI_BOX_HEAD.IOU_SCORE_WEIGHT must be in (0, 1], got {iou_score_weight}"
            )
        if iou_loss_weight < 0:
            raise ValueError(
                f"MODEL.ROI_BOX_HEAD.IOU_LOSS_WEIGHT must be >= 0, got {iou_loss_weight}"
            )
        self.iou_score_weight = float(iou_score_weight)
        self.loss_weight["loss_box_iou"] = float(iou_loss_weight)
        self.iou_pred = nn.Linear(self.cls_score.in_features, 1)
        nn.init.normal_(self.iou_pred.weight, std=0.01)
        nn.init.constant_(self.iou_pred.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["iou_score_weight"] = cfg.MODEL.ROI_BOX_HEAD.IOU_SCORE_WEIGHT
        ret["iou_loss_weight"] = cfg.MODEL.ROI_BOX_HEAD.IOU_LOSS_WEIGHT
        return ret

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        scores, deltas = super().forward(x)
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        return scores, deltas, self.iou_pred(x).squeeze(1)

    def losses(self, predictions, proposals: list[Instances]) -> dict[str, Tensor]:
        scores, deltas, iou_logits = predictions
        losses = super().losses((scores, deltas), proposals)
        if len(proposals):
            with torch.no_grad():
                boxes = self.predict_boxes_for_gt_classes((scores, deltas.detach()), proposals)
                targets = regressed_box_iou_targets(cat(boxes, dim=0), proposals)
            loss = F.binary_cross_entropy_with_logits(iou_logits, targets.to(iou_logits.dtype))
        else:
            loss = iou_logits.sum() * 0.0
        losses["loss_box_iou"] = loss * self.loss_weight["loss_box_iou"]
        return losses

    def predict_boxes(self, predictions, proposals: list[Instances]):
        return super().predict_boxes(predictions[:2], proposals)

    def predict_boxes_for_gt_classes(self, predictions, proposals: list[Instances]):
        return super().predict_boxes_for_gt_classes(predictions[:2], proposals)

    def predict_probs(self, predictions, proposals: list[Instances]):
        """Class probabilities with every foreground column ``p ** (1 - a) * iou ** a``; the
        background column is left as the softmax gives it (inference reads only the others)."""
        scores, _, iou_logits = predictions
        probs = F.softmax(scores, dim=-1)
        iou = torch.sigmoid(iou_logits.float()).to(probs.dtype)[:, None]
        a = self.iou_score_weight
        fg = probs[:, :-1].clamp(min=0) ** (1.0 - a) * iou**a
        probs = torch.cat([fg, probs[:, -1:]], dim=1)
        return probs.split([len(p) for p in proposals], dim=0)
