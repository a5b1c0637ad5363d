#!/usr/bin/env python
"""Why the small CPU configs use GroupNorm in the res5 ROI heads: re-id learning vs batch
composition.

A person-search training step embeds the ROIs of two pairs of images: many rows, but only a
handful of identities. This experiment isolates that effect outside the detector. The small
config's trunk (backbone to res4), re-id res5 and embedding head learn to classify the labelled
ground-truth crops of the synthetic CUHK-SYSU training set (128x64, a cosine softmax over all
identities, SGD at the config's learning rate), with 32 re-id rows per step drawn as:

* ``diverse``: 32 crops of random identities, the backbone and the heads on the same 32 crops;
* ``4 ids, <norm>``: 8 crops of each of 4 identities through the heads, while the backbone sees
  them together with 32 random other crops (in the detector the backbone normalises over whole
  images, the ROI heads over the ROIs of the step); ``<norm>`` is the norm of the res5 head
  blocks (``MODEL.ROI_HEADS.RES5_NORM``).

Prints the training-set accuracy (eval mode) every 50 steps. Same seed for every variant.

    python bench/reid_batch_composition.py [--steps 250] [--variants diverse bn4 gn4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
CONFIG = os.path.join(REPO, "configs", "synthetic", "dcinet_small.yaml")
VARIANTS = {"diverse": ("diverse", "BN"), "bn4": ("4 ids", "BN"), "gn4": ("4 ids", "GN")}


def load_crops(dataset, pixel_mean, pixel_std, size=(64, 128)):
    """Labelled gt crops of ``dataset``, resized to ``size`` (w, h), normalised, BGR:
    ``[N, 3, h, w]``, pids."""
    from PIL import Image

    crops, pids = [], []
    for d in dataset:
        image = None
        for a in d["annotations"]:
            x1, y1, x2, y2 = a["bbox"]
            if a.get("person_id", -1) < 0 or x2 - x1 < 2 or y2 - y1 < 2:
                continue
            image = image or Image.open(d["file_name"]).convert("RGB")
            crop = np.asarray(image.crop((int(x1), int(y1), int(x2), int(y2))).resize(size))[
                :, :, ::-1
            ]
            crops.append(torch.from_numpy(crop.copy()).permute(2, 0, 1).float())
            pids.append(int(a["person_id"]))
    return (torch.stack(crops) - pixel_mean) / pixel_std, torch.tensor(pids)


def small_cfg(res5_norm):
    """The small DC-I-Net config on the CPU, with ``MODEL.ROI_HEADS.RES5_NORM = res5_norm``."""
    from dcinet_d2.engine.cli import setup_cfg

    opts = ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.RES5_NORM", res5_norm]
    return setup_cfg(argparse.Namespace(config_file=CONFIG, opts=opts))


def run(variant, crops, pids, steps, seed):
    from detectron2.modeling import build_model

    composition, norm = VARIANTS[variant]
    torch.manual_seed(seed)
    cfg = small_cfg(norm)
    model = build_model(cfg)
    backbone, heads = model.backbone, model.roi_heads
    num_classes = int(pids.max()) + 1
    weight = torch.nn.Parameter(torch.randn(num_classes, heads.embed_dim) * 0.01)
    params = [
        *backbone.parameters(),
        *heads.reid_res5.parameters(),
        *heads.embed_head.parameters(),
        weight,
    ]
    opt = torch.optim.SGD(
        params,
        lr=cfg.SOLVER.BASE_LR,
        momentum=cfg.SOLVER.MOMENTUM,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )

    def embed(res4):
        return heads.embed_head(
            heads.reid_res5(F.adaptive_avg_pool2d(res4, cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION))
        )

    def accuracy():
        backbone.eval()
        heads.eval()
        with torch.no_grad():
            e = torch.cat(
                [embed(backbone(crops[i : i + 64])["res4"]) for i in range(0, len(crops), 64)]
            )
            return float((e @ F.normalize(weight, dim=1).t()).argmax(1).eq(pids).float().mean())

    by_id = [torch.nonzero(pids == c).flatten() for c in range(num_classes)]
    present = [c for c in range(num_classes) if len(by_id[c])]
    curve = []
    for step in range(steps + 1):
        if step % 50 == 0:
            curve.append((step, accuracy()))
        if step == steps:
            break
        backbone.train()
        heads.train()
        if composition == "diverse":
            rows = torch.randint(len(pids), (32,))
            res4 = backbone(crops[rows])["res4"]
        else:
            ids = [present[int(i)] for i in torch.randint(len(present), (4,))]
            rows = torch.cat([by_id[c][torch.randint(len(by_id[c]), (8,))] for c in ids])
            others = torch.randint(len(pids), (32,))
            res4 = backbone(torch.cat([crops[rows], crops[others]]))["res4"][: len(rows)]
        logits = 10.0 * embed(res4) @ F.normalize(weight, dim=1).t()
        loss = F.cross_entropy(logits, pids[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return curve


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()
    from detectron2.data import DatasetCatalog

    from dcinet_d2.data.synthetic import ensure_synthetic_datasets

    ensure_synthetic_datasets(which="cuhk_sysu", progress=False)
    cfg = small_cfg("")
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
    crops, pids = load_crops(DatasetCatalog.get("synthetic_cuhk_sysu_train"), mean, std)
    print(f"{len(pids)} labelled crops of {len(torch.unique(pids))} identities")
    curves = {}
    for v in args.variants:
        t = time.time()
        curves[v] = run(v, crops, pids, args.steps, args.seed)
        print(f"{v}: {time.time() - t:.0f} s", flush=True)
    steps = [s for s, _ in curves[args.variants[0]]]
    print(
        "\n| rows per step (norm of the res5 heads) | "
        + " | ".join(f"step {s}" for s in steps)
        + " |"
    )
    print("|---" * (len(steps) + 1) + "|")
    for v in args.variants:
        composition, norm = VARIANTS[v]
        print(
            f"| {composition} ({norm}) | "
            + " | ".join(f"{100 * a:.0f}" for _, a in curves[v])
            + " |"
        )


if __name__ == "__main__":
    main()
