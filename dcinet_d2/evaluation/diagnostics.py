"""Diagnostics of saved predictions that the protocol does not report.

:func:`false_detection_stats`: how many kept detections (score >= the protocol's threshold) per
gallery image, and which fraction of them overlap no ground-truth person at IoU >= 0.5. In search
such detections compete with the true matches: their embeddings come from boxes on background or
on part of a person, which the re-id losses never see in training.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .galleries import detection_ground_truth
from .protocol import _iou_pairs

__all__ = ["box_iou_matrix", "false_detection_stats"]


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``[n, 4]`` with every box of ``b`` ``[m, 4]`` (xyxy) -> ``[n, m]``.

    The protocol's own IoU (:func:`~.protocol._iou_pairs`, the one detection matching uses) over
    all pairs; a zero union counts as IoU 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iou = _iou_pairs(np.repeat(a, len(b), axis=0), np.tile(b, (len(a), 1)))
    return np.nan_to_num(iou, nan=0.0).reshape(len(a), len(b))


def false_detection_stats(
    gallery: Mapping[str, Mapping[str, Any]],
    dataset_dicts: Sequence[Mapping[str, Any]],
    det_thresh: float = 0.5,
    iou_thresh: float = 0.5,
) -> dict:
    """Kept detections per image and the fraction that overlaps no person.

    Args:
        gallery: ``image_id -> {"boxes", "scores", ...}`` (numpy, as :mod:`.predictions` loads it).
        dataset_dicts: the test set's dicts (their ``annotations`` are the persons).
        det_thresh: detections scoring below it are dropped first (the protocol's threshold).
        iou_thresh: a kept detection with IoU below it with every person box is "false".

    Returns:
        ``{"detections_per_image", "false_fraction", "num_detections", "num_false"}``
        (``false_fraction`` is NaN without any kept detection).
    """
    gt = detection_ground_truth(dataset_dicts)
    kept = false = 0
    for image_id, (gt_boxes, _) in gt.items():
        entry = gallery[image_id]
        boxes = np.asarray(entry["boxes"]).reshape(-1, 4)[np.asarray(entry["scores"]).reshape(-1) >= det_thresh]
        kept += len(boxes)
        if len(boxes) == 0:
            continue
        if len(gt_boxes) == 0:
            false += len(boxes)
            continue
        false += int((box_iou_matrix(boxes, gt_boxes).max(axis=1) < iou_thresh).sum())
    return {
        "detections_per_image": kept / max(len(gt), 1),
        "false_fraction": false / kept if kept else float("nan"),
        "num_detections": kept,
        "num_false": false,
    }
