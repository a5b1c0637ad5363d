"""Config glue of the re-id part: ``cfg.MODEL.REID`` -> the criterion's arguments.

The ROI heads call :func:`build_reid_criterion` from their ``from_config``; everything below the
heads (the losses and memories in :mod:`.losses`) is plain torch and takes plain arguments.
"""

from __future__ import annotations

from detectron2.config import CfgNode

from ..data.identities import num_train_identities
from .losses.criterion import ReIDCriterion

__all__ = ["build_reid_criterion", "reid_dictionary_size", "reid_loss_options"]


def reid_dictionary_size(cfg: CfgNode) -> int:
    """Length of the OLP feature dictionary: ``MODEL.REID.DICTIONARY_SIZE``, or the default rule.

    Paper: 4 x batch size. Ours (``DICTIONARY_SIZE`` = 0): 4 x the most foreground proposals one
    training step samples, ``4 * IMS_PER_BATCH * BATCH_SIZE_PER_IMAGE * POSITIVE_FRACTION``.
    """
    size = int(cfg.MODEL.REID.DICTIONARY_SIZE)
    if size > 0:
        return size
    if size < 0:
        raise ValueError(f"MODEL.REID.DICTIONARY_SIZE must be >= 0, got {size}")
    roi_heads = cfg.MODEL.ROI_HEADS
    fg_per_image = int(roi_heads.BATCH_SIZE_PER_IMAGE * roi_heads.POSITIVE_FRACTION)
    return 4 * int(cfg.SOLVER.IMS_PER_BATCH) * max(fg_per_image, 1)


def reid_loss_options(cfg: CfgNode) -> dict:
    """Keyword arguments of each loss module (``ReIDCriterion``'s ``options``) from
    ``cfg.MODEL.REID``: the keys ``OLP_*``, ``HEP_*``, ``C2HEP_*`` and ``OIM_*``."""
    reid = cfg.MODEL.REID
    return {
        "olp": {"scale": reid.OLP_SCALE, "term_weight": reid.OLP_TERM_WEIGHT},
        "hep": {
            "pool_size": reid.HEP_POOL_SIZE,
            "num_hard": reid.HEP_NUM_HARD,
            "scale": reid.HEP_SCALE,
        },
        "c2hep": {
            "pool_size": reid.C2HEP_POOL_SIZE,
            "num_hard": reid.C2HEP_NUM_HARD,
            "scale": reid.C2HEP_SCALE,
            "momentum": reid.C2HEP_MOMENTUM,
            "update": reid.C2HEP_UPDATE,
        },
        "oim": {
            "queue_size": reid.OIM_QUEUE_SIZE,
            "scale": reid.OIM_SCALE,
            "momentum": reid.OIM_MOMENTUM,
        },
    }


def build_reid_criterion(cfg: CfgNode) -> ReIDCriterion:
    """Build the :class:`ReIDCriterion` described by ``cfg.MODEL.REID``."""
    reid = cfg.MODEL.REID
    return ReIDCriterion(
        num_classes=num_train_identities(cfg),
        dim=reid.EMBED_DIM,
        losses=list(reid.LOSSES),
        weights={k.lower(): float(v) for k, v in reid.LOSS_WEIGHTS.items()},
        dictionary_size=reid_dictionary_size(cfg),
        options=reid_loss_options(cfg),
    )
