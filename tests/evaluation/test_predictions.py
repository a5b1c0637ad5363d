"""The predictions file: round trip through torch.save / torch.load(weights_only=True), and a
precise error for each kind of bad content."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from dcinet_d2.evaluation.predictions import (
    PredictionsFormatError,
    check_against_dataset,
    load_predictions,
    save_predictions,
    score_weighted,
    validate_predictions,
)


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def good(d=4):
    rng = np.random.default_rng(0)
    gallery = {
        "s1.jpg": {
            "boxes": np.array([[0, 0, 10, 20], [5, 5, 30, 40]], np.float32),
            "scores": np.array([0.9, 0.6], np.float32),
            "embeds": unit(rng, 2, d),
        },
        "s2.jpg": {
            "boxes": np.zeros((0, 4), np.float32),
            "scores": np.zeros(0, np.float32),
            "embeds": np.zeros((0, d), np.float32),
        },
    }
    queries = {0: {"embed": unit(rng, 1, d)[0]}, 1: {"embed": unit(rng, 1, d)[0]}}
    return gallery, queries


def test_round_trip(tmp_path):
    gallery, queries = good()
    path = str(tmp_path / "sub" / "preds.pth")
    save_predictions(path, gallery, queries, meta={"dataset": "x", "det_thresh": 0.5})
    raw = torch.load(path, weights_only=True)  # the documented way to read it
    assert set(raw) == {"gallery", "queries", "meta"}
    assert isinstance(raw["gallery"]["s1.jpg"]["boxes"], torch.Tensor)
    assert raw["gallery"]["s1.jpg"]["boxes"].dtype == torch.float32
    loaded = load_predictions(path)
    for name in gallery:
        for key in ("boxes", "scores", "embeds"):
            np.testing.assert_array_equal(loaded["gallery"][name][key], gallery[name][key])
    np.testing.assert_array_equal(loaded["queries"][1]["embed"], queries[1]["embed"])
    assert loaded["meta"] == {"dataset": "x", "det_thresh": 0.5}


def test_tensors_and_float64_are_accepted():
    gallery, queries = good()
    gallery["s1.jpg"] = {
        k: torch.from_numpy(v.astype(np.float64)) for k, v in gallery["s1.jpg"].items()
    }
    out = validate_predictions({"gallery": gallery, "queries": queries})
    assert out["gallery"]["s1.jpg"]["embeds"].dtype == np.float32


def mutate(fn):
    gallery, queries = good()
    preds = {"gallery": gallery, "queries": queries}
    fn(preds)
    return preds


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p.pop("queries"), "predictions have no 'queries' entry"),
        (lambda p: p.update(extra=1), "unknown entries ['extra']"),
        (lambda p: p["gallery"]["s1.jpg"].pop("scores"), "gallery['s1.jpg'] has no 'scores'"),
        (
            lambda p: p["gallery"]["s1.jpg"].update(boxes=np.zeros((2, 5), np.float32)),
            "gallery['s1.jpg']['boxes']: expected shape [2, 4], got [2, 5]",
        ),
        (
            lambda p: p["gallery"]["s1.jpg"].update(embeds=np.zeros((3, 4), np.float32)),
            "gallery['s1.jpg']['embeds']: expected shape [2, D], got [3, 4]",
        ),
        (
            lambda p: p["gallery"]["s1.jpg"].update(scores=np.zeros((2, 1), np.float32)),
            "gallery['s1.jpg']['scores']: expected shape [n], got [2, 1]",
        ),
        (
            lambda p: p["gallery"]["s1.jpg"].update(embeds=2 * p["gallery"]["s1.jpg"]["embeds"]),
            "gallery['s1.jpg']['embeds']: embeddings must be L2-normalised (|norm - 1| <= 0.001); "
            "row 0 has norm 2",
        ),
        (
            lambda p: p["queries"][1].update(embed=np.zeros(4, np.float32)),
            "queries[1]['embed']: embeddings must be L2-normalised",
        ),
        (
            lambda p: p["queries"][1].update(embed=np.ones(3, np.float32) / np.sqrt(3)),
            "embedding dimensions differ: D=3 in queries[1], D=4 in gallery['s1.jpg']",
        ),
        (
            lambda p: p["gallery"]["s1.jpg"].update(
                boxes=np.array([[10, 0, 0, 5], [0, 0, 1, 1]], np.float32)
            ),
            "x2 >= x1",
        ),
        (
            lambda p: p["gallery"]["s1.jpg"].update(scores=np.array([np.nan, 1], np.float32)),
            "gallery['s1.jpg']['scores']: non-finite values",
        ),
        (
            lambda p: p["gallery"]["s1.jpg"].update(scores=np.array([1, 0])),
            "expected a floating-point array",
        ),
        (
            lambda p: p["gallery"]["s1.jpg"].update(scores=[0.9, 0.6]),
            "expected a tensor or numpy array, got list",
        ),
        (lambda p: p["queries"].update({"2": p["queries"][0]}), "query ids must be ints, got str"),
        (
            lambda p: p["gallery"].update({3: p["gallery"]["s2.jpg"]}),
            "image ids must be file names (str), got int",
        ),
        (
            lambda p: p.update(meta={"thresholds": [0.5, np.float32(0.7)]}),
            "meta['thresholds'][1]: expected str, int, float, bool, None, list or dict, "
            "got float32",
        ),
        (
            lambda p: p.update(meta={"embed_score_power": -1.0}),
            "meta['embed_score_power'] must be a number >= 0, got -1.0",
        ),
        # unit gallery embeddings while the meta says they are weighted by score ** 1
        (
            lambda p: p.update(meta={"embed_score_power": 1.0}),
            "gallery['s1.jpg']['embeds']: embeddings must be unit vectors times score ** 1 (meta "
            "embed_score_power; |norm - score ** 1| <= 0.001); row 0 has norm 1, expected 0.9",
        ),
    ],
)
def test_bad_content(change, message):
    with pytest.raises(PredictionsFormatError, match=re.escape(message)):
        validate_predictions(mutate(change))


def test_score_weighted_gallery_embeddings_are_accepted():
    """meta embed_score_power p: gallery norms score ** p (0.9 ** 2, 0.6 ** 2); queries unit."""
    gallery, queries = good()
    entry = gallery["s1.jpg"]
    entry["embeds"] = entry["embeds"] * (entry["scores"] ** 2)[:, None]
    out = validate_predictions(
        {"gallery": gallery, "queries": queries, "meta": {"embed_score_power": 2.0}}
    )
    np.testing.assert_allclose(
        np.linalg.norm(out["gallery"]["s1.jpg"]["embeds"], axis=1), [0.81, 0.36], rtol=1e-6
    )


def test_score_weighted_by_hand():
    unit = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    scores = np.array([0.5, 0.25], np.float32)
    np.testing.assert_array_equal(score_weighted(unit, scores, 2.0), [[0.25, 0.0], [0.0, 0.0625]])
    np.testing.assert_array_equal(score_weighted(unit, scores, 0.0), unit)


def test_against_dataset():
    preds = validate_predictions(mutate(lambda p: None))
    check_against_dataset(preds, ["s1.jpg", "s2.jpg"], [0, 1])
    with pytest.raises(
        PredictionsFormatError, match=re.escape("1 unknown image ids in 'gallery': 's2.jpg'")
    ):
        check_against_dataset(preds, ["s1.jpg"], [0, 1])
    missing = "'gallery' misses 1 of the dataset's 3 images: 's3.jpg'"
    with pytest.raises(PredictionsFormatError, match=re.escape(missing)):
        check_against_dataset(preds, ["s1.jpg", "s2.jpg", "s3.jpg"], [0, 1])
    with pytest.raises(
        PredictionsFormatError,
        match=re.escape("'queries' misses 2 of the dataset's 4 queries: 2, 3"),
    ):
        check_against_dataset(preds, ["s1.jpg", "s2.jpg"], [0, 1, 2, 3])
    with pytest.raises(
        PredictionsFormatError, match=re.escape("1 unknown query ids in 'queries': 1")
    ):
        check_against_dataset(preds, ["s1.jpg", "s2.jpg"], [0])


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="predictions file not found"):
        load_predictions(str(tmp_path / "none.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(PredictionsFormatError, match="not loadable with torch.load"):
        load_predictions(str(junk))
    listed = tmp_path / "list.pth"
    torch.save([1, 2], str(listed))
    with pytest.raises(
        PredictionsFormatError, match=re.escape(f"{listed}: predictions must be a dict, got list")
    ):
        load_predictions(str(listed))
