#!/usr/bin/env python
"""Pre-train the small configs' ResNet on a disjoint synthetic set and write the shipped weights.

    python tools/pretrain_backbone.py   # writes dcinet_d2/pretrained/synthetic_r50q_c4.pth
    python tools/pretrain_backbone.py --out /tmp/pre --weights-out /tmp/r50q.pth

1. generates ``$DETECTRON2_DATASETS/synthetic_pretrain/CUHK-SYSU`` when absent (``PRETRAIN_SET``):
   a synthetic CUHK-SYSU drawn with seed 1000 (the benchmark uses seed 0, so its persons are other
   persons), 5,600 images, 2,000 training identities; a set found there that was generated with
   other settings stops the tool (its ``synthetic_stats.json`` says which);
2. trains configs/synthetic/pretrain_small.yaml on it (train_net.py's code; 3,500 steps of 8
   images: 5 minutes on one H200 GPU at 0.078 s per step, which is where the shipped file was
   trained; hours on 2 CPU cores);
3. keeps the ResNet of the final checkpoint (``backbone.*`` and ``roi_heads.res5.*``: the trunk
   and the res5 ROI head, what an ImageNet initialisation holds) and writes it with
   ``torch.save({"model": ..., "__author__": ...})``; the RPN, the box predictor, the embedding
   head and the losses' memories are left out, they are trained by the configs that load it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "synthetic", "pretrain_small.yaml")
#: The parts of the model that the shipped file holds (key prefixes of the state dict): the ResNet
#: (trunk and res5 ROI head), and with ``--with-detector`` the detector's heads too.
KEPT_PREFIXES = ("backbone.", "roi_heads.res5.")
DETECTOR_PREFIXES = ("proposal_generator.", "roi_heads.box_predictor.")
#: The pre-training set: seed and size (ours; the benchmark is seed 0, 450 images, 120 + 70 ids).
#: 2,000 identities: more persons than 480 or 1,000 gave the best validation search and detection
#: (docs/reid_recipe.md, "More identities in the pre-training").
PRETRAIN_SET = {
    "seed": 1000,
    "num_images": 5600,
    "pool_size": 100,
    "num_train_ids": 2000,
    "num_test_ids": 40,
    "gallery_sizes": [50],
}


def check_pretrain_set(root: str, spec: dict = PRETRAIN_SET) -> None:
    """Raise ValueError when the set at ``root`` was not generated with ``spec`` (read from the
    ``synthetic_stats.json`` the generator writes), so that an older pre-training set is never
    trained on by mistake."""
    path = os.path.join(root, "synthetic_stats.json")
    try:
        with open(path) as f:
            stats = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{path}: cannot read the generator's statistics ({e}); remove {root} to regenerate "
            "the pre-training set"
        ) from e
    expected = {
        "seed": spec["seed"],
        "images": spec["num_images"],
        "train_ids": spec["num_train_ids"],
        "test_ids": spec["num_test_ids"],
    }
    found = {key: stats.get(key) for key in expected}
    if found != expected:
        raise ValueError(
            f"{path}: the pre-training set there was generated with {found}, this tool trains on "
            f"{expected} (PRETRAIN_SET); remove {root} to regenerate it"
        )


def resnet_state(checkpoint_path: str, with_detector: bool = False) -> dict:
    """The ``KEPT_PREFIXES`` (and ``DETECTOR_PREFIXES``) entries of a training checkpoint's model,
    as float32 CPU tensors."""
    ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    model = ckpt.get("model", ckpt)
    prefixes = KEPT_PREFIXES + (DETECTOR_PREFIXES if with_detector else ())
    kept = {
        k: v.float() if v.is_floating_point() else v
        for k, v in model.items()
        if k.startswith(prefixes)
    }
    if not any(k.startswith("roi_heads.res5.") for k in kept):
        raise ValueError(
            f"{checkpoint_path}: no roi_heads.res5.* weights (not a C4 person-search model?)"
        )
    return kept


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", default=os.path.join("output", "pretrain_small"), help="training output folder"
    )
    p.add_argument(
        "--weights-out",
        default=os.path.join(REPO, "dcinet_d2", "pretrained", "synthetic_r50q_c4.pth"),
    )
    p.add_argument("--from-checkpoint", help="skip training: extract the ResNet of this checkpoint")
    p.add_argument(
        "--with-detector",
        action="store_true",
        help="also keep the RPN and the box predictor (a pre-trained person detector)",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="processes that draw the pre-training set"
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config overrides")
    args = p.parse_args(argv)

    checkpoint = args.from_checkpoint
    if checkpoint is None:
        from dcinet_d2.data.datasets.builtin import datasets_root
        from dcinet_d2.data.synthetic import generate_cuhk_sysu
        from dcinet_d2.engine.cli import argument_parser
        from dcinet_d2.engine.cli import main as train_main

        root = os.path.join(datasets_root(), "synthetic_pretrain", "CUHK-SYSU")
        if os.path.isdir(root):
            check_pretrain_set(root)
        else:
            generate_cuhk_sysu(root, num_workers=args.workers, **PRETRAIN_SET)
        train_args = argument_parser().parse_args(
            ["--config-file", CONFIG, "OUTPUT_DIR", args.out, *args.opts]
        )
        train_main(train_args)
        checkpoint = os.path.join(args.out, "model_final.pth")

    state = resnet_state(checkpoint, args.with_detector)
    os.makedirs(os.path.dirname(os.path.abspath(args.weights_out)), exist_ok=True)
    torch.save(
        {
            "model": state,
            "__author__": "dcinet_d2 tools/pretrain_backbone.py",
            "config": "configs/synthetic/pretrain_small.yaml",
        },
        args.weights_out,
    )
    size = os.path.getsize(args.weights_out) / 2**20
    print(f"wrote {args.weights_out}: {len(state)} tensors, {size:.1f} MiB, from {checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
