#!/usr/bin/env python
"""Where batched inference spends its time, and what two cuDNN settings change (a diagnostic for
GPUs; runs on the CPU too, where it measures little).

One plain model (random weights, K = 25 detections embedded per image, as bench_inference.py), the
same random uint8 images; images per second (best and median of ``--iters`` calls) at each batch
size, fp32 and AMP, for three settings in turn: as built, with ``torch.backends.cudnn.benchmark``,
and with channels-last weights on top; then one AMP call of the largest batch under the torch
profiler: its wall time, the kernel time, and the operators by self device time and by CPU time.

    python bench/profile_inference.py --config-file configs/cuhk_sysu/dcinet_R50_C4.yaml \\
        --image-size 600 --batches 8 32        # docs/benchmarks.md, GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_model import load_cfg  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--config-file", default=os.path.join(REPO, "configs", "synthetic", "dcinet_small.yaml")
    )
    p.add_argument("--image-size", type=int, default=384, help="shorter side (width: 4/3 of it)")
    p.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    from detectron2.modeling import build_model
    from torch.profiler import ProfilerActivity, profile

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = load_cfg(args.config_file, args.image_size, num_ids=100, device=device)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    model.roi_heads.box_predictor.test_score_thresh = 0.0
    model.roi_heads.box_predictor.test_topk_per_image = 25
    h, w = args.image_size, int(round(args.image_size * 4 / 3))
    images = [torch.randint(0, 255, (3, h, w), dtype=torch.uint8) for _ in range(max(args.batches))]

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def call(batch, amp):
        inputs = [{"image": im, "height": h, "width": w} for im in images[:batch]]
        with torch.no_grad(), torch.autocast(device, enabled=amp):
            model(inputs)

    def report(setting):
        for batch in args.batches:
            for amp in (False, True):
                times = []
                for i in range(args.warmup + args.iters):
                    sync()
                    start = time.perf_counter()
                    call(batch, amp)
                    sync()
                    if i >= args.warmup:
                        times.append(time.perf_counter() - start)
                best, median = batch / min(times), batch / statistics.median(times)
                precision = "amp " if amp else "fp32"
                print(
                    f"{setting:26s} batch {batch:3d} {precision}: {best:7.1f} images/s "
                    f"(median {median:7.1f})",
                    flush=True,
                )

    report("as built")
    torch.backends.cudnn.benchmark = True
    report("cudnn.benchmark")
    model = model.to(memory_format=torch.channels_last)
    report("benchmark + channels-last")
    model = model.to(memory_format=torch.contiguous_format)
    torch.backends.cudnn.benchmark = False

    batch = max(args.batches)
    call(batch, True)  # warm-up outside the profiler
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        call(batch, True)
        sync()
    wall = time.perf_counter() - start
    events = prof.key_averages()
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    print(f"\nprofiled: batch {batch}, AMP, {wall * 1e3:.1f} ms wall (under the profiler)")
    print(events.table(sort_by=key, row_limit=25))
    print(events.table(sort_by="cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
