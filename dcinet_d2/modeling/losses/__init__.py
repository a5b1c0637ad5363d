"""Re-id losses of I-Net / DC-I-Net (OLP, HEP, C2HEP), the OIM baseline, and the criterion.

Pure torch modules (no Detectron2 inside): the losses, their memories (:mod:`.memory`), the label
pools HEP and C2HEP share (:mod:`.pools`) and the shared input checks (:mod:`.checks`).
"""

from __future__ import annotations

from .c2hep import C2HEPLoss
from .criterion import REID_LOSS_NAMES, ReIDCriterion
from .hep import HEPLoss
from .memory import ClassCentres, FeatureDictionary
from .oim import OIMLoss
from .olp import OLPLoss, olp_loss
from .pools import build_label_pools, class_hardness, hard_negative_mask, pooled_cross_entropy

__all__ = [
    "OLPLoss",
    "olp_loss",
    "HEPLoss",
    "build_label_pools",
    "class_hardness",
    "hard_negative_mask",
    "pooled_cross_entropy",
    "C2HEPLoss",
    "OIMLoss",
    "ReIDCriterion",
    "REID_LOSS_NAMES",
    "FeatureDictionary",
    "ClassCentres",
]
