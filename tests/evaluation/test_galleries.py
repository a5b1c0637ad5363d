"""Per-query galleries and targets built from dataset dicts (CUHK-SYSU TestG / full set, PRW)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from dcinet_d2.evaluation.galleries import (
    cuhk_sysu_queries,
    dataset_image_ids,
    detection_ground_truth,
    prw_queries,
    to_int_box,
)


def anno(box, pid):
    return {"bbox": [float(v) for v in box], "bbox_mode": 0, "category_id": 0, "person_id": pid}


def dicts(with_cameras=False):
    """s1 holds query 0 (person 0) and person 1; s2 holds persons 0 and 1; s3 person 0 twice
    (an annotation error: the first box is the target); s4 nobody labelled. Query 1 (person 1)
    is in s2."""
    out = [
        {
            "image_id": "s1.jpg",
            "annotations": [anno([0, 0, 10, 20], 0), anno([30, 0, 40, 20], 1)],
            "queries": [{"query_id": 0, "bbox": [0, 0, 10, 20], "person_id": 0}],
        },
        {
            "image_id": "s2.jpg",
            "annotations": [anno([5, 5, 15, 25], 0), anno([50, 0, 60, 20], 1)],
            "queries": [{"query_id": 1, "bbox": [50, 0, 60, 20], "person_id": 1}],
        },
        {"image_id": "s3.jpg", "annotations": [anno([1, 1, 11, 21], 0), anno([2, 2, 12, 22], 0)]},
        {"image_id": "s4.jpg", "annotations": [anno([0, 0, 9, 9], -1)]},
    ]
    if with_cameras:
        for d, cam in zip(out, [1, 1, 2, 3]):
            d["camera_id"] = cam
    return out


def as_lists(q):
    return {k: v.tolist() for k, v in q.targets.items()}


def test_full_set_queries(caplog):
    with caplog.at_level(logging.WARNING):
        qs = cuhk_sysu_queries(dicts(), None)
    assert [q.query_id for q in qs] == [0, 1]
    assert qs[0].image_id == "s1.jpg" and qs[0].gallery is None
    assert as_lists(qs[0]) == {
        "s2.jpg": [5, 5, 15, 25],
        "s3.jpg": [1, 1, 11, 21],
    }  # own image left out
    assert as_lists(qs[1]) == {"s1.jpg": [30, 0, 40, 20]}
    assert "person 0 annotated twice in s3.jpg" in caplog.text
    assert qs[0].box.dtype == np.int32 and qs[0].box.tolist() == [0, 0, 10, 20]


def test_testg_queries_dedup_own_image_and_errors(caplog):
    galleries = [
        {
            "query_id": 0,
            "image_id": "s1.jpg",
            "bbox": np.array([0, 0, 10, 20]),
            "gallery": [
                ("s2.jpg", np.array([5, 5, 15, 25])),
                ("s4.jpg", None),
                ("s4.jpg", None),
                ("s1.jpg", None),
                ("s3.jpg", np.array([1, 1, 11, 21])),
            ],
        },
        {
            "query_id": 1,
            "image_id": "s2.jpg",
            "bbox": np.array([50, 0, 60, 20]),
            "gallery": [("s1.jpg", [30, 0, 40, 20])],
        },
    ]
    with caplog.at_level(logging.WARNING):
        qs = cuhk_sysu_queries(dicts(), galleries)
    assert qs[0].gallery == ("s2.jpg", "s4.jpg", "s3.jpg")  # s4 once, the query's own s1 dropped
    assert as_lists(qs[0]) == {"s2.jpg": [5, 5, 15, 25], "s3.jpg": [1, 1, 11, 21]}
    assert "1 repeated gallery entries" in caplog.text

    conflicting = [
        dict(galleries[0], gallery=[("s2.jpg", None), ("s2.jpg", np.array([5, 5, 15, 25]))])
    ]
    with pytest.raises(ValueError, match="s2.jpg listed twice with different targets"):
        cuhk_sysu_queries(dicts(), conflicting)
    unknown = [dict(galleries[0], gallery=[("s9.jpg", None)])]
    with pytest.raises(ValueError, match="gallery image s9.jpg is not in the dataset"):
        cuhk_sysu_queries(dicts(), unknown)
    moved = [dict(galleries[0], image_id="s2.jpg")]
    with pytest.raises(
        ValueError, match="query 0: gallery list says image s2.jpg, dataset says s1.jpg"
    ):
        cuhk_sysu_queries(dicts(), moved)


def test_prw_queries_and_cross_camera():
    qs = prw_queries(dicts(with_cameras=True))
    assert [q.exclude_camera for q in qs] == [None, None]
    assert as_lists(qs[0]) == {"s2.jpg": [5, 5, 15, 25], "s3.jpg": [1, 1, 11, 21]}
    qs = prw_queries(dicts(with_cameras=True), cross_camera=True)
    assert [q.exclude_camera for q in qs] == [1, 1]  # s1 and s2 are camera 1
    with pytest.raises(ValueError, match="dataset dict of s1.jpg has no 'camera_id'"):
        prw_queries(dicts())


def test_dataset_helpers():
    d = dicts()
    assert dataset_image_ids(d) == ["s1.jpg", "s2.jpg", "s3.jpg", "s4.jpg"]
    with pytest.raises(ValueError, match="not unique"):
        dataset_image_ids(d + [{"image_id": "s1.jpg"}])
    gt = detection_ground_truth(d)
    assert gt["s4.jpg"][0].tolist() == [[0, 0, 9, 9]] and gt["s4.jpg"][1].tolist() == [-1]
    assert to_int_box([1.9, 2.2, 10.7, 20.1]).tolist() == [
        1,
        2,
        10,
        20,
    ]  # truncation, as int32 casts
    with pytest.raises(ValueError, match="x1 <= x2"):
        to_int_box([10, 0, 5, 5])
    with pytest.raises(ValueError, match="4 finite numbers"):
        to_int_box([1, 2, 3])
    bad = dicts()
    bad[0]["queries"][0]["person_id"] = -1
    with pytest.raises(ValueError, match="query 0 has no identity"):
        cuhk_sysu_queries(bad, None)
