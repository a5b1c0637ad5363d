#!/usr/bin/env python
"""How far detection AP and search mAP could rise if a kind of false detection were rejected.

    python bench/detection_oracle.py --dataset synthetic_cuhk_sysu_test \\
        --predictions OUT/inference/<dataset>/person_search_predictions.pth [--gallery-size 100]

Sorts every kept detection (score >= 0.5) into the kinds of
``dcinet_d2.evaluation.diagnostics.classify_detections`` (true, duplicate, part, merge, loose,
background) using the ground truth, then re-evaluates the predictions with the protocol after
removing one kind (an oracle that knows the ground truth), and after removing every kind but
"true". This only removes detections, and an embedding does not depend on the other detections,
so each row equals a detector that never produced that kind. The last row is the ceiling of the
protocol's detection AP for these detections: all false ones gone, the true ones kept with their
scores (CUHK-SYSU's AP is the precision-recall area times the recall at the 0.5 threshold). Used for
docs/reid_recipe.md; not part of the model.
"""

from __future__ import annotations

import numpy as np
from offline_eval import SavedPredictions

from dcinet_d2.evaluation.diagnostics import DETECTION_KINDS, classify_detections
from dcinet_d2.evaluation.galleries import detection_ground_truth


def kinds_of_gallery(gallery: dict, dicts: list, det_thresh: float = 0.5) -> dict:
    """``image_id -> array of kinds`` for every detection of the gallery ("below" under the
    threshold, which the protocol drops anyway)."""
    gt = detection_ground_truth(dicts)
    out = {}
    for image_id, entry in gallery.items():
        scores = np.asarray(entry["scores"]).reshape(-1)
        kinds = np.full(len(scores), "below", dtype=object)
        keep = scores >= det_thresh
        gt_boxes = gt[image_id][0] if image_id in gt else np.zeros((0, 4))
        boxes = np.asarray(entry["boxes"]).reshape(-1, 4)[keep]
        kinds[keep] = classify_detections(boxes, scores[keep], gt_boxes)
        out[image_id] = kinds
    return out


def without(gallery: dict, kinds: dict, drop: set) -> dict:
    """The gallery without the detections whose kind is in ``drop``."""
    result = {}
    for image_id, entry in gallery.items():
        keep = ~np.isin(kinds[image_id], list(drop))
        result[image_id] = {k: np.asarray(v)[keep] for k, v in entry.items()}
    return result


def main() -> None:
    saved = SavedPredictions(__doc__)
    kinds = kinds_of_gallery(saved.predictions["gallery"], saved.dicts)
    false_kinds = [k for k in DETECTION_KINDS if k != "true"]
    rows = [("as predicted", set())] + [(f"without {k}", {k}) for k in false_kinds]
    rows.append(("only true detections", set(false_kinds)))
    for label, drop in rows:
        saved.report(label, without(saved.predictions["gallery"], kinds, drop))


if __name__ == "__main__":
    main()
