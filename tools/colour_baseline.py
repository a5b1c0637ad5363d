#!/usr/bin/env python
"""Learned embeddings vs colour histograms of the same boxes, through the unchanged protocol.

    python tools/colour_baseline.py --dataset synthetic_cuhk_sysu_test \\
        --predictions \\
        output/demo/inference/synthetic_cuhk_sysu_test/person_search_predictions.pth \\
        [--gallery-size 100] [--det-thresh 0.5] [--json OUT]

Rows: the predictions as they are (learned embeddings); the same detections re-embedded with a
colour histogram (dcinet_d2.evaluation.colour_baseline); and the ground-truth boxes with colour
histograms (an oracle detector). Without --predictions only the last row. The last line printed
is the results as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from detectron2.data import DatasetCatalog

import dcinet_d2  # noqa: F401  (registers the datasets)
from dcinet_d2.evaluation.colour_baseline import compare_with_histograms, format_comparison
from dcinet_d2.evaluation.predictions import PredictionsFormatError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--dataset", required=True, help="registered test set, e.g. synthetic_cuhk_sysu_test"
    )
    p.add_argument("--predictions", help="person_search_predictions.pth of a model (optional)")
    p.add_argument(
        "--gallery-size", type=int, default=100, help="CUHK-SYSU gallery size (default 100)"
    )
    p.add_argument(
        "--det-thresh", type=float, default=0.5, help="protocol score threshold (default 0.5)"
    )
    p.add_argument("--json", metavar="OUT", help="also write the results to OUT")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.dataset not in DatasetCatalog.list():
        print(f"error: unknown dataset {args.dataset!r}", file=sys.stderr)
        return 2
    try:
        rows = compare_with_histograms(
            args.dataset,
            args.predictions,
            gallery_size=args.gallery_size,
            det_thresh=args.det_thresh,
        )
    except (PredictionsFormatError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_comparison(rows))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
