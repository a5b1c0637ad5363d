"""Config keys of dcinet_d2, added to a Detectron2 config by :func:`add_dcinet_config`.

Every key is commented where it is set. "Paper" marks a value given by Zhang et al. (TPAMI 2020);
"ours" marks a choice of this project where the paper gives none.
"""

from __future__ import annotations

from detectron2.config import CfgNode as CN

from .modeling.config import add_model_config


def add_dcinet_config(cfg: CN) -> CN:
    """Add the keys of dcinet_d2 to ``cfg`` in place (and return it). Touches no existing key.

    ``cfg.MODEL.REID`` (embedding, identities, re-id losses) is documented in
    :mod:`dcinet_d2.modeling.config`; the data and evaluation keys below.
    """
    add_model_config(cfg)
    # ---------------------------------------------------------------- paired (Siamese) loading
    cfg.DATALOADER.PAIRING = CN()
    # Build training batches from pairs of images that share a labelled identity: images 2k and
    # 2k+1 of every batch form a pair (SOLVER.IMS_PER_BATCH must then be even). Paper: Siamese
    # training on image pairs.
    cfg.DATALOADER.PAIRING.ENABLED = True
    # Ours: what to pair an image with when none of its labelled identities occurs in any other
    # training image (or it holds no labelled person at all):
    #   "self":   the image with a second, independently augmented copy of itself (default),
    #   "random": a uniformly drawn other training image (the pair then shares no identity),
    #   "drop":   never use such an image as an anchor (it can still be drawn as a partner).
    cfg.DATALOADER.PAIRING.FALLBACK = "self"
    # Ours: for datasets with cameras (PRW), draw the partner among images from *other* cameras
    # when there is one; otherwise uniformly among all images sharing an identity.
    cfg.DATALOADER.PAIRING.PREFER_OTHER_CAMERA = True
    # Ours: a training image that cannot be decoded (found by the start-up check or when loaded)
    # stops training with its file name (False), or is left out with a counted warning (True).
    # Test images are always checked before training and never skipped (the protocol needs them).
    cfg.DATALOADER.SKIP_UNREADABLE_IMAGES = False

    # Ours: test images per forward in evaluation. 1 as Detectron2 (and the reported numbers);
    # more is faster, and images of different sizes are then padded to the largest of the batch,
    # which moves detections and embeddings slightly (a few 1e-3 here), so metrics can differ in
    # the last digits. bench/bench_inference.py measures the throughput.
    cfg.TEST.IMS_PER_BATCH = 1
    # Ours: inference (evaluation, predictor, gallery indexing) runs an eval copy of the model
    # with fixed-statistics norms (FrozenBN, BN's running statistics) folded into the convolutions:
    # the same outputs up to float rounding, less GPU work (dcinet_d2/modeling/fast_inference.py;
    # measured in docs/benchmarks.md).
    cfg.TEST.FOLD_NORMS = True
    # Ours: on CUDA, the inference copy (made when this or FOLD_NORMS is on) keeps its weights
    # and activations channels-last (NHWC), the layout cuDNN's tensor-core convolutions use
    # (measured in docs/benchmarks.md); other cuDNN kernels, so outputs differ by float rounding.
    # Ignored on the CPU.
    cfg.TEST.CHANNELS_LAST = True
    # Ours: fp16 autocast for inference on CUDA (embeddings returned in fp32); off by default so
    # that evaluation gives fp32 numbers. Ignored on the CPU.
    cfg.TEST.AMP = False

    # ---------------------------------------------------------------- person-search evaluation
    cfg.TEST.PERSON_SEARCH = CN()
    # Protocol (community reference): detections scoring below this are dropped before search.
    cfg.TEST.PERSON_SEARCH.DET_THRESH = 0.5
    # CUHK-SYSU gallery size of the headline numbers (50, 100, 500, 1000, 2000, 4000; -1 = full
    # set). Protocol default: 100.
    cfg.TEST.PERSON_SEARCH.GALLERY_SIZE = 100
    # CUHK-SYSU: extra gallery sizes reported as a curve (empty = none).
    cfg.TEST.PERSON_SEARCH.GALLERY_SIZE_CURVE = []
    # PRW: also report the cross-camera variant (gallery frames from other cameras only).
    cfg.TEST.PERSON_SEARCH.CROSS_CAMERA = False
    # Optional CBGM re-scoring (SeqNet, AAAI 2021); off = exactly the protocol's numbers.
    cfg.TEST.PERSON_SEARCH.CBGM = False
    # CBGM: number of most similar gallery images re-scored (k1) and of query-image context
    # detections matched (k2). SeqNet's values.
    cfg.TEST.PERSON_SEARCH.CBGM_K1 = 10
    cfg.TEST.PERSON_SEARCH.CBGM_K2 = 3
    return cfg
