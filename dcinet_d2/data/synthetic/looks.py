"""Identity looks of the synthetic datasets: what makes one person recognisable.

:class:`Appearance` (clothing colours and patterns, hair, bag, build) per identity, drawn anew
(:func:`random_appearance`) or as a look-alike of another identity (:func:`similar_appearance`,
:func:`make_identity_appearances`); :class:`Pose` (view, gait, slight colour change) per
appearance (:func:`random_pose`); the colour helpers they use.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .jobs import _draw_identities

__all__ = [
    "HAIR_STYLES",
    "UPPER_PATTERNS",
    "LOWER_STYLES",
    "BAGS",
    "FACINGS",
    "SIMILARITY_ATTRIBUTES",
    "Appearance",
    "Pose",
    "random_appearance",
    "similar_appearance",
    "make_identity_appearances",
    "random_pose",
]

RGB = tuple[float, float, float]

HAIR_STYLES = ("short", "long", "bald", "hat")
UPPER_PATTERNS = ("plain", "hstripes", "two_tone", "logo")
LOWER_STYLES = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "shoulder", "handbag")
FACINGS = ("front", "back", "left", "right")

_SKIN_TONES: tuple[RGB, ...] = (
    (0.98, 0.84, 0.72),
    (0.94, 0.76, 0.62),
    (0.87, 0.67, 0.52),
    (0.76, 0.57, 0.42),
    (0.62, 0.44, 0.31),
    (0.47, 0.32, 0.22),
    (0.36, 0.24, 0.17),
)
_HAIR_COLORS: tuple[RGB, ...] = (
    (0.06, 0.05, 0.05),
    (0.18, 0.12, 0.08),
    (0.35, 0.22, 0.12),
    (0.55, 0.38, 0.20),
    (0.80, 0.66, 0.40),
    (0.60, 0.60, 0.60),
    (0.55, 0.20, 0.10),
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
    tint: tuple[float, ...]


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
    "upper_color",
    "lower_color",
    "upper_pattern",
    "bag",
    "hair_style",
    "long_sleeves",
    "lower_style",
    "shoe_color",
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
        options = {
            "upper_pattern": UPPER_PATTERNS,
            "bag": BAGS,
            "hair_style": HAIR_STYLES,
            "lower_style": LOWER_STYLES,
        }[attr]
        d[attr] = _pick(options, rng, exclude=d[attr])
    return Appearance(**d)


def make_identity_appearances(
    num: int, rng: np.random.Generator, similar_fraction: float = 0.3
) -> list[Appearance]:
    """Appearances of ``num`` identities; a fraction are look-alikes of an earlier identity.

    Args:
        num: number of identities.
        rng: source of randomness.
        similar_fraction: probability that an identity is made with :func:`similar_appearance`
            from a random earlier one instead of :func:`random_appearance` (ours: 0.3).

    Returns:
        One appearance per identity.
    """
    return _draw_identities(num, rng, similar_fraction, random_appearance, similar_appearance)


def random_pose(rng: np.random.Generator) -> Pose:
    """Draw the per-appearance variation (view, gait, lean, slight colour change)."""
    return Pose(
        facing=str(rng.choice(FACINGS, p=[0.35, 0.25, 0.2, 0.2])),
        stride=float(rng.uniform(0.0, 0.09)),
        arm_swing=float(rng.uniform(-0.06, 0.06)),
        lean=float(rng.uniform(-0.03, 0.03)),
        tint=tuple(float(t) for t in np.clip(rng.normal(1.0, 0.05, size=8), 0.85, 1.15)),
    )
