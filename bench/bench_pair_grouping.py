#!/usr/bin/env python
"""Aspect-ratio grouping of Siamese pairs (``DATALOADER.ASPECT_RATIO_GROUPING``): padding, step
time and, on CUDA, peak memory, grouped against not grouped, in one process.

Data: two synthetic CUHK-SYSU training sets, one of landscape and one of portrait images (the
generator's 256x192 and 192x256; seeds 0 and 1; written under ``--data`` when missing), trained as
one (``DATASETS.TRAIN`` both), as with the mixed orientations of the real CUHK-SYSU and PRW. Per
setting, the paired train loader of the config (``configs/synthetic/dcinet_small.yaml`` by
default, 4 images a step) gives ``--iters`` batches; then the model trains on them, one grouped
step and one ungrouped step in turn (learning rate 0, so that every step sees the same weights;
the arithmetic is that of any other rate). Reported per setting:

* padding: the pixels of the padded input batch that the model builds (every image padded to the
  batch's largest height and width, rounded up to the backbone's size divisibility) over the
  pixels of the images themselves, and the share of batches mixing orientations;
* step time: median and best of forward, backward and SGD step;
* activation memory: the bytes autograd keeps for the backward pass of a step (every saved
  tensor's storage, counted once), which padding inflates, on any device; and on CUDA the peak
  memory of a step (``torch.cuda.max_memory_allocated``).

Usage::

    .venv/bin/python bench/bench_pair_grouping.py                 # about 2 minutes on 2 CPU cores
    .venv/bin/python bench/bench_pair_grouping.py MODEL.DEVICE cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

from detectron2.utils.env import seed_all_rng  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from dcinet_d2.data.datasets import datasets_root, register_cuhk_sysu  # noqa: E402
from dcinet_d2.data.synthetic import generate_cuhk_sysu  # noqa: E402
from dcinet_d2.engine import PersonSearchTrainer  # noqa: E402
from dcinet_d2.engine.checkpoint import PersonSearchCheckpointer  # noqa: E402
from dcinet_d2.engine.cli import argument_parser, setup_cfg  # noqa: E402

#: name -> (image size W x H, seed); ours: the default generator's size, turned for portrait
ORIENTATIONS = {"landscape": ((256, 192), 0), "portrait": ((192, 256), 1)}


def ensure_data(data_dir: str) -> list[str]:
    """Both training sets under ``data_dir`` (generated when missing), registered; their names."""
    names = []
    for name, (size, seed) in ORIENTATIONS.items():
        root = os.path.join(data_dir, name, "CUHK-SYSU")
        if not os.path.isdir(root):
            generate_cuhk_sysu(
                root,
                seed=seed,
                num_images=120,
                pool_size=30,
                num_train_ids=40,
                num_test_ids=8,
                image_size=size,
                gallery_sizes=[20],
                progress=False,
            )
        register_cuhk_sysu(f"bench_pairs_{name}", root)
        names.append(f"bench_pairs_{name}_train")
    return names


def padding_stats(model, batch: list[dict]) -> tuple[int, int, bool]:
    """``(padded pixels, image pixels, mixed)`` of one batch: the input tensor the model builds
    from it (``preprocess_image``: padded to the batch's largest size and the backbone's size
    divisibility) against the images themselves; ``mixed`` when both orientations are in it."""
    sizes = [tuple(d["image"].shape[-2:]) for d in batch]
    with torch.no_grad():
        padded = model.preprocess_image(batch).tensor
    landscape = {s[1] > s[0] for s in sizes}
    return padded[:, 0].numel(), sum(s[0] * s[1] for s in sizes), len(landscape) > 1


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--config-file",
        default=os.path.join(REPO_ROOT, "configs", "synthetic", "dcinet_small.yaml"),
    )
    p.add_argument(
        "--data",
        default=os.path.join(datasets_root(), "bench_pairs"),
    )
    p.add_argument("--iters", type=int, default=12, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per setting first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train_sets = ensure_data(args.data)
    settings = {}
    for grouping in (True, False):
        seed_all_rng(0)  # the same pairs drawn in both settings, and in every run of the bench
        cfg_args = argument_parser().parse_args(
            [
                "--config-file",
                args.config_file,
                "DATASETS.TRAIN",
                str(tuple(train_sets)),
                "DATASETS.TEST",
                "()",
                "DATALOADER.NUM_WORKERS",
                "0",
                "DATALOADER.ASPECT_RATIO_GROUPING",
                str(grouping),
                "SEED",
                "0",
                *args.opts,
            ]
        )
        cfg = setup_cfg(cfg_args)
        loader = iter(PersonSearchTrainer.build_train_loader(cfg))
        settings[grouping] = {
            "cfg": cfg,
            "batches": [next(loader) for _ in range(args.warmup + args.iters)],
        }
    cfg = settings[True]["cfg"]
    model = PersonSearchTrainer.build_model(cfg)
    PersonSearchCheckpointer(model).load(cfg.MODEL.WEIGHTS)  # the shipped pre-trained ResNet
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    on_cuda = next(model.parameters()).is_cuda

    def step(batch) -> tuple[float, float, int]:
        storages = {}

        def pack(t):
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return t

        if on_cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            losses = model(batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        if on_cuda:
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20 if on_cuda else 0.0
        return time.perf_counter() - t, peak, sum(storages.values())

    times = {g: [] for g in settings}
    peaks = {g: [] for g in settings}
    saved = {g: [] for g in settings}
    with EventStorage(0):
        for i in range(args.warmup + args.iters):
            order = [True, False] if i % 2 == 0 else [False, True]
            for grouping in order:  # interleaved, first one then the other: drift hits both
                seconds, peak, saved_bytes = step(settings[grouping]["batches"][i])
                if i >= args.warmup:
                    times[grouping].append(seconds)
                    peaks[grouping].append(peak)
                    saved[grouping].append(saved_bytes)
    rows = {}
    for grouping, s in settings.items():
        stats = [padding_stats(model, b) for b in s["batches"][args.warmup :]]
        rows[grouping] = {
            "grouping": grouping,
            "padded_over_image_pixels": sum(x[0] for x in stats) / sum(x[1] for x in stats),
            "mixed_batches": sum(x[2] for x in stats) / len(stats),
            "step_s_median": statistics.median(times[grouping]),
            "step_s_best": min(times[grouping]),
            "saved_for_backward_mib_mean": statistics.mean(saved[grouping]) / 2**20,
            "peak_mib_median": statistics.median(peaks[grouping]) if on_cuda else None,
            "device": str(cfg.MODEL.DEVICE),
            "steps": args.iters,
        }
        print(json.dumps(rows[grouping]))
    on, off = rows[True], rows[False]
    print(
        "\n| DATALOADER.ASPECT_RATIO_GROUPING | padded / image pixels | batches mixing "
        "orientations | step, median (best) | saved for backward, mean | peak memory, median |"
    )
    print("|---|---|---|---|---|---|")
    for r in (off, on):
        peak = f"{r['peak_mib_median']:.0f} MiB" if r["peak_mib_median"] is not None else "(CPU)"
        print(
            f"| {r['grouping']} | {r['padded_over_image_pixels']:.3f} | "
            f"{100 * r['mixed_batches']:.0f} % | {r['step_s_median']:.3f} s "
            f"({r['step_s_best']:.3f} s) | {r['saved_for_backward_mib_mean']:.0f} MiB | {peak} |"
        )
    ratio = on["step_s_median"] / off["step_s_median"]
    saved_ratio = on["saved_for_backward_mib_mean"] / off["saved_for_backward_mib_mean"]
    print(
        f"\ngrouped / ungrouped: step time {ratio:.3f}x (median), saved for backward "
        f"{saved_ratio:.3f}x",
        end="",
    )
    if on_cuda:
        print(f", peak memory {on['peak_mib_median'] / off['peak_mib_median']:.3f}x", end="")
    print()


if __name__ == "__main__":
    main()
