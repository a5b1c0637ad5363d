"""The protocol on small cases worked out by hand; every case runs through both implementations
(vectorised ``protocol`` and loop ``reference``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dcinet_d2.evaluation import protocol
from dcinet_d2.evaluation.cbgm import CBGMParams, context_indices, rescore, top_k1_images
from dcinet_d2.evaluation.galleries import SearchQuery

from . import reference

IMPLS = [protocol, reference]


def emb(sim: float, dim: int = 3) -> np.ndarray:
    """A unit vector whose dot product with e1 = [1, 0, ...] is exactly float32(sim)."""
    v = np.zeros(dim, dtype=np.float64)
    v[0] = sim
    v[1] = math.sqrt(1.0 - sim * sim)
    return v.astype(np.float32)


def image(dets):
    """dets: [(box, score, embedding)] -> a gallery entry."""
    if not dets:
        return {
            "boxes": np.zeros((0, 4), np.float32),
            "scores": np.zeros(0, np.float32),
            "embeds": np.zeros((0, 3), np.float32),
        }
    return {
        "boxes": np.array([d[0] for d in dets], dtype=np.float32),
        "scores": np.array([d[1] for d in dets], dtype=np.float32),
        "embeds": np.stack([d[2] for d in dets]),
    }


E1 = np.array([1, 0, 0], dtype=np.float32)
FAR = [200, 200, 240, 300]


# ----------------------------------------------------------------------------- average precision
@pytest.mark.parametrize("ap_fn", [protocol.average_precision, reference.average_precision])
def test_average_precision_by_hand(ap_fn):
    # ranks 1..4 = T F T F: (R1-R0) P1 + (R3-R2) P3 = 1/2 * 1 + 1/2 * 2/3 = 5/6
    assert ap_fn([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]) == pytest.approx(5 / 6, abs=1e-15)
    # a tie T/F at 0.9 is one threshold: P = 1/2 at R = 1/2; then 0.5: P = 2/3 at R = 1
    # -> 1/2 * 1/2 + 1/2 * 2/3 = 7/12 (not 1/2 * 1 + 1/2 * 2/3 as an order-dependent count gives)
    assert ap_fn([0, 1, 1], [0.9, 0.9, 0.5]) == pytest.approx(7 / 12, abs=1e-15)
    assert ap_fn([1, 0, 1], [0.9, 0.9, 0.5]) == pytest.approx(7 / 12, abs=1e-15)
    # input order does not matter
    assert ap_fn([0, 1, 0, 1], [0.6, 0.7, 0.8, 0.9]) == pytest.approx(
        1 / 2 * 1 + 1 / 2 * 2 / 3, abs=1e-15
    )
    assert ap_fn([0, 0], [0.3, 0.2]) == 0.0  # no positive


def test_small_box_iou_threshold():
    # w=10, h=20: 200 / (20 * 30) = 1/3; w=100, h=200: 20000 / (110 * 210) = 0.866 -> 0.5;
    # w=0: 0. The precedence slip w*h*1.0/(w+10)*(h+10) would give 200/20*30 = 300 -> 0.5.
    got = protocol.small_box_iou_threshold(
        np.array([[5, 5, 15, 25], [0, 0, 100, 200], [3, 3, 3, 40]])
    )
    np.testing.assert_allclose(got, [1 / 3, 0.5, 0.0], rtol=0, atol=1e-15)


# ----------------------------------------------------------------------------- search
def cuhk_like_case():
    """One query in q.jpg; gallery list (a, b, b again, c, d, q); targets in a, c and d.

    Similarities (query embedding e1) and what they are:
      a1 0.90 box far from the target            -> negative
      a2 0.60 box == target A                    -> true positive of a
      b1 0.80                                    -> negative
      b2 0.30                                    -> negative
      b3 0.95 score 0.4 < det_thresh             -> dropped
      c2 0.75 IoU 0.4 with the 10x20 target C    -> true positive of c: 0.4 >= 1/3 (small-box rule)
                                                   and it is more similar than c1
      c1 0.50 box == target C (IoU 1)            -> negative: only the most similar match counts
      d   no detection at all                    -> ground truth never found
      q1 0.99 in the query's own image           -> not searched
    Ranking: a1 .90 N, b1 .80 N, c2 .75 P, a2 .60 P, c1 .50 N, b2 .30 N
    AP = 1/2 * 1/3 + 1/2 * 2/4 = 5/12; times count_tp / count_gt = 2/3 -> 5/18.
    top-1 0, top-5 1 (first hit at rank 3), top-10 1.
    """
    target_a = np.array([10, 10, 50, 110], dtype=np.int32)
    target_c = np.array([0, 0, 10, 20], dtype=np.int32)
    # c2 = [0, 0, 10, 8]: inter 80, union 200 + 80 - 80 = 200 -> IoU 0.4
    gallery = {
        "a.jpg": image([(FAR, 0.9, emb(0.90)), (target_a, 0.8, emb(0.60))]),
        "b.jpg": image([(FAR, 0.7, emb(0.80)), (FAR, 0.6, emb(0.30)), (FAR, 0.4, emb(0.95))]),
        "c.jpg": image([(target_c, 0.9, emb(0.50)), ([0, 0, 10, 8], 0.55, emb(0.75))]),
        "d.jpg": image([]),
        "q.jpg": image([([0, 0, 30, 60], 0.99, emb(0.99))]),
    }
    query = SearchQuery(
        0,
        "q.jpg",
        np.array([0, 0, 30, 60], np.int32),
        {"a.jpg": target_a, "c.jpg": target_c, "d.jpg": np.array([0, 0, 40, 80], np.int32)},
        ("a.jpg", "b.jpg", "b.jpg", "c.jpg", "d.jpg", "q.jpg"),
    )
    return gallery, {0: E1}, [query], list(gallery)


@pytest.mark.parametrize("impl", IMPLS)
def test_search_by_hand(impl):
    gallery, qemb, queries, image_ids = cuhk_like_case()
    res = impl.evaluate_search(gallery, qemb, queries, image_ids)
    assert res.count_gt.tolist() == [3] and res.count_tp.tolist() == [2]
    assert res.ap[0] == pytest.approx(5 / 18, abs=1e-12)
    assert res.hits.tolist() == [[False, True, True]]
    assert res.metrics() == pytest.approx(
        {"mAP": 100 * 5 / 18, "top1": 0.0, "top5": 100.0, "top10": 100.0}
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_search_small_box_rule_decides(impl):
    # Same case with target C of 100x200: the threshold is 0.5, c2 (IoU 0.4 with a 10x20 box, and
    # with c2 scaled to [0, 0, 100, 80] IoU 0.4 again) no longer matches and c1 (0.50) becomes the
    # true positive. Ranking: a1 .9 N, b1 .8 N, c2 .75 N, a2 .6 P, c1 .5 P
    # AP = 1/2 * 1/4 + 1/2 * 2/5 = 13/40; x 2/3 -> 13/60; top-5 1 (rank 4), top-1 0.
    gallery, qemb, queries, image_ids = cuhk_like_case()
    big_c = np.array([0, 0, 100, 200], np.int32)
    gallery["c.jpg"] = image([(big_c, 0.9, emb(0.50)), ([0, 0, 100, 80], 0.55, emb(0.75))])
    q = queries[0]
    targets = dict(q.targets)
    targets["c.jpg"] = big_c
    queries = [SearchQuery(q.query_id, q.image_id, q.box, targets, q.gallery)]
    res = impl.evaluate_search(gallery, qemb, queries, image_ids)
    assert res.ap[0] == pytest.approx(13 / 60, abs=1e-12)
    assert res.hits.tolist() == [[False, True, True]]


@pytest.mark.parametrize("impl", IMPLS)
def test_search_det_thresh(impl):
    # det_thresh 0.85 keeps a1 (0.9), c1 (0.9), q1: a1 .9 N, c1 .5 P (IoU 1, the only match left)
    # count_gt 3, count_tp 1: AP = 1 * 1/2 -> x 1/3 = 1/6; top-1 0, top-5 1
    gallery, qemb, queries, image_ids = cuhk_like_case()
    res = impl.evaluate_search(gallery, qemb, queries, image_ids, det_thresh=0.85)
    assert res.count_tp.tolist() == [1]
    assert res.ap[0] == pytest.approx(1 / 6, abs=1e-12)
    assert res.hits.tolist() == [[False, True, True]]


@pytest.mark.parametrize("impl", IMPLS)
def test_search_ties_go_against_the_query(impl):
    # Target image t holds the true positive at similarity 0.8; image n holds a negative with the
    # same embedding, hence exactly the same similarity. One threshold with 1 TP of 2: AP = 1/2.
    # Ties are broken against the query: the true positive ranks 2nd -> top-1 0, top-5 1.
    gallery = {
        "t.jpg": image([([0, 0, 50, 100], 0.9, emb(0.8))]),
        "n.jpg": image([(FAR, 0.9, emb(0.8))]),
        "q.jpg": image([]),
    }
    q = SearchQuery(
        0, "q.jpg", np.array([0, 0, 5, 5], np.int32), {"t.jpg": np.array([0, 0, 50, 100], np.int32)}
    )
    res = impl.evaluate_search(gallery, {0: E1}, [q], list(gallery))
    assert res.ap[0] == pytest.approx(0.5, abs=1e-12)
    assert res.hits.tolist() == [[False, True, True]]


@pytest.mark.parametrize("impl", IMPLS)
def test_search_cross_camera(impl):
    """Whole-set gallery (gallery=None) with and without the query's camera.

    q.jpg (camera 1): query; q1 .95 is in its own image, never searched.
    e.jpg (camera 1): e1 .9 on the target; f.jpg (camera 2): f1 .6 on the target;
    g.jpg (camera 2): g1 .7, no target.
    All frames: e1 .9 P, g1 .7 N, f1 .6 P -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6, recall 2/2; top-1 1.
    Cross-camera (e.jpg not searched, its target not counted): g1 .7 N, f1 .6 P -> AP 1/2, recall
    1/1; top-1 0, top-5 1.
    """
    box = np.array([0, 0, 40, 90], np.int32)
    gallery = {
        "q.jpg": image([(FAR, 0.9, emb(0.95))]),
        "e.jpg": image([(box, 0.9, emb(0.9))]),
        "f.jpg": image([(box, 0.9, emb(0.6))]),
        "g.jpg": image([(box, 0.9, emb(0.7))]),
    }
    cams = {"q.jpg": 1, "e.jpg": 1, "f.jpg": 2, "g.jpg": 2}
    targets = {"e.jpg": box, "f.jpg": box}
    all_frames = SearchQuery(0, "q.jpg", box, targets)
    cross = SearchQuery(0, "q.jpg", box, targets, None, exclude_camera=1)
    res = impl.evaluate_search(gallery, {0: E1}, [all_frames], list(gallery), image_cameras=cams)
    assert res.ap[0] == pytest.approx(5 / 6, abs=1e-12) and res.count_gt[0] == 2
    assert res.hits.tolist() == [[True, True, True]]
    res = impl.evaluate_search(gallery, {0: E1}, [cross], list(gallery), image_cameras=cams)
    assert res.ap[0] == pytest.approx(0.5, abs=1e-12) and res.count_gt[0] == 1
    assert res.hits.tolist() == [[False, True, True]]


@pytest.mark.parametrize("impl", IMPLS)
def test_query_without_ground_truth_is_left_out(impl):
    # query 1's only target is in its own camera: no ground truth in its cross-camera gallery, so
    # it is skipped; the means are over query 0 alone (AP 1: its target f1 is the only detection).
    box = np.array([0, 0, 40, 90], np.int32)
    gallery = {"q.jpg": image([]), "e.jpg": image([]), "f.jpg": image([(box, 0.9, emb(0.6))])}
    cams = {"q.jpg": 1, "e.jpg": 1, "f.jpg": 2}
    queries = [
        SearchQuery(0, "q.jpg", box, {"f.jpg": box}, None, 1),
        SearchQuery(1, "q.jpg", box, {"e.jpg": box}, None, 1),
    ]
    res = impl.evaluate_search(gallery, {0: E1, 1: E1}, queries, list(gallery), image_cameras=cams)
    assert res.count_gt.tolist() == [1, 0] and res.num_skipped == 1
    assert res.ap[0] == pytest.approx(1.0) and math.isnan(res.ap[1])
    assert res.metrics() == pytest.approx(
        {"mAP": 100.0, "top1": 100.0, "top5": 100.0, "top10": 100.0}
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_area_target(impl):
    # A zero-width target (x1 == x2): threshold min(0.5, 0) = 0 and IoU = 0 / det area = 0 >= 0, so
    # the most similar detection of the image is the true positive, as in the reference scripts.
    gallery = {
        "t.jpg": image([(FAR, 0.9, emb(0.3)), ([0, 0, 5, 5], 0.9, emb(0.2))]),
        "q.jpg": image([]),
    }
    q = SearchQuery(
        0, "q.jpg", np.array([0, 0, 5, 5], np.int32), {"t.jpg": np.array([7, 7, 7, 30], np.int32)}
    )
    res = impl.evaluate_search(gallery, {0: E1}, [q], list(gallery))
    assert res.count_tp[0] == 1 and res.hits[0, 0]  # the 0.3 detection, far from the target


# ----------------------------------------------------------------------------- CBGM
def cbgm_case():
    """Query q = e1 in q.jpg with one context person of embedding c = e2.

    q.jpg detections: d_q (score .99, on the query box: suppressed by NMS), d_c (score .9, the
    context person, embedding e2), d_low (score .3: below det_thresh).
    g.jpg: g1 (q.g1 = .6, c.g1 = .7), g2 (q.g2 = .5, c.g2 = 0) on the target.
    h.jpg: h1 (q.h1 = .65, c.h1 = 0).
    Without CBGM: h1 .65 N, g1 .6 N, g2 .5 P -> AP 1/3, top-1 0.
    CBGM, k2 = 2 (query + d_c): in g.jpg the best matching is q-g2 + c-g1 = 1.2 (vs q-g1 + c-g2 =
    0.6); g2, matched to the query, takes the largest matched weight 0.7. h.jpg (one detection):
    the matching keeps q-h1 (0.65 > 0), unchanged. Ranking g2 .7 P, h1 .65 N, g1 .6 N -> AP 1,
    top-1 1.
    """
    s15 = math.sqrt(0.15)
    g1 = np.array([0.6, 0.7, s15, 0.0], np.float32)
    g2 = np.array([0.5, 0.0, math.sqrt(0.75), 0.0], np.float32)
    h1 = np.array([0.65, 0.0, math.sqrt(1 - 0.65**2), 0.0], np.float32)
    e = np.eye(4, dtype=np.float32)
    qbox = np.array([0, 0, 40, 100], np.int32)
    target = np.array([100, 0, 140, 100], np.int32)

    def entry(rows):
        return {
            "boxes": np.array([r[0] for r in rows], np.float32),
            "scores": np.array([r[1] for r in rows], np.float32),
            "embeds": np.stack([r[2] for r in rows]),
        }

    gallery = {
        "q.jpg": entry(
            [
                ([1, 0, 41, 100], 0.99, e[3]),
                ([200, 0, 240, 100], 0.9, e[1]),
                ([300, 0, 340, 100], 0.3, e[2]),
            ]
        ),
        "g.jpg": entry([([0, 0, 40, 100], 0.9, g1), (target, 0.9, g2)]),
        "h.jpg": entry([([0, 0, 40, 100], 0.9, h1)]),
    }
    q = SearchQuery(0, "q.jpg", qbox, {"g.jpg": target}, ("g.jpg", "h.jpg"))
    return gallery, {0: e[0]}, [q], list(gallery)


@pytest.mark.parametrize("impl", IMPLS)
def test_cbgm_by_hand(impl):
    gallery, qemb, queries, image_ids = cbgm_case()
    off = impl.evaluate_search(gallery, qemb, queries, image_ids)
    assert off.ap[0] == pytest.approx(1 / 3, abs=1e-7) and not off.hits[0, 0]
    on = impl.evaluate_search(gallery, qemb, queries, image_ids, cbgm=CBGMParams(k1=10, k2=2))
    assert on.ap[0] == pytest.approx(1.0) and on.hits[0].all()
    # k1 = 1: only the image of the single most similar detection (h1) is re-scored -> as off
    k1 = impl.evaluate_search(gallery, qemb, queries, image_ids, cbgm=CBGMParams(k1=1, k2=2))
    assert k1.ap[0] == pytest.approx(1 / 3, abs=1e-7) and not k1.hits[0, 0]
    # k2 = 1: the query box alone; a one-row matching never changes a similarity -> as off
    k2 = impl.evaluate_search(gallery, qemb, queries, image_ids, cbgm=CBGMParams(k1=10, k2=1))
    assert k2.ap[0] == pytest.approx(1 / 3, abs=1e-7)


def test_cbgm_context_uses_nms():
    # d_q [1,0,41,100] overlaps the query box [0,0,40,100] by IoU 3900 / 4100 = .95 > .5 and is
    # skipped although it scores highest; d_c (.9) and then d_low (.3: the caller drops it with the
    # detection threshold, here it is passed on purpose) do not overlap anything kept.
    gallery, _, queries, _ = cbgm_case()
    p = gallery["q.jpg"]
    assert context_indices(queries[0].box, p["boxes"], p["scores"], 2).tolist() == [1]
    assert context_indices(queries[0].box, p["boxes"], p["scores"], 3).tolist() == [1, 2]
    assert context_indices(queries[0].box, p["boxes"], p["scores"], 1).tolist() == []


def test_cbgm_rescore_and_top_k1():
    # weights [[.6, .5], [.7, 0]]: matchings .6 + 0 = .6 or .5 + .7 = 1.2 -> query takes column 1,
    # whose similarity becomes max(.5, .7) = .7
    np.testing.assert_allclose(rescore(np.array([0.6, 0.5]), np.array([[0.7, 0.0]])), [0.6, 0.7])
    # one gallery detection, two persons: the context person wins it (.9 > .2): nothing changes
    np.testing.assert_allclose(rescore(np.array([0.2]), np.array([[0.9]])), [0.2])
    # images of the 3 most similar detections: .9 (img 2), .8 (img 0), .8 (img 1, tie -> order)
    sims = np.array([0.8, 0.1, 0.8, 0.9, 0.8])
    assert top_k1_images(sims, np.array([0, 0, 1, 2, 3]), 3).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="k1 >= 1"):
        CBGMParams(0, 3)


# ----------------------------------------------------------------------------- detection
def detection_case():
    """Three images (gt boxes with person ids, detections with scores):

    im1: G1 [0,0,10,10] (id 3), G2 [20,0,30,10] (unlabelled);
         D1 = G1, .9 (IoU 1: match); D2 [0,0,10,5], .8 (IoU .5 with G1, but G1's best is D1: none);
         D3 = G2, .4 (below det_thresh); D4 far, .7 (false positive).
    im2: G3 [0,0,10,10] (unlabelled); D6 = G3, .95 (match).
    im3: G4 [0,0,10,10] (id 5); D5 = G4, .6 (match).
    All persons: 4 gt, 3 matches -> recall 3/4; D6 .95 T, D1 .9 T, D2 .8 F, D4 .7 F, D5 .6 T:
    AP = 1/3 (1 + 1 + 3/5) = 13/15, x 3/4 = 13/20.
    Labelled only: im2 skipped entirely (D6 too); gts G1, G4; D1 .9 T, D2 .8 F, D4 .7 F, D5 .6 T:
    recall 1, AP = 1/2 (1 + 2/4) = 3/4.
    """
    g = {
        "im1": {
            "boxes": np.array(
                [[0, 0, 10, 10], [0, 0, 10, 5], [20, 0, 30, 10], [50, 50, 60, 60]], np.float32
            ),
            "scores": np.array([0.9, 0.8, 0.4, 0.7], np.float32),
        },
        "im2": {
            "boxes": np.array([[0, 0, 10, 10]], np.float32),
            "scores": np.array([0.95], np.float32),
        },
        "im3": {
            "boxes": np.array([[0, 0, 10, 10]], np.float32),
            "scores": np.array([0.6], np.float32),
        },
    }
    for v in g.values():
        v["embeds"] = np.zeros((len(v["scores"]), 2), np.float32)
    gt = {
        "im1": (np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float), np.array([3, -1])),
        "im2": (np.array([[0, 0, 10, 10]], float), np.array([-1])),
        "im3": (np.array([[0, 0, 10, 10]], float), np.array([5])),
    }
    return g, gt, ["im1", "im2", "im3"]


@pytest.mark.parametrize("impl", IMPLS)
def test_detection_by_hand(impl):
    g, gt, ids = detection_case()
    res = impl.evaluate_detection(g, gt, ids)
    assert (res.count_gt, res.count_tp) == (4, 3)
    assert res.recall == pytest.approx(0.75) and res.ap == pytest.approx(13 / 20, abs=1e-12)
    res = impl.evaluate_detection(g, gt, ids, labeled_only=True)
    assert (res.count_gt, res.count_tp) == (2, 2)
    assert res.recall == pytest.approx(1.0) and res.ap == pytest.approx(3 / 4, abs=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_detection_mutual_best(impl):
    # Ga [0,0,10,10], Gb [4,0,14,10]; Dx [3,0,13,10] (.9): IoU 70/130 = .538 with Ga, 90/110 = .818
    # with Gb; Dy = Gb (.8): IoU 1 with Gb, 60/140 = .43 with Ga. Dx's best gt is Gb, whose best
    # detection is Dy: Dx matches nothing (no fall-back to Ga, as in the reference). 1 match of 2:
    # recall 1/2; Dx .9 F, Dy .8 T: AP = 1 * 1/2 = 1/2, x 1/2 = 1/4.
    g = {
        "im": {
            "boxes": np.array([[3, 0, 13, 10], [4, 0, 14, 10]], np.float32),
            "scores": np.array([0.9, 0.8], np.float32),
            "embeds": np.zeros((2, 1), np.float32),
        }
    }
    gt = {"im": (np.array([[0, 0, 10, 10], [4, 0, 14, 10]], float), np.array([-1, -1]))}
    res = impl.evaluate_detection(g, gt, ["im"])
    assert res.count_tp == 1 and res.recall == pytest.approx(0.5) and res.ap == pytest.approx(0.25)


@pytest.mark.parametrize("impl", IMPLS)
def test_detection_image_without_ground_truth(impl):
    # ours: detections in an image without any person are false positives.
    # im: G [0,0,10,10], D = G (.6); empty: D' (.9). D' .9 F, D .6 T: AP 1/2, recall 1 -> 1/2.
    g = {
        "im": {
            "boxes": np.array([[0, 0, 10, 10]], np.float32),
            "scores": np.array([0.6], np.float32),
            "embeds": np.zeros((1, 1), np.float32),
        },
        "empty": {
            "boxes": np.array([[0, 0, 10, 10]], np.float32),
            "scores": np.array([0.9], np.float32),
            "embeds": np.zeros((1, 1), np.float32),
        },
    }
    gt = {
        "im": (np.array([[0, 0, 10, 10]], float), np.array([1])),
        "empty": (np.zeros((0, 4)), np.zeros(0, int)),
    }
    res = impl.evaluate_detection(g, gt, ["im", "empty"])
    assert res.recall == pytest.approx(1.0) and res.ap == pytest.approx(0.5)
