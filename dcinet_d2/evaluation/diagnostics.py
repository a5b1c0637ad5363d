"""Diagnostics of saved predictions that the protocol does not report.

:func:`false_detection_stats`: how many kept detections (score >= the protocol's threshold) per
gallery image, and which fraction of them overlap no ground-truth person at IoU >= 0.5. In search
such detections compete with the true matches: their embeddings come from boxes on background or
on part of a person, which the re-id losses never see in training. It also sorts every kept
detection into one kind (:data:`DETECTION_KINDS`), to say what the false ones are.

:func:`bootstrap_query_means`: how much a search mAP moves when the queries are resampled: the
noise of the test set itself, against which differences between runs are read;
:func:`per_query_ap` gives the per-query APs of a predictions file that it resamples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from .boxes import elementwise_iou
from .evaluator import protocol_queries
from .galleries import dataset_image_ids, detection_ground_truth, image_cameras
from .predictions import check_against_dataset, load_predictions
from .protocol import evaluate_search

__all__ = [
    "box_iou_matrix",
    "false_detection_stats",
    "classify_detections",
    "DETECTION_KINDS",
    "bootstrap_query_means",
    "per_query_ap",
]

#: Kinds of kept detections, see :func:`classify_detections`.
DETECTION_KINDS = ("true", "duplicate", "part", "merge", "loose", "background")
# Our choices (diagnostics only, no protocol depends on them): a detection is a "part" when at
# least 70 % of its area lies inside one person box, a "merge" when it holds at least half of
# the area of two or more persons, "background" when its best IoU with a person is below 0.1.
PART_INSIDE = 0.7
MERGE_COVER = 0.5
BACKGROUND_IOU = 0.1


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``[n, 4]`` with every box of ``b`` ``[m, 4]`` (xyxy) -> ``[n, m]``.

    The protocol's own IoU (:func:`~.boxes.elementwise_iou`, the one detection matching uses) over
    all pairs; a zero union counts as IoU 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iou = elementwise_iou(np.repeat(a, len(b), axis=0), np.tile(b, (len(a), 1)))
    return np.nan_to_num(iou, nan=0.0).reshape(len(a), len(b))


def _intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas of every box of ``a`` ``[n, 4]`` with every box of ``b`` ``[m, 4]``."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def classify_detections(
    boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray, iou_thresh: float = 0.5
) -> list[str]:
    """The kind of each detection of one image (one of :data:`DETECTION_KINDS`).

    In order of decreasing score, a detection with IoU >= ``iou_thresh`` with a person not yet
    matched is ``true`` (it matches that person, the most overlapping free one), with IoU >=
    ``iou_thresh`` only with matched persons a ``duplicate``. The others (false detections):
    ``merge`` when it covers at least half of two or more persons, else ``part`` when at least
    70 % of its area lies inside one person, else ``loose`` (best IoU >= 0.1: misplaced), else
    ``background``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")
    kinds = ["background"] * len(boxes)
    if len(gt_boxes) == 0 or len(boxes) == 0:
        return kinds
    iou = box_iou_matrix(boxes, gt_boxes)
    inter = _intersections(boxes, gt_boxes)
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = np.nan_to_num(inter / _areas(boxes)[:, None])  # share of the detection
        cover = np.nan_to_num(inter / _areas(gt_boxes)[None, :])  # share of the person
    matched = np.zeros(len(gt_boxes), dtype=bool)
    for i in order:
        free = np.where(matched, -1.0, iou[i])
        if free.max() >= iou_thresh:
            matched[int(np.argmax(free))] = True
            kinds[i] = "true"
        elif iou[i].max() >= iou_thresh:
            kinds[i] = "duplicate"
        elif (cover[i] >= MERGE_COVER).sum() >= 2:
            kinds[i] = "merge"
        elif inside[i].max() >= PART_INSIDE:
            kinds[i] = "part"
        elif iou[i].max() >= BACKGROUND_IOU:
            kinds[i] = "loose"
    return kinds


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
        ``{"detections_per_image", "false_fraction", "num_detections", "num_false", "kinds"}``
        (``false_fraction`` is NaN without any kept detection; a duplicate is not false: it
        overlaps a person). ``kinds``: the number of kept detections of each kind of
        :func:`classify_detections`.
    """
    gt = detection_ground_truth(dataset_dicts)
    kinds = dict.fromkeys(DETECTION_KINDS, 0)
    for image_id, (gt_boxes, _) in gt.items():
        entry = gallery[image_id]
        scores = np.asarray(entry["scores"]).reshape(-1)
        keep = scores >= det_thresh
        boxes = np.asarray(entry["boxes"]).reshape(-1, 4)[keep]
        for kind in classify_detections(boxes, scores[keep], gt_boxes, iou_thresh):
            kinds[kind] += 1
    kept = sum(kinds.values())
    # True and duplicate detections overlap a person at >= iou_thresh; every other kind does not.
    false = kept - kinds["true"] - kinds["duplicate"]
    return {
        "detections_per_image": kept / max(len(gt), 1),
        "false_fraction": false / kept if kept else float("nan"),
        "num_detections": kept,
        "num_false": false,
        "kinds": kinds,
    }


def bootstrap_query_means(values: np.ndarray, samples: int = 10000, seed: int = 0) -> np.ndarray:
    """Means of ``values`` over queries resampled with replacement (the bootstrap).

    Args:
        values: ``[F, Q]``, one row per run (e.g. the per-query APs of F predictions files on the
            same Q queries) or ``[Q]``.
        samples: bootstrap samples B.
        seed: seed of the resampling.

    Returns:
        ``[F, B]`` (``[B]`` for 1-d input): sample b is the mean of every row over the *same*
        resampled queries, so differences between rows are paired.
    """
    v = np.asarray(values, dtype=np.float64)
    one = v.ndim == 1
    v = v[None] if one else v
    if v.ndim != 2 or v.shape[1] == 0:
        raise ValueError(f"values must be [F, Q] with Q > 0, got shape {v.shape}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    rng = np.random.default_rng(seed)
    q = v.shape[1]
    out = np.empty((v.shape[0], samples))
    step = max(1, (1 << 22) // q)  # our choice: resampled index blocks of 4 M entries at most
    for a in range(0, samples, step):
        idx = rng.integers(0, q, size=(min(step, samples - a), q))
        out[:, a : a + len(idx)] = v[:, idx].mean(axis=2)
    return out[0] if one else out


def per_query_ap(
    dataset: str, predictions_path: str, gallery_size: int = 100, det_thresh: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """The search AP of each query of a registered test set, from a predictions file.

    Args:
        dataset: registered test set (its ``protocol`` metadata: ``cuhk_sysu`` or ``prw``).
        predictions_path: a ``person_search_predictions.pth`` file.
        gallery_size: CUHK-SYSU gallery size (-1: every test image); ignored for PRW.
        det_thresh: the protocol's score threshold.

    Returns:
        (query ids, AP of each query that has a ground-truth image in its gallery, in [0, 1]).
    """
    dicts = DatasetCatalog.get(dataset)
    meta = MetadataCatalog.get(dataset)
    preds = load_predictions(predictions_path)
    image_ids = dataset_image_ids(dicts)
    check_against_dataset(
        preds, image_ids, [int(q["query_id"]) for d in dicts for q in d.get("queries", [])]
    )
    query_embeds = {k: v["embed"] for k, v in preds["queries"].items()}
    queries = protocol_queries(
        dicts, meta.protocol, root=getattr(meta, "root", None), gallery_size=gallery_size
    )
    cameras = image_cameras(dicts) if meta.protocol == "prw" else None
    res = evaluate_search(
        preds["gallery"],
        query_embeds,
        queries,
        image_ids,
        det_thresh=det_thresh,
        image_cameras=cameras,
    )
    return np.asarray(res.query_ids)[res.valid], np.asarray(res.ap)[res.valid]
