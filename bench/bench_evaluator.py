#!/usr/bin/env python
"""Benchmark: vectorised person-search protocol vs the plain loop implementation, same run.

Builds a synthetic problem at CUHK-SYSU scale in memory (6,978 gallery images with about 6
detections each, 2,900 queries, D = 256; each query's identity appears in 1-5 other images;
TestG-like galleries of 100 images holding all its targets, and the full set), then times
``dcinet_d2.evaluation.protocol`` (vectorised) and ``tests/evaluation/reference.py`` (loops) on
the same inputs, checks that they agree, and prints times and speed-ups. The loop implementation
on the full set takes minutes: by default it runs on a subset of queries and its time is
extrapolated linearly to all queries (printed as such).

Usage: ``python bench/bench_evaluator.py [--loop-queries-full 100] [--loop-queries-g100 2900]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from dcinet_d2.evaluation import protocol  # noqa: E402
from dcinet_d2.evaluation.galleries import SearchQuery  # noqa: E402
from tests.evaluation import reference  # noqa: E402  (the loop oracle lives with the tests)

N_IMAGES, N_QUERIES, DIM, GALLERY = 6978, 2900, 256, 100
REPEAT = 3  # vectorised runs timed after the first call; the best is reported (the loop runs once)
NOISE = 1.8  # embedding noise (norm relative to the identity vector): mAP around 70-80


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_problem(seed: int = 0):
    """Synthetic CUHK-SYSU-scale problem: (gallery, query_embeds, queries_g100, queries_full,
    image_ids, gt)."""
    rng = np.random.default_rng(seed)
    image_ids = [f"s{i:05d}.jpg" for i in range(N_IMAGES)]
    id_vecs = unit_rows(rng.standard_normal((N_QUERIES, DIM)))
    # appearances of every identity: the query image + 1..5 gallery images (distinct)
    n_app = rng.integers(2, 7, size=N_QUERIES)
    persons: list[list[tuple[int, np.ndarray]]] = [
        [] for _ in range(N_IMAGES)
    ]  # (pid, box) per image
    appear: list[list[int]] = []
    for pid in range(N_QUERIES):
        imgs = rng.choice(N_IMAGES, size=n_app[pid], replace=False)
        appear.append(imgs.tolist())
        for im in imgs:
            persons[im].append((pid, None))
    gallery, gt = {}, {}
    for im, name in enumerate(image_ids):
        n_unlab = int(rng.integers(1, 8))
        entries = persons[im] + [(-1, None)] * n_unlab
        boxes, pids, dets, embeds = [], [], [], []
        for pid, _ in entries:
            x, y = rng.integers(0, 700), rng.integers(0, 400)
            w, h = int(rng.integers(15, 120)), int(rng.integers(40, 300))
            box = np.array([x, y, x + w, y + h], dtype=np.float64)
            boxes.append(box)
            pids.append(pid)
            if rng.random() < 0.9:  # detected
                dets.append(box + rng.normal(0, 3, size=4))
                base = id_vecs[pid] if pid >= 0 else rng.standard_normal(DIM) / np.sqrt(DIM)
                embeds.append(base + rng.normal(0, NOISE / np.sqrt(DIM), size=DIM))
        n_true = len(dets)
        for _ in range(int(rng.integers(0, 3))):  # false alarms (scores 0.2-1: some dropped at 0.5)
            x, y = rng.uniform(0, 700), rng.uniform(0, 400)
            dets.append(np.array([x, y, x + rng.uniform(10, 100), y + rng.uniform(30, 250)]))
            embeds.append(rng.standard_normal(DIM))
        dets = np.asarray(dets, dtype=np.float32).reshape(-1, 4)
        dets[:, 2:] = np.maximum(dets[:, 2:], dets[:, :2] + 1)
        scores = np.r_[
            rng.uniform(0.5, 1.0, size=n_true), rng.uniform(0.2, 1.0, size=len(dets) - n_true)
        ]
        gallery[name] = {
            "boxes": dets,
            "scores": scores.astype(np.float32),
            "embeds": unit_rows(np.asarray(embeds).reshape(-1, DIM)).astype(np.float32),
        }
        gt[name] = (np.asarray(boxes).reshape(-1, 4), np.asarray(pids, dtype=np.int64))
        persons[im] = list(zip(pids, boxes))

    query_embeds, q100, qfull = {}, [], []
    for pid in range(N_QUERIES):
        q_im, *t_ims = appear[pid]
        box_of = lambda im: next(b for p, b in persons[im] if p == pid).astype(np.int32)  # noqa: E731
        targets = {image_ids[im]: box_of(im) for im in t_ims}
        others = rng.choice(N_IMAGES, size=GALLERY + 10, replace=False)
        distract = [image_ids[im] for im in others if im != q_im and image_ids[im] not in targets]
        g100 = list(targets) + distract[: GALLERY - len(targets)]
        g100 = tuple(rng.permutation(g100).tolist())
        q_box = box_of(q_im)
        q100.append(SearchQuery(pid, image_ids[q_im], q_box, targets, g100))
        qfull.append(SearchQuery(pid, image_ids[q_im], q_box, targets, None))
        e = id_vecs[pid] + rng.normal(0, NOISE / np.sqrt(DIM), size=DIM)
        query_embeds[pid] = (e / np.linalg.norm(e)).astype(np.float32)
    return gallery, query_embeds, q100, qfull, image_ids, gt


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def agree(a, b, idx) -> str:
    ap_a, ap_b = a.ap[idx], b.ap
    diff = np.nanmax(np.abs(ap_a - ap_b)) if len(ap_b) else 0.0
    same = np.array_equal(a.hits[idx], b.hits) and np.array_equal(a.count_tp[idx], b.count_tp)
    return f"max |AP diff| = {diff:.1e}, top-k and TP counts {'identical' if same else 'DIFFER'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--loop-queries-full",
        type=int,
        default=100,
        help="queries timed with the loop on the full set",
    )
    ap.add_argument(
        "--loop-queries-g100",
        type=int,
        default=N_QUERIES,
        help="queries timed with the loop, gallery 100",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"numpy {np.__version__}"
    )
    (gallery, qemb, q100, qfull, image_ids, gt), t_build = timed(build_problem, args.seed)
    n_det = sum(len(v["scores"]) for v in gallery.values())
    n_kept = sum(int((v["scores"] >= 0.5).sum()) for v in gallery.values())
    print(
        f"problem: {len(image_ids)} images, {n_det} detections ({n_kept} with score >= 0.5, "
        f"{n_det / len(image_ids):.1f} per image), {len(q100)} queries, D={DIM} "
        f"(built in {t_build:.1f} s)"
    )
    rows = []

    for label, queries, n_loop in (
        ("gallery 100", q100, args.loop_queries_g100),
        ("full set", qfull, args.loop_queries_full),
    ):
        vec, t_first = timed(protocol.evaluate_search, gallery, qemb, queries, image_ids)
        t_vec = min(
            timed(protocol.evaluate_search, gallery, qemb, queries, image_ids)[1]
            for _ in range(REPEAT)
        )
        n_loop = min(n_loop, len(queries))
        sub = (
            np.random.default_rng(1).choice(len(queries), size=n_loop, replace=False)
            if n_loop < len(queries)
            else np.arange(len(queries))
        )
        loop, t_loop = timed(
            reference.evaluate_search, gallery, qemb, [queries[i] for i in sub], image_ids
        )
        t_loop_all = t_loop * len(queries) / n_loop
        note = (
            ""
            if n_loop == len(queries)
            else f" (measured on {n_loop} queries: {t_loop:.1f} s, extrapolated)"
        )
        m = vec.metrics()
        print(
            f"search, {label}: mAP {m['mAP']:.2f}, top-1 {m['top1']:.2f}; vectorised {t_vec:.2f} s "
            f"(first call {t_first:.2f} s), "
            f"loop {t_loop_all:.1f} s{note}; speed-up {t_loop_all / t_vec:.0f}x; "
            f"{agree(vec, loop, sub)}"
        )
        rows.append((f"search, {label}", t_vec, t_loop_all, n_loop))

    vec, t_first = timed(protocol.evaluate_detection, gallery, gt, image_ids)
    t_vec = min(
        timed(protocol.evaluate_detection, gallery, gt, image_ids)[1] for _ in range(REPEAT)
    )
    loop, t_loop = timed(reference.evaluate_detection, gallery, gt, image_ids)
    print(
        f"detection: recall {100 * vec.recall:.2f}, AP {100 * vec.ap:.2f}; "
        f"vectorised {t_vec:.2f} s "
        f"(first call {t_first:.2f} s), "
        f"loop {t_loop:.1f} s; speed-up {t_loop / t_vec:.0f}x; "
        f"identical: {vec.count_tp == loop.count_tp and abs(vec.ap - loop.ap) < 1e-12}"
    )
    rows.append(("detection", t_vec, t_loop, len(image_ids)))

    print("\n| task | vectorised (s) | loop (s) | speed-up |")
    print("|---|---:|---:|---:|")
    for name, tv, tl, n in rows:
        star = "" if name == "detection" or n == N_QUERIES else " *"
        print(f"| {name} | {tv:.2f} | {tl:.1f}{star} | {tl / tv:.0f}x |")
    print("vectorised: best of 3 calls after a first one; loop: one call")
    if any(n < N_QUERIES for name, _, _, n in rows if name != "detection"):
        print("* loop time extrapolated from a subset of queries (linear in the number of queries)")


if __name__ == "__main__":
    main()
