"""The person-search protocol as plain per-query / per-detection loops: the independent baseline.

Written the way the community reference scripts (OIM's ``psdb.py``, SeqNet's ``eval_func.py``) are
written: one query at a time, one gallery image at a time, labels assigned detection by detection,
average precision by walking the sorted scores. It shares no arithmetic with
:mod:`dcinet_d2.evaluation.protocol` (IoU, thresholds, AP, CBGM matching and context selection are
all re-implemented here), so the tests can hold the two equal, and ``bench/bench_evaluator.py``
measures the speed-up. The rules (including our choices for ties and corner cases) are those
documented in :mod:`dcinet_d2.evaluation.protocol` and :mod:`dcinet_d2.evaluation.cbgm`; the
inputs and outputs are the same. It lives with the tests (a test oracle), not in the package.

CBGM here finds the maximum-weight matching by enumerating all injective assignments, which is
exponential: fine for tests (a few context persons and detections), not for real data.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from dcinet_d2.evaluation.cbgm import CBGMParams
from dcinet_d2.evaluation.galleries import GroundTruth, SearchQuery
from dcinet_d2.evaluation.protocol import DEFAULT_TOPK, DetectionResult, SearchResult

logger = logging.getLogger(__name__)

__all__ = ["average_precision", "evaluate_search", "evaluate_detection"]


def _iou(a, b) -> float:
    """IoU of two x1y1x2y2 boxes (areas without +1); NaN when the union is zero."""
    x1 = max(float(a[0]), float(b[0]))
    y1 = max(float(a[1]), float(b[1]))
    x2 = min(float(a[2]), float(b[2]))
    y2 = min(float(a[3]), float(b[3]))
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (
        (float(a[2]) - float(a[0])) * (float(a[3]) - float(a[1]))
        + (float(b[2]) - float(b[0])) * (float(b[3]) - float(b[1]))
        - inter
    )
    if union == 0.0:
        return math.nan
    return inter / union


def average_precision(y_true: Sequence[bool], y_score: Sequence[float]) -> float:
    """Average precision as scikit-learn defines it, by walking the scores from the highest.

    Every distinct score is one threshold n; AP = sum over thresholds of (R_n - R_{n-1}) * P_n with
    P_n = positives with score >= threshold / detections with score >= threshold, R_n = positives
    with score >= threshold / all positives. 0.0 without positives.
    """
    pairs = sorted(zip([float(s) for s in y_score], [bool(t) for t in y_true]), key=lambda p: -p[0])
    n_pos = sum(1 for _, t in pairs if t)
    if n_pos == 0:
        return 0.0
    ap = 0.0
    seen = tp = 0
    prev_recall = 0.0
    i = 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            seen += 1
            tp += pairs[j][1]
            j += 1
        recall = tp / n_pos
        ap += (recall - prev_recall) * (tp / seen)
        prev_recall = recall
        i = j
    return ap


def _best_matching(weights: list[list[float]]) -> list[tuple[int, int]]:
    """Maximum-weight matching of a k x n weight table by enumeration (min(k, n) pairs)."""
    k = len(weights)
    n = len(weights[0]) if k else 0
    best, best_pairs = -math.inf, []
    if k <= n:
        for cols in itertools.permutations(range(n), k):
            total = sum(weights[r][cols[r]] for r in range(k))
            if total > best:
                best, best_pairs = total, [(r, cols[r]) for r in range(k)]
    else:
        for rows in itertools.permutations(range(k), n):
            total = sum(weights[rows[c]][c] for c in range(n))
            if total > best:
                best, best_pairs = total, [(rows[c], c) for c in range(n)]
    return best_pairs


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)))


def evaluate_search(
    gallery: Mapping[str, Mapping[str, np.ndarray]],
    query_embeds: Mapping[int, np.ndarray],
    queries: Sequence[SearchQuery],
    image_ids: Sequence[str],
    *,
    det_thresh: float = 0.5,
    topk: Sequence[int] = DEFAULT_TOPK,
    image_cameras: Mapping[str, int] | None = None,
    cbgm: CBGMParams | None = None,
) -> SearchResult:
    """Search metrics, one query and one gallery image at a time (same contract as
    :func:`dcinet_d2.evaluation.protocol.evaluate_search`)."""
    topk = tuple(int(k) for k in topk)
    image_ids = [str(x) for x in image_ids]
    image_rank = {name: i for i, name in enumerate(image_ids)}
    # kept detections of every image: (boxes, scores, embeds)
    kept = {}
    for name in image_ids:
        p = gallery[name]
        scores = np.asarray(p["scores"]).reshape(-1)
        boxes = np.asarray(p["boxes"]).reshape(-1, 4)
        embeds = np.asarray(p["embeds"])
        idx = [j for j in range(len(scores)) if scores[j] >= det_thresh]
        kept[name] = (boxes[idx], scores[idx], embeds[idx].astype(np.float64))

    aps, hits, count_gts, count_tps = [], [], [], []
    for q in queries:
        feat_q = np.asarray(query_embeds[q.query_id], dtype=np.float64).reshape(-1)
        names = list(q.gallery) if q.gallery is not None else image_ids
        gallery_names, seen = [], set()
        for name in names:
            name = str(name)
            if name in seen or name == q.image_id:
                continue
            if q.exclude_camera is not None and image_cameras[name] == q.exclude_camera:
                continue
            seen.add(name)
            gallery_names.append(name)

        count_gt = 0
        name2sim = {}
        for name in gallery_names:
            if name in q.targets:
                count_gt += 1
            boxes, scores, feats = kept[name]
            if len(scores) == 0:
                continue
            name2sim[name] = [_dot(f, feat_q) for f in feats]

        if cbgm is not None:
            _cbgm_loop(q, feat_q, name2sim, kept, image_rank, cbgm)

        y_true, y_score = [], []
        count_tp = 0
        for name, sims in name2sim.items():
            boxes = kept[name][0]
            labels = [0] * len(sims)
            if name in q.targets:
                t = [int(v) for v in np.asarray(q.targets[name]).reshape(4)]
                w, h = t[2] - t[0], t[3] - t[1]
                iou_thresh = min(0.5, (w * h * 1.0) / ((w + 10) * (h + 10)))
                for j in sorted(range(len(sims)), key=lambda j: -sims[j]):
                    if _iou(boxes[j], t) >= iou_thresh:  # NaN compares False
                        labels[j] = 1
                        count_tp += 1
                        break
            y_true.extend(labels)
            y_score.extend(sims)

        count_gts.append(count_gt)
        count_tps.append(count_tp)
        if count_gt == 0:
            aps.append(math.nan)
            hits.append([False] * len(topk))
            continue
        aps.append(
            0.0 if count_tp == 0 else average_precision(y_true, y_score) * count_tp / count_gt
        )
        # ties against the query: at equal similarity, false positives come first
        ranked = sorted(zip(y_score, y_true), key=lambda p: (-p[0], p[1]))
        hits.append([any(t for _, t in ranked[:k]) for k in topk])

    return SearchResult(
        query_ids=np.array([q.query_id for q in queries], dtype=np.int64),
        ap=np.array(aps, dtype=np.float64),
        hits=np.array(hits, dtype=bool).reshape(len(queries), len(topk)),
        count_gt=np.array(count_gts, dtype=np.int64),
        count_tp=np.array(count_tps, dtype=np.int64),
        topk=topk,
    )


def _cbgm_loop(
    q: SearchQuery, feat_q, name2sim: dict, kept: dict, image_rank: dict, cbgm: CBGMParams
) -> None:
    """CBGM as SeqNet's loop does it (rules in ``evaluation.cbgm``), modifying ``name2sim`` in
    place."""
    # images of the k1 most similar detections (ties: dataset image order, then detection order)
    cands = []
    for name, sims in name2sim.items():
        for j, s in enumerate(sims):
            cands.append((-s, image_rank[name], j, name))
    cands.sort()
    images = {c[3] for c in cands[: cbgm.k1]}

    # context persons of the query image: greedy NMS at 0.5 with the query box first
    context = [feat_q]
    if q.image_id in kept and cbgm.k2 > 1:
        boxes, scores, feats = kept[q.image_id]
        kept_boxes = [np.asarray(q.box, dtype=np.float64)]
        for j in sorted(range(len(scores)), key=lambda j: -float(scores[j])):
            if len(context) >= cbgm.k2:
                break
            if any(_iou(boxes[j], b) > 0.5 for b in kept_boxes):
                continue
            kept_boxes.append(boxes[j])
            context.append(feats[j])

    for name in images:
        sims = name2sim[name]
        feats = kept[name][2]
        weights = [[sims[j] for j in range(len(sims))]]
        for c in context[1:]:
            weights.append([_dot(c, f) for f in feats])
        pairs = _best_matching(weights)
        max_val = max(weights[r][c] for r, c in pairs)
        for r, c in pairs:
            if r == 0:
                sims[c] = max_val
                break


def evaluate_detection(
    gallery: Mapping[str, Mapping[str, np.ndarray]],
    ground_truth: GroundTruth,
    image_ids: Sequence[str],
    *,
    det_thresh: float = 0.5,
    iou_thresh: float = 0.5,
    labeled_only: bool = False,
) -> DetectionResult:
    """Detection recall and AP, one image and one box at a time (same contract as
    :func:`dcinet_d2.evaluation.protocol.evaluate_detection`)."""
    y_true, y_score = [], []
    count_gt = count_tp = 0
    for name in image_ids:
        gt_boxes, pids = ground_truth[name]
        gt_boxes = [list(map(float, b)) for b in np.asarray(gt_boxes).reshape(-1, 4)]
        pids = list(np.asarray(pids).reshape(-1))
        if labeled_only:
            gt_boxes = [b for b, pid in zip(gt_boxes, pids) if pid != -1]
            if not gt_boxes:
                continue
        p = gallery[name]
        scores = np.asarray(p["scores"]).reshape(-1)
        boxes = np.asarray(p["boxes"]).reshape(-1, 4)
        dets = [(boxes[j], scores[j]) for j in range(len(scores)) if scores[j] >= det_thresh]
        dets = sorted(dets, key=lambda d: -float(d[1]))  # stable: decreasing score
        num_gt, num_det = len(gt_boxes), len(dets)
        count_gt += num_gt
        if num_det == 0:
            continue
        ious = [
            [float(np.float32(_iou(gt_boxes[i], dets[j][0]))) for j in range(num_det)]
            for i in range(num_gt)
        ]

        def first_max(values):
            best, best_key = None, None
            for idx, v in enumerate(values):
                key = math.inf if math.isnan(v) else v
                if best is None or key > best_key:
                    best, best_key = idx, key
            return best

        match = [[ious[i][j] >= iou_thresh for j in range(num_det)] for i in range(num_gt)]
        for j in range(num_det):
            best = first_max([ious[i][j] for i in range(num_gt)])
            for i in range(num_gt):
                if i != best:
                    match[i][j] = False
        for i in range(num_gt):
            best = first_max(ious[i])
            for j in range(num_det):
                if j != best:
                    match[i][j] = False
        for j in range(num_det):
            y_score.append(dets[j][1])
            y_true.append(any(match[i][j] for i in range(num_gt)))
        count_tp += sum(sum(row) for row in match)

    num_det = len(y_score)
    if count_gt == 0:
        return DetectionResult(math.nan, math.nan, 0, 0, num_det)
    recall = count_tp / count_gt
    ap = average_precision(y_true, y_score) * recall if count_tp else 0.0
    return DetectionResult(recall, ap, count_gt, count_tp, num_det)
