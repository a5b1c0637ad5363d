#!/usr/bin/env python
"""Ablation on the synthetic CUHK-SYSU: I-Net, DC-I-Net, and each re-id loss switched off in turn,
same schedule and seed, evaluated with the CUHK-SYSU protocol (gallery 100) and with
tools/reid_probe.py (re-id alone: retrieval among the gt boxes of 100 training images). Prints a
Markdown table.

    python bench/ablation.py --iters 600 --seeds 0 --out output/ablation

Each variant is one `train_net.py` run (a separate process) of configs/synthetic/{inet,dcinet}_small.yaml
with MODEL.REID.LOSSES overridden; runs whose metrics file already exists are not repeated.
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = [
    # name, config, losses
    ("I-Net (OLP + HEP)", "inet_small", ["olp", "hep"]),
    ("I-Net without OLP (HEP)", "inet_small", ["hep"]),
    ("I-Net without HEP (OLP)", "inet_small", ["olp"]),
    ("DC-I-Net (OLP + C2HEP)", "dcinet_small", ["olp", "c2hep"]),
    ("DC-I-Net without OLP (C2HEP)", "dcinet_small", ["c2hep"]),
    ("DC-I-Net without C2HEP (OLP)", "dcinet_small", ["olp"]),
]


def run_variant(config, losses, seed, iters, out_dir):
    metrics_path = os.path.join(out_dir, "inference", "synthetic_cuhk_sysu_test", "person_search_metrics.json")
    if not os.path.isfile(metrics_path):
        cmd = [sys.executable, os.path.join(REPO, "train_net.py"),
               "--config-file", os.path.join(REPO, "configs", "synthetic", f"{config}.yaml"),
               "MODEL.REID.LOSSES", json.dumps(losses).replace(" ", ""), "SEED", str(seed),
               "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({int(iters * 0.8)},)",
               "SOLVER.CHECKPOINT_PERIOD", str(iters), "OUTPUT_DIR", out_dir]
        with open(os.path.join(os.path.dirname(out_dir), os.path.basename(out_dir) + ".log"), "w") as log:
            subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    with open(metrics_path) as f:
        metrics = json.load(f)
    # Re-id alone, without detection: retrieval among the gt boxes of 100 training images.
    probe_path = os.path.join(out_dir, "reid_probe.json")
    if not os.path.isfile(probe_path):
        cmd = [sys.executable, os.path.join(REPO, "tools", "reid_probe.py"),
               "--config-file", os.path.join(REPO, "configs", "synthetic", f"{config}.yaml"),
               "--weights", os.path.join(out_dir, "model_final.pth"),
               "MODEL.REID.LOSSES", json.dumps(losses).replace(" ", "")]
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
        with open(probe_path, "w") as f:
            f.write(out.strip().splitlines()[-1])
    with open(probe_path) as f:
        metrics["probe"] = json.load(f)
    return metrics


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=600)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default=os.path.join("output", "ablation"))
    args = p.parse_args()
    from dcinet_d2.data.synthetic import ensure_synthetic_datasets

    ensure_synthetic_datasets(progress=False)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name, config, losses in VARIANTS:
        per_seed = []
        for seed in args.seeds:
            t = time.time()
            out_dir = os.path.abspath(os.path.join(args.out, f"{config}_{'-'.join(losses)}_seed{seed}"))
            m = run_variant(config, losses, seed, args.iters, out_dir)
            per_seed.append(m)
            print(f"{name} seed {seed}: mAP {m['search']['mAP']:.2f} top-1 {m['search']['top1']:.2f} "
                  f"({time.time() - t:.0f} s)", flush=True)
        rows.append((name, per_seed))
    print(f"\n{args.iters} iterations, seeds {args.seeds}; CUHK-SYSU protocol, gallery 100 "
          "(mean over seeds, then each seed in order)\n")
    print("| variant | search mAP | top-1 | top-5 | detection AP | recall | probe mAP | probe rank-1 | "
          "probe median first match |")
    print("|---|---|---|---|---|---|---|---|---|")
    import numpy as np

    for name, ms in rows:
        def cell(task, key):
            v = np.array([m[task][key] for m in ms])
            # With a few seeds a standard deviation says little: show every seed's value.
            return f"{v.mean():.1f}" + (f" ({', '.join(f'{x:.1f}' for x in v)})" if len(v) > 1 else "")
        print(f"| {name} | {cell('search', 'mAP')} | {cell('search', 'top1')} | {cell('search', 'top5')} | "
              f"{cell('detection', 'AP')} | {cell('detection', 'recall')} | {cell('probe', 'mAP')} | "
              f"{cell('probe', 'rank1')} | {cell('probe', 'median_first_hit')} |")


if __name__ == "__main__":
    main()
