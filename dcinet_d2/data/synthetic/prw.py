"""The synthetic PRW: :func:`generate_prw` (cameras, frames, identities, annotation files).

Each camera has its own background and lighting; people are drawn with :mod:`.looks` and
:mod:`.painting`, the ``.mat`` files written with :mod:`.matfile`.

Layout written (``root = <out>/PRW``; as seen through ``scipy.io.loadmat(path)`` with default
options):
    * ``frames/c{cam}s{seq}_{frame:06d}.jpg``.
    * ``annotations/{frame}.jpg.mat``: one N x 5 double ``[id, x, y, w, h]`` under one of the keys
      ``box_new``, ``anno_file``, ``anno_previous`` (rotated by frame); id -2 = unlabelled person.
    * ``frame_train.mat`` (``img_index_train``) / ``frame_test.mat`` (``img_index_test``): (N, 1)
      cells of frame names without extension; ``ID_train.mat`` (``ID_train``): (1, C) double.
    * ``query_info.txt``: ``pid x y w h frame`` per line, CRLF line endings.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
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
from .matfile import _char_cell, _write_mat
from .painting import _ImageJob, _random_background_style, _random_lighting, _run_job

logger = logging.getLogger(__name__)

__all__ = ["PRW_ANNOTATION_KEYS", "generate_prw"]

#: The three keys under which the real PRW annotation files store their N x 5 matrix.
PRW_ANNOTATION_KEYS: tuple[str, ...] = ("box_new", "anno_file", "anno_previous")

_PRW_STREAM = 2  # random-stream tag (CUHK-SYSU: 1, the alternative renderer: 7)


def generate_prw(
    root: str,
    *,
    seed: int = 0,
    num_cameras: int = 6,
    num_train_frames: int = 300,
    num_test_frames: int = 200,
    num_train_ids: int = 80,
    num_test_ids: int = 45,
    image_size: tuple[int, int] = (256, 144),
    sequences_per_camera: int = 2,
    persons_per_frame: tuple[int, int] = (2, 5),
    appearances_per_id: tuple[int, int] = (3, 10),
    cameras_per_test_id: tuple[int, int] = (2, 3),
    max_queries_per_id: int | None = None,
    height_range: tuple[float, float] = (0.4, 0.9),
    similar_fraction: float = 0.3,
    edge_fraction: float = 0.1,
    occluder_prob: float = 0.3,
    jpeg_quality: int = 90,
    num_workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate a synthetic PRW at ``root`` in the official layout (module docstring).

    Each camera has a fixed background and lighting (plus a small per-frame jitter), so the same
    identity looks different across cameras. Training and test identities are disjoint and appear
    only in training / test frames; every test identity appears in test frames of at least two
    cameras, and gets one query per camera it appears in (ours; real PRW: 2,057 queries for 450
    identities), so the cross-camera protocol always has targets. Raw ids are a random subset of
    1..~1.2 x (number of ids), i.e. not contiguous, like the real ones; unlabelled people get -2.

    Args:
        root: output folder (e.g. ``<out>/PRW``); written atomically.
        seed: random seed; same seed and arguments -> identical files.
        num_cameras: number of cameras (real: 6), >= 2.
        num_train_frames: training frames (real: 5,704).
        num_test_frames: test frames (real: 6,112).
        num_train_ids: training identities (real: 482).
        num_test_ids: test (query) identities (real: 450).
        image_size: (width, height) of every frame.
        sequences_per_camera: video sequences per camera (``s{seq}`` in the frame names).
        persons_per_frame: (min, max) people per frame.
        appearances_per_id: (min, max) frames per identity (min >= 2). Ours: (3, 10) by default,
            drawn uniformly: more than for CUHK-SYSU, because real PRW identities recur in many
            frames (about 80 % of its boxes are labelled, against about 25 % in CUHK-SYSU).
        cameras_per_test_id: (min, max) cameras per test identity (min >= 2; max is capped at
            ``num_cameras``).
        max_queries_per_id: cap on queries per test identity (None = one per camera).
        height_range: person heights as fractions of the frame height.
        similar_fraction: fraction of identities made as look-alikes of another identity.
        edge_fraction: fraction of frames where one person is cut by the left or top border (its
            box then has a negative x or y, as in the real annotations).
        occluder_prob: probability per frame of an object occluding one person.
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
    width, height = _check_image_size(image_size)
    pmin, pmax = _check_range("persons_per_frame", persons_per_frame, 1)
    amin, amax = _check_range("appearances_per_id", appearances_per_id, 2)
    cmin, cmax = _check_range("cameras_per_test_id", cameras_per_test_id, 2)
    if num_cameras < 2:
        raise ValueError(
            f"num_cameras must be >= 2 (test identities cross cameras), got {num_cameras}"
        )
    if cmin > num_cameras:
        raise ValueError(f"cameras_per_test_id min ({cmin}) exceeds num_cameras ({num_cameras})")
    cmax = min(cmax, num_cameras)
    if cmin > amax:
        raise ValueError(
            f"cameras_per_test_id min ({cmin}) exceeds appearances_per_id max ({amax})"
        )
    if num_test_frames < 2 * num_cameras or num_train_frames < num_cameras:
        raise ValueError(
            f"need at least 2 test frames and 1 training frame per camera: num_test_frames="
            f"{num_test_frames}, num_train_frames={num_train_frames}, num_cameras={num_cameras}"
        )
    if sequences_per_camera < 1:
        raise ValueError(f"sequences_per_camera must be >= 1, got {sequences_per_camera}")
    if max_queries_per_id is not None and max_queries_per_id < 1:
        raise ValueError(f"max_queries_per_id must be >= 1 or None, got {max_queries_per_id}")
    for split, n_img, n_ids in (
        ("train", num_train_frames, num_train_ids),
        ("test", num_test_frames, num_test_ids),
    ):
        if n_ids < 1:
            raise ValueError(f"num_{split}_ids must be >= 1, got {n_ids}")
        if n_img * pmax < n_ids * amax:
            raise ValueError(
                f"not enough room for the {split} identities: {n_ids} ids x up to {amax} "
                f"appearances need more than {n_img} frames x {pmax} persons; raise "
                f"num_{split}_frames or persons_per_frame, or lower num_{split}_ids"
            )

    lrng = _rng(seed, _PRW_STREAM, 0)
    num_frames = num_train_frames + num_test_frames
    cam_of = np.zeros(num_frames, dtype=np.int64)
    is_test = np.zeros(num_frames, dtype=bool)
    frame_names: list[str] = []
    per_cam = [len(a) for a in np.array_split(np.arange(num_frames), num_cameras)]
    test_per_cam = [len(a) for a in np.array_split(np.arange(num_test_frames), num_cameras)]
    f0 = 0
    for c in range(num_cameras):
        n_c = per_cam[c]
        seq_of = np.sort(lrng.integers(1, sequences_per_camera + 1, size=n_c))
        counters = {s: int(lrng.integers(1, 300)) for s in range(1, sequences_per_camera + 1)}
        for t in range(n_c):
            s = int(seq_of[t])
            counters[s] += 25 * int(lrng.integers(1, 5))  # ours: frames ~1-4 s apart at 25 fps
            frame_names.append(f"c{c + 1}s{s}_{counters[s]:06d}")
        cam_of[f0 : f0 + n_c] = c + 1
        is_test[f0 + lrng.choice(n_c, size=min(test_per_cam[c], n_c - 1), replace=False)] = True
        f0 += n_c
    # top up test frames if a camera could not take its share (tiny sizes)
    missing = num_test_frames - int(is_test.sum())
    if missing > 0:
        free = np.flatnonzero(~is_test)
        is_test[lrng.choice(free, size=missing, replace=False)] = True

    num_ids = num_train_ids + num_test_ids
    id_space = np.arange(1, int(num_ids * 1.2) + 2)  # ours: raw ids leave gaps, like PRW's
    raw_ids = np.sort(lrng.choice(id_space, size=num_ids, replace=False))
    perm = lrng.permutation(num_ids)
    train_raw = np.sort(raw_ids[perm[:num_train_ids]])
    test_raw = np.sort(raw_ids[perm[num_train_ids:]])
    apps = make_identity_appearances(num_ids, lrng, similar_fraction)
    k_app = _num_appearances(lrng, amin, amax, num_ids, decay=1.0)
    n_persons = lrng.integers(pmin, pmax + 1, size=num_frames)
    frame_labels: list[list[int]] = [[] for _ in range(num_frames)]
    # identity index i < num_train_ids -> train_raw[i]; else test_raw[i - num_train_ids]
    for split_ids, mask, c_lo, c_hi in (
        (range(num_train_ids), ~is_test, 1, min(3, num_cameras)),
        (range(num_train_ids, num_ids), is_test, cmin, cmax),
    ):
        frames = np.flatnonzero(mask)
        need = int(sum(max(k_app[i], c_lo) for i in split_ids))
        cap = _free_places(lrng, n_persons, frames, need, pmax)
        for i in lrng.permutation(np.asarray(list(split_ids))):
            cams = [
                c for c in range(1, num_cameras + 1) if (cap[frames][cam_of[frames] == c] > 0).any()
            ]
            k = int(max(k_app[i], c_lo))
            n_c = int(lrng.integers(c_lo, min(c_hi, len(cams), k) + 1)) if len(cams) >= c_lo else 0
            if n_c < c_lo:
                raise ValueError(
                    f"could not place identity across {c_lo} cameras; raise num_*_frames"
                )
            chosen = lrng.choice(np.asarray(cams), size=n_c, replace=False)
            picks: list[int] = []
            for c in chosen:
                cands = frames[(cam_of[frames] == c) & (cap[frames] > 0)]
                picks.append(int(_weighted_pick(lrng, cands, cap, 1)[0]))
            rest = frames[np.isin(cam_of[frames], chosen) & (cap[frames] > 0)]
            rest = rest[~np.isin(rest, picks)]
            extra = min(k - n_c, len(rest))
            if extra > 0:
                picks += [int(x) for x in _weighted_pick(lrng, rest, cap, extra)]
            for j in picks:
                frame_labels[j].append(int(i))
                cap[j] -= 1
    edge = lrng.random(num_frames) < edge_fraction
    if edge_fraction > 0 and not edge.any():
        edge[int(lrng.integers(num_frames))] = True

    cameras = range(1, num_cameras + 1)
    cam_styles = {c: _random_background_style(_rng(seed, _PRW_STREAM, 5, c)) for c in cameras}
    cam_light = {c: _random_lighting(_rng(seed, _PRW_STREAM, 6, c), spread=1.3) for c in cameras}
    cam_scale = {c: float(_rng(seed, _PRW_STREAM, 7, c).uniform(0.85, 1.1)) for c in cameras}

    def raw_id(i: int) -> int:
        return int(train_raw[i]) if i < num_train_ids else int(test_raw[i - num_train_ids])

    with _AtomicDir(root, overwrite) as tmp:
        os.makedirs(os.path.join(tmp, "frames"))
        os.makedirs(os.path.join(tmp, "annotations"))
        logger.info(
            "PRW: rendering %d frames (%dx%d, %d cameras) into %s",
            num_frames,
            width,
            height,
            num_cameras,
            root,
        )
        jobs = []
        for j in range(num_frames):
            c = int(cam_of[j])
            jrng = _rng(seed, _PRW_STREAM, 1, j)
            people = _scene_people(apps, frame_labels[j], n_persons[j], jrng, random_appearance)
            b, cast = cam_light[c]
            jit = _random_lighting(jrng, spread=0.25)
            lighting = (b * jit[0], tuple(x * y for x, y in zip(cast, jit[1])))
            hr = (height_range[0] * cam_scale[c], min(1.0, height_range[1] * cam_scale[c]))
            side = "left" if jrng.random() < 0.5 else "top"
            jobs.append(
                _ImageJob(
                    path=os.path.join(tmp, "frames", frame_names[j] + ".jpg"),
                    width=width,
                    height=height,
                    seed_keys=(seed, _PRW_STREAM, 2, j),
                    people=people,
                    background=cam_styles[c],
                    height_range=hr,
                    edge_person=side if edge[j] else None,
                    occluder_prob=occluder_prob,
                    lighting=lighting,  # type: ignore[arg-type]
                    jpeg_quality=jpeg_quality,
                )
            )
        results = _run_jobs(jobs, num_workers, progress, "PRW frames", _run_job)

        key_counts = {k: 0 for k in PRW_ANNOTATION_KEYS}
        n_lab = n_unl = n_neg = 0
        appearances: dict[int, list[tuple[int, tuple[float, float, float, float], bool]]] = {}
        order = sorted(range(num_frames), key=lambda j: frame_names[j])
        for rank, j in enumerate(order):
            rows = []
            for label, (x1, y1, x2, y2), visible in results[j]:
                pid = raw_id(label) if label >= 0 else -2
                rows.append([pid, x1, y1, x2 - x1, y2 - y1])
                n_neg += int(x1 < 0 or y1 < 0)
                if label >= 0:
                    n_lab += 1
                    hard = _is_hard(visible, y2 - y1, height) or x1 < 0 or y1 < 0
                    appearances.setdefault(label, []).append((j, (x1, y1, x2 - x1, y2 - y1), hard))
                else:
                    n_unl += 1
            key = PRW_ANNOTATION_KEYS[rank % len(PRW_ANNOTATION_KEYS)]
            key_counts[key] += 1
            _write_mat(
                os.path.join(tmp, "annotations", frame_names[j] + ".jpg.mat"),
                {key: np.asarray(rows, dtype=np.float64).reshape(-1, 5)},
            )

        def name_cell(idx: Iterable[int]) -> np.ndarray:
            return _char_cell(sorted(frame_names[j] for j in idx))

        _write_mat(
            os.path.join(tmp, "frame_train.mat"),
            {"img_index_train": name_cell(np.flatnonzero(~is_test))},
        )
        _write_mat(
            os.path.join(tmp, "frame_test.mat"),
            {"img_index_test": name_cell(np.flatnonzero(is_test))},
        )
        _write_mat(
            os.path.join(tmp, "ID_train.mat"), {"ID_train": train_raw.astype(np.float64)[None, :]}
        )

        qrng = _rng(seed, _PRW_STREAM, 4)
        lines = []
        for i in sorted(range(num_train_ids, num_ids), key=raw_id):
            by_cam: dict[int, list[tuple[int, tuple[float, ...], bool]]] = {}
            for a in appearances[i]:
                by_cam.setdefault(int(cam_of[a[0]]), []).append(a)
            cams = sorted(by_cam)
            if max_queries_per_id is not None and len(cams) > max_queries_per_id:
                picked = qrng.choice(cams, size=max_queries_per_id, replace=False)
                cams = sorted(int(c) for c in picked)
            for c in cams:
                cands = [a for a in by_cam[c] if not a[2]] or by_cam[c]
                j, (x, y, w, h), _ = cands[int(qrng.integers(len(cands)))]
                lines.append(f"{raw_id(i)} {x:.1f} {y:.1f} {w:.1f} {h:.1f} {frame_names[j]}\r\n")
        with open(os.path.join(tmp, "query_info.txt"), "wb") as f:
            f.write("".join(lines).encode("ascii"))

        stats = {
            "dataset": "PRW (synthetic)",
            "root": os.path.abspath(root),
            "seed": int(seed),
            "image_size": [width, height],
            "cameras": num_cameras,
            "frames": num_frames,
            "train_frames": int((~is_test).sum()),
            "test_frames": int(is_test.sum()),
            "boxes": n_lab + n_unl,
            "labelled_boxes": n_lab,
            "unlabelled_boxes": n_unl,
            "negative_coordinate_boxes": n_neg,
            "train_ids": num_train_ids,
            "test_ids": num_test_ids,
            "queries": len(lines),
            "annotation_keys": key_counts,
        }
        _write_stats(tmp, stats, t_start)
    logger.info("PRW written to %s in %.1f s", root, stats["seconds"])
    return stats
