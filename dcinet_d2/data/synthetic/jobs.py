"""What the synthetic generators share besides drawing.

Seeded random streams (:func:`_rng`), argument checks (:func:`_check_range`,
:func:`_check_image_size`), who exists and who appears in which image (:func:`_draw_identities`,
:func:`_num_appearances`, :func:`_weighted_pick`, :func:`_free_places`, :func:`_scene_people`),
the ``ishard`` rule (:func:`_is_hard`), image jobs and their rendering in processes
(:class:`_Job`, :func:`_run_jobs`), the atomic output folder (:class:`_AtomicDir`) and its
statistics file (:data:`STATS_FILE`, :func:`_write_stats`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

#: Name of the statistics file written into a generated root; its presence marks a complete
#: synthetic dataset (the folder is renamed into place only after everything was written).
STATS_FILE = "synthetic_stats.json"


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])


def _num_appearances(
    rng: np.random.Generator, lo: int, hi: int, size: int, decay: float = 0.6
) -> np.ndarray:
    """Appearances per identity in [lo, hi]: P(k) ~ decay^(k - lo) (ours: 0.6 for CUHK-SYSU,
    where most identities appear 2-3 times; 1.0 = uniform for PRW, where people recur often)."""
    ks = np.arange(lo, hi + 1)
    p = float(decay) ** (ks - lo)
    return rng.choice(ks, size=size, p=p / p.sum())


def _weighted_pick(
    rng: np.random.Generator, cands: np.ndarray, cap: np.ndarray, k: int
) -> np.ndarray:
    w = cap[cands].astype(np.float64)
    return cands[rng.choice(len(cands), size=k, replace=False, p=w / w.sum())]


def _check_range(name: str, value: Sequence[int], minimum: int) -> tuple[int, int]:
    try:
        lo, hi = int(value[0]), int(value[1])
    except (TypeError, IndexError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max) of integers, got {value!r}") from None
    if lo < minimum or hi < lo:
        raise ValueError(f"{name} must satisfy {minimum} <= min <= max, got {value!r}")
    return lo, hi


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    try:
        w, h = int(image_size[0]), int(image_size[1])
    except (TypeError, IndexError, ValueError):
        raise ValueError(f"image_size must be (width, height), got {image_size!r}") from None
    if w < 32 or h < 32:
        raise ValueError(f"image_size must be at least (32, 32), got {image_size!r}")
    return w, h


def _draw_identities(
    num: int,
    rng: np.random.Generator,
    lookalike_fraction: float,
    new: Callable[[np.random.Generator], Any],
    lookalike: Callable[[Any, np.random.Generator], Any],
) -> list[Any]:
    """``num`` identities: each one with probability ``lookalike_fraction`` (never the first)
    ``lookalike(earlier, rng)`` of a random earlier identity, else ``new(rng)``."""
    out: list[Any] = []
    for i in range(num):
        if i > 0 and rng.random() < lookalike_fraction:
            out.append(lookalike(out[int(rng.integers(i))], rng))
        else:
            out.append(new(rng))
    return out


def _free_places(
    rng: np.random.Generator, n_persons: np.ndarray, images: np.ndarray, need: int, pmax: int
) -> np.ndarray:
    """Places for the identities of one split: ``n_persons`` on ``images``, 0 on other images.

    When ``need`` exceeds them, the person counts of ``images`` are raised, in a random order and
    up to ``pmax``, until ``need`` fits; ``n_persons`` is raised with them (in place).
    """
    cap = np.zeros(len(n_persons), dtype=np.int64)
    cap[images] = n_persons[images]
    if need > int(cap.sum()):
        for j in rng.permutation(images):
            add = min(pmax - n_persons[j], need - int(cap.sum()))
            n_persons[j] += add
            cap[j] += add
            if need <= cap.sum():
                break
    return cap


def _scene_people(
    identities: Sequence[Any],
    labels: Sequence[int],
    n_persons: int,
    rng: np.random.Generator,
    make_unlabelled: Callable[[np.random.Generator], Any],
) -> list[tuple[Any, int]]:
    """The people of one image, shuffled by ``rng``: (identity, label) per person.

    The identities ``labels`` (labelled with their index), then ``n_persons - len(labels)``
    unlabelled passers-by (label -1) drawn by ``make_unlabelled(rng)``.
    """
    people = [(identities[i], i) for i in labels]
    people += [(make_unlabelled(rng), -1) for _ in range(int(n_persons) - len(people))]
    return [people[o] for o in rng.permutation(len(people))]


def _is_hard(visible: float, box_h: float, image_h: int) -> bool:
    # Ours: "hard" = less than 60 % visible or shorter than a quarter of the image height.
    return visible < 0.6 or box_h < 0.25 * image_h


@dataclass
class _Job:
    """What every image job holds: where the image goes, its size, the keys of its random
    stream and its people as (identity, label); each renderer adds its own fields."""

    path: str
    width: int
    height: int
    seed_keys: tuple[int, ...]
    people: list[tuple[Any, int]]


def _run_jobs(
    jobs: Sequence[Any],
    num_workers: int,
    progress: bool,
    desc: str,
    worker: Callable[[Any], Any],
) -> list[Any]:
    """``[worker(job) for job in jobs]``, in ``num_workers`` processes when > 0 (same order)."""
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, unit="img", mininterval=1.0)
    results: list[Any] = []
    try:
        if num_workers > 0:
            method = "fork" if sys.platform.startswith("linux") else "spawn"
            ctx = multiprocessing.get_context(method)
            with ctx.Pool(num_workers) as pool:
                for r in pool.imap(worker, jobs, chunksize=16):
                    results.append(r)
                    bar.update(1)
        else:
            for j in jobs:
                results.append(worker(j))
                bar.update(1)
    finally:
        bar.close()
    return results


class _AtomicDir:
    """Write into a hidden sibling folder; rename it to ``root`` only when everything succeeded.

    An interrupted run leaves only ``.<name>.incomplete-XXXX`` (removed on exceptions), never a
    ``root`` that looks complete.
    """

    def __init__(self, root: str, overwrite: bool):
        self.root = os.path.abspath(root)
        self.overwrite = overwrite
        self.tmp = ""

    def __enter__(self) -> str:
        if os.path.exists(self.root) and not self.overwrite:
            raise FileExistsError(f"{self.root} already exists; pass overwrite=True (CLI: --force)")
        parent = os.path.dirname(self.root)
        os.makedirs(parent, exist_ok=True)
        prefix = f".{os.path.basename(self.root)}.incomplete-"
        self.tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if os.path.exists(self.root):
            shutil.rmtree(self.root)
        os.rename(self.tmp, self.root)


def _dir_size(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(dirpath, f))
    return total


def _write_stats(tmp: str, stats: dict[str, Any], t_start: float) -> dict[str, Any]:
    """Add the time since ``t_start`` and the size of ``tmp`` to ``stats``; write them there."""
    stats["seconds"] = round(time.time() - t_start, 2)
    stats["disk_bytes"] = _dir_size(tmp)
    with open(os.path.join(tmp, STATS_FILE), "w") as f:
        json.dump(stats, f, indent=1, sort_keys=True)
    return stats
