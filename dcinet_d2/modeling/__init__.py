"""Model components of dcinet_d2. Importing this package registers them in Detectron2:

* ``PersonSearchRCNN`` in ``META_ARCH_REGISTRY``;
* ``INetROIHeads`` (I-Net) and ``DCINetROIHeads`` (DC-I-Net) in ``ROI_HEADS_REGISTRY``.

The model config keys (``cfg.MODEL.REID``) are added by :func:`add_model_config`.
"""

from __future__ import annotations

from .build import build_reid_criterion
from .config import add_model_config
from .meta_arch import PersonSearchRCNN
from .roi_heads import DCINetROIHeads, EmbeddingHead, INetROIHeads

__all__ = [
    "add_model_config",
    "PersonSearchRCNN",
    "INetROIHeads",
    "DCINetROIHeads",
    "EmbeddingHead",
    "build_reid_criterion",
]
