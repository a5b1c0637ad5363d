"""``python -m dcinet_d2.search``: index a gallery of your own images and videos, then query it.

    python -m dcinet_d2.search index --weights output/model_final.pth \\
        --gallery photos/ "clips/*.mp4" --fps 2 --out my_index
    python -m dcinet_d2.search query --index my_index --query photos/a.jpg --list
    python -m dcinet_d2.search query --index my_index --query photos/a.jpg --person 0 --topk 20 \\
        --out results/

``index`` detects and embeds every person of every image / sampled video frame (batches of
``--batch-size`` images, on the GPU when there is one), stores each detection (source, frame,
box, score, embedding) in the index folder (:mod:`dcinet_d2.search.index`) and builds the faiss
search index. Re-running skips what is already indexed, new paths are appended, and an
interrupted run resumes without losing or duplicating detections. ``query`` embeds a person of
the query image (a box you give, or the K-th detected person) with the model the index was built
with, ranks the gallery's detections (the best one per image or frame by default), optionally
re-ranks with CBGM, and writes ``results.json`` and ``results.jpg``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["main", "build_parser", "model_fingerprint"]
logger = logging.getLogger(__name__)


def model_fingerprint(weights: str) -> str:
    """SHA-1 of the weights file: an index must be searched with the model that built it."""
    from detectron2.utils.file_io import PathManager

    digest = hashlib.sha1()
    with open(PathManager.get_local_path(weights), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _box(text: str) -> list[float]:
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--box must be x1,y1,x2,y2 (numbers), got {text!r}"
        ) from None
    if (
        len(box) != 4
        or not all(math.isfinite(v) for v in box)
        or box[2] <= box[0]
        or box[3] <= box[1]
    ):
        raise argparse.ArgumentTypeError(
            f"--box must be x1,y1,x2,y2 with x2 > x1 and y2 > y1, got {text!r}"
        )
    return box


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dcinet_d2.search",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    ix = sub.add_parser("index", help="detect, embed and index the persons of images and videos")
    ix.add_argument("--weights", required=True, help="checkpoint of a trained model")
    ix.add_argument(
        "--config-file",
        default=None,
        help="training config (default: the one saved in the checkpoint)",
    )
    ix.add_argument(
        "--gallery",
        nargs="+",
        required=True,
        help="image files, folders (recursive), globs (quote them) and video files",
    )
    ix.add_argument("--out", required=True, help="index folder (created, or appended to)")
    ix.add_argument(
        "--fps",
        type=_positive(float),
        default=None,
        help="video frames sampled per second (default: every frame)",
    )
    # Ours: 8 images per forward; bench/bench_model.py measures throughput at 1, 8 and 32.
    ix.add_argument("--batch-size", type=_positive(int), default=8)
    ix.add_argument(
        "--det-thresh",
        type=_unit_interval,
        default=None,
        help="keep detections scoring at least this (default: the config's "
        "TEST.PERSON_SEARCH.DET_THRESH, the protocol's 0.5)",
    )
    ix.add_argument(
        "--search-index",
        choices=["flat", "ivf", "ivfpq"],
        default="flat",
        help="faiss index: exact inner product (default) or approximate for large galleries",
    )
    ix.add_argument(
        "--nlist",
        type=_positive(int),
        default=None,
        help="ivf/ivfpq: inverted lists (default: 4 sqrt(detections))",
    )
    ix.add_argument(
        "--nprobe",
        type=_positive(int),
        default=None,
        help="ivf/ivfpq: lists scanned per query, saved with the index (default: "
        "max(8, nlist / 16); docs/search_index.md measures recall against it)",
    )
    ix.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")

    q = sub.add_parser("query", help="find a person of one image in an index")
    q.add_argument("--index", required=True)
    q.add_argument("--query", required=True, help="the query image")
    who = q.add_mutually_exclusive_group(required=True)
    who.add_argument("--box", type=_box, help="x1,y1,x2,y2 of the person in the query image")
    who.add_argument("--person", type=int, help="the K-th detected person (0 = highest score)")
    who.add_argument("--list", action="store_true", help="print the detected persons and exit")
    q.add_argument("--topk", type=_positive(int), default=20)
    q.add_argument("--min-sim", type=float, default=None, help="drop matches below this similarity")
    q.add_argument(
        "--exclude-query-image",
        action="store_true",
        help="leave out matches in the query image itself (as the benchmarks' protocol)",
    )
    q.add_argument(
        "--all-detections",
        action="store_true",
        help="rank every detection (default: the best one per image or video frame)",
    )
    q.add_argument(
        "--cbgm",
        action="store_true",
        help="re-rank with CBGM, using the query image's other persons as context",
    )
    q.add_argument(
        "--nprobe",
        type=_positive(int),
        default=None,
        help="ivf/ivfpq index: lists scanned for this query (default: the index's)",
    )
    q.add_argument("--out", default=None, help="folder for results.json and results.jpg")
    return p


# ------------------------------------------------------------------------------------- index
def run_index(args) -> dict[str, Any]:
    from tqdm import tqdm

    from .index import GalleryIndex
    from .predictor import PersonSearchPredictor, inference_config
    from .sources import count_units, expand_sources, iter_units

    if args.search_index == "flat" and (args.nlist is not None or args.nprobe is not None):
        raise ValueError(
            "--nlist and --nprobe configure an inverted file: use them with "
            "--search-index ivf or ivfpq (the default 'flat' index is exact)"
        )
    sources = expand_sources(args.gallery)
    cfg = inference_config(args.weights, args.config_file, args.opts)
    det_thresh = cfg.TEST.PERSON_SEARCH.DET_THRESH if args.det_thresh is None else args.det_thresh
    meta = {
        "model": model_fingerprint(args.weights),
        "weights": os.path.abspath(args.weights) if os.path.exists(args.weights) else args.weights,
        "config_file": os.path.abspath(args.config_file) if args.config_file else None,
        "opts": list(args.opts),
        "det_thresh": float(det_thresh),
    }
    predictor = PersonSearchPredictor(cfg)
    # An index grows only with detections of the same model, config and threshold (ours: other
    # options, e.g. --fps or --batch-size, may differ between runs).
    index = GalleryIndex.open_or_create(
        args.out,
        predictor.embed_dim,
        meta,
        check_keys=("model", "det_thresh", "config_file", "opts"),
    )
    done = set(index.done_units())
    total = sum(count_units(s, args.fps) for s in sources)
    paths = {s.path for s in sources}
    todo = max(total - sum(1 for key in done if key[0] in paths), 0)
    unreadable: list[str] = []
    logger.info("%d sources, %d units, %d already indexed", len(sources), total, total - todo)
    added = 0
    start = time.perf_counter()
    batch_keys, batch_images = [], []

    def run_batch():
        nonlocal added
        outputs = predictor.predict_batch(batch_images)
        for key, out in zip(batch_keys, outputs):
            inst = out["instances"].to("cpu")
            keep = inst.scores >= det_thresh
            index.add(
                key,
                inst.pred_boxes.tensor[keep].numpy(),
                inst.scores[keep].numpy(),
                inst.pred_embeds[keep].numpy(),
            )
            added += int(keep.sum())
        batch_keys.clear()
        batch_images.clear()

    try:
        with tqdm(total=todo, unit="img", desc="indexing", mininterval=1.0) as bar:
            for key, image in iter_units(sources, args.fps, skip=done, unreadable=unreadable):
                batch_keys.append(key)
                batch_images.append(image)
                if len(batch_keys) == args.batch_size:
                    n = len(batch_keys)
                    run_batch()
                    bar.update(n)
            if batch_keys:
                n = len(batch_keys)
                run_batch()
                bar.update(n)
        index.flush()
        index.build_search_index(kind=args.search_index, nlist=args.nlist, nprobe=args.nprobe)
        summary = {
            "index": os.path.abspath(args.out),
            "detections_added": added,
            "detections_total": index.num_detections,
            "units_total": index.num_units,
            "unreadable_skipped": unreadable,
            "seconds": round(time.perf_counter() - start, 1),
        }
    finally:
        index.close()
    print(json.dumps(summary))
    return summary


# ------------------------------------------------------------------------------------- query
def _predictor_of(index) -> Any:
    from .predictor import PersonSearchPredictor, inference_config

    meta = index.meta
    weights = meta["weights"]
    if model_fingerprint(weights) != meta["model"]:
        raise ValueError(
            f"the weights '{weights}' changed since the index was built: the query "
            "would be embedded by another model than the gallery"
        )
    cfg = inference_config(weights, meta.get("config_file"), meta.get("opts", []))
    return PersonSearchPredictor(cfg), float(meta.get("det_thresh", 0.5))


def _detected_persons(predictor, image, det_thresh):
    inst = predictor.predict_batch([image])[0]["instances"].to("cpu")
    keep = inst.scores >= det_thresh
    boxes = inst.pred_boxes.tensor[keep].numpy()
    scores = inst.scores[keep].numpy()
    embeds = inst.pred_embeds[keep].numpy()
    order = np.argsort(-scores, kind="stable")
    return boxes[order], scores[order], embeds[order]


def _detections_per_source(index, path: str) -> list[int]:
    return [
        int(s.get("detections", 0)) for s in index.sources if os.path.realpath(s["path"]) == path
    ]


def cbgm_rerank(
    hits: list[dict],
    query_embed: np.ndarray,
    query_box: np.ndarray,
    context_boxes: np.ndarray,
    context_scores: np.ndarray,
    context_embeds: np.ndarray,
    unit_detections,
    make_hit=None,
    k1: int = 10,
    k2: int = 3,
) -> list[dict]:
    """Re-rank ``hits`` (all detections, ranked) with CBGM (:mod:`dcinet_d2.evaluation.cbgm`).

    ``unit_detections(hit) -> (ids [n], embeds [n, D])`` gives every detection of a hit's unit.
    The units of the ``k1`` best hits are re-scored; a hit's similarity becomes the CBGM score. A
    re-scored detection that is not among ``hits`` is added with ``make_hit(id, similarity)``.
    """
    from ..evaluation.cbgm import context_indices, rescore

    context = context_embeds[context_indices(query_box, context_boxes, context_scores, k2)]
    new_sim = {}
    seen_units = []
    for hit in hits[:k1]:
        unit = (hit["source"], hit["frame"])
        if unit in seen_units:
            continue
        seen_units.append(unit)
        ids, embeds = unit_detections(hit)
        scores = rescore(embeds @ query_embed, context @ embeds.T)
        new_sim.update({int(i): float(s) for i, s in zip(ids, scores)})
    out = [dict(h, similarity=new_sim.get(h["id"], h["similarity"])) for h in hits]
    present = {h["id"] for h in hits}
    if make_hit is not None:
        out += [make_hit(i, sim) for i, sim in new_sim.items() if i not in present]
    out.sort(key=lambda h: -h["similarity"])
    return out


def run_query(args) -> list[dict] | None:
    from .index import GalleryIndex
    from .sources import read_image_bgr

    index = GalleryIndex.open(args.index)
    if index.num_detections == 0:
        raise ValueError(
            f"the index {args.index} holds no detection (an empty gallery, or every "
            "score below the threshold it was built with)"
        )
    predictor, det_thresh = _predictor_of(index)
    image = read_image_bgr(args.query)
    boxes, scores, embeds = _detected_persons(predictor, image, det_thresh)
    if args.list:
        for k, (b, s) in enumerate(zip(boxes, scores)):
            print(f"person {k}: box {','.join(f'{v:.0f}' for v in b)} score {s:.3f}")
        if len(boxes) == 0:
            print(f"no person detected above {det_thresh} in {args.query}")
        return None
    if args.person is not None:
        if not 0 <= args.person < len(boxes):
            raise ValueError(
                f"--person {args.person}: {len(boxes)} persons detected in {args.query} "
                "(see --list)"
            )
        query_box = boxes[args.person]
        query_embed = embeds[args.person]
        others = np.arange(len(boxes)) != args.person
    else:
        query_box = np.asarray(args.box, dtype=np.float32)
        query_embed = predictor.embed_boxes(image, [query_box])[0]
        others = np.ones(len(boxes), dtype=bool)
    best_per_image = not (args.all_detections or args.cbgm)
    topk = (
        args.topk if not args.cbgm else max(args.topk * 5, 50)
    )  # ours: CBGM re-ranks a wider list
    own = os.path.realpath(args.query)  # realpath: a gallery of symbolic links holds it too
    extra = 0
    if args.exclude_query_image:  # the query image's units (all its detections at most) come out
        extra = sum(1 for s in index.sources if os.path.realpath(s["path"]) == own)
        extra = extra if best_per_image else int(np.sum(_detections_per_source(index, own)))
    hits = index.search(
        query_embed[None, :],
        topk=topk + extra,
        min_sim=None if args.cbgm else args.min_sim,
        best_per_image=best_per_image,
        nprobe=args.nprobe,
    )[0]
    hits = [
        dict(h)
        for h in hits
        if not (args.exclude_query_image and os.path.realpath(h["source"]) == own)
    ][:topk]
    if args.cbgm:
        arrays = index.load_arrays(("source", "frame"))  # embeddings only for the units re-scored

        def unit_detections(hit):
            ids = np.flatnonzero(
                (arrays["source"] == arrays["source"][hit["id"]])
                & (arrays["frame"] == hit["frame"])
            )
            return ids, index.embeddings(ids)

        def make_hit(i, similarity):
            return dict(index.detection(i), id=i, similarity=similarity)

        ps = predictor.cfg.TEST.PERSON_SEARCH
        hits = cbgm_rerank(
            hits,
            query_embed,
            query_box,
            boxes[others],
            scores[others],
            embeds[others],
            unit_detections,
            make_hit,
            k1=ps.CBGM_K1,
            k2=ps.CBGM_K2,
        )
        seen, kept = set(), []
        for h in hits:  # back to the best detection per unit, then the filters
            unit = (h["source"], h["frame"])
            if (args.all_detections or unit not in seen) and (
                args.min_sim is None or h["similarity"] >= args.min_sim
            ):
                kept.append(h)
                seen.add(unit)
        hits = kept[: args.topk]
    result = {
        "query": {"image": os.path.abspath(args.query), "box": [float(v) for v in query_box]},
        "index": os.path.abspath(args.index),
        "cbgm": bool(args.cbgm),
        "matches": [{k: _plain(v) for k, v in h.items()} for h in hits],
    }
    for rank, m in enumerate(result["matches"], start=1):
        frame = f" frame {m['frame']}" if m["frame"] >= 0 else ""
        print(
            f"{rank:3d}. {m['similarity']:.3f}  {m['source']}{frame}  box "
            f"{','.join(f'{v:.0f}' for v in m['box'])}"
        )
    if args.out:
        from .visualize import draw_query_results

        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(result, f, indent=1)
        draw_query_results(
            image, query_box, result["matches"], os.path.join(args.out, "results.jpg")
        )
        print(f"wrote {os.path.join(args.out, 'results.json')} and results.jpg")
    return result["matches"]


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (so in-process callers that
    swap it, such as tests, never leave the handler on a closed stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _setup_logging() -> None:
    package = logging.getLogger("dcinet_d2")
    if not package.handlers:  # a training run in this process may have set it up already
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s] %(message)s", "%H:%M:%S"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .index import GalleryIndexError

    _setup_logging()
    try:
        if args.command == "index":
            run_index(args)
        else:
            run_query(args)
    except (ValueError, OSError, GalleryIndexError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
