"""tools/pretrain_backbone.py: an existing pre-training set generated with other settings stops
the tool (a generated set passes); the kept ResNet tensors of a checkpoint."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
)
from pretrain_backbone import PRETRAIN_SET, check_pretrain_set, resnet_state  # noqa: E402

from dcinet_d2.data.synthetic import generate_cuhk_sysu  # noqa: E402

SMALL = {
    "seed": 1000,
    "num_images": 40,
    "pool_size": 20,
    "num_train_ids": 8,
    "num_test_ids": 4,
    "gallery_sizes": [5],
}


def test_a_generated_set_passes_and_another_one_is_refused(tmp_path):
    root = str(tmp_path / "CUHK-SYSU")
    generate_cuhk_sysu(root, progress=False, **SMALL)
    check_pretrain_set(root, SMALL)
    with pytest.raises(ValueError, match="synthetic_stats.json.*'train_ids': 8.*remove"):
        check_pretrain_set(root, {**SMALL, "num_train_ids": 9})
    with pytest.raises(ValueError, match="'train_ids': 2000"):
        check_pretrain_set(root)  # PRETRAIN_SET


def test_a_folder_without_statistics_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot read the generator's statistics"):
        check_pretrain_set(str(tmp_path))
    (tmp_path / "synthetic_stats.json").write_text(json.dumps({"seed": 1000}))
    with pytest.raises(ValueError, match="'images': None"):
        check_pretrain_set(str(tmp_path), PRETRAIN_SET)


def test_resnet_state_keeps_the_trunk_and_res5_only(tmp_path):
    path = str(tmp_path / "model.pth")
    model = {
        "backbone.stem.conv1.weight": torch.ones(2, dtype=torch.float64),
        "roi_heads.res5.0.conv1.weight": torch.ones(1),
        "roi_heads.box_predictor.cls_score.weight": torch.ones(1),
        "proposal_generator.rpn_head.conv.weight": torch.ones(1),
        "roi_heads.embed_head.proj.weight": torch.ones(1),
    }
    torch.save({"model": model}, path)
    kept = resnet_state(path)
    assert set(kept) == {"backbone.stem.conv1.weight", "roi_heads.res5.0.conv1.weight"}
    assert kept["backbone.stem.conv1.weight"].dtype == torch.float32
    assert len(resnet_state(path, with_detector=True)) == 4
