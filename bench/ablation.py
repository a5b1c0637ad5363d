#!/usr/bin/env python
"""Ablation on the synthetic CUHK-SYSU: OIM, I-Net, DC-I-Net and each of their re-id losses
switched off, the same schedule and seeds, with the hand-crafted baseline on the same boxes. One
Markdown table.

    python bench/ablation.py --iters 600 --seeds 0 1 2 --out output/ablation
    python bench/ablation.py --iters 1200 --seeds 0 1 2 --variants dcinet   # the demo's recipe
    python bench/ablation.py --iters 1000 --seeds 0 1 2 --variants oim inet dcinet \
        --test-set synthetic_heldout_cuhk_sysu_test   # the same runs on 200 held-out queries

Each variant and seed is one `train_net.py` run (a separate process) of
configs/synthetic/{inet,dcinet}_small.yaml with MODEL.REID.LOSSES overridden, evaluated with the
CUHK-SYSU protocol (gallery 100) on --test-set: the benchmark's test split (70 queries) by default,
or any registered CUHK-SYSU-style test set, which the trained runs are then evaluated on
(`train_net.py --eval-only`, into the run's `eval_<test set>/`). Per run the table reads:
- search mAP / top-1 of the learned embeddings;
- search mAP / top-1 of colour histograms of the *same detections*
  (dcinet_d2.evaluation.colour_baseline, weighted by the detection score as the model weighs its
  embeddings, MODEL.REID.EMBED_SCORE_POWER), so learned and hand-crafted features meet on equal
  boxes with equal help from the detector;
- detection AP;
- the re-id probe (tools/reid_probe.py on the ground-truth boxes of the test set's first 100
  images: unseen identities, detection plays no part): mAP and rank-1.
The colour histogram on the ground-truth boxes does not depend on the model: it is printed once.
The last column says what is within noise: the search mAP of the variant minus DC-I-Net's, both
averaged over the seeds they share, with its 95 % interval when the test queries are resampled
(paired bootstrap, dcinet_d2.evaluation.diagnostics.bootstrap_query_means). An interval that holds
0 is a difference the test queries cannot tell apart; it does not include seed-to-seed variation
beyond the averaging.
Runs whose results already exist in --out are not repeated; with --existing nothing is run and
the table holds the runs found in --out (each row names its seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_SET = "synthetic_cuhk_sysu_test"  # where the runs are evaluated at the end of training
VARIANTS = [
    # key, name, config, losses
    ("oim", "OIM (shared res5, as OIM)", "inet_small", ["oim"]),
    ("inet", "I-Net (OLP + HEP)", "inet_small", ["olp", "hep"]),
    ("inet-hep", "I-Net without OLP (HEP)", "inet_small", ["hep"]),
    ("inet-olp", "I-Net without HEP (OLP)", "inet_small", ["olp"]),
    ("dcinet", "DC-I-Net (OLP + C2HEP)", "dcinet_small", ["olp", "c2hep"]),
    ("dcinet-c2hep", "DC-I-Net without OLP (C2HEP)", "dcinet_small", ["c2hep"]),
    ("dcinet-olp", "DC-I-Net without C2HEP (OLP)", "dcinet_small", ["olp"]),
    ("dcinet-oim", "OIM on DC-I-Net's divided heads", "dcinet_small", ["oim"]),
]
REFERENCE = "dcinet"  # the variant every other is compared with (the paper's best)


def _run(cmd, log_path):
    with open(log_path, "w") as log:
        subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)


def result_paths(out_dir, test_set):
    """Where a run keeps its results on ``test_set``: (predictions, baselines, probe) files.
    The benchmark's test split keeps the names the demo and earlier runs write."""
    if test_set == TEST_SET:
        eval_dir, suffix = out_dir, ""
    else:
        eval_dir, suffix = os.path.join(out_dir, f"eval_{test_set}"), f"_{test_set}"
    return (
        os.path.join(eval_dir, "inference", test_set, "person_search_predictions.pth"),
        os.path.join(out_dir, f"baselines{suffix}.json"),
        os.path.join(out_dir, f"reid_probe_test{suffix}.json"),
    )


def run_variant(config, losses, seed, iters, out_dir, opts, test_set=TEST_SET):
    cfg_file = os.path.join(REPO, "configs", "synthetic", f"{config}.yaml")
    loss_opt = ["MODEL.REID.LOSSES", json.dumps(losses).replace(" ", "")]
    predictions, baselines, probe_path = result_paths(out_dir, test_set)
    trained = os.path.join(out_dir, "model_final.pth")

    def train_net(flags, overrides):
        # flags go before the KEY VALUE overrides, which train_net.py takes as the remainder
        return [
            sys.executable,
            os.path.join(REPO, "train_net.py"),
            *flags,
            "--config-file",
            cfg_file,
            *loss_opt,
            "SEED",
            str(seed),
            *overrides,
            *opts,
        ]

    if not os.path.isfile(result_paths(out_dir, TEST_SET)[0]):
        schedule = [
            "SOLVER.MAX_ITER",
            str(iters),
            "SOLVER.STEPS",
            f"({int(iters * 0.8)},)",
            "SOLVER.CHECKPOINT_PERIOD",
            str(iters),
        ]
        _run(train_net([], [*schedule, "OUTPUT_DIR", out_dir]), out_dir + ".log")
    if not os.path.isfile(predictions):
        eval_dir = os.path.dirname(os.path.dirname(os.path.dirname(predictions)))
        evaluation = ["MODEL.WEIGHTS", trained, "DATASETS.TEST", f"('{test_set}',)"]
        _run(train_net(["--eval-only"], [*evaluation, "OUTPUT_DIR", eval_dir]), eval_dir + ".log")
    if not os.path.isfile(baselines):  # for the benchmark's test split, what the demo writes too
        from dcinet_d2.evaluation.colour_baseline import compare_with_histograms

        with open(baselines, "w") as f:
            json.dump(compare_with_histograms(test_set, predictions), f, indent=2)
    with open(baselines) as f:
        metrics = json.load(f)
    # Re-id alone, without detection: retrieval among the test set's ground-truth boxes.
    if not os.path.isfile(probe_path):
        out = subprocess.run(
            [
                sys.executable,
                os.path.join(REPO, "tools", "reid_probe.py"),
                "--config-file",
                cfg_file,
                "--weights",
                trained,
                "--dataset",
                test_set,
                *loss_opt,
                *opts,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        with open(probe_path, "w") as f:
            f.write(out.strip().splitlines()[-1])
    with open(probe_path) as f:
        metrics["probe"] = json.load(f)
    return metrics


def finished(out_dir, test_set=TEST_SET):
    """Whether a run's three result files (predictions, baselines, probe) on ``test_set`` exist."""
    return all(os.path.isfile(path) for path in result_paths(out_dir, test_set))


def trained_iterations(out_dir):
    """SOLVER.MAX_ITER of a finished run, from the config.yaml train_net.py wrote."""
    import yaml

    with open(os.path.join(out_dir, "config.yaml")) as f:
        return int(yaml.safe_load(f)["SOLVER"]["MAX_ITER"])


def seed_mean_query_ap(runs, seeds, test_set=TEST_SET):
    """Per-query search AP of the runs with the given seeds, averaged over them: (ids, [Q])."""
    from dcinet_d2.evaluation.diagnostics import per_query_ap

    per_run = [
        per_query_ap(test_set, result_paths(m["dir"], test_set)[0])
        for m in runs
        if m["seed"] in seeds
    ]
    ids = per_run[0][0]
    if any(not np.array_equal(other, ids) for other, _ in per_run[1:]):
        raise ValueError("runs were not evaluated on the same queries")
    return ids, np.mean([ap for _, ap in per_run], axis=0)


def difference_cell(runs, reference_runs, test_set=TEST_SET, samples=10000):
    """Search mAP of ``runs`` minus ``reference_runs`` over their common seeds, with its paired
    95 % bootstrap interval over the queries; empty without a common seed."""
    from dcinet_d2.evaluation.diagnostics import bootstrap_query_means

    seeds = {m["seed"] for m in runs} & {m["seed"] for m in reference_runs or []}
    if not seeds:
        return ""
    ids, ap = seed_mean_query_ap(runs, seeds, test_set)
    ref_ids, ref_ap = seed_mean_query_ap(reference_runs, seeds, test_set)
    if not np.array_equal(ids, ref_ids):
        raise ValueError("runs were not evaluated on the same queries")
    boot = 100.0 * bootstrap_query_means(np.stack([ap, ref_ap]), samples)
    low, high = np.percentile(boot[0] - boot[1], [2.5, 97.5])
    seeds_text = ", ".join(str(s) for s in sorted(seeds))
    return (
        f"{100.0 * (ap.mean() - ref_ap.mean()):+.1f} [{low:+.1f}, {high:+.1f}] (seeds {seeds_text})"
    )


def cell(values):
    """Mean, then every seed's value (with a few seeds a standard deviation says little)."""
    mean = sum(values) / len(values)
    return f"{mean:.1f}" + (
        f" ({', '.join(f'{v:.1f}' for v in values)})" if len(values) > 1 else ""
    )


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--iters", type=int, default=600)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--variants",
        nargs="+",
        default=[v[0] for v in VARIANTS],
        choices=[v[0] for v in VARIANTS],
        help="subset to run (default: all)",
    )
    p.add_argument("--out", default=os.path.join("output", "ablation"))
    p.add_argument(
        "--test-set",
        default=TEST_SET,
        help="registered CUHK-SYSU-style test set of the table (gallery 100); the runs train on "
        "synthetic_cuhk_sysu_train whatever it is",
    )
    p.add_argument(
        "--existing",
        action="store_true",
        help="run nothing: tabulate the finished runs found in --out",
    )
    p.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every run"
    )
    args = p.parse_args()
    from dcinet_d2.data.synthetic import (
        SYNTHETIC_TEST_SETS,
        ensure_synthetic_datasets,
        ensure_synthetic_test_set,
    )

    ensure_synthetic_datasets(progress=False)
    for folder in SYNTHETIC_TEST_SETS:  # synthetic_val and synthetic_heldout, made on demand
        if args.test_set.startswith(f"{folder}_cuhk_sysu_"):
            ensure_synthetic_test_set(folder, progress=False)
    os.makedirs(args.out, exist_ok=True)
    rows, gt_hist, iterations = [], None, set()
    for key, name, config, losses in VARIANTS:
        if key not in args.variants:
            continue
        per_seed = []
        for seed in args.seeds:
            t = time.time()
            out_dir = os.path.abspath(os.path.join(args.out, f"{key}_seed{seed}"))
            if args.existing and not finished(out_dir, args.test_set):
                continue
            m = run_variant(config, losses, seed, args.iters, out_dir, args.opts, args.test_set)
            m["seed"] = seed
            m["dir"] = out_dir
            iterations.add(trained_iterations(out_dir))
            gt_hist = m["histogram_gt_boxes"]["search"]
            per_seed.append(m)
            print(
                f"{name} seed {seed}: mAP {m['learned']['search']['mAP']:.2f} "
                f"(histogram, same detections "
                f"{m['histogram_same_detections']['search']['mAP']:.2f}) "
                f"top-1 {m['learned']['search']['top1']:.2f} ({time.time() - t:.0f} s)",
                flush=True,
            )
        if per_seed:
            rows.append(
                (key, f"{name}, seeds {', '.join(str(m['seed']) for m in per_seed)}", per_seed)
            )

    print(
        f"\n{' / '.join(map(str, sorted(iterations)))} iterations (SOLVER.MAX_ITER of the runs); "
        f"{args.test_set}, CUHK-SYSU protocol, gallery 100; each cell: mean (then each seed)\n"
    )
    print(
        "| variant | search mAP | top-1 | colour histogram, same detections: mAP | top-1 | "
        "detection AP | kept detections on no person (%) | probe mAP | probe rank-1 | "
        "search mAP minus DC-I-Net, paired 95 % over queries |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    reference = next((ms for key, _, ms in rows if key == REFERENCE), None)
    for key, name, ms in rows:

        def col(row, task, key):
            return cell([m[row][task][key] for m in ms])

        print(
            f"| {name} | {col('learned', 'search', 'mAP')} | {col('learned', 'search', 'top1')} | "
            f"{col('histogram_same_detections', 'search', 'mAP')} | "
            f"{col('histogram_same_detections', 'search', 'top1')} | "
            f"{col('learned', 'detection', 'AP')} | "
            f"{cell([100 * m['learned']['false_detections']['false_fraction'] for m in ms])} | "
            f"{cell([m['probe']['mAP'] for m in ms])} | "
            f"{cell([m['probe']['rank1'] for m in ms])} | "
            f"{difference_cell(ms, reference, args.test_set) if key != REFERENCE else ''} |"
        )
    if gt_hist is not None:
        print(
            f"\nColour histogram on the ground-truth boxes (no model): mAP {gt_hist['mAP']:.1f}, "
            f"top-1 {gt_hist['top1']:.1f}"
        )


if __name__ == "__main__":
    main()
