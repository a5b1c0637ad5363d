"""Inference on a user's images: a config from a checkpoint alone, and a Detectron2 predictor that
also embeds given person boxes and runs several images per forward.

    cfg = inference_config("output/model_final.pth")            # config saved in the checkpoint
    predictor = PersonSearchPredictor(cfg)                       # a DefaultPredictor
    out = predictor(image_bgr)                                   # {"instances": ... pred_embeds}
    emb = predictor.embed_boxes(image_bgr, [[x1, y1, x2, y2]])  # [1, D] numpy, unit norm
    outs = predictor.predict_batch([img1, img2, img3])           # one forward for the three

Building the model never reads a training set: ``MODEL.REID.NUM_IDS`` only sizes the training
memories, and comes from the checkpoint (its ``"dcinet_d2"`` entry, written by
:class:`~dcinet_d2.engine.checkpoint.PersonSearchCheckpointer`, or the shape of a memory it holds).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.utils.file_io import PathManager

from ..config import add_dcinet_config
from ..engine.checkpoint import METADATA_KEY, PersonSearchCheckpointer
from ..modeling.fast_inference import inference_autocast, inference_model_from_config

__all__ = ["inference_config", "read_checkpoint", "PersonSearchPredictor", "IncompleteWeightsError"]
logger = logging.getLogger(__name__)


class IncompleteWeightsError(ValueError):
    """The weights leave some of the model's parameters unset (the model would be partly random)."""


def read_checkpoint(weights: str) -> dict[str, Any]:
    """The checkpoint file ``weights`` (a path, URL or ``dcinet_d2://`` name), loaded on the CPU."""
    local = PathManager.get_local_path(weights)
    try:
        with open(local, "rb") as f:
            checkpoint = torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"weights '{weights}': no such file") from None
    except Exception as e:
        raise ValueError(f"weights '{weights}' is not a readable checkpoint ({e})") from e
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise ValueError(f"weights '{weights}' holds no 'model' state dict")
    return checkpoint


def _num_ids_from_state(state: dict[str, Any]) -> int:
    """C from a memory sized by it (class centres, OIM table); 0 when the state holds none."""
    for key, value in state.items():
        if key.endswith("centres.centres") or key.endswith("oim.lut"):
            return int(value.shape[0])
    return 0


def inference_config(
    weights: str, config_file: str | None = None, opts: Sequence[str] = ()
) -> CfgNode:
    """A frozen config that builds the model of ``weights`` for inference.

    Args:
        weights: checkpoint of a trained model.
        config_file: the YAML to use; None = the config saved in the checkpoint.
        opts: ``KEY VALUE`` overrides applied last.

    Raises:
        ValueError: no config file and the checkpoint holds no config.
    """
    checkpoint = read_checkpoint(weights)
    saved = checkpoint.get(METADATA_KEY) or {}
    cfg = get_cfg()
    add_dcinet_config(cfg)
    if config_file:
        cfg.merge_from_file(config_file)
    elif "config" in saved:
        try:
            cfg.merge_from_other_cfg(CfgNode.load_cfg(saved["config"]))
        except Exception as e:  # yacs raises KeyError for keys this version does not know
            raise ValueError(
                f"weights '{weights}': its saved config does not fit this version of "
                f"dcinet_d2 ({type(e).__name__}: {e}); pass --config-file"
            ) from e
    else:
        raise ValueError(
            f"weights '{weights}' holds no config (written before dcinet_d2 saved it): "
            "pass the training config with --config-file"
        )
    cfg.merge_from_list(list(opts))
    if int(cfg.MODEL.REID.NUM_IDS) == 0:
        num_ids = int(saved.get("num_ids", 0)) or _num_ids_from_state(checkpoint["model"])
        # Ours: with no memory sized by C in the checkpoint (I-Net: OLP + HEP keep only the
        # feature dictionary), C changes nothing at inference; 1 builds the model.
        cfg.MODEL.REID.NUM_IDS = num_ids or 1
    cfg.MODEL.WEIGHTS = weights
    cfg.DATASETS.TRAIN = ()
    # The gallery index holds unit embeddings and ranks by cosine (dcinet_d2.search.index checks
    # the norms): the score weighting of the protocol's evaluation is not applied to footage.
    cfg.MODEL.REID.EMBED_SCORE_POWER = 0.0
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


class PersonSearchPredictor(DefaultPredictor):
    """Detectron2's :class:`DefaultPredictor` for person search models, plus:

    - :meth:`embed_boxes`: embeddings of given person boxes (a query a user draws);
    - :meth:`predict_batch`: several images per forward (evaluation, indexing a gallery);
    - loading refuses weights that leave parameters unset (:class:`IncompleteWeightsError`).

    Images are numpy ``[H, W, 3]`` uint8 in BGR order (as ``cv2.imread`` gives), like
    ``DefaultPredictor``'s.
    """

    def __init__(self, cfg: CfgNode):
        self.cfg = cfg.clone()
        from detectron2.modeling import build_model

        self.model = build_model(self.cfg)
        self.model.eval()
        if not cfg.MODEL.WEIGHTS:
            raise IncompleteWeightsError(
                "MODEL.WEIGHTS is empty: a predictor needs a trained model"
            )
        checkpointer = PersonSearchCheckpointer(self.model)
        checkpointer.load(cfg.MODEL.WEIGHTS)
        problem = checkpointer.untrained_parameters_error(cfg.MODEL.WEIGHTS)
        if problem:
            raise IncompleteWeightsError(f"{problem}: not a trained person search model")
        # what runs: an eval copy with the norms folded, channels-last on CUDA (TEST.* keys)
        self.model = inference_model_from_config(self.cfg, self.model).eval()
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {self.input_format!r}")

    def _autocast(self):
        return inference_autocast(self.cfg, next(self.model.parameters()).device)

    def __call__(self, original_image: np.ndarray) -> dict:
        """Detections of one image (``DefaultPredictor.__call__``), under ``TEST.AMP``."""
        with self._autocast():
            return super().__call__(original_image)

    @property
    def embed_dim(self) -> int:
        return int(self.model.roi_heads.embed_dim)

    def _input(self, image_bgr: np.ndarray) -> dict:
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"expected an [H, W, 3] image, got shape {image_bgr.shape}")
        image = image_bgr[:, :, ::-1] if self.input_format == "RGB" else image_bgr
        height, width = image.shape[:2]
        resized = self.aug.get_transform(image).apply_image(image)
        # uint8, as the dataset mapper gives: a quarter of float32's host-to-device copy
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    @torch.no_grad()
    def predict_batch(self, images_bgr: Sequence[np.ndarray]) -> list[dict]:
        """Detections (``instances`` with ``pred_embeds``) of several images, one forward."""
        if len(images_bgr) == 0:
            return []
        with self._autocast():
            return self.model([self._input(im) for im in images_bgr])

    @torch.no_grad()
    def embed_boxes(
        self, image_bgr: np.ndarray, boxes: Sequence[Sequence[float]] | np.ndarray
    ) -> np.ndarray:
        """Unit-norm embeddings ``[k, D]`` (float32) of ``boxes`` ``[k, 4]`` (x1, y1, x2, y2 in the
        image's pixels) of one image."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        h, w = image_bgr.shape[:2]
        bad = (
            (boxes[:, 2] <= boxes[:, 0])
            | (boxes[:, 3] <= boxes[:, 1])
            | (boxes[:, 0] >= w)
            | (boxes[:, 1] >= h)
            | (boxes[:, 2] <= 0)
            | (boxes[:, 3] <= 0)
        )
        if bad.any():
            raise ValueError(f"box {boxes[bad][0].tolist()} is empty or outside the {w}x{h} image")
        with self._autocast():
            embeds = self.model.embed_boxes([self._input(image_bgr)], [torch.from_numpy(boxes)])[0]
        return embeds.cpu().numpy().astype(np.float32)
