"""Training identities: their number C, one numbering across several training sets, start-up checks.

Each reader numbers its training identities ``0 .. C_d - 1`` (``num_train_ids`` in the dataset's
metadata). Training on several sets at once (``DATASETS.TRAIN: ("cuhk_sysu_train", "prw_train")``)
would make identity 0 of both sets one class; :func:`load_training_sets` shifts the identities of
each set after the first by the identities of the sets before it (ours: the order of
``DATASETS.TRAIN``), so the classes are ``0 .. sum(C_d) - 1``, and returns the mapping.
:func:`check_identities` refuses, before the first iteration, identities that the model has no
class for, naming ``MODEL.REID.NUM_IDS``, the dataset and the image.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog, get_detection_dataset_dicts

__all__ = [
    "IdentityRange",
    "dataset_identity_count",
    "num_train_identities",
    "offset_person_ids",
    "load_training_sets",
    "check_identities",
]
logger = logging.getLogger(__name__)


class IdentityRange(dict):
    """One training set's share of the classes: ``{"dataset", "offset", "count"}`` (JSON-ready)."""


def dataset_identity_count(name: str) -> int:
    """``num_train_ids`` of a training set's metadata (the number of its labelled identities).

    Raises:
        ValueError: the metadata has no usable ``num_train_ids`` (names the dataset).
    """
    try:
        count = int(MetadataCatalog.get(name).num_train_ids)
    except Exception as e:  # missing attribute, or the dataset files are not there
        raise ValueError(
            f"the number of training identities could not be read from "
            f"MetadataCatalog.get({name!r}).num_train_ids ({type(e).__name__}: {e}); set "
            "MODEL.REID.NUM_IDS to the number of labelled training identities"
        ) from e
    if count <= 0:
        raise ValueError(f"MetadataCatalog.get({name!r}).num_train_ids = {count}; must be > 0")
    return count


def num_train_identities(cfg: CfgNode) -> int:
    """Number C of classes of the re-id losses: ``MODEL.REID.NUM_IDS``, or when it is 0 the sum of
    ``num_train_ids`` over ``DATASETS.TRAIN`` (each set's identities get their own classes).

    Raises:
        ValueError: ``NUM_IDS`` < 0, or 0 with no training set or a set without the metadata.
    """
    num_ids = int(cfg.MODEL.REID.NUM_IDS)
    if num_ids > 0:
        return num_ids
    if num_ids < 0:
        raise ValueError(f"MODEL.REID.NUM_IDS must be >= 0, got {num_ids}")
    if len(cfg.DATASETS.TRAIN) == 0:
        raise ValueError("MODEL.REID.NUM_IDS is 0 and DATASETS.TRAIN is empty: set NUM_IDS")
    try:
        return sum(dataset_identity_count(name) for name in cfg.DATASETS.TRAIN)
    except ValueError as e:
        raise ValueError(f"MODEL.REID.NUM_IDS is 0 and {e}") from e


def offset_person_ids(dicts: Sequence[dict], offset: int) -> list[dict]:
    """Copies of ``dicts`` whose labelled ``person_id`` (>= 0) are increased by ``offset``."""
    if offset == 0:
        return list(dicts)
    shifted = []
    for d in dicts:
        d = copy.copy(d)
        d["annotations"] = [
            dict(a, person_id=a["person_id"] + offset) if a.get("person_id", -1) >= 0 else a
            for a in d.get("annotations", [])
        ]
        shifted.append(d)
    return shifted


def _max_person_id(dicts: Sequence[dict]) -> int:
    return max(
        (a.get("person_id", -1) for d in dicts for a in d.get("annotations", [])), default=-1
    )


def load_training_sets(
    names: Sequence[str], filter_empty: bool = True
) -> tuple[list[dict], list[IdentityRange]]:
    """Dataset dicts of the training sets, identities numbered across sets (module docstring).

    A single set keeps its own numbering and needs no metadata. With several, a set's count is its
    ``num_train_ids`` metadata, or (a user's set registered without it) its largest identity + 1.

    Returns:
        ``(dicts, ranges)``: the concatenated dicts, and per set its offset and count.
    """
    if len(names) == 0:
        raise ValueError("DATASETS.TRAIN is empty")
    merged: list[dict] = []
    ranges = []
    offset = 0
    for name in names:
        dicts = get_detection_dataset_dicts([name], filter_empty=filter_empty)
        largest = _max_person_id(dicts)
        try:
            count = dataset_identity_count(name)
        except ValueError:
            count = largest + 1
        if len(names) > 1 and largest >= count:  # would run into the next set's classes
            raise ValueError(
                f"training set {name!r} holds identity {largest}, but its metadata "
                f"num_train_ids is {count}: its identities must be 0..{count - 1}"
            )
        merged.extend(offset_person_ids(dicts, offset))
        ranges.append(IdentityRange(dataset=name, offset=offset, count=count))
        offset += count
    if len(names) > 1:
        logger.info(
            "Training identities across %d sets: %s",
            len(names),
            ", ".join(
                f"{r['dataset']} -> {r['offset']}..{r['offset'] + r['count'] - 1}" for r in ranges
            ),
        )
    return merged, ranges


def check_identities(
    dicts: Sequence[dict], num_classes: int, ranges: Sequence[dict[str, Any]] = ()
) -> None:
    """Refuse identities outside ``[-1, num_classes - 1]`` before training starts.

    Raises:
        ValueError: naming ``MODEL.REID.NUM_IDS``, the identity, its image and (when ``ranges``
            are given) the dataset, and how many identities the data holds.
    """
    worst = None
    for d in dicts:
        for a in d.get("annotations", []):
            pid = int(a.get("person_id", -1))
            if pid < -1 or pid >= num_classes:
                if worst is None or pid > worst[0]:
                    worst = (pid, d.get("file_name", d.get("image_id", "?")))
    if worst is None:
        return
    pid, file_name = worst
    if pid < -1:
        raise ValueError(
            f"training data: identity {pid} of image '{file_name}' is neither >= 0 "
            "nor -1 (unlabelled)"
        )
    needed = _max_person_id(dicts) + 1
    sets = ", ".join(f"{r['dataset']}: {r['count']} identities from {r['offset']}" for r in ranges)
    raise ValueError(
        f"MODEL.REID.NUM_IDS: the model has {num_classes} identity classes, but the training data "
        f"holds identity {pid} (image '{file_name}'): the training sets need {needed} classes"
        + (f" ({sets})" if sets else "")
        + f". Set MODEL.REID.NUM_IDS to 0 (counted from the datasets) or to at least {needed}."
    )
