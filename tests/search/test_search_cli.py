"""``python -m dcinet_d2.search``: index a folder and a video, re-run, append, query.

The model is the quick DC-I-Net config with random weights (complete, so it loads); detections are
kept from score 0 so that every picture holds some. Truths checked against independent
computations with the predictor itself: what the index stores per unit, and the query's
similarities.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from dcinet_d2.search.cli import main
from dcinet_d2.search.index import GalleryIndex
from dcinet_d2.search.predictor import PersonSearchPredictor, inference_config
from dcinet_d2.search.sources import read_image_bgr

from ..reliability.common import captured_log


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("gallery")
    rng = np.random.default_rng(0)
    (root / "photos").mkdir()
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(
            root / "photos" / f"p{k}.png"
        )
    writer = cv2.VideoWriter(
        str(root / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 4.0, (128, 96)
    )
    for _ in range(4):
        writer.write(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    writer.release()
    return root


def _index(weights, out, *paths, extra=()):
    return main(
        [
            "index",
            "--weights",
            weights,
            "--gallery",
            *map(str, paths),
            "--out",
            str(out),
            "--det-thresh",
            "0",
            "--batch-size",
            "1",
            "--fps",
            "2",
            *extra,
        ]
    )


def _query(index, query, *extra, out_dir=None):
    """``query --index INDEX --query QUERY EXTRA...``, then ``--out OUT_DIR`` when given."""
    args = ["query", "--index", str(index), "--query", query, *extra]
    return main(args if out_dir is None else [*args, "--out", str(out_dir)])


def test_index_rerun_append_and_query(complete_checkpoint, gallery, tmp_path, capsys, monkeypatch):
    out = tmp_path / "index"
    assert _index(complete_checkpoint, out, gallery / "photos") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    predictor = PersonSearchPredictor(inference_config(complete_checkpoint))
    expected = {}
    for k in range(3):
        path = str(gallery / "photos" / f"p{k}.png")
        inst = predictor(read_image_bgr(path))["instances"]
        expected[path] = len(inst)
    assert summary["units_total"] == 3 and summary["detections_total"] == sum(expected.values())

    # a second run adds nothing; a video appended adds its frames sampled at 2 of 4 fps
    assert _index(complete_checkpoint, out, gallery / "photos") == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["detections_added"] == 0
    assert _index(complete_checkpoint, out, gallery / "photos", gallery / "clip.avi") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["units_total"] == 3 + 2
    index = GalleryIndex.open(str(out))
    assert {k for k in index.done_units() if k[1] >= 0} == {
        (str(gallery / "clip.avi"), 0),
        (str(gallery / "clip.avi"), 2),
    }
    arrays = index.load_arrays()

    # query with a box: the best match per unit, similarities = dot products with the stored rows
    query = str(gallery / "photos" / "p1.png")
    res_dir = tmp_path / "res"
    assert _query(out, query, "--box", "10,10,60,80", "--topk", "4", out_dir=res_dir) == 0
    with open(res_dir / "results.json") as f:
        result = json.load(f)
    assert os.path.isfile(res_dir / "results.jpg")
    q = predictor.embed_boxes(read_image_bgr(query), [[10, 10, 60, 80]])[0]
    sims = arrays["embeds"] @ q
    units = list(zip(arrays["source"].tolist(), arrays["frame"].tolist()))
    best = {}
    for i, u in enumerate(units):
        if u not in best or sims[i] > sims[best[u]]:
            best[u] = i
    ranked = sorted(best.values(), key=lambda i: -sims[i])[:4]
    assert [m["id"] for m in result["matches"]] == ranked
    np.testing.assert_allclose(
        [m["similarity"] for m in result["matches"]], sims[ranked], atol=1e-5
    )

    # the query's own image, when it is in the gallery, comes first (same model, same picture)
    assert _query(out, query, "--person", "0", "--topk", "2", out_dir=res_dir) == 0
    with open(res_dir / "results.json") as f:
        first = json.load(f)["matches"][0]
    assert first["source"] == query and abs(first["similarity"] - 1.0) < 1e-4
    assert (
        _query(out, query, "--person", "0", "--topk", "3", "--exclude-query-image", out_dir=res_dir)
        == 0
    )
    with open(res_dir / "results.json") as f:
        matches = json.load(f)["matches"]
    assert len(matches) == 3 and query not in [m["source"] for m in matches]

    # one run over everything gives the same detections as the run, the re-run and the append
    # (one image per forward: batches of other compositions differ in the last bits)
    # (built as an inverted file: --nlist / --nprobe are saved; --nprobe 2 scans both lists)
    once = tmp_path / "once"
    assert (
        _index(
            complete_checkpoint,
            once,
            gallery / "photos",
            gallery / "clip.avi",
            extra=["--search-index", "ivf", "--nlist", "2", "--nprobe", "1"],
        )
        == 0
    )
    arrays_once = GalleryIndex.open(str(once)).load_arrays()
    index_once = GalleryIndex.open(str(once))
    params = json.loads((once / "search.json").read_text())["params"]
    assert (params["kind"], params["nlist"], params["nprobe"]) == ("ivf", 2, 1)
    asked = []  # query --nprobe reaches GalleryIndex.search
    search = GalleryIndex.search
    monkeypatch.setattr(
        GalleryIndex,
        "search",
        lambda self, *a, **kw: asked.append(kw.get("nprobe")) or search(self, *a, **kw),
    )
    ivf_dir = tmp_path / "res_ivf"
    assert (
        _query(once, query, "--box", "10,10,60,80", "--topk", "4", "--nprobe", "2", out_dir=ivf_dir)
        == 0
    )
    with open(ivf_dir / "results.json") as f:
        exhaustive = json.load(f)["matches"]
    assert asked == [2]
    monkeypatch.undo()
    assert (
        _index(complete_checkpoint, tmp_path / "flat", gallery / "photos", extra=["--nprobe", "3"])
        == 2
    )  # refused before anything is indexed
    assert "use them with --search-index ivf or ivfpq" in capsys.readouterr().err
    assert not (tmp_path / "flat").exists()
    assert [(m["source"], m["frame"]) for m in exhaustive] == [
        (m["source"], m["frame"]) for m in result["matches"]
    ]
    np.testing.assert_allclose(
        [m["similarity"] for m in exhaustive],
        [m["similarity"] for m in result["matches"]],
        atol=1e-5,
    )

    def by_unit(idx, arr):
        paths = [s["path"] for s in idx.sources]
        rows = {}
        for i in range(len(arr["frame"])):
            key = (paths[arr["source"][i]], int(arr["frame"][i]))
            rows.setdefault(key, []).append(arr["embeds"][i].tolist())
        return rows

    assert by_unit(index_once, arrays_once) == by_unit(index, arrays)

    # --list, --person and a mismatching model
    assert _query(out, query, "--list") == 0
    assert "person 0: box" in capsys.readouterr().out
    assert _query(out, query, "--person", "0", "--cbgm", "--topk", "3") == 0
    assert _query(out, query, "--person", "100000") == 2
    assert "--person 100000" in capsys.readouterr().err
    assert _query(out, query, "--box", "500,10,600,80") == 2
    assert "outside the 128x96 image" in capsys.readouterr().err


def test_unreadable_files_are_skipped_and_an_empty_index_refused(
    complete_checkpoint, gallery, tmp_path, capsys
):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"not a jpeg")
    import shutil

    shutil.copy(gallery / "photos" / "p0.png", bad / "good.png")
    # the warning is checked on the logger itself: where its handlers write depends on what ran
    # before in this process (training sets Detectron2's handlers up)
    with captured_log("dcinet_d2.search", logging.WARNING) as log:
        assert (
            _index(complete_checkpoint, tmp_path / "index", bad, extra=["--det-thresh", "1"]) == 0
        )
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert (
        summary["unreadable_skipped"] == [str(bad / "broken.jpg")] and summary["units_total"] == 1
    )
    assert "Skipping '" + str(bad / "broken.jpg") in log.text()
    # --det-thresh 1 kept no detection: the index is empty, and a query says so
    assert _query(tmp_path / "index", str(bad / "good.png"), "--list") == 2
    assert "holds no detection" in capsys.readouterr().err


def test_index_refuses_another_model(complete_checkpoint, gallery, tmp_path, capsys):
    out = tmp_path / "index"
    assert _index(complete_checkpoint, out, gallery / "photos", extra=["--batch-size", "2"]) == 0
    import shutil

    import torch

    other = tmp_path / "other.pth"
    shutil.copy(complete_checkpoint, other)
    ckpt = torch.load(other, weights_only=True)
    key = next(k for k in ckpt["model"] if k.endswith("embed_head.proj.weight"))
    ckpt["model"][key] = ckpt["model"][key] * 2
    torch.save(ckpt, other)
    assert _index(str(other), out, gallery / "photos" / "p1.png") == 2
    assert "model" in capsys.readouterr().err


def test_cbgm_rerank_hand_worked():
    """Query q = e1 and one context person c = e2 (another box of the query image). Unit U1 holds
    a (q.a 0.6, c.a 0.1) and b (q.b 0.5, c.b 0.8); unit U2 holds d (q.d 0.7, c.d 0.2). In U1 the
    best matching pairs q-a and c-b (0.6 + 0.8 > 0.5 + 0.1), so a takes the largest matched weight,
    0.8; in U2, q-d (0.7) beats c-d: d keeps 0.7. Order a, d, b instead of d, a, b."""
    from dcinet_d2.search.cli import cbgm_rerank

    a = np.array([0.6, 0.1, np.sqrt(1 - 0.37), 0.0])
    b = np.array([0.5, 0.8, 0.0, np.sqrt(1 - 0.89)])
    d = np.array([0.7, 0.2, 0.0, np.sqrt(1 - 0.53)])
    embeds = np.stack([a, b, d])
    hits = [
        {"id": 2, "similarity": 0.7, "source": "U2", "frame": -1},
        {"id": 0, "similarity": 0.6, "source": "U1", "frame": -1},
        {"id": 1, "similarity": 0.5, "source": "U1", "frame": -1},
    ]
    units = {"U1": np.array([0, 1]), "U2": np.array([2])}

    def unit_detections(hit):
        ids = units[hit["source"]]
        return ids, embeds[ids]

    out = cbgm_rerank(
        hits,
        np.array([1.0, 0, 0, 0]),
        np.array([0, 0, 50, 100.0]),
        np.array([[100, 0, 150, 100.0]]),
        np.array([0.9]),
        np.array([[0, 1.0, 0, 0]]),
        unit_detections,
        k1=10,
        k2=3,
    )
    assert [h["id"] for h in out] == [0, 2, 1]
    np.testing.assert_allclose([h["similarity"] for h in out], [0.8, 0.7, 0.5])
