"""The person-search evaluation protocol, vectorised (numpy only, no Detectron2).

This is the community protocol (OIM's ``psdb.py``, SeqNet's ``eval_func.py``; DESIGN.md section 4)
computed with matrix products and array operations instead of per-detection Python loops.
`tests/evaluation/reference.py` computes the same numbers with plain loops; the tests hold the two
equal.

Search, per query (``SearchQuery``, see :mod:`.galleries`):

1. Gallery detections scoring below ``det_thresh`` are dropped (kept: ``score >= det_thresh``).
2. Similarity = dot product of the (L2-normalised) embeddings. Ours: computed in float64 (the
   reference scripts use float32; float64 only removes rounding noise, never changes a ranking
   that float32 resolves).
3. In every gallery image that holds the target (box ``t``, ``w = t.x2 - t.x1``, ``h = t.y2 -
   t.y1`` of the int32 box), the most similar detection with ``IoU >= min(0.5, w*h / ((w+10) *
   (h+10)))`` is the one true positive; the image counts as one ground truth even when nothing was
   detected in it. IoU is ``inter / union`` without the +1 of pixel-inclusive areas; a zero union
   (zero-area target and detection) gives NaN, which matches nothing (as in the reference).
4. ``AP = average_precision(y_true, y_score) * count_tp / count_gt`` over all detections of the
   query's gallery, 0 when there is no true positive; ``average_precision`` is scikit-learn's
   ``average_precision_score``: sum over distinct score thresholds of ``(R_n - R_{n-1}) P_n``,
   equal scores forming one threshold.
5. top-k = 1 when a true positive is among the k most similar detections. Ours (the reference
   leaves it to numpy's unstable argsort): ties in similarity are broken against the query, i.e. a
   true positive ranks after every false positive of equal similarity.
6. mAP and top-k are means over the queries that have at least one ground-truth image in their
   gallery. Ours: a query without any is left out of the means (the reference divides by zero) and
   counted in ``SearchResult.num_skipped``.

Detection (all test images; SeqNet's ``eval_detection``): per image, IoUs (float32, as the
reference stores them) between ground-truth and kept detections; a pair is a match when its IoU is
``>= iou_thresh`` and it is the largest IoU of both its detection's column and its ground truth's
row (``np.argmax``: first maximum; NaN counts as the maximum, as ``np.argmax`` does). recall =
matches / ground truths, AP = ``average_precision`` over all kept detections x recall. With
``labeled_only``, boxes of unlabelled persons are dropped and images without labelled persons are
skipped entirely, their detections included (as in the reference). Ours: detections of an image are
ordered by decreasing score (stable) before matching, so that IoU ties go to the more confident
detection (Detectron2 already outputs them in that order); an image with detections but no ground
truth contributes false positives (the reference crashes on it); no true positive gives AP 0.
"""

from __future__ import annotations

import itertools
import logging
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .boxes import elementwise_iou
from .cbgm import CBGMParams, context_indices, rescore, top_k1_images
from .galleries import GroundTruth, SearchQuery

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TOPK",
    "SearchResult",
    "DetectionResult",
    "average_precision",
    "small_box_iou_threshold",
    "evaluate_search",
    "evaluate_detection",
]

DEFAULT_TOPK = (1, 5, 10)
# Budget (bytes) for one chunk of the query x detection similarity matrix and its mask.
DEFAULT_CHUNK_BYTES = 256 << 20
# Bytes counted per (query, gallery detection) similarity of the explicit-gallery path (without
# CBGM) against chunk_bytes: the float64 similarity, its query's threshold, the comparison, and a
# share of the per-(query, image) index arrays.
_FLAT_ENTRY_BYTES = 24

# image id -> {"boxes": [n, 4], "scores": [n], "embeds": [n, D]} (numpy arrays)
GalleryPredictions = Mapping[str, Mapping[str, np.ndarray]]


@dataclass
class SearchResult:
    """Per-query search results.

    Attributes:
        query_ids: int [Q] in the order of the queries given.
        ap: float [Q] average precision (fraction), NaN for skipped queries.
        hits: bool [Q, K] top-k hit for each k of ``topk``.
        count_gt: int [Q] ground-truth images in each query's gallery.
        count_tp: int [Q] true positives found.
        topk: the k values.
    """

    query_ids: np.ndarray
    ap: np.ndarray
    hits: np.ndarray
    count_gt: np.ndarray
    count_tp: np.ndarray
    topk: tuple = DEFAULT_TOPK

    @property
    def valid(self) -> np.ndarray:
        """bool [Q]: queries with at least one ground-truth image (those in the means)."""
        return self.count_gt > 0

    @property
    def num_skipped(self) -> int:
        return int(np.sum(~self.valid))

    def metrics(self) -> dict[str, float]:
        """``{"mAP", "top1", "top5", ...}`` in percent (NaN if no query has a ground truth)."""
        v = self.valid
        if not np.any(v):
            return {"mAP": float("nan"), **{f"top{k}": float("nan") for k in self.topk}}
        out = {"mAP": float(100.0 * np.mean(self.ap[v]))}
        for j, k in enumerate(self.topk):
            out[f"top{k}"] = float(100.0 * np.mean(self.hits[v, j]))
        return out


@dataclass
class DetectionResult:
    """Detection results: ``recall`` and ``ap`` as fractions (NaN without ground truth)."""

    recall: float
    ap: float
    count_gt: int
    count_tp: int
    num_det: int

    def metrics(self) -> dict[str, float]:
        """``{"recall", "AP"}`` in percent."""
        return {"recall": 100.0 * self.recall, "AP": 100.0 * self.ap}


# ------------------------------------------------------------------------------- small pieces
def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """scikit-learn's ``average_precision_score`` (binary): sum over distinct score thresholds
    (descending) of ``(R_n - R_{n-1}) * P_n``; equal scores form one threshold.

    Returns:
        The AP; 0.0 when ``y_true`` has no positive (scikit-learn warns and its recall is
        undefined).
    """
    y_true = np.asarray(y_true, dtype=bool).ravel()
    y_score = np.asarray(y_score).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true and y_score differ in length: {y_true.shape} vs {y_score.shape}")
    n_pos = int(y_true.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-y_score, kind="stable")
    s = y_score[order]
    tps = np.cumsum(y_true[order])
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # last index of each score run
    tp_at = tps[last]
    precision = tp_at / (last + 1.0)
    delta_recall = np.diff(np.r_[0, tp_at]) / n_pos
    return float(np.sum(delta_recall * precision))


def small_box_iou_threshold(boxes: np.ndarray) -> np.ndarray:
    """``min(0.5, w*h / ((w+10) * (h+10)))`` for int xyxy boxes [n, 4] (w, h from the int box)."""
    boxes = np.asarray(boxes)
    w = (boxes[:, 2] - boxes[:, 0]).astype(np.float64)
    h = (boxes[:, 3] - boxes[:, 1]).astype(np.float64)
    return np.minimum(0.5, (w * h) / ((w + 10.0) * (h + 10.0)))


def _lookup(index: Mapping[str, int], names: Sequence[str]) -> tuple:
    """``index[name]`` for every name (KeyError for an unknown one), as a tuple."""
    if len(names) == 0:
        return ()
    got = operator.itemgetter(*names)(index)
    return got if len(names) > 1 else (got,)


def _expand_ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges [starts[i], starts[i] + counts[i]): (range index, element) of every element."""
    counts = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(counts.size), counts)
    offsets = np.cumsum(counts) - counts
    elements = np.asarray(starts, dtype=np.int64)[owner] + (np.arange(owner.size) - offsets[owner])
    return owner, elements


def _segment_first_argmax(key: np.ndarray, seg_starts: np.ndarray) -> np.ndarray:
    """Index of the first maximum of each non-empty contiguous segment of ``key``."""
    seg_max = np.maximum.reduceat(key, seg_starts)
    seg_id = np.repeat(np.arange(seg_starts.size), np.diff(np.r_[seg_starts, key.size]))
    idx = np.where(key == seg_max[seg_id], np.arange(key.size), key.size)
    return np.minimum.reduceat(idx, seg_starts)


# ------------------------------------------------------------------------------- gallery packing
class _Packed:
    """The kept detections of a list of images, in image order.

    Attributes:
        ptr: int [n_images + 1] detection range of each image.
        boxes: float64 [M, 4].
        scores: [M] (original dtype).
        embeds: [M, D] (as given, usually float32), concatenated on first use: the explicit-gallery
            path reads each image's block from ``parts`` and never needs the concatenation.
        parts: per image, its kept embeddings [n_i, D] (views of the inputs where nothing was
            dropped), or ``None`` when only ``embeds`` exists.
        dim: D.
    """

    def __init__(
        self,
        ptr: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        embeds: np.ndarray | None = None,
        parts: list | None = None,
        dim: int = 0,
    ) -> None:
        self.ptr, self.boxes, self.scores = ptr, boxes, scores
        self._embeds, self.parts = embeds, parts
        self.dim = int(embeds.shape[1]) if embeds is not None else int(dim)
        self.det_image = np.repeat(np.arange(ptr.size - 1), np.diff(ptr))
        self._embeds64: np.ndarray | None = None

    @property
    def embeds(self) -> np.ndarray:
        if self._embeds is None:
            filled = [e for e in self.parts if len(e)]
            self._embeds = np.concatenate(filled) if filled else np.zeros((0, self.dim))
        return self._embeds

    @embeds.setter
    def embeds(self, value: np.ndarray) -> None:
        self._embeds, self.parts, self.dim, self._embeds64 = value, None, int(value.shape[1]), None

    def image_embeds(self, j: int) -> np.ndarray:
        """[n_j, D] kept embeddings of image ``j``."""
        if self.parts is not None:
            return self.parts[j]
        return self.embeds[self.ptr[j] : self.ptr[j + 1]]

    def embeds64(self) -> np.ndarray:
        """float64 copy of ``embeds`` (made once, only by the paths that need all of it)."""
        if self._embeds64 is None:
            self._embeds64 = self.embeds.astype(np.float64)
        return self._embeds64


def _as_shape(x, ndim: int) -> np.ndarray:
    """``x`` as an array of ``ndim`` dimensions (an empty one reshaped to (0,) or (0, 0))."""
    if isinstance(x, np.ndarray) and x.ndim == ndim:
        return x
    x = np.asarray(x)
    if x.ndim == ndim:
        return x
    if x.size == 0:
        return x.reshape((0,) * ndim)
    raise ValueError(f"expected a {ndim}-d array, got shape {list(x.shape)}")


def _pack(
    gallery: GalleryPredictions, image_ids: Sequence[str], det_thresh: float, need_embeds: bool
) -> _Packed:
    """Concatenate the detections scoring >= ``det_thresh`` of ``image_ids`` (in that order)."""
    try:
        entries = [gallery[name] for name in image_ids]
    except KeyError as e:
        raise ValueError(f"no predictions for gallery image {e.args[0]}") from None
    scores = [_as_shape(p["scores"], 1) for p in entries]
    n_all = np.fromiter(map(len, scores), dtype=np.int64, count=len(scores))
    boxes = [_as_shape(p["boxes"], 2) for p in entries]
    if not np.array_equal(np.fromiter(map(len, boxes), dtype=np.int64, count=len(boxes)), n_all):
        raise ValueError("every gallery image needs as many boxes as scores")
    if need_embeds:
        embeds = [_as_shape(p["embeds"], 2) for p in entries]
        if not np.array_equal(
            np.fromiter(map(len, embeds), dtype=np.int64, count=len(embeds)), n_all
        ):
            raise ValueError("every gallery image needs as many embeddings as scores")
        dims = {e.shape[1] for e, n in zip(embeds, n_all) if n > 0}
        if len(dims) > 1:
            raise ValueError(f"gallery embeddings differ in dimension: {sorted(dims)}")
    if not entries or n_all.sum() == 0:
        dim = 0
        if need_embeds:
            dims = {e.shape[1] for e in embeds}
            dim = dims.pop() if len(dims) == 1 else 0
        return _Packed(
            np.zeros(len(entries) + 1, dtype=np.int64),
            np.zeros((0, 4)),
            np.zeros(0, np.float32),
            embeds=np.zeros((0, dim)),
        )
    all_scores = np.concatenate(scores)
    keep = all_scores >= det_thresh
    owner = np.repeat(np.arange(len(entries)), n_all)
    ptr = np.r_[0, np.cumsum(np.bincount(owner[keep], minlength=len(entries)))].astype(np.int64)
    all_kept = bool(keep.all())
    boxes = np.concatenate([b for b, n in zip(boxes, n_all) if n > 0], dtype=np.float64)
    boxes = boxes if all_kept else boxes[keep]
    if boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [n, 4], got [n, {boxes.shape[1]}]")
    scores = all_scores if all_kept else all_scores[keep]
    if not need_embeds:
        return _Packed(ptr=ptr, boxes=boxes, scores=scores, embeds=np.zeros((int(ptr[-1]), 0)))
    # per image, its kept embeddings (the input itself where nothing is dropped); concatenated
    # only if a path needs all of them at once
    parts = embeds
    if not all_kept:
        parts = list(embeds)
        first, count = (np.cumsum(n_all) - n_all).tolist(), n_all.tolist()
        for j in np.flatnonzero(np.diff(ptr) != n_all).tolist():
            parts[j] = embeds[j].compress(keep[first[j] : first[j] + count[j]], axis=0)
    if any(dt.kind != "f" for dt in {e.dtype for e in parts}):
        parts = [e if e.dtype.kind == "f" else e.astype(np.float64) for e in parts]
    return _Packed(ptr=ptr, boxes=boxes, scores=scores, parts=parts, dim=dims.pop())


# ------------------------------------------------------------------------------- search
def evaluate_search(
    gallery: GalleryPredictions,
    query_embeds: Mapping[int, np.ndarray],
    queries: Sequence[SearchQuery],
    image_ids: Sequence[str],
    *,
    det_thresh: float = 0.5,
    topk: Sequence[int] = DEFAULT_TOPK,
    image_cameras: Mapping[str, int] | None = None,
    cbgm: CBGMParams | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> SearchResult:
    """Search metrics of every query (vectorised).

    Queries with an explicit gallery list are evaluated on the (query, gallery detection) entries
    they need, computed image by image as small matrix products; queries whose gallery is every
    test image use blocks of the dense query x detection similarity matrix. Either way memory is
    bounded by ``chunk_bytes`` and no Python loop runs over detections.

    Args:
        gallery: predictions per image id: ``boxes`` [n, 4] (x1, y1, x2, y2), ``scores`` [n],
            ``embeds`` [n, D] L2-normalised. Must cover every id of ``image_ids``.
        query_embeds: query id -> [D] L2-normalised embedding of the query box.
        queries: the search problems (:mod:`.galleries`).
        image_ids: every test image, in dataset order (the gallery of queries whose ``gallery`` is
            ``None``; also the detection order that breaks exact ties in CBGM).
        det_thresh: detections scoring below it are dropped.
        topk: the k of the top-k accuracies.
        image_cameras: image id -> camera id; needed by queries with ``exclude_camera``.
        cbgm: CBGM re-scoring (:mod:`.cbgm`), ``None`` = off.
        chunk_bytes: memory budget of one block of similarities.

    Returns:
        A :class:`SearchResult` in the order of ``queries``.
    """
    topk = tuple(int(k) for k in topk)
    if not topk or any(k < 1 for k in topk):
        raise ValueError(f"top-k values must be >= 1, got {topk}")
    image_ids = [str(x) for x in image_ids]
    index = {name: i for i, name in enumerate(image_ids)}
    if len(index) != len(image_ids):
        raise ValueError("image_ids are not unique")
    len(image_ids)
    packed = _pack(gallery, image_ids, det_thresh, need_embeds=True)
    n_det = packed.ptr[-1]
    nq = len(queries)

    qemb = _query_matrix(queries, query_embeds, None if n_det == 0 and nq else packed.dim)
    if n_det == 0 and nq:
        packed.embeds = np.zeros((0, qemb.shape[1]))

    has_excl = np.array([q.exclude_camera is not None for q in queries], dtype=bool)
    excl = np.array(
        [q.exclude_camera if q.exclude_camera is not None else 0 for q in queries], dtype=np.int64
    )
    cams = None
    if has_excl.any():
        if image_cameras is None:
            raise ValueError("queries exclude a camera but no image_cameras were given")
        missing = [name for name in image_ids if name not in image_cameras]
        if missing:
            raise ValueError(f"no camera for image {missing[0]}")
        cams = np.array([int(image_cameras[name]) for name in image_ids], dtype=np.int64)
    q_img = np.array([index.get(q.image_id, -1) for q in queries], dtype=np.int64)

    # ---- explicit galleries: deduplicated (query, image) pairs, sorted, without excluded images
    is_explicit = np.array([q.gallery is not None for q in queries], dtype=bool)
    exp_rows = np.flatnonzero(is_explicit)
    lens = np.array([len(queries[i].gallery) for i in exp_rows], dtype=np.int64)
    try:
        gi = np.fromiter(
            itertools.chain.from_iterable(_lookup(index, queries[i].gallery) for i in exp_rows),
            dtype=np.int64,
            count=int(lens.sum()),
        )
    except KeyError as e:
        bad = next(queries[i].query_id for i in exp_rows if e.args[0] in queries[i].gallery)
        raise ValueError(f"query {bad}: gallery image {e.args[0]!r} is not a test image") from None
    gq = np.repeat(exp_rows, lens)
    keep = gi != q_img[gq]
    if cams is not None:
        keep &= ~(has_excl[gq] & (cams[gi] == excl[gq]))
    gp_key = np.sort(gi[keep] * nq + gq[keep])  # image * Q + query: by image, then query
    gp_key = gp_key[np.r_[True, gp_key[1:] != gp_key[:-1]]] if gp_key.size else gp_key

    # ---- targets inside each query's effective gallery: (query, image, box), sorted by query
    tq, ti, tbox = _target_arrays(queries, index)
    inside = ti != q_img[tq]
    if cams is not None:
        inside &= ~(has_excl[tq] & (cams[ti] == excl[tq]))
    if exp_rows.size:  # explicit galleries: the target image must be one of the listed images
        key = ti * nq + tq
        found = np.zeros(tq.size, dtype=bool)
        if gp_key.size:
            found = gp_key[np.minimum(np.searchsorted(gp_key, key), gp_key.size - 1)] == key
        inside &= ~is_explicit[tq] | found
    order = np.argsort(tq[inside], kind="stable")
    tq, ti, tbox = tq[inside][order], ti[inside][order], tbox[inside][order]
    count_gt = np.bincount(tq, minlength=nq)
    t_ptr = np.searchsorted(tq, np.arange(nq + 1))

    # ---- detections of each target image that overlap the target enough (IoU >= small-box rule)
    t_ndet = packed.ptr[ti + 1] - packed.ptr[ti]
    tflat_owner, tflat_det = _expand_ranges(packed.ptr[ti], t_ndet)
    ious = elementwise_iou(packed.boxes[tflat_det], tbox[tflat_owner].astype(np.float64))
    tflat_match = ious >= small_box_iou_threshold(tbox)[tflat_owner]  # NaN -> False
    tflat_ptr = np.r_[0, np.cumsum(t_ndet)].astype(np.int64)

    ctx = _cbgm_contexts(queries, q_img, qemb, packed, cbgm) if cbgm is not None else None
    tp_score = np.full(tq.size, -np.inf)  # per target: similarity of its true positive
    c_all = np.zeros(tq.size, dtype=np.int64)  # per target: gallery detections scoring >= it
    state = _SearchState(
        packed,
        qemb,
        q_img,
        has_excl,
        excl,
        cams,
        tq,
        ti,
        t_ptr,
        t_ndet,
        tflat_det,
        tflat_match,
        tflat_ptr,
        tp_score,
        c_all,
        cbgm,
        ctx,
    )
    _search_dense(state, np.flatnonzero(~is_explicit), chunk_bytes)
    if cbgm is None:
        _search_sparse_by_image(state, exp_rows, gp_key, chunk_bytes)
    else:  # (query, image) pairs sorted by query
        gp_img, gp_q = np.divmod(gp_key, max(nq, 1))
        by_query = np.lexsort((gp_img, gp_q))
        _search_sparse(state, exp_rows, gp_q[by_query], gp_img[by_query], chunk_bytes)
    ap, hits, count_tp = _query_stats(nq, tq, tp_score, c_all, count_gt, topk)
    logger.debug(
        "%d of %d queries have no ground truth in their gallery", int(np.sum(count_gt == 0)), nq
    )
    return SearchResult(
        query_ids=np.array([q.query_id for q in queries], dtype=np.int64),
        ap=ap,
        hits=hits,
        count_gt=count_gt,
        count_tp=count_tp,
        topk=topk,
    )


def _query_matrix(
    queries: Sequence[SearchQuery], query_embeds: Mapping[int, np.ndarray], dim: int | None
) -> np.ndarray:
    """float64 [Q, D] embeddings of ``queries``, each flattened; D must be ``dim`` (the gallery's;
    ``None``: the first query's)."""
    ids = [q.query_id for q in queries]
    if not all(map(query_embeds.__contains__, ids)):
        raise ValueError(f"no embedding for query {next(i for i in ids if i not in query_embeds)}")
    raw = [query_embeds[i] for i in ids]
    out = None
    if raw:
        try:  # all of one shape (the usual case): one conversion
            out = np.asarray(raw, dtype=np.float64)
            out = out.reshape(len(raw), -1) if out.size else None
        except (ValueError, TypeError):
            out = None
    if out is None:
        rows = [np.asarray(e, dtype=np.float64).reshape(-1) for e in raw]
        dim = rows[0].shape[0] if dim is None and rows else dim
        for q, e in zip(queries, rows):
            if e.shape[0] != dim:
                raise ValueError(
                    f"query {q.query_id}: embedding dimension {e.shape[0]} "
                    f"!= gallery dimension {dim}"
                )
        return np.stack(rows) if rows else np.zeros((0, dim or 0))
    if dim is not None and out.shape[1] != dim:
        raise ValueError(
            f"query {ids[0]}: embedding dimension {out.shape[1]} != gallery dimension {dim}"
        )
    return out


def _target_arrays(queries: Sequence[SearchQuery], index: Mapping[str, int]) -> tuple:
    """(query index [T], image index [T], int64 box [T, 4]) of every target of every query, in
    order."""
    names = [str(name) for q in queries for name in q.targets]
    try:
        ti = np.fromiter(map(index.__getitem__, names), dtype=np.int64, count=len(names))
    except KeyError as e:
        q = next(q for q in queries if any(str(name) == e.args[0] for name in q.targets))
        raise ValueError(
            f"query {q.query_id}: target image {e.args[0]} is not a test image"
        ) from None
    tq = np.repeat(np.arange(len(queries)), [len(q.targets) for q in queries]).astype(np.int64)
    boxes = [box for q in queries for box in q.targets.values()]
    try:  # all given as 4 numbers (the usual case): one conversion
        tbox = np.array(boxes, dtype=np.int64)
        ok = tbox.shape == (len(boxes), 4)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        tbox = np.asarray([np.asarray(box).reshape(4) for box in boxes], dtype=np.int64).reshape(
            -1, 4
        )
    return tq, ti, tbox


@dataclass
class _SearchState:
    packed: _Packed
    qemb: np.ndarray
    q_img: np.ndarray
    has_excl: np.ndarray
    excl: np.ndarray
    cams: np.ndarray | None
    tq: np.ndarray  # per target: query index (sorted)
    ti: np.ndarray  # per target: image index
    t_ptr: np.ndarray  # per query: range of its targets
    t_ndet: np.ndarray  # per target: detections in its image
    tflat_det: np.ndarray  # per (target, detection of its image): detection index
    tflat_match: np.ndarray  # ... and whether it overlaps the target enough
    tflat_ptr: np.ndarray  # per target: range in the tflat arrays
    tp_score: np.ndarray  # out
    c_all: np.ndarray  # out
    cbgm: CBGMParams | None
    ctx: list | None


def _score_block(state: _SearchState, chunk: np.ndarray, sims: np.ndarray, t_col0_of) -> None:
    """True positives and their ranks for the rows of one block of similarities.

    Args:
        state: the search state (targets in, ``tp_score`` and ``c_all`` out).
        chunk: int [c] query index of each row of ``sims``.
        sims: float [c, L] similarities of each row's gallery detections, -inf elsewhere.
        t_col0_of: ``targets -> columns``: the column of the first detection of each target's image
            in its row (the image's detections occupy consecutive columns, in detection order).
    """
    counts = state.t_ptr[chunk + 1] - state.t_ptr[chunk]
    t_row, targets = _expand_ranges(state.t_ptr[chunk], counts)
    if targets.size == 0:
        return
    # best similarity among the detections of the target image that overlap the target enough
    nd = state.t_ndet[targets]
    owner, flat = _expand_ranges(state.tflat_ptr[targets], nd)
    if flat.size:
        col = t_col0_of(targets)[owner] + (flat - state.tflat_ptr[targets][owner])
        vals = np.where(state.tflat_match[flat], sims[t_row[owner], col], -np.inf)
        nonempty = np.flatnonzero(nd > 0)
        seg = np.r_[0, np.cumsum(nd[nonempty])[:-1]].astype(np.int64)
        state.tp_score[targets[nonempty]] = np.maximum.reduceat(vals, seg)
    found = np.flatnonzero(state.tp_score[targets] > -np.inf)
    if found.size:
        state.c_all[targets[found]] = _count_at_least(
            sims, t_row[found], state.tp_score[targets[found]]
        )


def _count_at_least(sims: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``count(sims[rows[i]] >= values[i])`` for every i."""
    out = np.zeros(rows.size, dtype=np.int64)
    length = sims.shape[1]
    order = np.argsort(rows, kind="stable")
    if length <= 8192:  # short rows: the j-th value of every row against all rows at once
        first = np.searchsorted(rows[order], rows[order], side="left")
        slot = np.empty(rows.size, dtype=np.int64)
        slot[order] = np.arange(rows.size) - first
        if int(slot.max()) < 64:
            for j in range(int(slot.max()) + 1):
                sel = np.flatnonzero(slot == j)
                vals = np.full(sims.shape[0], np.inf)
                vals[rows[sel]] = values[sel]
                out[sel] = np.count_nonzero(sims >= vals[:, None], axis=1)[rows[sel]]
            return out
    cuts = np.r_[0, np.flatnonzero(np.diff(rows[order])) + 1, rows.size]
    for a, b in zip(cuts[:-1], cuts[1:]):  # long rows: one row at a time, no copy
        sel = order[a:b]
        row = sims[rows[sel[0]]]
        if sel.size <= 16:
            out[sel] = np.count_nonzero(row[None, :] >= values[sel, None], axis=1)
        else:  # many values: sort the row once, then binary search
            out[sel] = length - np.searchsorted(np.sort(row), values[sel], side="left")
    return out


def _search_dense(state: _SearchState, rows: np.ndarray, chunk_bytes: int) -> None:
    """Queries searching every test image: blocks of the query x detection similarity matrix."""
    if rows.size == 0:
        return
    packed = state.packed
    n_det = packed.embeds.shape[0]
    per_row = max(1, int(chunk_bytes // max(1, 2 * 8 * n_det)))  # the block and one temporary
    for start in range(0, rows.size, per_row):
        chunk = rows[start : start + per_row]
        sims = state.qemb[chunk] @ packed.embeds64().T  # [c, M]
        # the query's own image and, for cross-camera queries, the images of its camera: -inf
        for r, j in enumerate(state.q_img[chunk].tolist()):
            if j >= 0:
                sims[r, packed.ptr[j] : packed.ptr[j + 1]] = -np.inf
        if state.cams is not None:
            ex = np.flatnonzero(state.has_excl[chunk])
            if ex.size:
                same = state.cams[packed.det_image][None, :] == state.excl[chunk][ex, None]
                sub = sims[ex]
                np.putmask(sub, same, -np.inf)
                sims[ex] = sub
        if state.cbgm is not None:
            for r, i in enumerate(chunk):
                cand = np.flatnonzero(sims[r] > -np.inf)
                _apply_cbgm(sims[r], cand, cand, packed, state.ctx[i], state.cbgm.k1)
        _score_block(state, chunk, sims, lambda t: packed.ptr[state.ti[t]])


def _search_sparse(
    state: _SearchState, rows: np.ndarray, gp_q: np.ndarray, gp_img: np.ndarray, chunk_bytes: int
) -> None:
    """Queries with explicit gallery lists, with CBGM (which re-scores a query's row in place):
    only the (query, gallery detection) similarities they need, one small matrix product per
    gallery image, laid out as rows padded with -inf. Without CBGM, see
    :func:`_search_sparse_by_image`."""
    if rows.size == 0:
        return
    packed = state.packed
    nq, n_img = state.qemb.shape[0], packed.ptr.size - 1
    gp_n = packed.ptr[gp_img + 1] - packed.ptr[gp_img]
    gp_ptr = np.searchsorted(gp_q, np.arange(nq + 1))
    gp_off = np.r_[0, np.cumsum(gp_n)].astype(np.int64)  # entries: query-major, pair-contiguous
    n_entries = gp_off[gp_ptr[rows + 1]] - gp_off[gp_ptr[rows]]
    # chunks of rows whose padded block (rows x longest row) fits the budget
    bounds, longest = [0], 0
    for k, n in enumerate(n_entries.tolist()):
        longest_new = max(longest, n)
        if k > bounds[-1] and (k - bounds[-1] + 1) * longest_new * 18 > chunk_bytes:
            bounds.append(k)
            longest_new = n
        longest = longest_new
    bounds.append(rows.size)
    for a, b in zip(bounds[:-1], bounds[1:]):
        chunk = rows[a:b]  # explicit rows in increasing order: their pairs are contiguous
        c = chunk.size
        width = max(1, int(n_entries[a:b].max()))
        p0, p1 = gp_ptr[chunk[0]], gp_ptr[chunk[-1] + 1]
        pq, pimg, pn = gp_q[p0:p1], gp_img[p0:p1], gp_n[p0:p1]
        row_of_pair = np.searchsorted(chunk, pq)
        col0 = gp_off[p0:p1] - gp_off[gp_ptr[pq]]  # column of the pair's first detection in its row
        cell0 = row_of_pair * width + col0
        sims = np.full((c, width), -np.inf)
        by_img = np.argsort(pimg, kind="stable")
        by_img = by_img[pn[by_img] > 0]
        if by_img.size:
            img_sorted, q_sorted = pimg[by_img], pq[by_img]
            cuts = np.r_[0, np.flatnonzero(np.diff(img_sorted)) + 1, by_img.size]
            starts = cuts[:-1]
            d0s, d1s = packed.ptr[img_sorted[starts]], packed.ptr[img_sorted[starts] + 1]
            outs = np.r_[0, np.cumsum((cuts[1:] - starts) * (d1s - d0s))]
            buf = np.empty(int(outs[-1]))
            qemb, emb = state.qemb, packed.embeds  # float64 x float32 blocks: float64 products
            for s, e, d0, d1, o in zip(
                starts.tolist(), cuts[1:].tolist(), d0s.tolist(), d1s.tolist(), outs.tolist()
            ):
                np.dot(
                    qemb[q_sorted[s:e]],
                    emb[d0:d1].T,
                    out=buf[o : o + (e - s) * (d1 - d0)].reshape(e - s, d1 - d0),
                )
            _, dest = _expand_ranges(cell0[by_img], pn[by_img])
            sims.ravel()[dest] = buf

        if state.cbgm is not None:
            dets = np.full((c, width), -1, dtype=np.int64)
            _, cells = _expand_ranges(cell0, pn)
            dets.ravel()[cells] = _expand_ranges(packed.ptr[pimg], pn)[1]
            for r, i in enumerate(chunk):
                n = int(n_entries[a + r])
                _apply_cbgm(sims[r], np.arange(n), dets[r, :n], packed, state.ctx[i], state.cbgm.k1)

        pair_key = pq * n_img + pimg

        def t_col0_of(t):
            return col0[np.searchsorted(pair_key, state.tq[t] * n_img + state.ti[t])]

        _score_block(state, chunk, sims, t_col0_of)


def _search_sparse_by_image(
    state: _SearchState, rows: np.ndarray, gp_key: np.ndarray, chunk_bytes: int
) -> None:
    """Queries with explicit gallery lists, without CBGM: only the (query, gallery detection)
    similarities they need, as one matrix product per gallery image (the queries that list it
    against its detections), kept flat in image order: no padded rows, no scatter.

    Args:
        state: the search state.
        rows: the explicit queries (increasing).
        gp_key: their (query, gallery image) pairs as sorted unique keys ``image * Q + query``.
        chunk_bytes: memory budget: rows are processed in chunks whose entries (a similarity and
            its temporaries, ``_FLAT_ENTRY_BYTES`` each) fit it, at least one row per chunk.

    Per chunk: the true positive of every target is the best similarity among the detections that
    match it, and its rank (``c_all``) counts the query's entries scoring at least as high; only
    the entries reaching the lowest true-positive score of their query take part in that count.
    """
    if rows.size == 0 or gp_key.size == 0:
        return
    packed, qemb, ptr = state.packed, state.qemb, state.packed.ptr
    nq = qemb.shape[0]
    gp_img, gp_q = np.divmod(gp_key, nq)
    gp_n = ptr[gp_img + 1] - ptr[gp_img]
    with_dets = None if gp_n.all() else gp_n > 0
    bounds = [0, rows.size]
    if rows.size > 1 and int(gp_n.sum()) * _FLAT_ENTRY_BYTES > chunk_bytes:
        n_entries = np.bincount(gp_q, weights=gp_n, minlength=nq)[rows]  # per row
        per_chunk, csum, bounds = (
            max(1, chunk_bytes // _FLAT_ENTRY_BYTES),
            np.cumsum(n_entries),
            [0],
        )
        while bounds[-1] < rows.size:
            a = bounds[-1]
            b = int(np.searchsorted(csum, (csum[a - 1] if a else 0) + per_chunk, side="right"))
            bounds.append(min(rows.size, max(b, a + 1)))
    gather = np.empty((0, qemb.shape[1]))  # reused buffer for the query rows of one product
    image_embeds = packed.parts.__getitem__ if packed.parts is not None else packed.image_embeds
    for a, b in zip(bounds[:-1], bounds[1:]):
        chunk = rows[a:b]
        pkey, pimg, pq, pn = gp_key, gp_img, gp_q, gp_n  # the chunk's pairs with detections
        sel = with_dets
        if len(bounds) > 2:
            sel = (
                (gp_q >= chunk[0])
                & (gp_q <= chunk[-1])
                & (True if with_dets is None else with_dets)
            )
        if sel is not None:
            pkey, pimg, pq, pn = gp_key[sel], gp_img[sel], gp_q[sel], gp_n[sel]
        if pkey.size == 0:
            continue
        ent_off = np.r_[0, np.cumsum(pn)]  # entries of pair k: ent_off[k] + [0, pn[k])
        starts = np.r_[0, np.flatnonzero(pimg[1:] != pimg[:-1]) + 1]
        ends = np.r_[starts[1:], pimg.size]
        widest = int((ends - starts).max())
        if gather.shape[0] < widest:
            gather = np.empty((widest, qemb.shape[1]))
        # one product per image: [queries listing it, D] x [D, its detections] (float64 x float32
        # blocks: float64 products), written in place as that image's block of entries
        sims = np.empty(int(ent_off[-1]))
        for s, e, img, n, o in zip(
            starts.tolist(),
            ends.tolist(),
            pimg[starts].tolist(),
            pn[starts].tolist(),
            ent_off[starts].tolist(),
        ):
            k = e - s
            np.dot(
                qemb.take(pq[s:e], axis=0, out=gather[:k], mode="clip"),
                image_embeds(img).T,
                out=sims[o : o + k * n].reshape(k, n),
            )

        # targets of the chunk's rows whose image has detections: their true positive
        _, targets = _expand_ranges(state.t_ptr[chunk], state.t_ptr[chunk + 1] - state.t_ptr[chunk])
        targets = targets[state.t_ndet[targets] > 0]
        if targets.size == 0:
            continue
        nd = state.t_ndet[targets]
        pair = np.searchsorted(pkey, state.ti[targets] * nq + state.tq[targets])
        owner, flat = _expand_ranges(state.tflat_ptr[targets], nd)
        local = flat - state.tflat_ptr[targets][owner]
        vals = np.where(state.tflat_match[flat], sims[ent_off[pair][owner] + local], -np.inf)
        tp = np.maximum.reduceat(vals, np.r_[0, np.cumsum(nd)[:-1]].astype(np.int64))
        state.tp_score[targets] = tp
        found = tp > -np.inf
        if not found.any():
            continue
        targets, tp = targets[found], tp[found]
        # the entries reaching the lowest true-positive score of their query, then the ranks
        tq = state.tq[targets]  # sorted
        q_first = np.r_[0, np.flatnonzero(tq[1:] != tq[:-1]) + 1]
        low = np.full(nq, np.inf)
        low[tq[q_first]] = np.minimum.reduceat(tp, q_first)
        cand = np.flatnonzero(sims >= np.repeat(low[pq], pn))
        cand_q = pq[np.searchsorted(ent_off, cand, side="right") - 1]
        state.c_all[targets] = _count_at_least_grouped(cand_q, sims[cand], tq, tp)


def _count_at_least_grouped(
    cand_q: np.ndarray, cand_v: np.ndarray, q: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """``count(cand_v[cand_q == q[i]] >= v[i])`` for every i."""
    n = cand_q.size
    keys_q = np.r_[cand_q, q]
    keys_v = np.r_[cand_v, v]
    is_target = np.r_[np.zeros(n, dtype=bool), np.ones(q.size, dtype=bool)]
    # by query, then decreasing value, candidates before targets of equal value
    order = np.lexsort((is_target, -keys_v, keys_q))
    seen = np.cumsum(~is_target[order])  # candidates up to each position
    pos = np.empty(order.size, dtype=np.int64)
    pos[order] = np.arange(order.size)
    below = np.searchsorted(np.sort(cand_q), q, side="left")  # candidates of smaller queries
    return seen[pos[n:]] - below


def _query_stats(
    nq: int,
    tq: np.ndarray,
    tp_score: np.ndarray,
    c_all: np.ndarray,
    count_gt: np.ndarray,
    topk: tuple,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AP, top-k hits and true-positive counts per query from its true positives' scores and ranks.

    With the true positives i of a query (score s_i, c_all_i detections scoring >= s_i, c_pos_i
    true positives scoring >= s_i), scikit-learn's AP is mean_i(c_pos_i / c_all_i) (each distinct
    threshold holding n true positives contributes n/T x its precision); times T / count_gt.
    """
    has = tp_score > -np.inf
    q, s, ca = tq[has], tp_score[has], c_all[has]
    count_tp = np.bincount(q, minlength=nq)
    ap = np.zeros(nq)
    hits = np.zeros((nq, len(topk)), dtype=bool)
    if q.size:
        ptr = np.r_[0, np.cumsum(count_tp)].astype(np.int64)  # q is sorted
        owner, other = _expand_ranges(ptr[q], count_tp[q])
        c_pos = np.bincount(owner, weights=s[other] >= s[owner], minlength=q.size)
        ap_sum = np.bincount(q, weights=c_pos / ca, minlength=nq)
        valid = count_gt > 0
        ap[valid] = ap_sum[valid] / count_gt[valid]
        starts = ptr[:-1][count_tp > 0]
        best = _segment_first_argmax(s, starts)
        negatives_ahead = ca[best] - c_pos[best]
        hits[q[best]] = negatives_ahead[:, None] < np.asarray(topk)[None, :]
    ap[count_gt == 0] = np.nan
    return ap, hits, count_tp


def _cbgm_contexts(queries, q_img, qemb, packed: _Packed, cbgm: CBGMParams) -> list[np.ndarray]:
    """Embeddings [k, D] of each query's context persons other than the query box (may be k = 0)."""
    out = []
    for i, q in enumerate(queries):
        j = q_img[i]
        if j < 0:
            out.append(np.zeros((0, qemb.shape[1])))
            continue
        a, b = packed.ptr[j], packed.ptr[j + 1]
        idx = context_indices(
            np.asarray(q.box, dtype=np.float64), packed.boxes[a:b], packed.scores[a:b], cbgm.k2
        )
        out.append(packed.embeds[a + idx].astype(np.float64))
    return out


def _apply_cbgm(
    row: np.ndarray,
    cand: np.ndarray,
    cand_det: np.ndarray,
    packed: _Packed,
    context: np.ndarray,
    k1: int,
) -> None:
    """Re-score one query's similarities in place (see :mod:`.cbgm`).

    Args:
        row: similarities (modified in place); ``row[cand]`` are the query's gallery detections.
        cand: positions in ``row`` of the gallery detections, in detection order.
        cand_det: their detection indices (same length); an image's detections are contiguous.
    """
    if cand.size == 0:
        return
    det_image = packed.det_image[cand_det]  # non-decreasing
    for g in top_k1_images(row[cand], det_image, k1):
        a, b = (
            np.searchsorted(det_image, g, side="left"),
            np.searchsorted(det_image, g, side="right"),
        )
        pos, dets = cand[a:b], cand_det[a:b]
        ctx = context @ packed.embeds[dets].T if context.shape[0] else np.zeros((0, dets.size))
        row[pos] = rescore(row[pos], ctx)


# ------------------------------------------------------------------------------- detection
def evaluate_detection(
    gallery: GalleryPredictions,
    ground_truth: GroundTruth,
    image_ids: Sequence[str],
    *,
    det_thresh: float = 0.5,
    iou_thresh: float = 0.5,
    labeled_only: bool = False,
) -> DetectionResult:
    """Detection recall and AP over ``image_ids`` (vectorised; rules in the module docstring).

    Args:
        gallery: predictions per image id (``boxes``, ``scores``; ``embeds`` unused).
        ground_truth: image id -> (boxes [n, 4] x1y1x2y2, person ids [n], -1 = unlabelled).
        image_ids: the images evaluated.
        det_thresh: detections scoring below it are dropped.
        iou_thresh: IoU for a match.
        labeled_only: count only labelled persons (and skip images without any).
    """
    image_ids = [str(x) for x in image_ids]
    gts, keep_images = [], []
    for name in image_ids:
        if name not in ground_truth:
            raise ValueError(f"no ground truth for image {name}")
        boxes, pids = ground_truth[name]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        pids = np.asarray(pids).reshape(-1)
        if labeled_only:
            boxes = boxes[pids != -1]
            if boxes.shape[0] == 0:
                continue
        gts.append(boxes)
        keep_images.append(name)
    packed = _pack(gallery, keep_images, det_thresh, need_embeds=False)
    n = len(keep_images)
    n_gt = np.array([b.shape[0] for b in gts], dtype=np.int64)
    count_gt = int(n_gt.sum())
    n_det = np.diff(packed.ptr)
    # detections of each image by decreasing score (stable)
    order = np.lexsort(
        (np.arange(packed.scores.size), -packed.scores.astype(np.float64), packed.det_image)
    )
    det_boxes = packed.boxes[order]
    det_scores = packed.scores[order]
    gt_boxes = np.concatenate(gts) if gts else np.zeros((0, 4))
    gt_ptr = np.r_[0, np.cumsum(n_gt)]

    # all (gt, det) pairs of each image, gt-major: pair k of image i -> g = k // n_det,
    # d = k % n_det
    per_image = n_gt * n_det
    owner, _ = _expand_ranges(np.zeros(n, dtype=np.int64), per_image)
    local = np.arange(owner.size) - (np.cumsum(per_image) - per_image)[owner]
    g_idx = gt_ptr[owner] + local // np.maximum(n_det[owner], 1)
    d_idx = packed.ptr[owner] + local % np.maximum(n_det[owner], 1)
    ious = elementwise_iou(gt_boxes[g_idx], det_boxes[d_idx]).astype(np.float32)
    key = np.where(np.isnan(ious), np.inf, ious)  # np.argmax takes a NaN as the maximum

    is_match = ious >= iou_thresh
    if owner.size:
        # best ground truth of every detection (column argmax): group pairs by detection
        by_det = np.lexsort((g_idx, d_idx))
        seg = np.r_[0, np.flatnonzero(np.diff(d_idx[by_det])) + 1]
        col_best = np.zeros(owner.size, dtype=bool)
        col_best[by_det[_segment_first_argmax(key[by_det], seg)]] = True
        # best detection of every ground truth (row argmax): pairs are already grouped by gt
        seg = np.r_[0, np.flatnonzero(np.diff(g_idx)) + 1]
        row_best = np.zeros(owner.size, dtype=bool)
        row_best[_segment_first_argmax(key, seg)] = True
        is_match &= col_best & row_best
    det_tp = np.zeros(det_scores.size, dtype=bool)
    det_tp[d_idx[is_match]] = True
    count_tp = int(is_match.sum())

    if count_gt == 0:
        logger.warning(
            "detection: no ground-truth box%s; recall and AP are undefined",
            " of a labelled person" if labeled_only else "",
        )
        return DetectionResult(float("nan"), float("nan"), 0, 0, int(det_scores.size))
    recall = count_tp / count_gt
    ap = average_precision(det_tp, det_scores) * recall if count_tp else 0.0
    return DetectionResult(float(recall), float(ap), count_gt, count_tp, int(det_scores.size))
