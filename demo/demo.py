#!/usr/bin/env python
"""Draw a trained model's person detections on images or a video, in the style of Detectron2's
``demo/demo.py``; given a query person, highlight where they appear.

    python demo/demo.py --weights output/model_final.pth --input "photos/*.jpg" --output out/
    python demo/demo.py --weights output/model_final.pth --video-input clip.mp4 --output out.mp4
    python demo/demo.py --weights W --input "photos/*.jpg" --output out/ \\
        --query photos/a.jpg --query-box 10,20,60,180          # or --query-person 0

Detections scoring at least ``--confidence-threshold`` are drawn with Detectron2's
``Visualizer`` and labelled with their score; with a query, each detection also gets its cosine
similarity to the query, and those at or above ``--match-threshold`` are drawn in green (the
others grey). ``--config-file`` is only needed for checkpoints that do not carry their config.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def get_parser() -> argparse.ArgumentParser:
    from dcinet_d2.search.cli import _box, _unit_interval

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--weights", default=None, help="trained checkpoint (or MODEL.WEIGHTS in --opts)"
    )
    p.add_argument("--config-file", default=None, help="config (default: saved in the checkpoint)")
    p.add_argument("--input", nargs="+", help="images, or globs such as 'photos/*.jpg'")
    p.add_argument("--video-input", help="a video file")
    p.add_argument("--output", help="a folder for images; a file (.mp4) for a video")
    p.add_argument("--confidence-threshold", type=_unit_interval, default=0.5)
    p.add_argument("--query", help="image holding the person to find")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--query-box", type=_box, help="x1,y1,x2,y2 of the person in --query")
    who.add_argument("--query-person", type=int, help="the K-th detected person of --query")
    # Ours: a cosine similarity the demo's models reach for the same person and rarely for others;
    # set it from your own data.
    p.add_argument("--match-threshold", type=float, default=0.6)
    p.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides"
    )
    return p


def query_embedding(predictor, args, threshold: float) -> np.ndarray | None:
    from dcinet_d2.search.sources import read_image_bgr

    if not args.query:
        return None
    image = read_image_bgr(args.query)
    if args.query_box is not None:
        return predictor.embed_boxes(image, [args.query_box])[0]
    inst = predictor(image)["instances"].to("cpu")
    inst = inst[inst.scores >= threshold]
    order = np.argsort(-inst.scores.numpy(), kind="stable")
    k = args.query_person or 0
    if not 0 <= k < len(order):
        raise SystemExit(f"--query-person {k}: {len(order)} persons detected in {args.query}")
    return inst.pred_embeds[int(order[k])].numpy()


def draw(
    image_bgr: np.ndarray,
    instances,
    threshold: float,
    query: np.ndarray | None,
    match_threshold: float,
) -> np.ndarray:
    """The image (BGR) with the detections drawn by Detectron2's Visualizer."""
    from detectron2.data.catalog import Metadata
    from detectron2.utils.visualizer import Visualizer

    inst = instances.to("cpu")
    inst = inst[inst.scores >= threshold]
    vis = Visualizer(image_bgr[:, :, ::-1], Metadata(name="persons", thing_classes=["person"]))
    if query is None:
        return vis.draw_instance_predictions(inst).get_image()[:, :, ::-1]
    sims = inst.pred_embeds.numpy() @ query
    labels = [f"{s:.2f} sim {q:.2f}" for s, q in zip(inst.scores.tolist(), sims.tolist())]
    colours = [(0.1, 0.85, 0.2) if q >= match_threshold else (0.6, 0.6, 0.6) for q in sims]
    out = vis.overlay_instances(
        boxes=inst.pred_boxes.tensor.numpy(), labels=labels, assigned_colors=colours
    )
    return out.get_image()[:, :, ::-1]


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    import cv2
    from tqdm import tqdm

    from dcinet_d2.search.predictor import PersonSearchPredictor, inference_config
    from dcinet_d2.search.sources import read_image_bgr

    opts = list(args.opts)
    weights = args.weights
    if weights is None and "MODEL.WEIGHTS" in opts:
        weights = opts[opts.index("MODEL.WEIGHTS") + 1]
    if not weights:
        raise SystemExit("give the trained model: --weights W (or --opts MODEL.WEIGHTS W)")
    if bool(args.input) == bool(args.video_input):
        raise SystemExit("give either --input or --video-input")
    if (args.query_box is not None or args.query_person is not None) and not args.query:
        raise SystemExit("--query-box / --query-person need --query (the image they refer to)")
    predictor = PersonSearchPredictor(inference_config(weights, args.config_file, opts))
    query = query_embedding(predictor, args, args.confidence_threshold)

    if args.input:
        paths = [p for arg in args.input for p in (sorted(glob.glob(arg)) or [arg])]
        names = [os.path.basename(p) for p in paths]
        if args.output and len(set(names)) < len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise SystemExit(
                f"several inputs are named {twice[0]}: their outputs would overwrite each "
                "other in --output"
            )
        if args.output:
            os.makedirs(args.output, exist_ok=True)
        for path in tqdm(paths, unit="img", disable=not args.output):
            image = read_image_bgr(path)
            instances = predictor(image)["instances"]
            drawn = draw(image, instances, args.confidence_threshold, query, args.match_threshold)
            kept = int((instances.scores >= args.confidence_threshold).sum())
            if args.output:
                target = os.path.join(args.output, os.path.basename(path))
                if not cv2.imwrite(target, drawn):
                    raise SystemExit(f"could not write {target}")
            else:
                print(f"{path}: {kept} persons")
        return 0

    capture = cv2.VideoCapture(args.video_input)
    if not capture.isOpened():
        raise SystemExit(f"cannot open video {args.video_input}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    writer = None
    try:
        with tqdm(total=frames or None, unit="frame") as bar:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                instances = predictor(frame)["instances"]
                drawn = draw(
                    frame, instances, args.confidence_threshold, query, args.match_threshold
                )
                if args.output:
                    if writer is None:
                        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                        writer = cv2.VideoWriter(
                            args.output, fourcc, fps, (drawn.shape[1], drawn.shape[0])
                        )
                        if not writer.isOpened():
                            raise SystemExit(f"could not open {args.output} for writing a video")
                    writer.write(drawn)
                bar.update(1)
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
