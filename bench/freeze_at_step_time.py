#!/usr/bin/env python
"""Training-step time of the small DC-I-Net config with the first backbone stages frozen.

    .venv/bin/python bench/freeze_at_step_time.py [--freeze-at 0 2 3] [--image-size 384]

Detectron2's ``MODEL.BACKBONE.FREEZE_AT`` k stops the backward pass at stage k of the ResNet
(2: the stem and res2, the largest feature maps). A faster step buys more iterations in the
demo's 15 minutes (docs/reid_recipe.md). The settings are built in one process from the same
weights and timed interleaved on the same random Siamese batch (bench/bench_model.py's
helpers, one torch thread); the best CPU time of each, and its ratio to the first setting.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (REPO_ROOT, os.path.join(REPO_ROOT, "bench")):
    if path not in sys.path:
        sys.path.insert(0, path)

from bench_model import load_cfg, make_batch, time_interleaved  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

import dcinet_d2  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--config-file",
        default=os.path.join(REPO_ROOT, "configs", "synthetic", "dcinet_small.yaml"),
    )
    p.add_argument("--freeze-at", type=int, nargs="+", default=[0, 2, 3])
    p.add_argument("--image-size", type=int, default=384, help="the demo's input height")
    p.add_argument("--iters", type=int, default=4)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    batch = make_batch(4, args.image_size, args.image_size * 4 // 3, 5, 64, seed=0)
    steps = {}
    own = get_cfg()  # the config's own res5 norm (load_cfg clears it for the Faster R-CNN bench)
    dcinet_d2.add_dcinet_config(own)
    own.merge_from_file(args.config_file)
    for k in args.freeze_at:
        cfg = load_cfg(args.config_file, args.image_size, num_ids=64)
        cfg.MODEL.ROI_HEADS.RES5_NORM = own.MODEL.ROI_HEADS.RES5_NORM
        cfg.MODEL.BACKBONE.FREEZE_AT = k
        torch.manual_seed(0)
        model = build_model(cfg).train()
        opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=0.0)

        def step(model=model, opt=opt):
            losses = model(batch)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()

        steps[f"FREEZE_AT {k}"] = step
    with EventStorage():
        times = time_interleaved(steps, iters=args.iters, warmup=1)
    base = next(iter(times.values()))["cpu"]
    for name, t in times.items():
        print(f"{name}: best CPU time {t['cpu']:.3f} s per step ({t['cpu'] / base:.2f}x)")


if __name__ == "__main__":
    main()
