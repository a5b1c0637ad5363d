"""Fast checks that image files can be decoded, before training starts.

Reading every pixel of a dataset takes minutes; these checks read the file header (format and
size, through Pillow, as the readers do) and the last bytes of the file: a JPEG must hold its end
marker (``FF D9``) and a PNG its ``IEND`` chunk near the end, which is what a file truncated by
an interrupted copy or download loses. A file that passes can still be damaged inside; the
dataset mapper then names it when it fails to decode (``PersonSearchDatasetMapper``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from PIL import Image

__all__ = ["image_problem", "find_unreadable_images", "describe_unreadable"]

# Ours: how far from the end of a file the end marker may sit (cameras and editors append
# padding or metadata after it).
_TAIL_BYTES = 4096


def image_problem(path: str) -> str:
    """Why ``path`` cannot be decoded ("" when the fast checks find nothing)."""
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.size  # noqa: B018  (parsed from the header)
    except FileNotFoundError:
        return "no such file"
    except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
        return f"not a readable image ({type(e).__name__}: {e})"
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(max(size - _TAIL_BYTES, 0))
            tail = f.read()
    except OSError as e:
        return f"cannot be read ({e})"
    truncated = (
        fmt == "JPEG" and b"\xff\xd9" not in tail and "truncated JPEG (no end-of-image marker)"
    ) or (fmt == "PNG" and b"IEND" not in tail and "truncated PNG (no IEND chunk)")
    if truncated and not _decodes(path):  # a long trailer (a phone's motion photo) still decodes
        return truncated
    return ""


def _decodes(path: str) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:
        return False


def find_unreadable_images(file_names: Iterable[str]) -> list[tuple[str, str]]:
    """``(file, reason)`` for every file of ``file_names`` that fails :func:`image_problem`."""
    problems = []
    for path in dict.fromkeys(file_names):  # each file once, in order
        reason = image_problem(path)
        if reason:
            problems.append((path, reason))
    return problems


def describe_unreadable(problems: list[tuple[str, str]], limit: int = 10) -> str:
    """One line per file (at most ``limit``, then a count of the rest)."""
    lines = [f"  {path}: {reason}" for path, reason in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)
