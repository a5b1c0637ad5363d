"""On-disk cache of parsed dataset dicts.

Parsing CUHK-SYSU's .mat files and reading 18,184 image headers takes seconds to tens of seconds;
the parsed dicts are stored as JSON under ``$DCINET_D2_CACHE`` (default ``~/.cache/dcinet_d2``) and
reused while the source files are unchanged. The key covers the reader version, the dataset root and
(path, size, mtime) of every annotation file and of the image folders, so editing or replacing an
annotation file, or adding/removing images, invalidates it. (Ours: an image replaced in place by
one of another size without touching its folder is not detected; delete the cache then.)
An unwritable cache folder only costs speed: a warning is logged and loading goes on.

Safety: a cache file is data, never code. It is JSON (numpy arrays, tuples and ``BoxMode`` values
are written as tagged objects, see ``encode``), and what it holds is checked on load by the
caller's validator (``check_image_dicts``, ``check_train``, ``check_testg``); a file that does not
parse or does not validate is rebuilt with a warning naming it, never trusted. Warnings about the
annotations (e.g. unusable boxes) are logged when the dicts are built, not on cached loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
from detectron2.structures import BoxMode

from ...utils.files import atomic_write

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Bump when the readers' output or the cache format changes, so stale caches are not reused.
# 2: JSON instead of pickle; unusable boxes dropped from the training splits.
READER_VERSION = 2

_TUPLE, _NDARRAY, _BOXMODE = "__tuple__", "__ndarray__", "__boxmode__"
_TAGS = (_TUPLE, _NDARRAY, _BOXMODE)
# numpy dtypes a cached value may hold (read_testg_mat's boxes are int32).
_DTYPES = ("bool", "int32", "int64", "float32", "float64")


class CacheFormatError(ValueError):
    """A cache file that does not hold what the readers store (it is rebuilt)."""


def cache_dir() -> str:
    default = os.path.join(os.path.expanduser("~"), ".cache", "dcinet_d2")
    return os.environ.get("DCINET_D2_CACHE", default)


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
        [READER_VERSION, kind, split, os.path.abspath(root), _signature(source_paths)],
        sort_keys=True,
    )
    return hashlib.sha1(payload.encode()).hexdigest()


# ------------------------------------------------------------------------------------------------
# JSON encoding of the cached values
def encode(value: Any) -> Any:
    """``value`` as JSON-able data: tuples, numpy arrays and ``BoxMode`` become tagged objects.

    Raises:
        TypeError: on a type the readers never store (numpy scalars, sets, objects...).
    """
    if isinstance(value, BoxMode):  # before int: BoxMode is an IntEnum
        return {_BOXMODE: int(value)}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"cannot cache the non-finite float {value}")
        return value
    if isinstance(value, np.ndarray):
        if str(value.dtype) not in _DTYPES:
            raise TypeError(f"cannot cache a numpy array of dtype {value.dtype}")
        return {
            _NDARRAY: {
                "dtype": str(value.dtype),
                "shape": list(value.shape),
                "data": value.reshape(-1).tolist(),
            }
        }
    if isinstance(value, tuple):
        return {_TUPLE: [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        tagged = len(value) == 1 and next(iter(value)) in _TAGS
        if tagged or any(not isinstance(k, str) for k in value):
            raise TypeError(f"cannot cache a dict with keys {list(value)[:5]}")
        return {k: encode(v) for k, v in value.items()}
    raise TypeError(f"cannot cache a value of type {type(value).__name__}")


def _decode_object(obj: dict) -> Any:
    if len(obj) != 1 or next(iter(obj)) not in _TAGS:
        return obj
    tag, payload = next(iter(obj.items()))
    if tag == _TUPLE:
        if not isinstance(payload, list):
            raise CacheFormatError(f"{_TUPLE} holds {type(payload).__name__}, not a list")
        return tuple(payload)
    if tag == _BOXMODE:
        if type(payload) is not int:
            raise CacheFormatError(f"{_BOXMODE} holds {payload!r}, not an int")
        return BoxMode(payload)
    if not isinstance(payload, dict) or set(payload) != {"dtype", "shape", "data"}:
        raise CacheFormatError(f"{_NDARRAY} must hold dtype, shape and data")
    dtype, shape, data = payload["dtype"], payload["shape"], payload["data"]
    if dtype not in _DTYPES:
        raise CacheFormatError(f"{_NDARRAY} of unsupported dtype {dtype!r}")
    if (
        not isinstance(shape, list)
        or not all(type(n) is int and n >= 0 for n in shape)
        or not isinstance(data, list)
        or len(data) != math.prod(shape)
        or not all(type(v) in (int, float, bool) for v in data)
    ):
        raise CacheFormatError(f"{_NDARRAY} with shape {shape!r} holds malformed data")
    return np.array(data, dtype=dtype).reshape(shape)


def decode(text: str | bytes) -> Any:
    """The value :func:`encode` wrote as JSON ``text``; malformed input raises ``ValueError``."""

    def no_constant(name: str) -> Any:
        raise CacheFormatError(f"non-finite number {name}")

    return json.loads(text, object_hook=_decode_object, parse_constant=no_constant)


# ------------------------------------------------------------------------------------------------
# Validators of the cached kinds: raise CacheFormatError naming the first bad entry.
def _need(ok: bool, where: str, what: str, value: Any) -> None:
    if not ok:
        raise CacheFormatError(f"{where}: expected {what}, found {repr(value)[:80]}")


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_box(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) == 4
        and all(type(x) is float and math.isfinite(x) for x in v)
    )


def _is_name(v: Any) -> bool:
    return isinstance(v, str) and v != ""


ANNOTATION_KEYS = {"bbox", "bbox_mode", "category_id", "person_id"}
QUERY_KEYS = {"query_id", "bbox", "person_id"}
TESTG_KEYS = {"query_id", "image_id", "bbox", "gallery"}


def _check_annotation(a: Any, at: str) -> None:
    _need(
        isinstance(a, dict) and set(a) == ANNOTATION_KEYS,
        at,
        f"a dict with {sorted(ANNOTATION_KEYS)}",
        a,
    )
    _need(_is_box(a["bbox"]), f"{at}['bbox']", "4 finite floats", a["bbox"])
    _need(
        a["bbox_mode"] is BoxMode.XYXY_ABS, f"{at}['bbox_mode']", "BoxMode.XYXY_ABS", a["bbox_mode"]
    )
    _need(
        _is_int(a["category_id"]) and a["category_id"] == 0,
        f"{at}['category_id']",
        "0",
        a["category_id"],
    )
    pid = a["person_id"]
    _need(_is_int(pid) and pid >= -1, f"{at}['person_id']", "an int >= -1", pid)


def _check_query(q: Any, at: str) -> None:
    _need(isinstance(q, dict) and set(q) == QUERY_KEYS, at, f"a dict with {sorted(QUERY_KEYS)}", q)
    qid = q["query_id"]
    _need(_is_int(qid) and qid >= 0, f"{at}['query_id']", "an int >= 0", qid)
    _need(_is_box(q["bbox"]), f"{at}['bbox']", "4 finite floats", q["bbox"])
    _need(_is_int(q["person_id"]), f"{at}['person_id']", "an int", q["person_id"])


def check_image_dicts(value: Any, *, camera: bool = False) -> None:
    """A non-empty list of image dicts as the readers build them (``camera``: PRW's camera_id)."""
    _need(
        isinstance(value, list) and len(value) > 0,
        "value",
        "a non-empty list of image dicts",
        value,
    )
    required = {"file_name", "image_id", "height", "width", "annotations"}
    required |= {"camera_id"} if camera else set()
    for i, d in enumerate(value):
        where = f"image dict {i}"
        _need(isinstance(d, dict), where, "a dict", d)
        _need(
            required <= set(d) <= required | {"queries"},
            where,
            f"keys {sorted(required)} (and 'queries')",
            sorted(d),
        )
        for key in ("file_name", "image_id"):
            _need(_is_name(d[key]), f"{where}['{key}']", "a file name", d[key])
        for key in ("height", "width") + (("camera_id",) if camera else ()):
            _need(_is_int(d[key]) and d[key] > 0, f"{where}['{key}']", "a positive int", d[key])
        annotations = d["annotations"]
        _need(isinstance(annotations, list), f"{where}['annotations']", "a list", annotations)
        for j, a in enumerate(annotations):
            _check_annotation(a, f"{where}['annotations'][{j}]")
        if "queries" in d:
            queries = d["queries"]
            _need(
                isinstance(queries, list) and len(queries) > 0,
                f"{where}['queries']",
                "a non-empty list",
                queries,
            )
            for j, q in enumerate(queries):
                _check_query(q, f"{where}['queries'][{j}]")


def check_train(value: Any, *, camera: bool = False) -> None:
    """The training split's ``(image dicts, number of identities C)``."""
    _need(isinstance(value, tuple) and len(value) == 2, "value", "a tuple (image dicts, C)", value)
    check_image_dicts(value[0], camera=camera)
    _need(
        _is_int(value[1]) and value[1] >= 0,
        "value[1]",
        "the number of identities (int >= 0)",
        value[1],
    )


def _is_int32_box(v: Any) -> bool:
    return isinstance(v, np.ndarray) and v.dtype == np.int32 and v.shape == (4,)


def check_testg(value: Any) -> None:
    """``read_testg_mat``'s non-empty query list."""
    _need(isinstance(value, list) and len(value) > 0, "value", "a non-empty list of queries", value)
    for k, q in enumerate(value):
        where = f"query {k}"
        _need(
            isinstance(q, dict) and set(q) == TESTG_KEYS,
            where,
            f"a dict with {sorted(TESTG_KEYS)}",
            q,
        )
        _need(
            _is_int(q["query_id"]) and q["query_id"] == k,
            f"{where}['query_id']",
            str(k),
            q["query_id"],
        )
        _need(_is_name(q["image_id"]), f"{where}['image_id']", "a file name", q["image_id"])
        _need(
            _is_int32_box(q["bbox"]), f"{where}['bbox']", "an int32 array of shape (4,)", q["bbox"]
        )
        _need(isinstance(q["gallery"], list), f"{where}['gallery']", "a list", q["gallery"])
        for j, g in enumerate(q["gallery"]):
            ok = (
                isinstance(g, tuple)
                and len(g) == 2
                and _is_name(g[0])
                and (g[1] is None or _is_int32_box(g[1]))
            )
            _need(ok, f"{where}['gallery'][{j}]", "(image name, int32[4] box or None)", g)


# ------------------------------------------------------------------------------------------------
def cached(
    kind: str,
    root: str,
    split: str,
    source_paths: Iterable[str],
    build: Callable[[], T],
    validate: Callable[[Any], None] | None = None,
) -> T:
    """Return ``build()``, from the cache when the sources are unchanged since it was stored.

    Args:
        validate: raises ``ValueError`` when a loaded value is not what ``build`` returns; such a
            cache file (or one that is not valid JSON of :func:`encode`) is rebuilt with a warning.
    """
    source_paths = list(source_paths)
    key = cache_key(kind, root, split, source_paths)
    path = os.path.join(cache_dir(), f"{kind}_{split}_{key}.json")
    if os.path.isfile(path):
        try:
            with open(path, "rb") as f:
                value = decode(f.read())
            if validate is not None:
                validate(value)
            return value
        except Exception as e:  # unreadable, not JSON, or not what build() returns: never trusted
            logger.warning(
                "Ignoring invalid dataset cache '%s' (%s: %s); rebuilding.",
                path,
                type(e).__name__,
                str(e)[:200],
            )
    value = build()
    try:
        text = json.dumps(encode(value), allow_nan=False, separators=(",", ":"))
        os.makedirs(cache_dir(), exist_ok=True)
        # a cache: not synced to disk (a damaged one is rebuilt when loaded)
        atomic_write(path, lambda f: f.write(text.encode("utf-8")), sync=False)
    except (OSError, TypeError, ValueError) as e:
        logger.warning(
            "Could not write dataset cache '%s' (%s); loading will not be cached.", path, e
        )
    return value
