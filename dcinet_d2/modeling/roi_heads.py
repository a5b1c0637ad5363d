"""ROI heads of I-Net and DC-I-Net for C4 backbones (ResNet res5 applied to ROI features).

* :class:`INetROIHeads` (I-Net): one res5 head shared by detection and re-id. Its pooled output
  feeds both Detectron2's box predictor and the embedding projection.
* :class:`DCINetROIHeads` (DC-I-Net, "divide and conquer"): a detection module (res5 + box
  predictor, exactly :class:`~detectron2.modeling.roi_heads.Res5ROIHeads`) and a separate re-id
  module (its own res5-like block, built the same way, + projection + L2 norm) on the shared trunk.

Both extend ``Res5ROIHeads`` (keyword-only ``@configurable`` arguments, ``from_config`` built on
``super().from_config``). Training: Detectron2 labels and samples the proposals (which copies each
matched ground truth's ``gt_pids`` onto its proposals); the sampled *foreground* proposals, labelled
by their matched ground truth's identity, are embedded (background proposals are not) and, with
``MODEL.REID.EMBED_GT_BOXES`` (ours), every ground-truth person box too, in the same ROI pass. The
embeddings go to :class:`~dcinet_d2.modeling.losses.criterion.ReIDCriterion`; its metrics are
written to the :class:`~detectron2.utils.events.EventStorage`. Inference: the final detections
(after NMS) are embedded, I-Net by a second pass of the shared res5, DC-I-Net by its re-id module;
they get a ``pred_embeds`` field.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from ..utils.periodic_means import PeriodicMeans
from .box_predictor import IoUAwareOutputLayers, inference_with_proposal_indices
from .build import build_reid_criterion

logger = logging.getLogger(__name__)

__all__ = [
    "EmbeddingHead",
    "PersonSearchRes5ROIHeads",
    "INetROIHeads",
    "DCINetROIHeads",
]


# --------------------------------------------------------------------------------- modules
class EmbeddingHead(nn.Module):
    """Projection of ROI features to L2-normalised person embeddings.

    ``x -> pooling -> Linear(in_channels * stripes, embed_dim) -> [BatchNorm1d] -> L2 normalise``.

    The pooling is the spatial mean (``stripes=1``, the paper's global pooling) or, with
    ``stripes=P > 1``, the mean of each of P horizontal stripes of equal height (top to bottom,
    as adaptive average pooling to ``P x 1`` cuts them: neighbours share a row where P does not
    divide the height), concatenated channel by channel
    (``[N, C * P]``): the upper and the lower part of a person keep their own features, as in
    part-based re-id models (PCB). Stripes are mirror-invariant, like the mean.

    With ``norm="BN"`` in training mode and fewer than two rows, batch statistics do not exist;
    the running statistics are used for that call instead (and are not updated).

    Args:
        in_channels: channels C of the ROI features.
        embed_dim: embedding dimension D (paper: 256).
        norm: ``"BN"`` or ``""`` (ours, ``MODEL.REID.EMBED_NORM``).
        stripes: number P of horizontal stripes pooled separately (ours,
            ``MODEL.REID.EMBED_STRIPES``; 1 = spatial mean).
    """

    def __init__(self, in_channels: int, embed_dim: int, norm: str = "BN", stripes: int = 1):
        super().__init__()
        if stripes < 1:
            raise ValueError(f"MODEL.REID.EMBED_STRIPES must be >= 1, got {stripes}")
        self.stripes = int(stripes)
        self.proj = nn.Linear(in_channels * self.stripes, embed_dim)
        nn.init.normal_(self.proj.weight, std=0.01)
        nn.init.zeros_(self.proj.bias)
        if norm == "BN":
            self.norm: nn.BatchNorm1d | None = nn.BatchNorm1d(embed_dim)
        elif norm == "":
            self.norm = None
        else:
            raise ValueError(f"MODEL.REID.EMBED_NORM must be 'BN' or '', got {norm!r}")
        self.embed_dim = embed_dim

    def forward(self, x: Tensor) -> Tensor:
        """
        Args:
            x: ``[N, C, H, W]`` ROI feature maps (``H >= stripes``), or ``[N, C]`` already
                pooled features when ``stripes == 1``.

        Returns:
            ``[N, D]`` embeddings of unit L2 norm.
        """
        if x.dim() == 4:
            if self.stripes == 1:
                x = x.mean(dim=(2, 3))
            else:
                if x.shape[2] < self.stripes:
                    raise ValueError(
                        f"MODEL.REID.EMBED_STRIPES = {self.stripes} needs ROI feature maps at "
                        f"least {self.stripes} cells high, got {x.shape[2]}"
                    )
                x = F.adaptive_avg_pool2d(x, (self.stripes, 1)).flatten(1)
        elif self.stripes != 1:
            raise ValueError("EmbeddingHead with stripes > 1 needs [N, C, H, W] feature maps")
        x = self.proj(x)
        if self.norm is not None:
            if self.training and x.shape[0] < 2:
                bn = self.norm
                x = F.batch_norm(
                    x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
                )
            else:
                x = self.norm(x)
        return F.normalize(x, dim=1)


class PersonSearchRes5ROIHeads(Res5ROIHeads):
    """Common part of :class:`INetROIHeads` and :class:`DCINetROIHeads` (not registered).

    Adds to ``Res5ROIHeads`` an embedding head, the re-id criterion and the selection of the
    ROIs to embed. Subclasses define :meth:`_reid_transform` (ROI features for re-id) and
    :meth:`_forward_train`.
    """

    @configurable
    def __init__(
        self,
        *,
        embed_head: nn.Module,
        criterion: nn.Module,
        embed_gt_boxes: bool = True,
        metrics_period: int = 1,
        **kwargs,
    ):
        """
        Args:
            embed_head: maps re-id ROI features ``[N, C, H, W]`` (or pooled ``[N, C]``) to
                ``[N, D]`` unit embeddings (:class:`EmbeddingHead`).
            criterion: re-id criterion called as ``criterion(embeds, pids, image_ids,
                num_images=, check_pids=False) -> (loss_dict, metrics)`` (:class:`ReIDCriterion`).
            embed_gt_boxes: also embed the ground-truth boxes of training images.
            metrics_period: the criterion's metrics are averaged over this many training steps
                on the device and written to the event storage at the steps ``i`` with
                ``(i + 1) % metrics_period == 0`` (``MODEL.REID.METRICS_PERIOD``; 1: every step).
            kwargs: arguments of :class:`Res5ROIHeads` (``mask_head`` must be None).
        """
        super().__init__(**kwargs)
        if self.mask_on:
            raise ValueError("person search ROI heads have no mask branch (MODEL.MASK_ON)")
        if metrics_period < 1:
            raise ValueError(f"MODEL.REID.METRICS_PERIOD must be >= 1, got {metrics_period}")
        self.embed_head = embed_head
        self.criterion = criterion
        self.embed_gt_boxes = embed_gt_boxes
        self.metrics_period = int(metrics_period)
        self._metric_means = PeriodicMeans()

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        if cfg.MODEL.MASK_ON:
            raise ValueError("person search ROI heads have no mask branch: set MODEL.MASK_ON False")
        ret = super().from_config(cfg, input_shape)
        res5_channels = ret["res5"][-1].out_channels
        iou_score_weight = cfg.MODEL.ROI_BOX_HEAD.IOU_SCORE_WEIGHT
        if iou_score_weight < 0:
            raise ValueError(
                f"MODEL.ROI_BOX_HEAD.IOU_SCORE_WEIGHT must be >= 0 (0 = off), "
                f"got {iou_score_weight}"
            )
        if iou_score_weight > 0:
            ret["box_predictor"] = IoUAwareOutputLayers(
                cfg, ShapeSpec(channels=res5_channels, height=1, width=1)
            )
        ret["embed_head"] = EmbeddingHead(
            res5_channels,
            cfg.MODEL.REID.EMBED_DIM,
            cfg.MODEL.REID.EMBED_NORM,
            stripes=cfg.MODEL.REID.EMBED_STRIPES,
        )
        ret["criterion"] = build_reid_criterion(cfg)
        ret["embed_gt_boxes"] = cfg.MODEL.REID.EMBED_GT_BOXES
        ret["metrics_period"] = cfg.MODEL.REID.METRICS_PERIOD
        return ret

    @classmethod
    def _build_res5_block(cls, cfg: CfgNode):
        """``Res5ROIHeads._build_res5_block`` with ``MODEL.ROI_HEADS.RES5_NORM`` (when set) in
        place of ``MODEL.RESNETS.NORM``; the backbone keeps ``MODEL.RESNETS.NORM``."""
        norm = cfg.MODEL.ROI_HEADS.get("RES5_NORM", "")
        if norm and norm != cfg.MODEL.RESNETS.NORM:
            cfg = cfg.clone()
            cfg.defrost()
            cfg.MODEL.RESNETS.NORM = norm
        return super()._build_res5_block(cfg)

    @property
    def embed_dim(self) -> int:
        return self.embed_head.embed_dim

    # ----------------------------------------------------------------------------- re-id parts
    def _reid_transform(self, features: list[Tensor], boxes: list[Boxes]) -> Tensor:
        """Re-id ROI features ``[sum_i len(boxes[i]), C, H, W]`` of the given boxes."""
        raise NotImplementedError

    def embed_boxes(self, features: dict[str, Tensor], boxes: list[Boxes]) -> list[Tensor]:
        """Embed given boxes (in input-image coordinates) of each image.

        Args:
            features: backbone features, ``{name: [B, C, H, W]}``.
            boxes: B :class:`Boxes`, ``k_i`` boxes each, in the coordinates of the (resized)
                input images.

        Returns:
            B tensors ``[k_i, D]`` of unit-norm embeddings.
        """
        counts = [len(b) for b in boxes]
        if sum(counts) == 0:
            ref = features[self.in_features[0]]
            return [ref.new_zeros(0, self.embed_dim) for _ in boxes]
        x = self._reid_transform([features[f] for f in self.in_features], boxes)
        return list(self.embed_head(x).split(counts))

    def forward_with_given_boxes(
        self, features: dict[str, Tensor], instances: list[Instances]
    ) -> list[Instances]:
        """Add ``pred_embeds`` (``[N_i, D]``, unit norm) to the given detections of each image.

        Args:
            features: backbone features, ``{name: [B, C, H, W]}``.
            instances: B Instances with ``pred_boxes`` (input-image coordinates) and
                ``pred_classes``.

        Returns:
            The same Instances, with ``pred_embeds``.
        """
        instances = super().forward_with_given_boxes(features, instances)
        embeds = self.embed_boxes(features, [x.pred_boxes for x in instances])
        for inst, emb in zip(instances, embeds):
            inst.pred_embeds = emb
        return instances

    def forward(
        self,
        images: ImageList,
        features: dict[str, Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        """See :meth:`detectron2.modeling.roi_heads.ROIHeads.forward`.

        Training returns ``([], losses)`` with the box losses and the selected ``loss_olp`` /
        ``loss_hep`` / ``loss_c2hep``; inference returns detections with ``pred_embeds``.
        """
        if not self.training:
            return super().forward(images, features, proposals, targets)
        if not targets:
            raise ValueError("person search ROI heads need targets in training")
        proposals = self.label_and_sample_proposals(proposals, targets)
        losses = self._forward_train([features[f] for f in self.in_features], proposals, targets)
        return [], losses

    def _forward_train(
        self, features: list[Tensor], proposals: list[Instances], targets: list[Instances]
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def _training_rois(
        self, proposals: list[Instances], targets: list[Instances]
    ) -> tuple[list[Boxes], Tensor, Tensor, Tensor, Tensor]:
        """The ROIs of a training step: the sampled proposals of each image, then its gt boxes.

        Args:
            proposals: B sampled proposals (``proposal_boxes``, ``gt_classes`` and, for images
                with ground truth, ``gt_pids``).
            targets: B ground truths (``gt_boxes``, ``gt_pids``).

        Returns:
            boxes: B Boxes, ``n_i`` sampled proposals followed by the ``g_i`` gt boxes that are
                not already among the sampled foreground proposals (``g_i = 0`` without
                ``embed_gt_boxes``).
            det_rows: ``[R]`` bool over the concatenated ROIs (``R = sum_i n_i + g_i``): the
                sampled proposals (input of the box predictor).
            reid_rows: ``[R]`` bool: the ROIs to embed (foreground proposals and gt boxes).
            pids: ``[E]`` long, identity of each embedded ROI (-1 unlabelled), E = reid_rows.sum().
            image_ids: ``[E]`` long, batch index of the image of each embedded ROI.
        """
        boxes, det_rows, reid_rows, pids, image_ids = [], [], [], [], []
        for i, (props, tgt) in enumerate(zip(proposals, targets)):
            n = len(props)
            fg = (props.gt_classes >= 0) & (props.gt_classes < self.num_classes)
            if len(tgt) > 0 and not tgt.has("gt_pids"):
                raise ValueError("training targets need a gt_pids field (person identities)")
            fg_pids = props.gt_pids[fg] if props.has("gt_pids") else fg.new_zeros(0).long()
            parts = [props.proposal_boxes]
            reid_parts = [fg]
            pid_parts = [fg_pids]
            g = 0
            if self.embed_gt_boxes and len(tgt) > 0:
                # A gt box already sampled as a foreground proposal (PROPOSAL_APPEND_GT adds the
                # gt boxes to the proposals) is embedded once, as that proposal.
                same = props.proposal_boxes.tensor[fg][:, None, :] == tgt.gt_boxes.tensor[None]
                missing = ~same.all(dim=2).any(dim=0)  # [num_gt]
                missing_boxes = tgt.gt_boxes[missing]
                g = len(missing_boxes)  # a shape: no second read of the mask
                parts.append(missing_boxes)
                reid_parts.append(fg.new_ones(g))
                pid_parts.append(tgt.gt_pids[missing])
            boxes.append(Boxes.cat(parts) if len(parts) > 1 else parts[0])
            det_rows.append(torch.cat([fg.new_ones(n), fg.new_zeros(g)]))
            reid_rows.append(torch.cat(reid_parts))
            pid = torch.cat(pid_parts).long()
            pids.append(pid)
            image_ids.append(torch.full_like(pid, i))
        return (
            boxes,
            torch.cat(det_rows),
            torch.cat(reid_rows),
            torch.cat(pids),
            torch.cat(image_ids),
        )

    def _reid_losses(
        self, embeds: Tensor, pids: Tensor, image_ids: Tensor, num_images: int
    ) -> dict[str, Tensor]:
        """Run the criterion (always, also with no embedding: it is collective under DDP) and
        log its metrics: averaged on the device over ``metrics_period`` steps, then written to
        the event storage (mean over the steps where each was defined) with one read.

        The identities are not range-checked here (that would read them on the host every
        step): :class:`~dcinet_d2.modeling.meta_arch.PersonSearchRCNN` checks the batch's
        ``gt_pids`` on the host before the step, and the trainer checks the datasets before
        training."""
        loss_dict, metrics = self.criterion(
            embeds, pids, image_ids, num_images=num_images, check_pids=False
        )
        self._metric_means.add({**metrics, "reid/num_embeds": float(embeds.shape[0])})
        storage = get_event_storage()
        if (storage.iter + 1) % self.metrics_period == 0:
            means = self._metric_means.pop_means()
            if means:
                storage.put_scalars(**means, smoothing_hint=self.metrics_period == 1)
        return loss_dict


@ROI_HEADS_REGISTRY.register()
class INetROIHeads(PersonSearchRes5ROIHeads):
    """I-Net heads: one res5 head shared by detection and re-id.

    Training: one res5 pass over the sampled proposals and the gt boxes; its spatially pooled
    output feeds the box predictor (proposals) and the embedding head (foreground proposals and
    gt boxes). Inference (``MODEL.REID.INET_EMBED_DETECTIONS_FROM``): ``"proposals"`` (default)
    embeds each detection from the res5 features of the proposal it was regressed from, in the
    same single pass that scores it; ``"boxes"`` runs the shared res5 a second time on the final
    (regressed) boxes.
    """

    @configurable
    def __init__(self, *, embed_detections_from: str = "proposals", **kwargs):
        super().__init__(**kwargs)
        if embed_detections_from not in ("proposals", "boxes"):
            raise ValueError(
                "MODEL.REID.INET_EMBED_DETECTIONS_FROM must be 'proposals' or 'boxes', "
                f"got {embed_detections_from!r}"
            )
        self.embed_detections_from = embed_detections_from

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        ret = super().from_config(cfg, input_shape)
        ret["embed_detections_from"] = cfg.MODEL.REID.INET_EMBED_DETECTIONS_FROM
        return ret

    def forward(self, images, features, proposals, targets=None):
        if self.training or self.embed_detections_from == "boxes":
            return super().forward(images, features, proposals, targets)
        # One pass of the shared res5 scores every proposal (as Res5ROIHeads does) and gives the
        # features each detection is embedded from: those of the proposal it was regressed from.
        maps = self._shared_roi_transform(
            [features[f] for f in self.in_features], [p.proposal_boxes for p in proposals]
        )  # [R, C, H, W]
        predictions = self.box_predictor(maps.mean(dim=(2, 3)))
        instances, kept = inference_with_proposal_indices(
            self.box_predictor, predictions, proposals
        )
        start = 0
        for inst, keep, props in zip(instances, kept, proposals):
            inst.pred_embeds = self.embed_head(maps[start + keep])
            start += len(props)
        return instances, {}

    def _reid_transform(self, features: list[Tensor], boxes: list[Boxes]) -> Tensor:
        return self._shared_roi_transform(features, boxes)

    def _forward_train(
        self, features: list[Tensor], proposals: list[Instances], targets: list[Instances]
    ) -> dict[str, Tensor]:
        boxes, det_rows, reid_rows, pids, image_ids = self._training_rois(proposals, targets)
        maps = self._shared_roi_transform(features, boxes)  # [R, C, H, W]
        predictions = self.box_predictor(maps.mean(dim=(2, 3))[det_rows])
        losses = self.box_predictor.losses(predictions, proposals)
        embeds = self.embed_head(maps[reid_rows])
        losses.update(self._reid_losses(embeds, pids, image_ids, len(proposals)))
        return losses


@ROI_HEADS_REGISTRY.register()
class DCINetROIHeads(PersonSearchRes5ROIHeads):
    """DC-I-Net heads: a detection module and a separate re-id module on the shared trunk.

    The detection module is ``Res5ROIHeads``' ``res5`` + ``box_predictor``; the re-id module is
    ``reid_res5`` (a second res5 block built by the same ``_build_res5_block``) + ``embed_head``.
    Both read the same pooled ROI features. Inference: detection as ``Res5ROIHeads``, then the
    re-id module on the final boxes.

    Loading a checkpoint that has ``res5`` weights but no ``reid_res5`` weights (ImageNet
    initialisation, a Faster R-CNN or I-Net checkpoint) initialises ``reid_res5`` with a copy of
    ``res5``'s weights (ours: both modules start from the same pretrained res5).
    """

    @configurable
    def __init__(self, *, reid_res5: nn.Module, **kwargs):
        """
        Args:
            reid_res5: the re-id module's res5-like block, ``[N, C_in, R, R] -> [N, C, R/2, R/2]``.
            kwargs: arguments of :class:`PersonSearchRes5ROIHeads`.
        """
        super().__init__(**kwargs)
        if isinstance(reid_res5, (list, tuple)):
            reid_res5 = nn.Sequential(*reid_res5)
        self.reid_res5 = reid_res5

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        ret = super().from_config(cfg, input_shape)
        ret["reid_res5"], _ = cls._build_res5_block(cfg)
        return ret

    def _reid_transform(self, features: list[Tensor], boxes: list[Boxes]) -> Tensor:
        return self.reid_res5(self.pooler(features, boxes))

    def _forward_train(
        self, features: list[Tensor], proposals: list[Instances], targets: list[Instances]
    ) -> dict[str, Tensor]:
        boxes, det_rows, reid_rows, pids, image_ids = self._training_rois(proposals, targets)
        rois = self.pooler(features, boxes)  # [R, C_in, R', R']
        predictions = self.box_predictor(self.res5(rois[det_rows]).mean(dim=(2, 3)))
        losses = self.box_predictor.losses(predictions, proposals)
        embeds = self.embed_head(self.reid_res5(rois[reid_rows]))
        losses.update(self._reid_losses(embeds, pids, image_ids, len(proposals)))
        return losses

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        det, reid = prefix + "res5.", prefix + "reid_res5."
        has_reid = any(k.startswith(reid) for k in state_dict)
        det_keys = [k for k in state_dict if k.startswith(det)]
        if det_keys and not has_reid:
            for k in det_keys:
                state_dict[reid + k[len(det) :]] = state_dict[k]
            logger.info("Initialised %s from the checkpoint's %s (it has none)", reid, det)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
