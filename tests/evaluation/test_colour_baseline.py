"""Colour-histogram baseline: the histogram of hand-made images, and the predictions it builds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dcinet_d2.evaluation.colour_baseline import (
    HISTOGRAM_DIM,
    colour_histogram,
    ground_truth_predictions,
    histogram_predictions,
)
from dcinet_d2.evaluation.predictions import validate_predictions

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def image_4x2():
    """4 rows x 2 columns: two red rows, then two rows of (blue, green)."""
    return np.array([[RED, RED], [RED, RED], [BLUE, GREEN], [BLUE, GREEN]], dtype=np.uint8)


def expected_4x2():
    # bins: code = (r * 4 + g) * 4 + b with 0..3 per channel; red = 48, green = 12, blue = 3.
    # upper half: red 1.0; lower half (offset 64): blue 0.5, green 0.5. sqrt -> 1, sqrt(.5),
    # sqrt(.5); L2 norm sqrt(2).
    h = np.zeros(HISTOGRAM_DIM)
    h[48] = 1 / math.sqrt(2)
    h[64 + 3] = h[64 + 12] = 0.5
    return h


def test_histogram_by_hand():
    assert HISTOGRAM_DIM == 128
    np.testing.assert_allclose(
        colour_histogram(image_4x2(), (0, 0, 2, 4)), expected_4x2(), atol=1e-7
    )
    # a fractional box covers the same whole pixels
    np.testing.assert_allclose(
        colour_histogram(image_4x2(), (0.5, 0.2, 1.2, 3.9)), expected_4x2(), atol=1e-7
    )


def test_histogram_halves_and_clipping():
    # rows 2..3 only: upper half = row 2, lower half = row 3, both (blue, green)
    h = colour_histogram(image_4x2(), (0, 2, 2, 4))
    expected = np.zeros(HISTOGRAM_DIM)
    expected[[3, 12, 64 + 3, 64 + 12]] = 0.5  # sqrt(0.5) each, norm sqrt(2)
    np.testing.assert_allclose(h, expected, atol=1e-7)
    # a box outside the image keeps one pixel (the last row and column: green), all in the
    # lower half (a 1-row crop has an empty upper half)
    h = colour_histogram(image_4x2(), (10, 10, 20, 20))
    expected = np.zeros(HISTOGRAM_DIM)
    expected[64 + 12] = 1.0
    np.testing.assert_allclose(h, expected, atol=1e-7)
    with pytest.raises(ValueError, match="uint8"):
        colour_histogram(image_4x2().astype(np.float32), (0, 0, 2, 4))


def dataset():
    return [
        {
            "file_name": "a.jpg",
            "image_id": "a.jpg",
            "annotations": [{"bbox": [0, 0, 2, 4]}, {"bbox": [1, 1, 1, 3]}],  # second: no area
            "queries": [{"query_id": 0, "bbox": [0, 0, 2, 2], "person_id": 3}],
        },
        {"file_name": "b.jpg", "image_id": "b.jpg", "annotations": []},
    ]


def test_predictions_keep_boxes_and_replace_embeddings():
    read = lambda path: image_4x2()  # noqa: E731
    learned = {
        "gallery": {
            "a.jpg": {
                "boxes": np.array([[0, 0, 2, 4]], np.float32),
                "scores": np.array([0.7], np.float32),
                "embeds": np.array([[1.0] + [0.0] * 7], np.float32),
            },
            "b.jpg": {
                "boxes": np.zeros((0, 4), np.float32),
                "scores": np.zeros(0, np.float32),
                "embeds": np.zeros((0, 8), np.float32),
            },
        },
        "queries": {0: {"embed": np.array([1.0] + [0.0] * 7, np.float32)}},
    }
    hist = validate_predictions(histogram_predictions(learned, dataset(), read_image=read))
    np.testing.assert_array_equal(hist["gallery"]["a.jpg"]["boxes"], [[0, 0, 2, 4]])
    np.testing.assert_array_equal(hist["gallery"]["a.jpg"]["scores"], np.float32([0.7]))
    np.testing.assert_allclose(hist["gallery"]["a.jpg"]["embeds"][0], expected_4x2(), atol=1e-7)
    assert hist["gallery"]["b.jpg"]["embeds"].shape == (0, HISTOGRAM_DIM)
    # the query box (two red rows): red in both halves, 1/sqrt(2) each
    q = np.zeros(HISTOGRAM_DIM)
    q[[48, 64 + 48]] = 1 / math.sqrt(2)
    np.testing.assert_allclose(hist["queries"][0]["embed"], q, atol=1e-7)

    gt = validate_predictions(ground_truth_predictions(dataset(), read_image=read))
    np.testing.assert_array_equal(
        gt["gallery"]["a.jpg"]["boxes"], [[0, 0, 2, 4]]
    )  # no-area box left out
    np.testing.assert_array_equal(gt["gallery"]["a.jpg"]["scores"], [1.0])
    assert gt["gallery"]["b.jpg"]["boxes"].shape == (0, 4)
    with pytest.raises(ValueError, match="not in the dataset"):
        histogram_predictions(
            {"gallery": {"c.jpg": learned["gallery"]["a.jpg"]}, "queries": {}},
            dataset(),
            read_image=read,
        )


def test_histograms_weighted_by_score_as_the_model_weighs_its_embeddings():
    read = lambda path: image_4x2()  # noqa: E731
    entry = {
        "boxes": np.array([[0, 0, 2, 4]], np.float32),
        "scores": np.array([0.25], np.float32),
        "embeds": np.array([[0.25] + [0.0] * 7], np.float32),
    }
    learned = {
        "gallery": {"a.jpg": entry},
        "queries": {0: {"embed": np.ones(8, np.float32)}},
        "meta": {"embed_score_power": 2.0},
    }
    hist = histogram_predictions(learned, dataset(), read_image=read)  # power from the meta
    np.testing.assert_allclose(
        hist["gallery"]["a.jpg"]["embeds"][0], expected_4x2() / 16, atol=1e-7
    )  # 0.25 ** 2
    assert hist["meta"]["embed_score_power"] == 2.0
    unit = histogram_predictions(learned, dataset(), read_image=read, score_power=0.0)
    np.testing.assert_allclose(unit["gallery"]["a.jpg"]["embeds"][0], expected_4x2(), atol=1e-7)
    # the queries stay unit vectors
    np.testing.assert_allclose(np.linalg.norm(hist["queries"][0]["embed"]), 1.0, atol=1e-6)


def test_false_detection_stats_by_hand():
    from dcinet_d2.evaluation.diagnostics import box_iou_matrix, false_detection_stats

    # image a: person (0,0,10,10). Detections: (0,0,10,10) IoU 1; (5,0,15,10) IoU 50/150 = 1/3
    # (false); (0,0,10,20) IoU 100/200 = 0.5 (true: >= 0.5); (20,20,30,30) score 0.4 (dropped).
    # image b: no person, one kept detection (false).
    np.testing.assert_allclose(
        box_iou_matrix([[5, 0, 15, 10], [0, 0, 10, 20]], [[0, 0, 10, 10]]), [[1 / 3], [0.5]]
    )
    dicts = [
        {
            "image_id": "a",
            "file_name": "a",
            "annotations": [{"bbox": [0, 0, 10, 10], "person_id": 1}],
        },
        {"image_id": "b", "file_name": "b", "annotations": []},
    ]
    gallery = {
        "a": {
            "boxes": np.array(
                [[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 20], [20, 20, 30, 30]], float
            ),
            "scores": np.array([0.9, 0.8, 0.6, 0.4]),
        },
        "b": {"boxes": np.array([[1, 1, 5, 5]], float), "scores": np.array([0.7])},
    }
    stats = false_detection_stats(gallery, dicts, det_thresh=0.5)
    assert stats["num_detections"] == 4 and stats["num_false"] == 2
    assert stats["detections_per_image"] == 2.0 and stats["false_fraction"] == 0.5


def test_detection_kinds_by_hand():
    from dcinet_d2.evaluation.diagnostics import classify_detections, false_detection_stats

    persons = np.array([[0, 0, 10, 20], [10, 0, 20, 20]], float)  # P1, P2: 200 px^2 each
    boxes = np.array(
        [
            [0, 0, 10, 20],  # IoU 1 with P1: true
            [0, 0, 10, 18],  # IoU 0.9 with P1, already matched: duplicate
            [0, 0, 20, 21],  # IoU 200/420 = 0.476 with each; covers both wholly: merge
            [0, 0, 10, 8],  # IoU 80/200 = 0.4; wholly inside P1: part
            [4, 5, 14, 25],  # IoU 90/310 = 0.29 with P1; 45 % inside, covers 45 %: loose
            [50, 50, 60, 60],  # overlaps nobody: background
        ],
        float,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.58, 0.55])
    expected = ["true", "duplicate", "merge", "part", "loose", "background"]
    assert classify_detections(boxes, scores, persons) == expected
    # score order decides which of two overlapping boxes is the true one
    assert classify_detections(boxes[:2], np.array([0.5, 0.9]), persons) == ["duplicate", "true"]
    assert classify_detections(boxes[:1], scores[:1], np.zeros((0, 4))) == ["background"]
    with pytest.raises(ValueError, match="6 boxes but 5 scores"):
        classify_detections(boxes, scores[:5], persons)

    dicts = [
        {
            "image_id": "a",
            "file_name": "a",
            "annotations": [{"bbox": list(p), "person_id": k} for k, p in enumerate(persons)],
        },
        {"image_id": "b", "file_name": "b", "annotations": []},
    ]
    gallery = {
        "a": {"boxes": np.vstack([boxes, [[0, 0, 5, 5]]]), "scores": np.append(scores, 0.4)},
        "b": {"boxes": np.array([[1, 1, 5, 5]], float), "scores": np.array([0.7])},
    }
    stats = false_detection_stats(gallery, dicts, det_thresh=0.5)
    assert stats["num_detections"] == 7 and stats["num_false"] == 5  # all but true, duplicate
    assert stats["kinds"] == {
        "true": 1,
        "duplicate": 1,
        "part": 1,
        "merge": 1,
        "loose": 1,
        "background": 2,
    }


def test_bootstrap_query_means_by_hand():
    from dcinet_d2.evaluation.diagnostics import bootstrap_query_means

    # Q = 2 values {0, 1}: a resampled mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4,
    # so its standard deviation is sqrt(1/8) = 0.3536 (= population std 0.5 / sqrt(2)).
    means = bootstrap_query_means(np.array([0.0, 1.0]), samples=40000, seed=1)
    assert means.shape == (40000,)
    assert set(np.unique(means)) == {0.0, 0.5, 1.0}
    assert abs(means.std() - np.sqrt(1 / 8)) < 0.005
    assert abs(np.mean(means == 0.5) - 0.5) < 0.01
    # rows share the resampled queries: row 2 = row 1 + 0.1 differs by exactly 0.1 in every sample
    ap = np.random.default_rng(0).random((1, 70))
    both = bootstrap_query_means(np.vstack([ap, ap + 0.1]), samples=500)
    np.testing.assert_allclose(both[1] - both[0], 0.1)
    with pytest.raises(ValueError, match="Q > 0"):
        bootstrap_query_means(np.zeros((2, 0)))
