"""The CUHK-SYSU and PRW readers against tiny hand-written files in the official formats.

Every expected value below was worked out by hand from the file contents written in the fixtures
(box conversions spelled out next to each value).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from scipy.io import savemat

from dcinet_d2.data.datasets import (
    DatasetFormatError,
    DatasetNotFoundError,
    register_cuhk_sysu,
    register_prw,
)
from dcinet_d2.data.datasets.cuhk_sysu import (
    load_cuhk_sysu,
    load_test_galleries,
    num_train_identities,
)
from dcinet_d2.data.datasets.prw import load_prw
from dcinet_d2.data.datasets.prw import num_train_identities as prw_num_train_ids

from .official_files import summary, write_cuhk_sysu, write_prw

pytestmark = pytest.mark.usefixtures("private_cache")


CUHK_IMAGES = {
    # float box: the reference casts x,y,w,h to int32 first -> (10, 5, 20, 40)
    # -> xyxy (10, 5, 30, 45)
    "s1.jpg": [(10.7, 5.2, 20.6, 40.9), (50, 10, 0, 30), (60, 20, 15, 30)],  # 2nd: w = 0, dropped
    "s2.jpg": [(5, 5, 30, 50), (40, 6, 20, 44)],
    "s3.jpg": [(1, 2, 3, 4), (9, 9, 9, 0)],  # 2nd: h = 0, dropped
    "s4.jpg": [(10, 10, 20, 40), (40, 10, 20, 40)],
    "s5.jpg": [(12, 8, 22, 44), (70, 5, 10, 20)],
    "s6.jpg": [(30, 30, 10, 10), (3, 3, 25, 50)],
}
CUHK_SIZES = {
    "s1.jpg": (100, 80),
    "s2.jpg": (90, 70),
    "s3.jpg": (50, 60),
    "s4.jpg": (100, 60),
    "s5.jpg": (120, 60),
    "s6.jpg": (64, 64),
}
CUHK_POOL = ["s4.jpg", "s5.jpg", "s6.jpg"]
CUHK_TRAIN = [
    ("p1", [("s1.jpg", (10.7, 5.2, 20.6, 40.9)), ("s2.jpg", (5, 5, 30, 50))]),
    ("p2", [("s2.jpg", (40, 6, 20, 44)), ("s3.jpg", (1, 2, 3, 4))]),
]
CUHK_QUERIES = [
    ("p10", "s4.jpg", (10, 10, 20, 40), [("s5.jpg", (12, 8, 22, 44)), ("s6.jpg", None)]),
    ("p11", "s5.jpg", (70, 5, 10, 20), [("s6.jpg", (3, 3, 25, 50)), ("s4.jpg", None)]),
]


@pytest.fixture
def cuhk_root(tmp_path):
    root = str(tmp_path / "CUHK-SYSU")
    write_cuhk_sysu(
        root, CUHK_IMAGES, CUHK_POOL, CUHK_TRAIN, CUHK_QUERIES, CUHK_SIZES, gallery_sizes=(50, 100)
    )
    return root


def test_cuhk_sysu_train(cuhk_root):
    dicts = load_cuhk_sysu(cuhk_root, "train")
    assert [d["image_id"] for d in dicts] == ["s1.jpg", "s2.jpg", "s3.jpg"]  # all - pool, sorted
    assert summary(dicts) == {
        "s1.jpg": [([10, 5, 30, 45], 0), ([60, 20, 75, 50], -1)],
        "s2.jpg": [([5, 5, 35, 55], 0), ([40, 6, 60, 50], 1)],
        "s3.jpg": [([1, 2, 4, 6], 1)],
    }
    d = dicts[0]
    assert (d["height"], d["width"]) == (80, 100)
    assert d["file_name"] == os.path.join(cuhk_root, "Image", "SSM", "s1.jpg")
    assert all(
        a["bbox_mode"] == BoxMode.XYXY_ABS and a["category_id"] == 0 for a in d["annotations"]
    )
    assert "queries" not in d
    assert num_train_identities(cuhk_root) == 2


def test_cuhk_sysu_test_and_queries(cuhk_root):
    dicts = load_cuhk_sysu(cuhk_root, "test")
    assert [d["image_id"] for d in dicts] == CUHK_POOL
    assert summary(dicts) == {
        "s4.jpg": [([10, 10, 30, 50], 0), ([40, 10, 60, 50], -1)],
        "s5.jpg": [([12, 8, 34, 52], 0), ([70, 5, 80, 25], 1)],
        "s6.jpg": [([30, 30, 40, 40], -1), ([3, 3, 28, 53], 1)],
    }
    assert dicts[0]["queries"] == [{"query_id": 0, "bbox": [10, 10, 30, 50], "person_id": 0}]
    assert dicts[1]["queries"] == [{"query_id": 1, "bbox": [70, 5, 80, 25], "person_id": 1}]
    assert "queries" not in dicts[2]


def test_cuhk_sysu_galleries(cuhk_root):
    g = load_test_galleries(cuhk_root, 100)
    assert [q["query_id"] for q in g] == [0, 1] and g[0]["image_id"] == "s4.jpg"
    assert g[0]["bbox"].tolist() == [10, 10, 30, 50]
    assert [(n, None if b is None else b.tolist()) for n, b in g[0]["gallery"]] == [
        ("s5.jpg", [12, 8, 34, 52]),
        ("s6.jpg", None),
    ]
    full = load_test_galleries(cuhk_root, -1)
    # full set: every pool image except the query's own, in pool order
    assert [(n, None if b is None else b.tolist()) for n, b in full[1]["gallery"]] == [
        ("s4.jpg", None),
        ("s6.jpg", [3, 3, 28, 53]),
    ]
    assert len(full[0]["gallery"]) == 2 and full[0]["gallery"][-1] == ("s6.jpg", None)
    with pytest.raises(ValueError, match="gallery size"):
        load_test_galleries(cuhk_root, 77)
    with pytest.raises(DatasetNotFoundError, match="TestG500.mat"):
        load_test_galleries(cuhk_root, 500)


def test_cuhk_sysu_cache_reused_and_invalidated(cuhk_root, tmp_path):
    first = load_cuhk_sysu(cuhk_root, "train")
    assert len(os.listdir(tmp_path / "cache")) == 1
    assert load_cuhk_sysu(cuhk_root, "train") == first
    # an edited annotation file gives a new key: Train.mat without identity p2
    write_cuhk_sysu(cuhk_root, CUHK_IMAGES, CUHK_POOL, CUHK_TRAIN[:1], CUHK_QUERIES, {})
    os.utime(
        os.path.join(cuhk_root, "annotation", "test", "train_test", "Train.mat"), ns=(1, 10**18)
    )
    assert summary(load_cuhk_sysu(cuhk_root, "train"))["s3.jpg"] == [([1, 2, 4, 6], -1)]


def test_cuhk_sysu_errors(cuhk_root, tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_cuhk_sysu(str(tmp_path / "nowhere"), "train")
    assert "nowhere/annotation/Images.mat" in str(e.value) and "ShuangLI59/person_search" in str(
        e.value
    )
    # an identity box that is no box of its image: names the file and entry
    bad_train = [CUHK_TRAIN[0], ("p2", [("s2.jpg", (40, 6, 20, 44)), ("s3.jpg", (1, 2, 3, 5))])]
    write_cuhk_sysu(cuhk_root, CUHK_IMAGES, CUHK_POOL, bad_train, CUHK_QUERIES, {})
    with pytest.raises(
        DatasetFormatError, match=r"Train.mat', Train entry 1.scene\(1\): box \[1, 2, 4, 7\]"
    ):
        load_cuhk_sysu(cuhk_root, "train")
    # wrong variable name
    savemat(os.path.join(cuhk_root, "annotation", "pool.mat"), {"gallery": np.zeros((1, 1))})
    with pytest.raises(
        DatasetFormatError, match=r"pool.mat.*no variable named 'pool'.*\['gallery'\]"
    ):
        load_cuhk_sysu(cuhk_root, "test")
    # not a MATLAB file at all
    with open(os.path.join(cuhk_root, "annotation", "Images.mat"), "w") as f:
        f.write("garbage")
    with pytest.raises(DatasetFormatError, match="Images.mat.*not a readable MATLAB file"):
        load_cuhk_sysu(cuhk_root, "test")


def test_cuhk_sysu_bad_box_names_entry(cuhk_root):
    images = dict(CUHK_IMAGES)
    write_cuhk_sysu(cuhk_root, images, CUHK_POOL, CUHK_TRAIN, CUHK_QUERIES, {})
    from .official_files import struct_array

    img = struct_array(
        ["imname", "nAppear", "box"],
        [
            (
                np.array(["s1.jpg"]),
                np.array([[1.0]]),
                struct_array(
                    ["idlocate", "ishard"], [(np.array([[1.0, 2.0, 3.0]]), np.array([[0.0]]))]
                ),
            )
        ],
    )
    savemat(os.path.join(cuhk_root, "annotation", "Images.mat"), {"Img": img})
    with pytest.raises(
        DatasetFormatError, match=r"Img entry 0 \('s1.jpg'\), box 0: expected a box"
    ):
        load_cuhk_sysu(cuhk_root, "train")


PRW_TRAIN = {
    "c1s1_000001": [[5, 10.5, 20, 30, 60], [-2, -4, 3, 20, 40]],
    "c2s1_000002": [[7, 0, 0, 10, 10], [5, 1, 1, 10, 10]],
    "c1s2_000003": [[7, 2, 2, 5, 5]],
    "c1s3_000004": [[5, 3, 3, 6, 6], [9, 1, 1, 4, 4]],  # id 9 is not in ID_train
}
PRW_TEST = {
    "c3s1_000010": [[100, -1.5, 2.5, 10, 20], [-2, 5, 5, 5, 5]],
    "c4s1_000020": [[100, 30, 30, 10, 10], [101, 1, 1, 2, 2]],
}
PRW_KEYS = {"c2s1_000002": "anno_file", "c1s2_000003": "anno_previous", "c4s1_000020": "anno_file"}
PRW_QUERIES = ["100 -1.5 2.5 10 20 c3s1_000010", "101 1 1 2 2 c4s1_000020"]


@pytest.fixture
def prw_root(tmp_path):
    root = str(tmp_path / "PRW")
    sizes = {f: (64, 48) for f in {**PRW_TRAIN, **PRW_TEST}}
    write_prw(root, PRW_TRAIN, PRW_TEST, [5, 7], PRW_QUERIES, sizes, PRW_KEYS)
    return root


def test_prw_train(prw_root):
    dicts = load_prw(prw_root, "train")
    assert [d["image_id"] for d in dicts] == [f + ".jpg" for f in PRW_TRAIN]
    assert summary(dicts) == {
        # clip x,y,w,h at 0, add in floats, cast:
        # (10.5,20,30,60) -> (10.5,20,40.5,80) -> (10,20,40,80)
        # (-4,3,20,40) -> (0,3,20,40) -> (0,3,20,43); id -2 -> -1; ids 5, 7 -> 0, 1 (ID_train order)
        "c1s1_000001.jpg": [([10, 20, 40, 80], 0), ([0, 3, 20, 43], -1)],
        "c2s1_000002.jpg": [([0, 0, 10, 10], 1), ([1, 1, 11, 11], 0)],
        "c1s2_000003.jpg": [([2, 2, 7, 7], 1)],
        "c1s3_000004.jpg": [([3, 3, 9, 9], 0), ([1, 1, 5, 5], -1)],
    }
    assert [d["camera_id"] for d in dicts] == [1, 2, 1, 1]
    assert (dicts[0]["height"], dicts[0]["width"]) == (48, 64)
    assert prw_num_train_ids(prw_root) == 2


def test_prw_test_and_queries(prw_root):
    dicts = load_prw(prw_root, "test")
    assert summary(dicts) == {
        # annotation: clip first (-1.5 -> 0): (0,2.5,10,20) -> (0,2.5,10,22.5) -> (0,2,10,22)
        "c3s1_000010.jpg": [([0, 2, 10, 22], 100), ([5, 5, 10, 10], -1)],
        "c4s1_000020.jpg": [([30, 30, 40, 40], 100), ([1, 1, 3, 3], 101)],
    }
    # query: add first (-1.5+10 = 8.5, 2.5+20 = 22.5), cast (-1, 2, 8, 22), clip -> (0, 2, 8, 22)
    assert dicts[0]["queries"] == [{"query_id": 0, "bbox": [0, 2, 8, 22], "person_id": 100}]
    assert dicts[1]["queries"] == [{"query_id": 1, "bbox": [1, 1, 3, 3], "person_id": 101}]
    assert [d["camera_id"] for d in dicts] == [3, 4]


def test_prw_query_lines_lf_and_blank(prw_root):
    with open(os.path.join(prw_root, "query_info.txt"), "w") as f:
        f.write("101 1 1 2 2 c4s1_000020\n\n100 -1.5 2.5 10 20 c3s1_000010\n")
    dicts = load_prw(prw_root, "test")
    assert dicts[1]["queries"][0]["query_id"] == 0 and dicts[0]["queries"][0]["query_id"] == 1


def test_prw_errors(prw_root):
    with open(os.path.join(prw_root, "query_info.txt"), "w") as f:
        f.write("100 -1.5 2.5 10 20 c3s1_000010\r\n101 1 1 2 c4s1_000020\r\n")
    with pytest.raises(DatasetFormatError, match=r"query_info.txt', line 2: expected 6 fields"):
        load_prw(prw_root, "test")
    with open(os.path.join(prw_root, "query_info.txt"), "w") as f:
        f.write("100 1 1 2 2 c9s1_000099\r\n")
    with pytest.raises(
        DatasetFormatError, match="c9s1_000099', which frame_test.mat does not list"
    ):
        load_prw(prw_root, "test")
    savemat(
        os.path.join(prw_root, "annotations", "c1s2_000003.jpg.mat"), {"boxes": np.zeros((1, 5))}
    )
    with pytest.raises(
        DatasetFormatError,
        match=r"c1s2_000003.jpg.mat.*'box_new' or 'anno_file' or 'anno_previous'",
    ):
        load_prw(prw_root, "train")
    savemat(
        os.path.join(prw_root, "annotations", "c1s2_000003.jpg.mat"), {"box_new": np.zeros((1, 4))}
    )
    with pytest.raises(
        DatasetFormatError, match=r"c1s2_000003.jpg.mat', variable 'box_new'.*N x 5"
    ):
        load_prw(prw_root, "train")
    os.remove(os.path.join(prw_root, "frames", "c1s2_000003.jpg"))
    savemat(
        os.path.join(prw_root, "annotations", "c1s2_000003.jpg.mat"), {"box_new": np.ones((1, 5))}
    )
    with pytest.raises(DatasetNotFoundError, match="frames/c1s2_000003.jpg"):
        load_prw(prw_root, "train")
    os.remove(os.path.join(prw_root, "ID_train.mat"))
    with pytest.raises(DatasetNotFoundError, match="(?s)ID_train.mat.*liangzheng06/PRW-baseline"):
        load_prw(prw_root, "train")


def test_registration_is_lazy_and_sets_metadata(tmp_path, prw_root, cuhk_root):
    register_prw("lazy_prw_test_only", str(tmp_path / "absent"))  # touches no file
    meta = MetadataCatalog.get("lazy_prw_test_only_test")
    assert (meta.evaluator_type, meta.thing_classes, meta.protocol) == (
        "person_search",
        ["person"],
        "prw",
    )
    with pytest.raises(DatasetNotFoundError):
        DatasetCatalog.get("lazy_prw_test_only_train")
    register_prw("tiny_prw_reader_test", prw_root)
    register_cuhk_sysu("tiny_cuhk_reader_test", cuhk_root)
    assert MetadataCatalog.get("tiny_prw_reader_test_train").num_train_ids == 2
    assert MetadataCatalog.get("tiny_cuhk_reader_test_train").num_train_ids == 2
    assert len(DatasetCatalog.get("tiny_cuhk_reader_test_test")) == 3
    assert MetadataCatalog.get("tiny_cuhk_reader_test_test").root == cuhk_root


def test_builtin_names_follow_environment():
    for name in (
        "cuhk_sysu_train",
        "cuhk_sysu_test",
        "prw_train",
        "prw_test",
        "synthetic_cuhk_sysu_train",
        "synthetic_cuhk_sysu_test",
        "synthetic_prw_train",
        "synthetic_prw_test",
    ):
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).evaluator_type == "person_search"
    root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    assert MetadataCatalog.get("synthetic_prw_test").root == os.path.join(root, "synthetic", "PRW")
