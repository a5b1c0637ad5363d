#!/usr/bin/env python
"""Speed of PersonSearchRCNN (I-Net and DC-I-Net heads) against plain Detectron2 Faster R-CNN.

All models are built from the same config (default: the small CPU config), so they share the
backbone, the input size and, copied from the person search model, the weights of every shared
module (backbone, RPN, res5, box predictor). They run in one process on the same random inputs,
interleaved; the best and the median time of each are reported with their ratios to Faster
R-CNN, as wall-clock and as CPU time of this process; the targets are checked on the best CPU
times, the least disturbed by other processes on a shared machine. One torch thread by default
(``--threads``), so that CPU time is not inflated by threads waiting for each other.

* inference: ``model(inputs)`` under ``torch.no_grad()``. Its cost grows with the number K of
  detections per image that the re-id branch embeds (a second res5 pass over them), and K
  depends on the weights: random weights give no detection at the config's score threshold.
  So K is set: no score threshold and ``test_topk_per_image`` = K, for K = 10, 25 and
  ``TEST.DETECTIONS_PER_IMAGE`` (100, the most there can ever be); the config's own threshold
  is timed too. Faster R-CNN gets the same K.
* training step: forward, backward and an SGD step on a Siamese batch with ground truth. The
  learning rate is 0 (the same arithmetic as any other rate), so that every timed step sees the
  same model and random weights cannot diverge.

Targets (issue 4): inference <= 1.15x (INetROIHeads), <= 1.3x (DCINetROIHeads); training <= 1.3x.

Usage::

    .venv/bin/python bench/bench_model.py                       # about a minute on 2 CPU cores
    .venv/bin/python bench/bench_model.py --config-file configs/cuhk_sysu/inet_R50_C4.yaml \\
        --image-size 192 --batch 2 --iters 2 --warmup 1       # ResNet-50: about 10 minutes
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

from detectron2.config import CfgNode, get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

import dcinet_d2  # noqa: E402
from dcinet_d2.modeling import add_model_config  # noqa: E402

logger = logging.getLogger(__name__)

TARGETS = {"INetROIHeads": (1.15, 1.3), "DCINetROIHeads": (1.3, 1.3)}  # (inference, training)


def load_cfg(config_file: str, image_size: int, num_ids: int, device: str = "cpu") -> CfgNode:
    cfg = get_cfg()
    dcinet_d2.add_dcinet_config(cfg)
    if "REID" not in cfg.MODEL:
        add_model_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.REID.NUM_IDS = num_ids
    if list(cfg.MODEL.PIXEL_STD) == [1.0, 1.0, 1.0]:
        # Caffe-style inputs suit the pretrained weights only: with random weights the
        # activations blow up and the RPN degenerates (a single proposal), which would time a
        # model that does almost nothing. Normalise the inputs instead (ImageNet std, BGR).
        cfg.MODEL.PIXEL_STD = [57.375, 57.120, 58.395]
    cfg.INPUT.MIN_SIZE_TEST = image_size
    cfg.INPUT.MAX_SIZE_TEST = 2 * image_size
    # Detectron2's Res5ROIHeads (the baseline) builds its res5 with MODEL.RESNETS.NORM and ignores
    # our RES5_NORM: give every model the same res5 blocks, so that the ratios time the heads only.
    cfg.MODEL.ROI_HEADS.RES5_NORM = ""
    # The heads' own cost, as measured before flip test-time augmentation existed: with
    # MODEL.REID.TEST_FLIP (on in the small configs) an inference runs the backbone twice.
    cfg.MODEL.REID.TEST_FLIP = False
    return cfg


def make_batch(
    num_images: int, height: int, width: int, persons: int, num_ids: int, seed: int
) -> list[dict]:
    """Random images with ``persons`` boxes each; pairs (2k, 2k+1) share their identities."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for i in range(num_images):
        w = torch.randint(width // 10, width // 4, (persons,), generator=g).float()
        h = (w * 2.5).clamp(max=height - 2)
        x1 = (torch.rand(persons, generator=g) * (width - w - 1)).floor()
        y1 = (torch.rand(persons, generator=g) * (height - h - 1)).floor()
        inst = Instances((height, width))
        inst.gt_boxes = Boxes(torch.stack([x1, y1, x1 + w, y1 + h], dim=1))
        inst.gt_classes = torch.zeros(persons, dtype=torch.long)
        pids = (torch.arange(persons) + (i // 2) * persons) % num_ids
        pids[-1] = -1  # one unlabelled person per image
        inst.gt_pids = pids
        image = torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)
        batch.append({"image": image, "height": height, "width": width, "instances": inst})
    return batch


def _sync() -> None:
    """Wait for queued CUDA work, so that wall times cover it (no-op without CUDA)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def peak_memory_mb(fn: Callable[[], None]) -> float:
    """Peak CUDA memory (MiB) allocated during one call of ``fn``; 0 without CUDA."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return 0.0
    _sync()
    torch.cuda.reset_peak_memory_stats()
    fn()
    _sync()
    return torch.cuda.max_memory_allocated() / 2**20


def time_interleaved(
    fns: dict[str, Callable[[], None]], iters: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Best and median wall and CPU times of each function over ``iters`` interleaved calls.

    The calls alternate between the functions, so that a busy period of a shared machine hits
    all of them alike; the best time (as ``timeit`` recommends) is the least disturbed one. The
    CPU time (``time.process_time``, all threads of this process) does not count the time other
    processes hold the cores, so it is the robust measure on a shared machine.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            _sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            _sync()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {
        k: {
            "wall": min(wall[k]),
            "wall_median": statistics.median(wall[k]),
            "cpu": min(cpu[k]),
            "cpu_median": statistics.median(cpu[k]),
        }
        for k in fns
    }


def build_models(cfg: CfgNode) -> dict[str, torch.nn.Module]:
    """Faster R-CNN and PersonSearchRCNN with INetROIHeads and DCINetROIHeads, shared weights."""
    models = {}
    for heads in ("INetROIHeads", "DCINetROIHeads"):
        c = cfg.clone()
        c.MODEL.ROI_HEADS.NAME = heads
        c.MODEL.REID.LOSSES = ["olp", "hep"] if heads == "INetROIHeads" else ["olp", "c2hep"]
        torch.manual_seed(0)
        models[heads] = build_model(c)
    c = cfg.clone()
    c.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    c.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
    torch.manual_seed(0)
    baseline = build_model(c)
    incompatible = baseline.load_state_dict(models["INetROIHeads"].state_dict(), strict=False)
    assert not incompatible.missing_keys, incompatible.missing_keys
    models["DCINetROIHeads"].load_state_dict(models["INetROIHeads"].state_dict(), strict=False)
    models = {"FasterRCNN": baseline, **models}
    return models


def bench_inference(models, inputs, iters, warmup, topk=None, amp=False, memory=None):
    """Median inference time of each model; with ``topk``, exactly the ``topk`` best boxes per
    image after NMS are kept (score threshold 0). ``amp``: fp16 autocast (CUDA). ``memory``: a
    dict that receives each model's peak CUDA memory (MiB)."""
    saved = {}
    for name, m in models.items():
        m.eval()
        pred = m.roi_heads.box_predictor
        saved[name] = (pred.test_score_thresh, pred.test_topk_per_image)
        if topk is not None:  # threshold < 0: boxes of score exactly 0 are kept as well
            pred.test_score_thresh, pred.test_topk_per_image = -1.0, topk
    counts = {}

    def run(name, m):
        def fn():
            with torch.no_grad(), torch.autocast(m.device.type, enabled=amp):
                out = m(inputs)
            counts[name] = sum(len(o["instances"]) for o in out) / len(out)

        return fn

    fns = {k: run(k, m) for k, m in models.items()}
    times = time_interleaved(fns, iters, warmup)
    if memory is not None:
        memory.update({k: peak_memory_mb(fn) for k, fn in fns.items()})
    for name, (thresh, k) in saved.items():
        pred = models[name].roi_heads.box_predictor
        pred.test_score_thresh, pred.test_topk_per_image = thresh, k
    return times, counts


def bench_training(models, batch, iters, warmup, lr=0.0, amp=False, memory=None):
    """Training step times; ``amp``: fp16 autocast and a GradScaler, as Detectron2's AMPTrainer."""
    fns = {}
    for name, m in models.items():
        m = copy.deepcopy(m).train()
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=lr, momentum=0.9)
        scaler = torch.amp.GradScaler(m.device.type, enabled=amp)

        def fn(m=m, opt=opt, scaler=scaler):
            with torch.autocast(m.device.type, enabled=amp):
                losses = m(batch)
            opt.zero_grad()
            scaler.scale(sum(losses.values())).backward()
            scaler.step(opt)
            scaler.update()

        fns[name] = fn
    with EventStorage():
        times = time_interleaved(fns, iters, warmup)
        if memory is not None:
            memory.update({k: peak_memory_mb(fn) for k, fn in fns.items()})
    return times


def report(title, times, counts=None):
    """Print the times with their ratios to Faster R-CNN; return the ratios of the best times
    (``{"cpu": {model: ratio}, "wall": {model: ratio}}``)."""
    base = times["FasterRCNN"]
    print(f"\n{title}")
    cols = ("cpu", "cpu_median", "wall", "wall_median")
    names = {
        "cpu": "best cpu",
        "cpu_median": "med cpu",
        "wall": "best wall",
        "wall_median": "med wall",
    }
    print(
        f"  {'model':<16}"
        + "".join(f" {names[c]:>10} {'ratio':>6}" for c in cols)
        + ("  dets/img" if counts else "")
    )
    for name, t in times.items():
        line = f"  {name:<16}" + "".join(f" {t[c]:10.4f} {t[c] / base[c]:6.3f}" for c in cols)
        if counts:
            line += f"  {counts[name]:8.1f}"
        print(line)
    return {c: {k: v[c] / base[c] for k, v in times.items()} for c in ("cpu", "wall")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config-file", default=os.path.join(REPO_ROOT, "configs", "synthetic", "inet_small.yaml")
    )
    parser.add_argument("--image-size", type=int, default=192, help="shorter side (train and test)")
    parser.add_argument("--aspect", type=float, default=4 / 3, help="width / height of the images")
    parser.add_argument("--batch", type=int, default=4, help="images per step (even)")
    parser.add_argument("--persons", type=int, default=5, help="ground-truth persons per image")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--amp",
        action="store_true",
        help="also time fp16 autocast (inference) and AMP training (GradScaler)",
    )
    parser.add_argument(
        "--json", default=None, help="append one JSON line per model and measurement"
    )
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    num_ids = 50
    cfg = load_cfg(args.config_file, args.image_size, num_ids, args.device)
    height, width = args.image_size, int(round(args.image_size * args.aspect))
    models = build_models(cfg)
    batch = make_batch(args.batch, height, width, args.persons, num_ids, seed=0)
    inputs = [{k: x[k] for k in ("image", "height", "width")} for x in batch]
    print(
        f"config {os.path.relpath(args.config_file, REPO_ROOT)}, "
        f"{args.batch} images {height}x{width}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.iters} interleaved runs after {args.warmup} warm-up"
    )

    ratios = {}

    def record(key, times, memory, precision):
        if not args.json:
            return
        with open(args.json, "a") as f:
            for name, t in times.items():
                f.write(
                    json.dumps(
                        {
                            "bench": "model",
                            "measure": key,
                            "model": name,
                            "precision": precision,
                            "device": args.device,
                            "config": os.path.basename(args.config_file),
                            "images": args.batch,
                            "best_ms": 1000 * t["wall"],
                            "median_ms": 1000 * t["wall_median"],
                            "ratio_to_faster_rcnn": t["wall"] / times["FasterRCNN"]["wall"],
                            "peak_mb": memory.get(name, 0.0),
                        }
                    )
                    + "\n"
                )

    t, c = bench_inference(models, inputs, args.iters, args.warmup)
    report(
        f"inference, {args.batch} images, score threshold "
        f"{cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST} (random weights)",
        t,
        c,
    )
    max_k = cfg.TEST.DETECTIONS_PER_IMAGE
    for precision in ["fp32", "amp"] if args.amp else ["fp32"]:
        amp = precision == "amp"
        for k in sorted({10, 25, max_k}):
            memory = {}
            t, c = bench_inference(
                models, inputs, args.iters, args.warmup, topk=k, amp=amp, memory=memory
            )
            key = f"infer_K{k}" + ("_amp" if amp else "")
            ratios[key] = report(
                f"inference ({precision}), {args.batch} images, K = {k} detections per image", t, c
            )
            record(key, t, memory, precision)
        memory = {}
        t = bench_training(models, batch, args.iters, args.warmup, amp=amp, memory=memory)
        key = "train" + ("_amp" if amp else "")
        ratios[key] = report(
            f"training step ({precision}; forward + backward + SGD), {args.batch} images", t
        )
        record(key, t, memory, precision)

    # On a GPU the process's CPU time does not measure the work: use the wall time there.
    measure = "wall" if args.device.startswith("cuda") else "cpu"
    other = "cpu" if measure == "wall" else "wall"
    print(f"\ntargets (issue 4), on the best {measure} time (best {other} time in brackets)")
    ok = True
    for heads, (t_inf, t_train) in TARGETS.items():
        for key in ratios:
            target = t_train if key.startswith("train") else t_inf
            r, w = ratios[key][measure][heads], ratios[key][other][heads]
            ok &= r <= target
            verdict = "ok" if r <= target else "MISSED"
            print(f"  {heads:<16} {key:<10} {r:6.3f} ({w:6.3f}) <= {target:.2f}  {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
