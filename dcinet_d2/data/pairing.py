"""Choice of the Siamese partner image (pure functions, no Detectron2).

Every training step of I-Net / DC-I-Net sees pairs of scene images that share at least one labelled
identity. :func:`build_partner_index` lists, for each image, the images it may be paired with, and
:func:`choose_partner` draws one.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

__all__ = ["FALLBACKS", "labelled_ids", "build_partner_index", "anchor_indices", "choose_partner"]

#: What an image with no possible partner is paired with (config key DATALOADER.PAIRING.FALLBACK).
FALLBACKS = ("self", "random", "drop")


def labelled_ids(dataset_dict: dict) -> set[int]:
    """The labelled identities (``person_id >= 0``) of one dataset dict."""
    return {
        int(a["person_id"])
        for a in dataset_dict.get("annotations", [])
        if a.get("person_id", -1) >= 0
    }


def build_partner_index(
    dataset_dicts: Sequence[dict], prefer_other_camera: bool = True
) -> list[np.ndarray]:
    """For each image, the indices of the other images that share a labelled identity with it.

    Args:
        dataset_dicts: Detectron2 dataset dicts with ``person_id`` per annotation (and ``camera_id``
            per image for datasets with cameras).
        prefer_other_camera: when an image has candidates from other cameras (``camera_id``
            differs), keep only those; otherwise keep all.
    Returns:
        list of int64 arrays (sorted, possibly empty), one per image.
    """
    ids_of = [labelled_ids(d) for d in dataset_dicts]
    images_of: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(ids_of):
        for pid in ids:
            images_of[pid].append(i)
    cams = [d.get("camera_id") for d in dataset_dicts]
    partners = []
    for i, ids in enumerate(ids_of):
        cand = sorted({j for pid in ids for j in images_of[pid] if j != i})
        if prefer_other_camera and cams[i] is not None:
            other = [j for j in cand if cams[j] is not None and cams[j] != cams[i]]
            if other:
                cand = other
        partners.append(np.asarray(cand, dtype=np.int64))
    return partners


def anchor_indices(partners: Sequence[np.ndarray], fallback: str) -> np.ndarray:
    """Images that serve as anchors: all, or with ``fallback == "drop"`` only those with a
    partner."""
    if fallback not in FALLBACKS:
        raise ValueError(
            f"DATALOADER.PAIRING.FALLBACK must be one of {FALLBACKS}, got {fallback!r}"
        )
    if fallback == "drop":
        return np.asarray([i for i, p in enumerate(partners) if len(p)], dtype=np.int64)
    return np.arange(len(partners), dtype=np.int64)


def choose_partner(
    index: int, partners: Sequence[np.ndarray], fallback: str, rng: random.Random | None = None
) -> int:
    """Draw the partner of image ``index``: uniformly among ``partners[index]``, else by
    ``fallback``.

    ``"self"`` returns ``index`` (the image is paired with a second augmented copy of itself),
    ``"random"`` a uniformly drawn other image, ``"drop"`` raises (such images are no anchors).
    """
    rng = rng or random
    cand = partners[index]
    if len(cand):
        return int(cand[rng.randrange(len(cand))])
    if fallback == "self" or len(partners) == 1:
        return index
    if fallback == "random":
        j = rng.randrange(len(partners) - 1)
        return j + (j >= index)
    raise ValueError(
        f"image {index} has no partner sharing a labelled identity and FALLBACK is 'drop'"
    )
