"""What a gallery is made of: image files, folders, globs and videos, as units ``(path, frame)``.

A *unit* is one picture to search: ``(image path, -1)`` for a still image, ``(video path, k)`` for
frame ``k`` of a video. Videos are sampled at ``fps`` frames per second (every
``round(video fps / fps)``-th frame; all frames when ``fps`` is None or not below the video's).
"""

from __future__ import annotations

import glob
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Source",
    "expand_sources",
    "read_image_bgr",
    "iter_units",
    "count_units",
]
logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class Source:
    path: str  # absolute
    kind: str  # "image" or "video"


def _kind(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def expand_sources(paths: Sequence[str]) -> list[Source]:
    """Image and video files named by ``paths`` (files, folders searched recursively, globs), each
    once, sorted by path within each argument.

    Raises:
        FileNotFoundError: an argument matches no file.
        ValueError: a file argument is neither an image nor a video (by its extension).
    """
    sources: dict[str, Source] = {}
    for arg in paths:
        if os.path.isdir(arg):
            found = sorted(os.path.join(d, f) for d, _, files in os.walk(arg) for f in files)
            found = [f for f in found if _kind(f)]
        elif os.path.isfile(arg):
            if _kind(arg) is None:
                raise ValueError(
                    f"'{arg}' is neither an image ({', '.join(IMAGE_EXTENSIONS)}) nor "
                    f"a video ({', '.join(VIDEO_EXTENSIONS)})"
                )
            found = [arg]
        else:
            found = sorted(
                f for f in glob.glob(arg, recursive=True) if os.path.isfile(f) and _kind(f)
            )
        if not found:
            raise FileNotFoundError(f"'{arg}' matches no image or video file")
        for f in found:
            path = os.path.abspath(f)
            sources.setdefault(path, Source(path, _kind(path)))
    return list(sources.values())


def read_image_bgr(path: str) -> np.ndarray:
    """An image file as ``[H, W, 3]`` uint8 BGR (EXIF orientation applied, as Detectron2 reads)."""
    from detectron2.data.detection_utils import read_image

    try:
        return read_image(path, format="BGR")
    except Exception as e:
        raise OSError(f"cannot read image '{path}' ({type(e).__name__}: {e})") from None


def _video_step(video_fps: float, fps: float | None) -> int:
    """Every how many frames to take one; 1 when the video's rate is unknown (0 or NaN)."""
    if not fps or not math.isfinite(video_fps) or video_fps <= 0 or fps >= video_fps:
        return 1
    return max(1, int(round(video_fps / fps)))


def iter_units(
    sources: Iterable[Source],
    fps: float | None = None,
    skip: set[tuple[str, int]] | frozenset = frozenset(),
    unreadable: list[str] | None = None,
) -> Iterator[tuple[tuple[str, int], np.ndarray]]:
    """``((path, frame), image BGR)`` for every unit of ``sources`` not in ``skip``.

    A file that cannot be read (an image that does not decode, a video that does not open) is
    left out with a warning naming it, and appended to ``unreadable`` when given, so that one bad
    file does not stop an index of thousands. A video whose decoding stops before the frame count
    of its header is warned about with the frame reached.
    """
    for source in sources:
        if source.kind == "image":
            key = (source.path, -1)
            if key not in skip:
                try:
                    image = read_image_bgr(source.path)
                except OSError as e:
                    _unreadable(source.path, str(e), unreadable)
                    continue
                yield key, image
            continue
        import cv2

        capture = cv2.VideoCapture(source.path)
        if not capture.isOpened():
            _unreadable(source.path, "cannot open the video", unreadable)
            continue
        try:
            step = _video_step(capture.get(cv2.CAP_PROP_FPS), fps)
            expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            frame = 0
            while True:
                if (source.path, frame) in skip or frame % step:
                    if not capture.grab():
                        break
                else:
                    ok, image = capture.read()
                    if not ok:
                        break
                    yield (source.path, frame), image
                frame += 1
            if 0 < frame < expected - 1:  # headers often count one frame more than there is
                logger.warning(
                    "video '%s': decoding stopped at frame %d of the %d its header counts",
                    source.path,
                    frame,
                    expected,
                )
        finally:
            capture.release()


def _unreadable(path: str, reason: str, unreadable: list[str] | None) -> None:
    logger.warning("Skipping '%s': %s", path, reason)
    if unreadable is not None:
        unreadable.append(path)


def count_units(source: Source, fps: float | None = None) -> int:
    """Number of units of ``source`` (for progress bars; from the video header, may be
    approximate)."""
    if source.kind == "image":
        return 1
    import cv2

    capture = cv2.VideoCapture(source.path)
    try:
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        step = _video_step(capture.get(cv2.CAP_PROP_FPS), fps)
    finally:
        capture.release()
    return (max(frames, 0) + step - 1) // step
