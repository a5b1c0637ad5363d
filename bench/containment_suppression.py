#!/usr/bin/env python
"""Containment suppression at test time, measured offline on a saved predictions file.

    python bench/containment_suppression.py --dataset synthetic_pretrain_cuhk_sysu_test \\
        --gallery-size 50 --predictions OUT/inference/<dataset>/person_search_predictions.pth

A detection is dropped when at least T of its area lies inside a kept detection of higher score
(T = intersection over the smaller box), optionally only when that container scores >= C. This
only removes detections, and an embedding does not depend on the other detections, so the result
equals doing it inside the model. Prints search / detection metrics and the kinds of the kept
detections (dcinet_d2.evaluation.diagnostics) for each (T, C); T = 1.0 row: the input unchanged.
Used for docs/reid_recipe.md ("Detection remedies"); not part of the model.
"""

from __future__ import annotations

import numpy as np
from offline_eval import SavedPredictions

SETTINGS = [
    (1.0, 0.0),
    (0.9, 0.0),
    (0.8, 0.0),
    (0.7, 0.0),
    (0.9, 0.9),
    (0.8, 0.9),
    (0.9, 0.95),
    (0.8, 0.95),
    (0.7, 0.95),
]  # (T, C) as measured in docs/reid_recipe.md


def suppress(entry: dict, inside: float, container_min: float) -> dict:
    boxes, scores = np.asarray(entry["boxes"]), np.asarray(entry["scores"])
    if len(boxes) == 0 or inside >= 1.0:
        return entry
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(np.float64)
    w = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    h = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iom = (
        np.clip(w, 0, None)
        * np.clip(h, 0, None)
        / np.maximum(np.minimum(area[:, None], area[None, :]), 1e-9)
    )
    keep = np.ones(len(b), dtype=bool)
    for i in range(len(b)):
        if keep[i] and scores[order[i]] >= container_min:
            later = np.arange(i + 1, len(b))
            keep[later[iom[i, later] >= inside]] = False
    return {k: np.asarray(v)[order[keep]] for k, v in entry.items()}


def main() -> None:
    saved = SavedPredictions(__doc__)
    for inside, cmin in SETTINGS:
        saved.report(
            f"inside >= {inside}, container >= {cmin}",
            saved.gallery_with(lambda e: suppress(e, inside, cmin)),
        )


if __name__ == "__main__":
    main()
