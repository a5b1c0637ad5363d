#!/usr/bin/env python
"""Time to load CUHK-SYSU-scale annotations: first load (parse .mat files + image headers) vs later
loads (parse cache), measured in the same run.

    python bench/bench_dataset_loading.py --root /tmp/full_cuhk/CUHK-SYSU

Generates the synthetic CUHK-SYSU at the real size (18,184 images, 8,432 identities, 6,978 test
images, 2,900 queries; 64x48 images) into --root first if it is absent (about 2 minutes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from dcinet_d2.data.datasets.cuhk_sysu import load_cuhk_sysu, num_train_identities
from dcinet_d2.data.synthetic import FULL_SCALE_CUHK_SYSU, generate_cuhk_sysu


def load_both(root):
    t = time.perf_counter()
    train, test = load_cuhk_sysu(root, "train"), load_cuhk_sysu(root, "test")
    return time.perf_counter() - t, train, test


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="/tmp/full_cuhk/CUHK-SYSU")
    parser.add_argument("--repeats", type=int, default=3, help="cached loads to time")
    args = parser.parse_args()
    if not os.path.isdir(args.root):
        print(f"generating the full-scale synthetic CUHK-SYSU into {args.root} ...")
        generate_cuhk_sysu(args.root, **FULL_SCALE_CUHK_SYSU, gallery_sizes=[50, 100])
    cache = tempfile.mkdtemp(prefix="dcinet_bench_cache_")
    os.environ["DCINET_D2_CACHE"] = cache
    try:
        first, train, test = load_both(args.root)
        later = min(load_both(args.root)[0] for _ in range(args.repeats))
    finally:
        shutil.rmtree(cache)
    n_queries = sum(len(d.get("queries", [])) for d in test)
    print(
        f"images: {len(train)} train + {len(test)} test, "
        f"identities: {num_train_identities(args.root)} train + {n_queries} queries"
    )
    print(f"first load (parse): {first:6.2f} s   (target < 60 s)")
    print(f"later load (cache): {later:6.2f} s   (target < 5 s)")
    print(f"ratio first / later: {first / later:.1f}x")


if __name__ == "__main__":
    main()
