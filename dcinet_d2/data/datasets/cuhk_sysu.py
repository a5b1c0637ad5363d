"""Reader of the official CUHK-SYSU release (Xiao et al., CVPR 2017) into Detectron2 dataset dicts.

Layout under ``root`` (DESIGN.md section 3)::

    Image/SSM/*.jpg
    annotation/Images.mat                   Img: per image imname, nAppear,
                                            box(idlocate=[x,y,w,h], ishard)
    annotation/pool.mat                     pool: the test images; training images = all - pool
    annotation/test/train_test/Train.mat    Train: per training identity its appearances
    annotation/test/train_test/TestG{N}.mat TestG{N}: per query, Query and Gallery[N]

Decisions (the community's reference readers do the same unless noted):
- boxes with w or h = 0 are dropped; boxes are converted as the protocol does (int32, then x2=x+w);
- a box that no identity refers to is an unlabelled person (``person_id`` -1);
- training identities are numbered 0..C-1 in the order of ``Train.mat``;
- test identities: query ``k`` (0-based, TestG50 order, the same in every TestG file) has
  ``person_id`` k, and so do its boxes in the gallery images that TestG50 lists;
- an identity box that matches no box of its image in ``Images.mat`` is an error (ours: the
  reference readers skip it silently; we name the file and entry instead);
- (ours) a box that is degenerate after the conversion or shares no pixel with its image is
  dropped from the training split and kept in the test split (the protocol counts it), with one
  warning for ``Images.mat``; a ``Train.mat`` appearance of a dropped box is skipped with one
  warning; a TestG query box of that kind is an error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from detectron2.structures import BoxMode

from .cache import cached, check_image_dicts, check_testg, check_train
from .common import (
    BoxReport,
    DatasetFormatError,
    box_problem,
    check_query_box,
    cuhk_xywh_to_xyxy,
    image_size,
    load_mat,
    mat_box,
    mat_str,
    mat_struct_records,
    require_file,
)

logger = logging.getLogger(__name__)

GALLERY_SIZES = (50, 100, 500, 1000, 2000, 4000)
HOW_TO_GET = (
    "CUHK-SYSU comes from its authors (https://github.com/ShuangLI59/person_search, 'Dataset'); "
    "unpack it so that this folder holds Image/SSM/ and annotation/. "
    "Set $DETECTRON2_DATASETS to the folder holding CUHK-SYSU/, "
    "or run `python datasets/prepare_synthetic.py` for the synthetic stand-in in the same format."
)


def _paths(root: str) -> dict[str, str]:
    ann = os.path.join(root, "annotation")
    return {
        "images": os.path.join(ann, "Images.mat"),
        "pool": os.path.join(ann, "pool.mat"),
        "train": os.path.join(ann, "test", "train_test", "Train.mat"),
        "image_dir": os.path.join(root, "Image", "SSM"),
    }


def testg_path(root: str, gallery_size: int) -> str:
    return os.path.join(root, "annotation", "test", "train_test", f"TestG{gallery_size}.mat")


# ------------------------------------------------------------------------------------------------
# Parsers of the individual files (pure: file -> numpy / python structures)
def _read_images(path: str) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
    """``Images.mat`` -> {image name: (Img entry, index of each kept box in the entry, int32[n, 4]
    xyxy)}; boxes with w or h = 0 (before the conversion) are dropped, as the reference does."""
    _, img = load_mat(path, ["Img"], "the CUHK-SYSU image list (annotation/Images.mat)", HOW_TO_GET)
    records = mat_struct_records(img, ["imname", "box"], path, "variable 'Img'")
    images: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
    for i, rec in enumerate(records):
        name = mat_str(rec["imname"], path, f"Img entry {i}")
        box_records = np.asarray(rec["box"]).reshape(-1)
        xywh = []
        for j, b in enumerate(box_records):
            entry = f"Img entry {i} ('{name}'), box {j}"
            if not isinstance(b, np.void) or "idlocate" not in (b.dtype.names or ()):
                raise DatasetFormatError(
                    f"'{path}', {entry}: expected a struct with field 'idlocate'"
                )
            box = mat_box(b["idlocate"], path, entry)
            if box is None:
                raise DatasetFormatError(f"'{path}', {entry}: empty idlocate")
            xywh.append(box)
        xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
        keep = np.flatnonzero((xywh[:, 2] > 0) & (xywh[:, 3] > 0))
        if name in images:
            raise DatasetFormatError(f"'{path}', Img entry {i}: image '{name}' listed twice")
        images[name] = (i, keep, cuhk_xywh_to_xyxy(xywh[keep]).reshape(-1, 4))
    return images


def read_images_mat(path: str) -> dict[str, np.ndarray]:
    """``Images.mat`` -> {image name: int32[n, 4] xyxy boxes}, boxes with w or h = 0 dropped."""
    return {name: boxes for name, (_, _, boxes) in _read_images(path).items()}


def read_pool_mat(path: str) -> list[str]:
    """``pool.mat`` -> the test image names, in file order."""
    _, pool = load_mat(
        path, ["pool"], "the CUHK-SYSU test image list (annotation/pool.mat)", HOW_TO_GET
    )
    return [mat_str(v, path, f"pool entry {i}") for i, v in enumerate(np.asarray(pool).reshape(-1))]


def read_train_mat(path: str) -> list[list[tuple[str, np.ndarray]]]:
    """``Train.mat`` -> per training identity (file order) its appearances
    [(image name, int32 xyxy)]."""
    _, train = load_mat(
        path, ["Train"], "the CUHK-SYSU training identities (Train.mat)", HOW_TO_GET
    )
    identities = []
    for i, cell in enumerate(np.asarray(train).reshape(-1)):
        entry = f"Train entry {i}"
        ident = mat_struct_records(cell, ["scene"], path, entry)
        if ident.size != 1:
            raise DatasetFormatError(
                f"'{path}', {entry}: expected a 1x1 struct, found {ident.size} elements"
            )
        scenes = mat_struct_records(
            ident[0]["scene"], ["imname", "idlocate"], path, f"{entry}.scene"
        )
        appearances = []
        for j, s in enumerate(scenes):
            name = mat_str(s["imname"], path, f"{entry}.scene({j})")
            box = mat_box(s["idlocate"], path, f"{entry}.scene({j}) ('{name}')")
            if box is None:
                raise DatasetFormatError(f"'{path}', {entry}.scene({j}) ('{name}'): empty idlocate")
            appearances.append((name, cuhk_xywh_to_xyxy(box)))
        identities.append(appearances)
    return identities


def read_testg_mat(path: str, gallery_size: int) -> list[dict[str, Any]]:
    """``TestG{N}.mat`` -> per query (file order) {image_id, bbox int32 xyxy,
    gallery: [(name, box|None)]}."""
    key = f"TestG{gallery_size}"
    _, testg = load_mat(
        path, [key], f"the CUHK-SYSU test protocol with gallery size {gallery_size}", HOW_TO_GET
    )
    records = mat_struct_records(testg, ["Query", "Gallery"], path, f"variable '{key}'")
    queries = []
    for k, rec in enumerate(records):
        entry = f"{key} entry {k}"
        q = mat_struct_records(rec["Query"], ["imname", "idlocate"], path, f"{entry}.Query")[0]
        q_name = mat_str(q["imname"], path, f"{entry}.Query")
        q_box = mat_box(q["idlocate"], path, f"{entry}.Query ('{q_name}')")
        if q_box is None:
            raise DatasetFormatError(f"'{path}', {entry}.Query ('{q_name}'): empty idlocate")
        q_xyxy = cuhk_xywh_to_xyxy(q_box)
        check_query_box(
            q_xyxy, f"'{path}', {entry}.Query ('{q_name}')", f"xyxy; idlocate {q_box.tolist()}"
        )
        gallery = []
        for j, g in enumerate(
            mat_struct_records(rec["Gallery"], ["imname", "idlocate"], path, f"{entry}.Gallery")
        ):
            g_name = mat_str(g["imname"], path, f"{entry}.Gallery({j})")
            g_box = mat_box(g["idlocate"], path, f"{entry}.Gallery({j}) ('{g_name}')")
            gallery.append((g_name, None if g_box is None else cuhk_xywh_to_xyxy(g_box)))
        queries.append({"query_id": k, "image_id": q_name, "bbox": q_xyxy, "gallery": gallery})
    return queries


# ------------------------------------------------------------------------------------------------
def _find_box(boxes: np.ndarray, box: np.ndarray) -> int:
    hits = np.flatnonzero(np.all(boxes == box[None, :], axis=1))
    return int(hits[0]) if hits.size else -1


def _assign(
    pids: dict[str, np.ndarray],
    boxes_of: dict[str, np.ndarray],
    name: str,
    box: np.ndarray,
    pid: int,
    path: str,
    entry: str,
    dropped_of: dict[str, np.ndarray] | None = None,
    skipped: list[str] | None = None,
) -> None:
    """Give ``pid`` to the box of ``name`` equal to ``box``; a box of ``dropped_of`` (dropped from
    the split) is noted in ``skipped`` instead; any other box is an error."""
    if name not in pids:
        raise DatasetFormatError(
            f"'{path}', {entry}: image '{name}' is not in this split of Images.mat/pool.mat"
        )
    idx = _find_box(boxes_of[name], box)
    if idx < 0:
        if dropped_of is not None and name in dropped_of and _find_box(dropped_of[name], box) >= 0:
            if skipped is not None:
                skipped.append(f"{entry} ('{name}')")
            return
        raise DatasetFormatError(
            f"'{path}', {entry}: box {box.tolist()} (xyxy) matches no box of '{name}' "
            f"in Images.mat ({boxes_of[name].tolist()})"
        )
    pids[name][idx] = pid


Sizes = dict[str, tuple[int, int]]


def _screen_boxes(
    root: str, split: str, names: list[str], images: dict
) -> tuple[Sizes, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Image sizes and boxes of a split; unusable boxes (see ``box_problem``) are warned about
    once for ``Images.mat`` and, in the training split, dropped.

    Returns:
        ``({name: (height, width)}, {name: int32[n, 4] boxes kept}, {name: boxes dropped})``.
    """
    p = _paths(root)
    report = BoxReport(p["images"], split)
    sizes, boxes_of, dropped_of = {}, {}, {}
    for name in names:
        entry, index, boxes = images[name]
        height, width = image_size(os.path.join(p["image_dir"], name))
        sizes[name] = (height, width)
        bad = np.zeros(len(boxes), dtype=bool)
        for k, box in enumerate(boxes):
            problem = box_problem(box, height, width)
            if problem is not None:
                report.add(f"Img entry {entry} ('{name}'), box {int(index[k])}", box, problem)
                bad[k] = True
        drop = bad if split == "train" else np.zeros_like(bad)
        boxes_of[name], dropped_of[name] = boxes[~drop], boxes[drop]
    report.warn(logger)
    return sizes, boxes_of, dropped_of


def _image_dicts(
    root: str,
    names: list[str],
    sizes: Sizes,
    boxes_of: dict[str, np.ndarray],
    pids: dict[str, np.ndarray],
) -> list[dict]:
    image_dir = _paths(root)["image_dir"]
    dicts = []
    for name in names:
        height, width = sizes[name]
        dicts.append(
            {
                "file_name": os.path.join(image_dir, name),
                "image_id": name,
                "height": height,
                "width": width,
                "annotations": [
                    {
                        "bbox": [float(v) for v in box],
                        "bbox_mode": BoxMode.XYXY_ABS,
                        "category_id": 0,
                        "person_id": int(pid),
                    }
                    for box, pid in zip(boxes_of[name], pids[name])
                ],
            }
        )
    return dicts


def _build_train(root: str) -> tuple[list[dict], int]:
    p = _paths(root)
    images = _read_images(p["images"])
    pool = set(read_pool_mat(p["pool"]))
    names = sorted(n for n in images if n not in pool)
    if not names:
        raise DatasetFormatError(
            f"'{p['images']}': every image is in pool.mat (the test split); "
            "the training split would be empty"
        )
    sizes, boxes_of, dropped_of = _screen_boxes(root, "train", names, images)
    pids = {n: np.full(len(boxes_of[n]), -1, dtype=np.int64) for n in names}
    identities = read_train_mat(p["train"])
    skipped: list[str] = []
    for pid, appearances in enumerate(identities):
        for j, (name, box) in enumerate(appearances):
            _assign(
                pids,
                boxes_of,
                name,
                box,
                pid,
                p["train"],
                f"Train entry {pid}.scene({j})",
                dropped_of,
                skipped,
            )
    if skipped:
        more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        logger.warning(
            "'%s': %d identity appearance%s of boxes dropped from Images.mat (see the "
            "warning on it) skipped: %s%s",
            p["train"],
            len(skipped),
            "" if len(skipped) == 1 else "s",
            "; ".join(skipped[:10]),
            more,
        )
    return _image_dicts(root, names, sizes, boxes_of, pids), len(identities)


def _check_query_in_image(
    path: str, entry: str, name: str, bbox: np.ndarray, size: tuple[int, int]
) -> None:
    problem = box_problem(bbox, *size)
    if problem is not None:
        raise DatasetFormatError(
            f"'{path}', {entry} ('{name}'): query box {bbox.tolist()} (xyxy) {problem}"
        )


def _build_test(root: str) -> list[dict]:
    p = _paths(root)
    images = _read_images(p["images"])
    names = read_pool_mat(p["pool"])
    if not names:
        raise DatasetFormatError(f"'{p['pool']}' lists no test image")
    missing = [n for n in names if n not in images]
    if missing:
        raise DatasetFormatError(
            f"'{p['pool']}': {len(missing)} test images are not in Images.mat, e.g. '{missing[0]}'"
        )
    sizes, boxes_of, _ = _screen_boxes(root, "test", names, images)
    pids = {n: np.full(len(boxes_of[n]), -1, dtype=np.int64) for n in names}
    protocol_path = testg_path(root, 50)
    queries_of: dict[str, list] = {}
    for q in read_testg_mat(protocol_path, 50):
        k = q["query_id"]
        _assign(
            pids, boxes_of, q["image_id"], q["bbox"], k, protocol_path, f"TestG50 entry {k}.Query"
        )
        _check_query_in_image(
            protocol_path,
            f"TestG50 entry {k}.Query",
            q["image_id"],
            q["bbox"],
            sizes[q["image_id"]],
        )
        for j, (name, box) in enumerate(q["gallery"]):
            if box is not None:
                _assign(
                    pids, boxes_of, name, box, k, protocol_path, f"TestG50 entry {k}.Gallery({j})"
                )
        queries_of.setdefault(q["image_id"], []).append(
            {"query_id": k, "bbox": [float(v) for v in q["bbox"]], "person_id": k}
        )
    dicts = _image_dicts(root, names, sizes, boxes_of, pids)
    for d in dicts:
        if d["image_id"] in queries_of:
            d["queries"] = queries_of[d["image_id"]]
    return dicts


def _read_testg_checked(root: str, gallery_size: int) -> list[dict[str, Any]]:
    """``read_testg_mat``, every query box also checked against its image's size."""
    path = testg_path(root, gallery_size)
    queries = read_testg_mat(path, gallery_size)
    image_dir = _paths(root)["image_dir"]
    for q in queries:
        size = image_size(os.path.join(image_dir, q["image_id"]))
        _check_query_in_image(
            path, f"TestG{gallery_size} entry {q['query_id']}.Query", q["image_id"], q["bbox"], size
        )
    return queries


def _sources(root: str, split: str) -> list[str]:
    p = _paths(root)
    files = [p["images"], p["pool"], p["image_dir"]]
    return files + ([p["train"]] if split == "train" else [testg_path(root, 50)])


def load_cuhk_sysu(root: str, split: str) -> list[dict]:
    """Dataset dicts of the ``"train"`` or ``"test"`` (gallery = pool) split (cached, see
    ``cache.py``)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    p = _paths(root)
    for key, what in (("images", "annotation/Images.mat"), ("pool", "annotation/pool.mat")):
        require_file(p[key], f"the CUHK-SYSU file {what}", HOW_TO_GET)
    if split == "train":
        dicts, _ = cached(
            "cuhk_sysu",
            root,
            "train",
            _sources(root, split),
            lambda: _build_train(root),
            check_train,
        )
        return dicts
    return cached(
        "cuhk_sysu",
        root,
        "test",
        _sources(root, split),
        lambda: _build_test(root),
        check_image_dicts,
    )


def num_train_identities(root: str) -> int:
    """C, the number of training identities (entries of Train.mat); uses the same cache as the
    loader."""
    _, c = cached(
        "cuhk_sysu", root, "train", _sources(root, "train"), lambda: _build_train(root), check_train
    )
    return c


def load_test_galleries(root: str, gallery_size: int) -> list[dict[str, Any]]:
    """The gallery of every query for a protocol gallery size, in official query order.

    Args:
        root: dataset root.
        gallery_size: one of 50, 100, 500, 1000, 2000, 4000 (read from ``TestG{N}.mat``), or -1
            for the full set: every pool image except the query's own, target boxes from the test
            annotations (then ``gallery`` is a lazy :class:`FullSetGallery` with the same item
            type).
    Returns:
        per query ``{"query_id", "image_id", "bbox": int32[4] xyxy,
        "gallery": [(image_id, int32[4] | None)]}``.
    """
    if gallery_size == -1:
        return _full_galleries(root)
    if gallery_size not in GALLERY_SIZES:
        raise ValueError(
            f"CUHK-SYSU gallery size must be one of {GALLERY_SIZES} or -1 (full set), "
            f"got {gallery_size}"
        )
    path = testg_path(root, gallery_size)
    sources = [path, _paths(root)["image_dir"]]
    return cached(
        "cuhk_sysu",
        root,
        f"testg{gallery_size}",
        sources,
        lambda: _read_testg_checked(root, gallery_size),
        check_testg,
    )


class FullSetGallery(Sequence):
    """The full-set gallery of one query: every test image except the query's own, as a lazy
    sequence of ``(image_id, int32[4] xyxy | None)`` (a materialised list would be 2,900 x 6,977
    tuples).

    Attributes:
        image_ids: all test image names in pool order (shared between queries).
        exclude: the query's own image name.
        targets: {image_id: int32[4]} the query person's boxes in gallery images.
    """

    def __init__(self, image_ids: list[str], exclude: str, targets: dict[str, np.ndarray]):
        self.image_ids = image_ids
        self.exclude = exclude
        self.targets = {k: v for k, v in targets.items() if k != exclude}
        self._skip = image_ids.index(exclude) if exclude in image_ids else len(image_ids)

    def __len__(self) -> int:
        return len(self.image_ids) - (self._skip < len(self.image_ids))

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        name = self.image_ids[i + (i >= self._skip)]
        return name, self.targets.get(name)


def _full_galleries(root: str) -> list[dict[str, Any]]:
    dicts = load_cuhk_sysu(root, "test")
    image_ids = [d["image_id"] for d in dicts]
    targets: dict[int, dict[str, np.ndarray]] = {}
    queries = []
    for d in dicts:
        for a in d["annotations"]:
            if a["person_id"] >= 0:
                targets.setdefault(a["person_id"], {})[d["image_id"]] = np.asarray(
                    a["bbox"], dtype=np.int32
                )
        for q in d.get("queries", []):
            queries.append(
                {
                    "query_id": q["query_id"],
                    "image_id": d["image_id"],
                    "bbox": np.asarray(q["bbox"], dtype=np.int32),
                    "pid": q["person_id"],
                }
            )
    queries.sort(key=lambda q: q["query_id"])
    for q in queries:
        q["gallery"] = FullSetGallery(image_ids, q["image_id"], targets.get(q.pop("pid"), {}))
    return queries
