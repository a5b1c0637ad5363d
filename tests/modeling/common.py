"""Helpers of the model tests: configs from the project's YAML files, reduced for a CPU, and
small synthetic Siamese batches."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import dcinet_d2
from dcinet_d2.modeling import add_model_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS_DIR = os.path.join(REPO_ROOT, "configs")
IMAGENET_WEIGHTS = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"


def config_files() -> list[str]:
    """Every YAML file under ``configs/``, sorted, as paths relative to the repository root."""
    paths = glob.glob(os.path.join(CONFIGS_DIR, "**", "*.yaml"), recursive=True)
    return sorted(os.path.relpath(p, REPO_ROOT) for p in paths)


def paper_config_files() -> list[str]:
    """The ResNet-50 paper configs (CUHK-SYSU and PRW, I-Net and DC-I-Net)."""
    return [p for p in config_files() if p.endswith("_R50_C4.yaml")]


def small_config_files() -> list[str]:
    """The small CPU configs."""
    return [p for p in config_files() if p.startswith(os.path.join("configs", "synthetic"))]


def base_cfg() -> CfgNode:
    """Detectron2 defaults + all dcinet_d2 keys (``add_dcinet_config``, and ``add_model_config``
    as long as ``add_dcinet_config`` does not add ``MODEL.REID`` itself)."""
    cfg = get_cfg()
    dcinet_d2.add_dcinet_config(cfg)
    if "REID" not in cfg.MODEL:
        add_model_config(cfg)
    return cfg


def load_cfg(config_file: str) -> CfgNode:
    """:func:`base_cfg` merged with a config file (path relative to the repository root)."""
    cfg = base_cfg()
    cfg.merge_from_file(os.path.join(REPO_ROOT, config_file))
    return cfg


def reduce_for_cpu(
    cfg: CfgNode,
    num_ids: int = 8,
    image_size: int = 128,
    rois_per_image: int | None = None,
    test_proposals: int | None = None,
) -> CfgNode:
    """Make a config runnable in a unit test on a CPU: nothing downloaded, small images.

    Args:
        cfg: a loaded config (modified in place and returned).
        num_ids: ``MODEL.REID.NUM_IDS`` (no dataset metadata is read).
        image_size: shorter input side (train and test).
        rois_per_image: if given, ``ROI_HEADS.BATCH_SIZE_PER_IMAGE`` and ``POST_NMS_TOPK_TRAIN``.
        test_proposals: if given, ``RPN.POST_NMS_TOPK_TEST``.
    """
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.REID.NUM_IDS = num_ids
    cfg.INPUT.MIN_SIZE_TRAIN = (image_size,)
    cfg.INPUT.MAX_SIZE_TRAIN = 2 * image_size
    cfg.INPUT.MIN_SIZE_TEST = image_size
    cfg.INPUT.MAX_SIZE_TEST = 2 * image_size
    if rois_per_image is not None:
        cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = rois_per_image
        cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = rois_per_image
    if test_proposals is not None:
        cfg.MODEL.RPN.POST_NMS_TOPK_TEST = test_proposals
    return cfg


def build_test_model(cfg: CfgNode, seed: int = 0) -> torch.nn.Module:
    """``build_model`` with a fixed seed."""
    torch.manual_seed(seed)
    return build_model(cfg)


# Ground truth of a 2-pair batch on a 128 x 96 (H x W) image, in input coordinates.
# Pair 0 = images 0, 1: identity 1 in both, 0 and 2 in one image each, one unlabelled person.
# Pair 1 = images 2, 3: identity 3 in both, 0 in image 3 only, one unlabelled person.
PAIR_BATCH_GT = [
    {"boxes": [[5, 10, 35, 90], [40, 20, 70, 110], [60, 5, 90, 60]], "pids": [0, 1, -1]},
    {"boxes": [[10, 30, 40, 120], [50, 10, 85, 100]], "pids": [1, 2]},
    {"boxes": [[20, 15, 50, 95], [55, 40, 90, 125]], "pids": [3, -1]},
    {"boxes": [[8, 8, 45, 100], [48, 20, 80, 110]], "pids": [3, 0]},
]


def make_pair_batch(
    gt: Sequence[dict] = PAIR_BATCH_GT, height: int = 128, width: int = 96, seed: int = 0
) -> list[dict]:
    """A training batch in the format of the paired loader: random images, given ground truth.

    Returns:
        ``len(gt)`` dicts with ``image`` (``[3, height, width]`` uint8), ``height``, ``width``
        and ``instances`` (``gt_boxes``, ``gt_classes`` all 0, ``gt_pids``).
    """
    g = torch.Generator().manual_seed(seed)
    batch = []
    for item in gt:
        inst = Instances((height, width))
        inst.gt_boxes = Boxes(torch.tensor(item["boxes"], dtype=torch.float32).reshape(-1, 4))
        inst.gt_classes = torch.zeros(len(item["pids"]), dtype=torch.long)
        inst.gt_pids = torch.tensor(item["pids"], dtype=torch.long)
        image = torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)
        batch.append({"image": image, "height": height, "width": width, "instances": inst})
    return batch


def make_test_inputs(
    sizes: Sequence = ((128, 96), (96, 128)),
    scale: float = 2.0,
    queries: Sequence[list[dict] | None] | None = None,
    seed: int = 1,
) -> list[dict]:
    """Test inputs: ``image`` of the given input sizes (H, W) with ``height``/``width`` = the
    original size = ``scale`` x the input size, and optional ``queries`` per image."""
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for i, (h, w) in enumerate(sizes):
        x = {
            "image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8),
            "height": int(round(h * scale)),
            "width": int(round(w * scale)),
        }
        if queries is not None and queries[i] is not None:
            x["queries"] = queries[i]
        inputs.append(x)
    return inputs
