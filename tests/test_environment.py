"""Detectron2 as installed by tools/setup_env.sh works under the current numpy and Pillow."""

from __future__ import annotations

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.structures import BoxMode

from .data.official_files import write_image


def test_detectron2_train_loader_builds(tmp_path):
    # data/build.py (np.bool/np.int in the class histogram) and transforms (Image.LINEAR) are used
    # here
    path = str(tmp_path / "a.jpg")
    write_image(path, 48, 40)
    record = {
        "file_name": path,
        "image_id": 0,
        "height": 40,
        "width": 48,
        "annotations": [
            {"bbox": [1.0, 2.0, 20.0, 30.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
        ],
    }
    DatasetCatalog.register("env_check_tiny", lambda: [record])
    MetadataCatalog.get("env_check_tiny").thing_classes = ["person"]
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("env_check_tiny",)
    cfg.INPUT.MIN_SIZE_TRAIN = (20,)
    cfg.SOLVER.IMS_PER_BATCH = 1
    cfg.DATALOADER.NUM_WORKERS = 0
    batch = next(iter(build_detection_train_loader(cfg)))
    # shortest edge 40 -> 20: scale 0.5, image 24 x 20 (w x h)
    assert batch[0]["image"].shape == (3, 20, 24)
    assert np.allclose(
        sorted(batch[0]["instances"].gt_boxes.tensor[0, [1, 3]].tolist()), [1.0, 15.0]
    )


def test_resize_transform_uses_bilinear():
    from detectron2.data import transforms as T
    from PIL import Image

    t = T.ResizeTransform(4, 4, 2, 2)
    assert t.interp == Image.BILINEAR
    out = t.apply_image(np.arange(16, dtype=np.uint8).reshape(4, 4))
    assert out.shape == (2, 2)


def test_pure_python_build_has_placeholder_ops():
    import detectron2._C as C
    import pytest

    if not C.__file__.endswith(".py"):
        pytest.skip("Detectron2 built from source with its compiled ops")
    with pytest.raises(AttributeError, match="without its C\\+\\+/CUDA ops"):
        C.nms_rotated  # noqa: B018
    from detectron2.layers import batched_nms

    keep = batched_nms(
        torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10]]),
        torch.tensor([0.9, 0.8]),
        torch.tensor([0, 0]),
        0.5,
    )
    assert keep.tolist() == [0]  # IoU 81/100 > 0.5: the second box is suppressed
