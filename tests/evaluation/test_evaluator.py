"""PersonSearchEvaluator and ``python -m dcinet_d2.evaluation`` end to end, on small test sets whose
numbers are worked out by hand: a PRW-protocol set built in memory, and a CUHK-SYSU set written
in the official file formats and read by the project's own readers."""

from __future__ import annotations

import json
import math
import os
import uuid

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from dcinet_d2 import add_dcinet_config
from dcinet_d2.data.datasets.builtin import register_cuhk_sysu
from dcinet_d2.evaluation import PersonSearchEvaluator, save_predictions
from dcinet_d2.evaluation.__main__ import main
from dcinet_d2.evaluation.evaluator import METRICS_FILE, PREDICTIONS_FILE

from ..data.official_files import write_cuhk_sysu

pytestmark = pytest.mark.usefixtures("private_cache")


def emb(sim: float) -> list:
    """Unit vector whose dot product with the query embedding e1 is sim."""
    return [sim, math.sqrt(1 - sim * sim), 0.0]


E1 = [1.0, 0.0, 0.0]


def anno(box, pid):
    return {"bbox": [float(v) for v in box], "bbox_mode": 0, "category_id": 0, "person_id": pid}


# ------------------------------------------------------------------------------------ PRW-like
QB, B, FARB = [0, 0, 40, 90], [100, 0, 140, 90], [300, 0, 340, 90]
PRW_DICTS = [
    {
        "image_id": "q.jpg",
        "camera_id": 1,
        "height": 200,
        "width": 400,
        "annotations": [anno(QB, 7)],
        "queries": [{"query_id": 0, "bbox": QB, "person_id": 7}],
    },
    {"image_id": "e.jpg", "camera_id": 1, "height": 200, "width": 400, "annotations": [anno(B, 7)]},
    {
        "image_id": "f.jpg",
        "camera_id": 2,
        "height": 200,
        "width": 400,
        "annotations": [anno(B, 7), anno(FARB, -1)],
    },
    {
        "image_id": "g.jpg",
        "camera_id": 2,
        "height": 200,
        "width": 400,
        "annotations": [anno(B, -1)],
    },
]
# model outputs per image: [(box, score, embedding)]
PRW_OUTPUTS = {
    "q.jpg": [(QB, 0.9, emb(0.95))],
    "e.jpg": [(B, 0.9, emb(0.9))],
    "f.jpg": [
        (B, 0.9, emb(0.6)),
        (FARB, 0.3, emb(0.99)),
    ],  # the 0.3 detection is below the threshold
    "g.jpg": [(B, 0.9, emb(0.7))],
}
# Search, all frames (q.jpg is the query's own): e .9 P, g .7 N, f .6 P -> AP 1/2 + 1/2 * 2/3 = 5/6.
# Cross-camera (e.jpg, camera 1, out): g .7 N, f .6 P -> AP 1/2; top-1 0.
# Detection, all persons: 5 boxes, 4 found (FARB's detection scores 0.3) -> recall 4/5; the 4 kept
# detections are all matches at score .9 -> AP 1 x 4/5.
# Labelled only: g.jpg has no labelled person (skipped); 3 labelled boxes, 3 matches -> 100 / 100.
PRW_EXPECTED = {
    "search": {"mAP": 100 * 5 / 6, "top1": 100.0, "top5": 100.0, "top10": 100.0},
    "detection": {"recall": 80.0, "AP": 80.0, "recall_labeled": 100.0, "AP_labeled": 100.0},
    "search_cross_camera": {"mAP": 50.0, "top1": 0.0, "top5": 100.0, "top10": 100.0},
}


def register_memory(dicts, protocol, root=None) -> str:
    name = f"test_person_search_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(
        evaluator_type="person_search", thing_classes=["person"], protocol=protocol, root=root
    )
    return name


def model_io(dicts, outputs, query_embeds):
    """(inputs, outputs) pairs as a Detectron2 model would give them, one image per pair."""
    pairs = []
    for d in dicts:
        rows = outputs[d["image_id"]]
        inst = Instances((d.get("height", 200), d.get("width", 400)))
        inst.pred_boxes = Boxes(
            torch.tensor([r[0] for r in rows], dtype=torch.float32).reshape(-1, 4)
        )
        inst.scores = torch.tensor([r[1] for r in rows], dtype=torch.float32)
        inst.pred_embeds = torch.tensor([r[2] for r in rows], dtype=torch.float32).reshape(
            len(rows), 3
        )
        inst.pred_classes = torch.zeros(len(rows), dtype=torch.int64)
        out = {"instances": inst}
        inp = {"image_id": d["image_id"], "file_name": d["image_id"]}
        if d.get("queries"):
            inp["queries"] = d["queries"]
            out["query_embeds"] = torch.tensor(
                [query_embeds[q["query_id"]] for q in d["queries"]], dtype=torch.float32
            )
        pairs.append((inp, out))
    return pairs


def run(evaluator, pairs, batch=2):
    evaluator.reset()
    for i in range(0, len(pairs), batch):
        chunk = pairs[i : i + batch]
        evaluator.process([p[0] for p in chunk], [p[1] for p in chunk])
    return evaluator.evaluate()


def assert_results(got, expected):
    assert list(got) == list(expected)
    for task in expected:
        assert got[task] == pytest.approx(expected[task], abs=1e-9), task


def test_prw_evaluator(tmp_path):
    name = register_memory(PRW_DICTS, "prw")
    ev = PersonSearchEvaluator(name, str(tmp_path), cross_camera=True, distributed=False)
    res = run(ev, model_io(PRW_DICTS, PRW_OUTPUTS, {0: E1}))
    assert_results(res, PRW_EXPECTED)
    assert all(isinstance(v, float) for m in res.values() for v in m.values())
    # files: the kept detections (score >= 0.5) and the metrics
    saved = torch.load(str(tmp_path / PREDICTIONS_FILE), weights_only=True)
    assert saved["gallery"]["f.jpg"]["scores"].tolist() == pytest.approx([0.9])
    assert saved["queries"][0]["embed"].tolist() == E1
    assert saved["meta"] == {"dataset": name, "det_thresh": 0.5, "embed_score_power": 0.0}
    with open(tmp_path / METRICS_FILE) as f:
        assert_results(json.load(f), PRW_EXPECTED)


def test_from_config_and_det_thresh():
    name = register_memory(PRW_DICTS, "prw")
    cfg = add_dcinet_config(get_cfg())
    cfg.TEST.PERSON_SEARCH.DET_THRESH = (
        0.2  # keeps FARB's 0.3 detection (similarity .99, a negative)
    )
    ev = PersonSearchEvaluator.from_config(cfg, name, distributed=False)
    res = run(ev, model_io(PRW_DICTS, PRW_OUTPUTS, {0: E1}), batch=3)
    # f .99 N, e .9 P, g .7 N, f .6 P -> AP 1/2 * 1/2 + 1/2 * 2/4 = 1/2; top-1 0
    assert res["search"] == pytest.approx({"mAP": 50.0, "top1": 0.0, "top5": 100.0, "top10": 100.0})
    # detection: FARB's detection (.3) now kept and a match: 5 of 5 found, every detection a match
    # (4 at .9: P 1, R 4/5; then .3: P 1, R 1) -> AP 1, recall 1
    assert res["detection"]["recall"] == pytest.approx(100.0) and res["detection"][
        "AP"
    ] == pytest.approx(100.0)
    assert "search_cross_camera" not in res


def test_process_keeps_only_detections_above_threshold():
    name = register_memory(PRW_DICTS, "prw")
    ev = PersonSearchEvaluator(name, distributed=False)
    outputs = {
        "q.jpg": [(QB, 0.3, emb(0.5)), (B, 0.49, emb(0.5))],
        "e.jpg": [],
        "f.jpg": [(B, 0.5, emb(0.5))],
        "g.jpg": [],
    }
    for inp, out in model_io(PRW_DICTS, outputs, {0: E1}):
        ev.process([inp], [out])
    shapes = {
        k: tuple(v[f].shape for f in ("boxes", "scores", "embeds")) for k, v in ev._gallery.items()
    }
    assert shapes == {
        "q.jpg": ((0, 4), (0,), (0, 3)),
        "e.jpg": ((0, 4), (0,), (0, 3)),
        "f.jpg": ((1, 4), (1,), (1, 3)),
        "g.jpg": ((0, 4), (0,), (0, 3)),
    }
    # only f.jpg's detection (similarity .5) is left, on the target: AP 1 x 1/2 (e.jpg's target
    # is never found); detection: 1 of 5 persons found, 1 detection, a match -> recall 20, AP 20
    res = ev.evaluate()
    assert res["search"] == pytest.approx(
        {"mAP": 50.0, "top1": 100.0, "top5": 100.0, "top10": 100.0}
    )
    assert res["detection"]["recall"] == pytest.approx(20.0) and res["detection"][
        "AP"
    ] == pytest.approx(20.0)


def test_evaluator_errors():
    name = register_memory(PRW_DICTS, "prw")
    ev = PersonSearchEvaluator(name, distributed=False)
    pairs = model_io(PRW_DICTS, PRW_OUTPUTS, {0: E1})
    del pairs[0][1]["query_embeds"]
    with pytest.raises(
        KeyError, match="input q.jpg has queries but the output has no 'query_embeds'"
    ):
        ev.process([pairs[0][0]], [pairs[0][1]])
    # a model whose embeddings are not normalised
    pairs = model_io(PRW_DICTS, PRW_OUTPUTS, {0: [2.0, 0.0, 0.0]})
    with pytest.raises(
        ValueError, match=r"queries\[0\]\['embed'\]: embeddings must be L2-normalised"
    ):
        run(ev, pairs)
    # an image that was never processed
    pairs = model_io(PRW_DICTS, PRW_OUTPUTS, {0: E1})[:-1]
    with pytest.raises(ValueError, match="'gallery' misses 1 of the dataset's 4 images: 'g.jpg'"):
        run(ev, pairs)
    other = register_memory(PRW_DICTS, "market1501")
    with pytest.raises(ValueError, match="metadata protocol='market1501'"):
        PersonSearchEvaluator(other)


# ------------------------------------------------------------------------------ CUHK-SYSU files
# Images (x, y, w, h). Pool s1..s5; t1 is the training image. Identity p0: query in s1, also in s2
# and s4. The TestG50 and TestG100 galleries are (s2, s3, s4); s5 is only in the full set.
CUHK_IMAGES = {
    "s1.jpg": [(0, 0, 20, 40), (50, 0, 20, 40)],
    "s2.jpg": [(10, 10, 20, 40)],
    "s3.jpg": [(0, 0, 20, 40)],
    "s4.jpg": [(0, 0, 20, 40)],
    "s5.jpg": [(0, 0, 20, 40)],
    "t1.jpg": [(0, 0, 20, 40)],
}
CUHK_SIZES = {n: (200, 200) for n in CUHK_IMAGES}
CUHK_QUERIES = [
    (
        "p0",
        "s1.jpg",
        (0, 0, 20, 40),
        [("s2.jpg", (10, 10, 20, 40)), ("s3.jpg", None), ("s4.jpg", (0, 0, 20, 40))],
    )
]
CUHK_OUTPUTS = {
    "s1.jpg": [([0, 0, 20, 40], 0.9, emb(0.99)), ([50, 0, 70, 40], 0.8, emb(0.2))],
    "s2.jpg": [([10, 10, 30, 50], 0.9, emb(0.5))],
    "s3.jpg": [([0, 0, 20, 40], 0.9, emb(0.8))],
    "s4.jpg": [([100, 100, 120, 140], 0.9, emb(0.7))],  # misses the target
    "s5.jpg": [([0, 0, 20, 40], 0.9, emb(0.95))],
}
# Gallery 50 / 100: s3 .8 N, s4 .7 N, s2 .5 P; 2 ground-truth images, 1 found:
#   AP = 1/3 x 1/2 = 1/6; top-1 0, top-5 1.
# Full set adds s5 .95 N: AP = 1/4 x 1/2 = 1/8.
# Detection, all persons: 6 boxes; matches s1 (both), s2, s3, s5; s4's detection is a false
#   positive -> recall 5/6. Scores: at .9 five detections of which 4 matches (P 4/5, R 4/5 of the
#   5 matched), at .8 the 6th (P 5/6, R 1): AP = 4/5 * 4/5 + 1/5 * 5/6 = 0.80667, x 5/6.
# Labelled only (p0 in s1, s2, s4; s3, s5 skipped): s1 .9 T, s1 .8 F (unlabelled person), s2 .9 T,
#   s4 .9 F: 3 boxes, 2 matches -> recall 2/3; at .9: P 2/3, R 1 -> AP 2/3 x 2/3 = 4/9.
CUHK_DETECTION = {
    "recall": 100 * 5 / 6,
    "AP": 100 * (0.64 + 1 / 6) * 5 / 6,
    "recall_labeled": 100 * 2 / 3,
    "AP_labeled": 100 * 4 / 9,
}


@pytest.fixture
def cuhk_dataset(tmp_path):
    root = str(tmp_path / "CUHK-SYSU")
    write_cuhk_sysu(
        root,
        CUHK_IMAGES,
        ["s1.jpg", "s2.jpg", "s3.jpg", "s4.jpg", "s5.jpg"],
        [("p9", [("t1.jpg", (0, 0, 20, 40))])],
        CUHK_QUERIES,
        CUHK_SIZES,
        gallery_sizes=(50, 100),
    )
    prefix = f"test_cuhk_{uuid.uuid4().hex[:8]}"
    register_cuhk_sysu(prefix, root)
    return prefix + "_test"


def cuhk_expected(headline_ap, curve):
    out = {
        "search": {"mAP": 100 * headline_ap, "top1": 0.0, "top5": 100.0, "top10": 100.0},
        "detection": CUHK_DETECTION,
    }
    for task, ap in curve:
        out[task] = {"mAP": 100 * ap, "top1": 0.0, "top5": 100.0, "top10": 100.0}
    return out


def test_cuhk_sysu_evaluator_with_official_files(cuhk_dataset, tmp_path):
    dicts = DatasetCatalog.get(cuhk_dataset)
    ev = PersonSearchEvaluator(
        cuhk_dataset,
        str(tmp_path / "out"),
        gallery_size=50,
        gallery_size_curve=(50, 100, -1),
        distributed=False,
    )
    res = run(ev, model_io(dicts, CUHK_OUTPUTS, {0: E1}))
    assert_results(
        res, cuhk_expected(1 / 6, [("search_gallery100", 1 / 6), ("search_full_set", 1 / 8)])
    )
    ev = PersonSearchEvaluator(cuhk_dataset, gallery_size=-1, distributed=False)
    assert_results(run(ev, model_io(dicts, CUHK_OUTPUTS, {0: E1})), cuhk_expected(1 / 8, []))


def test_command_line(cuhk_dataset, tmp_path, capsys):
    gallery = {}
    for name, rows in CUHK_OUTPUTS.items():
        gallery[name] = {
            "boxes": np.array([r[0] for r in rows], np.float32),
            "scores": np.array([r[1] for r in rows], np.float32),
            "embeds": np.array([r[2] for r in rows], np.float32),
        }
    preds = str(tmp_path / "preds.pth")
    save_predictions(preds, gallery, {0: {"embed": np.array(E1, np.float32)}})
    out_json = str(tmp_path / "json" / "metrics.json")
    assert (
        main(
            [
                "--dataset",
                cuhk_dataset,
                "--predictions",
                preds,
                "--gallery-size",
                "50",
                "-1",
                "--json",
                out_json,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "search_full_set" in printed and "16.67" in printed and "12.50" in printed
    with open(out_json) as f:
        assert_results(json.load(f), cuhk_expected(1 / 6, [("search_full_set", 1 / 8)]))

    # a file that misses a query, an unknown image, a missing file, an unknown dataset: exit 2
    save_predictions(preds, gallery, {})
    assert main(["--dataset", cuhk_dataset, "--predictions", preds]) == 2
    assert "'queries' misses 1 of the dataset's 1 queries: 0" in capsys.readouterr().err
    save_predictions(
        preds, {**gallery, "zz.jpg": gallery["s1.jpg"]}, {0: {"embed": np.array(E1, np.float32)}}
    )
    assert main(["--dataset", cuhk_dataset, "--predictions", preds]) == 2
    assert "1 unknown image ids in 'gallery': 'zz.jpg'" in capsys.readouterr().err
    assert main(["--dataset", cuhk_dataset, "--predictions", str(tmp_path / "nope.pth")]) == 2
    assert "predictions file not found" in capsys.readouterr().err
    assert main(["--dataset", "no_such_set", "--predictions", preds]) == 2
    assert "unknown dataset 'no_such_set'" in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / "nope.pth"))
