"""Generator -> reader round trip: every box, identity and query the generator wrote comes back.

The expectations come from the generator's own statistics and from literal ``loadmat`` access to
the written files, not from the readers.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy.io import loadmat

from dcinet_d2.data.datasets.cuhk_sysu import load_cuhk_sysu, load_test_galleries
from dcinet_d2.data.datasets.prw import load_prw
from dcinet_d2.data.synthetic import generate_cuhk_sysu, generate_prw

pytestmark = pytest.mark.usefixtures("private_cache")

# the generators' arguments (besides the root and progress=False)
CUHK_ARGS = dict(
    seed=5,
    image_size=(96, 72),
    num_images=100,
    pool_size=55,
    gallery_sizes=[50],
    num_train_ids=15,
    num_test_ids=10,
)
PRW_ARGS = dict(
    seed=5,
    image_size=(96, 64),
    num_cameras=3,
    num_train_frames=30,
    num_test_frames=24,
    num_train_ids=10,
    num_test_ids=6,
)


def _generated(tmp_path_factory, name, generate, kwargs):
    """A dataset written by ``generate`` (no progress bar) into a fresh folder ``name``; returns its
    root and the generator's statistics."""
    root = str(tmp_path_factory.mktemp("rt") / name)
    return root, generate(root, progress=False, **kwargs)


@pytest.fixture(scope="module")
def cuhk(tmp_path_factory):
    return _generated(tmp_path_factory, "CUHK-SYSU", generate_cuhk_sysu, CUHK_ARGS)


@pytest.fixture(scope="module")
def prw(tmp_path_factory):
    return _generated(tmp_path_factory, "PRW", generate_prw, PRW_ARGS)


def _xyxy(xywh):
    b = np.asarray(xywh, dtype=np.float64).reshape(4).astype(np.int32)
    return [int(b[0]), int(b[1]), int(b[0] + b[2]), int(b[1] + b[3])]


def _find(dicts_by_name, name, box):
    return [a["person_id"] for a in dicts_by_name[name]["annotations"] if a["bbox"] == box]


def test_cuhk_sysu_round_trip(cuhk):
    root, stats = cuhk
    train, test = load_cuhk_sysu(root, "train"), load_cuhk_sysu(root, "test")
    assert len(train) == stats["train_images"] and len(test) == stats["pool_images"]
    assert len(train) + len(test) == stats["images"]
    n_boxes = sum(len(d["annotations"]) for d in train + test)
    n_labelled = sum(a["person_id"] >= 0 for d in train + test for a in d["annotations"])
    assert n_boxes == stats["boxes"]  # the generator counts non-degenerate boxes
    assert n_labelled == stats["labelled_boxes"]
    assert sum(len(d.get("queries", [])) for d in test) == stats["queries"]
    by_name = {d["image_id"]: d for d in train + test}
    # every image's non-degenerate boxes come back, converted
    for rec in loadmat(os.path.join(root, "annotation", "Images.mat"))["Img"][0]:
        boxes = [
            _xyxy(b["idlocate"])
            for b in rec["box"][0]
            if b["idlocate"][0, 2] > 0 and b["idlocate"][0, 3] > 0
        ]
        assert [a["bbox"] for a in by_name[str(rec["imname"][0])]["annotations"]] == boxes
    # every Train.mat appearance is a box with the identity's index as person_id
    train_mat = loadmat(os.path.join(root, "annotation", "test", "train_test", "Train.mat"))[
        "Train"
    ]
    assert len(train_mat) == stats["train_ids"]
    for pid, cell in enumerate(train_mat[:, 0]):
        for scene in cell[0, 0]["scene"][0]:
            assert _find(by_name, str(scene["imname"][0]), _xyxy(scene["idlocate"])) == [pid]
    # every query is on its image with its index as identity, and gallery targets carry it too
    testg = loadmat(os.path.join(root, "annotation", "test", "train_test", "TestG50.mat"))[
        "TestG50"
    ][0]
    for k, item in enumerate(testg):
        q = item["Query"][0, 0]
        qbox = _xyxy(q["idlocate"])
        assert {"query_id": k, "bbox": qbox, "person_id": k} in by_name[str(q["imname"][0])][
            "queries"
        ]
        for g in item["Gallery"][0]:
            if g["idlocate"].size:
                assert _find(by_name, str(g["imname"][0]), _xyxy(g["idlocate"])) == [k]
    galleries = load_test_galleries(root, 50)
    assert [len(g["gallery"]) for g in galleries] == [50] * stats["queries"]


def test_prw_round_trip(prw):
    root, stats = prw
    train, test = load_prw(root, "train"), load_prw(root, "test")
    frames_train = [
        str(v[0][0]) for v in loadmat(os.path.join(root, "frame_train.mat"))["img_index_train"]
    ]
    assert [d["image_id"] for d in train] == [f + ".jpg" for f in frames_train]
    ids = [int(v) for v in loadmat(os.path.join(root, "ID_train.mat"))["ID_train"].reshape(-1)]
    assert len(ids) == stats["train_ids"]
    for d in train + test:
        mat = loadmat(os.path.join(root, "annotations", d["image_id"] + ".mat"))
        (key,) = [k for k in ("box_new", "anno_file", "anno_previous") if k in mat]
        rows = mat[key]
        assert len(rows) == len(d["annotations"])
        for row, a in zip(rows, d["annotations"]):
            raw = int(row[0])
            expected = -1 if raw == -2 else (ids.index(raw) if d in train else raw)
            assert a["person_id"] == expected
            x, y, w, h = np.clip(row[1:], 0, None)
            assert a["bbox"] == [float(int(v)) for v in (x, y, x + w, y + h)]
        assert d["camera_id"] == int(d["image_id"][1 : d["image_id"].index("s")])
    with open(os.path.join(root, "query_info.txt"), newline="") as f:
        lines = [ln for ln in f.read().split("\r\n") if ln]
    queries = sorted(
        (q["query_id"], d["image_id"], q["person_id"]) for d in test for q in d.get("queries", [])
    )
    assert len(queries) == len(lines) == stats["queries"]
    for (qid, image_id, pid), line in zip(queries, lines):
        parts = line.split()
        assert (image_id, pid) == (parts[5] + ".jpg", int(parts[0]))
