#!/usr/bin/env python
"""The README's GPU table from the JSON lines of bench/bench_model.py and bench/bench_inference.py
(written by tools/device_check.sh): milliseconds and ratios, fp32 and AMP, per model."""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    model = [r for r in rows if r["bench"] == "model"]
    if model:
        table = defaultdict(dict)
        for r in model:
            table[(r["measure"].replace("_amp", ""), r["precision"])][r["model"]] = r
        names = ["FasterRCNN", "INetROIHeads", "DCINetROIHeads"]
        print(
            f"Model benchmark ({model[0]['config']}, {model[0]['images']} images, "
            f"{model[0]['device']}); best of the interleaved runs, "
            "ratio to Faster R-CNN, peak MiB\n"
        )
        print("| measure | precision | Faster R-CNN | I-Net | DC-I-Net |")
        print("|---|---|---|---|---|")
        for (measure, precision), by_model in sorted(table.items()):
            cells = []
            for n in names:
                r = by_model.get(n)
                cells.append(
                    "-"
                    if r is None
                    else f"{r['best_ms']:.1f} ms ({r['ratio_to_faster_rcnn']:.2f}x, "
                    f"{r['peak_mb']:.0f} MiB)"
                )
            print(f"| {measure} | {precision} | " + " | ".join(cells) + " |")
        amp = {
            (r["measure"].replace("_amp", ""), r["model"]): r["best_ms"]
            for r in model
            if r["precision"] == "amp"
        }
        fp32 = {(r["measure"], r["model"]): r["best_ms"] for r in model if r["precision"] == "fp32"}
        speedups = [
            f"{m} {n}: {fp32[(m, n)] / amp[(m, n)]:.2f}x" for (m, n) in amp if (m, n) in fp32
        ]
        if speedups:
            print("\nAMP speed-up over fp32: " + "; ".join(speedups))
    batched = [r for r in rows if r["bench"] == "inference_batch"]
    if batched:
        print(f"\nBatched inference ({batched[0]['config']}, {batched[0]['device']})\n")
        print("| model | images per forward | precision | images/s | vs plain fp32 batch 1 |")
        print("|---|---|---|---|---|")
        for r in batched:
            print(
                f"| {r['variant']} | {r['batch']} | {r['precision']} | {r['images_per_s']:.1f} | "
                f"{r['ratio_to_base']:.2f}x |"
            )


if __name__ == "__main__":
    main(sys.argv[1])
