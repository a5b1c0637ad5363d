"""Synthetic person-search datasets written in the official CUHK-SYSU and PRW file formats.

The generator renders scenes procedurally (PIL + numpy) and writes them exactly in the layouts of
the two real benchmarks, so that the readers of ``dcinet_d2.data.datasets`` (which are written for
the real files) read them unchanged. Everything is deterministic by ``seed``: two runs with the same
arguments give byte-identical ``.mat``/``.txt`` files and identical JPEG images.

Layouts written (as seen through ``scipy.io.loadmat(path)`` with default options):

CUHK-SYSU (``root = <out>/CUHK-SYSU``)
    * ``Image/SSM/s{k}.jpg``: scene images ``s1.jpg ... sN.jpg``.
    * ``annotation/Images.mat``, key ``Img``: struct array (1, N) with fields ``imname`` (char),
      ``nAppear`` (1x1 double), ``box`` ((1, nAppear) struct array: ``idlocate`` 1x4 double
      ``[x, y, w, h]``, ``ishard`` 1x1 double). A few boxes are degenerate (w == 0 or h == 0), as
      in the real file; they belong to no identity and nothing is drawn for them.
    * ``annotation/pool.mat``, key ``pool``: (P, 1) cell of char = the test (gallery) images.
    * ``annotation/test/train_test/Train.mat``, key ``Train``: (C_train, 1) cell; each cell a (1, 1)
      struct ``idname`` (char 'p123'), ``nAppear``, ``scene`` ((1, nAppear) struct: ``imname``,
      ``idlocate``, ``ishard``).
    * ``annotation/test/train_test/TestG{N}.mat``, key ``TestG{N}``: struct array (1, Q) with
      fields ``Query`` ((1, 1) struct: ``imname``, ``idlocate``, ``ishard``, ``idname``) and
      ``Gallery`` ((1, N) struct: ``imname``, ``idlocate``, ``ishard``). Target entries come first
      (``idlocate`` = the person's box), then distractors with an *empty* ``idlocate``.

PRW (``root = <out>/PRW``)
    * ``frames/c{cam}s{seq}_{frame:06d}.jpg``.
    * ``annotations/{frame}.jpg.mat``: one N x 5 double ``[id, x, y, w, h]`` under one of the keys
      ``box_new``, ``anno_file``, ``anno_previous`` (rotated by frame); id -2 = unlabelled person.
    * ``frame_train.mat`` (``img_index_train``) / ``frame_test.mat`` (``img_index_test``): (N, 1)
      cells of frame names without extension; ``ID_train.mat`` (``ID_train``): (1, C) double.
    * ``query_info.txt``: ``pid x y w h frame`` per line, CRLF line endings.

Choices of ours (the real data gives no rule; each is also noted where the value is set):
    * Empty gallery ``idlocate`` is a **1x0** double array. Every public evaluation script for
      CUHK-SYSU reads ``item[1][0]`` / ``idlocate[0]`` on it and then tests ``.size == 0``; that
      only works if the first dimension is not 0, so a 0x0 array (what MATLAB's ``[]`` would load
      as) cannot be what the real files hold. Readers should test ``.size == 0``.
    * Galleries are nested: the gallery of ``TestG{N}`` is a prefix of the gallery of every larger
      ``TestG{M}`` (targets first, then one fixed random order of the distractors per query).
    * Boxes are *amodal*: they bound the whole rendered silhouette of the person, also where another
      person or an object occludes it (what an annotator marks for a partly hidden person).
    * ``ishard`` = 1 when less than 60 % of the person is visible or the person is shorter than a
      quarter of the image height; distractor gallery entries carry ``ishard`` = 0 (1x1).
    * All ``.mat`` files are written compressed (MATLAB v7 style) with a fixed header text (scipy
      writes the creation time there, which would break byte-identical reruns).

The real CUHK-SYSU size (18,184 images, 8,432 identities, 6,978 pool images, 2,900 queries) is
available as :data:`FULL_SCALE_CUHK_SYSU`; its ``TestG4000.mat`` holds 2,900 x 4,000 gallery
entries, which ``scipy.io.savemat`` writes at about 40 microseconds per entry (measured: about 14
minutes for all six files). The TestG files are therefore written by a small streaming MAT-5
encoder of ours (:func:`_write_testg`, all six files in about 30 s at full scale) whose output is
byte-identical to ``scipy.io.savemat`` (a test checks this). Reading the full ``TestG4000.mat``
with ``scipy.io.loadmat`` takes about 2 minutes and 13 GB of memory (11.6 million gallery
entries of three small arrays each), as for the real file; readers should load only the gallery
size they evaluate.
"""
from __future__ import annotations

import colorsys
import io
import json
import logging
import math
import multiprocessing
import os
import shutil
import struct
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import scipy.io
from PIL import Image, ImageDraw
from tqdm import tqdm

logger = logging.getLogger(__name__)

__all__ = [
    "CUHK_GALLERY_SIZES",
    "PRW_ANNOTATION_KEYS",
    "FULL_SCALE_CUHK_SYSU",
    "Appearance",
    "Pose",
    "PersonSprite",
    "random_appearance",
    "similar_appearance",
    "random_pose",
    "render_person",
    "generate_cuhk_sysu",
    "generate_prw",
    "ensure_synthetic_datasets",
    "default_synthetic_root",
]

RGB = Tuple[float, float, float]

#: Gallery sizes of the official CUHK-SYSU protocol files ``TestG{N}.mat``.
CUHK_GALLERY_SIZES: Tuple[int, ...] = (50, 100, 500, 1000, 2000, 4000)
#: The three keys under which the real PRW annotation files store their N x 5 matrix.
PRW_ANNOTATION_KEYS: Tuple[str, ...] = ("box_new", "anno_file", "anno_previous")
#: Arguments of :func:`generate_cuhk_sysu` that reproduce the size of the real CUHK-SYSU
#: (Xiao et al. 2017): 18,184 images, 6,978 of them in the test pool, 5,532 training and 2,900
#: test identities (one query each). Ours: 64x48 images keep it to minutes and ~70 MB of JPEGs.
FULL_SCALE_CUHK_SYSU: Dict[str, Any] = {
    "num_images": 18184,
    "pool_size": 6978,
    "num_train_ids": 5532,
    "num_test_ids": 2900,
    "image_size": (64, 48),
}
#: Name of the statistics file written into a generated root; its presence marks a complete
#: synthetic dataset (the folder is renamed into place only after everything was written).
STATS_FILE = "synthetic_stats.json"

_CUHK_STREAM = 1  # random-stream tags: CUHK-SYSU and PRW draw from independent streams
_PRW_STREAM = 2

# =============================================================================================
# Appearance model
# =============================================================================================
HAIR_STYLES = ("short", "long", "bald", "hat")
UPPER_PATTERNS = ("plain", "hstripes", "two_tone", "logo")
LOWER_STYLES = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "shoulder", "handbag")
FACINGS = ("front", "back", "left", "right")

_SKIN_TONES: Tuple[RGB, ...] = (
    (0.98, 0.84, 0.72), (0.94, 0.76, 0.62), (0.87, 0.67, 0.52), (0.76, 0.57, 0.42),
    (0.62, 0.44, 0.31), (0.47, 0.32, 0.22), (0.36, 0.24, 0.17),
)
_HAIR_COLORS: Tuple[RGB, ...] = (
    (0.06, 0.05, 0.05), (0.18, 0.12, 0.08), (0.35, 0.22, 0.12), (0.55, 0.38, 0.20),
    (0.80, 0.66, 0.40), (0.60, 0.60, 0.60), (0.55, 0.20, 0.10),
)


@dataclass(frozen=True)
class Appearance:
    """What makes one person recognisable: clothing colours, patterns, hair, bag, build.

    Colours are RGB triples in [0, 1]. ``build`` scales the width of the body, ``stature`` its
    height (both around 1).
    """

    skin: RGB
    hair_color: RGB
    hair_style: str
    hat_color: RGB
    upper_color: RGB
    upper_color2: RGB
    upper_pattern: str
    long_sleeves: bool
    lower_color: RGB
    lower_style: str
    shoe_color: RGB
    bag: str
    bag_color: RGB
    build: float
    stature: float


@dataclass(frozen=True)
class Pose:
    """Per-appearance variation of one person: view, gait, lean and a slight colour change.

    ``tint`` multiplies the colour of each body part (skin, hair, upper, lower, shoes, bag, hat,
    upper2), modelling small changes of shading between two photos of the same clothes.
    """

    facing: str
    stride: float
    arm_swing: float
    lean: float
    tint: Tuple[float, ...]


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
    box: Tuple[float, float, float, float]


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (float(r), float(g), float(b))


def _clothing_color(rng: np.random.Generator) -> RGB:
    # Ours: a quarter of garments are neutral (black/grey/white), the rest coloured.
    if rng.random() < 0.25:
        return _hsv(rng.random(), rng.uniform(0.0, 0.12), rng.uniform(0.08, 0.95))
    return _hsv(rng.random(), rng.uniform(0.35, 0.95), rng.uniform(0.25, 0.95))


def _near_color(c: RGB, rng: np.random.Generator) -> RGB:
    """A visibly different but close colour: hue shifted by 0.06-0.12 or value by 0.18-0.3."""
    h, s, v = colorsys.rgb_to_hsv(*c)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if s > 0.2 and rng.random() < 0.6:
        return _hsv(h + sign * rng.uniform(0.06, 0.12), s, v)
    dv = rng.uniform(0.18, 0.3)
    return _hsv(h, s, v + dv if v + dv <= 1.0 else v - dv)


def _pick(options: Sequence[Any], rng: np.random.Generator, exclude: Any = None) -> Any:
    opts = [o for o in options if o != exclude]
    return opts[int(rng.integers(len(opts)))]


def random_appearance(rng: np.random.Generator) -> Appearance:
    """Draw a new, independent appearance.

    Args:
        rng: source of randomness.

    Returns:
        The appearance.
    """
    return Appearance(
        skin=_SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))],
        hair_color=_HAIR_COLORS[int(rng.integers(len(_HAIR_COLORS)))],
        hair_style=str(rng.choice(HAIR_STYLES, p=[0.45, 0.3, 0.1, 0.15])),
        hat_color=_clothing_color(rng),
        upper_color=_clothing_color(rng),
        upper_color2=_clothing_color(rng),
        upper_pattern=str(rng.choice(UPPER_PATTERNS, p=[0.4, 0.2, 0.2, 0.2])),
        long_sleeves=bool(rng.random() < 0.6),
        lower_color=_clothing_color(rng),
        lower_style=str(rng.choice(LOWER_STYLES, p=[0.65, 0.2, 0.15])),
        shoe_color=_clothing_color(rng),
        bag=str(rng.choice(BAGS, p=[0.45, 0.25, 0.15, 0.15])),
        bag_color=_clothing_color(rng),
        build=float(rng.uniform(0.85, 1.15)),
        stature=float(rng.uniform(0.92, 1.08)),
    )


#: Attributes that :func:`similar_appearance` may change (exactly one of them per call).
SIMILARITY_ATTRIBUTES = (
    "upper_color", "lower_color", "upper_pattern", "bag", "hair_style", "long_sleeves",
    "lower_style", "shoe_color",
)


def similar_appearance(base: Appearance, rng: np.random.Generator) -> Appearance:
    """A look-alike of ``base`` that differs in exactly one attribute.

    Colours are changed to a *near* colour (hue or brightness shift), categorical attributes to a
    different category, so look-alikes are hard but separable negatives for re-id.

    Args:
        base: the appearance to imitate.
        rng: source of randomness.

    Returns:
        The look-alike appearance.
    """
    d = dict(base.__dict__)
    attr = SIMILARITY_ATTRIBUTES[int(rng.integers(len(SIMILARITY_ATTRIBUTES)))]
    if attr in ("upper_color", "lower_color"):
        d[attr] = _near_color(d[attr], rng)
    elif attr == "shoe_color":
        d[attr] = _clothing_color(rng)
    elif attr == "long_sleeves":
        d[attr] = not d[attr]
    else:
        options = {"upper_pattern": UPPER_PATTERNS, "bag": BAGS, "hair_style": HAIR_STYLES,
                   "lower_style": LOWER_STYLES}[attr]
        d[attr] = _pick(options, rng, exclude=d[attr])
    return Appearance(**d)


def make_identity_appearances(
    num: int, rng: np.random.Generator, similar_fraction: float = 0.3
) -> List[Appearance]:
    """Appearances of ``num`` identities; a fraction are look-alikes of an earlier identity.

    Args:
        num: number of identities.
        rng: source of randomness.
        similar_fraction: probability that an identity is made with :func:`similar_appearance`
            from a random earlier one instead of :func:`random_appearance` (ours: 0.3).

    Returns:
        One appearance per identity.
    """
    apps: List[Appearance] = []
    for i in range(num):
        if i > 0 and rng.random() < similar_fraction:
            apps.append(similar_appearance(apps[int(rng.integers(i))], rng))
        else:
            apps.append(random_appearance(rng))
    return apps


def random_pose(rng: np.random.Generator) -> Pose:
    """Draw the per-appearance variation (view, gait, lean, slight colour change)."""
    return Pose(
        facing=str(rng.choice(FACINGS, p=[0.35, 0.25, 0.2, 0.2])),
        stride=float(rng.uniform(0.0, 0.09)),
        arm_swing=float(rng.uniform(-0.06, 0.06)),
        lean=float(rng.uniform(-0.03, 0.03)),
        tint=tuple(float(t) for t in np.clip(rng.normal(1.0, 0.05, size=8), 0.85, 1.15)),
    )


# =============================================================================================
# Person rendering
# =============================================================================================
_SS = 2  # ours: people are drawn at 2x and box-filtered down (anti-aliasing, half-pixel boxes)
_SKIN, _HAIR, _UPPER, _LOWER, _SHOES, _BAG, _HAT, _UPPER2 = range(1, 9)


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

    def P(xf: float, yf: float) -> Tuple[float, float]:
        return (cx + (xf + pose.lean * (0.52 - yf)) * H, top + yf * H)

    def rect(x0: float, y0: float, x1: float, y1: float, label: int) -> None:
        (ax, ay), (bx, by) = P(x0, y0), P(x1, y1)
        d.rectangle([min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)], fill=label)

    def ellipse(x0: float, y0: float, x1: float, y1: float, label: int) -> None:
        (ax, ay), (bx, by) = P(x0, y0), P(x1, y1)
        d.ellipse([min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)], fill=label)

    def limb(points: Sequence[Tuple[float, float]], width: float, label: int) -> None:
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
        legs = [[(0.0, 0.52), (dirn * (s * 0.5 + 0.02), 0.74), (dirn * s, 0.95)],
                [(0.0, 0.52), (-dirn * s * 0.4, 0.74), (-dirn * s, 0.95)]]
    else:
        legs = [[(sg * 0.045 * b, 0.52), (sg * (0.045 * b + pose.stride * 0.5), 0.74),
                 (sg * (0.045 * b + pose.stride), 0.95)] for sg in (-1.0, 1.0)]
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
    for k, c in enumerate((app.skin, app.hair_color, app.upper_color, app.lower_color,
                           app.shoe_color, app.bag_color, app.hat_color, app.upper_color2), 1):
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
    return PersonSprite(rgb=rgb_small.astype(np.float32), alpha=a_small.astype(np.float32),
                        box=box)


# =============================================================================================
# Backgrounds and scenes
# =============================================================================================
def _random_background_style(rng: np.random.Generator) -> Dict[str, Any]:
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


def _render_background(width: int, height: int, style: Dict[str, Any]) -> np.ndarray:
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
            d.ellipse([x - s * 0.4, hz - s * 1.1, x + s * 0.4, hz - s * 0.35],
                      fill=(40, 110 + int(60 * c["size"]), 50))
        elif c["kind"] == "pole":
            d.rectangle([x - max(1, s * 0.03), hz - s * 1.2, x + max(1, s * 0.03), hz + s * 0.2],
                        fill=darker(col, 0.6))
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
    box: Tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels (half-pixel steps)
    visible: float  # fraction of the silhouette visible in the image


def _render_scene(
    width: int,
    height: int,
    background: np.ndarray,
    people: Sequence[Tuple[Appearance, int]],
    rng: np.random.Generator,
    *,
    height_range: Tuple[float, float],
    horizon: float,
    edge_person: Optional[str],
    occluder_prob: float,
    lighting: Tuple[float, Tuple[float, float, float]],
    noise_sigma: float = 0.012,
) -> Tuple[np.ndarray, List[_Placed]]:
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
                ox = min(max(int(round(x1 - bx0)), int(math.ceil(-bx0))),
                         int(math.floor(width - bx1_)))
            if i == 0 and edge_person == "top":
                oy = int(math.floor(y1 - by0))
            else:
                oy = min(max(int(round(y1 - by0)), int(math.ceil(-by0))),
                         int(math.floor(height - by1_)))
            boxes.append((ox + bx0, oy + by0, ox + bx1_, oy + by1_))
        order = sorted(range(len(boxes)), key=lambda i: boxes[i][3])
        cover = np.zeros((height, width), dtype=bool)
        vis = [0.0] * len(boxes)
        for i in reversed(order):  # nearest first
            x1, y1, x2, y2 = (int(math.floor(boxes[i][0])), int(math.floor(boxes[i][1])),
                              int(math.ceil(boxes[i][2])), int(math.ceil(boxes[i][3])))
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
    placed: List[Optional[_Placed]] = [None] * len(sprites)
    own_area = [0] * len(sprites)
    for i in order:
        sp = sprites[i]
        ox = int(round(boxes[i][0] - sp.box[0]))  # exact: boxes hold whole-pixel offsets
        oy = int(round(boxes[i][1] - sp.box[1]))
        sh, sw_ = sp.alpha.shape
        x0, y0 = max(0, ox), max(0, oy)
        x1, y1 = min(width, ox + sw_), min(height, oy + sh)
        a = sp.alpha[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        canvas[y0:y1, x0:x1] = (canvas[y0:y1, x0:x1] * (1.0 - a[..., None])
                                + sp.rgb[y0 - oy:y1 - oy, x0 - ox:x1 - ox] * a[..., None])
        owner[y0:y1, x0:x1][a > 0.5] = i
        own_area[i] = int((sp.alpha > 0.5).sum())
        box = (ox + sp.box[0], oy + sp.box[1], ox + sp.box[2], oy + sp.box[3])
        placed[i] = _Placed(label=people[i][1], box=box, visible=0.0)

    if sprites and rng.random() < occluder_prob:
        i = int(rng.integers(len(sprites)))
        bx1, by1, bx2, by2 = placed[i].box  # type: ignore[union-attr]
        bw, bh = bx2 - bx1, by2 - by1
        col = np.asarray(_hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.7)),
                         dtype=np.float32)
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
) -> Tuple[float, Tuple[float, float, float]]:
    b = float(rng.uniform(1.0 - 0.3 * spread, 1.0 + 0.25 * spread))
    cast = tuple(float(c) for c in np.clip(rng.normal(1.0, 0.06 * spread, size=3), 0.8, 1.2))
    return b, cast  # type: ignore[return-value]


def _is_hard(visible: float, box_h: float, image_h: int) -> bool:
    # Ours: "hard" = less than 60 % visible or shorter than a quarter of the image height.
    return visible < 0.6 or box_h < 0.25 * image_h


# =============================================================================================
# MAT-file writing
# =============================================================================================
_MAT_HEADER_TEXT = (b"MATLAB 5.0 MAT-file, Platform: posix, "
                    b"Created by: dcinet_d2 synthetic generator")


def _mat_bytes(variables: Dict[str, Any]) -> bytes:
    """``scipy.io.savemat`` (compressed) into memory, with a fixed header text.

    scipy writes the creation time into the 116-byte header text; we overwrite it so that reruns
    are byte-identical. The rest of the 128-byte header (version, endianness) is kept.
    """
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, do_compression=True)
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER_TEXT.ljust(116, b" ")
    return bytes(data)


def _write_mat(path: str, variables: Dict[str, Any]) -> None:
    with open(path, "wb") as f:
        f.write(_mat_bytes(variables))


def _struct_array(shape: Tuple[int, int], fields: Sequence[str]) -> np.ndarray:
    return np.empty(shape, dtype=[(f, object) for f in fields])


def _dbl(*values: float) -> np.ndarray:
    return np.asarray([values], dtype=np.float64)


# --- a minimal MAT-5 encoder for the (huge) TestG files, byte-identical to scipy.io.savemat ---
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_DOUBLE, _MI_MATRIX, _MI_COMPRESSED, _MI_UTF8 = (
    1, 5, 6, 9, 14, 15, 16)
_MX_STRUCT, _MX_CHAR, _MX_DOUBLE = 2, 4, 6


def _mat_element(mdtype: int, data: bytes) -> bytes:
    n = len(data)
    if n <= 4:  # "small data element": tag and data in 8 bytes
        return struct.pack("<I", (n << 16) | mdtype) + data.ljust(4, b"\0")
    return struct.pack("<II", mdtype, n) + data + b"\0" * ((-n) % 8)


def _mat_matrix(mclass: int, dims: Tuple[int, int], payload: bytes, name: bytes = b"") -> bytes:
    content = (struct.pack("<IIII", _MI_UINT32, 8, mclass, 0)
               + _mat_element(_MI_INT32, struct.pack("<ii", *dims))
               + _mat_element(_MI_INT8, name) + payload)
    return struct.pack("<II", _MI_MATRIX, len(content)) + content


def _mat_char(s: str) -> bytes:
    return _mat_matrix(_MX_CHAR, (1, len(s)), _mat_element(_MI_UTF8, s.encode("ascii")))


def _mat_double(a: np.ndarray) -> bytes:
    a = np.asarray(a, dtype="<f8")
    assert a.ndim == 2
    return _mat_matrix(_MX_DOUBLE, a.shape, _mat_element(_MI_DOUBLE, a.tobytes(order="F")))


def _mat_struct_head(fields: Sequence[str]) -> bytes:
    length = max(len(f) for f in fields) + 1
    names = b"".join(f.encode("ascii").ljust(length, b"\0") for f in fields)
    return _mat_element(_MI_INT32, struct.pack("<i", length)) + _mat_element(_MI_INT8, names)


def _mat_struct_size(fields: Sequence[str], element_bytes: int, name: bytes = b"") -> int:
    """Size in bytes of a struct matrix whose elements take ``element_bytes`` bytes in all."""
    name_len = len(_mat_element(_MI_INT8, name))
    return 8 + 16 + 16 + name_len + len(_mat_struct_head(fields)) + element_bytes


_QUERY_FIELDS = ("imname", "idlocate", "ishard", "idname")
_GALLERY_FIELDS = ("imname", "idlocate", "ishard")
#: Ours: an empty idlocate is 1x0 (see the module docstring).
_EMPTY_IDLOCATE_SHAPE = (1, 0)


@dataclass
class _QueryProtocol:
    query: Tuple[str, Tuple[int, int, int, int], int, str]  # imname, idlocate, ishard, idname
    targets: List[Tuple[str, Tuple[int, int, int, int], int]]  # imname, idlocate, ishard
    distractors: np.ndarray  # indices into ``names``, in gallery order (prefix per gallery size)
    names: Sequence[str]  # all image names (shared by every query)


def _testg_entries(q: _QueryProtocol, n: int) -> List[Tuple[str, Optional[Tuple[int, ...]], int]]:
    entries: List[Tuple[str, Optional[Tuple[int, ...]], int]] = [
        (name, box, hard) for name, box, hard in q.targets]
    entries += [(q.names[j], None, 0) for j in q.distractors[: n - len(q.targets)].tolist()]
    return entries


def _testg_struct(protocol: Sequence[_QueryProtocol], n: int) -> np.ndarray:
    """The TestG{n} variable as a numpy struct array (what ``scipy.io.savemat`` would write)."""
    out = _struct_array((1, len(protocol)), ("Query", "Gallery"))
    for i, q in enumerate(protocol):
        qs = _struct_array((1, 1), _QUERY_FIELDS)
        qs[0, 0] = (q.query[0], _dbl(*q.query[1]), _dbl(q.query[2]), q.query[3])
        entries = _testg_entries(q, n)
        g = _struct_array((1, len(entries)), _GALLERY_FIELDS)
        for j, (name, box, hard) in enumerate(entries):
            loc = _dbl(*box) if box is not None else np.zeros(_EMPTY_IDLOCATE_SHAPE)
            g[0, j] = (name, loc, _dbl(hard))
        out[0, i] = (qs, g)
    return out


def _write_testg(path: str, protocol: Sequence[_QueryProtocol], n: int) -> None:
    """Write ``TestG{n}.mat`` by streaming; the bytes equal ``_mat_bytes({key: _testg_struct})``.

    The encoder follows the MAT-5 layout that ``scipy.io.savemat`` produces for a struct array of
    structs of char/double matrices (column-major elements, empty names below the top level,
    zlib-compressed top-level variable). Gallery entries are cached per (image, box, hard) so that
    the distractor entries, which repeat across queries, are encoded once.
    """
    key = f"TestG{n}"
    if sys.byteorder != "little":  # the encoder writes little-endian only; scipy is exact anyway
        _write_mat(path, {key: _testg_struct(protocol, n)})
        return
    cache: Dict[Tuple[str, Optional[Tuple[int, ...]], int], bytes] = {}
    empty = _mat_double(np.zeros(_EMPTY_IDLOCATE_SHAPE))

    def gallery_entry(e: Tuple[str, Optional[Tuple[int, ...]], int]) -> bytes:
        b = cache.get(e)
        if b is None:
            loc = _mat_double(_dbl(*e[1])) if e[1] is not None else empty
            b = _mat_char(e[0]) + loc + _mat_double(_dbl(e[2]))
            cache[e] = b
        return b

    def query_bytes(q: _QueryProtocol) -> bytes:
        name, box, hard, idname = q.query
        el = _mat_char(name) + _mat_double(_dbl(*box)) + _mat_double(_dbl(hard)) + _mat_char(idname)
        return _mat_matrix(_MX_STRUCT, (1, 1), _mat_struct_head(_QUERY_FIELDS) + el)

    def gallery_bytes(q: _QueryProtocol) -> bytes:
        entries = _testg_entries(q, n)
        body = b"".join(gallery_entry(e) for e in entries)
        return _mat_matrix(_MX_STRUCT, (1, len(entries)), _mat_struct_head(_GALLERY_FIELDS) + body)

    # pass 1: sizes (needed in the tags before the data)
    total = 0
    for q in protocol:
        qb = len(query_bytes(q))
        entries_len = sum(len(gallery_entry(e)) for e in _testg_entries(q, n))
        gb = _mat_struct_size(_GALLERY_FIELDS, entries_len)
        total += qb + gb
    name = key.encode("latin1")
    top_content = _mat_struct_size(("Query", "Gallery"), total, name) - 8
    if top_content >= 2**32:
        raise ValueError(
            f"{path}: TestG{n} is too large for the MAT-5 format ({top_content} bytes)")
    top_head = (struct.pack("<II", _MI_MATRIX, top_content)
                + struct.pack("<IIII", _MI_UINT32, 8, _MX_STRUCT, 0)
                + _mat_element(_MI_INT32, struct.pack("<ii", 1, len(protocol)))
                + _mat_element(_MI_INT8, name) + _mat_struct_head(("Query", "Gallery")))
    header = bytearray(_mat_bytes({}))  # 128-byte file header only
    assert len(header) == 128
    comp = zlib.compressobj()
    with open(path, "wb") as f:
        f.write(bytes(header))
        f.write(b"\0" * 8)  # miCOMPRESSED tag, patched below
        size = 0
        chunk = comp.compress(top_head)
        f.write(chunk)
        size += len(chunk)
        for q in protocol:
            chunk = comp.compress(query_bytes(q) + gallery_bytes(q))
            f.write(chunk)
            size += len(chunk)
        chunk = comp.flush()
        f.write(chunk)
        size += len(chunk)
        f.seek(128)
        f.write(struct.pack("<II", _MI_COMPRESSED, size))


# =============================================================================================
# Layout helpers (who appears where)
# =============================================================================================
def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])


def _num_appearances(rng: np.random.Generator, lo: int, hi: int, size: int,
                     decay: float = 0.6) -> np.ndarray:
    """Appearances per identity in [lo, hi]: P(k) ~ decay^(k - lo) (ours: 0.6 for CUHK-SYSU,
    where most identities appear 2-3 times; 1.0 = uniform for PRW, where people recur often)."""
    ks = np.arange(lo, hi + 1)
    p = float(decay) ** (ks - lo)
    return rng.choice(ks, size=size, p=p / p.sum())


def _weighted_pick(
    rng: np.random.Generator, cands: np.ndarray, cap: np.ndarray, k: int
) -> np.ndarray:
    w = cap[cands].astype(np.float64)
    return cands[rng.choice(len(cands), size=k, replace=False, p=w / w.sum())]


def _check_range(name: str, value: Sequence[int], minimum: int) -> Tuple[int, int]:
    try:
        lo, hi = int(value[0]), int(value[1])
    except (TypeError, IndexError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max) of integers, got {value!r}") from None
    if lo < minimum or hi < lo:
        raise ValueError(f"{name} must satisfy {minimum} <= min <= max, got {value!r}")
    return lo, hi


def _check_image_size(image_size: Sequence[int]) -> Tuple[int, int]:
    try:
        w, h = int(image_size[0]), int(image_size[1])
    except (TypeError, IndexError, ValueError):
        raise ValueError(f"image_size must be (width, height), got {image_size!r}") from None
    if w < 32 or h < 32:
        raise ValueError(f"image_size must be at least (32, 32), got {image_size!r}")
    return w, h


@dataclass
class _ImageJob:
    path: str
    width: int
    height: int
    seed_keys: Tuple[int, ...]
    people: List[Tuple[Appearance, int]]
    background: Dict[str, Any]
    height_range: Tuple[float, float]
    edge_person: Optional[str]
    occluder_prob: float
    lighting: Tuple[float, Tuple[float, float, float]]
    jpeg_quality: int


def _run_job(job: _ImageJob) -> List[Tuple[int, Tuple[float, float, float, float], float]]:
    """Render one image, save it as JPEG, return (label, box x1y1x2y2, visible) per person."""
    rng = np.random.default_rng(list(job.seed_keys))
    bg = _render_background(job.width, job.height, job.background)
    img, placed = _render_scene(
        job.width, job.height, bg, job.people, rng, height_range=job.height_range,
        horizon=job.background["horizon"], edge_person=job.edge_person,
        occluder_prob=job.occluder_prob, lighting=job.lighting)
    Image.fromarray(img).save(job.path, format="JPEG", quality=job.jpeg_quality)
    return [(p.label, p.box, p.visible) for p in placed]


def _run_jobs(
    jobs: Sequence[Any], num_workers: int, progress: bool, desc: str,
    worker: Callable[[Any], Any] = _run_job,
) -> List[Any]:
    """``[worker(job) for job in jobs]``, in ``num_workers`` processes when > 0 (same order)."""
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, unit="img", mininterval=1.0)
    results: List[Any] = []
    try:
        if num_workers > 0:
            method = "fork" if sys.platform.startswith("linux") else "spawn"
            ctx = multiprocessing.get_context(method)
            with ctx.Pool(num_workers) as pool:
                for r in pool.imap(worker, jobs, chunksize=16):
                    results.append(r)
                    bar.update(1)
        else:
            for j in jobs:
                results.append(worker(j))
                bar.update(1)
    finally:
        bar.close()
    return results


# =============================================================================================
# Atomic output folder
# =============================================================================================
class _AtomicDir:
    """Write into a hidden sibling folder; rename it to ``root`` only when everything succeeded.

    An interrupted run leaves only ``.<name>.incomplete-XXXX`` (removed on exceptions), never a
    ``root`` that looks complete.
    """

    def __init__(self, root: str, overwrite: bool):
        self.root = os.path.abspath(root)
        self.overwrite = overwrite
        self.tmp = ""

    def __enter__(self) -> str:
        if os.path.exists(self.root) and not self.overwrite:
            raise FileExistsError(f"{self.root} already exists; pass overwrite=True (CLI: --force)")
        parent = os.path.dirname(self.root)
        os.makedirs(parent, exist_ok=True)
        prefix = f".{os.path.basename(self.root)}.incomplete-"
        self.tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if os.path.exists(self.root):
            shutil.rmtree(self.root)
        os.rename(self.tmp, self.root)


def _dir_size(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(dirpath, f))
    return total


# =============================================================================================
# CUHK-SYSU
# =============================================================================================
@dataclass
class _CuhkLayout:
    """Who appears where in a synthetic CUHK-SYSU, drawn before any image is rendered."""

    width: int
    height: int
    names: List[str]  # image file names s1.jpg ... sN.jpg
    is_pool: np.ndarray  # (N,) bool: the image is a test (gallery) image
    n_persons: np.ndarray  # (N,) people drawn per image (labelled + unlabelled)
    id_numbers: np.ndarray  # (C,) the number k of each identity's name 'p{k}'
    identities: List[Any]  # per identity: what the renderer draws for it
    image_labels: List[List[int]]  # per image: indices of the identities on it
    degenerate: np.ndarray  # (N,) bool: the image gets one extra zero-width/height box
    num_train_ids: int  # identities 0 .. num_train_ids - 1 are training identities
    gallery_sizes: List[int]  # N of the TestG{N}.mat files to write


def _plan_cuhk_sysu(
    seed: int,
    stream: int,
    *,
    num_images: int,
    num_train_ids: int,
    num_test_ids: int,
    pool_size: int,
    image_size: Tuple[int, int],
    gallery_sizes: Optional[Sequence[int]],
    persons_per_image: Tuple[int, int],
    appearances_per_id: Tuple[int, int],
    degenerate_fraction: float,
    make_identities: Callable[[int, np.random.Generator], List[Any]],
) -> _CuhkLayout:
    """Check the arguments of a synthetic CUHK-SYSU and draw its layout (splits, who is where).

    Arguments as in :func:`generate_cuhk_sysu`; ``stream`` tags the random streams (one per
    dataset kind) and ``make_identities(num_ids, rng)`` draws what each identity looks like from
    the layout's random stream.

    Raises:
        ValueError: inconsistent sizes, naming the argument.
    """
    width, height = _check_image_size(image_size)
    pmin, pmax = _check_range("persons_per_image", persons_per_image, 1)
    amin, amax = _check_range("appearances_per_id", appearances_per_id, 2)
    if num_images < 2:
        raise ValueError(f"num_images must be >= 2, got {num_images}")
    if not 2 <= pool_size < num_images:
        raise ValueError(
            f"pool_size must be in [2, num_images - 1] = [2, {num_images - 1}], got {pool_size}")
    if num_train_ids < 1 or num_test_ids < 1:
        raise ValueError(
            f"num_train_ids and num_test_ids must be >= 1, got {num_train_ids}, {num_test_ids}")
    if amax > pool_size:
        raise ValueError(f"appearances_per_id max ({amax}) exceeds pool_size ({pool_size})")
    if gallery_sizes is None:
        sizes = [n for n in CUHK_GALLERY_SIZES if n <= pool_size - 1]
    else:
        sizes = sorted({int(n) for n in gallery_sizes})
        bad = [n for n in sizes if not amax - 1 <= n <= pool_size - 1]
        if bad:
            raise ValueError(
                f"gallery_sizes {bad} not allowed: each N must satisfy {amax - 1} <= N <= "
                f"pool_size - 1 = {pool_size - 1} (a gallery holds all other images of the "
                f"query person)")
    if sizes and sizes[0] < amax - 1:
        raise ValueError(f"gallery size {sizes[0]} is smaller than appearances_per_id max - 1 "
                         f"({amax - 1})")
    num_train_images = num_images - pool_size
    for split, n_img, n_ids in (("train", num_train_images, num_train_ids),
                                ("test", pool_size, num_test_ids)):
        if n_img * pmax < n_ids * amax or n_img < amax:
            raise ValueError(
                f"not enough room for the {split} identities: {n_ids} ids x up to {amax} "
                f"appearances "
                f"need more than {n_img} images x {pmax} persons; raise num_images/pool_size or "
                f"persons_per_image, or lower num_{split}_ids")

    lrng = _rng(seed, stream, 0)
    names = [f"s{k}.jpg" for k in range(1, num_images + 1)]
    is_pool = np.zeros(num_images, dtype=bool)
    is_pool[lrng.choice(num_images, size=pool_size, replace=False)] = True
    n_persons = lrng.integers(pmin, pmax + 1, size=num_images)
    num_ids = num_train_ids + num_test_ids
    id_numbers = lrng.permutation(np.arange(1, num_ids + 1))  # ours: 'p{k}' names in random order
    identities = make_identities(num_ids, lrng)
    k_app = _num_appearances(lrng, amin, amax, num_ids)
    image_labels: List[List[int]] = [[] for _ in range(num_images)]
    for split_ids, mask in ((range(num_train_ids), ~is_pool),
                            (range(num_train_ids, num_ids), is_pool)):
        imgs = np.flatnonzero(mask)
        cap = np.zeros(num_images, dtype=np.int64)
        cap[imgs] = n_persons[imgs]
        need = int(sum(k_app[i] for i in split_ids))
        if need > int(cap.sum()):  # make room: raise person counts (within persons_per_image)
            for j in lrng.permutation(imgs):
                add = min(pmax - n_persons[j], need - int(cap.sum()))
                n_persons[j] += add
                cap[j] += add
                if need <= cap.sum():
                    break
        for i in lrng.permutation(np.asarray(list(split_ids))):
            cands = np.flatnonzero(cap > 0)
            k = int(k_app[i])
            if len(cands) < k:
                raise ValueError("could not place every identity; raise num_images/pool_size "
                                 "or persons_per_image")
            for j in _weighted_pick(lrng, cands, cap, k):
                image_labels[j].append(int(i))
                cap[j] -= 1
    degenerate = lrng.random(num_images) < degenerate_fraction
    if degenerate_fraction > 0 and not degenerate.any():
        degenerate[int(lrng.integers(num_images))] = True
    return _CuhkLayout(width=width, height=height, names=names, is_pool=is_pool,
                       n_persons=n_persons, id_numbers=id_numbers, identities=identities,
                       image_labels=image_labels, degenerate=degenerate,
                       num_train_ids=num_train_ids, gallery_sizes=sizes)


def _write_cuhk_sysu(
    tmp: str,
    root: str,
    layout: _CuhkLayout,
    results: Sequence[Sequence[Tuple[int, Tuple[float, float, float, float], float]]],
    seed: int,
    stream: int,
    dataset: str,
    t_start: float,
) -> Dict[str, Any]:
    """Write the annotation files and statistics of a rendered synthetic CUHK-SYSU into ``tmp``.

    Args:
        tmp: the folder being written (renamed to ``root`` afterwards).
        root: the final folder (recorded in the statistics).
        layout: the layout the images were rendered from.
        results: per image, (label, box x1 y1 x2 y2, visible fraction) per person drawn.
        seed: random seed of the dataset.
        stream: random-stream tag of the dataset kind (as given to :func:`_plan_cuhk_sysu`).
        dataset: name recorded in the statistics.
        t_start: ``time.time()`` at the start of the generation.

    Returns:
        Statistics (also written to ``tmp/synthetic_stats.json``).
    """
    width, height, names, is_pool = layout.width, layout.height, layout.names, layout.is_pool
    id_numbers, num_train_ids = layout.id_numbers, layout.num_train_ids
    num_images, num_ids = len(names), len(layout.identities)
    ann_dir = os.path.join(tmp, "annotation", "test", "train_test")
    os.makedirs(ann_dir, exist_ok=True)
    # boxes: integer [x, y, w, h] = the pixels touched by the silhouette
    img_boxes: List[List[Tuple[Tuple[int, int, int, int], int, int]]] = []  # (box, hard, label)
    appearances: Dict[int, List[Tuple[int, Tuple[int, int, int, int], int]]] = {}
    n_hard = n_labelled = n_unlabelled = n_degenerate = 0
    for j, placed in enumerate(results):
        boxes = []
        for label, (x1, y1, x2, y2), visible in placed:
            ix, iy = int(math.floor(x1)), int(math.floor(y1))
            box = (ix, iy, int(math.ceil(x2)) - ix, int(math.ceil(y2)) - iy)
            hard = int(_is_hard(visible, y2 - y1, height))
            boxes.append((box, hard, label))
            n_hard += hard
            if label >= 0:
                appearances.setdefault(label, []).append((j, box, hard))
                n_labelled += 1
            else:
                n_unlabelled += 1
        if layout.degenerate[j]:
            drng = _rng(seed, stream, 3, j)
            x, y = int(drng.integers(0, width - 1)), int(drng.integers(0, height - 1))
            if drng.random() < 0.5:
                box = (x, y, 0, int(drng.integers(1, height - y + 1)))
            else:
                box = (x, y, int(drng.integers(1, width - x + 1)), 0)
            boxes.insert(int(drng.integers(len(boxes) + 1)), (box, 0, -1))
            n_degenerate += 1
        img_boxes.append(boxes)

    logger.info("%s: writing annotation files", dataset)
    img_struct = _struct_array((1, num_images), ("imname", "nAppear", "box"))
    for j in range(num_images):
        bs = _struct_array((1, len(img_boxes[j])), ("idlocate", "ishard"))
        for t, (box, hard, _) in enumerate(img_boxes[j]):
            bs[0, t] = (_dbl(*box), _dbl(hard))
        img_struct[0, j] = (names[j], _dbl(len(img_boxes[j])), bs)
    _write_mat(os.path.join(tmp, "annotation", "Images.mat"), {"Img": img_struct})

    pool_names = [names[j] for j in range(num_images) if is_pool[j]]
    pool = np.empty((len(pool_names), 1), dtype=object)
    for t, n in enumerate(pool_names):
        pool[t, 0] = n
    _write_mat(os.path.join(tmp, "annotation", "pool.mat"), {"pool": pool})

    train_order = sorted(range(num_train_ids), key=lambda i: id_numbers[i])
    train = np.empty((num_train_ids, 1), dtype=object)
    for t, i in enumerate(train_order):
        apps_i = appearances[i]
        sc = _struct_array((1, len(apps_i)), ("imname", "idlocate", "ishard"))
        for u, (j, box, hard) in enumerate(apps_i):
            sc[0, u] = (names[j], _dbl(*box), _dbl(hard))
        cell = _struct_array((1, 1), ("idname", "nAppear", "scene"))
        cell[0, 0] = (f"p{id_numbers[i]}", _dbl(len(apps_i)), sc)
        train[t, 0] = cell
    _write_mat(os.path.join(ann_dir, "Train.mat"), {"Train": train})

    pool_idx = np.flatnonzero(is_pool)
    prng = _rng(seed, stream, 4)
    protocol: List[_QueryProtocol] = []
    for i in sorted(range(num_train_ids, num_ids), key=lambda i: id_numbers[i]):
        apps_i = appearances[i]
        easy = [u for u, a in enumerate(apps_i) if a[2] == 0]
        qu = easy[int(prng.integers(len(easy)))] if easy else int(prng.integers(len(apps_i)))
        qj, qbox, qhard = apps_i[qu]
        others = [a for u, a in enumerate(apps_i) if u != qu]
        distractors = pool_idx[~np.isin(pool_idx, [a[0] for a in apps_i])].astype(np.int32)
        protocol.append(_QueryProtocol(
            query=(names[qj], qbox, qhard, f"p{id_numbers[i]}"),
            targets=[(names[j], box, hard) for j, box, hard in others],
            distractors=distractors[prng.permutation(len(distractors))], names=names))
    if not layout.gallery_sizes:
        logger.warning("%s: pool_size=%d allows no official gallery size (>= 50 needs "
                       "pool_size >= 51); no TestG file written", dataset, len(pool_idx))
    for n in layout.gallery_sizes:
        t0 = time.time()
        _write_testg(os.path.join(ann_dir, f"TestG{n}.mat"), protocol, n)
        logger.info("%s: TestG%d.mat written (%d x %d entries) in %.1f s",
                    dataset, n, len(protocol), n, time.time() - t0)

    stats = {
        "dataset": dataset,
        "root": os.path.abspath(root),
        "seed": int(seed),
        "image_size": [width, height],
        "images": num_images,
        "train_images": num_images - len(pool_idx),
        "pool_images": len(pool_idx),
        "boxes": n_labelled + n_unlabelled,
        "labelled_boxes": n_labelled,
        "unlabelled_boxes": n_unlabelled,
        "hard_boxes": n_hard,
        "degenerate_boxes": n_degenerate,
        "train_ids": num_train_ids,
        "test_ids": num_ids - num_train_ids,
        "queries": len(protocol),
        "gallery_sizes": layout.gallery_sizes,
    }
    stats["seconds"] = round(time.time() - t_start, 2)
    stats["disk_bytes"] = _dir_size(tmp)
    with open(os.path.join(tmp, STATS_FILE), "w") as f:
        json.dump(stats, f, indent=1, sort_keys=True)
    return stats


def generate_cuhk_sysu(
    root: str,
    *,
    seed: int = 0,
    num_images: int = 450,
    num_train_ids: int = 120,
    num_test_ids: int = 70,
    pool_size: int = 150,
    image_size: Tuple[int, int] = (256, 192),
    gallery_sizes: Optional[Sequence[int]] = None,
    persons_per_image: Tuple[int, int] = (2, 6),
    appearances_per_id: Tuple[int, int] = (2, 5),
    height_range: Tuple[float, float] = (0.35, 0.85),
    similar_fraction: float = 0.3,
    degenerate_fraction: float = 0.03,
    occluder_prob: float = 0.3,
    jpeg_quality: int = 90,
    num_workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Dict[str, Any]:
    """Generate a synthetic CUHK-SYSU at ``root`` in the official layout (module docstring).

    Training identities appear only in training images, test identities only in pool images; every
    identity appears in ``appearances_per_id`` different images (at least 2). Each test identity
    gives one query (ours: a random non-hard appearance when there is one) and its gallery in every
    ``TestG{N}.mat``: the other images of the person first, then distractor pool images.

    Args:
        root: output folder (e.g. ``<out>/CUHK-SYSU``); written atomically.
        seed: random seed; same seed and arguments -> identical files.
        num_images: total number of scene images (real: 18,184).
        num_train_ids: identities of Train.mat (real: 5,532).
        num_test_ids: test identities = queries (real: 2,900).
        pool_size: number of test (gallery) images (real: 6,978).
        image_size: (width, height) of every image.
        gallery_sizes: sizes N of the ``TestG{N}.mat`` files to write; None = every official size
            (50 ... 4000) with N <= pool_size - 1. Other positive sizes <= pool_size - 1 are
            allowed (written under the same naming scheme).
        persons_per_image: (min, max) people drawn per image (labelled + unlabelled).
        appearances_per_id: (min, max) images per identity (min >= 2).
        height_range: person heights as fractions of the image height.
        similar_fraction: fraction of identities made as look-alikes of another identity.
        degenerate_fraction: fraction of images that get one extra zero-width/height box.
        occluder_prob: probability per image of an object occluding one person.
        jpeg_quality: JPEG quality.
        num_workers: processes for rendering (0 = this process); output does not depend on it.
        overwrite: replace an existing ``root``.
        progress: show a progress bar.

    Returns:
        Statistics (also stored as ``root/synthetic_stats.json``).

    Raises:
        ValueError: inconsistent sizes, naming the argument.
        FileExistsError: ``root`` exists and ``overwrite`` is False.
    """
    t_start = time.time()
    layout = _plan_cuhk_sysu(
        seed, _CUHK_STREAM, num_images=num_images, num_train_ids=num_train_ids,
        num_test_ids=num_test_ids, pool_size=pool_size, image_size=image_size,
        gallery_sizes=gallery_sizes, persons_per_image=persons_per_image,
        appearances_per_id=appearances_per_id, degenerate_fraction=degenerate_fraction,
        make_identities=lambda n, r: make_identity_appearances(n, r, similar_fraction))
    width, height, names = layout.width, layout.height, layout.names
    apps = layout.identities

    img_dir = os.path.join("Image", "SSM")
    with _AtomicDir(root, overwrite) as tmp:
        os.makedirs(os.path.join(tmp, img_dir))
        logger.info("CUHK-SYSU: rendering %d images (%dx%d) into %s",
                    num_images, width, height, root)
        jobs = []
        for j in range(num_images):
            jrng = _rng(seed, _CUHK_STREAM, 1, j)
            people = [(apps[i], i) for i in layout.image_labels[j]]
            n_unlabelled = int(layout.n_persons[j]) - len(people)
            people += [(random_appearance(jrng), -1) for _ in range(n_unlabelled)]
            order = jrng.permutation(len(people))
            jobs.append(_ImageJob(
                path=os.path.join(tmp, img_dir, names[j]), width=width, height=height,
                seed_keys=(seed, _CUHK_STREAM, 2, j), people=[people[o] for o in order],
                background=_random_background_style(jrng), height_range=tuple(height_range),
                edge_person=None, occluder_prob=occluder_prob, lighting=_random_lighting(jrng),
                jpeg_quality=jpeg_quality))
        results = _run_jobs(jobs, num_workers, progress, "CUHK-SYSU images")
        stats = _write_cuhk_sysu(tmp, root, layout, results, seed, _CUHK_STREAM,
                                 "CUHK-SYSU (synthetic)", t_start)
    logger.info("CUHK-SYSU written to %s in %.1f s", root, stats["seconds"])
    return stats


# =============================================================================================
# PRW
# =============================================================================================
def generate_prw(
    root: str,
    *,
    seed: int = 0,
    num_cameras: int = 6,
    num_train_frames: int = 300,
    num_test_frames: int = 200,
    num_train_ids: int = 80,
    num_test_ids: int = 45,
    image_size: Tuple[int, int] = (256, 144),
    sequences_per_camera: int = 2,
    persons_per_frame: Tuple[int, int] = (2, 5),
    appearances_per_id: Tuple[int, int] = (3, 10),
    cameras_per_test_id: Tuple[int, int] = (2, 3),
    max_queries_per_id: Optional[int] = None,
    height_range: Tuple[float, float] = (0.4, 0.9),
    similar_fraction: float = 0.3,
    edge_fraction: float = 0.1,
    occluder_prob: float = 0.3,
    jpeg_quality: int = 90,
    num_workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Dict[str, Any]:
    """Generate a synthetic PRW at ``root`` in the official layout (module docstring).

    Each camera has a fixed background and lighting (plus a small per-frame jitter), so the same
    identity looks different across cameras. Training and test identities are disjoint and appear
    only in training / test frames; every test identity appears in test frames of at least two
    cameras, and gets one query per camera it appears in (ours; real PRW: 2,057 queries for 450
    identities), so the cross-camera protocol always has targets. Raw ids are a random subset of
    1..~1.2 x (number of ids), i.e. not contiguous, like the real ones; unlabelled people get -2.

    Args:
        root: output folder (e.g. ``<out>/PRW``); written atomically.
        seed: random seed; same seed and arguments -> identical files.
        num_cameras: number of cameras (real: 6), >= 2.
        num_train_frames: training frames (real: 5,704).
        num_test_frames: test frames (real: 6,112).
        num_train_ids: training identities (real: 482).
        num_test_ids: test (query) identities (real: 450).
        image_size: (width, height) of every frame.
        sequences_per_camera: video sequences per camera (``s{seq}`` in the frame names).
        persons_per_frame: (min, max) people per frame.
        appearances_per_id: (min, max) frames per identity (min >= 2). Ours: (3, 10) by default,
            drawn uniformly: more than for CUHK-SYSU, because real PRW identities recur in many
            frames (about 80 % of its boxes are labelled, against about 25 % in CUHK-SYSU).
        cameras_per_test_id: (min, max) cameras per test identity (min >= 2; max is capped at
            ``num_cameras``).
        max_queries_per_id: cap on queries per test identity (None = one per camera).
        height_range: person heights as fractions of the frame height.
        similar_fraction: fraction of identities made as look-alikes of another identity.
        edge_fraction: fraction of frames where one person is cut by the left or top border (its
            box then has a negative x or y, as in the real annotations).
        occluder_prob: probability per frame of an object occluding one person.
        jpeg_quality: JPEG quality.
        num_workers: processes for rendering (0 = this process); output does not depend on it.
        overwrite: replace an existing ``root``.
        progress: show a progress bar.

    Returns:
        Statistics (also stored as ``root/synthetic_stats.json``).

    Raises:
        ValueError: inconsistent sizes, naming the argument.
        FileExistsError: ``root`` exists and ``overwrite`` is False.
    """
    t_start = time.time()
    width, height = _check_image_size(image_size)
    pmin, pmax = _check_range("persons_per_frame", persons_per_frame, 1)
    amin, amax = _check_range("appearances_per_id", appearances_per_id, 2)
    cmin, cmax = _check_range("cameras_per_test_id", cameras_per_test_id, 2)
    if num_cameras < 2:
        raise ValueError(
            f"num_cameras must be >= 2 (test identities cross cameras), got {num_cameras}")
    if cmin > num_cameras:
        raise ValueError(f"cameras_per_test_id min ({cmin}) exceeds num_cameras ({num_cameras})")
    cmax = min(cmax, num_cameras)
    if cmin > amax:
        raise ValueError(
            f"cameras_per_test_id min ({cmin}) exceeds appearances_per_id max ({amax})")
    if num_test_frames < 2 * num_cameras or num_train_frames < num_cameras:
        raise ValueError(
            f"need at least 2 test frames and 1 training frame per camera: num_test_frames="
            f"{num_test_frames}, num_train_frames={num_train_frames}, num_cameras={num_cameras}")
    if sequences_per_camera < 1:
        raise ValueError(f"sequences_per_camera must be >= 1, got {sequences_per_camera}")
    if max_queries_per_id is not None and max_queries_per_id < 1:
        raise ValueError(f"max_queries_per_id must be >= 1 or None, got {max_queries_per_id}")
    for split, n_img, n_ids in (("train", num_train_frames, num_train_ids),
                                ("test", num_test_frames, num_test_ids)):
        if n_ids < 1:
            raise ValueError(f"num_{split}_ids must be >= 1, got {n_ids}")
        if n_img * pmax < n_ids * amax:
            raise ValueError(
                f"not enough room for the {split} identities: {n_ids} ids x up to {amax} "
                f"appearances need more than {n_img} frames x {pmax} persons; raise "
                f"num_{split}_frames or persons_per_frame, or lower num_{split}_ids")

    lrng = _rng(seed, _PRW_STREAM, 0)
    num_frames = num_train_frames + num_test_frames
    cam_of = np.zeros(num_frames, dtype=np.int64)
    is_test = np.zeros(num_frames, dtype=bool)
    frame_names: List[str] = []
    per_cam = [len(a) for a in np.array_split(np.arange(num_frames), num_cameras)]
    test_per_cam = [len(a) for a in np.array_split(np.arange(num_test_frames), num_cameras)]
    f0 = 0
    for c in range(num_cameras):
        n_c = per_cam[c]
        seq_of = np.sort(lrng.integers(1, sequences_per_camera + 1, size=n_c))
        counters = {s: int(lrng.integers(1, 300)) for s in range(1, sequences_per_camera + 1)}
        for t in range(n_c):
            s = int(seq_of[t])
            counters[s] += 25 * int(lrng.integers(1, 5))  # ours: frames ~1-4 s apart at 25 fps
            frame_names.append(f"c{c + 1}s{s}_{counters[s]:06d}")
        cam_of[f0:f0 + n_c] = c + 1
        is_test[f0 + lrng.choice(n_c, size=min(test_per_cam[c], n_c - 1), replace=False)] = True
        f0 += n_c
    # top up test frames if a camera could not take its share (tiny sizes)
    missing = num_test_frames - int(is_test.sum())
    if missing > 0:
        free = np.flatnonzero(~is_test)
        is_test[lrng.choice(free, size=missing, replace=False)] = True

    num_ids = num_train_ids + num_test_ids
    id_space = np.arange(1, int(num_ids * 1.2) + 2)  # ours: raw ids leave gaps, like PRW's
    raw_ids = np.sort(lrng.choice(id_space, size=num_ids, replace=False))
    perm = lrng.permutation(num_ids)
    train_raw = np.sort(raw_ids[perm[:num_train_ids]])
    test_raw = np.sort(raw_ids[perm[num_train_ids:]])
    apps = make_identity_appearances(num_ids, lrng, similar_fraction)
    k_app = _num_appearances(lrng, amin, amax, num_ids, decay=1.0)
    n_persons = lrng.integers(pmin, pmax + 1, size=num_frames)
    frame_labels: List[List[int]] = [[] for _ in range(num_frames)]
    # identity index i < num_train_ids -> train_raw[i]; else test_raw[i - num_train_ids]
    for split_ids, mask, c_lo, c_hi in (
        (range(num_train_ids), ~is_test, 1, min(3, num_cameras)),
        (range(num_train_ids, num_ids), is_test, cmin, cmax),
    ):
        frames = np.flatnonzero(mask)
        cap = np.zeros(num_frames, dtype=np.int64)
        cap[frames] = n_persons[frames]
        need = int(sum(max(k_app[i], c_lo) for i in split_ids))
        if need > int(cap.sum()):
            for j in lrng.permutation(frames):
                add = min(pmax - n_persons[j], need - int(cap.sum()))
                n_persons[j] += add
                cap[j] += add
                if need <= cap.sum():
                    break
        for i in lrng.permutation(np.asarray(list(split_ids))):
            cams = [c for c in range(1, num_cameras + 1)
                    if (cap[frames][cam_of[frames] == c] > 0).any()]
            k = int(max(k_app[i], c_lo))
            n_c = int(lrng.integers(c_lo, min(c_hi, len(cams), k) + 1)) if len(cams) >= c_lo else 0
            if n_c < c_lo:
                raise ValueError(
                    f"could not place identity across {c_lo} cameras; raise num_*_frames")
            chosen = lrng.choice(np.asarray(cams), size=n_c, replace=False)
            picks: List[int] = []
            for c in chosen:
                cands = frames[(cam_of[frames] == c) & (cap[frames] > 0)]
                picks.append(int(_weighted_pick(lrng, cands, cap, 1)[0]))
            rest = frames[np.isin(cam_of[frames], chosen) & (cap[frames] > 0)]
            rest = rest[~np.isin(rest, picks)]
            extra = min(k - n_c, len(rest))
            if extra > 0:
                picks += [int(x) for x in _weighted_pick(lrng, rest, cap, extra)]
            for j in picks:
                frame_labels[j].append(int(i))
                cap[j] -= 1
    edge = lrng.random(num_frames) < edge_fraction
    if edge_fraction > 0 and not edge.any():
        edge[int(lrng.integers(num_frames))] = True

    cameras = range(1, num_cameras + 1)
    cam_styles = {c: _random_background_style(_rng(seed, _PRW_STREAM, 5, c)) for c in cameras}
    cam_light = {c: _random_lighting(_rng(seed, _PRW_STREAM, 6, c), spread=1.3) for c in cameras}
    cam_scale = {c: float(_rng(seed, _PRW_STREAM, 7, c).uniform(0.85, 1.1)) for c in cameras}

    def raw_id(i: int) -> int:
        return int(train_raw[i]) if i < num_train_ids else int(test_raw[i - num_train_ids])

    with _AtomicDir(root, overwrite) as tmp:
        os.makedirs(os.path.join(tmp, "frames"))
        os.makedirs(os.path.join(tmp, "annotations"))
        logger.info("PRW: rendering %d frames (%dx%d, %d cameras) into %s",
                    num_frames, width, height, num_cameras, root)
        jobs = []
        for j in range(num_frames):
            c = int(cam_of[j])
            jrng = _rng(seed, _PRW_STREAM, 1, j)
            people = [(apps[i], i) for i in frame_labels[j]]
            n_unlabelled = int(n_persons[j]) - len(people)
            people += [(random_appearance(jrng), -1) for _ in range(n_unlabelled)]
            people = [people[o] for o in jrng.permutation(len(people))]
            b, cast = cam_light[c]
            jit = _random_lighting(jrng, spread=0.25)
            lighting = (b * jit[0], tuple(x * y for x, y in zip(cast, jit[1])))
            hr = (height_range[0] * cam_scale[c], min(1.0, height_range[1] * cam_scale[c]))
            side = "left" if jrng.random() < 0.5 else "top"
            jobs.append(_ImageJob(
                path=os.path.join(tmp, "frames", frame_names[j] + ".jpg"), width=width,
                height=height, seed_keys=(seed, _PRW_STREAM, 2, j), people=people,
                background=cam_styles[c], height_range=hr, edge_person=side if edge[j] else None,
                occluder_prob=occluder_prob, lighting=lighting,  # type: ignore[arg-type]
                jpeg_quality=jpeg_quality))
        results = _run_jobs(jobs, num_workers, progress, "PRW frames")

        key_counts = {k: 0 for k in PRW_ANNOTATION_KEYS}
        n_lab = n_unl = n_neg = 0
        appearances: Dict[int, List[Tuple[int, Tuple[float, float, float, float], bool]]] = {}
        order = sorted(range(num_frames), key=lambda j: frame_names[j])
        for rank, j in enumerate(order):
            rows = []
            for label, (x1, y1, x2, y2), visible in results[j]:
                pid = raw_id(label) if label >= 0 else -2
                rows.append([pid, x1, y1, x2 - x1, y2 - y1])
                n_neg += int(x1 < 0 or y1 < 0)
                if label >= 0:
                    n_lab += 1
                    hard = _is_hard(visible, y2 - y1, height) or x1 < 0 or y1 < 0
                    appearances.setdefault(label, []).append((j, (x1, y1, x2 - x1, y2 - y1), hard))
                else:
                    n_unl += 1
            key = PRW_ANNOTATION_KEYS[rank % len(PRW_ANNOTATION_KEYS)]
            key_counts[key] += 1
            _write_mat(os.path.join(tmp, "annotations", frame_names[j] + ".jpg.mat"),
                       {key: np.asarray(rows, dtype=np.float64).reshape(-1, 5)})

        def name_cell(idx: Iterable[int]) -> np.ndarray:
            ns = sorted(frame_names[j] for j in idx)
            cell = np.empty((len(ns), 1), dtype=object)
            for t, n in enumerate(ns):
                cell[t, 0] = n
            return cell

        _write_mat(os.path.join(tmp, "frame_train.mat"),
                   {"img_index_train": name_cell(np.flatnonzero(~is_test))})
        _write_mat(os.path.join(tmp, "frame_test.mat"),
                   {"img_index_test": name_cell(np.flatnonzero(is_test))})
        _write_mat(os.path.join(tmp, "ID_train.mat"),
                   {"ID_train": train_raw.astype(np.float64)[None, :]})

        qrng = _rng(seed, _PRW_STREAM, 4)
        lines = []
        for i in sorted(range(num_train_ids, num_ids), key=raw_id):
            by_cam: Dict[int, List[Tuple[int, Tuple[float, ...], bool]]] = {}
            for a in appearances[i]:
                by_cam.setdefault(int(cam_of[a[0]]), []).append(a)
            cams = sorted(by_cam)
            if max_queries_per_id is not None and len(cams) > max_queries_per_id:
                picked = qrng.choice(cams, size=max_queries_per_id, replace=False)
                cams = sorted(int(c) for c in picked)
            for c in cams:
                cands = [a for a in by_cam[c] if not a[2]] or by_cam[c]
                j, (x, y, w, h), _ = cands[int(qrng.integers(len(cands)))]
                lines.append(f"{raw_id(i)} {x:.1f} {y:.1f} {w:.1f} {h:.1f} {frame_names[j]}\r\n")
        with open(os.path.join(tmp, "query_info.txt"), "wb") as f:
            f.write("".join(lines).encode("ascii"))

        stats = {
            "dataset": "PRW (synthetic)",
            "root": os.path.abspath(root),
            "seed": int(seed),
            "image_size": [width, height],
            "cameras": num_cameras,
            "frames": num_frames,
            "train_frames": int((~is_test).sum()),
            "test_frames": int(is_test.sum()),
            "boxes": n_lab + n_unl,
            "labelled_boxes": n_lab,
            "unlabelled_boxes": n_unl,
            "negative_coordinate_boxes": n_neg,
            "train_ids": num_train_ids,
            "test_ids": num_test_ids,
            "queries": len(lines),
            "annotation_keys": key_counts,
        }
        stats["seconds"] = round(time.time() - t_start, 2)
        stats["disk_bytes"] = _dir_size(tmp)
        with open(os.path.join(tmp, STATS_FILE), "w") as f:
            json.dump(stats, f, indent=1, sort_keys=True)
    logger.info("PRW written to %s in %.1f s", root, stats["seconds"])
    return stats


# =============================================================================================
# Both, on demand
# =============================================================================================
def default_synthetic_root() -> str:
    """``$DETECTRON2_DATASETS/synthetic`` (``DETECTRON2_DATASETS`` defaults to ``datasets``)."""
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "synthetic")


def ensure_synthetic_datasets(
    base: Optional[str] = None,
    *,
    seed: int = 0,
    which: str = "both",
    cuhk_sysu: Optional[Dict[str, Any]] = None,
    prw: Optional[Dict[str, Any]] = None,
    num_workers: int = 0,
    progress: bool = True,
) -> Dict[str, Dict[str, Any]]:
    """Generate ``<base>/CUHK-SYSU`` and ``<base>/PRW`` unless they already exist.

    A dataset folder that exists is left untouched (the generator only creates it by an atomic
    rename at the very end, so an existing folder is complete); its statistics are read from its
    ``synthetic_stats.json`` (with ``"generated": False``).

    Args:
        base: parent folder; None = :func:`default_synthetic_root`.
        seed: random seed for both datasets.
        which: "cuhk_sysu", "prw" or "both".
        cuhk_sysu: extra keyword arguments for :func:`generate_cuhk_sysu`.
        prw: extra keyword arguments for :func:`generate_prw`.
        num_workers: rendering processes.
        progress: show progress bars.

    Returns:
        ``{"cuhk_sysu": stats, "prw": stats}`` for the datasets selected by ``which``.
    """
    if which not in ("cuhk_sysu", "prw", "both"):
        raise ValueError(f"which must be 'cuhk_sysu', 'prw' or 'both', got {which!r}")
    base = default_synthetic_root() if base is None else base
    out: Dict[str, Dict[str, Any]] = {}
    todo = [("cuhk_sysu", "CUHK-SYSU", generate_cuhk_sysu, cuhk_sysu or {}),
            ("prw", "PRW", generate_prw, prw or {})]
    for key, folder, fn, kw in todo:
        if which not in (key, "both"):
            continue
        root = os.path.join(base, folder)
        if os.path.isdir(root):
            stats_path = os.path.join(root, STATS_FILE)
            if os.path.isfile(stats_path):
                with open(stats_path) as f:
                    stats = json.load(f)
            else:
                logger.warning("%s exists but has no %s (not made by this generator?); left as is",
                               root, STATS_FILE)
                stats = {"root": os.path.abspath(root)}
            stats["generated"] = False
            out[key] = stats
            continue
        args = {"seed": seed, "num_workers": num_workers, "progress": progress}
        args.update(kw)
        stats = fn(root, **args)
        stats["generated"] = True
        out[key] = stats
    return out
