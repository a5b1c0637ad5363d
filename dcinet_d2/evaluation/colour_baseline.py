"""Hand-crafted baseline: colour histograms of the same boxes, in the predictions format.

A learned re-id embedding is only worth having if it beats hand-crafted features of the *same*
boxes. This module replaces the embeddings of a predictions file (see :mod:`.predictions`) by a
colour histogram of each box, and builds a predictions dict from the ground-truth boxes (an oracle
detector), so that both go through the unchanged protocol:

* :func:`colour_histogram`: 4 x 4 x 4 RGB bins for the upper and the lower half of the box
  (128-d), square root (Hellinger), L2-normalised. No learning, no parameters fitted to data.
* :func:`histogram_predictions`: the same detections (boxes, scores) with histogram embeddings;
  the queries' embeddings become the histograms of the query boxes.
* :func:`ground_truth_predictions`: every ground-truth person box of a test image as a detection
  of score 1 (boxes without area left out), with histogram embeddings.

* :func:`compare_with_histograms`: the three rows (learned, histogram on the same detections,
  histogram on ground-truth boxes) of a registered test set, through the protocol.

The histograms are numpy + PIL; each image is read once per call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from .predictions import score_weighted

logger = logging.getLogger(__name__)

__all__ = [
    "BINS_PER_CHANNEL",
    "HISTOGRAM_DIM",
    "colour_histogram",
    "histogram_predictions",
    "ground_truth_predictions",
    "compare_with_histograms",
    "format_comparison",
]

#: Bins per RGB channel (ours; 4 x 4 x 4 = 64 colours per half).
BINS_PER_CHANNEL = 4
#: Length of :func:`colour_histogram`: two halves x 64 colours.
HISTOGRAM_DIM = 2 * BINS_PER_CHANNEL**3


def _half_histogram(pixels: np.ndarray) -> np.ndarray:
    """Normalised 64-bin colour histogram of ``[h, w, 3]`` uint8 RGB pixels (zeros if empty)."""
    n = BINS_PER_CHANNEL
    if pixels.size == 0:
        return np.zeros(n**3, dtype=np.float64)
    q = pixels.reshape(-1, 3).astype(np.int64) * n // 256  # [P, 3], 0..n-1
    codes = (q[:, 0] * n + q[:, 1]) * n + q[:, 2]
    return np.bincount(codes, minlength=n**3).astype(np.float64) / codes.size


def colour_histogram(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The 128-d colour histogram of one box.

    The box is cropped to whole pixels (``floor(x1), floor(y1)`` to ``ceil(x2), ceil(y2)``,
    clipped to the image, at least one pixel) and split at half its height; each half gives a
    64-bin RGB histogram normalised to sum 1; the two are concatenated, square-rooted and
    L2-normalised.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        box: ``(x1, y1, x2, y2)`` in image pixels.

    Returns:
        ``[128]`` float32 of unit L2 norm.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be [H, W, 3] uint8 RGB, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(np.isfinite([x1, y1, x2, y2])):
        raise ValueError(f"box must be finite, got {tuple(box)}")
    c0 = min(max(int(np.floor(x1)), 0), w - 1)
    r0 = min(max(int(np.floor(y1)), 0), h - 1)
    c1 = max(min(int(np.ceil(x2)), w), c0 + 1)
    r1 = max(min(int(np.ceil(y2)), h), r0 + 1)
    crop = image[r0:r1, c0:c1]
    mid = (r1 - r0) // 2
    hist = np.concatenate([_half_histogram(crop[:mid]), _half_histogram(crop[mid:])])
    hist = np.sqrt(hist)
    return (hist / np.linalg.norm(hist)).astype(np.float32)


def _read_rgb(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _histograms(image: np.ndarray | None, boxes: np.ndarray) -> np.ndarray:
    """``[n, 128]`` histograms of the boxes of one image (``image`` may be None when n = 0)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((boxes.shape[0], HISTOGRAM_DIM), dtype=np.float32)
    for i, b in enumerate(boxes):
        out[i] = colour_histogram(image, b)
    return out


def _file_of(dataset_dicts: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    return {str(d["image_id"]): d["file_name"] for d in dataset_dicts}


def _query_embeds(
    dataset_dicts: Sequence[Mapping[str, Any]], read: Callable[[str], np.ndarray]
) -> dict[int, dict[str, np.ndarray]]:
    queries = {}
    for d in dataset_dicts:
        if not d.get("queries"):
            continue
        image = read(d["file_name"])
        for q in d["queries"]:
            queries[int(q["query_id"])] = {"embed": colour_histogram(image, q["bbox"])}
    return queries


def histogram_predictions(
    predictions: Mapping[str, Any],
    dataset_dicts: Sequence[Mapping[str, Any]],
    read_image: Callable[[str], np.ndarray] | None = None,
    score_power: float | None = None,
) -> dict[str, Any]:
    """The same detections with colour-histogram embeddings (gallery and queries).

    Args:
        predictions: validated predictions (numpy, see :mod:`.predictions`) of the test set.
        dataset_dicts: the test set's dicts (``file_name``, ``image_id``, ``queries``).
        read_image: ``path -> [H, W, 3] uint8 RGB`` (default: PIL).
        score_power: each gallery histogram is multiplied by its detection's score to this
            power, as the model weighs its own embeddings (``MODEL.REID.EMBED_SCORE_POWER``), so
            that both rank with the same help from the detector. Default: the predictions'
            ``meta["embed_score_power"]``, 0 when absent (unit histograms).

    Returns:
        A predictions dict with the same image ids, boxes and scores, ``meta.embedding =
        "colour_histogram"``.
    """
    read = read_image or _read_rgb
    if score_power is None:
        score_power = float(predictions.get("meta", {}).get("embed_score_power", 0.0))
    files = _file_of(dataset_dicts)
    gallery = {}
    for image_id, entry in predictions["gallery"].items():
        if image_id not in files:
            raise ValueError(f"predictions image {image_id!r} is not in the dataset")
        boxes = np.asarray(entry["boxes"], dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(entry["scores"], dtype=np.float32).reshape(-1)
        image = read(files[image_id]) if len(boxes) else None
        embeds = score_weighted(_histograms(image, boxes), scores, score_power)
        gallery[image_id] = {"boxes": boxes, "scores": scores, "embeds": embeds}
    return {
        "gallery": gallery,
        "queries": _query_embeds(dataset_dicts, read),
        "meta": {
            "embedding": "colour_histogram",
            "boxes": "detections",
            "embed_score_power": float(score_power),
        },
    }


def ground_truth_predictions(
    dataset_dicts: Sequence[Mapping[str, Any]],
    read_image: Callable[[str], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Predictions of an oracle detector: every ground-truth box (score 1), colour histograms.

    Boxes without area (``x2 <= x1`` or ``y2 <= y1``, as some CUHK-SYSU annotations) are left
    out: no detector outputs them.
    """
    read = read_image or _read_rgb
    gallery = {}
    for d in dataset_dicts:
        boxes = np.array([a["bbox"] for a in d.get("annotations", [])], dtype=np.float32)
        boxes = boxes.reshape(-1, 4)
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        embeds = _histograms(read(d["file_name"]) if len(boxes) else None, boxes)
        gallery[str(d["image_id"])] = {
            "boxes": boxes,
            "scores": np.ones(len(boxes), dtype=np.float32),
            "embeds": embeds,
        }
    return {
        "gallery": gallery,
        "queries": _query_embeds(dataset_dicts, read),
        "meta": {"embedding": "colour_histogram", "boxes": "ground_truth"},
    }


def compare_with_histograms(
    dataset: str,
    predictions_path: str | None = None,
    *,
    gallery_size: int = 100,
    det_thresh: float = 0.5,
) -> dict[str, Any]:
    """Learned embeddings against colour histograms of the same boxes, on a registered test set.

    Args:
        dataset: registered test set (``DatasetCatalog``), e.g. ``synthetic_cuhk_sysu_test``.
        predictions_path: a predictions file of a model (optional).
        gallery_size: CUHK-SYSU gallery size.
        det_thresh: the protocol's score threshold.

    Returns:
        ``{"learned": results, "histogram_same_detections": results, "histogram_gt_boxes":
        results}`` (the first two only with ``predictions_path``), each as
        :func:`~.evaluator.evaluate_person_search` returns it.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from .diagnostics import false_detection_stats
    from .evaluator import evaluate_person_search
    from .predictions import load_predictions, validate_predictions

    meta = MetadataCatalog.get(dataset)
    dicts = DatasetCatalog.get(dataset)
    common = dict(
        protocol=meta.protocol,
        root=getattr(meta, "root", None),
        det_thresh=det_thresh,
        gallery_size=gallery_size,
    )
    rows: dict[str, Any] = {}
    if predictions_path:
        learned = load_predictions(predictions_path)
        rows["learned"] = evaluate_person_search(dicts, learned, **common)
        rows["learned"]["false_detections"] = false_detection_stats(
            learned["gallery"], dicts, det_thresh=det_thresh
        )
        same = validate_predictions(histogram_predictions(learned, dicts))
        rows["histogram_same_detections"] = evaluate_person_search(dicts, same, **common)
    gt = validate_predictions(ground_truth_predictions(dicts))
    rows["histogram_gt_boxes"] = evaluate_person_search(dicts, gt, **common)
    return rows


def format_comparison(rows: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """The rows of :func:`compare_with_histograms` as a small text table."""
    lines = [
        f"{'embedding on boxes':<28} {'mAP':>6} {'top-1':>6} {'top-5':>6} {'top-10':>6} "
        f"{'det AP':>7}"
    ]
    for name, res in rows.items():
        s, d = res["search"], res["detection"]
        lines.append(
            f"{name:<28} {s['mAP']:6.1f} {s['top1']:6.1f} {s['top5']:6.1f} "
            f"{s['top10']:6.1f} {d['AP']:7.1f}"
        )
    fd = rows.get("learned", {}).get("false_detections")
    if fd:
        lines.append(
            f"kept detections (score >= threshold): {fd['detections_per_image']:.1f} per image, "
            f"{100 * fd['false_fraction']:.0f} % of them overlap no person (IoU < 0.5)"
        )
        if fd.get("kinds") and fd["num_detections"]:
            lines.append(
                "kinds of kept detections: "
                + ", ".join(
                    f"{kind} {100 * n / fd['num_detections']:.0f} %"
                    for kind, n in fd["kinds"].items()
                )
            )
    return "\n".join(lines)
