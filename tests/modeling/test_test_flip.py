"""MODEL.REID.TEST_FLIP (flip test-time augmentation of the embeddings): a box and its mirror
box in the mirrored image get the same embedding (the mean is symmetric), and detections are
embedded as their boxes given as queries are."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.modeling import build_model

from dcinet_d2.engine import PersonSearchTrainer

from ..engine.common import quick_cfg


def _model_and_image(tmp_path, flip: bool):
    cfg = quick_cfg(
        "dcinet",
        str(tmp_path),
        "MODEL.REID.TEST_FLIP",
        str(flip),
        "MODEL.REID.EMBED_SCORE_POWER",
        "0.0",
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    (image,) = next(iter(PersonSearchTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])))[:1]
    return model, image


def _mirror(image: dict, boxes: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """The image flipped left-right, and the boxes (original coordinates) mirrored with it."""
    w = float(image["width"])
    mirrored = dict(image, image=image["image"].flip(-1))
    return mirrored, torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)


def test_a_box_and_its_mirror_get_one_embedding(tmp_path):
    boxes = torch.tensor([[10.0, 20.0, 60.0, 150.0], [100.0, 30.0, 140.0, 120.0]])
    for flip in (True, False):
        model, image = _model_and_image(tmp_path, flip)
        mirrored, mirror_boxes = _mirror(image, boxes)
        with torch.no_grad():
            (a,) = model.embed_boxes([image], [boxes])
            (b,) = model.embed_boxes([mirrored], [mirror_boxes])
        assert torch.allclose(a.norm(dim=1), torch.ones(2), atol=1e-5)
        if flip:
            assert torch.allclose(a, b, atol=1e-5)
        else:  # without the augmentation the network itself is not mirror-symmetric
            assert (a - b).abs().max() > 1e-3


def test_detections_are_embedded_as_the_same_boxes_given_as_queries(tmp_path):
    model, image = _model_and_image(tmp_path, True)
    with torch.no_grad():
        (out,) = model([image])
        instances = out["instances"]
        (given,) = model.embed_boxes([image], [instances.pred_boxes.tensor])
    assert len(instances) > 0
    assert torch.allclose(instances.pred_embeds, given, atol=1e-5)
    # and the flip changed them: the plain model's embeddings of those boxes differ
    model.test_flip = False
    with torch.no_grad():
        (plain,) = model.embed_boxes([image], [instances.pred_boxes.tensor])
    assert (F.normalize(plain, dim=1) - given).abs().max() > 1e-3
