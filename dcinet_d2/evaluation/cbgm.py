"""Context bipartite graph matching (CBGM, SeqNet, Li and Miao, AAAI 2021): optional re-scoring.

For one query, CBGM looks at the gallery images that hold its ``k1`` most similar detections. In
each such image it matches the query image's persons (the query box first, then the ``k2 - 1``
most confident other detections of the query image) to the gallery image's detections with a
maximum-weight bipartite matching (Hungarian algorithm; weight = cosine similarity), and the
gallery detection matched to the query box gets a new similarity: the largest edge weight of the
matching. Off by default; with it off the numbers are exactly the protocol's.

As in SeqNet's evaluation code (``eval_func.py`` and ``utils/km.py``), which this follows:

- the candidate images are those of the ``k1`` most similar *detections* (so at most ``k1``
  images); exact similarity ties at the ``k1``-th place are broken by detection order (dataset
  image order, then the order of the detections in the image);
- the query image's context persons are chosen by greedy NMS at IoU 0.5 over the query box
  (score 1, always kept) and the query image's detections (score >= the detection threshold), by
  decreasing score; a detection overlapping an already kept box by IoU > 0.5 is skipped;
- the new similarity is the *largest* weight among the matched edges (SeqNet's
  ``get_max_value_result``), not the query edge's own weight (which would change nothing); when the
  gallery image has fewer detections than there are context persons the query box may stay
  unmatched, and then nothing changes.

Ours: the context persons are taken from the query image's own gallery predictions (the query
image is a test image in both benchmarks, so no extra model pass or file entry is needed), and
CBGM also applies to the CUHK-SYSU full set (SeqNet's code leaves it out).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from .boxes import elementwise_iou

logger = logging.getLogger(__name__)

__all__ = ["CBGMParams", "top_k1_images", "context_indices", "rescore"]

# SeqNet's NMS threshold when the query image is run as a gallery image.
CONTEXT_NMS_THRESH = 0.5


@dataclass(frozen=True)
class CBGMParams:
    """CBGM settings: ``k1`` most similar detections define the re-scored images, ``k2`` persons of
    the query image (the query box included) form its context. SeqNet uses (10, 3) for CUHK-SYSU
    and (30, 4) for PRW; ``cfg.TEST.PERSON_SEARCH.CBGM_K1/K2`` set one pair for both."""

    k1: int = 10
    k2: int = 3

    def __post_init__(self) -> None:
        if int(self.k1) < 1 or int(self.k2) < 1:
            raise ValueError(f"CBGM needs k1 >= 1 and k2 >= 1, got k1={self.k1}, k2={self.k2}")


def top_k1_images(sims: np.ndarray, det_image: np.ndarray, k1: int) -> np.ndarray:
    """Images that hold the ``k1`` most similar detections.

    Args:
        sims: float [m] similarities of the query's gallery detections, in detection order.
        det_image: int [m] image index of each detection.
        k1: number of detections.

    Returns:
        int [<= k1] sorted unique image indices.
    """
    m = sims.shape[0]
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    if m > k1:
        # k1-th largest value, then all candidates >= it; exact ties resolved by detection order.
        kth = np.partition(sims, m - k1)[m - k1]
        cand = np.flatnonzero(sims >= kth)
    else:
        cand = np.arange(m)
    order = np.lexsort((cand, -sims[cand]))[:k1]
    return np.unique(det_image[cand[order]])


def context_indices(
    query_box: np.ndarray, boxes: np.ndarray, scores: np.ndarray, k2: int
) -> np.ndarray:
    """Indices of the query image's context detections (the query box itself not included).

    Args:
        query_box: [4] the query box (x1, y1, x2, y2).
        boxes: [n, 4] the query image's detections (already above the detection threshold).
        scores: [n] their scores.
        k2: context size including the query box, so at most ``k2 - 1`` indices are returned.

    Returns:
        int [<= k2 - 1] indices into ``boxes``, by decreasing score (stable on ties).
    """
    kept_boxes = [np.asarray(query_box, dtype=np.float64)]
    out: list[int] = []
    if k2 <= 1 or len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64)
    for j in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        if len(out) >= k2 - 1:
            break
        kept = np.stack(kept_boxes)
        ious = elementwise_iou(np.broadcast_to(boxes[j], kept.shape), kept)
        if np.any(ious > CONTEXT_NMS_THRESH):
            continue
        kept_boxes.append(boxes[j])
        out.append(int(j))
    return np.asarray(out, dtype=np.int64)


def rescore(query_sims: np.ndarray, context_sims: np.ndarray) -> np.ndarray:
    """Re-score one gallery image for one query.

    Args:
        query_sims: float [n] similarity of the query to each detection of the gallery image.
        context_sims: float [k, n] similarities of the ``k`` other context persons (may be k = 0).

    Returns:
        float [n] a copy of ``query_sims`` where the detection matched to the query (if any) holds
        the largest weight of the maximum-weight matching.
    """
    query_sims = np.asarray(query_sims, dtype=np.float64)
    out = query_sims.copy()
    n = query_sims.shape[0]
    if n == 0:
        return out
    weights = np.vstack(
        [query_sims[None, :], np.asarray(context_sims, dtype=np.float64).reshape(-1, n)]
    )
    rows, cols = linear_sum_assignment(weights, maximize=True)
    matched = weights[rows, cols]
    hit = np.flatnonzero(rows == 0)
    if hit.size:
        out[cols[hit[0]]] = matched.max()
    return out
