"""Unusable boxes and bad query files in the CUHK-SYSU and PRW readers (hardening issue, item 5).

Every file is written by hand in the official format (``tests/data/official_files.py``); the
expected boxes are worked out next to them. Images are 192 x 256 (width x height).
"""

from __future__ import annotations

import logging
import os

import pytest

from dcinet_d2.data.datasets import DatasetFormatError
from dcinet_d2.data.datasets.common import BoxReport, box_problem
from dcinet_d2.data.datasets.cuhk_sysu import (
    load_cuhk_sysu,
    load_test_galleries,
    num_train_identities,
)
from dcinet_d2.data.datasets.prw import load_prw

from ..data.official_files import summary, write_cuhk_sysu, write_prw
from .common import captured_log

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture
def reader_warnings():
    """The warnings the readers log (their loggers propagate to ``dcinet_d2.data.datasets``)."""
    with captured_log("dcinet_d2.data.datasets", logging.WARNING) as log:
        yield log.messages


# ------------------------------------------------------------------------------------- CUHK-SYSU
SIZE = (192, 256)
CUHK_IMAGES = {  # Img entries 0..3, in this order
    # box 1: (5000, 5000) is far outside the image; box 2: int32 (-30, 5, 20, 40) -> x2 = -10,
    # clipped to 0 -> [0, 5, 0, 45], zero width
    "t1.jpg": [(10, 10, 20, 40), (5000, 5000, 20, 40), (-30, 5, 20, 40)],
    "t2.jpg": [(10, 10, 20, 40)],
    "q1.jpg": [(10, 10, 20, 40), (5000, 5000, 20, 40)],
    "q2.jpg": [(30, 30, 20, 40)],
}
CUHK_POOL = ["q1.jpg", "q2.jpg"]
# identity b's only appearance is the dropped (5000, 5000) box
CUHK_TRAIN = [
    ("a", [("t1.jpg", (10, 10, 20, 40)), ("t2.jpg", (10, 10, 20, 40))]),
    ("b", [("t1.jpg", (5000, 5000, 20, 40))]),
]
CUHK_QUERIES = [("p1", "q1.jpg", (10, 10, 20, 40), [("q2.jpg", (30, 30, 20, 40))])]


def _cuhk(tmp_path, images=CUHK_IMAGES, queries=CUHK_QUERIES):
    root = str(tmp_path / "CUHK-SYSU")
    write_cuhk_sysu(
        root,
        images,
        CUHK_POOL,
        CUHK_TRAIN,
        queries,
        {n: SIZE for n in images},
        gallery_sizes=(50, 100),
    )
    return root


def test_cuhk_train_drops_unusable_boxes_one_warning_per_file(tmp_path, reader_warnings):
    root = _cuhk(tmp_path)
    dicts = load_cuhk_sysu(root, "train")
    assert summary(dicts) == {"t1.jpg": [([10, 10, 30, 50], 0)], "t2.jpg": [([10, 10, 30, 50], 0)]}
    assert num_train_identities(root) == 2  # b keeps its number, it has no box left
    images_mat = os.path.join(root, "annotation", "Images.mat")
    train_mat = os.path.join(root, "annotation", "test", "train_test", "Train.mat")
    assert reader_warnings == [
        f"'{images_mat}': 2 boxes are degenerate or outside their image, dropped from the training "
        "split: Img entry 0 ('t1.jpg'), box 1: [5000, 5000, 5020, 5040] (xyxy) lies outside the "
        "192x256 (width x height) image; Img entry 0 ('t1.jpg'), box 2: [0, 5, 0, 45] (xyxy) is "
        "degenerate (width 0, height 40)",
        f"'{train_mat}': 1 identity appearance of boxes dropped from Images.mat (see the warning "
        "on it) skipped: Train entry 1.scene(0) ('t1.jpg')",
    ]


def test_cuhk_test_split_keeps_unusable_boxes_and_warns(tmp_path, reader_warnings):
    root = _cuhk(tmp_path)
    dicts = load_cuhk_sysu(root, "test")
    # the protocol counts every box: the (5000, 5000) one stays, unlabelled
    assert summary(dicts) == {
        "q1.jpg": [([10, 10, 30, 50], 0), ([5000, 5000, 5020, 5040], -1)],
        "q2.jpg": [([30, 30, 50, 70], 0)],
    }
    images_mat = os.path.join(root, "annotation", "Images.mat")
    assert reader_warnings == [
        f"'{images_mat}': 1 box is degenerate or outside their image, kept in the test split, as "
        "the evaluation protocol counts them: Img entry 2 ('q1.jpg'), box 1: "
        "[5000, 5000, 5020, 5040] (xyxy) lies outside the 192x256 (width x height) image"
    ]


def test_cuhk_query_outside_its_image_is_refused(tmp_path):
    queries = [("p1", "q1.jpg", (5000, 5000, 20, 40), [("q2.jpg", (30, 30, 20, 40))])]
    root = _cuhk(tmp_path, queries=queries)
    testg = os.path.join(root, "annotation", "test", "train_test", "TestG50.mat")
    msg = (
        f"'{testg}', TestG50 entry 0.Query ('q1.jpg'): query box [5000, 5000, 5020, 5040] "
        "(xyxy) lies outside the 192x256 (width x height) image"
    )
    with pytest.raises(DatasetFormatError) as e:
        load_cuhk_sysu(root, "test")
    assert str(e.value) == msg
    with pytest.raises(DatasetFormatError) as e:
        load_test_galleries(root, 100)
    assert str(e.value) == msg.replace("TestG50", "TestG100")


def test_cuhk_degenerate_query_is_refused(tmp_path):
    # w = 0.5 passes the reference's w > 0 filter, but the int32 cast makes it 0: [10, 10, 10, 50]
    images = {**CUHK_IMAGES, "q1.jpg": [(10, 10, 20, 40), (10, 10, 0.5, 40)]}
    queries = [("p1", "q1.jpg", (10, 10, 0.5, 40), [("q2.jpg", (30, 30, 20, 40))])]
    root = _cuhk(tmp_path, images=images, queries=queries)
    testg = os.path.join(root, "annotation", "test", "train_test", "TestG50.mat")
    with pytest.raises(DatasetFormatError) as e:
        load_cuhk_sysu(root, "test")
    assert str(e.value) == (
        f"'{testg}', TestG50 entry 0.Query ('q1.jpg'): query box [10, 10, 10, 50] "
        "(xyxy; idlocate [10.0, 10.0, 0.5, 40.0]) is degenerate (width 0, height 40)"
    )


# ------------------------------------------------------------------------------------------- PRW
PRW_TRAIN = {
    # row 1: w = -5 is clipped to 0 -> [40, 10, 40, 30], zero width
    "c1s1_000001": [[5, 10, 10, 20, 30], [-2, 40, 10, -5, 20]],
    # row 0: (500, 500) is outside the 192 x 256 frame
    "c1s1_000002": [[7, 500, 500, 10, 10], [7, 1, 1, 10, 10]],
}
PRW_TEST = {"c2s1_000010": [[100, 10, 10, 20, 30], [-2, 20, 5, -6, 10]]}
PRW_QUERY = "100 10 10 20 30 c2s1_000010"


def _prw(tmp_path, queries=(PRW_QUERY,)):
    root = str(tmp_path / "PRW")
    sizes = {f: SIZE for f in {**PRW_TRAIN, **PRW_TEST}}
    write_prw(root, PRW_TRAIN, PRW_TEST, [5, 7], list(queries), sizes)
    return root


def test_prw_training_split_drops_unusable_boxes_with_one_warning(tmp_path, reader_warnings):
    root = _prw(tmp_path)
    dicts = load_prw(root, "train")
    assert summary(dicts) == {
        "c1s1_000001.jpg": [([10, 10, 30, 40], 0)],
        "c1s1_000002.jpg": [([1, 1, 11, 11], 1)],
    }
    assert reader_warnings == [
        f"'{os.path.join(root, 'annotations')}': 2 boxes in 2 annotation files are degenerate or "
        "outside their image, dropped from the training split: 'c1s1_000001.jpg.mat' row 1: "
        "[40, 10, 40, 30] (xyxy) is degenerate (width 0, height 20); 'c1s1_000002.jpg.mat' row 0: "
        "[500, 500, 510, 510] (xyxy) lies outside the 192x256 (width x height) image"
    ]


def test_prw_test_split_keeps_unusable_boxes_and_warns(tmp_path, reader_warnings):
    root = _prw(tmp_path)
    dicts = load_prw(root, "test")
    # (20, 5, -6, 10) -> clipped (20, 5, 0, 10) -> [20, 5, 20, 15]: kept, the protocol counts it
    assert summary(dicts) == {"c2s1_000010.jpg": [([10, 10, 30, 40], 100), ([20, 5, 20, 15], -1)]}
    assert reader_warnings == [
        f"'{os.path.join(root, 'annotations')}': 1 box in 1 annotation file is degenerate or "
        "outside their image, kept in the test split, as the evaluation protocol counts them: "
        "'c2s1_000010.jpg.mat' row 1: [20, 5, 20, 15] (xyxy) is degenerate (width 0, height 10)"
    ]


@pytest.mark.parametrize(
    "line, problem",
    [
        # x2 = 192 - 32 = 160 < x1, y2 = 15 - 15 = 0 < y1
        (
            "100 192 15 -32 -15 c2s1_000010",
            "[192, 15, 160, 0] (xyxy) is degenerate (width -32, height -15)",
        ),
        (
            "100 500 10 20 30 c2s1_000010",
            "[500, 10, 520, 40] (xyxy) lies outside the 192x256 (width x height) image",
        ),
    ],
)
def test_prw_unusable_query_is_refused(tmp_path, line, problem):
    root = _prw(tmp_path, queries=(PRW_QUERY, line))
    with pytest.raises(DatasetFormatError) as e:
        load_prw(root, "test")
    path = os.path.join(root, "query_info.txt")
    assert str(e.value).startswith(f"'{path}', line 2: query box {problem}")


def test_prw_query_info_not_utf8_names_file_and_byte(tmp_path):
    root = _prw(tmp_path)
    path = os.path.join(root, "query_info.txt")
    with open(path, "wb") as f:  # byte 32 = 28 bytes of line 1 (with its \n) + "101 "
        f.write(PRW_QUERY.encode() + b"\n101 \xff 1 1 1 1 c2s1_000010\n")
    with pytest.raises(DatasetFormatError) as e:
        load_prw(root, "test")
    assert str(e.value) == (
        f"'{path}' is not UTF-8 text: byte 32 (line 2) is 0xff (invalid start byte)"
    )


def test_box_report_lists_the_first_few():
    report = BoxReport("annotations", "train", shown=2)
    for i in range(5):
        report.add(f"'f{i % 3}.mat' row {i}", [0, 0, 0, 5], "is degenerate", file=f"f{i % 3}.mat")
    with captured_log("test_box_report", logging.WARNING) as records:
        report.warn(logging.getLogger("test_box_report"))
    assert records.messages == [
        "'annotations': 5 boxes in 3 annotation files are degenerate or outside their image, "
        "dropped from the training split: 'f0.mat' row 0: [0, 0, 0, 5] (xyxy) is degenerate; "
        "'f1.mat' row 1: [0, 0, 0, 5] (xyxy) is degenerate; and 3 more"
    ]


def test_box_problem_edges():
    assert box_problem([0, 0, 1, 1], 256, 192) is None
    assert box_problem([191, 255, 300, 300], 256, 192) is None  # shares one pixel
    outside = "lies outside the 192x256 (width x height) image"
    assert box_problem([192, 0, 300, 10], 256, 192) == outside
    assert box_problem([0, 256, 10, 300], 256, 192) == outside
    assert box_problem([5, 5, 5, 9]) == "is degenerate (width 0, height 4)"


# ------------------------------------------------------------------------------------- synthetic
SYNTHETIC = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "synthetic")


def test_synthetic_datasets_have_no_unusable_boxes(reader_warnings):
    from dcinet_d2.data.synthetic import ensure_synthetic_datasets

    ensure_synthetic_datasets(progress=False)  # generated once (about 10 s) on a clean clone
    counts = {}
    for name, load in (("CUHK-SYSU", load_cuhk_sysu), ("PRW", load_prw)):
        for split in ("train", "test"):
            dicts = load(os.path.join(SYNTHETIC, name), split)
            counts[name, split] = len(dicts)
            for d in dicts:
                for a in d["annotations"]:
                    problem = box_problem(a["bbox"], d["height"], d["width"])
                    assert problem is None, (d["image_id"], a, problem)
    assert reader_warnings == []
    assert all(n > 0 for n in counts.values())
