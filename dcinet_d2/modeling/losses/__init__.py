"""Re-id losses of I-Net / DC-I-Net (OLP, HEP, C2HEP), the OIM baseline, and the criterion.

Pure torch modules (no Detectron2 inside); the memories they use are in
:mod:`dcinet_d2.modeling.memory`.
"""
from .c2hep import C2HEPLoss
from .criterion import REID_LOSS_NAMES, ReIDCriterion
from .hep import (
    HEPLoss,
    build_label_pools,
    class_hardness,
    hard_negative_mask,
    pooled_cross_entropy,
)
from .oim import OIMLoss
from .olp import OLPLoss, olp_loss

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
]
