#!/usr/bin/env python
"""How far a search mAP moves when the queries are resampled: the test set's own noise.

    python tools/query_bootstrap.py --dataset synthetic_cuhk_sysu_test \\
        RUN_A/inference/synthetic_cuhk_sysu_test/person_search_predictions.pth [RUN_B/... ...] \\
        [--gallery-size 100] [--det-thresh 0.5] [--samples 10000]

For each predictions file: the search mAP of the protocol (CUHK-SYSU with the gallery size, or
PRW), then the standard deviation and the 95 % interval of the mAP over B bootstrap resamples of
the queries. With several files (runs evaluated on the same queries) the difference of each to
the first is bootstrapped *paired* (the same resampled queries for both), which says whether the
difference between two runs is larger than what the choice of queries alone produces. The last
line printed is the results as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np
from detectron2.data import DatasetCatalog

import dcinet_d2  # noqa: F401  (registers the datasets)
from dcinet_d2.evaluation.diagnostics import bootstrap_query_means, per_query_ap
from dcinet_d2.evaluation.predictions import PredictionsFormatError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("predictions", nargs="+", help="person_search_predictions.pth files")
    p.add_argument("--dataset", required=True, help="registered test set")
    p.add_argument(
        "--gallery-size",
        type=int,
        default=100,
        help="CUHK-SYSU gallery size (-1: every test image)",
    )
    p.add_argument("--det-thresh", type=float, default=0.5, help="protocol score threshold")
    # Ours: 10,000 resamples put the interval ends within about 0.2 mAP points of their limit.
    p.add_argument("--samples", type=int, default=10000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.samples < 1:
        print(f"error: --samples must be >= 1, got {args.samples}", file=sys.stderr)
        return 2
    if args.dataset not in DatasetCatalog.list():
        print(f"error: unknown dataset {args.dataset!r}", file=sys.stderr)
        return 2
    try:
        runs = [
            per_query_ap(args.dataset, f, args.gallery_size, args.det_thresh)
            for f in args.predictions
        ]
    except (PredictionsFormatError, OSError, ValueError) as e:  # e.g. no TestG{N}.mat
        print(f"error: {e}", file=sys.stderr)
        return 2
    ids = runs[0][0]
    for f, (other, _) in zip(args.predictions[1:], runs[1:]):
        if not np.array_equal(other, ids):
            print(
                f"error: {f} was not evaluated on the same queries as {args.predictions[0]}",
                file=sys.stderr,
            )
            return 2
    ap = np.stack([a for _, a in runs])
    boot = 100.0 * bootstrap_query_means(ap, args.samples, args.seed)
    results = []
    print(f"{len(ids)} queries, {args.samples} bootstrap resamples of them")
    for i, f in enumerate(args.predictions):
        row = {
            "predictions": f,
            "mAP": 100.0 * float(ap[i].mean()),
            "std": float(boot[i].std()),
            "interval95": [float(v) for v in np.percentile(boot[i], [2.5, 97.5])],
        }
        line = (
            f"{f}: mAP {row['mAP']:.1f}, bootstrap std {row['std']:.1f}, 95 % "
            f"[{row['interval95'][0]:.1f}, {row['interval95'][1]:.1f}]"
        )
        if i:
            diff = boot[i] - boot[0]
            row["diff_to_first"] = row["mAP"] - results[0]["mAP"]
            row["diff_interval95"] = [float(v) for v in np.percentile(diff, [2.5, 97.5])]
            row["diff_below_zero"] = float(np.mean(diff < 0))
            line += (
                f"; minus the first: {row['diff_to_first']:+.1f}, paired 95 % "
                f"[{row['diff_interval95'][0]:+.1f}, {row['diff_interval95'][1]:+.1f}]"
            )
        print(line)
        results.append(row)
    print(json.dumps({"queries": int(len(ids)), "samples": args.samples, "runs": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
