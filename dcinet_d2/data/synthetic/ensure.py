"""Both synthetic datasets on demand.

:func:`ensure_synthetic_datasets` generates ``<base>/CUHK-SYSU`` and ``<base>/PRW`` unless they
exist; :func:`default_synthetic_root` is the default ``<base>``. :func:`ensure_synthetic_test_set`
does the same for the 200-query CUHK-SYSU sets that recipes are chosen on (``synthetic_val``) and
reported on beside the benchmark's 70 test queries (``synthetic_heldout``).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from .cuhk_sysu import generate_cuhk_sysu
from .jobs import STATS_FILE
from .prw import generate_prw

logger = logging.getLogger(__name__)

__all__ = [
    "SYNTHETIC_TEST_SETS",
    "default_synthetic_root",
    "ensure_synthetic_datasets",
    "ensure_synthetic_test_set",
]

#: The extra synthetic CUHK-SYSU sets, by folder under ``$DETECTRON2_DATASETS``: (seed,
#: generator arguments). Ours: 400 gallery images and 200 queries of persons of their own seed,
#: 10 training identities only (the split is for testing), TestG50 and TestG100; the seeds keep
#: their persons apart from ``synthetic/`` (0) and ``synthetic_pretrain/`` (1000).
_TEST_SET_SIZE = {
    "num_images": 430,
    "pool_size": 400,
    "num_train_ids": 10,
    "num_test_ids": 200,
    "gallery_sizes": (50, 100),
}
SYNTHETIC_TEST_SETS: dict[str, tuple[int, dict[str, Any]]] = {
    "synthetic_val": (2000, _TEST_SET_SIZE),  # recipe choices are made here
    "synthetic_heldout": (3000, _TEST_SET_SIZE),  # never used for a choice
}


def _datasets_root() -> str:
    """``$DETECTRON2_DATASETS`` (default ``datasets``), as Detectron2 reads it; the generators
    stay free of Detectron2, so not ``dcinet_d2.data.datasets.datasets_root``."""
    return os.environ.get("DETECTRON2_DATASETS", "datasets")


def default_synthetic_root() -> str:
    """``$DETECTRON2_DATASETS/synthetic`` (``DETECTRON2_DATASETS`` defaults to ``datasets``)."""
    return os.path.join(_datasets_root(), "synthetic")


def ensure_synthetic_datasets(
    base: str | None = None,
    *,
    seed: int = 0,
    which: str = "both",
    cuhk_sysu: dict[str, Any] | None = None,
    prw: dict[str, Any] | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Generate ``<base>/CUHK-SYSU`` and ``<base>/PRW`` unless they already exist.

    A dataset folder that exists is left untouched (the generator only creates it by an atomic
    rename at the very end, so an existing folder is complete); its statistics are read from its
    ``synthetic_stats.json`` (with ``"generated": False``).

    Args:
        base: parent folder; None = :func:`default_synthetic_root`.
        seed: random seed for both datasets.
        which: "cuhk_sysu", "prw" or "both".
        cuhk_sysu: extra keyword arguments for :func:`generate_cuhk_sysu`.
        prw: extra keyword arguments for :func:`generate_prw`.
        num_workers: rendering processes.
        progress: show progress bars.

    Returns:
        ``{"cuhk_sysu": stats, "prw": stats}`` for the datasets selected by ``which``.
    """
    if which not in ("cuhk_sysu", "prw", "both"):
        raise ValueError(f"which must be 'cuhk_sysu', 'prw' or 'both', got {which!r}")
    base = default_synthetic_root() if base is None else base
    out: dict[str, dict[str, Any]] = {}
    todo = [
        ("cuhk_sysu", "CUHK-SYSU", generate_cuhk_sysu, cuhk_sysu or {}),
        ("prw", "PRW", generate_prw, prw or {}),
    ]
    for key, folder, fn, kw in todo:
        if which not in (key, "both"):
            continue
        root = os.path.join(base, folder)
        if os.path.isdir(root):
            stats_path = os.path.join(root, STATS_FILE)
            if os.path.isfile(stats_path):
                with open(stats_path) as f:
                    stats = json.load(f)
            else:
                logger.warning(
                    "%s exists but has no %s (not made by this generator?); left as is",
                    root,
                    STATS_FILE,
                )
                stats = {"root": os.path.abspath(root)}
            stats["generated"] = False
            out[key] = stats
            continue
        args = {"seed": seed, "num_workers": num_workers, "progress": progress}
        args.update(kw)
        stats = fn(root, **args)
        stats["generated"] = True
        out[key] = stats
    return out


def ensure_synthetic_test_set(folder: str, *, progress: bool = True) -> dict[str, Any]:
    """Generate ``$DETECTRON2_DATASETS/<folder>/CUHK-SYSU`` unless it exists, for a folder of
    :data:`SYNTHETIC_TEST_SETS`; the same files as ``python datasets/prepare_synthetic.py --which
    cuhk_sysu --seed SEED --out datasets/<folder> --cuhk-images 430 --cuhk-pool 400
    --cuhk-train-ids 10 --cuhk-test-ids 200 --gallery-sizes 50 100``. Returns its statistics."""
    if folder not in SYNTHETIC_TEST_SETS:
        raise ValueError(
            f"unknown synthetic test set {folder!r}; known: {sorted(SYNTHETIC_TEST_SETS)}"
        )
    seed, size = SYNTHETIC_TEST_SETS[folder]
    base = os.path.join(_datasets_root(), folder)
    return ensure_synthetic_datasets(
        base, seed=seed, which="cuhk_sysu", cuhk_sysu=dict(size), progress=progress
    )["cuhk_sysu"]
