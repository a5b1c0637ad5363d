#!/usr/bin/env python
"""Host-device synchronisations of one training step: Faster R-CNN, I-Net and DC-I-Net.

A GPU step that waits for the device loses the overlap of host and device work; issue 13 asks
for none in the re-id path. This counts, on any device (the CPU included), the calls that would
make the host wait on a GPU (:class:`dcinet_d2.utils.host_sync.HostSyncCounter`: ``.item()`` and
``int()``/``float()``/``bool()`` of tensors, ``nonzero``, boolean-mask indexing, ``unique``, ...)
in one training step (forward, backward, SGD step) of the three models of bench/bench_model.py
(same config, same random Siamese batch), and separately in the re-id part of the person-search
heads' forward (``_reid_losses``: the criterion and its logging).

    .venv/bin/python bench/host_syncs.py            # the small CPU config, a few seconds
    .venv/bin/python bench/host_syncs.py --config-file configs/cuhk_sysu/dcinet_R50_C4.yaml \\
        --image-size 192

Counts, not times: they do not depend on the machine's load. The third step is counted (after
two warm-up steps: lazy initialisation and a filling dictionary may add calls to the first).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (REPO_ROOT, os.path.join(REPO_ROOT, "bench")):
    if path not in sys.path:
        sys.path.insert(0, path)

from bench_model import build_models, load_cfg, make_batch  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from dcinet_d2.utils.host_sync import SYNC_KINDS, HostSyncCounter  # noqa: E402


def count_training_step(model, batch, warmup: int = 2):
    """Counts of one training step of ``model`` (after ``warmup`` steps): whole step, re-id part."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    heads = model.roi_heads
    reid_counter = None
    if hasattr(heads, "_reid_losses"):
        original = heads._reid_losses

        def counted(*args, **kwargs):
            with HostSyncCounter() as counter:
                out = original(*args, **kwargs)
            if reid_counter is not None:
                reid_counter.counts.update(counter.counts)
            return out

        heads._reid_losses = counted

    def step():
        losses = model(batch)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()

    with EventStorage() as storage:
        for _ in range(warmup):
            step()
            storage.iter += 1
        reid_counter = HostSyncCounter() if hasattr(heads, "_reid_losses") else None
        with HostSyncCounter() as whole:
            step()
    return whole, reid_counter


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--config-file",
        default=os.path.join(REPO_ROOT, "configs", "synthetic", "dcinet_small.yaml"),
    )
    p.add_argument("--image-size", type=int, default=192)
    p.add_argument("--batch", type=int, default=4, help="images per step (even)")
    p.add_argument("--persons", type=int, default=5)
    p.add_argument("--json", default=None, help="append one JSON line per model")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_cfg(args.config_file, args.image_size, num_ids=64)
    width = int(args.image_size * 4 / 3)
    batch = make_batch(args.batch, args.image_size, width, args.persons, 64, seed=0)
    print(
        f"{os.path.relpath(args.config_file, REPO_ROOT)}, {args.batch} images of "
        f"{args.image_size}x{width}: host-synchronising calls in one training step"
    )
    print(
        "| model | whole step | of which the re-id part (`_reid_losses`) | "
        + " | ".join(SYNC_KINDS)
        + " (whole step) |"
    )
    print("|---|---|---|" + "---|" * len(SYNC_KINDS))
    for name, model in build_models(cfg).items():
        torch.manual_seed(0)
        whole, reid = count_training_step(model, batch)
        kinds = whole.as_dict()
        print(
            f"| {name} | {whole.total} | {reid.total if reid is not None else '-'} | "
            + " | ".join(str(kinds[k]) for k in SYNC_KINDS)
            + " |"
        )
        if args.json:
            with open(args.json, "a") as f:
                f.write(
                    json.dumps(
                        {
                            "model": name,
                            "whole_step": kinds,
                            "reid": reid.as_dict() if reid is not None else None,
                        }
                    )
                    + "\n"
                )


if __name__ == "__main__":
    main()
