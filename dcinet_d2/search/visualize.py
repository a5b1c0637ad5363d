"""The picture of a query's results: the query with its box, then the best matches with theirs."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["read_unit_bgr", "draw_query_results"]

# Ours: every tile is scaled to this height; at most this many tiles per row.
TILE_HEIGHT = 240
TILES_PER_ROW = 6


def read_unit_bgr(source: str, frame: int) -> np.ndarray:
    """The picture of a unit: the image file, or frame ``frame`` of a video."""
    from .sources import read_image_bgr

    if frame < 0:
        return read_image_bgr(source)
    import cv2

    capture = cv2.VideoCapture(source)
    try:
        # Decode in order up to the frame, as indexing counted them (seeking with
        # CAP_PROP_POS_FRAMES is approximate for some codecs and variable frame rates).
        ok = capture.isOpened()
        for _ in range(frame):
            if not (ok := capture.grab()):
                break
        image = capture.read()[1] if ok else None
    finally:
        capture.release()
    if image is None:
        raise OSError(f"cannot read frame {frame} of video '{source}'")
    return image


def _tile(image_bgr: np.ndarray, box, colour, caption: str) -> Image.Image:
    im = Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1]))
    scale = TILE_HEIGHT / im.height
    im = im.resize((max(1, round(im.width * scale)), TILE_HEIGHT))
    draw = ImageDraw.Draw(im)
    x1, y1, x2, y2 = (float(v) * scale for v in box)
    draw.rectangle([x1, y1, x2, y2], outline=colour, width=3)
    draw.rectangle([0, 0, im.width, 14], fill=(0, 0, 0))
    draw.text((3, 1), caption, fill=(255, 255, 255))
    return im


def draw_query_results(query_bgr: np.ndarray, query_box, matches: list[dict], path: str) -> None:
    """Write a JPEG grid: the query (blue box) then each match (green box, similarity, source)."""
    import os

    tiles = [_tile(query_bgr, query_box, (40, 90, 255), "query")]
    for rank, m in enumerate(matches, start=1):
        frame = f" #{m['frame']}" if m["frame"] >= 0 else ""
        caption = f"{rank}. {m['similarity']:.2f} {os.path.basename(m['source'])}{frame}"
        try:
            picture = read_unit_bgr(m["source"], m["frame"])
        except OSError:  # moved or deleted since indexing: a grey tile with the caption
            picture = np.full((TILE_HEIGHT, TILE_HEIGHT // 2, 3), 128, dtype=np.uint8)
            caption += " (unreadable)"
        tiles.append(_tile(picture, m["box"], (40, 200, 60), caption))
    rows = [tiles[i : i + TILES_PER_ROW] for i in range(0, len(tiles), TILES_PER_ROW)]
    width = max(sum(t.width for t in row) + 4 * (len(row) - 1) for row in rows)
    canvas = Image.new("RGB", (width, len(rows) * (TILE_HEIGHT + 4)), (255, 255, 255))
    for r, row in enumerate(rows):
        x = 0
        for t in row:
            canvas.paste(t, (x, r * (TILE_HEIGHT + 4)))
            x += t.width + 4
    canvas.save(path, quality=90)
