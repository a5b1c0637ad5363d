"""``PersonSearchRCNN``: a Detectron2 ``GeneralizedRCNN`` that also embeds persons.

Training is the ``GeneralizedRCNN`` forward on Siamese batches (images ``2k`` and ``2k+1`` form a
pair; the ROI heads compute the re-id losses). Inference returns, per image, ``instances`` with
``pred_boxes``, ``scores``, ``pred_classes`` and ``pred_embeds`` (``[N, D]``: unit vectors times
``scores ** MODEL.REID.EMBED_SCORE_POWER``, so unit norm by default) in the original image
coordinates and, for an input carrying ``queries``, ``query_embeds`` (``[Q, D]``, unit norm, in
the order of ``queries``), all from one backbone pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Boxes, ImageList, Instances
from torch import Tensor

from ..compat import postprocess_detections
from .losses.checks import check_pid_range

logger = logging.getLogger(__name__)

__all__ = ["PersonSearchRCNN"]


@META_ARCH_REGISTRY.register()
class PersonSearchRCNN(GeneralizedRCNN):
    """Joint person detection and re-identification (I-Net / DC-I-Net).

    Needs ROI heads with ``embed_boxes(features, boxes)`` and a ``pred_embeds`` output, i.e.
    :class:`~dcinet_d2.modeling.roi_heads.INetROIHeads` or
    :class:`~dcinet_d2.modeling.roi_heads.DCINetROIHeads`.
    """

    @configurable
    def __init__(self, *, embed_score_power: float = 0.0, test_flip: bool = False, **kwargs):
        """
        Args:
            embed_score_power: p >= 0; at inference each detection's embedding is multiplied by
                its score to the power p (``MODEL.REID.EMBED_SCORE_POWER``; 0: unit embeddings).
            test_flip: at inference every embedding (detections and query boxes) is the
                normalised mean of the box's and of its mirror box's in the flipped image
                (``MODEL.REID.TEST_FLIP``).
            kwargs: arguments of :class:`GeneralizedRCNN`.
        """
        super().__init__(**kwargs)
        if not embed_score_power >= 0:
            raise ValueError(f"MODEL.REID.EMBED_SCORE_POWER must be >= 0, got {embed_score_power}")
        self.embed_score_power = float(embed_score_power)
        self.test_flip = bool(test_flip)

    @classmethod
    def from_config(cls, cfg) -> dict:
        ret = super().from_config(cfg)
        if not hasattr(ret["roi_heads"], "embed_boxes"):
            raise ValueError(
                f"PersonSearchRCNN needs person search ROI heads (INetROIHeads or DCINetROIHeads), "
                f"got MODEL.ROI_HEADS.NAME = {cfg.MODEL.ROI_HEADS.NAME!r}"
            )
        ret["embed_score_power"] = cfg.MODEL.REID.EMBED_SCORE_POWER
        ret["test_flip"] = cfg.MODEL.REID.TEST_FLIP
        return ret

    def forward(self, batched_inputs: list[dict]) -> object:
        """
        Args:
            batched_inputs: as :meth:`GeneralizedRCNN.forward`. Training: an even number of
                images, ``2k`` and ``2k+1`` forming a pair, each with ``instances`` holding
                ``gt_boxes``, ``gt_classes`` and ``gt_pids`` (-1 = unlabelled). Inference: dicts
                with ``image``, optionally ``height``/``width`` (output size) and ``queries``
                (``[{"query_id", "bbox": [x1, y1, x2, y2] in output coordinates, ...}]``).

        Returns:
            Training: dict of losses (``loss_*``). Inference: see :meth:`inference`.
        """
        if self.training:
            if len(batched_inputs) % 2 != 0:
                raise ValueError(
                    f"PersonSearchRCNN trains on image pairs (images 2k, 2k+1): got a batch of "
                    f"{len(batched_inputs)} images; the per-process batch size must be even"
                )
            self._check_identities(batched_inputs)
        return super().forward(batched_inputs)

    def _check_identities(self, batched_inputs: list[dict]) -> None:
        """Range-check the batch's ``gt_pids`` against the re-id classes while they are still on
        the host (the mapper's CPU tensors), collectively under ``torch.distributed``; the ROI
        heads then skip the check that would read the identities back from the device."""
        criterion = getattr(self.roi_heads, "criterion", None)
        if criterion is None:
            return
        # Every process calls the (collective) check at every step, also without identities.
        pids = [
            x["instances"].gt_pids.reshape(-1).long().cpu()
            for x in batched_inputs
            if "instances" in x and x["instances"].has("gt_pids")
        ]
        check_pid_range(
            torch.cat(pids) if pids else torch.zeros(0, dtype=torch.long), criterion.num_classes
        )

    def inference(
        self,
        batched_inputs: list[dict],
        detected_instances: list[Instances] | None = None,
        do_postprocess: bool = True,
    ):
        """Detect and embed persons; embed the queries of inputs that carry ``queries``.

        Args:
            batched_inputs: see :meth:`forward`.
            detected_instances: optional given detections per image (``pred_boxes`` in input
                coordinates, ``pred_classes``): only embedded, as in ``GeneralizedRCNN``.
            do_postprocess: rescale the outputs to ``height``/``width``. Without it the raw
                Instances (input coordinates, with ``pred_embeds``) are returned and queries are
                not embedded.

        Returns:
            With ``do_postprocess``: one dict per image, ``{"instances": Instances}`` with
            ``pred_boxes``, ``scores``, ``pred_classes``, ``pred_embeds`` ``[N, D]`` (times
            ``scores ** embed_score_power``); plus ``"query_embeds"`` ``[Q, D]`` (unit norm) for
            an input with ``queries``.
        """
        assert not self.training
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        flipped = self._flipped_features(images)
        if detected_instances is None:
            if self.proposal_generator is not None:
                proposals, _ = self.proposal_generator(images, features, None)
            else:
                proposals = [x["proposals"].to(self.device) for x in batched_inputs]
            results, _ = self.roi_heads(images, features, proposals, None)
        else:
            detected_instances = [x.to(self.device) for x in detected_instances]
            results = self.roi_heads.forward_with_given_boxes(features, detected_instances)
        for r in results:  # fp32 under autocast too (TEST.AMP): the evaluator ranks in fp32
            r.pred_embeds = r.pred_embeds.float()
            if r.has("scores"):  # fp32 from CUDA's autocast; CPU's bfloat16 one gives bfloat16
                r.scores = r.scores.float()
        if flipped is not None:
            embeds = [r.pred_embeds for r in results]
            boxes = [r.pred_boxes.tensor for r in results]
            for r, e in zip(results, self._with_flip(images, flipped, boxes, embeds)):
                r.pred_embeds = e
        if self.embed_score_power:
            for r in results:
                if r.has("scores"):
                    r.pred_embeds = r.pred_embeds * r.scores[:, None].pow(self.embed_score_power)
        if not do_postprocess:
            return results

        processed = postprocess_detections(results, batched_inputs, images.image_sizes)
        with_queries = [i for i, x in enumerate(batched_inputs) if "queries" in x]
        if with_queries:
            boxes = [
                torch.as_tensor(
                    [q["bbox"] for q in batched_inputs[i]["queries"]], dtype=torch.float32
                ).reshape(-1, 4)
                if i in with_queries
                else torch.zeros(0, 4)
                for i in range(len(batched_inputs))
            ]
            query_embeds = self._embed_original_boxes(
                batched_inputs, images, features, boxes, flipped
            )
            for i in with_queries:
                processed[i]["query_embeds"] = query_embeds[i]
        return processed

    def embed_boxes(self, batched_inputs: list[dict], boxes: Sequence[Tensor]) -> list[Tensor]:
        """Embed given person boxes of given images (queries, or any box to search for).

        Args:
            batched_inputs: B dicts with ``image`` (``[3, H_in, W_in]``) and optionally
                ``height``/``width``, the original image size the boxes refer to (default: the
                input size).
            boxes: B tensors ``[k_i, 4]`` of ``[x1, y1, x2, y2]`` in original image coordinates.

        Returns:
            B tensors ``[k_i, D]`` of unit-norm embeddings.
        """
        if len(boxes) != len(batched_inputs):
            raise ValueError(f"{len(boxes)} box tensors for {len(batched_inputs)} images")
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        flipped = self._flipped_features(images)
        return self._embed_original_boxes(batched_inputs, images, features, boxes, flipped)

    def _embed_original_boxes(
        self,
        batched_inputs: list[dict],
        images: ImageList,
        features: dict[str, Tensor],
        boxes: Sequence[Tensor],
        flipped: dict[str, Tensor] | None = None,
    ) -> list[Tensor]:
        """Scale boxes from original to input coordinates (input size / (height, width)) and
        embed them with the ROI heads (with their mirror boxes in ``flipped``, when given)."""
        scaled = []
        for x, b, (h_in, w_in) in zip(batched_inputs, boxes, images.image_sizes):
            b = torch.as_tensor(b, dtype=torch.float32, device=self.device).reshape(-1, 4)
            sx = w_in / float(x.get("width", w_in))
            sy = h_in / float(x.get("height", h_in))
            scale = torch.tensor([sx, sy, sx, sy], dtype=torch.float32, device=self.device)
            scaled.append(Boxes(b * scale))
        embeds = [e.float() for e in self.roi_heads.embed_boxes(features, scaled)]
        if flipped is None:
            return embeds
        return self._with_flip(images, flipped, [b.tensor for b in scaled], embeds)

    def _flipped_features(self, images: ImageList) -> dict[str, Tensor] | None:
        """Backbone features of the horizontally flipped (padded) input batch with
        ``test_flip``, else None."""
        return self.backbone(images.tensor.flip(-1)) if self.test_flip else None

    def _with_flip(
        self,
        images: ImageList,
        flipped: dict[str, Tensor],
        boxes: Sequence[Tensor],
        embeds: Sequence[Tensor],
    ) -> list[Tensor]:
        """Unit embeddings ``embeds`` of ``boxes`` (input coordinates) averaged with those of the
        mirror boxes in the flipped batch, renormalised. The whole padded batch is flipped, so a
        box ``[x1, y1, x2, y2]`` mirrors to ``[W - x2, y1, W - x1, y2]`` with W its padded width."""
        width = images.tensor.shape[-1]
        mirrored = [
            Boxes(torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1))
            for b in boxes
        ]
        mirror_embeds = self.roi_heads.embed_boxes(flipped, mirrored)
        return [F.normalize(e + m.float(), dim=1) for e, m in zip(embeds, mirror_embeds)]
