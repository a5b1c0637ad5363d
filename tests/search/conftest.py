"""Fixtures of the search tests."""

from __future__ import annotations

import pytest
import torch

from dcinet_d2.engine.checkpoint import PersonSearchCheckpointer

from ..engine.common import quick_cfg


@pytest.fixture(scope="session")
def complete_checkpoint(tmp_path_factory):
    """A checkpoint of the quick DC-I-Net model (random weights, all of them) with its metadata."""
    out = tmp_path_factory.mktemp("ckpt")
    cfg = quick_cfg("dcinet", str(out))
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(cfg)
    PersonSearchCheckpointer(model, str(out), cfg=cfg, save_to_disk=True).save("model_final")
    return str(out / "model_final.pth")
