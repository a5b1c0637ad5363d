#!/usr/bin/env python
"""Soft-NMS at test time, measured offline on a saved predictions file.

    python bench/soft_nms.py --dataset synthetic_pretrain_cuhk_sysu_test --gallery-size 50 \\
        --predictions OUT/inference/<dataset>/person_search_predictions.pth

Soft-NMS (Bodla et al. 2017) on the kept detections of each image: repeatedly take the detection
of highest (current) score and multiply the score of every remaining one by ``1 - IoU`` when
their IoU is >= N_t (linear) or by ``exp(-IoU^2 / sigma)`` (Gaussian); then the protocol's 0.5
threshold applies to the new scores. It runs after the model's own NMS (IoU 0.5), so it can only
lower scores and remove detections; an embedding does not depend on the other detections, so the
result equals doing it in the model after that NMS. Prints search and detection metrics and the
kinds of the kept detections per setting; the first row is the input unchanged. Used for
docs/reid_recipe.md; not part of the model.
"""

from __future__ import annotations

import numpy as np
from offline_eval import SavedPredictions

from dcinet_d2.evaluation.diagnostics import box_iou_matrix

SETTINGS = [
    ("none", None),
    ("linear", 0.2),
    ("linear", 0.3),
    ("linear", 0.4),
    ("gaussian", 0.5),
    ("gaussian", 0.3),
    ("gaussian", 0.2),
]  # (method, N_t or sigma) as in docs/reid_recipe.md


def soft_nms_scores(boxes: np.ndarray, scores: np.ndarray, method: str, param: float) -> np.ndarray:
    """Scores of ``boxes`` after soft-NMS (``method`` "linear" with N_t = ``param``, or "gaussian"
    with sigma = ``param``)."""
    scores = np.asarray(scores, dtype=np.float64).copy()
    iou = box_iou_matrix(boxes, boxes)
    alive = np.ones(len(scores), dtype=bool)
    while alive.any():
        top = np.flatnonzero(alive)[np.argmax(scores[alive])]
        alive[top] = False
        rest = np.flatnonzero(alive)
        overlap = iou[top, rest]
        if method == "linear":
            scores[rest] *= np.where(overlap >= param, 1.0 - overlap, 1.0)
        else:
            scores[rest] *= np.exp(-(overlap**2) / param)
    return scores


def rescored(entry: dict, method: str, param: float, det_thresh: float = 0.5) -> dict:
    boxes = np.asarray(entry["boxes"], dtype=np.float64).reshape(-1, 4)
    if method == "none" or len(boxes) == 0:
        return entry
    scores = soft_nms_scores(boxes, entry["scores"], method, param)
    keep = scores >= det_thresh
    out = {k: np.asarray(v)[keep] for k, v in entry.items()}
    out["scores"] = scores[keep].astype(np.asarray(entry["scores"]).dtype)
    return out


def main() -> None:
    saved = SavedPredictions(__doc__)
    for method, param in SETTINGS:
        saved.report(f"{method} {param}", saved.gallery_with(lambda e: rescored(e, method, param)))


if __name__ == "__main__":
    main()
