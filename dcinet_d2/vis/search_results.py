"""Top-k gallery matches of a query, and a picture of them (query box, matched boxes, similarity,
correct matches marked), from the predictions format of :mod:`dcinet_d2.evaluation.predictions`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..evaluation.boxes import elementwise_iou
from ..evaluation.galleries import SearchQuery
from ..evaluation.protocol import small_box_iou_threshold

__all__ = ["Match", "top_matches", "draw_search_results"]


@dataclass(frozen=True)
class Match:
    image_id: str
    box: np.ndarray  # float [4] x1, y1, x2, y2
    similarity: float
    correct: bool  # the protocol's true positive for this query


def top_matches(
    query: SearchQuery,
    query_embed: np.ndarray,
    gallery: Mapping[str, Mapping[str, np.ndarray]],
    all_image_ids: Sequence[str],
    *,
    det_thresh: float = 0.5,
    k: int = 5,
) -> list[Match]:
    """The ``k`` gallery detections most similar to the query, with the protocol's correctness.

    A detection is correct when it is, in an image holding the target, the most similar detection
    with IoU >= min(0.5, w*h / ((w+10)(h+10))) to the target box (DESIGN.md section 4).
    """
    image_ids = (
        query.gallery
        if query.gallery is not None
        else [i for i in all_image_ids if i != query.image_id]
    )
    candidates = []
    for image_id in image_ids:
        pred = gallery[image_id]
        keep = np.asarray(pred["scores"]) >= det_thresh
        if not np.any(keep):
            continue
        boxes = np.asarray(pred["boxes"], dtype=np.float64)[keep]
        sims = np.asarray(pred["embeds"], dtype=np.float64)[keep] @ np.asarray(
            query_embed, dtype=np.float64
        )
        correct = np.zeros(len(sims), dtype=bool)
        target = query.targets.get(image_id)
        if target is not None:
            target_boxes = np.broadcast_to(np.asarray(target, dtype=np.float64), boxes.shape)
            ok = elementwise_iou(target_boxes, boxes) >= small_box_iou_threshold(target[None])[0]
            order = np.argsort(-sims, kind="stable")
            first = [i for i in order if ok[i]]
            if first:
                correct[first[0]] = True
        candidates += [(float(s), image_id, b, bool(c)) for s, b, c in zip(sims, boxes, correct)]
    candidates.sort(key=lambda c: -c[0])
    return [Match(image_id, box, sim, corr) for sim, image_id, box, corr in candidates[:k]]


def _tile_with_box(
    path: str, box: np.ndarray, color, size: tuple[int, int], label: str
) -> Image.Image:
    """The image scaled to fit ``size`` with ``box`` drawn on it (after scaling, so lines stay
    crisp) and ``label`` above it."""
    with Image.open(path) as im:
        im = im.convert("RGB")
    scale = min(size[0] / im.width, size[1] / im.height)
    im = im.resize(
        (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR
    )
    x0 = (size[0] - im.width) // 2
    tile = Image.new("RGB", (size[0], size[1] + 14), (255, 255, 255))
    tile.paste(im, (x0, 14))
    draw = ImageDraw.Draw(tile)
    x1, y1, x2, y2 = (float(v) * scale for v in box)
    draw.rectangle([x0 + x1, 14 + y1, x0 + x2, 14 + y2], outline=color, width=2)
    draw.text((2, 1), label, fill=color)
    return tile


def draw_search_results(
    rows: Sequence[tuple[str, np.ndarray, Sequence[tuple[str, Match]]]],
    out_path: str,
    tile_size: tuple[int, int] = (192, 144),
) -> str:
    """One row per query: the query image with its box (blue), then its matches, each with its box
    and similarity, green when correct, red otherwise. ``rows``: (query image path, query box,
    [(match image path, Match)]). Writes a PNG to ``out_path`` and returns it."""
    k = max((len(m) for _, _, m in rows), default=0)
    tw, th = tile_size[0], tile_size[1] + 14
    canvas = Image.new("RGB", ((k + 1) * (tw + 6) + 6, len(rows) * (th + 6) + 6), (235, 235, 235))
    for r, (qpath, qbox, matches) in enumerate(rows):
        y = 6 + r * (th + 6)
        canvas.paste(_tile_with_box(qpath, qbox, (30, 80, 230), tile_size, "query"), (6, y))
        for c, (mpath, m) in enumerate(matches):
            color = (20, 160, 40) if m.correct else (210, 30, 30)
            label = f"#{c + 1} sim {m.similarity:.2f}" + (" ok" if m.correct else "")
            canvas.paste(
                _tile_with_box(mpath, m.box, color, tile_size, label), (6 + (c + 1) * (tw + 6), y)
            )
    canvas.save(out_path)
    return out_path
