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
writes the same results dict as ``PersonSearchEvaluator`` (its target is checked before evaluating,
and written before the table is printed). Exit status 2 on a bad file or option: a predictions
file whose scores are not probabilities in [0, 1], a ``--det-thresh`` outside [0, 1], an
unwritable ``--json`` target, a training split or a dataset that is not a person-search set.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from .cbgm import CBGMParams
from .evaluator import evaluate_person_search, format_results_table
from .predictions import PredictionsFormatError, load_predictions

# Importing dcinet_d2 (the parent package of this one) has registered the built-in datasets.

logger = logging.getLogger(__name__)


def _unit_interval(text: str) -> float:
    """argparse type: a finite number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"must be a finite number in [0, 1], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dcinet_d2.evaluation",
        description=(
            "Person-search evaluation (CUHK-SYSU / PRW community protocol) of saved predictions."
        ),
    )
    p.add_argument(
        "--dataset", required=True, help="registered test set, e.g. cuhk_sysu_test, prw_test"
    )
    p.add_argument(
        "--predictions", required=True, help="predictions file (torch.save'd dict, see the README)"
    )
    p.add_argument(
        "--gallery-size",
        type=int,
        nargs="+",
        default=[100],
        help="CUHK-SYSU gallery sizes; the first is the headline (default: 100; -1 = full set)",
    )
    p.add_argument(
        "--det-thresh",
        type=_unit_interval,
        default=0.5,
        help="drop detections scoring below, in [0, 1] (default: 0.5)",
    )
    p.add_argument(
        "--cross-camera", action="store_true", help="PRW: also report the cross-camera variant"
    )
    p.add_argument(
        "--cbgm",
        action="store_true",
        help="re-score with CBGM (SeqNet); off = the protocol's numbers",
    )
    p.add_argument(
        "--cbgm-k1",
        type=int,
        default=10,
        help="CBGM: most similar detections re-scored (default: 10)",
    )
    p.add_argument(
        "--cbgm-k2", type=int, default=3, help="CBGM: query-image context persons (default: 3)"
    )
    p.add_argument("--json", metavar="OUT", help="write the results dict as JSON to OUT")
    return p


def person_search_sets(split: str | None = None) -> list[str]:
    """Registered datasets whose metadata says ``evaluator_type == "person_search"`` (of ``split``
    when given; datasets registered without a split count as test sets)."""
    names = []
    for name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("evaluator_type") != "person_search":
            continue
        if split is None or meta.get("split", "test") == split:
            names.append(name)
    return names


def _test_split_for(name: str) -> str | None:
    """The registered test split of the same dataset (same root and protocol) as ``name``."""
    meta = MetadataCatalog.get(name)
    candidates = [
        n
        for n in person_search_sets("test")
        if MetadataCatalog.get(n).get("root") == meta.get("root")
        and MetadataCatalog.get(n).get("protocol") == meta.get("protocol")
    ]
    preferred = name[: -len("_train")] + "_test" if name.endswith("_train") else None
    if preferred in candidates:
        return preferred
    return candidates[0] if candidates else None


def _dataset_problem(name: str) -> str | None:
    """Why ``name`` cannot be evaluated on (one line), or ``None``."""
    test_sets = ", ".join(person_search_sets("test"))
    if name not in DatasetCatalog.list():
        return f"unknown dataset {name!r}; registered person-search test sets: {test_sets}"
    meta = MetadataCatalog.get(name)
    if meta.get("evaluator_type") != "person_search":
        return (
            f"{name!r} is not a person-search dataset; "
            f"registered person-search test sets: {test_sets}"
        )
    if meta.get("split", "test") == "train":
        test = _test_split_for(name)
        use = f"use its test split {test!r}" if test else f"use a test split: {test_sets}"
        return f"{name!r} is a training split; the protocol evaluates test splits only: {use}"
    return None


def _json_target_problem(path: str) -> str | None:
    """Why ``--json path`` cannot be written (one line), or ``None``. Missing folders are created
    when writing, so the nearest existing one must be a writable folder."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return f"--json {path}: is a folder"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else f"--json {path}: the file is not writable"
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"--json {path}: '{parent}' is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--json {path}: the folder '{parent}' is not writable"
    return None


def _write_json(path: str, results: dict) -> str | None:
    """Write ``results``; an error message (one line) instead of raising."""
    try:
        text = json.dumps(results, indent=2)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    except (OSError, TypeError, ValueError) as e:
        return f"--json {path}: cannot write the results ({type(e).__name__}: {e})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    problem = _dataset_problem(args.dataset)
    if problem is None and args.json:
        problem = _json_target_problem(args.json)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
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
    if args.json:  # before printing: a failed write must not follow printed results
        problem = _write_json(args.json, results)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    print(f"Person-search results on {args.dataset} ({args.predictions}):")
    print(format_results_table(results))
    if args.json:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
