"""TEST.IMS_PER_BATCH: the evaluation loader yields every test image once, in batches, and a
batch of same-size images gives the outputs of one-by-one inference."""

from __future__ import annotations

import torch
from detectron2.modeling import build_model

from dcinet_d2.engine import PersonSearchTrainer

from .common import quick_cfg


def test_batched_test_loader_covers_every_image_once_and_matches_single_inference(tmp_path):
    cfg = quick_cfg("dcinet", str(tmp_path), "TEST.IMS_PER_BATCH", "4")
    name = cfg.DATASETS.TEST[0]
    batched = PersonSearchTrainer.build_test_loader(cfg, name)
    sizes, ids = [], []
    for batch in batched:
        sizes.append(len(batch))
        ids.extend(d["image_id"] for d in batch)
    single = quick_cfg("dcinet", str(tmp_path))
    ids_single = [b[0]["image_id"] for b in PersonSearchTrainer.build_test_loader(single, name)]
    assert ids == ids_single and len(set(ids)) == len(ids)
    assert sizes == [4] * (len(ids) // 4) + ([len(ids) % 4] if len(ids) % 4 else [])

    torch.manual_seed(0)
    model = build_model(cfg).eval()
    first = next(iter(batched))  # four 256x192 images with their queries
    with torch.no_grad():
        together = model(first)
        alone = [model([d])[0] for d in first]
    for a, b, d in zip(together, alone, first):
        assert torch.allclose(
            a["instances"].pred_boxes.tensor, b["instances"].pred_boxes.tensor, atol=1e-3
        )
        assert torch.allclose(a["instances"].pred_embeds, b["instances"].pred_embeds, atol=1e-4)
        if d.get("queries"):
            assert torch.allclose(a["query_embeds"], b["query_embeds"], atol=1e-4)
