#!/usr/bin/env python
"""Inference throughput of a person search model at several images per forward (batched
inference: evaluation with ``TEST.IMS_PER_BATCH``, gallery indexing with ``--batch-size``).

One model (random weights, as bench_model.py: the number K of embedded detections per image is
fixed by removing the score threshold and keeping the top K), the same random uint8 images (what
the dataset mapper and the predictor give), batch sizes interleaved in one process; reported:
images per second (best and median of ``--iters`` calls) and the ratio to batch 1 of the plain
model in fp32, the baseline run in the same process. Variants: ``plain`` (the model as built) and
``fast`` (the inference copy that evaluation and the predictor run:
``dcinet_d2.modeling.fast_inference.inference_model``, norms folded, channels-last on CUDA). On
CUDA, fp32 and AMP (fp16 autocast) are both timed.

    .venv/bin/python bench/bench_inference.py                                  # small CPU config
    .venv/bin/python bench/bench_inference.py --config-file configs/cuhk_sysu/dcinet_R50_C4.yaml \\
        --image-size 600 --batches 1 8 32 --json out.jsonl                    # paper config, GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_model import load_cfg  # noqa: E402  (the same config handling as the model benchmark)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--config-file", default=os.path.join(REPO, "configs", "synthetic", "dcinet_small.yaml")
    )
    p.add_argument("--image-size", type=int, default=384, help="shorter side")
    p.add_argument("--aspect", type=float, default=4 / 3, help="width / height")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--topk", type=int, default=25, help="detections embedded per image (K)")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--variants", nargs="+", default=["plain", "fast"], choices=["plain", "fast"])
    p.add_argument("--json", default=None, help="append one JSON line per measurement")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from detectron2.modeling import build_model

    from dcinet_d2.modeling.fast_inference import inference_model

    cfg = load_cfg(args.config_file, args.image_size, num_ids=100)
    cfg.defrost()
    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    cfg.freeze()
    device = cfg.MODEL.DEVICE
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    model.roi_heads.box_predictor.test_score_thresh = 0.0
    model.roi_heads.box_predictor.test_topk_per_image = args.topk
    h = args.image_size
    w = int(round(h * args.aspect))
    largest = max(args.batches)
    images = [torch.randint(0, 255, (3, h, w), dtype=torch.uint8) for _ in range(largest)]
    models = {"plain": model}
    if "fast" in args.variants:
        models["fast"] = inference_model(model, channels_last=True)
    precisions = ["fp32", "amp"] if device.startswith("cuda") else ["fp32"]
    runs = [(v, prec, b) for v in args.variants for prec in precisions for b in args.batches]
    times = {r: [] for r in runs}
    for it in range(args.warmup + args.iters):
        for variant, prec, batch in runs:  # interleaved: the machine's noise spreads over all
            inputs = [{"image": im, "height": h, "width": w} for im in images[:batch]]
            _sync(device)
            start = time.perf_counter()
            with torch.no_grad(), torch.autocast(device.split(":")[0], enabled=prec == "amp"):
                models[variant](inputs)
            _sync(device)
            if it >= args.warmup:
                times[(variant, prec, batch)].append(time.perf_counter() - start)
    print(
        f"{os.path.basename(args.config_file)}, {w}x{h} inputs, K = {args.topk}, device {device}, "
        f"{torch.get_num_threads()} threads, {args.iters} calls each (best / median)\n"
    )
    first = runs[0]
    base = first[2] / min(times[first])
    print(f"baseline: {first[0]} {first[1]} at batch {first[2]}, {base:.2f} images/s\n")
    print("| model | per forward | precision | images/s (best) | images/s (median) | vs base |")
    print("|---|---|---|---|---|---|")
    for variant, prec, batch in runs:
        best = batch / min(times[(variant, prec, batch)])
        median = batch / statistics.median(times[(variant, prec, batch)])
        print(f"| {variant} | {batch} | {prec} | {best:.2f} | {median:.2f} | {best / base:.2f}x |")
        if args.json:
            row = {
                "bench": "inference_batch",
                "config": os.path.basename(args.config_file),
                "device": device,
                "variant": variant,
                "batch": batch,
                "precision": prec,
                "images_per_s": best,
                "ratio_to_base": best / base,
            }
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
