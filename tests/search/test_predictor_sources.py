"""Inference without the training set, the predictor's box embedding and batching, and the units
of a gallery (images, folders, globs, sampled video frames)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultPredictor
from PIL import Image

from dcinet_d2.search.predictor import (
    IncompleteWeightsError,
    PersonSearchPredictor,
    inference_config,
)
from dcinet_d2.search.sources import count_units, expand_sources, iter_units


def _image(seed=0, size=(192, 128)):
    return np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)


def test_checkpoint_alone_builds_the_model_without_the_training_set(
    complete_checkpoint, monkeypatch
):
    def no_dataset(name):
        raise AssertionError(f"inference read the dataset {name}")

    monkeypatch.setattr(DatasetCatalog, "get", no_dataset)
    cfg = inference_config(complete_checkpoint)  # no config file: the saved one
    assert cfg.MODEL.REID.NUM_IDS == 120 and cfg.DATASETS.TRAIN == ()
    assert cfg.MODEL.ROI_HEADS.NAME == "DCINetROIHeads" and cfg.INPUT.MIN_SIZE_TEST == 192
    predictor = PersonSearchPredictor(cfg)
    assert predictor.embed_dim == cfg.MODEL.REID.EMBED_DIM
    # Detectron2's own DefaultPredictor works with the same config
    out = DefaultPredictor(cfg)(_image())
    assert out["instances"].pred_embeds.shape[1] == cfg.MODEL.REID.EMBED_DIM


def test_predict_batch_equals_one_by_one_and_embed_boxes_equals_query_path(complete_checkpoint):
    predictor = PersonSearchPredictor(inference_config(complete_checkpoint))
    images = [_image(1), _image(2)]  # same size: no padding, so batching changes nothing
    batch = predictor.predict_batch(images)
    for image, out in zip(images, batch):
        single = predictor(image)["instances"]
        inst = out["instances"]
        assert len(inst) == len(single) > 0
        assert torch.allclose(inst.pred_boxes.tensor, single.pred_boxes.tensor, atol=1e-3)
        assert torch.allclose(inst.pred_embeds, single.pred_embeds, atol=1e-4)
    box = [20.0, 10.0, 80.0, 120.0]
    embed = predictor.embed_boxes(images[0], [box])
    assert embed.shape == (1, predictor.embed_dim)
    assert abs(float(np.linalg.norm(embed[0])) - 1.0) < 1e-5
    # the same box as a query of the model's own inference path
    inputs = predictor._input(images[0])
    inputs["queries"] = [{"query_id": 0, "bbox": box}]
    with torch.no_grad():
        via_query = predictor.model([inputs])[0]["query_embeds"][0].numpy()
    np.testing.assert_allclose(embed[0], via_query, atol=1e-5)
    with pytest.raises(ValueError, match="empty or outside"):
        predictor.embed_boxes(images[0], [[50, 50, 40, 60]])


def test_backbone_only_weights_are_refused(tmp_path):
    cfg = inference_config(
        "dcinet_d2://synthetic_r50q_c4.pth",
        os.path.join("configs", "synthetic", "dcinet_small.yaml"),
    )
    with pytest.raises(IncompleteWeightsError, match="not a trained person search model"):
        PersonSearchPredictor(cfg)


def test_sources_folders_globs_and_sampled_video(tmp_path):
    import cv2

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "sub").mkdir()
    for name in ["a/x.jpg", "a/sub/y.png", "z.jpg"]:
        Image.fromarray(_image()).save(tmp_path / name)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    video = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for k in range(7):
        writer.write(np.full((48, 64, 3), 30 * k, dtype=np.uint8))
    writer.release()

    sources = expand_sources(
        [str(tmp_path / "a"), str(tmp_path / "*.jpg"), video, str(tmp_path / "z.jpg")]
    )
    assert [(os.path.relpath(s.path, tmp_path), s.kind) for s in sources] == [
        ("a/sub/y.png", "image"),
        ("a/x.jpg", "image"),
        ("z.jpg", "image"),
        ("clip.avi", "video"),
    ]
    # 10 fps sampled at 5 fps: every second frame of 7
    assert count_units(sources[3], fps=5) == 4
    units = [(os.path.basename(k[0]), k[1]) for k, _ in iter_units(sources, fps=5)]
    assert units == [
        ("y.png", -1),
        ("x.jpg", -1),
        ("z.jpg", -1),
        ("clip.avi", 0),
        ("clip.avi", 2),
        ("clip.avi", 4),
        ("clip.avi", 6),
    ]
    frames = {k[1]: im for k, im in iter_units(sources[3:], fps=None)}
    assert (
        sorted(frames) == list(range(7)) and abs(float(frames[3].mean()) - 90) < 3
    )  # MJPG is lossy
    skip = {(sources[3].path, 2), (sources[0].path, -1)}
    units = [(os.path.basename(k[0]), k[1]) for k, _ in iter_units(sources, fps=5, skip=skip)]
    assert ("clip.avi", 2) not in units and ("y.png", -1) not in units and len(units) == 5
    with pytest.raises(FileNotFoundError, match="matches no image or video"):
        expand_sources([str(tmp_path / "nothing*.jpg")])
    with pytest.raises(ValueError, match="neither an image"):
        expand_sources([str(tmp_path / "a" / "notes.txt")])
