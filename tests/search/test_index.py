"""GalleryIndex (dcinet_d2/search/index.py): storage, crash safety, appending, faiss search.

Expected rankings are known by construction (hand-made embeddings) or computed by brute force
with numpy (``search_numpy``). Fast: no model, small galleries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dcinet_d2.search import index as gi
from dcinet_d2.search.index import (
    DamagedIndexError,
    GalleryIndex,
    GalleryIndexError,
    IncompatibleIndexError,
    IndexLockedError,
    build_faiss_index,
    search_numpy,
)
from tests.reliability.common import captured_log

LOGGER = "dcinet_d2.search.index"


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def at_similarity(sims: list[float], dim: int = 8, rng_seed: int = 0) -> np.ndarray:
    """Unit vectors whose cosine with e0 is exactly ``sims`` (the rest in a random direction
    orthogonal to e0)."""
    rng = np.random.default_rng(rng_seed)
    out = np.zeros((len(sims), dim), np.float64)
    for i, s in enumerate(sims):
        other = rng.standard_normal(dim - 1)
        out[i, 0] = s
        out[i, 1:] = np.sqrt(1 - s * s) * other / np.linalg.norm(other)
    return out.astype(np.float32)


def boxes_for(n: int, offset: float = 0.0) -> np.ndarray:
    x = offset + 10 * np.arange(n, dtype=np.float32)[:, None]
    return np.hstack([x, x, x + 5, x + 20]).astype(np.float32)


def e0(dim: int = 8) -> np.ndarray:
    q = np.zeros((1, dim), np.float32)
    q[0, 0] = 1
    return q


# hand-made gallery: unit -> (similarities to e0, detection scores)
HAND = {
    ("a.jpg", -1): ([0.9, 0.5, 0.1], [0.3, 0.9, 0.9]),
    ("v.mp4", 0): ([0.8, 0.85], [0.9, 0.9]),
    ("v.mp4", 1): ([0.3], [0.9]),
    ("d.jpg", -1): ([], []),
    ("e.jpg", -1): ([-0.2], [0.9]),
}


@pytest.fixture
def hand(tmp_path) -> GalleryIndex:
    g = GalleryIndex.create(tmp_path / "g", 8)
    for i, (key, (sims, scores)) in enumerate(HAND.items()):
        g.add(key, boxes_for(len(sims)), scores, at_similarity(sims, rng_seed=i))
    g.flush()
    return g


def hits_of(hits) -> list[tuple[str, int, float]]:
    return [(h["source"], h["frame"], round(h["similarity"], 5)) for h in hits]


def test_hand_made_ranking(hand):
    assert hand.num_detections == 7 and hand.num_units == 5
    assert hand.is_done(("d.jpg", -1))  # a unit without detections is done all the same
    [hits] = hand.search(e0(), topk=10, best_per_image=False)
    assert [round(h["similarity"], 5) for h in hits] == [0.9, 0.85, 0.8, 0.5, 0.3, 0.1, -0.2]
    for h in hits:
        assert h == {**hand.detection(h["id"]), "similarity": h["similarity"]}
    # best per image: one hit per (source, frame), its most similar detection
    [hits] = hand.search(e0(), topk=10)
    assert hits_of(hits) == [
        ("a.jpg", -1, 0.9),
        ("v.mp4", 0, 0.85),
        ("v.mp4", 1, 0.3),
        ("e.jpg", -1, -0.2),
    ]
    # topk, min_sim, min_score
    assert hits_of(hand.search(e0(), topk=2)[0]) == [("a.jpg", -1, 0.9), ("v.mp4", 0, 0.85)]
    assert hits_of(hand.search(e0(), topk=10, min_sim=0.4, best_per_image=False)[0]) == [
        ("a.jpg", -1, 0.9),
        ("v.mp4", 0, 0.85),
        ("v.mp4", 0, 0.8),
        ("a.jpg", -1, 0.5),
    ]
    assert hits_of(hand.search(e0(), topk=10, min_sim=0.4)[0]) == [
        ("a.jpg", -1, 0.9),
        ("v.mp4", 0, 0.85),
    ]
    # the 0.9 detection scores 0.3: with min_score 0.5, a.jpg's best is its 0.5 detection
    assert hits_of(hand.search(e0(), topk=10, min_score=0.5)[0]) == [
        ("v.mp4", 0, 0.85),
        ("a.jpg", -1, 0.5),
        ("v.mp4", 1, 0.3),
        ("e.jpg", -1, -0.2),
    ]
    # unnormalised queries are normalised; a [D] query works too
    assert hits_of(hand.search(3 * e0()[0], topk=1)[0]) == [("a.jpg", -1, 0.9)]


def brute_force_best_per_unit(embeds, source, frame, q, topk):
    """(ids, sims) of the best detection of each unit, best units first (numpy reference)."""
    sims = embeds @ q
    best: dict[tuple[int, int], int] = {}
    for i in np.argsort(-sims, kind="stable"):
        best.setdefault((int(source[i]), int(frame[i])), int(i))
    ids = sorted(best.values(), key=lambda i: -sims[i])[:topk]
    return ids, sims[ids]


def random_gallery(tmp_path, n_units=200, dim=32, seed=0, flush_every=64):
    rng = np.random.default_rng(seed)
    g = GalleryIndex.create(tmp_path / "r", dim, flush_every=flush_every)
    for u in range(n_units):
        n = int(rng.integers(0, 6))
        key = (f"img{u % 50}.jpg", -1) if u < 50 else ("clip.mp4", 3 * u)
        embeds = unit_rows(rng.standard_normal((n, dim)))
        g.add(key, boxes_for(n, u), rng.uniform(0.5, 1, n), embeds)
    g.flush()
    return g, unit_rows(rng.standard_normal((20, dim)))


def test_flat_equals_numpy_brute_force(tmp_path):
    g, queries = random_gallery(tmp_path)
    arrays = g.load_arrays()
    assert g.num_detections == len(arrays["embeds"]) > 300
    sims_np, ids_np = search_numpy(arrays["embeds"], queries, 50)
    res = g.search(queries, topk=50, best_per_image=False)
    for q, hits in enumerate(res):
        assert [h["id"] for h in hits] == ids_np[q].tolist()
        np.testing.assert_allclose([h["similarity"] for h in hits], sims_np[q], atol=1e-6)
    index, _ = build_faiss_index(arrays["embeds"], "flat")
    sims_f, ids_f = index.search(queries, 50)
    assert np.array_equal(ids_f, ids_np)
    np.testing.assert_allclose(sims_f, sims_np, atol=1e-6)
    # best_per_image: one hit per unit, the unit's most similar detection, units ranked
    for q, hits in enumerate(g.search(queries, topk=30)):
        ids, sims = brute_force_best_per_unit(
            arrays["embeds"], arrays["source"], arrays["frame"], queries[q], 30
        )
        assert [h["id"] for h in hits] == ids
        np.testing.assert_allclose([h["similarity"] for h in hits], sims, atol=1e-6)
        assert len({(h["source"], h["frame"]) for h in hits}) == len(hits)
    # padding of search_numpy when k > n
    s, i = search_numpy(arrays["embeds"][:3], queries[:1], 5)
    assert i[0, 3:].tolist() == [-1, -1] and np.isneginf(s[0, 3:]).all()


def test_best_per_image_asks_for_more_candidates(tmp_path):
    """One unit holds 100 near-copies of the query: the first topk*4 candidates all come from
    it, so the search must ask again until it has topk distinct units."""
    dim = 8
    g = GalleryIndex.create(tmp_path / "g", dim)
    crowd = at_similarity(list(np.linspace(0.99, 0.95, 100)), dim)
    g.add(("crowd.jpg", -1), boxes_for(100), np.ones(100), crowd)
    sims = [0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    for i, s in enumerate(sims):
        g.add((f"single{i}.jpg", -1), boxes_for(1), [1.0], at_similarity([s], dim, i + 1))
    g.flush()
    [hits] = g.search(e0(dim), topk=5)
    assert hits_of(hits) == [("crowd.jpg", -1, 0.99)] + [
        (f"single{i}.jpg", -1, s) for i, s in enumerate(sims[:4])
    ]
    [hits] = g.search(e0(dim), topk=50)  # fewer units than topk: all of them, nothing more
    assert len(hits) == 7


def test_crash_before_flush_and_during_commit(tmp_path, monkeypatch):
    dim, rng = 8, np.random.default_rng(1)
    data = {("v.mp4", f): unit_rows(rng.standard_normal((f % 3, dim))) for f in range(12)}

    def add(g, keys):
        return [
            g.add(k, boxes_for(len(data[k]), k[1]), np.full(len(data[k]), 0.9), data[k])
            for k in keys
        ]

    keys = list(data)
    root = tmp_path / "g"
    g = GalleryIndex.create(root, dim, flush_every=100)
    add(g, keys[:4])
    g.close(flush=False)  # crash 1: after add(), before any flush
    g = GalleryIndex.open(root, flush_every=100)
    assert g.num_units == 0 and g.num_detections == 0 and not g.is_done(keys[0])
    assert add(g, keys[:4]) == [True] * 4
    assert add(g, keys[:1]) == [False]  # already buffered: skipped
    assert g.flush() == 4
    add(g, keys[4:8])

    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("index.json"):
            raise OSError("simulated crash before index.json is replaced")
        return real_replace(src, dst)

    monkeypatch.setattr(gi.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        g.flush()  # crash 2: shard_000001.npz written, index.json not updated
    monkeypatch.setattr(gi.os, "replace", real_replace)
    assert os.path.exists(root / "shards" / "shard_000001.npz")  # the orphan
    assert g.num_units == 4 and g.num_buffered == 4  # nothing committed, buffer kept
    g.close(flush=False)

    g = GalleryIndex.open(root, flush_every=100)
    assert g.done_units() == set(keys[:4])
    assert not any(g.is_done(k) for k in keys[4:])
    assert add(g, keys) == [False] * 4 + [True] * 8  # done units skipped, the rest redone
    g.close()
    g = GalleryIndex.open(root)
    want = sum(len(v) for v in data.values())
    assert g.num_detections == want and g.num_units == 12
    doc = json.loads((root / "index.json").read_text())
    assert doc["totals"] == {"detections": want, "units": 12, "sources": 1, "shards": 2}
    assert sorted(os.listdir(root / "shards")) == ["shard_000000.npz", "shard_000001.npz"]
    assert not [f for f in os.listdir(root) if f.endswith(".tmp")]
    arrays = g.load_arrays()
    for k, emb in data.items():  # every unit's detections exactly once
        rows = np.flatnonzero(arrays["frame"] == k[1])
        np.testing.assert_array_equal(arrays["embeds"][rows], emb)
    assert g.sources[0]["frames_indexed"] == 12 and g.sources[0]["kind"] == "video"


def test_flush_retry_in_process(tmp_path, monkeypatch):
    """A failed flush keeps its buffer: flushing again commits it once."""
    g = GalleryIndex.create(tmp_path / "g", 8, flush_every=100)
    g.add(("a.jpg", -1), boxes_for(2), [0.9, 0.8], at_similarity([0.1, 0.2]))
    real_replace = os.replace
    calls = []

    def failing_once(src, dst):
        if str(dst).endswith("index.json") and not calls:
            calls.append(dst)
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(gi.os, "replace", failing_once)
    with pytest.raises(OSError):
        g.flush()
    assert g.flush() == 1 and g.num_detections == 2 and g.num_buffered == 0
    assert GalleryIndex.open(tmp_path / "g").num_detections == 2


CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])  # the repository: the package as the tests import it
    from dcinet_d2.search import index as m
    real, count = os.replace, [0]
    def replace(src, dst):
        if str(dst).endswith("index.json"):
            count[0] += 1
            if count[0] == int(sys.argv[3]):  # shard written, index.json not yet replaced
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)
    os.replace = replace
    g = m.GalleryIndex.create(sys.argv[2], 8, flush_every=4)
    for f in range(20):
        e = np.random.default_rng(f).standard_normal((f % 3, 8))
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        g.add(("v.mp4", f), np.tile([f, 0, f + 5, 9], (len(e), 1)), np.ones(len(e)), e)
    g.close()
""")


def test_killed_process_resumes_without_duplicates(tmp_path):
    """A real SIGKILL during the third flush (after its shard is written): two shards stand."""
    root = tmp_path / "g"
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(gi.__file__))))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, repo, str(root), "4"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr
    assert os.path.exists(root / "shards" / "shard_000002.npz")  # written, never listed
    g = GalleryIndex.open(root, flush_every=4)
    assert g.done_units() == {("v.mp4", f) for f in range(8)}
    for f in range(20):
        e = np.random.default_rng(f).standard_normal((f % 3, 8))
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        added = g.add(("v.mp4", f), np.tile([f, 0, f + 5, 9], (len(e), 1)), np.ones(len(e)), e)
        assert added == (f >= 8)
    g.close()
    g = GalleryIndex.open(root)
    arrays = g.load_arrays()
    assert g.num_units == 20 and len(arrays["frame"]) == sum(f % 3 for f in range(20))
    assert np.array_equal(np.bincount(arrays["frame"], minlength=20), [f % 3 for f in range(20)])
    assert np.array_equal(arrays["boxes"][:, 0], arrays["frame"])


def test_append_and_stale_search_index(tmp_path):
    dim, root = 8, tmp_path / "g"
    with GalleryIndex.create(root, dim) as g:
        for i in range(30):
            g.add((f"old{i}.jpg", -1), boxes_for(1), [0.9], at_similarity([0.5 - i / 100], dim, i))
    g = GalleryIndex.open(root)
    assert g.build_search_index("flat")["ntotal"] == 30
    with GalleryIndex.open(root) as g:  # append a second batch of units
        g.add(("new.mp4", 7), boxes_for(2), [0.9, 0.8], at_similarity([0.97, 0.2], dim, 99))
        g.add(("old0.jpg", -1), boxes_for(1), [0.9], e0(dim))  # done: skipped
    g = GalleryIndex.open(root)
    assert g.num_detections == 32 and g.num_units == 31
    with captured_log(LOGGER) as log:
        [hits] = g.search(e0(dim), topk=2)
    assert "covers 30 of 32 detections" in log.text()
    assert hits_of(hits) == [("new.mp4", 7, 0.97), ("old0.jpg", -1, 0.5)]
    assert json.loads((root / "search.json").read_text())["ntotal"] == 32

    # an "ivf" index is rebuilt when stale
    g.build_search_index("ivf", nprobe=10**6)  # nprobe clamped to nlist: exhaustive
    with GalleryIndex.open(root) as g2:
        g2.add(("newer.jpg", -1), boxes_for(1), [0.9], at_similarity([0.99], dim, 7))
    g = GalleryIndex.open(root)
    with captured_log(LOGGER) as log:
        [hits] = g.search(e0(dim), topk=1)
    assert "'ivf' search index covers 32 of 33 detections: rebuilding" in log.text()
    assert hits_of(hits) == [("newer.jpg", -1, 0.99)]
    info = json.loads((root / "search.json").read_text())
    assert info["ntotal"] == 33 and info["params"]["kind"] == "ivf"


def clustered(seed: int, n: int, dim: int, n_ids: int, sigma: float, n_queries: int = 100):
    """n_ids identities (random unit centres), n detections of random identities with noise of
    norm ~sigma: cosine ~1 / (1 + sigma^2) within an identity, ~0 +- 1/sqrt(D) across."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((n_ids, dim)))
    x = centres[rng.integers(0, n_ids, n)] + sigma * rng.standard_normal((n, dim)) / np.sqrt(dim)
    q = centres[rng.integers(0, n_ids, n_queries)] + sigma * rng.standard_normal(
        (n_queries, dim)
    ) / np.sqrt(dim)
    return unit_rows(x), unit_rows(q)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))


def test_ivf_recall_against_exact():
    """4000 detections of 400 identities (about 10 each, cosine ~0.5 within an identity), D=64.

    Defaults give nlist = 102 (4 sqrt(n) = 253 clamped to n / 39), nprobe = 8 (8% of the lists).
    Measured recall@10 against exact: 0.808 for seed 0 (the same with 1 or 2 faiss threads),
    0.768-0.858 over seeds 0-19; nprobe 32: 0.943; nprobe = nlist scans every list: 1.0.
    The bounds leave a margin for other faiss versions / CPUs."""
    x, q = clustered(0, 4000, 64, 400, 1.0)
    _, exact = search_numpy(x, q, 10)
    index, params = build_faiss_index(x, "ivf")
    assert (params["nlist"], params["nprobe"]) == (102, 8)
    assert recall(index.search(q, 10)[1], exact) >= 0.75
    index.nprobe = 32
    assert recall(index.search(q, 10)[1], exact) >= 0.90
    index.nprobe = params["nlist"]
    sims, ids = index.search(q, 10)
    assert recall(ids, exact) == 1.0
    np.testing.assert_allclose(sims, search_numpy(x, q, 10)[0], atol=1e-6)  # IVFFlat: exact sims


def test_gallery_search_nprobe_per_call(tmp_path):
    """GalleryIndex.search(nprobe=...) scans that many lists for the call only: with every list
    scanned the hits are numpy's exact ones; the saved nprobe is used again afterwards."""
    import faiss

    x, q = clustered(1, 4000, 64, 400, 1.0, n_queries=20)
    _, exact = search_numpy(x, q, 10)
    with GalleryIndex.create(tmp_path / "g", 64) as g:
        for u in range(500):
            g.add((f"frame{u}.jpg", -1), boxes_for(8), [0.9] * 8, x[8 * u : 8 * u + 8])
    g = GalleryIndex.open(tmp_path / "g")
    info = g.build_search_index("ivf", nprobe=1)
    assert (info["params"]["nlist"], info["params"]["nprobe"]) == (102, 1)

    def found(**kw):
        return np.array(
            [[h["id"] for h in hits] for hits in g.search(q, topk=10, best_per_image=False, **kw)]
        )

    assert recall(found(), exact) < 0.9  # one list of 102: neighbours are missed
    assert recall(found(nprobe=102), exact) == 1.0
    assert recall(found(nprobe=10**6), exact) == 1.0  # clamped to nlist
    assert faiss.extract_index_ivf(g._search_index()).nprobe == 1  # the saved one, unchanged
    with pytest.raises(ValueError, match="nprobe must be a positive integer"):
        g.search(q, topk=10, nprobe=0)


def test_ivfpq_builds_and_finds_neighbours():
    """IVF-PQ needs 39 * 256 training points. D=32 -> m = 4 codes of 8 bits (4 bytes per
    vector): a coarse code, measured recall@10 0.62 on this data (seed 0)."""
    x, q = clustered(0, 9984, 32, 400, 0.5)
    with pytest.raises(GalleryIndexError, match="at least 9984 detections"):
        build_faiss_index(x[:9983], "ivfpq")
    index, params = build_faiss_index(x, "ivfpq")
    assert params["m"] == 4 and params["nbits"] == 8
    assert recall(index.search(q, 10)[1], search_numpy(x, q, 10)[1]) >= 0.5


def test_mismatch_and_existing_index_refused(tmp_path):
    root = tmp_path / "g"
    GalleryIndex.create(root, 8, {"model": "sha1:aaaa"}).close()
    with pytest.raises(GalleryIndexError, match="already holds a gallery index.*open_or_create"):
        GalleryIndex.create(root, 8)
    with pytest.raises(IncompatibleIndexError, match="size 8, but size 16"):
        GalleryIndex.open_or_create(root, 16, {"model": "sha1:aaaa"})
    with pytest.raises(IncompatibleIndexError) as e:
        GalleryIndex.open_or_create(root, 8, {"model": "sha1:bbbb"})
    assert "'sha1:aaaa'" in str(e.value) and "'sha1:bbbb'" in str(e.value)
    with pytest.raises(IncompatibleIndexError, match="without it"):
        GalleryIndex.open_or_create(root, 8, {"model": "sha1:aaaa", "config": "x"})
    g = GalleryIndex.open_or_create(
        root, 8, {"model": "sha1:aaaa", "note": "other"}, check_keys=["model"]
    )
    assert g.meta == {"model": "sha1:aaaa"}
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    with pytest.raises(GalleryIndexError, match="not empty"):
        GalleryIndex.open_or_create(other, 8)
    assert os.listdir(other) == ["a.jpg"]  # nothing created in a refused folder
    with pytest.raises(GalleryIndexError, match="not a gallery index"):
        GalleryIndex.open(other)


def test_damaged_files_named(tmp_path):
    root = tmp_path / "g"
    with GalleryIndex.create(root, 8) as g:
        g.add(("a.jpg", -1), boxes_for(3), [0.9] * 3, at_similarity([0.1, 0.2, 0.3]))
    index_json = root / "index.json"
    good = index_json.read_bytes()
    index_json.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DamagedIndexError, match=f"{index_json} is damaged: not valid JSON"):
        GalleryIndex.open(root)
    doc = json.loads(good)
    doc["totals"]["detections"] = 4
    index_json.write_text(json.dumps(doc))
    with pytest.raises(DamagedIndexError, match=f"{index_json} is damaged: totals"):
        GalleryIndex.open(root)
    index_json.write_bytes(good)

    shard = root / "shards" / "shard_000000.npz"
    raw = shard.read_bytes()
    shard.write_bytes(raw[:-10])
    with pytest.raises(DamagedIndexError, match=f"shard {shard} is damaged"):
        GalleryIndex.open(root)
    pos = raw.index(b"embeds.npy")  # flip bytes inside the embeddings' data: same size
    flipped = bytearray(raw)
    for i in range(pos + 200, pos + 208):
        flipped[i] ^= 0xFF
    shard.write_bytes(bytes(flipped))
    g = GalleryIndex.open(root)
    with pytest.raises(DamagedIndexError, match=f"shard {shard} is damaged"):
        g.load_arrays()


def test_inputs_validated_and_single_writer(tmp_path):
    g = GalleryIndex.create(tmp_path / "g", 8)
    ok = at_similarity([0.5])
    with pytest.raises(ValueError, match="L2-normalised; row 0 has norm 2"):
        g.add(("a.jpg", -1), boxes_for(1), [0.9], 2 * ok)
    with pytest.raises(ValueError, match=r"embeds must be \[n, 8\]"):
        g.add(("a.jpg", -1), boxes_for(1), [0.9], ok[:, :4])
    with pytest.raises(ValueError, match=r"boxes must be \[1, 4\]"):
        g.add(("a.jpg", -1), boxes_for(2), [0.9], ok)
    with pytest.raises(ValueError, match="x2 >= x1"):
        g.add(("a.jpg", -1), [[5, 0, 1, 9]], [0.9], ok)
    with pytest.raises(ValueError, match="frame must be -1"):
        g.add(("a.jpg", -2), boxes_for(1), [0.9], ok)
    g.add(("a.jpg", -1), boxes_for(1), [0.9], ok)
    with pytest.raises(ValueError, match="either a still image"):
        g.add(("a.jpg", 3), boxes_for(1), [0.9], ok)
    with pytest.raises(IndexLockedError, match="being written"):
        GalleryIndex.open(tmp_path / "g").add(("b.jpg", -1), boxes_for(1), [0.9], ok)
    reader = GalleryIndex.open(tmp_path / "g")  # readers need no lock
    g.close()
    assert reader.num_detections == 0
    reader.refresh()
    assert reader.num_detections == 1 and reader.detection(0)["source"] == "a.jpg"


def test_embeddings_by_id_across_shards(tmp_path):
    """``embeddings(ids)`` returns the rows ``load_arrays`` holds, across shard boundaries."""
    rng = np.random.default_rng(3)
    index = GalleryIndex.create(str(tmp_path / "ix"), 4, flush_every=2)
    for k in range(5):  # 5 units of 3 detections, flushed every 2 units: 3 shards
        e = rng.normal(size=(3, 4)).astype(np.float32)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        index.add(
            (f"img{k}.jpg", -1),
            np.tile([0, 0, 10, 10], (3, 1)).astype(np.float32),
            np.full(3, 0.9, np.float32),
            e,
        )
    index.close()
    index = GalleryIndex.open(str(tmp_path / "ix"))
    all_embeds = index.load_arrays(("embeds",))["embeds"]
    ids = [14, 0, 5, 6, 2]
    np.testing.assert_array_equal(index.embeddings(ids), all_embeds[ids])
    with pytest.raises(IndexError):
        index.embeddings([15])
