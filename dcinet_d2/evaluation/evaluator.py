"""``PersonSearchEvaluator``: the protocol as a Detectron2 ``DatasetEvaluator``, and the function
that evaluates validated predictions against a registered test set (shared with the command line).

Results (floats, percent)::

    {"search":    {"mAP", "top1", "top5", "top10"},        # headline gallery
                                                           # (CUHK-SYSU: GALLERY_SIZE)
     "detection": {"recall", "AP", "recall_labeled", "AP_labeled"},
     "search_gallery{N}": {...} / "search_full_set": {...}, # CUHK-SYSU curve (GALLERY_SIZE_CURVE)
     "search_cross_camera": {...}}                         # PRW, with CROSS_CAMERA
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from tabulate import tabulate

from ..data.datasets.cuhk_sysu import load_test_galleries
from .cbgm import CBGMParams
from .galleries import (
    cuhk_sysu_queries,
    dataset_image_ids,
    detection_ground_truth,
    image_cameras,
    prw_queries,
)
from .predictions import check_against_dataset, save_predictions, validate_predictions
from .protocol import evaluate_detection, evaluate_search

logger = logging.getLogger(__name__)

__all__ = [
    "PersonSearchEvaluator",
    "evaluate_person_search",
    "format_results_table",
    "PREDICTIONS_FILE",
    "METRICS_FILE",
]

PREDICTIONS_FILE = "person_search_predictions.pth"
METRICS_FILE = "person_search_metrics.json"
PROTOCOLS = ("cuhk_sysu", "prw")


def _search_task(gallery_size: int) -> str:
    return "search_full_set" if gallery_size == -1 else f"search_gallery{gallery_size}"


def protocol_queries(
    dataset_dicts: Sequence[Mapping[str, Any]],
    protocol: str,
    *,
    root: str | None = None,
    gallery_size: int = 100,
    cross_camera: bool = False,
    galleries_loader: Callable[[str, int], list] | None = None,
) -> list:
    """The queries of one search task of a test set.

    Args:
        dataset_dicts: the test set's dicts.
        protocol: ``"cuhk_sysu"`` or ``"prw"``.
        root: dataset root (CUHK-SYSU: where ``TestG{N}.mat`` are read).
        gallery_size: CUHK-SYSU gallery size (50 ... 4000, -1 = full set); PRW: unused.
        cross_camera: PRW: the cross-camera variant; CUHK-SYSU: unused.
        galleries_loader: ``(root, N) -> gallery lists`` (default: the ``TestG{N}.mat`` reader).

    Returns:
        The :class:`~.galleries.SearchQuery` list for :func:`~.protocol.evaluate_search`.
    """
    if protocol == "prw":
        return prw_queries(dataset_dicts, cross_camera=cross_camera)
    n = int(gallery_size)
    if n != -1 and n <= 0:
        raise ValueError(f"CUHK-SYSU gallery size must be positive or -1 (full set), got {n}")
    if n != -1 and root is None:
        raise ValueError("CUHK-SYSU gallery lists need the dataset root")
    loader = galleries_loader or load_test_galleries
    return cuhk_sysu_queries(dataset_dicts, None if n == -1 else loader(root, n))


def evaluate_person_search(
    dataset_dicts: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, Any],
    *,
    protocol: str,
    root: str | None = None,
    det_thresh: float = 0.5,
    gallery_size: int = 100,
    gallery_size_curve: Sequence[int] = (),
    cross_camera: bool = False,
    cbgm: CBGMParams | None = None,
    galleries_loader: Callable[[str, int], list] | None = None,
) -> OrderedDict[str, dict[str, float]]:
    """Evaluate validated predictions (see :mod:`.predictions`) on a test set.

    Args:
        dataset_dicts: the test set's dicts (``DatasetCatalog.get(name)``).
        predictions: validated predictions (numpy), covering exactly the dataset's images and
            queries.
        protocol: ``"cuhk_sysu"`` or ``"prw"`` (the dataset metadata's ``protocol``).
        root: dataset root (CUHK-SYSU: where ``TestG{N}.mat`` are read).
        det_thresh: detections scoring below it are dropped.
        gallery_size: CUHK-SYSU headline gallery size (50 ... 4000, -1 = full set); PRW: unused.
        gallery_size_curve: CUHK-SYSU extra gallery sizes, each reported as its own task.
        cross_camera: PRW: also report the cross-camera variant.
        cbgm: CBGM re-scoring, ``None`` = off.
        galleries_loader: ``(root, N) -> gallery lists`` (default: the CUHK-SYSU
            ``TestG{N}.mat`` reader).

    Returns:
        ``OrderedDict`` task -> {metric: float} in percent (see the module docstring).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"unknown person-search protocol {protocol!r}; expected one of {PROTOCOLS}"
        )
    image_ids = dataset_image_ids(dataset_dicts)
    query_ids = [int(q["query_id"]) for d in dataset_dicts for q in d.get("queries", [])]
    check_against_dataset(predictions, image_ids, query_ids)
    gallery = predictions["gallery"]
    query_embeds = {k: v["embed"] for k, v in predictions["queries"].items()}
    common = dict(det_thresh=det_thresh, cbgm=cbgm)

    search: list[tuple[str, dict[str, float]]] = []  # (task, metrics); the first is the headline
    if protocol == "cuhk_sysu":
        if cross_camera:
            logger.warning("CROSS_CAMERA applies to PRW only; ignored for CUHK-SYSU")
        sizes = list(dict.fromkeys([int(gallery_size)] + [int(s) for s in gallery_size_curve]))
        for n in sizes:
            queries = protocol_queries(
                dataset_dicts,
                protocol,
                root=root,
                gallery_size=n,
                galleries_loader=galleries_loader,
            )
            res = evaluate_search(gallery, query_embeds, queries, image_ids, **common)
            search.append(("search" if not search else _search_task(n), res.metrics()))
            _warn_skipped(res, search[-1][0])
    else:
        if gallery_size_curve:
            logger.warning("GALLERY_SIZE_CURVE applies to CUHK-SYSU only; ignored for PRW")
        cams = image_cameras(dataset_dicts)
        variants = [("search", False)] + ([("search_cross_camera", True)] if cross_camera else [])
        for task, cross in variants:
            queries = protocol_queries(dataset_dicts, protocol, cross_camera=cross)
            res = evaluate_search(
                gallery, query_embeds, queries, image_ids, image_cameras=cams, **common
            )
            search.append((task, res.metrics()))
            _warn_skipped(res, task)

    gt = detection_ground_truth(dataset_dicts)
    det_all = evaluate_detection(gallery, gt, image_ids, det_thresh=det_thresh)
    det_lab = evaluate_detection(gallery, gt, image_ids, det_thresh=det_thresh, labeled_only=True)
    results: OrderedDict[str, dict[str, float]] = OrderedDict([search[0]])
    results["detection"] = {
        "recall": 100.0 * det_all.recall,
        "AP": 100.0 * det_all.ap,
        "recall_labeled": 100.0 * det_lab.recall,
        "AP_labeled": 100.0 * det_lab.ap,
    }
    results.update(search[1:])
    return results


def _warn_skipped(res, task: str) -> None:
    if res.num_skipped:
        logger.warning(
            "%s: %d queries without a ground-truth image in their gallery are not in the means",
            task,
            res.num_skipped,
        )


def format_results_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """One table row per task, one column per metric (percent, 2 decimals)."""
    columns: list[str] = []
    for metrics in results.values():
        for k in metrics:
            if k not in columns:
                columns.append(k)
    rows = [[task] + [metrics.get(k, "") for k in columns] for task, metrics in results.items()]
    return tabulate(
        rows, headers=["task"] + columns, tablefmt="pipe", floatfmt=".2f", numalign="right"
    )


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float32).numpy()
    return np.asarray(value, dtype=np.float32)


class PersonSearchEvaluator(DatasetEvaluator):
    """Person-search evaluation (search mAP / top-k and detection recall / AP) for Detectron2.

    ``process()`` keeps compact CPU copies of the detections scoring >= ``det_thresh`` (the only
    ones the protocol uses) and of the query embeddings; ``evaluate()`` gathers them from all
    processes, and rank 0 computes the metrics, logs a table, and writes
    ``person_search_predictions.pth`` (format: :mod:`.predictions`) and
    ``person_search_metrics.json`` to ``output_dir``; the other ranks return ``{}``.

    Inputs must carry ``image_id`` (and ``queries`` for query images); outputs ``instances`` with
    ``pred_boxes`` (original image coordinates), ``scores``, ``pred_embeds``, and ``query_embeds``
    for inputs with queries (order of ``inputs[i]["queries"]``).
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        det_thresh: float = 0.5,
        gallery_size: int = 100,
        gallery_size_curve: Sequence[int] = (),
        cross_camera: bool = False,
        cbgm: bool = False,
        cbgm_k1: int = 10,
        cbgm_k2: int = 3,
        distributed: bool = True,
        embed_score_power: float = 0.0,
    ):
        """
        Args:
            dataset_name: a registered test set whose metadata has ``protocol`` ("cuhk_sysu" or
                "prw") and ``root``.
            output_dir: where the predictions and metrics files are written (``None``: nowhere).
            det_thresh, gallery_size, gallery_size_curve, cross_camera, cbgm, cbgm_k1, cbgm_k2:
                as ``cfg.TEST.PERSON_SEARCH.*`` (see ``dcinet_d2/config.py``).
            distributed: gather from all processes (set False to evaluate each process's share).
            embed_score_power: the model's ``MODEL.REID.EMBED_SCORE_POWER`` (its detection
                embeddings are scaled by ``score ** power``), recorded in the predictions file's
                ``meta`` so that a baseline on the same boxes can be weighted alike.
        """
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._det_thresh = float(det_thresh)
        self._gallery_size = int(gallery_size)
        self._gallery_size_curve = tuple(int(s) for s in gallery_size_curve)
        self._cross_camera = bool(cross_camera)
        self._cbgm = CBGMParams(int(cbgm_k1), int(cbgm_k2)) if cbgm else None
        self._distributed = distributed
        self._embed_score_power = float(embed_score_power)
        meta = MetadataCatalog.get(dataset_name)
        self._protocol = getattr(meta, "protocol", None)
        if self._protocol not in PROTOCOLS:
            raise ValueError(
                f"dataset {dataset_name!r} has metadata protocol={self._protocol!r}; "
                f"PersonSearchEvaluator needs one of {PROTOCOLS}"
            )
        self._root = getattr(meta, "root", None)
        self._dataset_dicts: list | None = None
        self.reset()

    @classmethod
    def from_config(
        cls, cfg, dataset_name: str, output_dir: str | None = None, distributed: bool = True
    ):
        """Build from ``cfg.TEST.PERSON_SEARCH`` (``add_dcinet_config``)."""
        ps = cfg.TEST.PERSON_SEARCH
        return cls(
            dataset_name,
            output_dir,
            det_thresh=ps.DET_THRESH,
            gallery_size=ps.GALLERY_SIZE,
            gallery_size_curve=tuple(ps.GALLERY_SIZE_CURVE),
            cross_camera=ps.CROSS_CAMERA,
            cbgm=ps.CBGM,
            cbgm_k1=ps.CBGM_K1,
            cbgm_k2=ps.CBGM_K2,
            distributed=distributed,
            embed_score_power=cfg.MODEL.REID.EMBED_SCORE_POWER if "REID" in cfg.MODEL else 0.0,
        )

    def reset(self) -> None:
        self._gallery: dict[str, dict[str, np.ndarray]] = {}
        self._queries: dict[int, dict[str, np.ndarray]] = {}

    def process(
        self, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]
    ) -> None:
        for inp, out in zip(inputs, outputs):
            if "image_id" not in inp:
                raise KeyError("PersonSearchEvaluator needs 'image_id' in every input")
            image_id = str(inp["image_id"])
            inst = out["instances"]
            for field in ("pred_boxes", "scores", "pred_embeds"):
                if not inst.has(field):
                    raise KeyError(f"model output for {image_id} has no instances.{field}")
            scores = _to_numpy(inst.scores).reshape(-1)
            keep = scores >= self._det_thresh
            boxes = _to_numpy(inst.pred_boxes.tensor).reshape(-1, 4)
            embeds = _to_numpy(inst.pred_embeds)
            if embeds.ndim != 2:
                raise ValueError(
                    f"model output for {image_id}: pred_embeds must be [N, D], "
                    f"got {list(embeds.shape)}"
                )
            self._gallery[image_id] = {
                "boxes": np.ascontiguousarray(boxes[keep]),
                "scores": np.ascontiguousarray(scores[keep]),
                "embeds": np.ascontiguousarray(embeds[keep]),
            }
            queries = inp.get("queries") or []
            if queries:
                if "query_embeds" not in out:
                    raise KeyError(
                        f"input {image_id} has queries but the output has no 'query_embeds'"
                    )
                q_emb = _to_numpy(out["query_embeds"])
                if q_emb.shape[0] != len(queries):
                    raise ValueError(
                        f"{image_id}: {len(queries)} queries but query_embeds has "
                        f"{q_emb.shape[0]} rows"
                    )
                for q, e in zip(queries, q_emb):
                    self._queries[int(q["query_id"])] = {"embed": np.array(e, dtype=np.float32)}

    def _dicts(self) -> list:
        if self._dataset_dicts is None:
            self._dataset_dicts = DatasetCatalog.get(self._dataset_name)
        return self._dataset_dicts

    def evaluate(self) -> dict:
        gallery, queries = self._gallery, self._queries
        if self._distributed:
            comm.synchronize()
            gallery_parts = comm.gather(gallery, dst=0)
            query_parts = comm.gather(queries, dst=0)
            if not comm.is_main_process():
                return {}
            gallery, queries = {}, {}
            for part in gallery_parts:
                gallery.update(part)
            for part in query_parts:
                queries.update(part)
        if not gallery:
            logger.warning("[PersonSearchEvaluator] did not receive valid predictions.")
            return {}

        meta = {
            "dataset": self._dataset_name,
            "det_thresh": self._det_thresh,
            "embed_score_power": self._embed_score_power,
        }
        predictions = validate_predictions({"gallery": gallery, "queries": queries, "meta": meta})
        if self._output_dir:
            path = os.path.join(self._output_dir, PREDICTIONS_FILE)
            save_predictions(path, predictions["gallery"], predictions["queries"], meta=meta)
            logger.info("Saved person-search predictions to %s", path)

        results = evaluate_person_search(
            self._dicts(),
            predictions,
            protocol=self._protocol,
            root=self._root,
            det_thresh=self._det_thresh,
            gallery_size=self._gallery_size,
            gallery_size_curve=self._gallery_size_curve,
            cross_camera=self._cross_camera,
            cbgm=self._cbgm,
        )
        logger.info(
            "Person-search results on %s:\n%s", self._dataset_name, format_results_table(results)
        )
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            path = os.path.join(self._output_dir, METRICS_FILE)
            with open(path, "w") as f:
                json.dump(results, f, indent=2)
            logger.info("Saved person-search metrics to %s", path)
        return copy.deepcopy(results)
