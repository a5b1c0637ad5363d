"""Top-k matches for the demo picture: ranking, detection threshold and the protocol's TP rule."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from dcinet_d2.evaluation.galleries import SearchQuery
from dcinet_d2.vis import draw_search_results, top_matches


def _e(s):
    return [s, math.sqrt(1 - s * s)]  # unit vector whose dot with the query [1, 0] is s


def test_top_matches_by_hand(tmp_path):
    q = SearchQuery(
        0,
        "q.jpg",
        np.array([0, 0, 5, 5], dtype=np.int32),
        targets={"a.jpg": np.array([0, 0, 20, 40], dtype=np.int32)},
        gallery=None,
    )
    gallery = {
        # target 20x40: threshold min(0.5, 800 / (30 * 50)) = 0.5. d2 overlaps it with IoU
        # 19*39 / (800 + 800 - 741) = 0.863 and is more similar than d1 (exact box): d2 is the TP.
        "a.jpg": {
            "boxes": np.array([[0, 0, 20, 40], [1, 1, 21, 41]], np.float32),
            "scores": np.array([0.9, 0.8], np.float32),
            "embeds": np.array([_e(0.6), _e(0.9)], np.float32),
        },
        # d4 scores 0.3 < 0.5: dropped although it is the most similar
        "b.jpg": {
            "boxes": np.array([[50, 50, 70, 90], [0, 0, 9, 9]], np.float32),
            "scores": np.array([0.9, 0.3], np.float32),
            "embeds": np.array([_e(0.95), _e(0.99)], np.float32),
        },
        "q.jpg": {
            "boxes": np.array([[0, 0, 5, 5]], np.float32),
            "scores": np.array([1.0], np.float32),
            "embeds": np.array([_e(1.0)], np.float32),
        },  # the query's own image is never searched
    }
    m = top_matches(
        q, np.array([1.0, 0.0]), gallery, ["q.jpg", "a.jpg", "b.jpg"], det_thresh=0.5, k=3
    )
    assert [(x.image_id, round(x.similarity, 4), x.correct) for x in m] == [
        ("b.jpg", 0.95, False),
        ("a.jpg", 0.9, True),
        ("a.jpg", 0.6, False),
    ]
    for name in ("q.jpg", "a.jpg", "b.jpg"):
        Image.new("RGB", (100, 100), (128, 128, 128)).save(tmp_path / name)
    out = draw_search_results(
        [(str(tmp_path / "q.jpg"), q.box, [(str(tmp_path / x.image_id), x) for x in m])],
        str(tmp_path / "res.png"),
        tile_size=(50, 40),
    )
    im = np.asarray(Image.open(out))
    assert im.shape == (
        6 + 54 + 6,
        6 + 4 * 56,
        3,
    )  # one row, query + 3 matches, tiles 50 x (40 + 14)
    # the correct match's tile holds green box pixels, the wrong ones red
    tile2 = im[6:60, 6 + 2 * 56 : 6 + 2 * 56 + 50]
    assert np.any(np.all(tile2 == (20, 160, 40), axis=-1))
    tile1 = im[6:60, 6 + 56 : 6 + 56 + 50]
    assert np.any(np.all(tile1 == (210, 30, 30), axis=-1)) and not np.any(
        np.all(tile1 == (20, 160, 40), axis=-1)
    )
