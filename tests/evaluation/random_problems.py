"""Random person-search problems for comparing the vectorised protocol with the loop reference.

Detections are placed near the ground-truth persons (some exact, some shifted, some far off),
embeddings are random unit vectors pulled towards an identity vector, so that true positives,
misses, small boxes and ranks of every kind occur.
"""

from __future__ import annotations

import numpy as np

from dcinet_d2.evaluation.galleries import SearchQuery


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_problem(
    seed: int,
    n_images: int = 12,
    n_ids: int = 5,
    dim: int = 8,
    explicit: bool = True,
    cameras: int = 0,
    max_dets: int = 6,
    exclude_camera: bool = False,
):
    """Return (gallery, query_embeds, queries, image_ids, ground_truth, image_cameras)."""
    rng = np.random.default_rng(seed)
    ids = unit(rng, n_ids, dim)
    image_ids = [f"img{i:03d}.jpg" for i in range(n_images)]
    gallery, gt, cams = {}, {}, {}
    appearances: dict[int, list[tuple[str, np.ndarray]]] = {}
    for name in image_ids:
        n_gt = int(rng.integers(0, 4))
        boxes, pids = [], []
        for _ in range(n_gt):
            x, y = rng.integers(0, 200, size=2)
            w, h = rng.choice([4, 8, 30, 60]), rng.choice([6, 12, 50, 100])
            boxes.append([x, y, x + w, y + h])
            pid = int(rng.integers(-1, n_ids))
            pids.append(pid if pid not in [p for p in pids if p >= 0] else -1)
        gt_boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        gt[name] = (gt_boxes, np.asarray(pids, dtype=np.int64))
        for b, pid in zip(gt_boxes, pids):
            if pid >= 0:
                appearances.setdefault(pid, []).append((name, b.astype(np.int32)))
        dets, embeds = [], []
        for b, pid in zip(gt_boxes, pids):
            if rng.random() < 0.8:
                shift = rng.choice([0.0, 0.0, 2.0, 5.0, 20.0])
                dets.append(b + rng.uniform(-shift, shift, size=4) * np.array([1, 1, 1, 1]))
                base = ids[pid] if pid >= 0 else unit(rng, 1, dim)[0]
                e = base + 0.8 * rng.standard_normal(dim)
                embeds.append(e / np.linalg.norm(e))
        for _ in range(
            int(rng.integers(0, max_dets - len(dets) + 1)) if len(dets) < max_dets else 0
        ):
            x, y = rng.uniform(0, 200, size=2)
            dets.append(np.array([x, y, x + rng.uniform(1, 60), y + rng.uniform(1, 100)]))
            embeds.append(unit(rng, 1, dim)[0])
        dets = np.asarray(dets, dtype=np.float64).reshape(-1, 4)
        dets[:, 2:] = np.maximum(dets[:, 2:], dets[:, :2])
        scores = rng.choice([0.2, 0.45, 0.5, 0.7, 0.9, 0.99], size=len(dets)).astype(np.float32)
        gallery[name] = {
            "boxes": dets.astype(np.float32),
            "scores": scores,
            "embeds": np.asarray(embeds, dtype=np.float32).reshape(-1, dim),
        }
        cams[name] = int(rng.integers(0, cameras)) if cameras else 0

    queries, query_embeds = [], {}
    qid = 0
    for pid in sorted(appearances):
        apps = appearances[pid]
        if len(apps) < 2:
            continue
        q_name, q_box = apps[0]
        targets = {n: b for n, b in apps[1:]}
        if explicit:
            others = [n for n in image_ids if n != q_name]
            pick = [n for n in others if n in targets or rng.random() < 0.5]
            if rng.random() < 0.3 and pick:  # a repeated entry
                pick.append(pick[0])
            gallery_list = tuple(rng.permutation(pick).tolist())
        else:
            gallery_list = None
        queries.append(
            SearchQuery(
                qid, q_name, q_box, targets, gallery_list, cams[q_name] if exclude_camera else None
            )
        )
        e = ids[pid] + 0.5 * rng.standard_normal(dim)
        query_embeds[qid] = (e / np.linalg.norm(e)).astype(np.float32)
        qid += 1
    return gallery, query_embeds, queries, image_ids, gt, cams
