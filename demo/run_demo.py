#!/usr/bin/env python
"""dcinet_d2 end to end on a CPU: synthetic data -> DC-I-Net training -> CUHK-SYSU protocol ->
picture.

    python demo/run_demo.py                       # what `make demo` runs
    python demo/run_demo.py --iters 300 --out output/demo_quick

1. generates the synthetic CUHK-SYSU and PRW datasets when absent ($DETECTRON2_DATASETS/synthetic),
2. trains the small CPU configuration of DC-I-Net (configs/synthetic/dcinet_small.yaml) with
   train_net.py's code (Detectron2's trainer: progress, ETA and TensorBoard events in --out),
3. evaluates it with the CUHK-SYSU protocol (gallery 100), prints the metrics table, and the same
   protocol on colour histograms of the same detections and of the ground-truth boxes (the
   hand-crafted baseline every learned embedding must beat; written to baselines.json in --out),
4. writes search_results.png in --out: queries with their top-5 gallery matches (query box blue;
   matches green when correct, red otherwise; similarity on each).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "synthetic", "dcinet_small.yaml")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", default=DEFAULT_CONFIG)
    # 1,000 iterations: the whole demo in about 14 minutes on 2 CPU cores (measured, README).
    p.add_argument(
        "--iters",
        type=int,
        default=1000,
        help="training iterations (0: the config's SOLVER.MAX_ITER)",
    )
    p.add_argument("--out", default=os.path.join("output", "demo"))
    p.add_argument("--num-queries", type=int, default=6, help="queries drawn in the picture")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of training")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config overrides")
    return p.parse_args(argv)


def draw_results(
    dataset_name: str,
    out_dir: str,
    predictions_path: str,
    num_queries: int,
    det_thresh: float,
    gallery_size: int,
) -> str:
    import numpy as np
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from dcinet_d2.data.datasets.cuhk_sysu import load_test_galleries
    from dcinet_d2.evaluation.galleries import cuhk_sysu_queries, dataset_image_ids
    from dcinet_d2.evaluation.predictions import load_predictions
    from dcinet_d2.vis import draw_search_results, top_matches

    dicts = DatasetCatalog.get(dataset_name)
    root = MetadataCatalog.get(dataset_name).root
    queries = cuhk_sysu_queries(dicts, load_test_galleries(root, gallery_size))
    preds = load_predictions(predictions_path)
    path_of = {d["image_id"]: d["file_name"] for d in dicts}
    image_ids = dataset_image_ids(dicts)
    chosen = (
        np.linspace(0, len(queries) - 1, num=min(num_queries, len(queries))).round().astype(int)
    )
    rows = []
    for i in chosen:
        q = queries[i]
        matches = top_matches(
            q,
            preds["queries"][q.query_id]["embed"],
            preds["gallery"],
            image_ids,
            det_thresh=det_thresh,
            k=5,
        )
        rows.append((path_of[q.image_id], q.box, [(path_of[m.image_id], m) for m in matches]))
    return draw_search_results(rows, os.path.join(out_dir, "search_results.png"))


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    print("== 1/4 synthetic datasets", flush=True)
    from dcinet_d2.data.synthetic import ensure_synthetic_datasets

    for name, stats in ensure_synthetic_datasets(seed=args.seed).items():
        state = "generated" if stats.get("generated", True) else "present"
        print(
            f"   {name}: {state}, {stats.get('images', stats.get('frames', '?'))} images, "
            f"{stats.get('queries')} queries",
            flush=True,
        )

    print("== 2/4 training DC-I-Net (small CPU configuration) and 3/4 evaluating", flush=True)
    from dcinet_d2.engine.cli import argument_parser, setup_cfg
    from dcinet_d2.engine.cli import main as train_main

    overrides = ["OUTPUT_DIR", args.out, "SEED", str(args.seed)]
    if args.iters:
        overrides += [
            "SOLVER.MAX_ITER",
            str(args.iters),
            "SOLVER.STEPS",
            f"({int(args.iters * 0.8)},)",
        ]
    train_args = argument_parser().parse_args(
        ["--config-file", args.config_file, *overrides, *args.opts]
    )
    cfg = setup_cfg(train_args)
    train_main(train_args)
    dataset_name = cfg.DATASETS.TEST[0]
    result_dir = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    with open(os.path.join(result_dir, "person_search_metrics.json")) as f:
        metrics = json.load(f)

    from dcinet_d2.evaluation.colour_baseline import compare_with_histograms, format_comparison

    predictions_path = os.path.join(result_dir, "person_search_predictions.pth")
    rows = compare_with_histograms(
        dataset_name,
        predictions_path,
        gallery_size=cfg.TEST.PERSON_SEARCH.GALLERY_SIZE,
        det_thresh=cfg.TEST.PERSON_SEARCH.DET_THRESH,
    )
    with open(os.path.join(cfg.OUTPUT_DIR, "baselines.json"), "w") as f:
        json.dump(rows, f, indent=2)

    print("== 4/4 drawing search results", flush=True)
    picture = draw_results(
        dataset_name,
        cfg.OUTPUT_DIR,
        predictions_path,
        args.num_queries,
        cfg.TEST.PERSON_SEARCH.DET_THRESH,
        cfg.TEST.PERSON_SEARCH.GALLERY_SIZE,
    )
    s, d = metrics["search"], metrics["detection"]
    print(
        f"\nDC-I-Net on {dataset_name} "
        f"(CUHK-SYSU protocol, gallery {cfg.TEST.PERSON_SEARCH.GALLERY_SIZE}): "
        f"mAP {s['mAP']:.2f}  top-1 {s['top1']:.2f}  top-5 {s['top5']:.2f}  "
        f"top-10 {s['top10']:.2f}  | "
        f"detection recall {d['recall']:.2f}  AP {d['AP']:.2f}"
    )
    print("The same protocol, learned embeddings vs colour histograms of the same boxes:")
    print(format_comparison(rows))
    print(f"picture: {picture}\nTensorBoard: tensorboard --logdir {cfg.OUTPUT_DIR}")
    print(f"demo finished in {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
