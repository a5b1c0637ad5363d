"""Every YAML under configs/ merges with the project's keys and says what the paper says."""

from __future__ import annotations

import os
import re

import pytest
import torch
import yaml
from detectron2.config import get_cfg

import dcinet_d2
from dcinet_d2.modeling import add_model_config
from tests.modeling.common import (
    CONFIGS_DIR,
    IMAGENET_WEIGHTS,
    REPO_ROOT,
    config_files,
    load_cfg,
    paper_config_files,
    small_config_files,
)

PRETRAINED_WEIGHTS = "dcinet_d2://synthetic_r50q_c4.pth"


@pytest.mark.parametrize("name", ["inet_small.yaml", "dcinet_small.yaml"])
def test_shipped_weights_fill_the_resnet_of_the_small_configs(name):
    """Every backbone and res5 tensor of the small models comes from the shipped file (DC-I-Net's
    re-id res5 too, copied from res5), and nothing else does."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.utils.file_io import PathManager

    from tests.modeling.common import build_test_model

    cfg = load_cfg(os.path.join("configs", "synthetic", name))
    cfg.MODEL.REID.NUM_IDS = 5
    cfg.MODEL.DEVICE = "cpu"
    model = build_test_model(cfg)
    shipped = torch.load(PathManager.get_local_path(cfg.MODEL.WEIGHTS), weights_only=True)["model"]
    expected = {k for k in model.state_dict() if k.startswith(("backbone.", "roi_heads.res5."))}
    assert set(shipped) == expected
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    state = model.state_dict()
    for key, value in shipped.items():
        assert torch.equal(state[key], value), key
        if key.startswith("roi_heads.res5.") and name == "dcinet_small.yaml":
            assert torch.equal(state[key.replace("roi_heads.res5.", "roi_heads.reid_res5.")], value)


def test_unknown_shipped_weights_name_the_folder():
    from detectron2.utils.file_io import PathManager

    with pytest.raises(FileNotFoundError, match="synthetic_r50q_c4.pth"):
        PathManager.get_local_path("dcinet_d2://no_such_file.pth")


# Keys that exist on Detectron2's main branch but not in v0.6: a config using one would not load
# on v0.6.
POST_V06_KEYS = (
    "BASE_LR_END",
    "NUM_DECAYS",
    "USE_FED_LOSS",
    "FED_LOSS",
    "FLOAT32_PRECISION",
    "RESCALE_INTERVAL",
    "AMP_DTYPE",
)


def test_project_has_the_expected_configs():
    expected = {
        "configs/Base-DCINet-C4.yaml",
        "configs/cuhk_sysu/inet_R50_C4.yaml",
        "configs/cuhk_sysu/dcinet_R50_C4.yaml",
        "configs/prw/inet_R50_C4.yaml",
        "configs/prw/dcinet_R50_C4.yaml",
        "configs/synthetic/inet_small.yaml",
        "configs/synthetic/dcinet_small.yaml",
    }
    assert expected <= {p.replace(os.sep, "/") for p in config_files()}


def test_add_model_config_adds_reid_and_res5_norm_and_touches_nothing_else():
    plain = get_cfg()
    cfg = add_model_config(get_cfg())
    assert "REID" in cfg.MODEL and "REID" not in plain.MODEL
    assert cfg.MODEL.ROI_HEADS.RES5_NORM == "" and "RES5_NORM" not in plain.MODEL.ROI_HEADS
    assert cfg.MODEL.ROI_BOX_HEAD.IOU_SCORE_WEIGHT == 0.0  # off: Detectron2's box predictor
    for key in ("IOU_SCORE_WEIGHT", "IOU_LOSS_WEIGHT"):
        assert key not in plain.MODEL.ROI_BOX_HEAD
        del cfg.MODEL.ROI_BOX_HEAD[key]
    del cfg.MODEL["REID"]
    del cfg.MODEL.ROI_HEADS["RES5_NORM"]
    assert cfg.dump() == plain.dump()


def test_every_reid_key_is_commented_where_it_is_set():
    path = os.path.join(REPO_ROOT, "dcinet_d2", "modeling", "config.py")
    lines = open(path, encoding="utf-8").read().splitlines()
    keys = 0
    for i, line in enumerate(lines):
        m = re.match(r"\s*cfg\.MODEL\.REID\.(\w+)(\.\w+)? = ", line)
        if not m:
            continue
        keys += 1
        # a comment on the line itself or in the block of comments/assignments right above it
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("cfg.MODEL.REID."):
            j -= 1
        assert "#" in line or lines[j].strip().startswith("#"), f"uncommented key: {line.strip()}"
    assert keys >= 15


@pytest.mark.parametrize("config_file", config_files())
def test_config_merges_and_is_consistent(config_file):
    cfg = load_cfg(config_file)
    assert cfg.MODEL.META_ARCHITECTURE == "PersonSearchRCNN"
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1
    assert not cfg.MODEL.MASK_ON
    assert cfg.SOLVER.IMS_PER_BATCH % 2 == 0
    assert len(cfg.DATASETS.TRAIN) > 0
    assert cfg.MODEL.REID.EMBED_DIM == 256
    losses = set(cfg.MODEL.REID.LOSSES)
    if config_file.endswith("pretrain_small.yaml"):
        # The pre-training of the shipped ResNet: no test set, a plain softmax over all identities.
        assert len(cfg.DATASETS.TEST) == 0 and losses == {"hep"}
        assert cfg.MODEL.REID.HEP_POOL_SIZE >= 480
        return
    assert len(cfg.DATASETS.TEST) > 0
    if cfg.MODEL.ROI_HEADS.NAME == "INetROIHeads":
        assert losses == {"olp", "hep"}
    else:
        assert cfg.MODEL.ROI_HEADS.NAME == "DCINetROIHeads"
        assert losses == {"olp", "c2hep"}
    name = os.path.basename(config_file)
    if name.startswith("inet_"):
        assert cfg.MODEL.ROI_HEADS.NAME == "INetROIHeads"
    if name.startswith("dcinet_"):
        assert cfg.MODEL.ROI_HEADS.NAME == "DCINetROIHeads"


@pytest.mark.parametrize("config_file", paper_config_files())
def test_paper_configs_follow_the_paper(config_file):
    cfg = load_cfg(config_file)
    assert cfg.MODEL.WEIGHTS == IMAGENET_WEIGHTS
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone"
    assert cfg.MODEL.RESNETS.DEPTH == 50
    assert cfg.MODEL.RESNETS.OUT_FEATURES == ["res4"]  # C4: res5 is the ROI head
    assert cfg.MODEL.REID.HEP_NUM_HARD == 20
    dataset = config_file.split(os.sep)[1]
    assert cfg.DATASETS.TRAIN == (f"{dataset}_train",)
    assert cfg.DATASETS.TEST == (f"{dataset}_test",)


@pytest.mark.parametrize("config_file", small_config_files())
def test_small_configs_use_synthetic_data_and_no_download(config_file):
    cfg = load_cfg(config_file)
    if config_file.endswith("pretrain_small.yaml"):
        # The pre-training itself: from scratch, on the disjoint pre-training set, no evaluation.
        assert cfg.MODEL.WEIGHTS == ""
        assert cfg.DATASETS.TRAIN == ("synthetic_pretrain_cuhk_sysu_train",)
        assert cfg.DATASETS.TEST == ()
    else:
        # The shipped pre-trained ResNet, a file of the package (nothing downloaded).
        assert cfg.MODEL.WEIGHTS == PRETRAINED_WEIGHTS
        assert cfg.DATASETS.TRAIN == ("synthetic_cuhk_sysu_train",)
        assert cfg.DATASETS.TEST == ("synthetic_cuhk_sysu_test",)
    # CPU-sized: the 256x192 synthetic images at most upsampled 2x.
    assert max(cfg.INPUT.MIN_SIZE_TRAIN) <= 384 and cfg.INPUT.MIN_SIZE_TEST <= 384
    assert cfg.MODEL.RESNETS.NORM == "BN" and cfg.MODEL.ROI_HEADS.RES5_NORM == "GN"


@pytest.mark.parametrize("config_file", config_files())
def test_config_file_is_self_contained_and_v06_compatible(config_file):
    path = os.path.join(REPO_ROOT, config_file)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    data = yaml.safe_load(text)
    base = data.get("_BASE_")
    if base is not None:
        assert not os.path.isabs(base)
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), base))
        assert resolved.startswith(os.path.normpath(CONFIGS_DIR) + os.sep)
        assert os.path.isfile(resolved)
    for key in POST_V06_KEYS:
        assert re.search(rf"\b{key}\s*:", text) is None, key


def test_add_dcinet_config_adds_the_model_keys():
    cfg = dcinet_d2.add_dcinet_config(get_cfg())
    if "REID" not in cfg.MODEL:
        pytest.skip("dcinet_d2.add_dcinet_config does not call add_model_config yet")
    assert cfg.MODEL.REID.dump() == add_model_config(get_cfg()).MODEL.REID.dump()
    for config_file in config_files():
        merged = dcinet_d2.add_dcinet_config(get_cfg())
        merged.merge_from_file(os.path.join(REPO_ROOT, config_file))
