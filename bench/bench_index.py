#!/usr/bin/env python
"""Benchmark: gallery search with faiss (flat, IVF, IVF-PQ) vs a brute-force numpy baseline.

For each gallery size N (default 10k, 100k and 1M) of random 256-d unit vectors, 100 random
unit queries, top-20, all in one process:

* numpy: ``search_numpy`` (float32 matrix product, argpartition, sort): the exact reference;
* faiss ``flat`` (exact), ``ivf`` and ``ivfpq`` built by ``build_faiss_index`` with the default
  parameters of ``GalleryIndex.build_search_index`` (printed); build = train + add; ``flat``
  is also timed with faiss's BLAS path forced (see the footnote the table prints);
* gallery (unless ``--no-gallery``): the same vectors written through ``GalleryIndex.add`` as
  video frames of 8 detections (100 videos), then ``GalleryIndex.search`` end to end (flat;
  hits assembled as dicts), per detection and best per frame.

Query times are one call with all 100 queries, best of 3 after a warm-up call; ratios are to
the numpy baseline of the same size. recall@20 is against numpy's exact top-20. Random vectors
have no cluster structure: the worst case for IVF (person embeddings cluster by identity; see
tests/search/test_index.py for IVF on clustered data). faiss uses all CPU cores
(``faiss.omp_set_num_threads``); numpy's BLAS keeps its default threads. The 1M case needs
about 2.5 GB of memory and minutes (IVF k-means on 256k points into 4000 lists).

Usage: ``python bench/bench_index.py [--sizes 10000 100000 1000000] [--no-gallery]``
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import faiss  # noqa: E402

from dcinet_d2.search.index import GalleryIndex, build_faiss_index, search_numpy  # noqa: E402

DIM, N_QUERIES, TOPK = 256, 100, 20
REPEAT = 3  # our choice: timed query calls after a warm-up call; the best is reported
DETS_PER_FRAME = 8  # our choice (gallery rows): detections per unit (video frame)
N_VIDEOS = 100  # our choice (gallery rows): sources the frames are spread over
CHUNK = 1 << 16  # our choice: rows generated at a time (bounded float32 memory)


def random_unit(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """n random unit vectors, float32, generated in chunks (no float64 copy of the whole)."""
    out = np.empty((n, dim), np.float32)
    for a in range(0, n, CHUNK):
        block = rng.standard_normal((min(CHUNK, n - a), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[a:a + len(block)] = block
    return out


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def best_of(fn: Callable[[], Any], repeat: int = REPEAT) -> tuple[Any, float]:
    out = fn()  # warm-up
    return out, min(timed(fn)[1] for _ in range(repeat))


def recall(ids: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, exact)]))


def describe(p: dict) -> str:
    keys = [k for k in ("nlist", "nprobe", "m", "nbits") if k in p]
    return ", ".join(f"{k}={p[k]}" for k in keys) or "exact"


def write_gallery(root: str, x: np.ndarray) -> tuple[GalleryIndex, float, int]:
    """x as frames of DETS_PER_FRAME detections through GalleryIndex.add: (index, s, units)."""
    n_units = -(-len(x) // DETS_PER_FRAME)
    boxes = np.tile(np.array([[10, 20, 60, 170]], np.float32), (DETS_PER_FRAME, 1))
    scores = np.full(DETS_PER_FRAME, 0.9, np.float32)
    t0 = time.perf_counter()
    g = GalleryIndex.create(root, x.shape[1], {"model": "bench"})
    for u in range(n_units):
        e = x[u * DETS_PER_FRAME:(u + 1) * DETS_PER_FRAME]
        g.add((f"video{u % N_VIDEOS:03d}.mp4", u // N_VIDEOS), boxes[:len(e)], scores[:len(e)], e)
    g.close()
    return GalleryIndex.open(root), time.perf_counter() - t0, n_units


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="faiss OpenMP threads (default: all cores)")
    ap.add_argument("--no-gallery", action="store_true", help="skip the GalleryIndex rows")
    ap.add_argument("--tmp", default=None, help="folder for the gallery rows (default: $TMPDIR)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    faiss.omp_set_num_threads(args.threads)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
          f"(load average {load}), numpy {np.__version__}, faiss {faiss.__version__}")
    print(f"faiss threads: {args.threads} (faiss.omp_set_num_threads; the machine's cores: "
          f"{os.cpu_count()}); numpy BLAS: its default threads")
    print(f"gallery: random {DIM}-d unit vectors; {N_QUERIES} random unit queries; top-{TOPK}")
    rows: list[tuple] = []
    notes: list[str] = []
    for n in args.sizes:
        rng = np.random.default_rng(args.seed)
        x = random_unit(n, DIM, rng)
        q = random_unit(N_QUERIES, DIM, rng)
        (sims_ex, ids_ex), t_np = best_of(lambda: search_numpy(x, q, TOPK))
        rows.append((n, "numpy brute force", "exact", None, t_np, t_np, 1.0))
        for kind in ("flat", "ivf", "ivfpq"):
            (index, params), t_build = timed(lambda: build_faiss_index(x, kind, seed=args.seed))
            (_, ids), t_q = best_of(lambda: index.search(q, TOPK))
            rows.append((n, f"faiss {kind}", describe(params), t_build, t_q, t_np,
                         recall(ids, ids_ex)))
            print(f"N={n}: {kind} built in {t_build:.2f} s, query {1e3 * t_q:.1f} ms", flush=True)
            if kind == "flat":  # the same index, searched by BLAS matrix products
                default = faiss.cvar.distance_compute_blas_threshold
                faiss.cvar.distance_compute_blas_threshold = 0
                try:
                    (_, ids), t_q = best_of(lambda: index.search(q, TOPK))
                finally:
                    faiss.cvar.distance_compute_blas_threshold = default
                rows.append((n, "faiss flat", "exact, BLAS path *", None, t_q, t_np,
                             recall(ids, ids_ex)))
            del index
        if not args.no_gallery:
            root = tempfile.mkdtemp(prefix="bench_index_", dir=args.tmp)
            try:
                g, t_write, units = write_gallery(os.path.join(root, "g"), x)
                _, t_build = timed(lambda: g.build_search_index("flat"))
                hits, t_q = best_of(lambda: g.search(q, TOPK, best_per_image=False))
                ids = np.array([[h["id"] for h in hq] for hq in hits])
                rows.append((n, "GalleryIndex.search", "flat, per detection", t_build, t_q, t_np,
                             recall(ids, ids_ex)))
                _, t_q = best_of(lambda: g.search(q, TOPK, best_per_image=True))
                rows.append((n, "GalleryIndex.search", "flat, best per frame", None, t_q, t_np,
                             None))
                size = sum(os.path.getsize(os.path.join(d, f))
                           for d, _, fs in os.walk(root) for f in fs)
                notes.append(f"N={n}: GalleryIndex.add + flush of {units} units: {t_write:.1f} s "
                             f"({n / t_write:,.0f} detections/s), {size / 2**20:,.0f} MiB on disk")
                del g, hits
            finally:
                shutil.rmtree(root, ignore_errors=True)
        del x

    print(f"\n| N | method | parameters | build (s) | query, {N_QUERIES} queries (ms) "
          "| per query (ms) | query time / numpy | speed-up vs numpy | recall@20 |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for n, name, params, t_build, t_q, t_np, rec in rows:
        build = "-" if t_build is None else f"{t_build:.2f}"
        r = "-" if rec is None else f"{rec:.3f}"
        print(f"| {n:,} | {name} | {params} | {build} | {1e3 * t_q:.1f} | "
              f"{1e3 * t_q / N_QUERIES:.2f} | {t_q / t_np:.3f} | {t_np / t_q:.1f}x | {r} |")
    print(f"query: one call with all {N_QUERIES} queries, best of {REPEAT} after a warm-up; "
          "build: train + add (GalleryIndex.search rows: from the shards on disk)")
    print("* faiss.cvar.distance_compute_blas_threshold = 0 for this row: this faiss uses "
          f"BLAS only when n_queries * D >= {faiss.cvar.distance_compute_blas_threshold} "
          f"(here {N_QUERIES * DIM}), a default tuned for many threads; GalleryIndex keeps it")
    for line in notes:
        print(line)


if __name__ == "__main__":
    main()
