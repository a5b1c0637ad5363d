"""What each query searches, and where its targets are: the per-query search problems.

A :class:`SearchQuery` names the query's own image (never searched), its box, the gallery images it
searches and the target box in every image that holds its identity. Both implementations of the
protocol (:mod:`.protocol`, vectorised, and `tests/evaluation/reference.py`, a plain loop) consume
the same queries, so the rules below are written once:

- A gallery is either an explicit list of image ids (CUHK-SYSU ``TestG{N}``) or ``None``, meaning
  every image of the test set (CUHK-SYSU full set, PRW).
- The query's own image is never part of its gallery, even when an explicit list names it.
- Ours (the reference scripts disagree: OIM's counts a repeated entry twice, SeqNet's counts its
  target twice but its detections once): an image named several times in one gallery list is
  searched once and, if it holds the target, counted once. Repeats that disagree about the target
  box are an error.
- ``exclude_camera`` (PRW cross-camera variant): gallery images of that camera are not searched.
- Targets outside the query's effective gallery (e.g. same-camera frames in the cross-camera
  variant) are ignored: only targets inside it count as ground truth.

The builders turn Detectron2 dataset dicts (``dcinet_d2.data.datasets``) and the CUHK-SYSU
``TestG{N}`` gallery lists into queries; they use no Detectron2 code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "SearchQuery",
    "GroundTruth",
    "to_int_box",
    "dataset_image_ids",
    "detection_ground_truth",
    "image_cameras",
    "cuhk_sysu_queries",
    "prw_queries",
]


def to_int_box(box: Any, what: str = "box") -> np.ndarray:
    """Return ``box`` (4 numbers x1, y1, x2, y2) as ``np.int32[4]``, as the reference casts boxes.

    Raises:
        ValueError: if ``box`` does not hold exactly 4 finite numbers, or x2 < x1 or y2 < y1.
    """
    arr = np.asarray(box, dtype=np.float64).reshape(-1)
    if arr.shape != (4,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be 4 finite numbers [x1, y1, x2, y2], got {box!r}")
    out = arr.astype(np.int32)
    if out[2] < out[0] or out[3] < out[1]:
        raise ValueError(f"{what} must satisfy x1 <= x2 and y1 <= y2, got {box!r}")
    return out


@dataclass(frozen=True)
class SearchQuery:
    """One query of a person-search protocol.

    Attributes:
        query_id: 0-based official index of the query.
        image_id: file name of the query's own image (never searched).
        box: ``np.int32[4]`` query box x1, y1, x2, y2 (used by CBGM as the first context person).
        targets: gallery image id -> ``np.int32[4]`` target box (x1, y1, x2, y2) in that image.
        gallery: image ids searched, or ``None`` for every image of the test set.
        exclude_camera: if not ``None``, gallery images of this camera are not searched.
    """

    query_id: int
    image_id: str
    box: np.ndarray
    targets: Mapping[str, np.ndarray] = field(default_factory=dict)
    gallery: Sequence[str] | None = None
    exclude_camera: int | None = None


# image id -> (boxes float64 [n, 4] x1y1x2y2, person ids int64 [n]); person id -1 = unlabelled.
GroundTruth = Mapping[str, "tuple[np.ndarray, np.ndarray]"]


def dataset_image_ids(dataset_dicts: Sequence[Mapping[str, Any]]) -> list[str]:
    """Image ids of the test dicts, in dataset order.

    Raises:
        ValueError: if a dict has no ``image_id`` or two dicts share one.
    """
    ids = []
    for i, d in enumerate(dataset_dicts):
        if "image_id" not in d:
            raise ValueError(f"dataset dict {i} has no 'image_id'")
        ids.append(str(d["image_id"]))
    if len(set(ids)) != len(ids):
        seen, dup = set(), []
        for x in ids:
            if x in seen:
                dup.append(x)
            seen.add(x)
        raise ValueError(f"image ids are not unique in the dataset: {sorted(set(dup))[:5]}")
    return ids


def detection_ground_truth(
    dataset_dicts: Sequence[Mapping[str, Any]],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Ground-truth person boxes and ids per image, from the test dicts' ``annotations``.

    Boxes are taken as the dataset gives them (already converted and int-cast by the loaders).
    """
    gt = {}
    for image_id, d in zip(dataset_image_ids(dataset_dicts), dataset_dicts):
        annos = d.get("annotations", [])
        boxes = np.asarray([a["bbox"] for a in annos], dtype=np.float64).reshape(-1, 4)
        pids = np.asarray([int(a.get("person_id", -1)) for a in annos], dtype=np.int64)
        gt[image_id] = (boxes, pids)
    return gt


def image_cameras(dataset_dicts: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``image_id -> camera_id`` (PRW dicts carry ``camera_id``).

    Raises:
        ValueError: if a dict has no ``camera_id``.
    """
    cams = {}
    for image_id, d in zip(dataset_image_ids(dataset_dicts), dataset_dicts):
        if "camera_id" not in d:
            raise ValueError(f"dataset dict of {image_id} has no 'camera_id' (needed for PRW)")
        cams[image_id] = int(d["camera_id"])
    return cams


def _dataset_queries(dataset_dicts: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict]]:
    """(image id, query dict) for every query of the dataset, sorted by ``query_id``."""
    out = []
    for image_id, d in zip(dataset_image_ids(dataset_dicts), dataset_dicts):
        for q in d.get("queries", []):
            out.append((image_id, q))
    out.sort(key=lambda x: int(x[1]["query_id"]))
    ids = [int(q["query_id"]) for _, q in out]
    if len(set(ids)) != len(ids):
        raise ValueError("query ids are not unique in the dataset")
    return out


def _first_boxes_by_person(
    dataset_dicts: Sequence[Mapping[str, Any]],
) -> dict[int, dict[str, np.ndarray]]:
    """person id -> {image id -> box of the *first* annotation of that person in that image}.

    The first box is used when an image holds one identity twice (an annotation error): the
    reference (SeqNet, PRW) flattens the boxes and reads the first four numbers.
    """
    index: dict[int, dict[str, np.ndarray]] = {}
    for image_id, d in zip(dataset_image_ids(dataset_dicts), dataset_dicts):
        for a in d.get("annotations", []):
            pid = int(a.get("person_id", -1))
            if pid < 0:
                continue
            per_image = index.setdefault(pid, {})
            if image_id in per_image:
                logger.warning(
                    "person %d annotated twice in %s: the first box is its target", pid, image_id
                )
                continue
            per_image[image_id] = to_int_box(
                a["bbox"], f"annotation box of person {pid} in {image_id}"
            )
    return index


def cuhk_sysu_queries(
    dataset_dicts: Sequence[Mapping[str, Any]],
    galleries: Sequence[Mapping[str, Any]] | None = None,
) -> list[SearchQuery]:
    """CUHK-SYSU queries, for a ``TestG{N}`` gallery size or for the full set.

    Args:
        dataset_dicts: the test dicts (one per pool image; query images carry ``queries``).
        galleries: the output of ``load_test_galleries(root, N)``: one dict per query in official
            order with ``query_id``, ``image_id``, ``bbox`` and ``gallery`` (a list of
            ``(image_id, bbox or None)``). ``None`` means the full set: every pool image except the
            query's own, the targets being the annotations with the query's ``person_id``.

    Returns:
        The queries, sorted by ``query_id``.

    Raises:
        ValueError: on queries that disagree with the dataset, unknown gallery images, or repeated
            gallery entries with different target boxes.
    """
    image_ids = dataset_image_ids(dataset_dicts)
    known = set(image_ids)
    ds_queries = _dataset_queries(dataset_dicts)
    if galleries is None:
        by_person = _first_boxes_by_person(dataset_dicts)
        out = []
        for image_id, q in ds_queries:
            pid = int(q["person_id"])
            if pid < 0:
                raise ValueError(f"query {q['query_id']} has no identity (person_id {pid})")
            targets = {k: v for k, v in by_person.get(pid, {}).items() if k != image_id}
            out.append(
                SearchQuery(int(q["query_id"]), image_id, to_int_box(q["bbox"]), targets, None)
            )
        return out

    ds_by_id = {int(q["query_id"]): (image_id, q) for image_id, q in ds_queries}
    out = []
    n_dup = 0
    for entry in galleries:
        qid = int(entry["query_id"])
        image_id = str(entry["image_id"])
        box = to_int_box(entry["bbox"], f"query {qid} box")
        if qid in ds_by_id and ds_by_id[qid][0] != image_id:
            raise ValueError(
                f"query {qid}: gallery list says image {image_id}, dataset says {ds_by_id[qid][0]}"
            )
        listed = list(entry["gallery"])
        names = [str(name) for name, _ in listed]
        unknown = set(names) - known
        if unknown:
            raise ValueError(
                f"query {qid}: gallery image {sorted(unknown)[0]} is not in the dataset"
            )
        targets: dict[str, np.ndarray] = {}
        for name, (_, g_box) in zip(names, listed):
            if g_box is None:
                continue
            g_box = to_int_box(g_box, f"query {qid} target box in {name}")
            if name in targets and not np.array_equal(targets[name], g_box):
                raise ValueError(
                    f"query {qid}: gallery image {name} listed twice with different targets"
                )
            targets[name] = g_box
        unique = list(dict.fromkeys(names))  # first occurrence order
        if len(unique) != len(names):
            n_dup += len(names) - len(unique)
            with_target = {name for name, (_, b) in zip(names, listed) if b is not None}
            without = {name for name, (_, b) in zip(names, listed) if b is None}
            both = with_target & without
            if both:
                raise ValueError(
                    f"query {qid}: gallery image {sorted(both)[0]} listed twice "
                    "with different targets"
                )
        targets.pop(image_id, None)  # the query's own image is never searched
        gallery = tuple(name for name in unique if name != image_id)
        out.append(SearchQuery(qid, image_id, box, targets, gallery))
    if n_dup:
        logger.warning("%d repeated gallery entries were searched and counted once", n_dup)
    out.sort(key=lambda q: q.query_id)
    return out


def prw_queries(
    dataset_dicts: Sequence[Mapping[str, Any]], cross_camera: bool = False
) -> list[SearchQuery]:
    """PRW queries: gallery = every test frame except the query's own; targets = the frames that
    hold the query's ``person_id``. With ``cross_camera``, frames of the query's camera are left
    out.

    Returns:
        The queries, sorted by ``query_id``.
    """
    cams = image_cameras(dataset_dicts)
    by_person = _first_boxes_by_person(dataset_dicts)
    out = []
    for image_id, q in _dataset_queries(dataset_dicts):
        pid = int(q["person_id"])
        if pid < 0:
            raise ValueError(f"query {q['query_id']} has no identity (person_id {pid})")
        targets = {k: v for k, v in by_person.get(pid, {}).items() if k != image_id}
        out.append(
            SearchQuery(
                int(q["query_id"]),
                image_id,
                to_int_box(q["bbox"]),
                targets,
                None,
                cams[image_id] if cross_camera else None,
            )
        )
    return out
