#!/usr/bin/env python
"""Generate the synthetic CUHK-SYSU and PRW datasets (official file layouts) for dcinet_d2.

Examples (from the repository root)::

    python datasets/prepare_synthetic.py                      # both, default size, into
                                                              # $DETECTRON2_DATASETS/synthetic
    python datasets/prepare_synthetic.py --which prw --seed 3 --out /tmp/syn
    python datasets/prepare_synthetic.py --which cuhk_sysu --full-scale-cuhk --out /tmp/full \
        --workers 2
    python datasets/prepare_synthetic.py --which cuhk_sysu --full-scale-cuhk --gallery-sizes 50 100

All logic lives in :mod:`dcinet_d2.data.synthetic`; this script only parses arguments and prints
the statistics of each dataset.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from dcinet_d2.data.synthetic import (
    FULL_SCALE_CUHK_SYSU,
    default_synthetic_root,
    ensure_synthetic_datasets,
    generate_cuhk_sysu,
    generate_prw,
)

logger = logging.getLogger("prepare_synthetic")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--out",
        default=None,
        help="parent folder of CUHK-SYSU/ and PRW/ (default: "
        "$DETECTRON2_DATASETS/synthetic, DETECTRON2_DATASETS defaulting to "
        "'datasets')",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--which", choices=["cuhk_sysu", "prw", "both"], default="both")
    p.add_argument("--force", action="store_true", help="regenerate even if the folder exists")
    p.add_argument("--workers", type=int, default=0, help="rendering processes (0 = in process)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    c = p.add_argument_group("CUHK-SYSU size")
    c.add_argument("--cuhk-images", type=int, default=None, help="total images (default 450)")
    c.add_argument("--cuhk-pool", type=int, default=None, help="test pool images (default 150)")
    c.add_argument(
        "--cuhk-train-ids", type=int, default=None, help="training identities (default 120)"
    )
    c.add_argument(
        "--cuhk-test-ids", type=int, default=None, help="test identities = queries (default 70)"
    )
    c.add_argument(
        "--cuhk-image-size",
        type=int,
        nargs=2,
        metavar=("W", "H"),
        default=None,
        help="image width and height (default 256 192; 64 48 with --full-scale-cuhk)",
    )
    c.add_argument(
        "--gallery-sizes",
        type=int,
        nargs="+",
        default=None,
        help="TestG{N}.mat files to write (default: every official N <= pool - 1)",
    )
    c.add_argument(
        "--full-scale-cuhk",
        action="store_true",
        help="the real CUHK-SYSU size: 18,184 images, 6,978 pool, 5,532 + 2,900 "
        "identities (other --cuhk-* flags still override)",
    )
    r = p.add_argument_group("PRW size")
    r.add_argument("--prw-cameras", type=int, default=None, help="cameras (default 6)")
    r.add_argument(
        "--prw-train-frames", type=int, default=None, help="training frames (default 300)"
    )
    r.add_argument("--prw-test-frames", type=int, default=None, help="test frames (default 200)")
    r.add_argument(
        "--prw-train-ids", type=int, default=None, help="training identities (default 80)"
    )
    r.add_argument("--prw-test-ids", type=int, default=None, help="test identities (default 45)")
    r.add_argument(
        "--prw-image-size",
        type=int,
        nargs=2,
        metavar=("W", "H"),
        default=None,
        help="frame width and height (default 256 144)",
    )
    return p


def _kwargs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    cuhk: dict[str, Any] = dict(FULL_SCALE_CUHK_SYSU) if args.full_scale_cuhk else {}
    for flag, key in (
        ("cuhk_images", "num_images"),
        ("cuhk_pool", "pool_size"),
        ("cuhk_train_ids", "num_train_ids"),
        ("cuhk_test_ids", "num_test_ids"),
        ("cuhk_image_size", "image_size"),
        ("gallery_sizes", "gallery_sizes"),
    ):
        value = getattr(args, flag)
        if value is not None:
            cuhk[key] = tuple(value) if isinstance(value, list) else value
    prw: dict[str, Any] = {}
    for flag, key in (
        ("prw_cameras", "num_cameras"),
        ("prw_train_frames", "num_train_frames"),
        ("prw_test_frames", "num_test_frames"),
        ("prw_train_ids", "num_train_ids"),
        ("prw_test_ids", "num_test_ids"),
        ("prw_image_size", "image_size"),
    ):
        value = getattr(args, flag)
        if value is not None:
            prw[key] = tuple(value) if isinstance(value, list) else value
    return {"cuhk_sysu": cuhk, "prw": prw}


_LABELS = [
    ("root", "root"),
    ("generated", "generated now"),
    ("seed", "seed"),
    ("image_size", "image size (w, h)"),
    ("images", "images"),
    ("train_images", "train images"),
    ("pool_images", "pool (test) images"),
    ("frames", "frames"),
    ("train_frames", "train frames"),
    ("test_frames", "test frames"),
    ("cameras", "cameras"),
    ("boxes", "person boxes"),
    ("labelled_boxes", "labelled boxes"),
    ("unlabelled_boxes", "unlabelled boxes"),
    ("hard_boxes", "hard boxes"),
    ("degenerate_boxes", "degenerate boxes (w or h = 0)"),
    ("negative_coordinate_boxes", "boxes with negative x or y"),
    ("train_ids", "train identities"),
    ("test_ids", "test identities"),
    ("queries", "queries"),
    ("gallery_sizes", "TestG sizes written"),
    ("annotation_keys", "annotation keys used"),
    ("seconds", "generation time (s)"),
    ("disk_bytes", "disk size (MB)"),
]


def format_stats(name: str, stats: dict[str, Any]) -> str:
    """Human-readable statistics of one dataset."""
    lines = [f"== {name} =="]
    for key, label in _LABELS:
        if key in stats:
            value = stats[key]
            if key == "disk_bytes":
                value = f"{value / 1e6:.1f}"
            lines.append(f"  {label:32s} {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(name)s: %(message)s")
    base = args.out if args.out is not None else default_synthetic_root()
    kw = _kwargs(args)
    progress = not args.quiet
    try:
        if args.force:
            generators = {
                "cuhk_sysu": (generate_cuhk_sysu, "CUHK-SYSU"),
                "prw": (generate_prw, "PRW"),
            }
            results = {}
            for key, (generate, folder) in generators.items():
                if args.which not in (key, "both"):
                    continue
                results[key] = generate(
                    os.path.join(base, folder),
                    seed=args.seed,
                    num_workers=args.workers,
                    overwrite=True,
                    progress=progress,
                    **kw[key],
                )
                results[key]["generated"] = True
        else:
            results = ensure_synthetic_datasets(
                base,
                seed=args.seed,
                which=args.which,
                cuhk_sysu=kw["cuhk_sysu"],
                prw=kw["prw"],
                num_workers=args.workers,
                progress=progress,
            )
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key, name in (("cuhk_sysu", "CUHK-SYSU (synthetic)"), ("prw", "PRW (synthetic)")):
        if key in results:
            print(format_stats(name, results[key]))
            if not results[key].get("generated", True):
                print("  (already present: left as is; --force regenerates)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
