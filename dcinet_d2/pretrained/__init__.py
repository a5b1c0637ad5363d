"""Pre-trained weights shipped with dcinet_d2, addressed as ``dcinet_d2://<file name>``.

Importing :mod:`dcinet_d2` registers a handler for the ``dcinet_d2://`` prefix with Detectron2's
``PathManager``, so ``MODEL.WEIGHTS: "dcinet_d2://synthetic_r50q_c4.pth"`` loads the file of that
name in this folder whatever the working directory (as ``detectron2://`` names the model zoo).

Files:

* ``synthetic_r50q_c4.pth``: the ResNet of the small CPU configs (stem, res2-res4 and the res5
  ROI head, ``configs/synthetic/Base-small.yaml``) pre-trained on a synthetic CUHK-SYSU drawn with
  another seed than the benchmark, whose identities are therefore disjoint from it
  (``tools/pretrain_backbone.py`` reproduces it). It plays the part of the ImageNet
  initialisation of the paper configs: the detection and re-id heads (RPN, box predictor,
  embedding head, losses' memories) are not in it.
"""

from __future__ import annotations

import os

from detectron2.utils.file_io import PathHandler, PathManager

from ..compat import path_prefix_registered

__all__ = ["PRETRAINED_DIR", "PREFIX", "PretrainedPathHandler"]

PRETRAINED_DIR = os.path.dirname(os.path.abspath(__file__))
PREFIX = "dcinet_d2://"


class PretrainedPathHandler(PathHandler):
    """Resolves ``dcinet_d2://<name>`` to ``<PRETRAINED_DIR>/<name>``."""

    def _get_supported_prefixes(self):
        return [PREFIX]

    def _get_local_path(self, path: str, **kwargs) -> str:
        name = path[len(PREFIX) :]
        local = os.path.join(PRETRAINED_DIR, name)
        if not os.path.isfile(local):
            available = sorted(f for f in os.listdir(PRETRAINED_DIR) if f.endswith(".pth"))
            raise FileNotFoundError(
                f"{path}: no file {name!r} in {PRETRAINED_DIR} (available: {available}); "
                "tools/pretrain_backbone.py writes synthetic_r50q_c4.pth"
            )
        return local

    def _open(self, path: str, mode: str = "r", **kwargs):
        return PathManager.open(self._get_local_path(path), mode, **kwargs)


if not path_prefix_registered(PathManager, PREFIX):  # importing twice must not register twice
    PathManager.register_handler(PretrainedPathHandler())
