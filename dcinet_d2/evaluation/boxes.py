"""Box geometry shared by the protocol, CBGM and the search-results picture."""

from __future__ import annotations

import numpy as np

__all__ = ["elementwise_iou"]


def elementwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise IoU of boxes a[i] and b[i] (float64, NaN for a zero union)."""
    iw = np.maximum(0.0, np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]))
    ih = np.maximum(0.0, np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]))
    inter = iw * ih
    union = (
        (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
        + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        - inter
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union
