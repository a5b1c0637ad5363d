"""The vectorised protocol equals the loop reference on random problems, whatever the memory budget
(chunking), and its results do not depend on the order of the gallery."""

from __future__ import annotations

import numpy as np
import pytest

from dcinet_d2.evaluation import protocol
from dcinet_d2.evaluation.cbgm import CBGMParams
from dcinet_d2.evaluation.galleries import SearchQuery

from . import reference
from .random_problems import random_problem

KINDS = {
    "testg": dict(explicit=True),
    "whole_set": dict(explicit=False),
    "cross_camera": dict(explicit=False, cameras=3, exclude_camera=True),
    "testg_cross_camera": dict(explicit=True, cameras=2, exclude_camera=True),
}


def assert_same(a, b):
    np.testing.assert_array_equal(a.query_ids, b.query_ids)
    np.testing.assert_array_equal(a.count_gt, b.count_gt)
    np.testing.assert_array_equal(a.count_tp, b.count_tp)
    np.testing.assert_allclose(a.ap, b.ap, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(a.hits, b.hits)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("cbgm", [None, CBGMParams(4, 3)], ids=["plain", "cbgm"])
def test_vectorised_equals_loop(kind, cbgm):
    n_nontrivial = 0
    for seed in range(40):
        gallery, qemb, queries, image_ids, _, cams = random_problem(seed, **KINDS[kind])
        loop = reference.evaluate_search(
            gallery, qemb, queries, image_ids, image_cameras=cams, cbgm=cbgm
        )
        for chunk_bytes in (1, 3000, 1 << 28):  # one row per block ... everything in one block
            vec = protocol.evaluate_search(
                gallery,
                qemb,
                queries,
                image_ids,
                image_cameras=cams,
                cbgm=cbgm,
                chunk_bytes=chunk_bytes,
            )
            assert_same(vec, loop)
        n_nontrivial += int(np.sum((loop.ap > 0) & (loop.ap < 1)))
    assert n_nontrivial > 20  # the random problems exercise partial APs, not just 0 and 1


@pytest.mark.parametrize("det_thresh", [0.0, 0.5, 0.8])
def test_vectorised_equals_loop_det_thresh_and_topk(det_thresh):
    for seed in range(15):
        gallery, qemb, queries, image_ids, gt, _ = random_problem(
            100 + seed, explicit=seed % 2 == 0
        )
        kw = dict(det_thresh=det_thresh, topk=(1, 2, 3, 20))
        assert_same(
            protocol.evaluate_search(gallery, qemb, queries, image_ids, **kw),
            reference.evaluate_search(gallery, qemb, queries, image_ids, **kw),
        )
        for labeled_only in (False, True):
            a = protocol.evaluate_detection(
                gallery, gt, image_ids, det_thresh=det_thresh, labeled_only=labeled_only
            )
            b = reference.evaluate_detection(
                gallery, gt, image_ids, det_thresh=det_thresh, labeled_only=labeled_only
            )
            assert (a.count_gt, a.count_tp, a.num_det) == (b.count_gt, b.count_tp, b.num_det)
            np.testing.assert_allclose([a.recall, a.ap], [b.recall, b.ap], rtol=0, atol=1e-12)


def test_detection_with_duplicate_scores_and_ious():
    # identical detections (same box, same score): the IoU ties go to the first in score order
    rng = np.random.default_rng(7)
    for _ in range(20):
        boxes = rng.integers(0, 30, size=(6, 2)).astype(np.float32)
        boxes = np.hstack([boxes, boxes + rng.integers(1, 20, size=(6, 2))]).astype(np.float32)
        boxes = np.vstack([boxes, boxes[:3]])
        scores = rng.choice([0.6, 0.7, 0.9], size=len(boxes)).astype(np.float32)
        gt_boxes = np.vstack([boxes[:4] + rng.integers(-2, 3, size=(4, 4)), boxes[:1]]).astype(
            float
        )
        g = {
            "im": {
                "boxes": boxes,
                "scores": scores,
                "embeds": np.zeros((len(boxes), 1), np.float32),
            }
        }
        gt = {"im": (gt_boxes, np.array([1, -1, 2, -1, 3]))}
        for lo in (False, True):
            a = protocol.evaluate_detection(g, gt, ["im"], labeled_only=lo)
            b = reference.evaluate_detection(g, gt, ["im"], labeled_only=lo)
            assert (a.count_tp, a.count_gt) == (b.count_tp, b.count_gt)
            assert a.ap == pytest.approx(b.ap, abs=1e-12)


def test_gallery_order_does_not_matter():
    """Shuffle the test images, the gallery dict, each gallery list and each image's detections:
    the same numbers (and the same as the loop on the original order)."""
    for seed in range(10):
        for kind in ("testg", "whole_set", "cross_camera"):
            gallery, qemb, queries, image_ids, gt, cams = random_problem(200 + seed, **KINDS[kind])
            base = protocol.evaluate_search(gallery, qemb, queries, image_ids, image_cameras=cams)
            rng = np.random.default_rng(seed)
            ids2 = list(rng.permutation(image_ids))
            gallery2 = {}
            for name in rng.permutation(list(gallery)):
                p = gallery[name]
                perm = rng.permutation(len(p["scores"]))
                gallery2[name] = {k: v[perm] for k, v in p.items()}
            queries2 = [
                SearchQuery(
                    q.query_id,
                    q.image_id,
                    q.box,
                    dict(reversed(list(q.targets.items()))),
                    None if q.gallery is None else tuple(rng.permutation(list(q.gallery))),
                    q.exclude_camera,
                )
                for q in queries
            ]
            shuffled = protocol.evaluate_search(gallery2, qemb, queries2, ids2, image_cameras=cams)
            assert_same(shuffled, base)
            assert_same(
                reference.evaluate_search(gallery2, qemb, queries2, ids2, image_cameras=cams), base
            )
            a = protocol.evaluate_detection(gallery, gt, image_ids)
            b = protocol.evaluate_detection(gallery2, gt, ids2)
            assert (a.count_tp, a.count_gt) == (b.count_tp, b.count_gt) and a.ap == pytest.approx(
                b.ap, abs=1e-12
            )


def test_query_order_only_permutes_results():
    gallery, qemb, queries, image_ids, _, _ = random_problem(3, explicit=True)
    res = protocol.evaluate_search(gallery, qemb, queries, image_ids)
    rev = protocol.evaluate_search(gallery, qemb, queries[::-1], image_ids)
    np.testing.assert_array_equal(rev.query_ids, res.query_ids[::-1])
    np.testing.assert_allclose(rev.ap, res.ap[::-1], equal_nan=True)
    np.testing.assert_array_equal(rev.hits, res.hits[::-1])


def test_mixed_explicit_and_whole_set_queries():
    # one call with both kinds of queries gives each query what a call with its kind alone gives
    g1, qemb, q_explicit, ids, _, _ = random_problem(11, explicit=True)
    _, _, q_whole, _, _, _ = random_problem(11, explicit=False)
    mixed = [q if i % 2 else w for i, (q, w) in enumerate(zip(q_explicit, q_whole))]
    res = protocol.evaluate_search(g1, qemb, mixed, ids, chunk_bytes=5000)
    assert_same(res, reference.evaluate_search(g1, qemb, mixed, ids))


def test_bad_inputs():
    gallery, qemb, queries, image_ids, _, _ = random_problem(1, explicit=True)
    with pytest.raises(ValueError, match="no predictions for gallery image img000.jpg"):
        protocol.evaluate_search(
            {k: v for k, v in gallery.items() if k != "img000.jpg"}, qemb, queries, image_ids
        )
    with pytest.raises(ValueError, match="no embedding for query 0"):
        protocol.evaluate_search(gallery, {}, queries, image_ids)
    bad = [SearchQuery(0, queries[0].image_id, queries[0].box, {}, ("nowhere.jpg",))]
    with pytest.raises(
        ValueError, match="query 0: gallery image 'nowhere.jpg' is not a test image"
    ):
        protocol.evaluate_search(gallery, qemb, bad, image_ids)
    with pytest.raises(ValueError, match="embedding dimension 3 != gallery dimension 8"):
        protocol.evaluate_search(gallery, {0: np.ones(3)}, queries[:1], image_ids)
    cross = [SearchQuery(0, queries[0].image_id, queries[0].box, {}, None, 1)]
    with pytest.raises(ValueError, match="no image_cameras"):
        protocol.evaluate_search(gallery, qemb, cross, image_ids)
    with pytest.raises(ValueError, match="top-k"):
        protocol.evaluate_search(gallery, qemb, queries, image_ids, topk=(0,))
