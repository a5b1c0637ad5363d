"""A second, differently rendered synthetic CUHK-SYSU: a stand-in for "a user's own data".

Its identities, people, scenes and :func:`generate_cuhk_sysu_alt` (command line: :func:`main`);
the layout and the files are those of :mod:`.cuhk_sysu`.

The training recipe of this project is developed on :mod:`dcinet_d2.data.synthetic`, whose persons
are sprites assembled from categorical attributes (hair style, upper pattern, lower style, bag,
facing) on flat backgrounds with a horizon. To show that the recipe is not tied to how that
generator draws people, this module renders another person-search dataset with no drawing code in
common, and writes it in the same official CUHK-SYSU layout, so that
:mod:`dcinet_d2.data.datasets.cuhk_sysu` and the protocol evaluator read it unchanged.

What differs from :mod:`dcinet_d2.data.synthetic`:
    * Identity = a continuous appearance: a palette of 2-4 clothing colours drawn in CIE LCh (not
      HSV), a procedural texture per garment (a continuous mix of value noise, checks, diagonal
      bands and dots, of random scale, angle and contrast), continuous skin and hair colour, hair
      length, sleeve and trouser length, and body build (shoulder and hip width, leg-length ratio,
      head size, limb thickness). Nothing is categorical.
    * Confusable identities: a fraction of identities copy the whole colour palette of an earlier
      identity and differ only in texture and/or build, so colour alone does not separate them.
    * Per appearance: pose (stride, knee bend, arm swing, elbow bend, lean), left/right mirror,
      slight colour jitter and scale.
    * Persons are unions of rotated ellipses and tapered capsules (head, hair, neck, torso, arms,
      hands, legs, feet) rasterised from signed distances with anti-aliased edges and cylindrical
      shading; textures live in body coordinates, so they follow the pose.
    * Backgrounds: sky gradient, random "buildings" (rectangles with window grids), a ground with
      a perspective tile grid, multi-octave value noise; per image a colour cast, gamma,
      vignetting, Gaussian blur, sensor noise and a random JPEG quality.
    * Default image size 320 x 240; person heights 30-80 % of the image height (perspective:
      nearer people stand lower), plus a few small far-away people; people cut by the left/right
      image border; foreground occluders (bushes, bollards, parked cars).

Shared with :mod:`dcinet_d2.data.synthetic` (imported, not copied): the argument checks and the
layout of who appears in which image (:func:`~.cuhk_sysu._plan_cuhk_sysu`), the annotation writers
and the query protocol (:func:`~.cuhk_sysu._write_cuhk_sysu`, incl. the ``ishard`` rule), the
atomic output folder and the job runner (:func:`~.cuhk_sysu._render_cuhk_sysu`), random streams and
the mixing of passers-by into a scene (:mod:`.jobs`). Boxes are amodal as there (the whole
silhouette, also where an occluder hides it), but clipped to the image where a person is cut by
the image border.

Generate (from the repository root)::

    python -m dcinet_d2.data.synthetic.alt --out datasets/synthetic_alt [--seed 0] [--force]

which writes ``datasets/synthetic_alt/CUHK-SYSU``, registered in Detectron2 as
``synthetic_alt_cuhk_sysu_{train,test}``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from .cuhk_sysu import _plan_cuhk_sysu, _render_cuhk_sysu
from .jobs import _check_range, _draw_identities, _Job, _rng, _scene_people

__all__ = [
    "lch_to_rgb",
    "GarmentTexture",
    "AltIdentity",
    "AltPose",
    "random_alt_identity",
    "confusable_alt_identity",
    "make_alt_identities",
    "random_alt_pose",
    "render_alt_person",
    "generate_cuhk_sysu_alt",
    "main",
]

RGB = tuple[float, float, float]
_ALT_STREAM = 7  # ours: random-stream tag, apart from CUHK-SYSU's (1) and PRW's (2)
_NOISE_GRID = 12  # ours: cells per side of a garment's periodic value-noise grid


# =============================================================================================
# Colour
# =============================================================================================
def lch_to_rgb(lch: np.ndarray | Sequence[float]) -> np.ndarray:
    """CIE LCh(ab) (L 0-100, chroma, hue in degrees; D65) -> sRGB in [0, 1], clipped to gamut."""
    lch = np.asarray(lch, dtype=np.float64)
    L, C, h = lch[..., 0], lch[..., 1], np.deg2rad(lch[..., 2])
    fy = (L + 16.0) / 116.0
    fx, fz = fy + C * np.cos(h) / 500.0, fy - C * np.sin(h) / 200.0
    d = 6.0 / 29.0

    def finv(t: np.ndarray) -> np.ndarray:
        return np.where(t > d, t**3, 3.0 * d * d * (t - 4.0 / 29.0))

    xyz = np.stack([0.95047 * finv(fx), finv(fy), 1.08883 * finv(fz)], axis=-1)
    m = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    lin = np.clip(xyz @ m.T, 0.0, 1.0)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1.0 / 2.4) - 0.055)


def _lch(
    rng: np.random.Generator,
    lum: tuple[float, float],
    chroma: tuple[float, float],
    hue: tuple[float, float] = (0.0, 360.0),
) -> RGB:
    c = lch_to_rgb([rng.uniform(*lum), rng.uniform(*chroma), rng.uniform(*hue)])
    return (float(c[0]), float(c[1]), float(c[2]))


def _garment_colour(rng: np.random.Generator) -> RGB:
    # ours: 30 % near-neutral garments (chroma < 10), the rest from the whole LCh gamut
    if rng.random() < 0.3:
        return _lch(rng, (12.0, 95.0), (0.0, 10.0))
    return _lch(rng, (20.0, 85.0), (15.0, 75.0))


# =============================================================================================
# Identities and poses
# =============================================================================================
@dataclass(frozen=True)
class GarmentTexture:
    """A procedural texture in body coordinates (units of the person's height).

    The texture value is ``weights . (noise, checks, bands, dots)`` in [0, 1]; the garment colour
    is ``(1 - contrast * t) * colour1 + contrast * t * colour2``.
    """

    weights: tuple[float, float, float, float]
    period: float
    angle: float
    contrast: float
    noise_seed: int


@dataclass(frozen=True)
class AltIdentity:
    """What makes one person recognisable: continuous colours, textures and body build.

    Lengths are fractions of the person's height; ``sleeve``/``trouser`` are the covered fractions
    of arm/leg length.
    """

    skin: RGB
    hair: RGB
    hair_length: float
    upper: RGB
    upper2: RGB
    lower: RGB
    lower2: RGB
    shoes: RGB
    upper_texture: GarmentTexture
    lower_texture: GarmentTexture
    shoulder: float
    hip: float
    leg: float
    head: float
    limb: float
    sleeve: float
    trouser: float


@dataclass(frozen=True)
class AltPose:
    """Per-appearance variation: mirror, gait, arm pose, lean, colour jitter (RGB gains)."""

    mirror: bool
    stride: float
    knee: float
    arm_swing: float
    arm_out: float
    elbow: float
    lean: float
    gains: tuple[float, float, float]


def _random_texture(rng: np.random.Generator) -> GarmentTexture:
    w = rng.dirichlet([0.35, 0.35, 0.35, 0.35])  # ours: mostly one dominant texture component
    return GarmentTexture(
        weights=(float(w[0]), float(w[1]), float(w[2]), float(w[3])),
        period=float(rng.uniform(0.035, 0.15)),  # ours: 3.5-15 % of the person's height
        angle=float(rng.uniform(0.0, math.pi)),
        contrast=float(rng.uniform(0.0, 1.0) ** 0.7),  # ours: favour visible textures
        noise_seed=int(rng.integers(2**31 - 1)),
    )


def _random_build(rng: np.random.Generator) -> dict[str, float]:
    return {
        "shoulder": float(rng.uniform(0.085, 0.135)),  # ours: half shoulder width
        "hip": float(rng.uniform(0.065, 0.10)),  # ours: half hip width
        "leg": float(rng.uniform(0.43, 0.53)),  # ours: hip height (leg-length ratio)
        "head": float(rng.uniform(0.055, 0.072)),  # ours: head radius
        "limb": float(rng.uniform(0.022, 0.034)),  # ours: arm radius at the shoulder
    }


def random_alt_identity(rng: np.random.Generator) -> AltIdentity:
    """Draw a new, independent identity (palette of 2-4 garment colours, textures, build)."""
    palette = [_garment_colour(rng) for _ in range(int(rng.integers(2, 5)))]
    upper2 = palette[2] if len(palette) > 2 else palette[1]
    lower2 = palette[3] if len(palette) > 3 else palette[0]
    tone = float(rng.uniform(0.0, 1.0))  # ours: skin along a light-dark ramp in LCh
    skin = lch_to_rgb([88.0 - 60.0 * tone, 14.0 + 10.0 * tone, rng.uniform(45.0, 70.0)])
    return AltIdentity(
        skin=(float(skin[0]), float(skin[1]), float(skin[2])),
        hair=_lch(rng, (8.0, 70.0), (0.0, 35.0), (30.0, 90.0)),  # ours: black-brown-blond-grey
        hair_length=float(rng.uniform(0.0, 1.0)),
        upper=palette[0],
        upper2=upper2,
        lower=palette[1],
        lower2=lower2,
        shoes=_lch(rng, (8.0, 80.0), (0.0, 30.0)),
        upper_texture=_random_texture(rng),
        lower_texture=_random_texture(rng),
        sleeve=float(rng.uniform(0.2, 1.0)),  # ours: short to long sleeves
        trouser=float(rng.uniform(0.35, 1.0)),  # ours: shorts to full-length trousers
        **_random_build(rng),
    )


def confusable_alt_identity(base: AltIdentity, rng: np.random.Generator) -> AltIdentity:
    """A look-alike of ``base``: the same palette, skin and hair, another texture and/or build."""
    d = dict(base.__dict__)
    mode = rng.random()
    # ours: 40 % new textures only, 30 % new textures and build, 30 % new build only
    if mode < 0.7:
        d["upper_texture"] = _random_texture(rng)
        d["lower_texture"] = _random_texture(rng)
    if mode >= 0.4:
        d.update(_random_build(rng))
        d["sleeve"] = float(rng.uniform(0.2, 1.0))
    return AltIdentity(**d)


def make_alt_identities(
    num: int, rng: np.random.Generator, confusable_fraction: float = 0.3
) -> list[AltIdentity]:
    """``num`` identities; each one with probability ``confusable_fraction`` a look-alike
    (:func:`confusable_alt_identity`) of a random earlier identity."""
    return _draw_identities(
        num, rng, confusable_fraction, random_alt_identity, confusable_alt_identity
    )


def random_alt_pose(rng: np.random.Generator) -> AltPose:
    """Draw the per-appearance variation of a person."""
    return AltPose(
        mirror=bool(rng.random() < 0.5),
        stride=float(rng.uniform(0.0, 0.45)),  # ours: angle between the thighs, radians
        knee=float(rng.uniform(0.0, 0.35)),
        arm_swing=float(rng.uniform(-0.45, 0.45)),
        arm_out=float(rng.uniform(0.04, 0.22)),
        elbow=float(rng.uniform(0.0, 0.7)),
        lean=float(rng.uniform(-0.05, 0.05)),
        gains=tuple(float(g) for g in np.clip(rng.normal(1.0, 0.035, 3), 0.9, 1.1)),  # type: ignore
    )


# =============================================================================================
# Person rendering: signed distances of ellipses and tapered capsules in body coordinates
# =============================================================================================
_SKIN, _HAIR, _UPPER, _LOWER, _SHOES = range(5)
_EXTENT_X, _EXTENT_TOP, _EXTENT_BOTTOM = 0.55, 1.04, 0.03  # ours: body-frame patch extent


def _capsule(
    px: np.ndarray,
    py: np.ndarray,
    a: tuple[float, float],
    b: tuple[float, float],
    ra: float,
    rb: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tapered capsule a-b: (signed distance, position 0..1 along a-b, distance/radius)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    t = np.clip(((px - a[0]) * dx + (py - a[1]) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    dist = np.hypot(px - a[0] - t * dx, py - a[1] - t * dy)
    r = ra + t * (rb - ra)
    return dist - r, t, dist / r


def _ellipse(
    px: np.ndarray, py: np.ndarray, c: tuple[float, float], ax: float, ay: float, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rotated ellipse: (approximate signed distance f / |grad f|, normalised radius)."""
    ca, sa = math.cos(angle), math.sin(angle)
    u = (px - c[0]) * ca + (py - c[1]) * sa
    v = -(px - c[0]) * sa + (py - c[1]) * ca
    k = np.sqrt((u / ax) ** 2 + (v / ay) ** 2)
    grad = np.sqrt((u / ax**2) ** 2 + (v / ay**2) ** 2) / np.maximum(k, 1e-9)
    return (k - 1.0) / np.maximum(grad, 1e-9), k


def _texture_value(tex: GarmentTexture, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """The texture value in [0, 1] at body coordinates (px, py)."""
    ca, sa = math.cos(tex.angle), math.sin(tex.angle)
    u = (px * ca + py * sa) / tex.period
    v = (-px * sa + py * ca) / tex.period
    out = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=np.float32)
    w_noise, w_checks, w_bands, w_dots = tex.weights
    if w_noise > 0.02:  # ours: components below 2 % are not computed
        grid = np.random.default_rng(tex.noise_seed).random(
            (_NOISE_GRID, _NOISE_GRID), dtype=np.float32
        )
        gu, gv = u * 0.5, v * 0.5  # ours: noise blobs of twice the period
        iu, iv = np.floor(gu).astype(np.int64), np.floor(gv).astype(np.int64)
        fu, fv = gu - iu, gv - iv
        fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
        iu, iv = iu % _NOISE_GRID, iv % _NOISE_GRID
        ju, jv = (iu + 1) % _NOISE_GRID, (iv + 1) % _NOISE_GRID
        out += w_noise * (
            (grid[iv, iu] * (1 - fu) + grid[iv, ju] * fu) * (1 - fv)
            + (grid[jv, iu] * (1 - fu) + grid[jv, ju] * fu) * fv
        )
    if w_checks > 0.02:
        out += w_checks * (0.5 + 0.5 * np.tanh(3.0 * np.sin(math.pi * u) * np.sin(math.pi * v)))
    if w_bands > 0.02:
        out += w_bands * (0.5 + 0.5 * np.tanh(3.0 * np.sin(2.0 * math.pi * u)))
    if w_dots > 0.02:
        out += w_dots * np.clip((0.32 - np.hypot(u - np.round(u), v - np.round(v))) * 8.0, 0, 1)
    return out


class _PersonCanvas:
    """Premultiplied RGBA patch of one person; parts are composited back to front."""

    def __init__(self, ident: AltIdentity, pose: AltPose, height_px: float):
        self.ident, self.pose, self.h = ident, pose, float(height_px)
        self.w_px = int(math.ceil(2 * _EXTENT_X * height_px)) + 4
        self.h_px = int(math.ceil((_EXTENT_TOP + _EXTENT_BOTTOM) * height_px)) + 4
        self.origin = (self.w_px / 2.0, 2.0 + _EXTENT_TOP * height_px)  # the feet, in pixels
        self.prem = np.zeros((self.h_px, self.w_px, 3), dtype=np.float32)
        self.alpha = np.zeros((self.h_px, self.w_px), dtype=np.float32)
        self.cos, self.sin = math.cos(pose.lean), math.sin(pose.lean)
        self.flip = -1.0 if pose.mirror else 1.0
        gains = np.asarray(pose.gains, dtype=np.float32)
        self.colours = {
            m: np.asarray(c, dtype=np.float32) * gains
            for m, c in ((_SKIN, ident.skin), (_HAIR, ident.hair), (_SHOES, ident.shoes))
        }
        self.garments = {
            _UPPER: (
                np.asarray(ident.upper, np.float32) * gains,
                np.asarray(ident.upper2, np.float32) * gains,
                ident.upper_texture,
            ),
            _LOWER: (
                np.asarray(ident.lower, np.float32) * gains,
                np.asarray(ident.lower2, np.float32) * gains,
                ident.lower_texture,
            ),
        }

    def _to_pixels(self, x: float, y: float) -> tuple[float, float]:
        x = self.flip * x
        return (
            self.origin[0] + self.h * (self.cos * x - self.sin * y),
            self.origin[1] + self.h * (self.sin * x + self.cos * y),
        )

    def window(
        self, x0: float, y0: float, x1: float, y1: float
    ) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
        """Pixel window covering the body-frame box, and body coordinates of its pixel centres."""
        corners = [self._to_pixels(x, y) for x in (x0, x1) for y in (y0, y1)]
        c0 = max(0, int(math.floor(min(c[0] for c in corners))) - 1)
        c1 = min(self.w_px, int(math.ceil(max(c[0] for c in corners))) + 2)
        r0 = max(0, int(math.floor(min(c[1] for c in corners))) - 1)
        r1 = min(self.h_px, int(math.ceil(max(c[1] for c in corners))) + 2)
        if c1 <= c0 or r1 <= r0:
            return None
        gx = (np.arange(c0, c1, dtype=np.float32) + 0.5 - self.origin[0]) / self.h
        gy = (np.arange(r0, r1, dtype=np.float32) + 0.5 - self.origin[1]) / self.h
        X, Y = gx[None, :], gy[:, None]
        bx = self.flip * (self.cos * X + self.sin * Y)
        by = -self.sin * X + self.cos * Y
        return slice(r0, r1), slice(c0, c1), bx, by

    def colour(self, material: int, bx: np.ndarray, by: np.ndarray) -> np.ndarray:
        if material in self.garments:
            c1, c2, tex = self.garments[material]
            t = (tex.contrast * _texture_value(tex, bx, by))[..., None]
            return c1 * (1.0 - t) + c2 * t
        return np.broadcast_to(self.colours[material], bx.shape + (3,))

    def paint(
        self,
        win: tuple[slice, slice, np.ndarray, np.ndarray],
        sd: np.ndarray,
        rgb: np.ndarray,
        shade: np.ndarray,
    ) -> None:
        rs, cs, _, _ = win
        cov = np.clip(0.5 - sd * self.h, 0.0, 1.0).astype(np.float32)
        col = rgb * np.clip(shade, 0.0, 1.2)[..., None]
        self.prem[rs, cs] = self.prem[rs, cs] * (1.0 - cov[..., None]) + col * cov[..., None]
        self.alpha[rs, cs] = self.alpha[rs, cs] * (1.0 - cov) + cov

    def capsule(
        self,
        a: tuple[float, float],
        b: tuple[float, float],
        ra: float,
        rb: float,
        material: int,
        split: tuple[float, int] | None = None,
        dim: float = 1.0,
    ) -> None:
        """Draw a capsule; ``split = (t, material2)``: material2 beyond position t along a-b."""
        r = max(ra, rb)
        win = self.window(
            min(a[0], b[0]) - r, min(a[1], b[1]) - r, max(a[0], b[0]) + r, max(a[1], b[1]) + r
        )
        if win is None:
            return
        _, _, bx, by = win
        sd, t, q = _capsule(bx, by, a, b, ra, rb)
        rgb = self.colour(material, bx, by)
        if split is not None:
            rgb = np.where((t > split[0])[..., None], self.colour(split[1], bx, by), rgb)
        self.paint(win, sd, rgb, dim * (1.05 - 0.4 * np.minimum(q, 1.0) ** 2))

    def ellipse(
        self,
        c: tuple[float, float],
        ax: float,
        ay: float,
        angle: float,
        material: int,
        below: float | None = None,
    ) -> None:
        """Draw an ellipse; ``below``: keep only the part above body height ``below``."""
        r = max(ax, ay)
        win = self.window(c[0] - r, c[1] - r, c[0] + r, c[1] + r)
        if win is None:
            return
        _, _, bx, by = win
        sd, k = _ellipse(bx, by, c, ax, ay, angle)
        if below is not None:
            sd = np.maximum(sd, by - below)
        self.paint(win, sd, self.colour(material, bx, by), 1.05 - 0.3 * np.minimum(k, 1.0) ** 2)


def _limb(
    root: tuple[float, float], a1: float, a2: float, l1: float, l2: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Joint and end of a two-segment limb hanging from ``root`` (angles from straight down)."""
    j = (root[0] + l1 * math.sin(a1), root[1] + l1 * math.cos(a1))
    return j, (j[0] + l2 * math.sin(a2), j[1] + l2 * math.cos(a2))


def render_alt_person(
    ident: AltIdentity, pose: AltPose, height_px: float
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int], tuple[float, float]]:
    """Render one person on a transparent patch.

    The body frame has its origin between the feet, y pointing down, the top of the head at
    y = -1 (units of the person's height); the person faces +x before mirroring.

    Args:
        ident: the identity.
        pose: the per-appearance variation.
        height_px: the person's height in pixels.

    Returns:
        (premultiplied rgb (h, w, 3) float32, alpha (h, w) float32 in [0, 1], tight box
        (x1, y1, x2, y2) of the pixels with alpha > 0.05 (exclusive end), the feet (x, y) in patch
        pixels).
    """
    p = _PersonCanvas(ident, pose, height_px)
    rh, sw, hw, lr = ident.head, ident.shoulder, ident.hip, ident.limb
    head_c = (0.012, -1.0 + 1.1 * rh)  # ours: the head slightly forward
    neck_y = -1.0 + 2.15 * rh
    sh_y = neck_y + 0.03  # ours: shoulder line just below the neck
    hip_y, ankle_y = -ident.leg, -0.045
    waist_y = hip_y - 0.05  # ours: where the lower garment starts on the torso

    # arms: index 0 is the far arm (drawn first, darker), 1 the near arm
    arms = []
    for side, swing in ((-1.0, pose.arm_swing), (1.0, -pose.arm_swing)):
        root = (side * (sw - 0.6 * lr), sh_y + lr)
        a1 = swing + side * pose.arm_out
        elbow, wrist = _limb(root, a1, a1 + pose.elbow * (1.0 if swing > 0 else 0.4), 0.17, 0.155)
        arms.append((root, elbow, wrist))
    legs = []
    for sign in (-1.0, 1.0):
        hip = (sign * 0.45 * hw, hip_y)
        a1 = sign * pose.stride / 2
        seg = (ankle_y - hip_y) / 2.0
        knee, ankle = _limb(hip, a1, a1 - pose.knee * (sign < 0), seg, seg)
        legs.append((hip, knee, ankle))

    Point = tuple[float, float]

    def draw_arm(root: Point, elbow: Point, wrist: Point, dim: float) -> None:
        # the sleeve covers the fraction ident.sleeve of the arm (the upper arm is the first half)
        split = (min(1.0, ident.sleeve * 2.0), _SKIN)
        p.capsule(root, elbow, lr, 0.85 * lr, _UPPER, split, dim)
        fore = (max(0.0, ident.sleeve * 2.0 - 1.0), _SKIN) if ident.sleeve > 0.5 else None
        p.capsule(elbow, wrist, 0.85 * lr, 0.7 * lr, _UPPER if fore else _SKIN, fore, dim)
        dx, dy = wrist[0] - elbow[0], wrist[1] - elbow[1]
        p.ellipse(
            (wrist[0] + 0.3 * dx, wrist[1] + 0.3 * dy),
            0.85 * lr,
            1.1 * lr,
            -math.atan2(dx, dy),
            _SKIN,
        )  # the hand along the forearm

    def draw_leg(hip: Point, knee: Point, ankle: Point, dim: float) -> None:
        covered = ident.trouser * 2.0  # as the sleeve: the thigh is the first half of the leg
        p.capsule(
            hip,
            knee,
            1.45 * lr,
            1.2 * lr,
            _LOWER,
            (min(1.0, covered), _SKIN) if covered < 1.0 else None,
            dim,
        )
        p.capsule(
            knee,
            ankle,
            1.2 * lr,
            0.95 * lr,
            _LOWER if covered > 1.0 else _SKIN,
            (covered - 1.0, _SKIN) if 1.0 < covered < 2.0 else None,
            dim,
        )
        tilt = -0.6 * math.atan2(ankle[0] - knee[0], ankle[1] - knee[1])  # ours: toes follow shin
        p.ellipse((ankle[0] + 0.022, ankle[1] + 0.02), 0.05, 0.024, tilt, _SHOES)

    if ident.hair_length > 0.35:  # ours: long hair hangs behind the shoulders
        p.capsule(
            head_c,
            (-0.01, head_c[1] + rh * (0.3 + 2.5 * ident.hair_length)),
            1.02 * rh,
            0.85 * rh,
            _HAIR,
            dim=0.85,
        )
    draw_arm(*arms[0], dim=0.8)
    for leg, dim in zip(legs, (0.82, 1.0)):
        draw_leg(*leg, dim=dim)
    top_y = sh_y + 0.7 * sw
    p.capsule(
        (0.0, top_y), (0.0, hip_y), sw, hw, _UPPER, ((waist_y - top_y) / (hip_y - top_y), _LOWER)
    )
    p.capsule((0.0, head_c[1]), (0.0, sh_y + 0.01), 0.42 * rh, 0.45 * rh, _SKIN)
    p.ellipse(head_c, 0.86 * rh, 1.08 * rh, 0.0, _SKIN)
    p.ellipse(
        (head_c[0] - 0.18 * rh, head_c[1] - 0.1 * rh),
        0.97 * rh,
        1.06 * rh,
        0.0,
        _HAIR,
        below=head_c[1] - rh * (0.35 - 0.4 * min(ident.hair_length, 0.5)),
    )
    draw_arm(*arms[1], dim=1.0)

    ys, xs = np.nonzero(p.alpha > 0.05)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return p.prem, p.alpha, box, p.origin


# =============================================================================================
# Backgrounds, occluders and scenes
# =============================================================================================
def _smooth_lookup(n_out: int, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid index and smoothstep weight of each of ``n_out`` samples over ``n_cells`` cells."""
    t = (np.arange(n_out, dtype=np.float32) + 0.5) * (n_cells / n_out)
    i = np.minimum(t.astype(np.int64), n_cells - 1)
    f = t - i
    return i, f * f * (3 - 2 * f)


def _fractal_noise(
    rng: np.random.Generator, h: int, w: int, cells: int, octaves: int
) -> np.ndarray:
    """Multi-octave value noise (h, w), about zero-mean, amplitude halving per octave."""
    out = np.zeros((h, w), dtype=np.float32)
    for o in range(octaves):
        n = cells * 2**o
        g = rng.random((n + 1, n + 1), dtype=np.float32) - 0.5
        iy, fy = _smooth_lookup(h, n)
        ix, fx = _smooth_lookup(w, n)
        rows = g[iy] * (1 - fy[:, None]) + g[iy + 1] * fy[:, None]  # (h, n + 1)
        out += 0.5**o * (rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx)
    return out


def _background(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, float]:
    """A street scene without people: (image (h, w, 3) float32, horizon row)."""
    hz = float(rng.uniform(0.3, 0.48)) * h  # ours: horizon between 30 and 48 % of the height
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    sky_hue = (200.0, 250.0) if rng.random() < 0.6 else (20.0, 80.0)  # ours: blue or dusk
    top = np.asarray(_lch(rng, (55.0, 80.0), (5.0, 30.0), sky_hue), np.float32)
    low = np.asarray(_lch(rng, (80.0, 95.0), (0.0, 12.0), sky_hue), np.float32)
    g = np.clip(ys / max(hz, 1.0), 0.0, 1.0)[..., None]
    img = np.broadcast_to(top * (1 - g) + low * g, (h, w, 3)).copy()

    for _ in range(int(rng.integers(2, 8))):  # ours: 2-7 buildings
        x0 = int(rng.uniform(-0.15, 0.95) * w)
        x1 = min(w, x0 + int(rng.uniform(0.12, 0.45) * w))
        x0 = max(0, x0)
        y0 = int(rng.uniform(0.0, 0.8) * hz)
        y1 = int(math.ceil(hz))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        facade = np.asarray(_lch(rng, (30.0, 85.0), (0.0, 28.0)), np.float32)
        block = np.broadcast_to(facade, (y1 - y0, x1 - x0, 3)).copy()
        if rng.random() < 0.75:  # ours: most buildings have a grid of windows
            sx, sy = rng.uniform(7.0, 22.0), rng.uniform(9.0, 26.0)
            fx, fy = rng.uniform(0.35, 0.7), rng.uniform(0.35, 0.7)
            u = ((xs[:, x0:x1] - x0 - 2) % sx) < fx * sx
            v = ((ys[y0:y1] - y0 - 3) % sy) < fy * sy
            glass = np.asarray(_lch(rng, (10.0, 75.0), (0.0, 30.0)), np.float32)
            block[u & v] = glass
        block *= np.linspace(1.05, 0.85, x1 - x0, dtype=np.float32)[None, :, None]
        img[y0:y1, x0:x1] = block

    ground = np.asarray(_lch(rng, (30.0, 75.0), (0.0, 18.0)), np.float32)
    hz_i = int(math.ceil(hz))
    depth = 1.0 / np.maximum(ys[hz_i:] - hz, 0.5)  # inverse distance below the horizon
    gy = np.clip((ys[hz_i:] - hz) / (h - hz), 0.0, 1.0)
    gimg = ground * (0.8 + 0.3 * gy)[..., None]
    strength = float(rng.uniform(0.0, 0.4))  # ours: 0 = plain gradient ground, else tiles
    if strength > 0.05:
        vx = float(rng.uniform(0.2, 0.8)) * w  # vanishing point of the tile lines
        d0 = h - hz  # depth below the horizon of the bottom row
        tw, td = rng.uniform(25.0, 70.0), rng.uniform(8.0, 25.0)  # ours: tile size (px), bottom
        gxc = (xs - vx) * depth * d0 / tw  # tile coordinates across and along the ground
        gzc = depth * d0 * d0 / td * np.ones_like(xs)
        lx = np.clip(1.0 - np.abs(gxc - np.round(gxc)) / np.maximum(depth * d0 / tw, 1e-6), 0, 1)
        lz = np.clip(
            1.0 - np.abs(gzc - np.round(gzc)) / np.maximum(depth**2 * d0 * d0 / td, 1e-6), 0, 1
        )
        fade = np.clip((ys[hz_i:] - hz) / (0.15 * h), 0.0, 1.0)
        gimg = gimg * (1.0 - strength * np.maximum(lx, lz) * fade)[..., None]
    img[hz_i:] = gimg
    img *= (1.0 + 0.35 * _fractal_noise(rng, h, w, 4, 3))[..., None]  # ours: dirt and shading
    return np.clip(img, 0.0, 1.0), hz


def _occluder(
    rng: np.random.Generator, box: tuple[float, float, float, float], w: int, h: int
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """A foreground object in front of the person with ``box``: (window, coverage, colour)."""
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    kind = float(rng.random())
    if kind < 0.4:  # ours: 40 % bush / planter over the lower 25-50 % of the person
        cx, top = x1 + rng.uniform(0.1, 0.9) * bw, y2 - rng.uniform(0.25, 0.5) * bh
        half, ry = rng.uniform(0.4, 0.9) * bw, y2 - top
        r0, c0, c1 = top - 0.3 * ry, cx - half - 0.7 * ry, cx + half + 0.7 * ry
        col = _lch(rng, (25.0, 55.0), (20.0, 45.0), (100.0, 150.0))  # ours: greens
    elif kind < 0.7:  # ours: 30 % bollard / pillar crossing the person
        cx, half = x1 + rng.uniform(0.15, 0.85) * bw, max(1.5, rng.uniform(0.08, 0.18) * bw)
        top = y1 + rng.uniform(-0.2, 0.5) * bh
        r0, c0, c1 = top, cx - half, cx + half
        col = _lch(rng, (20.0, 70.0), (0.0, 40.0))
    else:  # ours: 30 % parked car over the lower 30-55 % of the person
        top, cx = y2 - rng.uniform(0.3, 0.55) * bh, x1 + rng.uniform(-0.3, 1.3) * bw
        half, bottom = rng.uniform(0.8, 1.6) * bw, min(float(h), y2 + 0.05 * bh)
        r0, c0, c1 = top, cx - half, cx + half
        col = _garment_colour(rng)
    r0, c0, c1 = max(0, int(r0) - 1), max(0, int(c0) - 1), min(w, int(math.ceil(c1)) + 2)
    r1 = h
    if r1 <= r0 or c1 <= c0:
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0), np.float32), np.zeros(3, np.float32)
    py = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
    px = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5
    if kind < 0.4:  # a bush: union of 7 overlapping discs, leafy shading
        sd = np.full((r1 - r0, c1 - c0), np.inf, dtype=np.float32)
        for _ in range(7):
            ox, oy = cx + rng.uniform(-0.8, 0.8) * half, top + rng.uniform(0.5, 1.0) * ry
            sd = np.minimum(sd, np.hypot(px - ox, py - oy) - rng.uniform(0.45, 0.7) * ry)
        shade = 0.8 + 0.4 * _fractal_noise(rng, r1 - r0, c1 - c0, 3, 2)
    elif kind < 0.7:  # a bar with a rounded top, shaded as a cylinder
        sd = np.maximum(np.abs(px - cx) - half, top + half - py)
        sd = np.minimum(sd, np.hypot(px - cx, py - top - half) - half)
        shade = 1.1 - 0.5 * ((px - cx) / half) ** 2
    else:  # a rounded box with a dark window band and two wheels
        rad = 0.25 * (bottom - top)
        qx = np.abs(px - cx) - half + rad
        qy = np.abs(py - (top + bottom) / 2) - (bottom - top) / 2 + rad
        sd = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
        sd = sd - rad
        wy = bottom - 0.4 * rad  # ours: wheels of radius 0.22 x the body height, 0.6 x out
        wheels = (
            np.minimum(
                np.hypot(px - cx + 0.6 * half, py - wy), np.hypot(px - cx - 0.6 * half, py - wy)
            )
            - 0.88 * rad
        )
        sd = np.minimum(sd, wheels)
        shade = np.where(py < top + 0.35 * (bottom - top), 0.45, 1.0) * np.where(wheels < 0, 0.2, 1)
    cov = np.clip(0.5 - sd, 0.0, 1.0).astype(np.float32)
    rgb = np.asarray(col, np.float32) * np.broadcast_to(shade, cov.shape)[..., None]
    return (slice(r0, r1), slice(c0, c1)), cov, rgb.astype(np.float32)


@dataclass
class _AltJob(_Job):
    height_range: tuple[float, float]
    small_fraction: float
    border_fraction: float
    occluder_prob: float
    jpeg_quality: tuple[int, int]


def _render_alt_job(job: _AltJob) -> list[tuple[int, tuple[float, float, float, float], float]]:
    """Render one image, save it as JPEG, return (label, box x1y1x2y2, visible) per person."""
    rng = np.random.default_rng(list(job.seed_keys))
    w, h = job.width, job.height
    canvas, hz = _background(rng, w, h)
    lo, hi = job.height_range
    # perspective: a person of height s stands with the feet at hz + s / k (ground plane);
    # ours: the tallest people stand at 98.5 % of the image height
    k = hi * h / (0.985 * h - hz)
    persons = []  # (premultiplied rgb, alpha, box in the patch, feet in the patch, height, label)
    for ident, label in job.people:
        small = rng.random() < job.small_fraction  # ours: a few far-away people (hard)
        s = float(rng.uniform(0.14, 0.24) if small else rng.uniform(lo, hi)) * h
        persons.append(render_alt_person(ident, random_alt_pose(rng), s) + (s, label))

    best: tuple[float, list[tuple[int, int]]] | None = None
    for _ in range(15):  # ours: redraw positions up to 15 times for visible labelled people
        offsets = []
        for prem, alpha, (bx1, by1, bx2, by2), (fx, fy), s, _ in persons:
            bw = bx2 - bx1
            foot = hz + s / k + rng.normal(0.0, 0.025) * h  # ours: 2.5 % jitter off the plane
            foot = min(foot, h - 1.0 - (by2 - fy))
            foot = max(foot, (fy - by1) + 1.0)
            if rng.random() < job.border_fraction:  # cut by the left or right image border
                # ours: 15-55 % of the box width outside the image
                left = bool(rng.random() < 0.5)
                x = -rng.uniform(0.15, 0.55) * bw if left else w - rng.uniform(0.45, 0.85) * bw
            else:
                x = rng.uniform(0.0, max(0.0, w - bw))
            offsets.append((int(round(x - bx1)), int(round(foot - fy))))
        vis = _box_visibility([(p[2], o) for p, o in zip(persons, offsets)], w, h)
        score = min([v for v, p in zip(vis, persons) if p[5] >= 0] or [1.0])
        if best is None or score > best[0]:
            best = (score, offsets)
        if score >= 0.6:  # ours: labelled people at least 60 % visible (estimated on boxes)
            break
    assert best is not None
    offsets = best[1]

    order = sorted(range(len(persons)), key=lambda i: offsets[i][1] + persons[i][2][3])
    owner = np.full((h, w), -1, dtype=np.int32)
    own_area = [int((p[1] > 0.5).sum()) for p in persons]  # silhouette pixels, also outside
    boxes: dict[int, tuple[float, float, float, float]] = {}
    for i in order:  # far to near
        prem, alpha, (bx1, by1, bx2, by2), _, _, _ = persons[i]
        ox, oy = offsets[i]
        x0, y0 = max(0, ox), max(0, oy)
        x1, y1 = min(w, ox + alpha.shape[1]), min(h, oy + alpha.shape[0])
        a = alpha[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        canvas[y0:y1, x0:x1] = (
            canvas[y0:y1, x0:x1] * (1.0 - a[..., None]) + prem[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        )
        owner[y0:y1, x0:x1][a > 0.5] = i
        boxes[i] = (
            float(max(0, ox + bx1)),
            float(max(0, oy + by1)),
            float(min(w, ox + bx2)),
            float(min(h, oy + by2)),
        )
    if persons and rng.random() < job.occluder_prob:
        (rs, cs), cov, col = _occluder(rng, boxes[int(rng.integers(len(persons)))], w, h)
        if cov.size:
            canvas[rs, cs] = canvas[rs, cs] * (1.0 - cov[..., None]) + col * cov[..., None]
            owner[rs, cs][cov > 0.5] = -1
    counts = np.bincount(owner[owner >= 0].ravel(), minlength=len(persons))

    # camera: colour cast, gamma, vignetting, blur, sensor noise, JPEG
    cast = np.clip(rng.normal(1.0, 0.07, 3), 0.82, 1.18).astype(np.float32)  # ours: RGB gains
    gamma = float(rng.uniform(0.8, 1.2))  # ours: exposure curve
    r2 = (((np.arange(w, dtype=np.float32) + 0.5) / (w / 2) - 1) ** 2)[None, :] + (
        ((np.arange(h, dtype=np.float32) + 0.5) / (h / 2) - 1) ** 2
    )[:, None]
    vignette = 1.0 - float(rng.uniform(0.0, 0.3)) * r2 / 2  # ours: up to 30 % darker corners
    canvas = np.clip(canvas * cast * vignette[..., None], 0.0, 1.0) ** gamma
    img = Image.fromarray((canvas * 255.0 + 0.5).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.7))))  # ours: mild blur
    arr = np.asarray(img, dtype=np.float32)
    sigma = float(rng.uniform(1.0, 5.0))  # ours: sensor noise std on the 0-255 scale
    arr += sigma * rng.standard_normal(arr.shape, dtype=np.float32)
    quality = int(rng.integers(job.jpeg_quality[0], job.jpeg_quality[1] + 1))
    Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8)).save(
        job.path, format="JPEG", quality=quality
    )
    return [(persons[i][5], boxes[i], float(counts[i]) / max(1, own_area[i])) for i in order]


def _box_visibility(
    placed: Sequence[tuple[tuple[int, int, int, int], tuple[int, int]]], w: int, h: int
) -> list[float]:
    """Visible fraction of each (patch box, offset), from boxes only: nearer boxes and the
    image border hide farther ones (the lower a box ends, the nearer it is)."""
    rects = [(ox + b[0], oy + b[1], ox + b[2], oy + b[3]) for b, (ox, oy) in placed]
    seen = np.zeros((h, w), dtype=bool)
    out = [0.0] * len(rects)
    for i in sorted(range(len(rects)), key=lambda i: -rects[i][3]):
        x1, y1, x2, y2 = rects[i]
        area = max(1, (x2 - x1) * (y2 - y1))
        sub = seen[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)]
        out[i] = float(sub.size - sub.sum()) / area
        sub[...] = True
    return out


# =============================================================================================
# The dataset
# =============================================================================================
def generate_cuhk_sysu_alt(
    root: str,
    *,
    seed: int = 0,
    num_images: int = 450,
    num_train_ids: int = 120,
    num_test_ids: int = 70,
    pool_size: int = 150,
    image_size: tuple[int, int] = (320, 240),
    gallery_sizes: Sequence[int] | None = None,
    persons_per_image: tuple[int, int] = (2, 6),
    appearances_per_id: tuple[int, int] = (2, 5),
    height_range: tuple[float, float] = (0.3, 0.8),
    small_fraction: float = 0.06,
    border_fraction: float = 0.06,
    confusable_fraction: float = 0.3,
    degenerate_fraction: float = 0.03,
    occluder_prob: float = 0.35,
    jpeg_quality: tuple[int, int] = (72, 93),
    num_workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the alternative synthetic CUHK-SYSU at ``root`` (official layout).

    Splits, identities per split, appearances, queries and galleries are built exactly as by
    :func:`dcinet_d2.data.synthetic.generate_cuhk_sysu` (same arguments, same protocol); only the
    rendering differs (module docstring).

    Args:
        root: output folder (e.g. ``<out>/CUHK-SYSU``); written atomically.
        seed: random seed; same seed and arguments -> identical files.
        num_images: total number of scene images.
        num_train_ids: identities of Train.mat.
        num_test_ids: test identities = queries.
        pool_size: number of test (gallery) images.
        image_size: (width, height) of every image.
        gallery_sizes: sizes N of the ``TestG{N}.mat`` files; None = every official size
            <= pool_size - 1.
        persons_per_image: (min, max) people per image (labelled + unlabelled).
        appearances_per_id: (min, max) images per identity (min >= 2).
        height_range: person heights as fractions of the image height.
        small_fraction: probability that a person is drawn far away (14-24 % of the image
            height, hence ``ishard``).
        border_fraction: probability that a person is cut by the left or right image border.
        confusable_fraction: fraction of identities sharing the palette of another identity.
        degenerate_fraction: fraction of images that get one extra zero-width/height box.
        occluder_prob: probability per image of a foreground object in front of one person.
        jpeg_quality: (min, max) JPEG quality, drawn per image.
        num_workers: rendering processes (0 = this process); output does not depend on it.
        overwrite: replace an existing ``root``.
        progress: show a progress bar.

    Returns:
        Statistics (also stored as ``root/synthetic_stats.json``).

    Raises:
        ValueError: inconsistent arguments, naming the argument.
        FileExistsError: ``root`` exists and ``overwrite`` is False.
    """
    t_start = time.time()
    lo, hi = float(height_range[0]), float(height_range[1])
    if not 0.05 <= lo <= hi <= 0.95:
        raise ValueError(
            f"height_range must satisfy 0.05 <= min <= max <= 0.95, got {height_range!r}"
        )
    q_lo, q_hi = _check_range("jpeg_quality", jpeg_quality, 1)
    if q_hi > 100:
        raise ValueError(f"jpeg_quality must lie in [1, 100], got {jpeg_quality!r}")
    layout = _plan_cuhk_sysu(
        seed,
        _ALT_STREAM,
        num_images=num_images,
        num_train_ids=num_train_ids,
        num_test_ids=num_test_ids,
        pool_size=pool_size,
        image_size=image_size,
        gallery_sizes=gallery_sizes,
        persons_per_image=persons_per_image,
        appearances_per_id=appearances_per_id,
        degenerate_fraction=degenerate_fraction,
        make_identities=lambda n, r: make_alt_identities(n, r, confusable_fraction),
    )

    def make_job(j: int, path: str) -> _AltJob:
        jrng = _rng(seed, _ALT_STREAM, 1, j)
        people = _scene_people(
            layout.identities,
            layout.image_labels[j],
            layout.n_persons[j],
            jrng,
            random_alt_identity,
        )
        return _AltJob(
            path=path,
            width=layout.width,
            height=layout.height,
            seed_keys=(seed, _ALT_STREAM, 2, j),
            people=people,
            height_range=(lo, hi),
            small_fraction=small_fraction,
            border_fraction=border_fraction,
            occluder_prob=occluder_prob,
            jpeg_quality=(q_lo, q_hi),
        )

    return _render_cuhk_sysu(
        root,
        layout,
        make_job,
        _render_alt_job,
        seed=seed,
        stream=_ALT_STREAM,
        name="CUHK-SYSU (alt)",
        dataset="CUHK-SYSU (synthetic, alternative renderer)",
        t_start=t_start,
        num_workers=num_workers,
        overwrite=overwrite,
        progress=progress,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m dcinet_d2.data.synthetic.alt --out DIR [--seed S] [--force]``."""
    p = argparse.ArgumentParser(
        description="Generate the alternative synthetic CUHK-SYSU (written to <out>/CUHK-SYSU)."
    )
    p.add_argument(
        "--out",
        default=os.path.join("datasets", "synthetic_alt"),
        help="parent folder of CUHK-SYSU/ (default: datasets/synthetic_alt)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing dataset")
    p.add_argument("--workers", type=int, default=0, help="rendering processes (0 = in process)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stats = generate_cuhk_sysu_alt(
        os.path.join(args.out, "CUHK-SYSU"),
        seed=args.seed,
        num_workers=args.workers,
        overwrite=args.force,
        progress=not args.quiet,
    )
    for key in sorted(stats):
        print(f"{key:>18}: {stats[key]}")
    return stats


if __name__ == "__main__":
    main()
