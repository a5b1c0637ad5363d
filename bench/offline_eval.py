"""Shared glue of the offline measurements on a saved predictions file
(``containment_suppression.py``, ``detection_oracle.py``): their command line, and the protocol
on a modified gallery."""
from __future__ import annotations

import argparse

from detectron2.data import DatasetCatalog, MetadataCatalog

import dcinet_d2  # noqa: F401  (registers the datasets)
from dcinet_d2.evaluation.evaluator import evaluate_person_search
from dcinet_d2.evaluation.predictions import load_predictions


class SavedPredictions:
    """A test set's dicts and protocol with one predictions file, from the command line
    ``--dataset NAME --predictions FILE [--gallery-size N]``."""

    def __init__(self, description: str):
        p = argparse.ArgumentParser(description=description,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--dataset", required=True)
        p.add_argument("--predictions", required=True)
        p.add_argument("--gallery-size", type=int, default=100)
        args = p.parse_args()
        self.dicts = DatasetCatalog.get(args.dataset)
        self.meta = MetadataCatalog.get(args.dataset)
        self.gallery_size = args.gallery_size
        self.predictions = load_predictions(args.predictions)

    def evaluate(self, gallery: dict) -> dict:
        """The protocol's search and detection metrics with ``gallery`` in place of the file's."""
        return evaluate_person_search(
            self.dicts, {"gallery": gallery, "queries": self.predictions["queries"]},
            protocol=self.meta.protocol, root=getattr(self.meta, "root", None),
            gallery_size=self.gallery_size)
