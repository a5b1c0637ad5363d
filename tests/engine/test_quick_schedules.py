"""The quick schedules (configs/quick_schedules): train a few iterations, evaluate, metrics come
out."""

from __future__ import annotations

import json
import math
import os

import pytest

from dcinet_d2.engine import PersonSearchTrainer
from dcinet_d2.evaluation.predictions import load_predictions

from .common import quick_cfg

REID_LOSSES = {"inet": ("loss_olp", "loss_hep"), "dcinet": ("loss_olp", "loss_c2hep")}


@pytest.mark.parametrize("name", ["inet", "dcinet"])
def test_instant_schedule_trains_and_evaluates(name, tmp_path):
    cfg = quick_cfg(name, str(tmp_path))
    trainer = PersonSearchTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    histories = trainer.storage.histories()
    for key in ("total_loss", "loss_cls", "loss_box_reg", "loss_rpn_cls", *REID_LOSSES[name]):
        assert key in histories, key
    total = [v for v, _ in histories["total_loss"].values()]
    assert len(total) == cfg.SOLVER.MAX_ITER and all(math.isfinite(v) for v in total)
    assert max(total) - min(total) > 1e-3  # the losses move
    assert "reid/dict_fill" in histories and histories["reid/dict_fill"].latest() > 0
    other = {"inet": "loss_c2hep", "dcinet": "loss_hep"}[name]
    assert other not in histories  # the config's loss selection holds
    out = os.path.join(str(tmp_path), "inference", cfg.DATASETS.TEST[0])
    with open(os.path.join(out, "person_search_metrics.json")) as f:
        metrics = json.load(f)
    assert set(metrics["search"]) == {"mAP", "top1", "top5", "top10"}
    assert set(metrics["detection"]) >= {"recall", "AP"}
    assert all(
        0.0 <= v <= 100.0 for task in ("search", "detection") for v in metrics[task].values()
    )
    # the small configs search by score times cosine: the file says so, and its gallery
    # embeddings have norm score ** power (checked when it is loaded)
    saved = load_predictions(os.path.join(out, "person_search_predictions.pth"))
    assert saved["meta"]["embed_score_power"] == cfg.MODEL.REID.EMBED_SCORE_POWER == 1.0
    assert os.path.isfile(os.path.join(str(tmp_path), "model_final.pth"))
