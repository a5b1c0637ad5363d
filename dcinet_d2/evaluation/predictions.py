"""The person-search predictions file: format, validation, save and load.

Format (stable; a dict saved with ``torch.save``, loadable with
``torch.load(..., weights_only=True)``)::

    {
      "gallery": {image_id: {"boxes":  float32 tensor [n, 4]  x1, y1, x2, y2 in original
                                                              image pixels,
                             "scores": float32 tensor [n]     detection probabilities in [0, 1],
                             "embeds": float32 tensor [n, D]  L2-normalised (*)}},
      "queries": {query_id: {"embed": float32 tensor [D]  L2-normalised}},
      "meta":    {...}   # optional, free-form (str / int / float / bool / list values)
    }

(*) With ``meta["embed_score_power"] = p > 0`` (a model with ``MODEL.REID.EMBED_SCORE_POWER``
p), each gallery embedding is a unit vector times its score to the power p: its norm is
``score ** p``, and the protocol's dot products rank by ``score ** p * cosine``.

``image_id`` is the image file name as in the dataset (``s15535.jpg``, ``c1s1_000151.jpg``);
``query_id`` the 0-based official query index (an ``int``). Every test image must have an entry
(``n`` may be 0) and every query an embedding. CBGM needs nothing more: the query image's context
persons are its own gallery entry. ``PersonSearchEvaluator`` writes the detections it keeps
(score >= its detection threshold), so a file it wrote can be re-evaluated at that threshold or a
higher one. Files from other systems can hold all their detections.

In memory (as :mod:`.protocol` takes them) the same structure holds numpy arrays.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "PredictionsFormatError",
    "NORM_TOLERANCE",
    "score_weighted",
    "validate_predictions",
    "check_against_dataset",
    "save_predictions",
    "load_predictions",
]

# |norm - 1| allowed for an "L2-normalised" embedding (float16 models stay well inside it).
NORM_TOLERANCE = 1e-3


class PredictionsFormatError(ValueError):
    """A predictions file or dict that does not follow the documented format."""


def _array(value: Any, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if not value.dtype.is_floating_point:
            raise PredictionsFormatError(
                f"{where}: expected a floating-point tensor, got dtype {value.dtype}"
            )
        return value.to(torch.float32).numpy()
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.floating):
            raise PredictionsFormatError(
                f"{where}: expected a floating-point array, got dtype {value.dtype}"
            )
        return value.astype(np.float32, copy=False)
    raise PredictionsFormatError(
        f"{where}: expected a tensor or numpy array, got {type(value).__name__}"
    )


def score_weighted(embeds: np.ndarray, scores: np.ndarray, power: float) -> np.ndarray:
    """Unit embeddings ``[n, D]`` times ``scores ** power``, in float32 as ``PersonSearchRCNN``
    computes them for ``MODEL.REID.EMBED_SCORE_POWER`` (``power`` 0: unchanged)."""
    embeds = np.asarray(embeds, dtype=np.float32)
    if not power:
        return embeds
    scores = np.asarray(scores, dtype=np.float32).reshape(-1, 1)
    return embeds * scores ** np.float32(power)


def _check_norms(
    embeds: np.ndarray,
    where: str,
    tol: float,
    scores: np.ndarray | None = None,
    score_power: float = 0.0,
) -> None:
    """Unit norms; with ``score_power`` p > 0, norms ``scores ** p`` (score-weighted embeddings)."""
    if embeds.size == 0:
        return
    norms = np.linalg.norm(embeds.astype(np.float64), axis=-1).reshape(-1)
    expected = 1.0 if not score_power else scores.astype(np.float64) ** score_power
    bad = np.flatnonzero(np.abs(norms - expected) > tol)
    if bad.size:
        i = int(bad[0])
        what = (
            "L2-normalised (|norm - 1|"
            if not score_power
            else f"unit vectors times score ** {score_power:g} (meta embed_score_power; "
            f"|norm - score ** {score_power:g}|"
        )
        wanted = "" if not score_power else f", expected {float(np.asarray(expected)[i]):.6g}"
        raise PredictionsFormatError(
            f"{where}: embeddings must be {what} <= {tol}); "
            f"row {i} has norm {norms[i]:.6g}{wanted} ({bad.size} such rows)"
        )


def _check_meta(value: Any, where: str) -> None:
    """Meta values must be plain Python data (what ``torch.load(weights_only=True)`` reads)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise PredictionsFormatError(
                    f"{where}: keys must be str or int, got {type(k).__name__}"
                )
            _check_meta(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_meta(v, f"{where}[{i}]")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise PredictionsFormatError(
            f"{where}: expected str, int, float, bool, None, list or dict, "
            f"got {type(value).__name__}"
        )


def validate_predictions(predictions: Any, *, norm_tolerance: float = NORM_TOLERANCE) -> dict:
    """Check the structure, shapes, values and norms of predictions; return them as numpy.

    Args:
        predictions: the dict described in the module docstring (tensors or numpy arrays).
        norm_tolerance: allowed ``|norm - 1|`` of every embedding (``|norm - score ** p|`` for a
            gallery embedding when ``meta["embed_score_power"]`` is p > 0).

    Returns:
        ``{"gallery": {image_id: {"boxes", "scores", "embeds"}}, "queries": {query_id: {"embed"}},
        "meta": dict}`` with float32 numpy arrays.

    Raises:
        PredictionsFormatError: naming the first problem found (key, image or query, shape).
    """
    if not isinstance(predictions, Mapping):
        raise PredictionsFormatError(
            f"predictions must be a dict, got {type(predictions).__name__}"
        )
    for key in ("gallery", "queries"):
        if key not in predictions:
            raise PredictionsFormatError(
                f"predictions have no '{key}' entry (keys: {sorted(map(str, predictions))})"
            )
        if not isinstance(predictions[key], Mapping):
            raise PredictionsFormatError(
                f"predictions['{key}'] must be a dict, got {type(predictions[key]).__name__}"
            )
    unknown = set(predictions) - {"gallery", "queries", "meta"}
    if unknown:
        raise PredictionsFormatError(
            f"predictions have unknown entries {sorted(map(str, unknown))}"
        )
    meta = predictions.get("meta", {})
    if not isinstance(meta, Mapping):
        raise PredictionsFormatError("predictions['meta'] must be a dict")
    _check_meta(meta, "meta")
    score_power = meta.get("embed_score_power", 0.0)
    if (
        isinstance(score_power, bool)
        or not isinstance(score_power, (int, float))
        or not score_power >= 0
    ):
        raise PredictionsFormatError(
            f"meta['embed_score_power'] must be a number >= 0, got {score_power!r}"
        )

    dims: dict[int, str] = {}
    gallery = {}
    for image_id, entry in predictions["gallery"].items():
        where = f"gallery[{image_id!r}]"
        if not isinstance(image_id, str):
            raise PredictionsFormatError(
                f"{where}: image ids must be file names (str), got {type(image_id).__name__}"
            )
        if not isinstance(entry, Mapping):
            raise PredictionsFormatError(f"{where}: expected a dict with boxes, scores, embeds")
        for key in ("boxes", "scores", "embeds"):
            if key not in entry:
                raise PredictionsFormatError(f"{where} has no '{key}'")
        boxes = _array(entry["boxes"], f"{where}['boxes']")
        scores = _array(entry["scores"], f"{where}['scores']")
        embeds = _array(entry["embeds"], f"{where}['embeds']")
        if scores.ndim != 1:
            raise PredictionsFormatError(
                f"{where}['scores']: expected shape [n], got {list(scores.shape)}"
            )
        n = scores.shape[0]
        if boxes.shape != (n, 4):
            raise PredictionsFormatError(
                f"{where}['boxes']: expected shape [{n}, 4], got {list(boxes.shape)}"
            )
        if embeds.ndim != 2 or embeds.shape[0] != n:
            raise PredictionsFormatError(
                f"{where}['embeds']: expected shape [{n}, D], got {list(embeds.shape)}"
            )
        for key, arr in (("boxes", boxes), ("scores", scores), ("embeds", embeds)):
            if not np.all(np.isfinite(arr)):
                bad = np.flatnonzero(~np.isfinite(arr).reshape(len(arr), -1).all(axis=1))
                raise PredictionsFormatError(
                    f"{where}['{key}']: non-finite values (detection {int(bad[0])}; "
                    f"{bad.size} such detections)"
                )
        outside = np.flatnonzero((scores < 0) | (scores > 1))
        if outside.size:
            i = int(outside[0])
            raise PredictionsFormatError(
                f"{where}['scores']: scores must be detection probabilities in [0, 1]; "
                f"detection {i} scores {np.format_float_positional(scores[i], trim='-')} "
                f"({outside.size} such detections; logits?)"
            )
        if n and np.any((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])):
            raise PredictionsFormatError(
                f"{where}['boxes']: boxes must be x1, y1, x2, y2 with x2 >= x1, y2 >= y1"
            )
        if n:
            dims.setdefault(embeds.shape[1], where)
        _check_norms(embeds, f"{where}['embeds']", norm_tolerance, scores, float(score_power))
        gallery[image_id] = {"boxes": boxes, "scores": scores, "embeds": embeds}

    queries = {}
    for query_id, entry in predictions["queries"].items():
        where = f"queries[{query_id!r}]"
        if isinstance(query_id, bool) or not isinstance(query_id, (int, np.integer)):
            raise PredictionsFormatError(
                f"{where}: query ids must be ints, got {type(query_id).__name__}"
            )
        if not isinstance(entry, Mapping) or "embed" not in entry:
            raise PredictionsFormatError(f"{where}: expected a dict with 'embed'")
        embed = _array(entry["embed"], f"{where}['embed']")
        if embed.ndim != 1:
            raise PredictionsFormatError(
                f"{where}['embed']: expected shape [D], got {list(embed.shape)}"
            )
        if not np.all(np.isfinite(embed)):
            raise PredictionsFormatError(f"{where}['embed']: non-finite values")
        dims.setdefault(embed.shape[0], where)
        _check_norms(embed[None, :], f"{where}['embed']", norm_tolerance)
        queries[int(query_id)] = {"embed": embed}

    if len(dims) > 1:
        raise PredictionsFormatError(
            "embedding dimensions differ: "
            + ", ".join(f"D={d} in {w}" for d, w in sorted(dims.items()))
        )
    return {"gallery": gallery, "queries": queries, "meta": dict(meta)}


def _few(items: Sequence, k: int = 5) -> str:
    items = sorted(items, key=str)
    more = f" (and {len(items) - k} more)" if len(items) > k else ""
    return ", ".join(map(repr, items[:k])) + more


def check_against_dataset(
    predictions: Mapping, image_ids: Sequence[str], query_ids: Sequence[int]
) -> None:
    """Check that predictions (validated) cover exactly the dataset's images and queries.

    Raises:
        PredictionsFormatError: on unknown or missing image ids or query ids.
    """
    have, want = set(predictions["gallery"]), set(image_ids)
    if have - want:
        raise PredictionsFormatError(
            f"{len(have - want)} unknown image ids in 'gallery': {_few(list(have - want))}"
        )
    if want - have:
        raise PredictionsFormatError(
            f"'gallery' misses {len(want - have)} of the dataset's {len(want)} images: "
            f"{_few(list(want - have))}"
        )
    have, want = set(predictions["queries"]), {int(q) for q in query_ids}
    if have - want:
        raise PredictionsFormatError(
            f"{len(have - want)} unknown query ids in 'queries': {_few(list(have - want))}"
        )
    if want - have:
        raise PredictionsFormatError(
            f"'queries' misses {len(want - have)} of the dataset's {len(want)} queries: "
            f"{_few(list(want - have))}"
        )


def save_predictions(
    path: str,
    gallery: Mapping[str, Mapping[str, Any]],
    queries: Mapping[int, Mapping[str, Any]],
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Validate and write predictions to ``path`` (tensors, loadable with ``weights_only=True``)."""
    checked = validate_predictions(
        {"gallery": gallery, "queries": queries, "meta": dict(meta or {})}
    )
    out = {
        "gallery": {
            k: {
                key: torch.from_numpy(np.ascontiguousarray(v[key]))
                for key in ("boxes", "scores", "embeds")
            }
            for k, v in checked["gallery"].items()
        },
        "queries": {
            k: {"embed": torch.from_numpy(np.ascontiguousarray(v["embed"]))}
            for k, v in checked["queries"].items()
        },
        "meta": checked["meta"],
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(out, path)


def load_predictions(path: str, *, norm_tolerance: float = NORM_TOLERANCE) -> dict:
    """Read a predictions file (``torch.load(weights_only=True)``) and validate it.

    Returns:
        The validated predictions as numpy (see :func:`validate_predictions`).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        PredictionsFormatError: if the file is not a loadable predictions dict.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"predictions file not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors of every kind: the file is not in the format
        raise PredictionsFormatError(
            f"{path}: not loadable with torch.load(weights_only=True) ({type(e).__name__}: {e}); "
            "save a dict of tensors (see dcinet_d2.evaluation.predictions)"
        ) from e
    try:
        return validate_predictions(raw, norm_tolerance=norm_tolerance)
    except PredictionsFormatError as e:
        raise PredictionsFormatError(f"{path}: {e}") from None
