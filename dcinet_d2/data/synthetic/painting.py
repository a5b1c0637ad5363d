"""Person and scene painting of the synthetic datasets (PIL + numpy).

:func:`render_person` draws an :class:`~.looks.Appearance` in a :class:`~.looks.Pose` as a
:class:`PersonSprite`; :func:`_render_scene` places people on a background
(:func:`_random_background_style`, :func:`_render_background`) with perspective, an occluder and
lighting (:func:`_random_lighting`); :func:`_run_job` renders one :class:`_ImageJob` to a JPEG.
Boxes are *amodal*: they bound the whole rendered silhouette of a person, also where another
person or an object occludes it (what an annotator marks for a partly hidden person).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .jobs import _Job
from .looks import Appearance, Pose, _clothing_color, _hsv, random_pose

__all__ = ["PersonSprite", "render_person"]

# =============================================================================================
# Person rendering
# =============================================================================================
_SS = 2  # ours: people are drawn at 2x and box-filtered down (anti-aliasing, half-pixel boxes)
_SKIN, _HAIR, _UPPER, _LOWER, _SHOES, _BAG, _HAT, _UPPER2 = range(1, 9)


@dataclass
class PersonSprite:
    """A rendered person on a transparent canvas.

    Attributes:
        rgb: (h, w, 3) float32 colours in [0, 1] (meaningful where ``alpha`` > 0).
        alpha: (h, w) float32 coverage in [0, 1].
        box: (x1, y1, x2, y2) tight box of the silhouette in canvas pixels, multiples of 0.5
            (the person is drawn at 2x and box-filtered down).
    """

    rgb: np.ndarray
    alpha: np.ndarray
    box: tuple[float, float, float, float]


def render_person(
    app: Appearance, pose: Pose, height: float, rng: np.random.Generator
) -> PersonSprite:
    """Render one person of (about) ``height`` pixels on a transparent canvas.

    The body is drawn as a label map at 2x resolution (head, hair or hat, torso with its pattern,
    sleeves, legs or skirt, shoes, bag), coloured, shaded like a cylinder lit from above, given a
    faint fabric noise, and box-filtered to 1x with premultiplied alpha.

    Args:
        app: the person's appearance.
        pose: this appearance's view and gait.
        height: target height in output pixels (multiplied by ``app.stature``), >= 8.
        rng: source of randomness (fabric noise only).

    Returns:
        The sprite; ``sprite.box`` bounds exactly the pixels with non-zero alpha (up to the
        half-pixel precision of the 2x drawing).
    """
    if height < 8:
        raise ValueError(f"render_person: height must be >= 8 pixels, got {height}")
    H = float(height) * app.stature * _SS
    pad = int(math.ceil(0.1 * H)) + 4
    cw = int(math.ceil(0.9 * H)) + 2 * pad
    ch = int(math.ceil(H)) + 2 * pad
    cx, top = cw / 2.0, float(pad)
    lbl = Image.new("L", (cw, ch), 0)
    d = ImageDraw.Draw(lbl)
    b = app.build
    side = pose.facing in ("left", "right")
    dirn = -1.0 if pose.facing == "left" else 1.0

    def P(xf: float, yf: float) -> tuple[float, float]:
        return (cx + (xf + pose.lean * (0.52 - yf)) * H, top + yf * H)

    def rect(x0: float, y0: float, x1: float, y1: float, label: int) -> None:
        (ax, ay), (bx, by) = P(x0, y0), P(x1, y1)
        d.rectangle([min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)], fill=label)

    def ellipse(x0: float, y0: float, x1: float, y1: float, label: int) -> None:
        (ax, ay), (bx, by) = P(x0, y0), P(x1, y1)
        d.ellipse([min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)], fill=label)

    def limb(points: Sequence[tuple[float, float]], width: float, label: int) -> None:
        w = max(1, int(round(width * H)))
        pts = [P(x, y) for x, y in points]
        d.line(pts, fill=label, width=w, joint="curve")
        r = w / 2.0
        for x, y in (pts[0], pts[-1]):
            d.ellipse([x - r, y - r, x + r, y + r], fill=label)

    sw, hw = (0.072 * b, 0.066 * b) if side else (0.115 * b, 0.092 * b)
    arm_w, leg_w = 0.046 * b, 0.062 * b

    def arm(sx: float, ex: float, hx: float) -> None:
        pts = [(sx, 0.185), (ex, 0.345), (hx, 0.495)]
        if app.long_sleeves:
            limb(pts, arm_w, _UPPER)
            ellipse(hx - 0.022, 0.48, hx + 0.022, 0.525, _SKIN)
        else:
            limb(pts, arm_w, _SKIN)
            limb(pts[:2], arm_w * 1.12, _UPPER)

    # --- behind the body: back arm (side view), side-view backpack, long hair
    if side:
        arm(0.0, -dirn * pose.arm_swing * 0.5, -dirn * (0.02 + abs(pose.arm_swing)))
        if app.bag == "backpack":
            rect(-dirn * 0.04, 0.19, -dirn * (sw + 0.07), 0.43, _BAG)
    if app.hair_style == "long" and pose.facing != "back":
        rect(-0.06, 0.06, 0.06, 0.27, _HAIR)
    # --- legs and shoes
    if side:
        s = 0.03 + pose.stride * 1.4
        legs = [
            [(0.0, 0.52), (dirn * (s * 0.5 + 0.02), 0.74), (dirn * s, 0.95)],
            [(0.0, 0.52), (-dirn * s * 0.4, 0.74), (-dirn * s, 0.95)],
        ]
    else:
        legs = [
            [
                (sg * 0.045 * b, 0.52),
                (sg * (0.045 * b + pose.stride * 0.5), 0.74),
                (sg * (0.045 * b + pose.stride), 0.95),
            ]
            for sg in (-1.0, 1.0)
        ]
    for leg in legs:
        if app.lower_style == "trousers":
            limb(leg, leg_w, _LOWER)
        else:
            limb(leg, leg_w * 0.85, _SKIN)
            if app.lower_style == "shorts":
                knee = leg[1]
                mid = (leg[0][0] + 0.7 * (knee[0] - leg[0][0]), 0.52 + 0.7 * (knee[1] - 0.52))
                limb([leg[0], mid], leg_w * 1.1, _LOWER)
        ax = leg[2][0]
        fwd = dirn * 0.02 if side else 0.0
        half = 0.045 if side else 0.033
        ellipse(ax + fwd - half, 0.935, ax + fwd + half, 1.0, _SHOES)
    # --- torso, skirt, shoulders
    d.polygon([P(-sw, 0.16), P(sw, 0.16), P(hw, 0.535), P(-hw, 0.535)], fill=_UPPER)
    if not side:
        for sg in (-1.0, 1.0):
            ellipse(sg * sw - 0.03, 0.155, sg * sw + 0.03, 0.215, _UPPER)
    if app.lower_style == "skirt":
        d.polygon([P(-hw, 0.5), P(hw, 0.5), P(hw + 0.045, 0.7), P(-hw - 0.045, 0.7)], fill=_LOWER)
    elif app.lower_style in ("trousers", "shorts"):
        rect(-hw, 0.5, hw, 0.56, _LOWER)  # hips / waistband region
    # --- arms in front
    if side:
        arm(0.0, dirn * pose.arm_swing * 0.5, dirn * (0.02 + abs(pose.arm_swing)))
    else:
        for sg in (-1.0, 1.0):
            arm(sg * (sw - 0.012), sg * (sw + 0.012), sg * (sw + 0.016) + pose.arm_swing)
    # --- neck, head, hair, hat
    rect(-0.022, 0.12, 0.022, 0.17, _SKIN)
    hx = dirn * 0.006 if side else 0.0
    back = pose.facing == "back"
    head_label = _HAIR if (back and app.hair_style in ("short", "long")) else _SKIN
    ellipse(hx - 0.056, 0.0, hx + 0.056, 0.14, head_label)
    if app.hair_style in ("short", "long") and not back:
        (ax, ay), (bx, by) = P(hx - 0.06, -0.008), P(hx + 0.06, 0.1)
        d.chord([ax, ay, bx, by], 180, 360, fill=_HAIR)
        if side:  # hair covers the back of the head
            ellipse(hx - dirn * 0.057 - 0.03, 0.0, hx - dirn * 0.057 + 0.03, 0.11, _HAIR)
    if app.hair_style == "long" and back:
        rect(-0.062, 0.04, 0.062, 0.29, _HAIR)
    if app.hair_style == "hat":
        rect(hx - 0.06, -0.01, hx + 0.06, 0.045, _HAT)
        if side:
            limb([(hx, 0.045), (hx + dirn * 0.1, 0.045)], 0.016, _HAT)
        else:
            limb([(hx - 0.08, 0.045), (hx + 0.08, 0.045)], 0.016, _HAT)
    # --- bags and front details
    if app.bag == "backpack":
        if back:
            rect(-0.085, 0.19, 0.085, 0.43, _BAG)
        elif not side:
            for sg in (-1.0, 1.0):
                limb([(sg * 0.07, 0.17), (sg * 0.075, 0.37)], 0.02, _BAG)
    elif app.bag == "shoulder":
        if side:
            rect(-0.04, 0.41, 0.06, 0.54, _BAG)
            limb([(0.0, 0.17), (0.01, 0.42)], 0.015, _BAG)
        else:
            limb([(-sw * 0.8, 0.17), (hw * 0.9, 0.45)], 0.016, _BAG)
            rect(hw - 0.01, 0.42, hw + 0.075, 0.55, _BAG)
    elif app.bag == "handbag":
        hand = (dirn * (0.02 + abs(pose.arm_swing))) if side else (sw + 0.016 + pose.arm_swing)
        rect(hand - 0.035, 0.505, hand + 0.035, 0.61, _BAG)
        limb([(hand, 0.49), (hand, 0.51)], 0.012, _BAG)
    if app.upper_pattern == "logo" and pose.facing == "front":
        rect(-0.04, 0.24, 0.04, 0.31, _UPPER2)

    labels = np.asarray(lbl)
    ys, xs = np.nonzero(labels)
    r0, r1, c0, c1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    # crop to the silhouette, aligned to even 2x coordinates so that 2x2 blocks map to pixels
    R0, C0 = r0 - r0 % _SS, c0 - c0 % _SS
    R1, C1 = r1 + 1 + (-(r1 + 1)) % _SS, c1 + 1 + (-(c1 + 1)) % _SS
    labels = labels[R0:R1, C0:C1]
    yy = (np.arange(R0, R1, dtype=np.float32)[:, None] - top) / H  # fraction of body height
    xx = (np.arange(C0, C1, dtype=np.float32)[None, :] - cx) / H

    upper = labels == _UPPER
    if app.upper_pattern == "hstripes":
        odd_band = (np.floor(yy / 0.045).astype(np.int64) % 2) == 1
        labels = np.where(upper & odd_band, _UPPER2, labels)
    elif app.upper_pattern == "two_tone":
        labels = np.where(upper & (yy < 0.30), _UPPER2, labels)

    lut = np.zeros((9, 3), dtype=np.float32)
    for k, c in enumerate(
        (
            app.skin,
            app.hair_color,
            app.upper_color,
            app.lower_color,
            app.shoe_color,
            app.bag_color,
            app.hat_color,
            app.upper_color2,
        ),
        1,
    ):
        lut[k] = np.asarray(c, dtype=np.float32) * pose.tint[k - 1]
    rgb = lut[labels]
    shade = 1.0 - 0.22 * np.clip(np.abs(xx) / (0.14 * b), 0.0, 1.0) ** 2
    shade = shade * (1.06 - 0.12 * np.clip(yy, 0.0, 1.0))
    noise = rng.normal(1.0, 0.025, size=labels.shape).astype(np.float32)
    rgb = np.clip(rgb * (shade * noise)[..., None], 0.0, 1.0)
    alpha = (labels > 0).astype(np.float32)

    h2, w2 = labels.shape
    a_small = alpha.reshape(h2 // _SS, _SS, w2 // _SS, _SS).mean(axis=(1, 3))
    prem = (rgb * alpha[..., None]).reshape(h2 // _SS, _SS, w2 // _SS, _SS, 3).mean(axis=(1, 3))
    rgb_small = np.where(a_small[..., None] > 0, prem / np.maximum(a_small, 1e-6)[..., None], 0.0)
    box = ((c0 - C0) / _SS, (r0 - R0) / _SS, (c1 + 1 - C0) / _SS, (r1 + 1 - R0) / _SS)
    return PersonSprite(rgb=rgb_small.astype(np.float32), alpha=a_small.astype(np.float32), box=box)


# =============================================================================================
# Backgrounds and scenes
# =============================================================================================
def _random_background_style(rng: np.random.Generator) -> dict[str, Any]:
    """Parameters of a textured street/plaza/indoor background (colours, patterns, clutter)."""
    n_clutter = int(rng.integers(1, 5))
    return {
        "horizon": float(rng.uniform(0.28, 0.5)),
        "wall": _hsv(rng.random(), rng.uniform(0.05, 0.45), rng.uniform(0.35, 0.85)),
        "wall_pattern": str(rng.choice(["bricks", "windows", "sky", "panels"])),
        "ground": _hsv(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.75)),
        "ground_pattern": str(rng.choice(["tiles", "road", "plain", "grass"])),
        "period": float(rng.uniform(0.05, 0.12)),
        "clutter": [
            {
                "kind": str(rng.choice(["tree", "pole", "sign", "bench", "box"])),
                "x": float(rng.uniform(0.0, 1.0)),
                "size": float(rng.uniform(0.15, 0.45)),
                "color": _clothing_color(rng),
            }
            for _ in range(n_clutter)
        ],
        "lowfreq": int(rng.integers(0, 2**31 - 1)),
    }


def _render_background(width: int, height: int, style: dict[str, Any]) -> np.ndarray:
    """Render a background (h, w, 3) float32 in [0, 1] from a style (deterministic)."""
    W, Hh = width, height
    img = Image.new("RGB", (W, Hh))
    d = ImageDraw.Draw(img)
    hz = int(round(style["horizon"] * Hh))
    wall = tuple(int(255 * c) for c in style["wall"])
    ground = tuple(int(255 * c) for c in style["ground"])
    p = max(3, int(round(style["period"] * Hh)))
    darker = lambda c, f: tuple(int(v * f) for v in c)  # noqa: E731
    if style["wall_pattern"] == "sky":
        for y in range(hz):
            f = 0.75 + 0.35 * y / max(1, hz)
            d.line([(0, y), (W, y)], fill=tuple(min(255, int(v * f)) for v in wall))
    else:
        d.rectangle([0, 0, W, hz], fill=wall)
        if style["wall_pattern"] == "bricks":
            for i, y in enumerate(range(0, hz, p)):
                d.line([(0, y), (W, y)], fill=darker(wall, 0.7))
                for x in range((i % 2) * p, W, 2 * p):
                    d.line([(x, y), (x, min(hz, y + p))], fill=darker(wall, 0.7))
        elif style["wall_pattern"] == "windows":
            for y in range(p // 2, hz - p, 2 * p):
                for x in range(p // 2, W - p, 2 * p):
                    d.rectangle([x, y, x + p, y + int(p * 1.3)], fill=darker(wall, 0.45))
        else:  # panels
            for x in range(0, W, 3 * p):
                d.line([(x, 0), (x, hz)], fill=darker(wall, 0.8), width=max(1, p // 4))
    d.rectangle([0, hz, W, Hh], fill=ground)
    if style["ground_pattern"] == "tiles":
        for y in range(hz, Hh, p):
            d.line([(0, y), (W, y)], fill=darker(ground, 0.8))
        for x in range(0, W, 2 * p):
            d.line([(x, hz), (x, Hh)], fill=darker(ground, 0.8))
    elif style["ground_pattern"] == "road":
        yc = hz + (Hh - hz) // 2
        for x in range(0, W, 4 * p):
            d.rectangle([x, yc, x + 2 * p, yc + max(1, p // 3)], fill=(230, 230, 220))
    for c in style["clutter"]:
        col = tuple(int(255 * v) for v in c["color"])
        x = int(c["x"] * W)
        s = c["size"] * Hh
        if c["kind"] == "tree":
            d.rectangle([x - s * 0.06, hz - s * 0.5, x + s * 0.06, hz + s * 0.1], fill=(90, 60, 40))
            d.ellipse(
                [x - s * 0.4, hz - s * 1.1, x + s * 0.4, hz - s * 0.35],
                fill=(40, 110 + int(60 * c["size"]), 50),
            )
        elif c["kind"] == "pole":
            d.rectangle(
                [x - max(1, s * 0.03), hz - s * 1.2, x + max(1, s * 0.03), hz + s * 0.2],
                fill=darker(col, 0.6),
            )
        elif c["kind"] == "sign":
            d.rectangle([x - 1, hz - s * 0.6, x + 1, hz + s * 0.1], fill=(80, 80, 80))
            d.rectangle([x - s * 0.2, hz - s * 0.9, x + s * 0.2, hz - s * 0.55], fill=col)
        elif c["kind"] == "bench":
            d.rectangle([x - s * 0.5, hz + s * 0.1, x + s * 0.5, hz + s * 0.25], fill=col)
        else:
            d.rectangle([x - s * 0.25, hz - s * 0.1, x + s * 0.25, hz + s * 0.3], fill=col)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    # smooth low-frequency illumination/dirt variation, reproducible from the style alone
    lrng = np.random.default_rng(style["lowfreq"])
    low = lrng.normal(1.0, 0.08, size=(6, 8)).astype(np.float32)
    low_img = Image.fromarray(low).resize((W, Hh), Image.BILINEAR)  # float32 -> mode "F"
    arr = arr * np.asarray(low_img, dtype=np.float32)[..., None]
    if style["ground_pattern"] == "grass":
        g = lrng.normal(0.0, 0.06, size=(Hh - hz, W)).astype(np.float32)
        arr[hz:, :, 1] += g
    return np.clip(arr, 0.0, 1.0)


@dataclass
class _Placed:
    label: int  # caller's label (identity index, or -1)
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels (half-pixel steps)
    visible: float  # fraction of the silhouette visible in the image


def _render_scene(
    width: int,
    height: int,
    background: np.ndarray,
    people: Sequence[tuple[Appearance, int]],
    rng: np.random.Generator,
    *,
    height_range: tuple[float, float],
    horizon: float,
    edge_person: str | None,
    occluder_prob: float,
    lighting: tuple[float, tuple[float, float, float]],
    noise_sigma: float = 0.012,
) -> tuple[np.ndarray, list[_Placed]]:
    """Place, render and composite ``people`` onto ``background``.

    Farther people (feet higher in the image) are drawn first; positions are re-drawn up to 20
    times to keep every labelled person at least half visible (estimated on boxes). With
    probability ``occluder_prob`` an object is drawn in front of one person.

    Args:
        width: image width.
        height: image height.
        background: (height, width, 3) float32 background.
        people: (appearance, label) per person; label >= 0 = labelled (ours: only used to favour
            the visibility of labelled people during placement).
        rng: source of randomness.
        height_range: person heights as fractions of the image height.
        horizon: horizon height as a fraction of the image height (perspective: nearer people
            stand lower and are taller).
        edge_person: None, "left" or "top": put the first person partly outside that border.
        occluder_prob: probability of one occluding object.
        lighting: (brightness, per-channel colour cast) applied to the whole image.
        noise_sigma: std of the pixel noise added at the end.

    Returns:
        (uint8 image (h, w, 3), placements in drawing order).
    """
    min_px = 12.0
    lo = max(min_px, height_range[0] * height)
    hi = max(lo + 1.0, height_range[1] * height)
    sprites = []
    for app, _ in people:
        # at most 95 % of the image height, so that a box never leaves the image at the bottom
        hpx = min(float(rng.uniform(lo, hi)), 0.95 * height / app.stature)
        sprites.append(render_person(app, random_pose(rng), hpx, rng))
    # placement: box top-left corner per sprite (x1, y1) in image coordinates
    best = None
    hz = horizon * height
    for attempt in range(20):
        boxes = []
        for i, sp in enumerate(sprites):
            bw, bh = sp.box[2] - sp.box[0], sp.box[3] - sp.box[1]
            if i == 0 and edge_person == "left":
                x1 = -rng.uniform(0.1, 0.45) * bw
                y1 = rng.uniform(0.0, max(0.0, height - bh))
            elif i == 0 and edge_person == "top":
                x1 = rng.uniform(0.0, max(0.0, width - bw))
                y1 = -rng.uniform(0.08, 0.4) * bh
            else:
                x1 = rng.uniform(0.0, max(0.0, width - bw))
                # perspective: feet between the horizon and the bottom, taller = lower
                t = (bh - lo) / max(1.0, hi - lo)
                foot = hz + (0.25 + 0.75 * t) * (height - hz) + rng.normal(0.0, 0.06) * height
                y1 = min(max(foot - bh, 0.0), max(0.0, height - bh))
            # whole-pixel sprite offsets; keep the box inside the image except at a cut border
            bx0, by0, bx1_, by1_ = sp.box
            if i == 0 and edge_person == "left":
                ox = int(math.floor(x1 - bx0))  # ox + bx0 <= x1 < 0
            else:
                ox = min(
                    max(int(round(x1 - bx0)), int(math.ceil(-bx0))), int(math.floor(width - bx1_))
                )
            if i == 0 and edge_person == "top":
                oy = int(math.floor(y1 - by0))
            else:
                oy = min(
                    max(int(round(y1 - by0)), int(math.ceil(-by0))), int(math.floor(height - by1_))
                )
            boxes.append((ox + bx0, oy + by0, ox + bx1_, oy + by1_))
        order = sorted(range(len(boxes)), key=lambda i: boxes[i][3])
        cover = np.zeros((height, width), dtype=bool)
        vis = [0.0] * len(boxes)
        for i in reversed(order):  # nearest first
            x1, y1, x2, y2 = (
                int(math.floor(boxes[i][0])),
                int(math.floor(boxes[i][1])),
                int(math.ceil(boxes[i][2])),
                int(math.ceil(boxes[i][3])),
            )
            area = max(1, (x2 - x1) * (y2 - y1))
            cx1, cy1, cx2, cy2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
            vis[i] = float((~cover[cy1:cy2, cx1:cx2]).sum()) / area
            cover[cy1:cy2, cx1:cx2] = True
        score = min([v for v, (_, lab) in zip(vis, people) if lab >= 0] or [1.0])
        if best is None or score > best[0]:
            best = (score, boxes, order)
        if score >= 0.5:
            break
    assert best is not None
    _, boxes, order = best

    canvas = background.copy()
    owner = np.full((height, width), -1, dtype=np.int32)
    placed: list[_Placed | None] = [None] * len(sprites)
    own_area = [0] * len(sprites)
    for i in order:
        sp = sprites[i]
        ox = int(round(boxes[i][0] - sp.box[0]))  # exact: boxes hold whole-pixel offsets
        oy = int(round(boxes[i][1] - sp.box[1]))
        sh, sw_ = sp.alpha.shape
        x0, y0 = max(0, ox), max(0, oy)
        x1, y1 = min(width, ox + sw_), min(height, oy + sh)
        a = sp.alpha[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        canvas[y0:y1, x0:x1] = (
            canvas[y0:y1, x0:x1] * (1.0 - a[..., None])
            + sp.rgb[y0 - oy : y1 - oy, x0 - ox : x1 - ox] * a[..., None]
        )
        owner[y0:y1, x0:x1][a > 0.5] = i
        own_area[i] = int((sp.alpha > 0.5).sum())
        box = (ox + sp.box[0], oy + sp.box[1], ox + sp.box[2], oy + sp.box[3])
        placed[i] = _Placed(label=people[i][1], box=box, visible=0.0)

    if sprites and rng.random() < occluder_prob:
        i = int(rng.integers(len(sprites)))
        bx1, by1, bx2, by2 = placed[i].box  # type: ignore[union-attr]
        bw, bh = bx2 - bx1, by2 - by1
        col = np.asarray(
            _hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.7)), dtype=np.float32
        )
        if rng.random() < 0.5:  # object standing in front (bench, car, bin, bush): lower part
            top_y = by1 + rng.uniform(0.55, 0.8) * bh
            ox1 = bx1 - rng.uniform(0.0, 0.4) * bw
            ox2 = bx1 + rng.uniform(0.5, 1.3) * bw
            oy2 = min(float(height), by2 + rng.uniform(0.0, 0.05) * height)
        else:  # pole / pillar: a vertical bar across the person
            cxo = bx1 + rng.uniform(0.2, 0.8) * bw
            half = max(1.0, rng.uniform(0.08, 0.15) * bw)
            ox1, ox2 = cxo - half, cxo + half
            top_y, oy2 = by1 - rng.uniform(0.0, 0.3) * bh, float(height)
        X1, X2 = int(max(0, math.floor(ox1))), int(min(width, math.ceil(ox2)))
        Y1, Y2 = int(max(0, math.floor(top_y))), int(min(height, math.ceil(oy2)))
        if X2 > X1 and Y2 > Y1:
            grad = np.linspace(1.1, 0.8, Y2 - Y1, dtype=np.float32)[:, None, None]
            canvas[Y1:Y2, X1:X2] = np.clip(col[None, None, :] * grad, 0.0, 1.0)
            owner[Y1:Y2, X1:X2] = -1
    counts = np.bincount(owner[owner >= 0].ravel(), minlength=len(sprites))
    for i, p in enumerate(placed):
        assert p is not None
        p.visible = float(counts[i]) / max(1, own_area[i])

    brightness, cast = lighting
    canvas = canvas * (brightness * np.asarray(cast, dtype=np.float32))[None, None, :]
    canvas = canvas + rng.normal(0.0, noise_sigma, size=canvas.shape).astype(np.float32)
    img = (np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return img, [p for p in (placed[i] for i in order) if p is not None]


def _random_lighting(
    rng: np.random.Generator, spread: float = 1.0
) -> tuple[float, tuple[float, float, float]]:
    b = float(rng.uniform(1.0 - 0.3 * spread, 1.0 + 0.25 * spread))
    cast = tuple(float(c) for c in np.clip(rng.normal(1.0, 0.06 * spread, size=3), 0.8, 1.2))
    return b, cast  # type: ignore[return-value]


# =============================================================================================
# One image
# =============================================================================================
@dataclass
class _ImageJob(_Job):
    background: dict[str, Any]
    height_range: tuple[float, float]
    edge_person: str | None
    occluder_prob: float
    lighting: tuple[float, tuple[float, float, float]]
    jpeg_quality: int


def _run_job(job: _ImageJob) -> list[tuple[int, tuple[float, float, float, float], float]]:
    """Render one image, save it as JPEG, return (label, box x1y1x2y2, visible) per person."""
    rng = np.random.default_rng(list(job.seed_keys))
    bg = _render_background(job.width, job.height, job.background)
    img, placed = _render_scene(
        job.width,
        job.height,
        bg,
        job.people,
        rng,
        height_range=job.height_range,
        horizon=job.background["horizon"],
        edge_person=job.edge_person,
        occluder_prob=job.occluder_prob,
        lighting=job.lighting,
    )
    Image.fromarray(img).save(job.path, format="JPEG", quality=job.jpeg_quality)
    return [(p.label, p.box, p.visible) for p in placed]
