#!/usr/bin/env python
"""Re-id probe: how well a checkpoint's embeddings retrieve the *ground-truth* boxes of a dataset.

Detection plays no part: every annotated box of the first ``--images`` images is embedded with the
model's re-id branch (``PersonSearchRCNN.embed_boxes``), then each labelled box that has the same
identity in another image is a query against every box of the other images (labelled and
unlabelled). On the training set this separates "re-id does not learn" from "re-id does not
generalise" and from detection problems.

    python tools/reid_probe.py --config-file configs/synthetic/dcinet_small.yaml \\
        --weights output/demo/model_final.pth [--dataset synthetic_cuhk_sysu_train] [KEY VALUE ...]

Prints rank-1, rank-1 against labelled boxes only, mAP, the median rank of the first true match,
and the mean cosine within and between identities.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

__all__ = ["retrieval_metrics"]


def retrieval_metrics(
    embeds: torch.Tensor, pids: torch.Tensor, image_ids: torch.Tensor
) -> dict[str, float]:
    """Retrieval among given boxes, each labelled box with a match in another image as a query.

    Candidates of a query are the boxes of the *other* images, ranked by dot product (descending;
    ties keep the box order for rank-1 and the first match). The AP of a query is the protocol's
    :func:`~dcinet_d2.evaluation.protocol.average_precision` over its candidates. Unlabelled boxes
    (pid < 0) are candidates, never queries.

    Args:
        embeds: ``[N, D]`` unit embeddings.
        pids: ``[N]`` long identities, -1 for unlabelled.
        image_ids: ``[N]`` long image of each box.

    Returns:
        ``queries``; ``rank1`` and ``rank1_labelled_only`` (candidates restricted to labelled
        boxes), ``mAP`` (mean over queries of the average precision of the full ranking), in %;
        ``median_first_hit`` (0-based rank of the first true match); ``cos_same_id`` /
        ``cos_diff_id``: mean cosine of labelled box pairs from different images with the same /
        a different identity (NaN when there is none).
    """
    from dcinet_d2.evaluation.protocol import average_precision

    sims = embeds.float() @ embeds.float().t()
    labelled = pids >= 0
    rank1, rank1_lab, aps, first_hits = [], [], [], []
    for i in torch.nonzero(labelled).flatten().tolist():
        other = image_ids != image_ids[i]
        same = (pids == pids[i]) & other
        if not bool(same.any()):
            continue
        for restrict, out in ((other, None), (other & labelled, rank1_lab)):
            cand = torch.nonzero(restrict).flatten()
            order = cand[torch.argsort(sims[i, cand], descending=True, stable=True)]
            hits = same[order].numpy().astype(np.float64)
            if out is not None:
                out.append(hits[0])
                continue
            rank1.append(hits[0])
            first_hits.append(int(np.argmax(hits)))
            aps.append(average_precision(same[cand].numpy(), sims[i, cand].numpy()))
    cross = labelled[:, None] & labelled[None, :] & (image_ids[:, None] != image_ids[None, :])
    same_id = cross & (pids[:, None] == pids[None, :])
    diff_id = cross & (pids[:, None] != pids[None, :])
    nan = float("nan")
    return {
        "queries": float(len(rank1)),
        "rank1": 100.0 * float(np.mean(rank1)) if rank1 else nan,
        "rank1_labelled_only": 100.0 * float(np.mean(rank1_lab)) if rank1_lab else nan,
        "mAP": 100.0 * float(np.mean(aps)) if aps else nan,
        "median_first_hit": float(np.median(first_hits)) if first_hits else nan,
        "cos_same_id": float(sims[same_id].mean()) if bool(same_id.any()) else nan,
        "cos_diff_id": float(sims[diff_id].mean()) if bool(diff_id.any()) else nan,
    }


def main(argv=None) -> dict[str, float]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True, help="checkpoint (.pth) to probe")
    p.add_argument(
        "--dataset",
        default=None,
        help="registered dataset (default: the config's DATASETS.TRAIN[0])",
    )
    p.add_argument("--images", type=int, default=100, help="first N images of the dataset")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)

    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model

    from dcinet_d2.data import PersonSearchDatasetMapper
    from dcinet_d2.engine.cli import setup_cfg

    cfg = setup_cfg(args)  # train_net.py's config: dcinet_d2 keys, overrides, CPU fallback
    model = build_model(cfg)
    DetectionCheckpointer(model).load(args.weights)
    model.eval()
    dataset = args.dataset or cfg.DATASETS.TRAIN[0]
    mapper = PersonSearchDatasetMapper(cfg, is_train=False)
    embeds, pids, image_ids = [], [], []
    with torch.no_grad():
        for k, d in enumerate(DatasetCatalog.get(dataset)[: args.images]):
            annos = [
                a
                for a in d["annotations"]
                if a["bbox"][2] > a["bbox"][0] and a["bbox"][3] > a["bbox"][1]
            ]
            if not annos:
                continue
            boxes = torch.tensor([a["bbox"] for a in annos], dtype=torch.float32)
            embeds.append(model.embed_boxes([mapper(d)], [boxes])[0].cpu())
            pids += [int(a.get("person_id", -1)) for a in annos]
            image_ids += [k] * len(annos)
    result = retrieval_metrics(torch.cat(embeds), torch.tensor(pids), torch.tensor(image_ids))
    result["boxes"] = float(len(pids))
    print(
        json.dumps(
            {
                "weights": args.weights,
                "dataset": dataset,
                **{k: round(v, 3) for k, v in result.items()},
            }
        )
    )
    return result


if __name__ == "__main__":
    main()
