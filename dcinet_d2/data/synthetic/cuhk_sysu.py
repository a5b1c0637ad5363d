"""The synthetic CUHK-SYSU: who appears where, the annotation files and the query protocol.

:func:`_plan_cuhk_sysu` checks the arguments and draws who appears in which image,
:func:`_write_cuhk_sysu` writes the annotation files and the query protocol of the rendered
images, and :func:`_render_cuhk_sysu` renders a layout and writes the dataset atomically; the
alternative renderer (:mod:`.alt`) writes its CUHK-SYSU with the same three.
:func:`generate_cuhk_sysu` renders the people of :mod:`.looks` with :mod:`.painting`.

Layout written (``root = <out>/CUHK-SYSU``; as seen through ``scipy.io.loadmat(path)`` with
default options):
    * ``Image/SSM/s{k}.jpg``: scene images ``s1.jpg ... sN.jpg``.
    * ``annotation/Images.mat``, key ``Img``: struct array (1, N) with fields ``imname`` (char),
      ``nAppear`` (1x1 double), ``box`` ((1, nAppear) struct array: ``idlocate`` 1x4 double
      ``[x, y, w, h]``, ``ishard`` 1x1 double). A few boxes are degenerate (w == 0 or h == 0), as
      in the real file; they belong to no identity and nothing is drawn for them.
    * ``annotation/pool.mat``, key ``pool``: (P, 1) cell of char = the test (gallery) images.
    * ``annotation/test/train_test/Train.mat``, key ``Train``: (C_train, 1) cell; each cell a (1, 1)
      struct ``idname`` (char 'p123'), ``nAppear``, ``scene`` ((1, nAppear) struct: ``imname``,
      ``idlocate``, ``ishard``).
    * ``annotation/test/train_test/TestG{N}.mat``, key ``TestG{N}``: struct array (1, Q) with
      fields ``Query`` ((1, 1) struct: ``imname``, ``idlocate``, ``ishard``, ``idname``) and
      ``Gallery`` ((1, N) struct: ``imname``, ``idlocate``, ``ishard``). Target entries come first
      (``idlocate`` = the person's box), then distractors with an *empty* ``idlocate``.

Choices of ours (the real data gives no rule; each is also noted where the value is set):
    * Empty gallery ``idlocate`` is a **1x0** double array. Every public evaluation script for
      CUHK-SYSU reads ``item[1][0]`` / ``idlocate[0]`` on it and then tests ``.size == 0``; that
      only works if the first dimension is not 0, so a 0x0 array (what MATLAB's ``[]`` would load
      as) cannot be what the real files hold. Readers should test ``.size == 0``.
    * Galleries are nested: the gallery of ``TestG{N}`` is a prefix of the gallery of every larger
      ``TestG{M}`` (targets first, then one fixed random order of the distractors per query).
    * ``ishard`` = 1 when less than 60 % of the person is visible or the person is shorter than a
      quarter of the image height; distractor gallery entries carry ``ishard`` = 0 (1x1).

The real CUHK-SYSU size (18,184 images, 8,432 identities, 6,978 pool images, 2,900 queries) is
available as :data:`FULL_SCALE_CUHK_SYSU`; its TestG files are written by the streaming encoder
of :mod:`.matfile`. Reading the full ``TestG4000.mat`` with ``scipy.io.loadmat`` takes about 2
minutes and 13 GB of memory (11.6 million gallery entries of three small arrays each), as for the
real file; readers should load only the gallery size they evaluate.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .jobs import (
    _AtomicDir,
    _check_image_size,
    _check_range,
    _free_places,
    _is_hard,
    _num_appearances,
    _rng,
    _run_jobs,
    _scene_people,
    _weighted_pick,
    _write_stats,
)
from .looks import make_identity_appearances, random_appearance
from .matfile import _char_cell, _dbl, _QueryProtocol, _struct_array, _write_mat, _write_testg
from .painting import _ImageJob, _random_background_style, _random_lighting, _run_job

logger = logging.getLogger(__name__)

__all__ = ["CUHK_GALLERY_SIZES", "FULL_SCALE_CUHK_SYSU", "generate_cuhk_sysu"]

#: Gallery sizes of the official CUHK-SYSU protocol files ``TestG{N}.mat``.
CUHK_GALLERY_SIZES: tuple[int, ...] = (50, 100, 500, 1000, 2000, 4000)
#: Arguments of :func:`generate_cuhk_sysu` that reproduce the size of the real CUHK-SYSU
#: (Xiao et al. 2017): 18,184 images, 6,978 of them in the test pool, 5,532 training and 2,900
#: test identities (one query each). Ours: 64x48 images keep it to minutes and ~70 MB of JPEGs.
FULL_SCALE_CUHK_SYSU: dict[str, Any] = {
    "num_images": 18184,
    "pool_size": 6978,
    "num_train_ids": 5532,
    "num_test_ids": 2900,
    "image_size": (64, 48),
}

_CUHK_STREAM = 1  # random-stream tag (PRW: 2, the alternative renderer: 7)


@dataclass
class _CuhkLayout:
    """Who appears where in a synthetic CUHK-SYSU, drawn before any image is rendered."""

    width: int
    height: int
    names: list[str]  # image file names s1.jpg ... sN.jpg
    is_pool: np.ndarray  # (N,) bool: the image is a test (gallery) image
    n_persons: np.ndarray  # (N,) people drawn per image (labelled + unlabelled)
    id_numbers: np.ndarray  # (C,) the number k of each identity's name 'p{k}'
    identities: list[Any]  # per identity: what the renderer draws for it
    image_labels: list[list[int]]  # per image: indices of the identities on it
    degenerate: np.ndarray  # (N,) bool: the image gets one extra zero-width/height box
    num_train_ids: int  # identities 0 .. num_train_ids - 1 are training identities
    gallery_sizes: list[int]  # N of the TestG{N}.mat files to write


def _plan_cuhk_sysu(
    seed: int,
    stream: int,
    *,
    num_images: int,
    num_train_ids: int,
    num_test_ids: int,
    pool_size: int,
    image_size: tuple[int, int],
    gallery_sizes: Sequence[int] | None,
    persons_per_image: tuple[int, int],
    appearances_per_id: tuple[int, int],
    degenerate_fraction: float,
    make_identities: Callable[[int, np.random.Generator], list[Any]],
) -> _CuhkLayout:
    """Check the arguments of a synthetic CUHK-SYSU and draw its layout (splits, who is where).

    Arguments as in :func:`generate_cuhk_sysu`; ``stream`` tags the random streams (one per
    dataset kind) and ``make_identities(num_ids, rng)`` draws what each identity looks like from
    the layout's random stream.

    Raises:
        ValueError: inconsistent sizes, naming the argument.
    """
    width, height = _check_image_size(image_size)
    pmin, pmax = _check_range("persons_per_image", persons_per_image, 1)
    amin, amax = _check_range("appearances_per_id", appearances_per_id, 2)
    if num_images < 2:
        raise ValueError(f"num_images must be >= 2, got {num_images}")
    if not 2 <= pool_size < num_images:
        raise ValueError(
            f"pool_size must be in [2, num_images - 1] = [2, {num_images - 1}], got {pool_size}"
        )
    if num_train_ids < 1 or num_test_ids < 1:
        raise ValueError(
            f"num_train_ids and num_test_ids must be >= 1, got {num_train_ids}, {num_test_ids}"
        )
    if amax > pool_size:
        raise ValueError(f"appearances_per_id max ({amax}) exceeds pool_size ({pool_size})")
    if gallery_sizes is None:
        sizes = [n for n in CUHK_GALLERY_SIZES if n <= pool_size - 1]
    else:
        sizes = sorted({int(n) for n in gallery_sizes})
        bad = [n for n in sizes if not amax - 1 <= n <= pool_size - 1]
        if bad:
            raise ValueError(
                f"gallery_sizes {bad} not allowed: each N must satisfy {amax - 1} <= N <= "
                f"pool_size - 1 = {pool_size - 1} (a gallery holds all other images of the "
                f"query person)"
            )
    if sizes and sizes[0] < amax - 1:
        raise ValueError(
            f"gallery size {sizes[0]} is smaller than appearances_per_id max - 1 ({amax - 1})"
        )
    num_train_images = num_images - pool_size
    for split, n_img, n_ids in (
        ("train", num_train_images, num_train_ids),
        ("test", pool_size, num_test_ids),
    ):
        if n_img * pmax < n_ids * amax or n_img < amax:
            raise ValueError(
                f"not enough room for the {split} identities: {n_ids} ids x up to {amax} "
                f"appearances "
                f"need more than {n_img} images x {pmax} persons; raise num_images/pool_size or "
                f"persons_per_image, or lower num_{split}_ids"
            )

    lrng = _rng(seed, stream, 0)
    names = [f"s{k}.jpg" for k in range(1, num_images + 1)]
    is_pool = np.zeros(num_images, dtype=bool)
    is_pool[lrng.choice(num_images, size=pool_size, replace=False)] = True
    n_persons = lrng.integers(pmin, pmax + 1, size=num_images)
    num_ids = num_train_ids + num_test_ids
    id_numbers = lrng.permutation(np.arange(1, num_ids + 1))  # ours: 'p{k}' names in random order
    identities = make_identities(num_ids, lrng)
    k_app = _num_appearances(lrng, amin, amax, num_ids)
    image_labels: list[list[int]] = [[] for _ in range(num_images)]
    for split_ids, mask in (
        (range(num_train_ids), ~is_pool),
        (range(num_train_ids, num_ids), is_pool),
    ):
        need = int(sum(k_app[i] for i in split_ids))
        cap = _free_places(lrng, n_persons, np.flatnonzero(mask), need, pmax)
        for i in lrng.permutation(np.asarray(list(split_ids))):
            cands = np.flatnonzero(cap > 0)
            k = int(k_app[i])
            if len(cands) < k:
                raise ValueError(
                    "could not place every identity; raise num_images/pool_size "
                    "or persons_per_image"
                )
            for j in _weighted_pick(lrng, cands, cap, k):
                image_labels[j].append(int(i))
                cap[j] -= 1
    degenerate = lrng.random(num_images) < degenerate_fraction
    if degenerate_fraction > 0 and not degenerate.any():
        degenerate[int(lrng.integers(num_images))] = True
    return _CuhkLayout(
        width=width,
        height=height,
        names=names,
        is_pool=is_pool,
        n_persons=n_persons,
        id_numbers=id_numbers,
        identities=identities,
        image_labels=image_labels,
        degenerate=degenerate,
        num_train_ids=num_train_ids,
        gallery_sizes=sizes,
    )


def _write_cuhk_sysu(
    tmp: str,
    root: str,
    layout: _CuhkLayout,
    results: Sequence[Sequence[tuple[int, tuple[float, float, float, float], float]]],
    seed: int,
    stream: int,
    dataset: str,
    t_start: float,
) -> dict[str, Any]:
    """Write the annotation files and statistics of a rendered synthetic CUHK-SYSU into ``tmp``.

    Args:
        tmp: the folder being written (renamed to ``root`` afterwards).
        root: the final folder (recorded in the statistics).
        layout: the layout the images were rendered from.
        results: per image, (label, box x1 y1 x2 y2, visible fraction) per person drawn.
        seed: random seed of the dataset.
        stream: random-stream tag of the dataset kind (as given to :func:`_plan_cuhk_sysu`).
        dataset: name recorded in the statistics.
        t_start: ``time.time()`` at the start of the generation.

    Returns:
        Statistics (also written to ``tmp/synthetic_stats.json``).
    """
    width, height, names, is_pool = layout.width, layout.height, layout.names, layout.is_pool
    id_numbers, num_train_ids = layout.id_numbers, layout.num_train_ids
    num_images, num_ids = len(names), len(layout.identities)
    ann_dir = os.path.join(tmp, "annotation", "test", "train_test")
    os.makedirs(ann_dir, exist_ok=True)
    # boxes: integer [x, y, w, h] = the pixels touched by the silhouette
    img_boxes: list[list[tuple[tuple[int, int, int, int], int, int]]] = []  # (box, hard, label)
    appearances: dict[int, list[tuple[int, tuple[int, int, int, int], int]]] = {}
    n_hard = n_labelled = n_unlabelled = n_degenerate = 0
    for j, placed in enumerate(results):
        boxes = []
        for label, (x1, y1, x2, y2), visible in placed:
            ix, iy = int(math.floor(x1)), int(math.floor(y1))
            box = (ix, iy, int(math.ceil(x2)) - ix, int(math.ceil(y2)) - iy)
            hard = int(_is_hard(visible, y2 - y1, height))
            boxes.append((box, hard, label))
            n_hard += hard
            if label >= 0:
                appearances.setdefault(label, []).append((j, box, hard))
                n_labelled += 1
            else:
                n_unlabelled += 1
        if layout.degenerate[j]:
            drng = _rng(seed, stream, 3, j)
            x, y = int(drng.integers(0, width - 1)), int(drng.integers(0, height - 1))
            if drng.random() < 0.5:
                box = (x, y, 0, int(drng.integers(1, height - y + 1)))
            else:
                box = (x, y, int(drng.integers(1, width - x + 1)), 0)
            boxes.insert(int(drng.integers(len(boxes) + 1)), (box, 0, -1))
            n_degenerate += 1
        img_boxes.append(boxes)

    logger.info("%s: writing annotation files", dataset)
    img_struct = _struct_array((1, num_images), ("imname", "nAppear", "box"))
    for j in range(num_images):
        bs = _struct_array((1, len(img_boxes[j])), ("idlocate", "ishard"))
        for t, (box, hard, _) in enumerate(img_boxes[j]):
            bs[0, t] = (_dbl(*box), _dbl(hard))
        img_struct[0, j] = (names[j], _dbl(len(img_boxes[j])), bs)
    _write_mat(os.path.join(tmp, "annotation", "Images.mat"), {"Img": img_struct})

    pool = _char_cell([names[j] for j in range(num_images) if is_pool[j]])
    _write_mat(os.path.join(tmp, "annotation", "pool.mat"), {"pool": pool})

    train_order = sorted(range(num_train_ids), key=lambda i: id_numbers[i])
    train = np.empty((num_train_ids, 1), dtype=object)
    for t, i in enumerate(train_order):
        apps_i = appearances[i]
        sc = _struct_array((1, len(apps_i)), ("imname", "idlocate", "ishard"))
        for u, (j, box, hard) in enumerate(apps_i):
            sc[0, u] = (names[j], _dbl(*box), _dbl(hard))
        cell = _struct_array((1, 1), ("idname", "nAppear", "scene"))
        cell[0, 0] = (f"p{id_numbers[i]}", _dbl(len(apps_i)), sc)
        train[t, 0] = cell
    _write_mat(os.path.join(ann_dir, "Train.mat"), {"Train": train})

    pool_idx = np.flatnonzero(is_pool)
    prng = _rng(seed, stream, 4)
    protocol: list[_QueryProtocol] = []
    for i in sorted(range(num_train_ids, num_ids), key=lambda i: id_numbers[i]):
        apps_i = appearances[i]
        easy = [u for u, a in enumerate(apps_i) if a[2] == 0]
        qu = easy[int(prng.integers(len(easy)))] if easy else int(prng.integers(len(apps_i)))
        qj, qbox, qhard = apps_i[qu]
        others = [a for u, a in enumerate(apps_i) if u != qu]
        distractors = pool_idx[~np.isin(pool_idx, [a[0] for a in apps_i])].astype(np.int32)
        protocol.append(
            _QueryProtocol(
                query=(names[qj], qbox, qhard, f"p{id_numbers[i]}"),
                targets=[(names[j], box, hard) for j, box, hard in others],
                distractors=distractors[prng.permutation(len(distractors))],
                names=names,
            )
        )
    if not layout.gallery_sizes:
        logger.warning(
            "%s: pool_size=%d allows no official gallery size (>= 50 needs "
            "pool_size >= 51); no TestG file written",
            dataset,
            len(pool_idx),
        )
    for n in layout.gallery_sizes:
        t0 = time.time()
        _write_testg(os.path.join(ann_dir, f"TestG{n}.mat"), protocol, n)
        logger.info(
            "%s: TestG%d.mat written (%d x %d entries) in %.1f s",
            dataset,
            n,
            len(protocol),
            n,
            time.time() - t0,
        )

    stats = {
        "dataset": dataset,
        "root": os.path.abspath(root),
        "seed": int(seed),
        "image_size": [width, height],
        "images": num_images,
        "train_images": num_images - len(pool_idx),
        "pool_images": len(pool_idx),
        "boxes": n_labelled + n_unlabelled,
        "labelled_boxes": n_labelled,
        "unlabelled_boxes": n_unlabelled,
        "hard_boxes": n_hard,
        "degenerate_boxes": n_degenerate,
        "train_ids": num_train_ids,
        "test_ids": num_ids - num_train_ids,
        "queries": len(protocol),
        "gallery_sizes": layout.gallery_sizes,
    }
    return _write_stats(tmp, stats, t_start)


def _render_cuhk_sysu(
    root: str,
    layout: _CuhkLayout,
    make_job: Callable[[int, str], Any],
    worker: Callable[[Any], Any],
    *,
    seed: int,
    stream: int,
    name: str,
    dataset: str,
    t_start: float,
    num_workers: int,
    overwrite: bool,
    progress: bool,
) -> dict[str, Any]:
    """Render the images of ``layout`` and write the CUHK-SYSU at ``root``, atomically.

    ``make_job(j, path)`` is the job that ``worker`` renders into image ``j`` at ``path``; the
    worker returns (label, box x1 y1 x2 y2, visible fraction) per person drawn. ``name`` heads the
    log lines and the progress bar; the other arguments as in :func:`_write_cuhk_sysu` and
    :func:`generate_cuhk_sysu`.

    Returns:
        Statistics (also stored as ``root/synthetic_stats.json``).
    """
    img_dir = os.path.join("Image", "SSM")
    with _AtomicDir(root, overwrite) as tmp:
        os.makedirs(os.path.join(tmp, img_dir))
        logger.info(
            "%s: rendering %d images (%dx%d) into %s",
            name,
            len(layout.names),
            layout.width,
            layout.height,
            root,
        )
        jobs = [make_job(j, os.path.join(tmp, img_dir, n)) for j, n in enumerate(layout.names)]
        results = _run_jobs(jobs, num_workers, progress, f"{name} images", worker)
        stats = _write_cuhk_sysu(tmp, root, layout, results, seed, stream, dataset, t_start)
    logger.info("%s written to %s in %.1f s", name, root, stats["seconds"])
    return stats


def generate_cuhk_sysu(
    root: str,
    *,
    seed: int = 0,
    num_images: int = 450,
    num_train_ids: int = 120,
    num_test_ids: int = 70,
    pool_size: int = 150,
    image_size: tuple[int, int] = (256, 192),
    gallery_sizes: Sequence[int] | None = None,
    persons_per_image: tuple[int, int] = (2, 6),
    appearances_per_id: tuple[int, int] = (2, 5),
    height_range: tuple[float, float] = (0.35, 0.85),
    similar_fraction: float = 0.3,
    degenerate_fraction: float = 0.03,
    occluder_prob: float = 0.3,
    jpeg_quality: int = 90,
    num_workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate a synthetic CUHK-SYSU at ``root`` in the official layout (module docstring).

    Training identities appear only in training images, test identities only in pool images; every
    identity appears in ``appearances_per_id`` different images (at least 2). Each test identity
    gives one query (ours: a random non-hard appearance when there is one) and its gallery in every
    ``TestG{N}.mat``: the other images of the person first, then distractor pool images.

    Args:
        root: output folder (e.g. ``<out>/CUHK-SYSU``); written atomically.
        seed: random seed; same seed and arguments -> identical files.
        num_images: total number of scene images (real: 18,184).
        num_train_ids: identities of Train.mat (real: 5,532).
        num_test_ids: test identities = queries (real: 2,900).
        pool_size: number of test (gallery) images (real: 6,978).
        image_size: (width, height) of every image.
        gallery_sizes: sizes N of the ``TestG{N}.mat`` files to write; None = every official size
            (50 ... 4000) with N <= pool_size - 1. Other positive sizes <= pool_size - 1 are
            allowed (written under the same naming scheme).
        persons_per_image: (min, max) people drawn per image (labelled + unlabelled).
        appearances_per_id: (min, max) images per identity (min >= 2).
        height_range: person heights as fractions of the image height.
        similar_fraction: fraction of identities made as look-alikes of another identity.
        degenerate_fraction: fraction of images that get one extra zero-width/height box.
        occluder_prob: probability per image of an object occluding one person.
        jpeg_quality: JPEG quality.
        num_workers: processes for rendering (0 = this process); output does not depend on it.
        overwrite: replace an existing ``root``.
        progress: show a progress bar.

    Returns:
        Statistics (also stored as ``root/synthetic_stats.json``).

    Raises:
        ValueError: inconsistent sizes, naming the argument.
        FileExistsError: ``root`` exists and ``overwrite`` is False.
    """
    t_start = time.time()
    layout = _plan_cuhk_sysu(
        seed,
        _CUHK_STREAM,
        num_images=num_images,
        num_train_ids=num_train_ids,
        num_test_ids=num_test_ids,
        pool_size=pool_size,
        image_size=image_size,
        gallery_sizes=gallery_sizes,
        persons_per_image=persons_per_image,
        appearances_per_id=appearances_per_id,
        degenerate_fraction=degenerate_fraction,
        make_identities=lambda n, r: make_identity_appearances(n, r, similar_fraction),
    )

    def make_job(j: int, path: str) -> _ImageJob:
        jrng = _rng(seed, _CUHK_STREAM, 1, j)
        people = _scene_people(
            layout.identities, layout.image_labels[j], layout.n_persons[j], jrng, random_appearance
        )
        return _ImageJob(
            path=path,
            width=layout.width,
            height=layout.height,
            seed_keys=(seed, _CUHK_STREAM, 2, j),
            people=people,
            background=_random_background_style(jrng),
            height_range=tuple(height_range),
            edge_person=None,
            occluder_prob=occluder_prob,
            lighting=_random_lighting(jrng),
            jpeg_quality=jpeg_quality,
        )

    return _render_cuhk_sysu(
        root,
        layout,
        make_job,
        _run_job,
        seed=seed,
        stream=_CUHK_STREAM,
        name="CUHK-SYSU",
        dataset="CUHK-SYSU (synthetic)",
        t_start=t_start,
        num_workers=num_workers,
        overwrite=overwrite,
        progress=progress,
    )
