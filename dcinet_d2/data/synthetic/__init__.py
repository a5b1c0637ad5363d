"""Synthetic person-search datasets written in the official CUHK-SYSU and PRW file formats.

Scenes are rendered procedurally (PIL + numpy) and written exactly in the layouts of the two real
benchmarks, so that the readers of ``dcinet_d2.data.datasets`` (which are written for the real
files) read them unchanged. Everything is deterministic by ``seed``: two runs with the same
arguments give byte-identical ``.mat``/``.txt`` files and identical JPEG images.

Modules:
    * :mod:`.looks`: what identities look like (:class:`Appearance`, :class:`Pose`).
    * :mod:`.painting`: drawing people, backgrounds and scenes.
    * :mod:`.matfile`: byte-reproducible ``.mat`` writing, incl. the streaming TestG encoder.
    * :mod:`.jobs`: random streams, argument checks, job running, the atomic output folder.
    * :mod:`.cuhk_sysu`: :func:`generate_cuhk_sysu` (the layout it writes is documented there).
    * :mod:`.prw`: :func:`generate_prw` (the layout it writes is documented there).
    * :mod:`.ensure`: :func:`ensure_synthetic_datasets`, both datasets on demand, and
      :func:`ensure_synthetic_test_set`, the 200-query validation and held-out sets.
    * :mod:`.alt`: a second, differently rendered CUHK-SYSU
      (``python -m dcinet_d2.data.synthetic.alt``); not imported here.
"""

from __future__ import annotations

from .cuhk_sysu import CUHK_GALLERY_SIZES, FULL_SCALE_CUHK_SYSU, generate_cuhk_sysu
from .ensure import (
    SYNTHETIC_TEST_SETS,
    default_synthetic_root,
    ensure_synthetic_datasets,
    ensure_synthetic_test_set,
)
from .jobs import STATS_FILE
from .looks import (
    SIMILARITY_ATTRIBUTES,
    Appearance,
    Pose,
    make_identity_appearances,
    random_appearance,
    random_pose,
    similar_appearance,
)
from .painting import PersonSprite, render_person
from .prw import PRW_ANNOTATION_KEYS, generate_prw

__all__ = [
    "CUHK_GALLERY_SIZES",
    "PRW_ANNOTATION_KEYS",
    "FULL_SCALE_CUHK_SYSU",
    "STATS_FILE",
    "SIMILARITY_ATTRIBUTES",
    "Appearance",
    "Pose",
    "PersonSprite",
    "random_appearance",
    "similar_appearance",
    "make_identity_appearances",
    "random_pose",
    "render_person",
    "generate_cuhk_sysu",
    "generate_prw",
    "ensure_synthetic_datasets",
    "ensure_synthetic_test_set",
    "SYNTHETIC_TEST_SETS",
    "default_synthetic_root",
]
