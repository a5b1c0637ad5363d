"""Reader of the official PRW release (Zheng et al., CVPR 2017) into Detectron2 dataset dicts.

Layout under ``root`` (DESIGN.md section 3)::

    frames/c{cam}s{seq}_{frame}.jpg
    annotations/{frame}.jpg.mat   N x 5 [id, x, y, w, h] under 'box_new', 'anno_file' or
                                  'anno_previous'
    frame_train.mat               img_index_train: training frame names (no extension)
    frame_test.mat                img_index_test: test frame names
    ID_train.mat                  ID_train: the training identity ids
    query_info.txt                'pid x y w h frame' per line (2,057 lines in the release)

Decisions (the community's reference readers do the same unless noted):
- id -2 = unlabelled person (``person_id`` -1); negative coordinates clipped to 0, boxes converted
  exactly as the protocol does (annotations and queries differ, see ``common.py``);
- training identities: the ids of ``ID_train.mat`` numbered 0..C-1 in file order (ours). A labelled
  id in a training frame that ``ID_train.mat`` does not list is kept as unlabelled with a warning
  (ours: the release is consistent; this only guards against edited files);
- test identities keep their raw PRW ids; queries keep the line order of ``query_info.txt``
  (``query_id`` = 0-based line index, blank lines skipped);
- ``camera_id`` is the number after ``c`` in the frame name;
- (ours) an annotation box that is degenerate after the conversion (e.g. a negative width, which
  the clipping turns into 0) or shares no pixel with its frame is dropped from the training split
  and kept in the test split (the protocol counts it), with one warning per split; a query box of
  that kind is an error, and so is a ``query_info.txt`` that is not UTF-8.
"""

from __future__ import annotations

import io
import logging
import os
import re
from typing import Any

import numpy as np
from detectron2.structures import BoxMode

from .cache import cached, check_image_dicts, check_train
from .common import (
    BoxReport,
    DatasetFormatError,
    box_problem,
    check_query_box,
    image_size,
    load_mat,
    mat_str,
    prw_annotation_xywh_to_xyxy,
    prw_query_xywh_to_xyxy,
    require_file,
)

logger = logging.getLogger(__name__)

ANNOTATION_KEYS = ("box_new", "anno_file", "anno_previous")
FRAME_NAME = re.compile(r"^c(\d+)s(\d+)_(\d+)$")
HOW_TO_GET = (
    "PRW comes from its authors (https://github.com/liangzheng06/PRW-baseline, 'PRW-v16.04.20'); "
    "unpack it so that this folder holds frames/, annotations/ and the .mat/.txt files. "
    "Set $DETECTRON2_DATASETS to the folder holding PRW/, "
    "or run `python datasets/prepare_synthetic.py` for the synthetic stand-in in the same format."
)


def _paths(root: str) -> dict[str, str]:
    return {
        "train_frames": os.path.join(root, "frame_train.mat"),
        "test_frames": os.path.join(root, "frame_test.mat"),
        "ids": os.path.join(root, "ID_train.mat"),
        "queries": os.path.join(root, "query_info.txt"),
        "frame_dir": os.path.join(root, "frames"),
        "annotation_dir": os.path.join(root, "annotations"),
    }


def camera_id(frame: str) -> int:
    """Camera number of a PRW frame name (``c3s2_012345`` or ``c3s2_012345.jpg`` -> 3)."""
    m = FRAME_NAME.match(os.path.splitext(os.path.basename(frame))[0])
    if m is None:
        raise DatasetFormatError(
            f"PRW frame name '{frame}' does not follow c{{cam}}s{{seq}}_{{frame}}"
        )
    return int(m.group(1))


def read_frame_list(path: str, key: str) -> list[str]:
    """``frame_{train,test}.mat`` -> frame names without extension, in file order."""
    _, frames = load_mat(path, [key], f"the PRW frame list ({os.path.basename(path)})", HOW_TO_GET)
    names = [
        mat_str(v, path, f"{key} entry {i}") for i, v in enumerate(np.asarray(frames).reshape(-1))
    ]
    if not names:
        raise DatasetFormatError(f"'{path}': {key} lists no frame")
    for i, n in enumerate(names):
        if not FRAME_NAME.match(n):
            raise DatasetFormatError(
                f"'{path}', {key} entry {i}: '{n}' is not a frame name c{{cam}}s{{seq}}_{{frame}}"
            )
    return names


def read_train_ids(path: str) -> list[int]:
    """``ID_train.mat`` -> the training identity ids, in file order."""
    _, ids = load_mat(path, ["ID_train"], "the PRW training identities (ID_train.mat)", HOW_TO_GET)
    arr = np.asarray(ids, dtype=np.float64).reshape(-1)
    if (
        arr.size == 0
        or np.any(arr != np.round(arr))
        or np.any(arr < 0)
        or len(set(arr.tolist())) != arr.size
    ):
        raise DatasetFormatError(
            f"'{path}': ID_train must hold distinct non-negative integers, found {arr[:10]}..."
        )
    return [int(v) for v in arr]


def read_frame_annotation(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One ``annotations/{frame}.jpg.mat`` -> (raw ids int64[n], int32[n, 4] xyxy boxes)."""
    key, anno = load_mat(path, ANNOTATION_KEYS, "a PRW frame annotation", HOW_TO_GET)
    arr = np.asarray(anno, dtype=np.float64)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.int32)
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise DatasetFormatError(
            f"'{path}', variable '{key}': expected an N x 5 [id, x, y, w, h] matrix, "
            f"found shape {arr.shape}"
        )
    ids = arr[:, 0]
    bad = np.flatnonzero((ids != np.round(ids)) | ((ids < 0) & (ids != -2)))
    if bad.size:
        raise DatasetFormatError(
            f"'{path}', variable '{key}', row {bad[0]}: id {ids[bad[0]]} is neither a "
            "non-negative integer nor -2 (unlabelled)"
        )
    return ids.astype(np.int64), prw_annotation_xywh_to_xyxy(arr[:, 1:])


def read_query_info(path: str) -> list[dict[str, Any]]:
    """``query_info.txt`` -> [{query_id, person_id, bbox int32 xyxy, frame, line}] in line order.

    Raises:
        DatasetFormatError: a line that is not 'pid x y w h frame', a degenerate query box, or a
            file that is not UTF-8 text (naming the byte).
    """
    require_file(path, "the PRW query list (query_info.txt)", HOW_TO_GET)
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DatasetFormatError(
            f"'{path}' is not UTF-8 text: byte {e.start} (line {line}) is "
            f"0x{data[e.start]:02x} ({e.reason})"
        ) from None
    queries = []
    for lineno, line in enumerate(io.StringIO(text, newline=None), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 6:
                raise ValueError(f"expected 6 fields 'pid x y w h frame', found {len(parts)}")
            pid = int(parts[0])
            xywh = np.array([float(v) for v in parts[1:5]])
        except ValueError as e:
            raise DatasetFormatError(f"'{path}', line {lineno}: {e}: {line.strip()!r}") from None
        frame = parts[5]
        if not FRAME_NAME.match(frame):
            raise DatasetFormatError(f"'{path}', line {lineno}: '{frame}' is not a frame name")
        bbox = prw_query_xywh_to_xyxy(xywh)
        check_query_box(bbox, f"'{path}', line {lineno}", "xyxy", f": {line.strip()!r}")
        queries.append(
            {
                "query_id": len(queries),
                "person_id": pid,
                "bbox": bbox,
                "frame": frame,
                "line": lineno,
            }
        )
    return queries


# ------------------------------------------------------------------------------------------------
def _frame_dicts(root: str, frames: list[str], split: str, pid_map=None) -> list[dict]:
    p = _paths(root)
    dicts = []
    unknown = 0
    report = BoxReport(p["annotation_dir"], split)
    for frame in frames:
        image_name = frame + ".jpg"
        mat_name = image_name + ".mat"
        raw_ids, boxes = read_frame_annotation(os.path.join(p["annotation_dir"], mat_name))
        file_name = os.path.join(p["frame_dir"], image_name)
        height, width = image_size(file_name)
        drop = np.zeros(len(boxes), dtype=bool)  # stays False in the test split
        for row, box in enumerate(boxes):
            problem = box_problem(box, height, width)
            if problem is not None:
                report.add(f"'{mat_name}' row {row}", box, problem, file=mat_name)
                drop[row] = split == "train"
        raw_ids, boxes = raw_ids[~drop], boxes[~drop]
        pids = np.where(raw_ids == -2, -1, raw_ids)
        if pid_map is not None:
            mapped = np.array(
                [pid_map.get(int(i), -1) if i >= 0 else -1 for i in pids], dtype=np.int64
            )
            unknown += int(np.sum((pids >= 0) & (mapped < 0)))
            pids = mapped
        dicts.append(
            {
                "file_name": file_name,
                "image_id": image_name,
                "height": height,
                "width": width,
                "camera_id": camera_id(frame),
                "annotations": [
                    {
                        "bbox": [float(v) for v in box],
                        "bbox_mode": BoxMode.XYXY_ABS,
                        "category_id": 0,
                        "person_id": int(pid),
                    }
                    for box, pid in zip(boxes, pids)
                ],
            }
        )
    report.warn(logger)
    if unknown:
        logger.warning(
            "PRW %s: %d labelled boxes in training frames have ids not listed in ID_train.mat; "
            "they are treated as unlabelled.",
            root,
            unknown,
        )
    return dicts


def _build_train(root: str) -> tuple[list[dict], int]:
    p = _paths(root)
    train_ids = read_train_ids(p["ids"])
    pid_map = {raw: i for i, raw in enumerate(train_ids)}
    frames = read_frame_list(p["train_frames"], "img_index_train")
    return _frame_dicts(root, frames, "train", pid_map), len(train_ids)


def _build_test(root: str) -> list[dict]:
    p = _paths(root)
    dicts = _frame_dicts(root, read_frame_list(p["test_frames"], "img_index_test"), "test")
    by_name = {d["image_id"]: d for d in dicts}
    for q in read_query_info(p["queries"]):
        d = by_name.get(q["frame"] + ".jpg")
        if d is None:
            raise DatasetFormatError(
                f"'{p['queries']}': query {q['query_id']} is in frame '{q['frame']}', "
                "which frame_test.mat does not list"
            )
        problem = box_problem(q["bbox"], d["height"], d["width"])
        if problem is not None:
            raise DatasetFormatError(
                f"'{p['queries']}', line {q['line']}: query box "
                f"{q['bbox'].tolist()} (xyxy) {problem}"
            )
        d.setdefault("queries", []).append(
            {
                "query_id": q["query_id"],
                "bbox": [float(v) for v in q["bbox"]],
                "person_id": q["person_id"],
            }
        )
    return dicts


def _sources(root: str, split: str) -> list[str]:
    p = _paths(root)
    key = "train_frames" if split == "train" else "test_frames"
    files = [p[key], p["frame_dir"], p["annotation_dir"]]
    return files + ([p["ids"]] if split == "train" else [p["queries"]])


def _annotation_sources(root: str, split: str) -> list[str]:
    # Every annotation file of the split takes part in the cache key (an edited .mat invalidates
    # it).
    p = _paths(root)
    key, var = (
        ("train_frames", "img_index_train")
        if split == "train"
        else ("test_frames", "img_index_test")
    )
    frames = read_frame_list(p[key], var)
    return [os.path.join(p["annotation_dir"], f + ".jpg.mat") for f in frames]


def load_prw(root: str, split: str) -> list[dict]:
    """Dataset dicts of the ``"train"`` or ``"test"`` (gallery) split (cached, see ``cache.py``)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    sources = _sources(root, split) + _annotation_sources(root, split)
    if split == "train":
        dicts, _ = cached(
            "prw",
            root,
            "train",
            sources,
            lambda: _build_train(root),
            lambda v: check_train(v, camera=True),
        )
        return dicts
    return cached(
        "prw",
        root,
        "test",
        sources,
        lambda: _build_test(root),
        lambda v: check_image_dicts(v, camera=True),
    )


def num_train_identities(root: str) -> int:
    """C, the number of training identities (entries of ID_train.mat)."""
    return len(read_train_ids(_paths(root)["ids"]))
