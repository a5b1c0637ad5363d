"""An on-disk, resumable, appendable gallery of person detections, searched with faiss.

Users index their footage once (images, video frames) and query it many times. This module
stores what the model computed (boxes, scores and L2-normalised embeddings of the detected
persons) and searches it by cosine similarity; it takes plain numpy arrays and knows nothing
about the model.

Layout of INDEX_DIR::

    index.json              the commit record; the only file that is ever rewritten
    shards/shard_000000.npz one file per flush, never changed once index.json lists it:
                              embeds  float32 [n, D]  L2 norm 1
                              boxes   float32 [n, 4]  x1, y1, x2, y2 in original pixels
                              scores  float32 [n]     detection scores
                              source  int32   [n]     row of the sources table
                              frame   int32   [n]     frame index, -1 for still images
    search.faiss            faiss index over the embeddings of detections 0 .. ntotal-1
    search.json             its kind, parameters and ntotal (search.* is a cache: rebuilt,
                            or extended for "flat", when it covers fewer detections than stored)
    .lock                   advisory lock (``flock``) held by the one process that writes

index.json holds the format version, a random ``uid`` (so that a search cache of another index
is never used), ``dim``, the caller's ``meta`` (e.g. ``{"model": <hash of weights/config>}``),
``totals`` (detections, units, sources, shards), the sources table (one entry per source:
``path``, ``kind`` image/video, ``frames_indexed``, ``detections`` and the caller's ``info``
such as the fps used) and the shards, each with its file name, byte size, number of
detections and of units, and the units it completed as runs ``[source, first frame, count,
step]`` (frames first, first+step, ...; a video indexed at a fixed stride is one run per shard).
Detection ids are positions in the concatenation of the shards in index.json order; the
gallery is append-only, so ids never change.

Work is done in *units*: ``(source path, frame index)``, frame -1 for a still image. A unit
may hold no detection and is recorded as done all the same. :meth:`GalleryIndex.add` buffers a
unit; :meth:`GalleryIndex.flush` (automatic every ``flush_every`` units) writes the buffer as one
shard and commits it.

Crash safety. A unit is done if and only if index.json lists it, and every file is written to
a temporary name, flushed to disk (``fsync``) and renamed (``os.replace``, atomic), then the
folder is synced:

1. the shard is written first and index.json second, so a shard index.json lists is complete
   on disk (its byte size is recorded and checked on opening);
2. killed before the shard's rename, or between it and index.json's rename: the previous
   index.json stands whole (the rename is atomic); the buffered units are not listed, hence
   not done, and the re-run redoes them. The shard file written meanwhile, if any, is listed
   nowhere: it is never read, it carries the name the next flush writes (one more than the
   highest listed shard number), and the writer removes unlisted files when it takes the lock.
   So its detections are never counted twice;
3. killed after index.json's rename: the units are committed;
4. a unit's detections all go to one shard: a unit is in the gallery whole or not at all.

A unit added while already done (or already buffered) is skipped: :meth:`GalleryIndex.add`
returns False and leaves the stored one as it is, so that re-running an indexing job over the
same footage is idempotent; callers check :meth:`GalleryIndex.is_done` first to skip the work.
Source paths are stored as given (no normalisation, since a source may be a URL or a camera
id): callers pass a canonical form (e.g. absolute paths) so that a re-run finds its units.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import re
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypedDict

import numpy as np

from ..utils.files import atomic_write

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows: no writer lock)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "GalleryIndex",
    "SearchHit",
    "GalleryIndexError",
    "DamagedIndexError",
    "IncompatibleIndexError",
    "IndexLockedError",
    "search_numpy",
    "search_params",
    "build_faiss_index",
    "SEARCH_KINDS",
]
logger = logging.getLogger(__name__)

FORMAT = "dcinet_d2.gallery_index"
VERSION = 1
INDEX_FILE = "index.json"
SHARD_DIR = "shards"
SEARCH_FILE = "search.faiss"
SEARCH_META = "search.json"
LOCK_FILE = ".lock"
FIELDS = ("embeds", "boxes", "scores", "source", "frame")
SEARCH_KINDS = ("flat", "ivf", "ivfpq")
_SHARD_NAME = re.compile(r"^shards/shard_(\d{6,})\.npz$")
_INT32_MAX = 2**31 - 1

DEFAULT_FLUSH_EVERY = 256  # our choice: units per shard (a few MB; index.json rewritten per flush)
NORM_TOL = 1e-3  # our choice: |norm - 1| allowed (float32 errors ~1e-7, float16 ones < 5e-4)
CANDIDATE_FACTOR = 4  # our choice: first faiss request is topk * 4 when hits get filtered
CANDIDATE_GROWTH = 4  # our choice: the request grows 4x until enough hits or all searched
SEARCH_BATCH_ENTRIES = 1 << 24  # our choice: queries per faiss call keep Q * k <= 16M (200 MB)
IVF_LISTS_PER_SQRT_N = 4  # our choice: nlist = 4 sqrt(n), the low end of faiss's 4-16 sqrt(n)
MIN_TRAIN_PER_LIST = 39  # faiss's k-means warns below 39 training points per centroid
TRAIN_PER_LIST = 64  # our choice: k-means trained on 64 points per list (faiss caps at 256)
NPROBE_DIVISOR = 16  # our choice: nprobe = nlist / 16, i.e. about 1/16 of the gallery scanned
MIN_NPROBE = 8  # our choice: never probe fewer than 8 lists (small galleries: near exact)
PQ_BITS = 8  # our choice: 256 centroids per sub-quantizer, faiss's usual setting
PQ_DIMS_PER_CODE = 8  # our choice: m = D / 8 bytes per vector (32 bytes for D = 256)


class _Bad(Exception):
    """A structural problem of index.json (turned into DamagedIndexError naming the file)."""


class GalleryIndexError(RuntimeError):
    """Any problem with a gallery index folder; the message names the folder or file."""


class DamagedIndexError(GalleryIndexError):
    """A file of the index cannot be read or contradicts index.json; the message names it."""


class IncompatibleIndexError(GalleryIndexError):
    """An existing index was built with another embedding size or model (``meta``)."""


class IndexLockedError(GalleryIndexError):
    """Another process (or another :class:`GalleryIndex` object) is writing this index."""


class SearchHit(TypedDict):
    """One search result (a plain dict, JSON-ready): a detection and its similarity."""

    id: int  # detection id (position in the gallery)
    similarity: float  # cosine similarity (approximate for "ivfpq")
    source: str  # source path as it was given to add()
    frame: int  # frame index, -1 for a still image
    box: list[float]  # x1, y1, x2, y2 in original pixels
    score: float  # detection score


# ------------------------------------------------------------------------------------------
# file helpers


def _json_dict(value: Any, name: str) -> dict:
    """A JSON round-trip copy of the dict ``value`` (what index.json will hold), or a clear
    error."""
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be JSON-serialisable: {e}") from e


def _dumps_index(doc: dict) -> str:
    """JSON with one line per top-level key and per source / shard entry (readable, compact)."""
    parts = []
    for key, value in doc.items():
        if key in ("sources", "shards"):
            rows = ",\n".join("  " + json.dumps(e, separators=(",", ":")) for e in value)
            parts.append(f" {json.dumps(key)}: [\n{rows}\n ]" if rows else f' "{key}": []')
        else:
            parts.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _encode_runs(units: Sequence[tuple[int, int]]) -> list[list[int]]:
    """(source id, frame) pairs -> runs [source, first frame, count, step] (order kept)."""
    runs: list[list[int]] = []
    for sid, frame in units:
        if runs and runs[-1][0] == sid:
            r = runs[-1]
            if r[2] == 1 and frame > r[1]:
                r[2], r[3] = 2, frame - r[1]
                continue
            if r[2] > 1 and frame == r[1] + r[2] * r[3]:
                r[2] += 1
                continue
        runs.append([sid, frame, 1, 1])
    return runs


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover
        raise ImportError("the gallery search needs faiss: pip install faiss-cpu") from e
    return faiss


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


# ------------------------------------------------------------------------------------------
# search helpers shared by GalleryIndex and the benchmark


def search_numpy(
    embeds: np.ndarray,
    query: np.ndarray,
    k: int,
    chunk_bytes: int = 256 << 20,  # our choice: 256 MB of temporaries
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k by a numpy matrix product: the reference for faiss.

    Same outputs as faiss's ``index.search(query, k)``: similarities float32 [Q, k] and ids
    int64 [Q, k], best first (ties: lower id first), padded with -inf / -1 when k > n.
    Queries are processed in chunks whose temporaries (similarities, their negation and the
    argpartition indices: 16 bytes per query and gallery vector) stay under ``chunk_bytes``.
    """
    embeds = np.asarray(embeds, dtype=np.float32)
    query = np.atleast_2d(np.asarray(query, dtype=np.float32))
    n, q = len(embeds), len(query)
    sims = np.full((q, k), -np.inf, dtype=np.float32)
    ids = np.full((q, k), -1, dtype=np.int64)
    kk = min(k, n)
    if kk == 0 or q == 0:
        return sims, ids
    step = max(1, chunk_bytes // (16 * n))
    for a in range(0, q, step):
        s = query[a : a + step] @ embeds.T  # [c, n]
        if kk < n:
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        else:
            part = np.broadcast_to(np.arange(n), s.shape).copy()
        ps = np.take_along_axis(s, part, axis=1)
        order = np.lexsort((part, -ps), axis=1)  # by similarity desc, then id asc
        ids[a : a + step, :kk] = np.take_along_axis(part, order, axis=1)
        sims[a : a + step, :kk] = np.take_along_axis(ps, order, axis=1)
    return sims, ids


def _default_m(dim: int) -> int:
    target = max(1, dim // PQ_DIMS_PER_CODE)
    return max(m for m in range(1, target + 1) if dim % m == 0)


def search_params(
    kind: str,
    n: int,
    dim: int,
    nlist: int | None = None,
    m: int | None = None,
    nprobe: int | None = None,
) -> dict[str, Any]:
    """Effective parameters of a faiss index of ``kind`` over n vectors of size ``dim``.

    Defaults (our choice): nlist = 4 sqrt(n) clamped to [1, n / 39] (39 training points per
    list, below which faiss's k-means warns); nprobe = max(8, nlist / 16), at most nlist;
    IVF-PQ: m = D / 8 sub-quantizers (the largest divisor of D not above it) of 8 bits, which
    needs n >= 39 * 256 to train. k-means runs on min(n, 64 nlist) points (ivfpq: at least
    64 * 256, for the product quantizer, whose k-means also uses 64 points per centroid).
    """
    if kind not in SEARCH_KINDS:
        raise ValueError(f"search index kind must be one of {SEARCH_KINDS}, got {kind!r}")
    p: dict[str, Any] = {"kind": kind}
    if kind == "flat":
        return p
    if n < 1:
        raise GalleryIndexError(f"cannot train a {kind!r} search index on an empty gallery")
    if nlist is None:
        nlist = int(round(IVF_LISTS_PER_SQRT_N * math.sqrt(n)))
        nlist = min(max(1, nlist), max(1, n // MIN_TRAIN_PER_LIST))
    elif not _is_int(nlist) or not 1 <= nlist <= n:
        raise ValueError(f"nlist must be an integer in [1, n = {n}], got {nlist!r}")
    if nprobe is None:
        nprobe = max(MIN_NPROBE, nlist // NPROBE_DIVISOR)
    elif not _is_int(nprobe) or nprobe < 1:
        raise ValueError(f"nprobe must be a positive integer, got {nprobe!r}")
    p.update(nlist=int(nlist), nprobe=int(min(nprobe, nlist)))
    train = TRAIN_PER_LIST * nlist
    if kind == "ivfpq":
        if m is None:
            m = _default_m(dim)
        elif not _is_int(m) or m < 1 or dim % m:
            raise ValueError(f"m must be a positive divisor of the embedding size {dim}, got {m!r}")
        need = MIN_TRAIN_PER_LIST * 2**PQ_BITS
        if n < need:
            raise GalleryIndexError(
                f"an 'ivfpq' search index needs at least {need} detections to train its "
                f"{PQ_BITS}-bit product quantizer; this gallery has {n}: use 'flat' or 'ivf'"
            )
        p.update(m=int(m), nbits=PQ_BITS)
        train = max(train, TRAIN_PER_LIST * 2**PQ_BITS)
    p["train_size"] = int(min(n, train))
    return p


def _make_faiss(
    params: dict,
    dim: int,
    seed: int,
    sample: Callable[[int], np.ndarray] | None,
    chunks: Iterator[np.ndarray],
):
    """A faiss index per ``params``, trained on ``sample(train_size)``, holding ``chunks``."""
    faiss = _faiss()
    kind = params["kind"]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQ(
                quantizer,
                dim,
                params["nlist"],
                params["m"],
                params["nbits"],
                faiss.METRIC_INNER_PRODUCT,
            )
            index.pq.cp.seed = seed
            index.pq.cp.max_points_per_centroid = TRAIN_PER_LIST  # PQ k-means subsample
        index.cp.seed = seed
        assert sample is not None
        index.train(np.ascontiguousarray(sample(params["train_size"]), dtype=np.float32))
        index.nprobe = params["nprobe"]
    for chunk in chunks:
        if len(chunk):
            index.add(np.ascontiguousarray(chunk, dtype=np.float32))
    return index


def build_faiss_index(
    embeds: np.ndarray,
    kind: str = "flat",
    nlist: int | None = None,
    m: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
    chunk: int = 65536,
):  # our choice: vectors added per faiss call
    """(faiss index, effective parameters) over in-memory unit vectors, as GalleryIndex builds.

    Inner product, i.e. cosine similarity for unit vectors. The k-means training sample is
    drawn with ``seed``; faiss's own k-means uses the same seed.
    """
    embeds = np.asarray(embeds, dtype=np.float32)
    n, dim = embeds.shape
    params = search_params(kind, n, dim, nlist, m, nprobe)
    rng = np.random.default_rng(seed)

    def sample(size: int) -> np.ndarray:
        return embeds if size >= n else embeds[np.sort(rng.choice(n, size, replace=False))]

    chunks = (embeds[a : a + chunk] for a in range(0, n, chunk))
    return _make_faiss(params, dim, seed, sample, chunks), params


# ------------------------------------------------------------------------------------------


class GalleryIndex:
    """A gallery of person detections in a folder; see the module docstring for the layout.

    Make one with :meth:`create`, :meth:`open` or :meth:`open_or_create`. Writing (``add``,
    ``flush``) takes an exclusive lock on the folder for the life of the object (released by
    :meth:`close` or at exit); reading and searching need no lock, and see the units committed
    when the object was opened or last :meth:`refresh`-ed. Use it as a context manager, or call
    :meth:`close`, so that the last buffered units are flushed.
    """

    def __init__(
        self,
        index_dir: str | os.PathLike,
        flush_every: int = DEFAULT_FLUSH_EVERY,
        _doc: dict | None = None,
    ):
        if not _is_int(flush_every) or flush_every < 1:
            raise ValueError(f"flush_every must be a positive integer, got {flush_every!r}")
        self.index_dir = os.path.abspath(os.fspath(index_dir))
        self.flush_every = int(flush_every)
        self._lock_fd: int | None = None
        self._search: tuple[Any, dict] | None = None  # (faiss index, search.json contents)
        self._cols: dict[str, np.ndarray] | None = None  # boxes/scores/source/frame of shards
        self._cols_shards = 0  # how many shards _cols covers
        self._set_state(_doc if _doc is not None else self._read_index())
        self._clear_buffer()

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        index_dir: str | os.PathLike,
        dim: int,
        meta: dict | None = None,
        flush_every: int = DEFAULT_FLUSH_EVERY,
    ) -> GalleryIndex:
        """A new, empty index in ``index_dir`` (created if needed; must be empty)."""
        if not _is_int(dim) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        meta = _json_dict({} if meta is None else meta, "meta")
        index_dir = os.path.abspath(os.fspath(index_dir))
        if os.path.exists(index_dir) and not os.path.isdir(index_dir):
            raise GalleryIndexError(f"{index_dir} exists and is not a folder")
        cls._check_empty(index_dir, dim)  # before creating anything in the folder
        os.makedirs(os.path.join(index_dir, SHARD_DIR), exist_ok=True)
        lock_fd = cls._lock(index_dir)
        try:
            cls._check_empty(index_dir, dim)  # again, under the lock
            doc = {
                "format": FORMAT,
                "version": VERSION,
                "uid": uuid.uuid4().hex,
                "dim": int(dim),
                "meta": meta,
                "totals": {"detections": 0, "units": 0, "sources": 0, "shards": 0},
                "sources": [],
                "shards": [],
            }
            path = os.path.join(index_dir, INDEX_FILE)
            atomic_write(path, lambda f: f.write(_dumps_index(doc).encode("utf-8")))
            self = cls(index_dir, flush_every, _doc=doc)
        except BaseException:
            os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        logger.info("created gallery index %s (D = %d)", index_dir, dim)
        return self

    @classmethod
    def open(
        cls, index_dir: str | os.PathLike, flush_every: int = DEFAULT_FLUSH_EVERY
    ) -> GalleryIndex:
        """The existing index in ``index_dir`` (to read, search, or append to)."""
        return cls(index_dir, flush_every)

    @classmethod
    def open_or_create(
        cls,
        index_dir: str | os.PathLike,
        dim: int,
        meta: dict | None = None,
        flush_every: int = DEFAULT_FLUSH_EVERY,
        check_keys: Sequence[str] | None = None,
    ) -> GalleryIndex:
        """Open the index in ``index_dir`` if there is one, else create it with ``meta``.

        An existing index must have the same ``dim`` and, for every key of ``meta`` (or of
        ``check_keys`` when given, e.g. ``("model",)``), the same value in its stored meta (a
        key it lacks is a mismatch): embeddings of another model are not comparable. A
        mismatch raises :class:`IncompatibleIndexError` naming both values. The stored meta
        is never changed.
        """
        path = os.path.join(os.path.abspath(os.fspath(index_dir)), INDEX_FILE)
        if not os.path.exists(path):
            return cls.create(index_dir, dim, meta, flush_every)
        self = cls(index_dir, flush_every)
        if dim != self.dim:
            raise IncompatibleIndexError(
                f"{self.index_dir} holds embeddings of size {self.dim}, but size {dim} was "
                "given: use another index folder for this model"
            )
        meta = meta or {}
        for key in meta if check_keys is None else check_keys:
            value = meta.get(key)
            if key in self.meta and json.loads(json.dumps(value)) == self.meta[key]:
                continue
            stored = f"= {self.meta[key]!r}" if key in self.meta else "without it"
            raise IncompatibleIndexError(
                f"{self.index_dir} was built with meta[{key!r}] {stored}, but meta[{key!r}] = "
                f"{value!r} was given; embeddings of different models are not comparable: "
                "use another index folder"
            )
        return self

    @staticmethod
    def _check_empty(index_dir: str, dim: int) -> None:
        path = os.path.join(index_dir, INDEX_FILE)
        if os.path.exists(path):
            try:
                other = GalleryIndex(index_dir)
            except GalleryIndexError as e:
                raise GalleryIndexError(f"{index_dir} already holds an index ({e})") from e
            same = "the same" if other.dim == dim else f"another ({other.dim})"
            raise GalleryIndexError(
                f"{index_dir} already holds a gallery index with {other.num_detections} "
                f"detections, of {same} embedding size: use GalleryIndex.open or "
                "open_or_create to append to it, or choose another folder"
            )
        if not os.path.isdir(index_dir):
            return
        extra = [
            e
            for e in os.listdir(index_dir)
            if e not in (LOCK_FILE, SHARD_DIR) and not (e.startswith(".") and e.endswith(".tmp"))
        ]  # interrupted writes
        shard_dir = os.path.join(index_dir, SHARD_DIR)
        if os.path.isdir(shard_dir):
            extra += [f"{SHARD_DIR}/{e}" for e in os.listdir(shard_dir)]
        elif os.path.exists(shard_dir):
            extra.append(SHARD_DIR)
        if extra:
            raise GalleryIndexError(
                f"{index_dir} is not empty ({', '.join(sorted(extra)[:5])} ...) and holds no "
                f"{INDEX_FILE}: choose an empty or new folder for a gallery index"
            )

    # -- index.json -------------------------------------------------------------------------

    def _read_index(self) -> dict:
        path = os.path.join(self.index_dir, INDEX_FILE)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise GalleryIndexError(
                f"{self.index_dir} is not a gallery index ({path} not found): "
                "use GalleryIndex.create or open_or_create to make one"
            ) from None
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DamagedIndexError(f"{path} is damaged: not valid JSON ({e})") from None
        try:
            self._validate(doc)
        except _Bad as e:
            raise DamagedIndexError(f"{path} is damaged: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DamagedIndexError(f"{path} is damaged: {type(e).__name__}: {e}") from None
        return doc

    def _validate(self, doc: Any) -> None:
        """Structural checks of index.json (raises; the caller names the file)."""

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise _Bad(msg)

        need(isinstance(doc, dict) and doc.get("format") == FORMAT, f"not a {FORMAT} file")
        version = doc.get("version")
        need(_is_int(version), "no format version")
        if version > VERSION:
            raise GalleryIndexError(
                f"{self.index_dir} was written by a newer dcinet_d2 (format {version} > "
                f"{VERSION}): update dcinet_d2 to read it"
            )
        need(_is_int(doc.get("dim")) and doc["dim"] >= 1, "dim is not a positive integer")
        need(isinstance(doc.get("uid"), str), "no uid")
        need(isinstance(doc.get("meta"), dict), "meta is not an object")
        sources, shards = doc["sources"], doc["shards"]
        need(isinstance(sources, list) and isinstance(shards, list), "sources/shards not lists")
        paths = set()
        for i, s in enumerate(sources):
            need(
                isinstance(s, dict) and isinstance(s.get("path"), str) and s["path"] != "",
                f"source {i} has no path",
            )
            need(s["path"] not in paths, f"source {s['path']!r} listed twice")
            paths.add(s["path"])
            need(s.get("kind") in ("image", "video"), f"source {i}: kind {s.get('kind')!r}")
            need(isinstance(s.get("info"), dict), f"source {i}: info is not an object")
            need(
                _is_int(s.get("frames_indexed")) and _is_int(s.get("detections")),
                f"source {i}: counts missing",
            )
        seen: list[set[int]] = [set() for _ in sources]  # frames listed, per source
        numbers = set()
        for i, e in enumerate(shards):
            need(isinstance(e, dict), f"shard entry {i} is not an object")
            m = _SHARD_NAME.match(str(e.get("file")))
            need(m is not None, f"shard entry {i}: bad file name {e.get('file')!r}")
            need(int(m.group(1)) not in numbers, f"shard {e['file']} listed twice")
            numbers.add(int(m.group(1)))
            need(
                all(_is_int(e.get(k)) and e[k] >= 0 for k in ("bytes", "detections", "units")),
                f"shard {e['file']}: counts missing",
            )
            count = 0
            for run in e["unit_runs"]:
                need(
                    isinstance(run, list) and len(run) == 4 and all(map(_is_int, run)),
                    f"shard {e['file']}: bad unit run {run!r}",
                )
                sid, first, n, step = run
                need(
                    0 <= sid < len(sources) and n >= 1 and step >= 1 and first >= -1,
                    f"shard {e['file']}: bad unit run {run!r}",
                )
                image = sources[sid]["kind"] == "image"
                need(
                    (first == -1 and n == 1) if image else first >= 0,
                    f"shard {e['file']}: unit run {run!r} contradicts the source's kind",
                )
                count += n
                need(
                    count <= e["units"], f"shard {e['file']}: more units in runs than {e['units']}"
                )
                before = len(seen[sid])
                seen[sid].update(range(first, first + n * step, step))
                need(
                    len(seen[sid]) == before + n,
                    f"shard {e['file']}: unit run {run!r} "
                    f"lists units of {sources[sid]['path']!r} listed before",
                )
            need(count == e["units"], f"shard {e['file']}: {count} units in runs, not {e['units']}")
        for s, frames in zip(sources, seen):
            need(
                s["frames_indexed"] == len(frames),
                f"source {s['path']!r}: frames_indexed "
                f"{s['frames_indexed']} but {len(frames)} units listed",
            )
        t = doc["totals"]
        want = {
            "detections": sum(e["detections"] for e in shards),
            "units": sum(map(len, seen)),
            "sources": len(sources),
            "shards": len(shards),
        }
        need(
            isinstance(t, dict) and all(t.get(k) == v for k, v in want.items()),
            f"totals {t} do not match the entries {want}",
        )
        for e in shards:
            path = os.path.join(self.index_dir, e["file"])
            try:
                size = os.path.getsize(path)
            except OSError:
                raise DamagedIndexError(
                    f"shard {path} is missing, but {INDEX_FILE} lists it"
                ) from None
            if size != e["bytes"]:
                raise DamagedIndexError(
                    f"shard {path} is damaged: {size} bytes on disk, {INDEX_FILE} records "
                    f"{e['bytes']}"
                )

    def _set_state(self, doc: dict) -> None:
        if getattr(self, "_uid", doc["uid"]) != doc["uid"]:  # another index in the folder
            self._search, self._cols, self._cols_shards = None, None, 0
        self.dim: int = doc["dim"]
        self.meta: dict = doc["meta"]
        self._uid: str = doc["uid"]
        self._sources: list[dict] = doc["sources"]
        self._shards: list[dict] = doc["shards"]
        self._source_ids = {s["path"]: i for i, s in enumerate(self._sources)}
        self._done: dict[int, set[int]] = {}
        for e in self._shards:
            for sid, first, n, step in e["unit_runs"]:
                self._done.setdefault(sid, set()).update(range(first, first + n * step, step))
        self._offsets = np.cumsum([0] + [e["detections"] for e in self._shards]).tolist()
        if self._cols_shards > len(self._shards):
            self._cols, self._cols_shards = None, 0

    def _document(self, sources: list[dict], shards: list[dict]) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "uid": self._uid,
            "dim": self.dim,
            "meta": self.meta,
            "totals": {
                "detections": sum(e["detections"] for e in shards),
                "units": sum(e["units"] for e in shards),
                "sources": len(sources),
                "shards": len(shards),
            },
            "sources": sources,
            "shards": shards,
        }

    def refresh(self) -> None:
        """Re-read index.json (a reader following a writer in another process)."""
        if self._buf:
            raise GalleryIndexError("refresh() with buffered units: flush() them first")
        self._set_state(self._read_index())

    # -- locking ----------------------------------------------------------------------------

    @staticmethod
    def _lock(index_dir: str) -> int:
        path = os.path.join(index_dir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise IndexLockedError(
                f"{index_dir} is being written by another process or GalleryIndex object "
                f"(lock {path} is held); wait for it to finish or close it"
            ) from None
        return fd

    def _writer(self) -> None:
        """Take the writer lock (once), catch up with index.json and remove orphan files."""
        if self._lock_fd is not None:
            return
        fd = self._lock(self.index_dir)
        try:
            self._set_state(self._read_index())
            self._remove_orphans()
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd

    def _remove_orphans(self) -> None:
        listed = {os.path.basename(e["file"]) for e in self._shards}
        shard_dir = os.path.join(self.index_dir, SHARD_DIR)
        os.makedirs(shard_dir, exist_ok=True)
        for folder, names in (
            (shard_dir, os.listdir(shard_dir)),
            (self.index_dir, os.listdir(self.index_dir)),
        ):
            for name in names:
                orphan = folder == shard_dir and name.startswith("shard_") and name not in listed
                if orphan or (name.startswith(".") and name.endswith(".tmp")):
                    logger.info(
                        "removing %s (left by an interrupted write)", os.path.join(folder, name)
                    )
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(folder, name))

    def close(self, flush: bool = True) -> None:
        """Flush the buffered units (unless ``flush=False``: they are dropped, as in a crash)
        and release the writer lock."""
        try:
            if flush:
                self.flush()
        finally:
            self._clear_buffer()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> GalleryIndex:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # the buffered units are complete: keep them even if the caller failed
            self.close()
        except Exception:
            logger.exception("could not flush %s while handling another error", self.index_dir)

    def __del__(self) -> None:  # no flush here: an object dropped unclosed acts like a crash
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- writing ----------------------------------------------------------------------------

    def _clear_buffer(self, committed: bool = False) -> None:
        """Empty the buffer; its new sources are forgotten unless they were just committed."""
        if not committed:
            for s in getattr(self, "_pending_sources", ()):
                self._source_ids.pop(s["path"], None)
        self._buf: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]] = []
        self._buf_keys: set[tuple[int, int]] = set()
        self._pending_sources: list[dict] = []
        self._pending_info: dict[int, dict] = {}

    def _check_key(self, unit_key: Any) -> tuple[str, int]:
        try:
            path, frame = unit_key
        except (TypeError, ValueError):
            raise TypeError(f"a unit key is (source path, frame index), got {unit_key!r}") from None
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str) or not path:
            raise TypeError(f"unit {unit_key!r}: the source path must be a non-empty str")
        if not _is_int(frame) or not -1 <= frame <= _INT32_MAX:
            raise ValueError(
                f"unit {unit_key!r}: the frame must be -1 (still image) or a frame index >= 0"
            )
        return path, int(frame)

    def _source_kind(self, sid: int) -> str:
        n = len(self._sources)
        return (self._sources[sid] if sid < n else self._pending_sources[sid - n])["kind"]

    def is_done(self, unit_key: tuple[str, int]) -> bool:
        """Whether the unit is committed (listed in index.json); buffered units are not."""
        path, frame = self._check_key(unit_key)
        sid = self._source_ids.get(path)
        return sid is not None and frame in self._done.get(sid, ())

    def done_units(self) -> set[tuple[str, int]]:
        """The committed units (source path, frame)."""
        return {(self._sources[sid]["path"], f) for sid, fs in self._done.items() for f in fs}

    def done_frames(self, path: str) -> set[int]:
        """The committed frames of one source ({-1} for an indexed image, else frame indices)."""
        sid = self._source_ids.get(os.fspath(path))
        return set(self._done.get(sid, ())) if sid is not None else set()

    def add(
        self,
        unit_key: tuple[str, int],
        boxes: np.ndarray,
        scores: np.ndarray,
        embeds: np.ndarray,
        source_info: dict | None = None,
    ) -> bool:
        """Buffer the detections of one unit (possibly none); flush every ``flush_every`` units.

        ``boxes`` [n, 4] (x1, y1, x2, y2 original pixels), ``scores`` [n], ``embeds`` [n, D]
        with unit L2 norm (checked to ``NORM_TOL``). ``source_info`` (JSON-serialisable, e.g.
        ``{"fps": 5.0, "stride": 6}``) is merged into the source's entry of the sources table.
        Returns False, storing nothing, if the unit is already done or buffered.
        """
        path, frame = self._check_key(unit_key)
        boxes, scores, embeds = self._check_arrays((path, frame), boxes, scores, embeds)
        if source_info is not None:
            source_info = _json_dict(source_info, "source_info")
        self._writer()
        kind = "image" if frame == -1 else "video"
        sid = self._source_ids.get(path)
        if sid is not None and self._source_kind(sid) != kind:
            raise ValueError(
                f"unit ({path!r}, {frame}): {path!r} is indexed as a {self._source_kind(sid)} "
                f"{'(frame -1)' if kind == 'video' else '(frames >= 0)'}; a source is either a "
                "still image (frame -1) or a video (frames >= 0)"
            )
        done = sid is not None and frame in self._done.get(sid, ())
        if done or (sid, frame) in self._buf_keys:
            logger.debug("unit (%r, %d) is already indexed: skipped", path, frame)
            return False
        if sid is None:
            sid = len(self._sources) + len(self._pending_sources)
            self._pending_sources.append(
                {"path": path, "kind": kind, "frames_indexed": 0, "detections": 0, "info": {}}
            )
            self._source_ids[path] = sid
        if source_info:
            self._pending_info.setdefault(sid, {}).update(source_info)
        self._buf.append((sid, frame, boxes, scores, embeds))
        self._buf_keys.add((sid, frame))
        if len(self._buf) >= self.flush_every:
            self.flush()
        return True

    def _check_arrays(
        self, key: tuple[str, int], boxes: Any, scores: Any, embeds: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        where = f"unit {key!r}"
        embeds = np.array(embeds, dtype=np.float32)  # copies: the caller may reuse its buffer
        boxes = np.array(boxes, dtype=np.float32)
        scores = np.array(scores, dtype=np.float32)
        if embeds.size == 0:
            embeds = embeds.reshape(0, self.dim)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        scores = scores.reshape(-1) if scores.ndim <= 1 else scores
        if embeds.ndim != 2 or embeds.shape[1] != self.dim:
            raise ValueError(f"{where}: embeds must be [n, {self.dim}], got {embeds.shape}")
        n = len(embeds)
        if boxes.shape != (n, 4) or scores.shape != (n,):
            raise ValueError(
                f"{where}: {n} embeddings, so boxes must be [{n}, 4] and scores "
                f"[{n}], got {boxes.shape} and {scores.shape}"
            )
        for name, a in (("embeds", embeds), ("boxes", boxes), ("scores", scores)):
            if not np.isfinite(a).all():
                raise ValueError(f"{where}: {name} holds NaN or infinite values")
        if n:
            norms = np.linalg.norm(embeds, axis=1)
            worst = int(np.argmax(np.abs(norms - 1)))
            if abs(norms[worst] - 1) > NORM_TOL:
                raise ValueError(
                    f"{where}: embeddings must be L2-normalised; row {worst} has "
                    f"norm {norms[worst]:.6g}"
                )
            bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
            if bad.any():
                raise ValueError(
                    f"{where}: box {int(np.argmax(bad))} is not (x1, y1, x2, y2) "
                    f"with x2 >= x1, y2 >= y1: {boxes[np.argmax(bad)].tolist()}"
                )
        return boxes, scores, embeds

    @property
    def num_buffered(self) -> int:
        """Units added but not yet flushed (not done, not searchable)."""
        return len(self._buf)

    def flush(self) -> int:
        """Write the buffered units as one shard and commit it; returns the units committed.

        On any error nothing is committed, the buffer is kept (a later flush retries) and the
        shard file possibly written is listed nowhere (see the module docstring).
        """
        if not self._buf:
            return 0
        self._writer()
        buf = self._buf
        arrays = {
            "embeds": np.concatenate([b[4] for b in buf]).reshape(-1, self.dim),
            "boxes": np.concatenate([b[2] for b in buf]).reshape(-1, 4),
            "scores": np.concatenate([b[3] for b in buf]),
            "source": np.concatenate([np.full(len(b[3]), b[0], np.int32) for b in buf]),
            "frame": np.concatenate([np.full(len(b[3]), b[1], np.int32) for b in buf]),
        }
        numbers = [int(_SHARD_NAME.match(e["file"]).group(1)) for e in self._shards]
        name = f"{SHARD_DIR}/shard_{max(numbers, default=-1) + 1:06d}.npz"
        path = os.path.join(self.index_dir, name)
        atomic_write(path, lambda f: np.savez(f, **arrays))
        entry = {
            "file": name,
            "bytes": os.path.getsize(path),
            "detections": len(arrays["scores"]),
            "units": len(buf),
            "unit_runs": _encode_runs([(b[0], b[1]) for b in buf]),
        }
        # the new sources table: entries this flush changes are copies (the committed ones
        # stay as they are if the commit fails); O(sources) list copy, not a deep copy
        sources = self._sources + self._pending_sources
        for sid in {b[0] for b in buf} | set(self._pending_info):
            e = sources[sid]
            sources[sid] = {**e, "info": {**e["info"], **self._pending_info.get(sid, {})}}
        for sid, _, _, scores, _ in buf:
            sources[sid]["frames_indexed"] += 1
            sources[sid]["detections"] += len(scores)
        shards = self._shards + [entry]
        doc = self._document(sources, shards)
        atomic_write(
            os.path.join(self.index_dir, INDEX_FILE),
            lambda f: f.write(_dumps_index(doc).encode("utf-8")),
        )
        # committed: only now does the object's state change (incrementally, O(buffer))
        n_units = len(buf)
        self._sources, self._shards = sources, shards
        for sid, frame, *_ in buf:
            self._done.setdefault(sid, set()).add(frame)
        self._offsets.append(self._offsets[-1] + entry["detections"])
        self._clear_buffer(committed=True)
        logger.debug(
            "%s: committed %s (%d units, %d detections)",
            self.index_dir,
            name,
            n_units,
            entry["detections"],
        )
        return n_units

    # -- reading ----------------------------------------------------------------------------

    @property
    def num_detections(self) -> int:
        """Committed detections (buffered ones are not counted)."""
        return int(self._offsets[-1])

    @property
    def num_units(self) -> int:
        return sum(e["units"] for e in self._shards)

    @property
    def sources(self) -> list[dict]:
        """The sources table (committed): path, kind, frames_indexed, detections, info."""
        return copy.deepcopy(self._sources)

    def _read_shard(self, i: int, fields: Sequence[str]) -> dict[str, np.ndarray]:
        e = self._shards[i]
        path = os.path.join(self.index_dir, e["file"])
        n = e["detections"]
        shapes = {
            "embeds": (n, self.dim),
            "boxes": (n, 4),
            "scores": (n,),
            "source": (n,),
            "frame": (n,),
        }
        dtypes = {
            "embeds": np.float32,
            "boxes": np.float32,
            "scores": np.float32,
            "source": np.int32,
            "frame": np.int32,
        }
        try:
            with np.load(path, allow_pickle=False) as z:
                out = {f: z[f] for f in fields}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise DamagedIndexError(
                f"shard {path} is damaged ({type(exc).__name__}: {exc}); the gallery cannot be "
                "read: re-index into a new folder"
            ) from None
        for f, a in out.items():
            if a.shape != shapes[f] or a.dtype != dtypes[f]:
                raise DamagedIndexError(
                    f"shard {path} is damaged: {f} is {a.dtype} {a.shape}, expected "
                    f"{np.dtype(dtypes[f])} {shapes[f]}"
                )
        return out

    def load_arrays(self, fields: Sequence[str] = FIELDS) -> dict[str, np.ndarray]:
        """All committed detections, concatenated in id order: embeds [N, D], boxes [N, 4],
        scores [N], source [N] (index into :attr:`sources`), frame [N] (loaded in memory)."""
        bad = [f for f in fields if f not in FIELDS]
        if bad:
            raise ValueError(f"unknown fields {bad}; the fields are {FIELDS}")
        parts = [self._read_shard(i, fields) for i in range(len(self._shards))]
        empty = {
            "embeds": np.zeros((0, self.dim), np.float32),
            "boxes": np.zeros((0, 4), np.float32),
            "scores": np.zeros(0, np.float32),
            "source": np.zeros(0, np.int32),
            "frame": np.zeros(0, np.int32),
        }
        return {f: np.concatenate([empty[f]] + [p[f] for p in parts]) for f in fields}

    def embeddings(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Embeddings ``[len(ids), D]`` of the given detection ids, reading only the shards that
        hold them (re-ranking a few units without loading the whole gallery)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_detections):
            raise IndexError(f"detection ids must be in [0, {self.num_detections})")
        ends = np.cumsum([e["detections"] for e in self._shards])
        starts = ends - np.asarray([e["detections"] for e in self._shards], dtype=np.int64)
        shard_of = np.searchsorted(ends, ids, side="right")
        out = np.zeros((ids.size, self.dim), np.float32)
        for shard in np.unique(shard_of):
            rows = np.flatnonzero(shard_of == shard)
            embeds = self._read_shard(int(shard), ("embeds",))["embeds"]
            out[rows] = embeds[ids[rows] - starts[shard]]
        return out

    def _columns(self) -> dict[str, np.ndarray]:
        """boxes, scores, source, frame of all committed detections (cached, grown per shard)."""
        if self._cols is None or self._cols_shards < len(self._shards):
            fields = ("boxes", "scores", "source", "frame")
            new = [self._read_shard(i, fields) for i in range(self._cols_shards, len(self._shards))]
            if self._cols is None:
                self._cols = {
                    "boxes": np.zeros((0, 4), np.float32),
                    "scores": np.zeros(0, np.float32),
                    "source": np.zeros(0, np.int32),
                    "frame": np.zeros(0, np.int32),
                }
            self._cols = {f: np.concatenate([self._cols[f]] + [p[f] for p in new]) for f in fields}
            self._cols_shards = len(self._shards)
        return self._cols

    def detection(self, i: int) -> dict[str, Any]:
        """Detection ``i``: {id, source (path), frame, box [x1, y1, x2, y2], score}."""
        if not _is_int(i) or not 0 <= i < self.num_detections:
            raise IndexError(f"detection id {i!r} out of range [0, {self.num_detections})")
        c = self._columns()
        return {
            "id": int(i),
            "source": self._sources[int(c["source"][i])]["path"],
            "frame": int(c["frame"][i]),
            "box": c["boxes"][i].tolist(),
            "score": float(c["scores"][i]),
        }

    def _embed_chunks(self, start: int = 0) -> Iterator[np.ndarray]:
        """Embeddings of detections start..N-1, one shard at a time."""
        for i in range(len(self._shards)):
            lo, hi = self._offsets[i], self._offsets[i + 1]
            if hi > start and hi > lo:
                yield self._read_shard(i, ("embeds",))["embeds"][max(0, start - lo) :]

    def _sample_embeds(self, size: int, seed: int) -> np.ndarray:
        n = self.num_detections
        ids = (
            np.arange(n)
            if size >= n
            else np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
        )
        out = []
        for i in range(len(self._shards)):
            lo, hi = self._offsets[i], self._offsets[i + 1]
            a, b = np.searchsorted(ids, [lo, hi])
            if b > a:
                out.append(self._read_shard(i, ("embeds",))["embeds"][ids[a:b] - lo])
        return np.concatenate(out)

    # -- search -----------------------------------------------------------------------------

    def build_search_index(
        self,
        kind: str = "flat",
        nlist: int | None = None,
        m: int | None = None,
        nprobe: int | None = None,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Build the faiss index over all committed detections and save it (search.faiss).

        ``kind``: "flat" (exact, ``IndexFlatIP``), "ivf" (``IndexIVFFlat``) or "ivfpq"
        (``IndexIVFPQ``), inner product = cosine for unit vectors; parameters left None get
        the defaults of :func:`search_params`. Returns the contents of search.json.
        """
        n = self.num_detections
        params = search_params(kind, n, self.dim, nlist, m, nprobe)
        t0 = time.perf_counter()
        index = _make_faiss(
            params, self.dim, seed, lambda s: self._sample_embeds(s, seed), self._embed_chunks()
        )
        info = {
            "uid": self._uid,
            "dim": self.dim,
            "ntotal": int(index.ntotal),
            "params": params,
            "requested": {"nlist": nlist, "m": m, "nprobe": nprobe},
            "seed": seed,
            "build_seconds": round(time.perf_counter() - t0, 3),
        }
        self._search = (index, info)
        self._save_search()
        logger.info(
            "%s: built a %r search index over %d detections in %.1f s",
            self.index_dir,
            kind,
            n,
            info["build_seconds"],
        )
        return dict(info)

    def _save_search(self) -> None:
        assert self._search is not None
        index, info = self._search
        faiss = _faiss()
        path = os.path.join(self.index_dir, SEARCH_FILE)
        try:  # a cache: not synced to disk (a damaged one is rebuilt when loaded)
            fd, tmp = tempfile.mkstemp(dir=self.index_dir, prefix=f".{SEARCH_FILE}.", suffix=".tmp")
            os.close(fd)
            try:
                faiss.write_index(index, tmp)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                raise
            atomic_write(
                os.path.join(self.index_dir, SEARCH_META),
                lambda f: f.write(json.dumps(info, indent=1).encode()),
                sync=False,
            )
        except (OSError, RuntimeError) as e:  # e.g. a read-only gallery: search from memory
            logger.warning(
                "could not save the search index to %s (%s); it is kept in memory", path, e
            )

    def _load_search(self) -> tuple[Any, dict] | None:
        """The saved search index if usable, else None (after a log line saying why)."""
        path = os.path.join(self.index_dir, SEARCH_FILE)
        meta_path = os.path.join(self.index_dir, SEARCH_META)
        if not os.path.exists(path) or not os.path.exists(meta_path):
            return None
        try:
            with open(meta_path, "rb") as f:
                info = json.loads(f.read().decode("utf-8"))
            if info.get("uid") != self._uid or info.get("dim") != self.dim:
                raise ValueError("it belongs to another gallery")
            index = _faiss().read_index(path)
            if index.d != self.dim or index.ntotal != info.get("ntotal"):
                raise ValueError(f"{SEARCH_META} does not describe {SEARCH_FILE}")
            if index.ntotal > self.num_detections:
                raise ValueError(
                    f"it covers {index.ntotal} detections, more than the "
                    f"{self.num_detections} stored"
                )
            if info["params"]["kind"] != "flat":
                _faiss().extract_index_ivf(index).nprobe = info["params"]["nprobe"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
            logger.warning("ignoring the saved search index %s (%s): rebuilding it", path, e)
            return None
        return index, info

    def _search_index(self):
        """The faiss index covering all committed detections: loaded, extended or built."""
        n = self.num_detections
        if self._search is None:
            self._search = self._load_search()
        if self._search is None:
            logger.info(
                "%s: no search index yet: building an exact ('flat') one over %d detections",
                self.index_dir,
                n,
            )
            self.build_search_index("flat")
        index, info = self._search  # type: ignore[misc]
        if index.ntotal < n:
            kind = info["params"]["kind"]
            if kind == "flat":
                logger.info(
                    "%s: the search index covers %d of %d detections: adding the %d new ones",
                    self.index_dir,
                    index.ntotal,
                    n,
                    n - index.ntotal,
                )
                for chunk in self._embed_chunks(index.ntotal):
                    index.add(np.ascontiguousarray(chunk))
                info["ntotal"] = int(index.ntotal)
                self._save_search()
            else:
                logger.info(
                    "%s: the %r search index covers %d of %d detections: rebuilding it",
                    self.index_dir,
                    kind,
                    index.ntotal,
                    n,
                )
                self.build_search_index(kind, seed=info.get("seed", 0), **info.get("requested", {}))
        return self._search[0]  # type: ignore[index]

    def search(
        self,
        query_embeds: np.ndarray,
        topk: int = 10,
        min_sim: float | None = None,
        min_score: float | None = None,
        best_per_image: bool = True,
        nprobe: int | None = None,
    ) -> list[list[SearchHit]]:
        """The gallery detections most similar to each query, best first.

        ``query_embeds`` [Q, D] or [D] (normalised here). Hits have similarity >= ``min_sim``
        and detection score >= ``min_score`` when given; with ``best_per_image`` only the most
        similar detection of each unit (source, frame) is kept. faiss is asked for topk * 4
        candidates, then 4x more, until topk hits pass or no candidate is left. Uses the saved
        search index (built as "flat" if there is none; brought up to date if stale).
        ``nprobe``: inverted lists scanned per query by an "ivf"/"ivfpq" index for this call
        (default: the one saved with the index; more lists, higher recall, slower; given to
        faiss as per-call search parameters, so concurrent searches do not interfere); ignored
        by an exact one.
        """
        if not _is_int(topk) or topk < 1:
            raise ValueError(f"topk must be a positive integer, got {topk!r}")
        if nprobe is not None and (not _is_int(nprobe) or nprobe < 1):
            raise ValueError(f"nprobe must be a positive integer, got {nprobe!r}")
        q = np.array(query_embeds, dtype=np.float32)
        q = q[None] if q.ndim == 1 else q
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query embeddings must be [Q, {self.dim}], got {q.shape}")
        if not np.isfinite(q).all():
            raise ValueError("query embeddings hold NaN or infinite values")
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"query {int(np.argmin(norms))} is the zero vector")
        q = np.ascontiguousarray(q / norms)
        if self.num_detections == 0 or len(q) == 0:
            return [[] for _ in range(len(q))]
        index = self._search_index()
        search_kw: dict[str, Any] = {}
        if nprobe is not None and self._search[1]["params"]["kind"] != "flat":  # type: ignore
            faiss = _faiss()  # per-call parameters: the index itself is not changed
            nlist = faiss.extract_index_ivf(index).nlist
            search_kw["params"] = faiss.SearchParametersIVF(nprobe=min(int(nprobe), nlist))
        results: list[list[SearchHit]] = [[] for _ in range(len(q))]
        n = self.num_detections
        cols = self._columns()
        filtering = best_per_image or min_score is not None
        k = min(n, topk * CANDIDATE_FACTOR if filtering else topk)
        todo = np.arange(len(q))
        while len(todo):
            rows = max(1, SEARCH_BATCH_ENTRIES // k)
            batches = [
                index.search(q[todo[a : a + rows]], k, **search_kw)
                for a in range(0, len(todo), rows)
            ]
            sims = np.concatenate([b[0] for b in batches])
            ids = np.concatenate([b[1] for b in batches])
            again = []
            for row, qi in enumerate(todo):
                keep = self._select(
                    sims[row], ids[row], topk, min_sim, min_score, best_per_image, cols
                )
                exhausted = (
                    k >= n or ids[row, -1] < 0 or (min_sim is not None and sims[row, -1] < min_sim)
                )
                if len(keep) >= topk or exhausted:
                    results[qi] = [
                        self._hit(int(ids[row, j]), float(sims[row, j]), cols) for j in keep
                    ]
                else:
                    again.append(qi)
            todo = np.asarray(again, dtype=np.int64)
            k = min(n, k * CANDIDATE_GROWTH)
        return results

    @staticmethod
    def _select(
        sims: np.ndarray,
        ids: np.ndarray,
        topk: int,
        min_sim: float | None,
        min_score: float | None,
        best_per_image: bool,
        cols: dict[str, np.ndarray],
    ) -> np.ndarray:
        """Positions (in the candidate list) of the hits kept, best first."""
        ok = ids >= 0
        if min_sim is not None:
            ok &= sims >= min_sim
        pos = np.flatnonzero(ok)
        if min_score is not None:
            pos = pos[cols["scores"][ids[pos]] >= min_score]
        if best_per_image and len(pos):
            det = ids[pos]
            unit = cols["source"][det].astype(np.int64) << 32 | (cols["frame"][det] + 1)
            _, first = np.unique(unit, return_index=True)  # candidates are best first
            pos = pos[np.sort(first)]
        return pos[:topk]

    def _hit(self, i: int, sim: float, cols: dict[str, np.ndarray]) -> SearchHit:
        source = self._sources[int(cols["source"][i])]["path"]
        return SearchHit(
            id=i,
            similarity=sim,
            source=source,
            frame=int(cols["frame"][i]),
            box=cols["boxes"][i].tolist(),
            score=float(cols["scores"][i]),
        )

    def __repr__(self) -> str:
        return (
            f"GalleryIndex({self.index_dir!r}, dim={self.dim}, detections="
            f"{self.num_detections}, units={self.num_units}, sources={len(self._sources)})"
        )
