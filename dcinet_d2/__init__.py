"""dcinet_d2: I-Net and DC-I-Net person search (Zhang et al., TPAMI 2020) as a Detectron2 extension.

Importing the package registers its model components (``PersonSearchRCNN`` in
``META_ARCH_REGISTRY``, ``INetROIHeads`` and ``DCINetROIHeads`` in ``ROI_HEADS_REGISTRY``) and
its datasets (``cuhk_sysu_{train,test}``, ``prw_{train,test}`` and the ``synthetic_*``
counterparts) in Detectron2's catalogs; no file is read until a dataset is used.
"""

from __future__ import annotations

from . import (
    data,  # noqa: F401  (registers datasets)
    modeling,  # noqa: F401  (registers PersonSearchRCNN, INetROIHeads, DCINetROIHeads, backbones)
    pretrained,  # noqa: F401  (registers the dcinet_d2:// prefix of MODEL.WEIGHTS)
)
from .config import add_dcinet_config

__all__ = ["add_dcinet_config"]
__version__ = "0.1.0"
