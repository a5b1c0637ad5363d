"""On-disk cache of parsed dataset dicts.

Parsing CUHK-SYSU's .mat files and reading 18,184 image headers takes seconds to tens of seconds;
the parsed dicts are pickled under ``$DCINET_D2_CACHE`` (default ``~/.cache/dcinet_d2``) and reused
while the source files are unchanged. The key covers the reader version, the dataset root and
(path, size, mtime) of every annotation file and of the image folders, so editing or replacing an
annotation file, or adding/removing images, invalidates it. (Ours: an image replaced in place by
one of another size without touching its folder is not detected; delete the cache then.)
An unwritable cache folder only costs speed: a warning is logged and loading goes on.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import tempfile
from typing import Callable, Iterable, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Bump when the readers' output changes, so stale caches are not reused.
READER_VERSION = 1


def cache_dir() -> str:
    return os.environ.get("DCINET_D2_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "dcinet_d2"))


def _signature(paths: Iterable[str]) -> list:
    sig = []
    for p in paths:
        try:
            st = os.stat(p)
            sig.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
        except FileNotFoundError:
            sig.append([os.path.abspath(p), None, None])
    return sig


def cache_key(kind: str, root: str, split: str, source_paths: Iterable[str]) -> str:
    payload = json.dumps(
        [READER_VERSION, kind, split, os.path.abspath(root), _signature(source_paths)], sort_keys=True
    )
    return hashlib.sha1(payload.encode()).hexdigest()


def cached(kind: str, root: str, split: str, source_paths: Iterable[str], build: Callable[[], T]) -> T:
    """Return ``build()``, from the cache when the sources are unchanged since it was stored."""
    source_paths = list(source_paths)
    key = cache_key(kind, root, split, source_paths)
    path = os.path.join(cache_dir(), f"{kind}_{split}_{key}.pkl")
    if os.path.isfile(path):
        try:
            with open(path, "rb") as f:
                return pickle.load(f)
        except Exception as e:  # a truncated/corrupt cache file is rebuilt, never trusted
            logger.warning("Ignoring unreadable dataset cache %s (%s); rebuilding.", path, e)
    value = build()
    try:
        os.makedirs(cache_dir(), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir(), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError as e:
        logger.warning("Could not write dataset cache %s (%s); loading will not be cached.", path, e)
    return value
