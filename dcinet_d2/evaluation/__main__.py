"""Evaluate saved person-search predictions on a registered test set.

Usage::

    python -m dcinet_d2.evaluation --dataset cuhk_sysu_test --predictions FILE \\
        [--gallery-size N [N ...]] [--det-thresh 0.5] [--cross-camera] [--cbgm] \\
        [--cbgm-k1 10] [--cbgm-k2 3] [--json OUT]

The predictions file format is documented in :mod:`dcinet_d2.evaluation.predictions` (the
evaluator writes it as ``person_search_predictions.pth``). ``--gallery-size`` (CUHK-SYSU) takes one
or more sizes (50, 100, 500, 1000, 2000, 4000, -1 = full set): the first gives the headline
``search`` numbers, the others one ``search_gallery{N}`` / ``search_full_set`` task each.
Datasets are found under ``$DETECTRON2_DATASETS`` as for training. Prints the table; ``--json``
writes the same results dict as ``PersonSearchEvaluator``. Exit status 2 on a bad file or option.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from .cbgm import CBGMParams
from .evaluator import evaluate_person_search, format_results_table
from .predictions import PredictionsFormatError, load_predictions

# Importing dcinet_d2 (the parent package of this one) has registered the built-in datasets.

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dcinet_d2.evaluation",
        description="Person-search evaluation (CUHK-SYSU / PRW community protocol) of saved predictions.",
    )
    p.add_argument("--dataset", required=True, help="registered test set, e.g. cuhk_sysu_test, prw_test")
    p.add_argument("--predictions", required=True, help="predictions file (torch.save'd dict, see the README)")
    p.add_argument("--gallery-size", type=int, nargs="+", default=[100],
                   help="CUHK-SYSU gallery sizes; the first is the headline (default: 100; -1 = full set)")
    p.add_argument("--det-thresh", type=float, default=0.5, help="drop detections scoring below (default: 0.5)")
    p.add_argument("--cross-camera", action="store_true", help="PRW: also report the cross-camera variant")
    p.add_argument("--cbgm", action="store_true", help="re-score with CBGM (SeqNet); off = the protocol's numbers")
    p.add_argument("--cbgm-k1", type=int, default=10, help="CBGM: most similar detections re-scored (default: 10)")
    p.add_argument("--cbgm-k2", type=int, default=3, help="CBGM: query-image context persons (default: 3)")
    p.add_argument("--json", metavar="OUT", help="write the results dict as JSON to OUT")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.dataset not in DatasetCatalog.list():
        print(f"error: unknown dataset {args.dataset!r}; registered person-search sets: "
              + ", ".join(n for n in DatasetCatalog.list() if n.endswith("_test")), file=sys.stderr)
        return 2
    meta = MetadataCatalog.get(args.dataset)
    try:
        cbgm = CBGMParams(args.cbgm_k1, args.cbgm_k2) if args.cbgm else None
        predictions = load_predictions(args.predictions)
        results = evaluate_person_search(
            DatasetCatalog.get(args.dataset),
            predictions,
            protocol=getattr(meta, "protocol", None),
            root=getattr(meta, "root", None),
            det_thresh=args.det_thresh,
            gallery_size=args.gallery_size[0],
            gallery_size_curve=args.gallery_size[1:],
            cross_camera=args.cross_camera,
            cbgm=cbgm,
        )
    except (PredictionsFormatError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Person-search results on {args.dataset} ({args.predictions}):")
    print(format_results_table(results))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
