"""Shared pieces of the CUHK-SYSU and PRW readers: errors that name the file and entry, checked
access to MATLAB files, image sizes from file headers, and the protocol's box conversions."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "DatasetNotFoundError",
    "DatasetFormatError",
    "require_file",
    "load_mat",
    "mat_str",
    "mat_struct_records",
    "image_size",
    "box_problem",
    "BoxReport",
    "cuhk_xywh_to_xyxy",
    "prw_annotation_xywh_to_xyxy",
    "prw_query_xywh_to_xyxy",
]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is missing. The message names the path, what it should hold and where to get
    it."""


class DatasetFormatError(ValueError):
    """A dataset file exists but does not hold what the official release holds (names file and
    entry)."""


def require_file(path: str, what: str, how_to_get: str) -> str:
    """Return ``path`` if it is a file, else raise :class:`DatasetNotFoundError` explaining it."""
    if not os.path.isfile(path):
        raise DatasetNotFoundError(
            f"Expected {what} at '{path}', but there is no such file.\n{how_to_get}"
        )
    return path


def load_mat(path: str, keys: Iterable[str], what: str, how_to_get: str) -> tuple[str, Any]:
    """Load a MATLAB (v5) file and return ``(key, value)`` for the first of ``keys`` it contains.

    Raises:
        DatasetNotFoundError: the file does not exist.
        DatasetFormatError: it cannot be parsed, or holds none of ``keys``.
    """
    from scipy.io import loadmat  # local: scipy import costs ~0.3 s, only readers need it

    keys = list(keys)
    require_file(path, what, how_to_get)
    try:
        mat = loadmat(path)
    except Exception as e:  # scipy raises several types (ValueError, MatReadError, TypeError...)
        raise DatasetFormatError(f"'{path}' ({what}) is not a readable MATLAB file: {e}") from e
    for key in keys:
        if key in mat:
            return key, mat[key]
    found = sorted(k for k in mat if not k.startswith("__"))
    raise DatasetFormatError(
        f"'{path}' ({what}) holds no variable named {' or '.join(repr(k) for k in keys)}; "
        f"it holds {found}."
    )


def mat_str(value: Any, path: str, entry: str) -> str:
    """A MATLAB char array (as loaded by scipy: ``array(['s1.jpg'])``, possibly nested) as
    ``str``."""
    arr = np.asarray(value)
    while arr.dtype == object and arr.size == 1:
        arr = np.asarray(arr.reshape(-1)[0])
    if arr.dtype.kind != "U" or arr.size != 1:
        raise DatasetFormatError(f"'{path}', {entry}: expected a string, found {arr!r}")
    return str(arr.reshape(-1)[0])


def mat_struct_records(value: Any, fields: Iterable[str], path: str, entry: str) -> np.ndarray:
    """Flatten a MATLAB struct array to 1-d, checking that it has ``fields``."""
    arr = np.asarray(value)
    names = arr.dtype.names or ()
    missing = [f for f in fields if f not in names]
    if missing:
        raise DatasetFormatError(
            f"'{path}', {entry}: expected a struct with fields {list(fields)}, "
            f"found {list(names) if names else arr.dtype} (missing {missing})"
        )
    return arr.reshape(-1)


def mat_box(value: Any, path: str, entry: str) -> np.ndarray | None:
    """A 1x4 ``[x, y, w, h]`` MATLAB vector as float64[4]; ``None`` for an empty array."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        return None
    if arr.size != 4:
        raise DatasetFormatError(
            f"'{path}', {entry}: expected a box [x, y, w, h], found {arr.tolist()}"
        )
    return arr.reshape(4)


def image_size(path: str) -> tuple[int, int]:
    """``(height, width)`` read from the image file header (the pixels are not decoded)."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except FileNotFoundError:
        raise DatasetNotFoundError(
            f"Expected the image '{path}' (listed in the annotations), not found."
        )
    except Exception as e:
        raise DatasetFormatError(f"'{path}' is not a readable image: {e}") from e
    return height, width


# ------------------------------------------------------------------------------------------------
# Box conversions, exactly as the community's reference code does them (DESIGN.md section 4).
def cuhk_xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """CUHK-SYSU: cast ``[x, y, w, h]`` to int32 first, then ``x2 = x + w``; negatives clipped to 0.

    Args:
        xywh: float[..., 4].
    Returns:
        int32[..., 4] ``[x1, y1, x2, y2]``.
    """
    box = np.asarray(xywh).astype(np.int32)
    box[..., 2:] += box[..., :2]
    return np.clip(box, 0, None)


def prw_annotation_xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """PRW frame annotations: clip ``[x, y, w, h]`` at 0, ``x2 = x + w`` in floats, then cast to
    int32."""
    box = np.clip(np.asarray(xywh, dtype=np.float64), 0, None)
    box[..., 2:] += box[..., :2]
    return box.astype(np.int32)


def prw_query_xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """PRW queries (``query_info.txt``): ``x2 = x + w`` in floats, cast to int32, then clip at 0."""
    x, y, w, h = (float(v) for v in np.asarray(xywh).reshape(4))
    return np.clip(np.array([x, y, x + w, y + h]).astype(np.int32), 0, None)


# ------------------------------------------------------------------------------------------------
# Boxes that cannot be a person box, whatever the conversion made of them.
def box_problem(
    xyxy: Sequence[float], height: float | None = None, width: float | None = None
) -> str | None:
    """Why a converted ``[x1, y1, x2, y2]`` box is unusable, or ``None`` if it is a person box.

    Unusable: degenerate (``x2 <= x1`` or ``y2 <= y1``), or sharing no pixel with the
    ``width`` x ``height`` image (Detectron2 would clip either to an empty box). Without the image
    size only degeneracy is checked.
    """
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    if x2 <= x1 or y2 <= y1:
        return f"is degenerate (width {x2 - x1:g}, height {y2 - y1:g})"
    if height is not None and width is not None:
        if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
            return f"lies outside the {width:g}x{height:g} (width x height) image"
    return None


def check_query_box(xyxy: np.ndarray, where: str, box_note: str, suffix: str = "") -> None:
    """Raise :class:`DatasetFormatError`, ``"<where>: query box [..] (<box_note>) <problem>"`` and
    ``suffix``, when a query's converted box is unusable (:func:`box_problem`): the protocol
    cannot search for a person without a box, so the whole file is refused."""
    problem = box_problem(xyxy)
    if problem is not None:
        raise DatasetFormatError(
            f"{where}: query box {xyxy.tolist()} ({box_note}) {problem}{suffix}"
        )


class BoxReport:
    """The unusable boxes of one annotation file (or one split's files): ONE warning for all.

    Args:
        source: what the warning names first (a file, or a folder of per-frame files).
        split: ``"train"`` (the boxes are dropped) or ``"test"`` (kept: the protocol counts them).
        shown: how many boxes the warning lists; the rest are counted.
    """

    def __init__(self, source: str, split: str, shown: int = 10):
        self.source = source
        self.split = split
        self.shown = shown
        self.entries: list[str] = []
        self.files: set[str] = set()

    def add(self, entry: str, xyxy: Sequence[float], problem: str, file: str | None = None) -> None:
        self.entries.append(f"{entry}: {[int(v) for v in xyxy]} (xyxy) {problem}")
        if file is not None:
            self.files.add(file)

    def warn(self, logger: logging.Logger) -> None:
        """Log the warning (nothing when no box was added)."""
        if not self.entries:
            return
        n = len(self.entries)
        boxes = "1 box" if n == 1 else f"{n} boxes"
        nf = len(self.files)
        files = f" in {nf} annotation file{'' if nf == 1 else 's'}" if nf else ""
        fate = (
            "dropped from the training split"
            if self.split == "train"
            else "kept in the test split, as the evaluation protocol counts them"
        )
        more = f"; and {n - self.shown} more" if n > self.shown else ""
        verb = "is" if n == 1 else "are"
        logger.warning(
            "'%s': %s%s %s degenerate or outside their image, %s: %s%s",
            self.source,
            boxes,
            files,
            verb,
            fate,
            "; ".join(self.entries[: self.shown]),
            more,
        )
