"""Person search over the user's own footage: an on-disk gallery of detections and its search.

:mod:`dcinet_d2.search.index` stores detections (boxes, scores, L2-normalised embeddings) of
images and video frames in a resumable, appendable folder and searches them with faiss;
:mod:`~dcinet_d2.search.predictor` runs a trained model on the user's images;
:mod:`~dcinet_d2.search.cli` is ``python -m dcinet_d2.search {index,query}``.
"""

from __future__ import annotations

from . import index as _index
from .index import *  # noqa: F401,F403  (the public names of the index, listed in its __all__)

__all__ = list(_index.__all__)
