"""Train loader that yields Siamese pairs: images 2k and 2k+1 of every batch share a labelled
identity."""

from __future__ import annotations

import logging
import operator
import random
from collections.abc import Callable, Sequence

import torch.utils.data as torchdata
from detectron2.data import DatasetCatalog, DatasetFromList
from detectron2.data.build import worker_init_reset_seed
from detectron2.data.common import ToIterableDataset
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

from .dataset_mapper import PersonSearchDatasetMapper, UnreadableImageError
from .identities import IdentityRange, check_identities, load_training_sets, num_train_identities
from .image_check import describe_unreadable, find_unreadable_images
from .pairing import anchor_indices, build_partner_index, choose_partner

logger = logging.getLogger(__name__)

__all__ = [
    "PairedDataset",
    "build_paired_train_loader",
    "flatten_pairs",
    "training_dataset_dicts",
    "check_test_images",
    "PairsGroupedByAspectRatio",
]

# Ours: redraws of a pair holding a skipped image before giving up (a loader that only skips).
_MAX_REDRAWS = 100


def training_dataset_dicts(cfg) -> tuple[list[dict], list[IdentityRange]]:
    """The dicts of ``DATASETS.TRAIN``, checked before the first iteration.

    Identities are numbered across the training sets (:func:`~.identities.load_training_sets`)
    and must have a class in the model (:func:`~.identities.check_identities`, when the config
    defines the number of classes); images whose file fails the fast check
    (:mod:`~.image_check`) stop here with their names, or are left out with a warning when
    ``DATALOADER.SKIP_UNREADABLE_IMAGES`` is True.

    Returns:
        ``(dicts, ranges)``: the dicts and, per training set, its identities' offset and count.
    """
    dicts, ranges = load_training_sets(
        cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    )
    try:
        num_classes = num_train_identities(cfg)
    except ValueError:
        num_classes = None  # a model without identity classes (e.g. a plain Faster R-CNN)
    if num_classes is not None:
        check_identities(dicts, num_classes, ranges)
    problems = find_unreadable_images(d["file_name"] for d in dicts)
    if problems and not cfg.DATALOADER.SKIP_UNREADABLE_IMAGES:
        raise UnreadableImageError(
            f"{len(problems)} training images cannot be read:\n{describe_unreadable(problems)}\n"
            "Repair or remove them, or set DATALOADER.SKIP_UNREADABLE_IMAGES True "
            "to train without them."
        )
    if problems:
        bad = {path for path, _ in problems}
        dicts = [d for d in dicts if d["file_name"] not in bad]
        logger.warning(
            "Leaving out %d unreadable training images (DATALOADER.SKIP_UNREADABLE_IMAGES):\n%s",
            len(problems),
            describe_unreadable(problems),
        )
    return dicts, ranges


def check_test_images(dataset_names) -> None:
    """Refuse, before training, test images whose file fails the fast check (names them all)."""
    for name in dataset_names:
        problems = find_unreadable_images(d["file_name"] for d in DatasetCatalog.get(name))
        if problems:
            raise UnreadableImageError(
                f"{len(problems)} images of the test set '{name}' cannot be read (found before "
                f"training, so that the final evaluation does not fail):\n"
                f"{describe_unreadable(problems)}"
            )


class PairedDataset(torchdata.Dataset):
    """Map-style dataset over anchor images; item ``k`` is ``[mapped anchor, mapped partner]``.

    The partner is drawn anew at every access with Python's ``random`` (which Detectron2 seeds per
    process and per data-loader worker, so workers and ranks draw different partners).
    """

    def __init__(
        self,
        dataset_dicts: Sequence[dict],
        mapper: Callable[[dict], dict],
        *,
        fallback: str = "self",
        prefer_other_camera: bool = True,
    ):
        self.partners = build_partner_index(dataset_dicts, prefer_other_camera)
        self.anchors = anchor_indices(self.partners, fallback)
        if len(self.anchors) == 0:
            raise ValueError(
                "No training image has a partner sharing a labelled identity and FALLBACK is 'drop'"
            )
        self.fallback = fallback
        self.mapper = mapper
        # Serialised storage: workers do not copy-on-access the Python dicts (Detectron2's
        # approach).
        self._dicts = DatasetFromList(list(dataset_dicts), copy=True, serialize=True)
        no_partner = sum(1 for p in self.partners if len(p) == 0)
        logger.info(
            "Paired loading: %d images, %d anchors, %d without a partner (fallback '%s').",
            len(self.partners),
            len(self.anchors),
            no_partner,
            fallback,
        )

    def __len__(self) -> int:
        return len(self.anchors)

    def __getitem__(self, k: int) -> list[dict]:
        # A mapper returns None for an image it skips (DATALOADER.SKIP_UNREADABLE_IMAGES): the
        # pair is then drawn again from a random anchor, as Detectron2's MapDataset does.
        for _ in range(_MAX_REDRAWS):
            i = int(self.anchors[k])
            j = choose_partner(i, self.partners, self.fallback, random)
            anchor = self.mapper(self._dicts[i])
            partner = self.mapper(self._dicts[j]) if anchor is not None else None
            if partner is not None:
                return [anchor, partner]
            k = random.randrange(len(self.anchors))
        raise UnreadableImageError(f"{_MAX_REDRAWS} pairs in a row held an unreadable image")


class PairsGroupedByAspectRatio(torchdata.IterableDataset):
    """Batches of ``pairs_per_batch`` pairs whose *first* image has the same orientation
    (landscape ``w > h``, or not), as Detectron2's ``AspectRatioGroupedDataset`` groups single
    images: a batch of like-shaped images needs less padding. A pair stays whole; its second
    image may have the other orientation (ours: the issue's rule, a pair goes to the group of
    its first image). Yields flat lists ``[a0, b0, a1, b1, ...]``."""

    def __init__(self, pairs, pairs_per_batch: int):
        self.pairs = pairs
        self.pairs_per_batch = int(pairs_per_batch)

    def __iter__(self):
        buckets: list[list[list[dict]]] = [[], []]
        for pair in self.pairs:
            first = pair[0]
            bucket = buckets[0 if first["width"] > first["height"] else 1]
            bucket.append(pair)
            if len(bucket) == self.pairs_per_batch:
                yield flatten_pairs(bucket)
                bucket.clear()


def flatten_pairs(batch: list[list[dict]]) -> list[dict]:
    """Collate: ``[[a0, b0], [a1, b1], ...] -> [a0, b0, a1, b1, ...]`` (pair k = items 2k, 2k+1)."""
    return [d for pair in batch for d in pair]


def build_paired_train_loader(
    cfg, mapper: Callable[[dict], dict] | None = None, dataset_dicts=None
):
    """Infinite train loader of paired batches, per process ``IMS_PER_BATCH / world_size`` images.

    Uses Detectron2's :class:`TrainingSampler` (shuffled, sharded by rank),
    ``DATALOADER.NUM_WORKERS`` workers and :func:`worker_init_reset_seed`. With
    ``DATALOADER.ASPECT_RATIO_GROUPING`` (Detectron2's key, True by default) the pairs of a batch
    share the orientation of their first image (:class:`PairsGroupedByAspectRatio`).
    """
    world = comm.get_world_size()
    ims = cfg.SOLVER.IMS_PER_BATCH
    if ims % world != 0 or (ims // world) % 2 != 0:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({ims}) must be a multiple of 2 x the number of processes "
            f"({world}): every process needs whole pairs of images"
        )
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise ValueError(
            f"paired loading supports DATALOADER.SAMPLER_TRAIN 'TrainingSampler', "
            f"got {cfg.DATALOADER.SAMPLER_TRAIN!r}"
        )
    if dataset_dicts is None:
        dataset_dicts, _ = training_dataset_dicts(cfg)
    if mapper is None:
        mapper = PersonSearchDatasetMapper(cfg, is_train=True)
    dataset = PairedDataset(
        dataset_dicts,
        mapper,
        fallback=cfg.DATALOADER.PAIRING.FALLBACK,
        prefer_other_camera=cfg.DATALOADER.PAIRING.PREFER_OTHER_CAMERA,
    )
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        # As Detectron2's build_batch_data_loader: workers yield single pairs, grouped here.
        pairs = torchdata.DataLoader(
            ToIterableDataset(dataset, TrainingSampler(len(dataset))),
            num_workers=cfg.DATALOADER.NUM_WORKERS,
            collate_fn=operator.itemgetter(0),
            worker_init_fn=worker_init_reset_seed,
        )
        return PairsGroupedByAspectRatio(pairs, ims // world // 2)
    return torchdata.DataLoader(
        dataset,
        sampler=TrainingSampler(len(dataset)),
        batch_size=ims // world // 2,
        drop_last=True,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=flatten_pairs,
        worker_init_fn=worker_init_reset_seed,
    )
