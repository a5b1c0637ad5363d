"""Model config keys of dcinet_d2 (``cfg.MODEL.REID``), added by :func:`add_model_config`.

Every key is commented where it is set. "Paper" marks a value given by Zhang et al. (TPAMI 2020,
I-Net / DC-I-Net); "ours" marks a choice of this project where the paper gives none.
"""

from __future__ import annotations

from detectron2.config import CfgNode as CN

__all__ = ["add_model_config"]


def add_model_config(cfg: CN) -> CN:
    """Add ``cfg.MODEL.REID``, ``ROI_HEADS.RES5_NORM`` and ``ROI_BOX_HEAD.IOU_*`` to ``cfg`` in
    place (and return it). Touches no existing key.

    Args:
        cfg: a Detectron2 config (from ``detectron2.config.get_cfg()``).

    Returns:
        The same ``cfg``.
    """
    # Ours: normalisation of the res5 blocks of the ROI heads (the detection res5 and DC-I-Net's
    # re-id res5), any name of detectron2.layers.get_norm; "" = MODEL.RESNETS.NORM (Detectron2's
    # behaviour). The small CPU configs use "GN": a BatchNorm over the ROIs of one
    # step sees only the few identities of two pairs, and its batch statistics then carry that
    # step's identity mix into every embedding (measured: docs/reid_cpu_history.md).
    cfg.MODEL.ROI_HEADS.RES5_NORM = ""
    # Ours: IoU-aware detection score (dcinet_d2/modeling/box_predictor.py). A linear layer beside
    # the box classifier predicts the IoU of each ROI's regressed box with its matched person,
    # trained with binary cross-entropy on that IoU (weight IOU_LOSS_WEIGHT), and the score of a
    # detection becomes p ** (1 - a) * iou ** a with a = IOU_SCORE_WEIGHT. 0 = off (Detectron2's
    # FastRCNNOutputLayers, the paper's detector). Off, measured: DC-I-Net seed 0, 1,000
    # iterations, a = 0.5 gave validation search mAP 30.8 against 46.6 and detection AP 74.4
    # against 76.4, with as many part-of-a-person boxes kept (37 % against 36 %;
    # docs/reid_recipe.md).
    cfg.MODEL.ROI_BOX_HEAD.IOU_SCORE_WEIGHT = 0.0
    cfg.MODEL.ROI_BOX_HEAD.IOU_LOSS_WEIGHT = 1.0

    cfg.MODEL.REID = CN()
    # ------------------------------------------------------------------------- embedding head
    # Paper: 256-d L2-normalised embeddings.
    cfg.MODEL.REID.EMBED_DIM = 256
    # Ours: normalisation between the linear projection and the L2 norm: "BN" (BatchNorm1d, as in
    # OIM/SeqNet embedding heads) or "" (none).
    cfg.MODEL.REID.EMBED_NORM = "BN"
    # Ours (the paper pools each ROI's re-id features globally): the embedding head pools P
    # horizontal stripes of the ROI features separately and projects their concatenation
    # (part-based pooling, as PCB), so the upper and the lower part of a person keep their own
    # features. 1 = the spatial mean.
    cfg.MODEL.REID.EMBED_STRIPES = 1
    # Ours: also embed every ground-truth person box of a training image (in the same ROI pass as
    # the sampled proposals), not only the sampled foreground proposals, so that every labelled
    # identity of a pair always has embeddings in both images. A gt box that was itself sampled as
    # a foreground proposal (ROI_HEADS.PROPOSAL_APPEND_GT) is embedded once.
    cfg.MODEL.REID.EMBED_GT_BOXES = True

    # I-Net inference: embed each detection from the shared res5 features of the proposal it
    # was regressed from ("proposals": one ROI pass, as the shared head scores it) or by a second
    # res5 pass on the final boxes ("boxes"). Ours; DC-I-Net always embeds the final boxes with
    # its own re-id module.
    cfg.MODEL.REID.INET_EMBED_DETECTIONS_FROM = "proposals"
    # Ours (the paper searches with unit embeddings): at inference each detection's embedding is
    # multiplied by its detection score to this power, so that the dot product a search ranks by
    # is score^p * cosine and a box the detector doubts (part of a person, a duplicate) falls
    # behind a confident one (the idea of NAE's norm-aware embeddings). Queries given as boxes
    # stay unit vectors. 0 = off (unit embeddings).
    cfg.MODEL.REID.EMBED_SCORE_POWER = 0.0
    # Ours (the paper embeds each box once): at inference every embedding, of a detection or of a
    # query box, is the normalised mean of the box's embedding and that of its mirror image in
    # the horizontally flipped image (flip test-time augmentation, common in re-id). It costs one
    # more backbone pass per image and one more re-id pass per box. False = one embedding.
    cfg.MODEL.REID.TEST_FLIP = False

    # ------------------------------------------------------------------------- identities
    # Number C of labelled training identities (pids 0..C-1). 0 = read it from
    # MetadataCatalog.get(DATASETS.TRAIN[0]).num_train_ids.
    cfg.MODEL.REID.NUM_IDS = 0

    # ------------------------------------------------------------------------- losses
    # Re-id losses, a subset of "olp", "hep", "c2hep", "oim". Paper: I-Net = OLP + HEP,
    # DC-I-Net = OLP + C2HEP. "oim" is the field's baseline (OIM / NAE / SeqNet) for comparisons.
    cfg.MODEL.REID.LOSSES = ["olp", "hep"]
    # Ours: weight of each re-id loss in the total loss (the paper gives none; 1 each).
    cfg.MODEL.REID.LOSS_WEIGHTS = CN()
    cfg.MODEL.REID.LOSS_WEIGHTS.OLP = 1.0
    cfg.MODEL.REID.LOSS_WEIGHTS.HEP = 1.0
    cfg.MODEL.REID.LOSS_WEIGHTS.C2HEP = 1.0
    cfg.MODEL.REID.LOSS_WEIGHTS.OIM = 1.0

    # OLP feature dictionary length (number of embeddings kept). Paper: "4 x batch size". Ours:
    # we read "batch size" as the most re-id embeddings one training step can produce from
    # sampled proposals, so 0 = 4 * SOLVER.IMS_PER_BATCH * ROI_HEADS.BATCH_SIZE_PER_IMAGE *
    # ROI_HEADS.POSITIVE_FRACTION (four steps' worth of foreground embeddings).
    cfg.MODEL.REID.DICTIONARY_SIZE = 0
    # Ours: OLP logit scale s (the paper writes none, i.e. s = 1); 10 = temperature 0.1 as in OIM.
    cfg.MODEL.REID.OLP_SCALE = 10.0
    # Ours: weighting of the OLP terms in the mean: "pair" (one term per (anchor, positive), the
    # formula as written), "anchor" (each anchor weighs 1) or "identity" (each identity of a pair
    # weighs 1, however many proposals it has in the two images). pair, measured: DC-I-Net seed
    # 0, 1,000 iterations, identity gave validation search mAP 37.8 against 46.6, test 31.5
    # against 32.4 (re-id probe 47.5 against 40.5; docs/reid_recipe.md).
    cfg.MODEL.REID.OLP_TERM_WEIGHT = "pair"

    # HEP label pool size M (ours: the paper gives no value).
    cfg.MODEL.REID.HEP_POOL_SIZE = 500
    # Paper: the identities of the top-20 hardest labelled negatives of each anchor join the pool.
    cfg.MODEL.REID.HEP_NUM_HARD = 20
    # Ours: HEP logit scale (cosine classifier).
    cfg.MODEL.REID.HEP_SCALE = 10.0

    # C2HEP label pool size (ours).
    cfg.MODEL.REID.C2HEP_POOL_SIZE = 500
    # Ours: number of hardest class centres per anchor (HEP's paper value 20 carried over).
    cfg.MODEL.REID.C2HEP_NUM_HARD = 20
    # Ours: C2HEP logit scale.
    cfg.MODEL.REID.C2HEP_SCALE = 10.0
    # Ours: momentum of the class-centre update (weight of the old centre; 0.5 as OIM's table).
    cfg.MODEL.REID.C2HEP_MOMENTUM = 0.5
    # Ours: class-centre update, "batch_mean" (one momentum step per class towards the mean of its
    # embeddings in the step) or "per_sample" (one step per embedding, in order, as OIM's table).
    # batch_mean, measured: DC-I-Net seed 0, 1,000 iterations, per_sample gave validation search
    # mAP 29.4 against 46.6 and test 25.6 against 32.4 (docs/reid_recipe.md).
    cfg.MODEL.REID.C2HEP_UPDATE = "batch_mean"

    # OIM baseline (Xiao et al. 2017; SeqNet's values): unlabelled queue length, logit scale
    # (1 / temperature), look-up table momentum.
    cfg.MODEL.REID.OIM_QUEUE_SIZE = 5000
    cfg.MODEL.REID.OIM_SCALE = 30.0
    cfg.MODEL.REID.OIM_MOMENTUM = 0.5

    # ------------------------------------------------------------------------- logging
    # Ours: the re-id metrics (reid/*: similarities, accuracies, pool sizes, fill ratios) are
    # averaged on the device over this many training steps and written to the event storage once
    # per period: one host-device synchronisation instead of one per metric and step. 20 is
    # DefaultTrainer's PeriodicWriter period; 1 writes every step's values.
    cfg.MODEL.REID.METRICS_PERIOD = 20
    return cfg
