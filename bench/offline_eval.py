"""Shared glue of the offline measurements on a saved predictions file
(``containment_suppression.py``, ``detection_oracle.py``, ``soft_nms.py``,
``score_weighted_similarity.py``): their command line,
and the protocol on a modified gallery."""

from __future__ import annotations

import argparse

from detectron2.data import DatasetCatalog, MetadataCatalog

import dcinet_d2  # noqa: F401  (registers the datasets)
from dcinet_d2.evaluation.diagnostics import false_detection_stats
from dcinet_d2.evaluation.evaluator import evaluate_person_search
from dcinet_d2.evaluation.predictions import load_predictions


class SavedPredictions:
    """A test set's dicts and protocol with one predictions file, from the command line
    ``--dataset NAME --predictions FILE [--gallery-size N]``."""

    def __init__(self, description: str):
        p = argparse.ArgumentParser(
            description=description, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        p.add_argument("--dataset", required=True)
        p.add_argument("--predictions", required=True)
        p.add_argument("--gallery-size", type=int, default=100)
        args = p.parse_args()
        self.dicts = DatasetCatalog.get(args.dataset)
        self.meta = MetadataCatalog.get(args.dataset)
        self.gallery_size = args.gallery_size
        self.predictions = load_predictions(args.predictions)

    def gallery_with(self, change) -> dict:
        """The file's gallery with ``change(entry)`` applied to every image's entry."""
        return {k: change(v) for k, v in self.predictions["gallery"].items()}

    def evaluate(self, gallery: dict, queries: dict | None = None) -> dict:
        """The protocol's search and detection metrics with ``gallery`` (and ``queries``, when
        given) in place of the file's."""
        return evaluate_person_search(
            self.dicts,
            {"gallery": gallery, "queries": queries or self.predictions["queries"]},
            protocol=self.meta.protocol,
            root=getattr(self.meta, "root", None),
            gallery_size=self.gallery_size,
        )

    def report(self, label: str, gallery: dict) -> None:
        """Print one line: search and detection metrics of ``gallery`` and the kinds of its kept
        detections."""
        r = self.evaluate(gallery)
        st = false_detection_stats(gallery, self.dicts)
        n = max(st["num_detections"], 1)
        print(
            f"{label}: search {r['search']['mAP']:.1f} top-1 {r['search']['top1']:.1f} | "
            f"AP {r['detection']['AP']:.1f} recall {r['detection']['recall']:.1f} | "
            f"{st['detections_per_image']:.1f} per image, "
            + ", ".join(f"{k} {100 * v / n:.0f} %" for k, v in st["kinds"].items()),
            flush=True,
        )
