"""Dataset mapper that carries person identities (``Instances.gt_pids``) through augmentation."""
from __future__ import annotations

import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils

__all__ = ["PersonSearchDatasetMapper"]


class PersonSearchDatasetMapper(DatasetMapper):
    """Detectron2's :class:`DatasetMapper` plus ``instances.gt_pids`` (LongTensor, -1 = unlabelled).

    Built from a config exactly like ``DatasetMapper`` (ResizeShortestEdge and RandomFlip from
    ``INPUT.*``). At test time nothing changes: the dataset dict keeps its ``queries`` (boxes in
    original image coordinates; the model rescales them to the input image).
    """

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
        instances.gt_pids = torch.tensor([int(obj.get("person_id", -1)) for obj in annos], dtype=torch.int64)
        # filter_empty_instances indexes every field, so gt_pids stays aligned with gt_boxes.
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
