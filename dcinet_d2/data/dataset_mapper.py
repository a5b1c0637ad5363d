"""Dataset mapper that carries person identities (``Instances.gt_pids``) through augmentation."""

from __future__ import annotations

import logging

import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils

__all__ = ["PersonSearchDatasetMapper", "UnreadableImageError"]
logger = logging.getLogger(__name__)


class UnreadableImageError(OSError):
    """An image of the dataset cannot be decoded; the message names the file."""


class PersonSearchDatasetMapper(DatasetMapper):
    """Detectron2's :class:`DatasetMapper` plus ``instances.gt_pids`` (LongTensor, -1 = unlabelled).

    Built from a config exactly like ``DatasetMapper`` (ResizeShortestEdge and RandomFlip from
    ``INPUT.*``). At test time nothing changes: the dataset dict keeps its ``queries`` (boxes in
    original image coordinates; the model rescales them to the input image).

    An image that cannot be decoded raises :class:`UnreadableImageError` naming the file; in
    training with ``DATALOADER.SKIP_UNREADABLE_IMAGES`` the mapper returns None instead (the
    loaders then draw another image) and logs a warning per file with the count so far.
    """

    @configurable
    def __init__(self, is_train: bool, *, skip_unreadable: bool = False, **kwargs):
        super().__init__(is_train, **kwargs)
        self.skip_unreadable = bool(skip_unreadable)
        self.skipped: set[str] = set()

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["skip_unreadable"] = bool(is_train and cfg.DATALOADER.SKIP_UNREADABLE_IMAGES)
        return ret

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except (OSError, SyntaxError) as e:  # what Pillow raises on damaged or missing files
            file_name = dataset_dict.get("file_name", "?")
            if not self.skip_unreadable:
                hint = (
                    "; set DATALOADER.SKIP_UNREADABLE_IMAGES True to skip such training images"
                    if self.is_train
                    else ""
                )
                raise UnreadableImageError(
                    f"cannot read image '{file_name}' ({type(e).__name__}: {e}){hint}"
                ) from None
            if file_name not in self.skipped:
                self.skipped.add(file_name)
                logger.warning(
                    "Skipping unreadable training image '%s' (%s: %s); %d skipped so far "
                    "in this loader process",
                    file_name,
                    type(e).__name__,
                    e,
                    len(self.skipped),
                )
            return None

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        annos = [
            utils.transform_instance_annotations(obj, transforms, image_shape)
            for obj in dataset_dict.pop("annotations")
            if obj.get("iscrowd", 0) == 0
        ]
        for obj in annos:
            obj.pop("segmentation", None)
            obj.pop("keypoints", None)
        instances = utils.annotations_to_instances(annos, image_shape)
        instances.gt_pids = torch.tensor(
            [int(obj.get("person_id", -1)) for obj in annos], dtype=torch.int64
        )
        # filter_empty_instances indexes every field, so gt_pids stays aligned with gt_boxes.
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
