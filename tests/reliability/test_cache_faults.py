"""The dataset cache holds data, never code, and is checked before it is trusted (hardening issue,
item 9): a crafted file must not run, a well-formed but wrong one must be rebuilt, and what a
cache file gives back must equal, type for type, what the readers build."""

from __future__ import annotations

import json
import logging
import os
import pickle

import numpy as np
import pytest
from detectron2.structures import BoxMode

from dcinet_d2.data.datasets import cache, cuhk_sysu, prw
from dcinet_d2.data.datasets.cuhk_sysu import load_cuhk_sysu, load_test_galleries
from dcinet_d2.data.datasets.prw import load_prw

from ..data.official_files import write_cuhk_sysu, write_prw
from .common import captured_log

SYNTHETIC = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "synthetic")


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture
def cache_warnings():
    with captured_log(cache.__name__, logging.WARNING) as log:
        yield log.messages


def same(a, b) -> bool:
    """Deep equality that also compares types, and numpy arrays by dtype, shape and values."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture
def tiny_cuhk(tmp_path):
    root = str(tmp_path / "CUHK-SYSU")
    images = {
        "t1.jpg": [(10.7, 5.2, 20.6, 40.9), (50, 10, 0, 30)],
        "q1.jpg": [(1, 2, 30, 40)],
        "q2.jpg": [(5, 5, 20, 30), (30, 6, 20, 44)],
    }
    train = [("a", [("t1.jpg", (10.7, 5.2, 20.6, 40.9))])]
    queries = [("p", "q1.jpg", (1, 2, 30, 40), [("q2.jpg", (30, 6, 20, 44))])]
    sizes = {n: (64, 96) for n in images}
    write_cuhk_sysu(
        root, images, ["q1.jpg", "q2.jpg"], train, queries, sizes, gallery_sizes=(50, 100)
    )
    return root


@pytest.fixture
def tiny_prw(tmp_path):
    root = str(tmp_path / "PRW")
    train = {"c1s1_000001": [[5, 10.5, 20, 30, 60], [-2, -4, 3, 20, 40]]}
    test = {"c3s1_000010": [[100, -1.5, 2.5, 10, 20], [-2, 5, 5, 5, 5]]}
    write_prw(
        root,
        train,
        test,
        [5],
        ["100 -1.5 2.5 10 20 c3s1_000010"],
        {f: (64, 48) for f in {**train, **test}},
    )
    return root


def _kinds(cuhk_root, prw_root):
    """(kind, root, split, sources, build, validator) of every cached value, as the loaders use."""
    testg = [cuhk_sysu.testg_path(cuhk_root, 100), cuhk_sysu._paths(cuhk_root)["image_dir"]]
    prw_sources = {
        s: prw._sources(prw_root, s) + prw._annotation_sources(prw_root, s)
        for s in ("train", "test")
    }
    return [
        (
            "cuhk_sysu",
            cuhk_root,
            "train",
            cuhk_sysu._sources(cuhk_root, "train"),
            lambda: cuhk_sysu._build_train(cuhk_root),
            cache.check_train,
        ),
        (
            "cuhk_sysu",
            cuhk_root,
            "test",
            cuhk_sysu._sources(cuhk_root, "test"),
            lambda: cuhk_sysu._build_test(cuhk_root),
            cache.check_image_dicts,
        ),
        (
            "cuhk_sysu",
            cuhk_root,
            "testg100",
            testg,
            lambda: cuhk_sysu._read_testg_checked(cuhk_root, 100),
            cache.check_testg,
        ),
        (
            "prw",
            prw_root,
            "train",
            prw_sources["train"],
            lambda: prw._build_train(prw_root),
            lambda v: cache.check_train(v, camera=True),
        ),
        (
            "prw",
            prw_root,
            "test",
            prw_sources["test"],
            lambda: prw._build_test(prw_root),
            lambda v: cache.check_image_dicts(v, camera=True),
        ),
    ]


def _never():
    raise AssertionError("rebuilt although a valid cache file exists")


def _roots(request):
    if request.param == "tiny":
        return request.getfixturevalue("tiny_cuhk"), request.getfixturevalue("tiny_prw")
    if not os.path.isdir(SYNTHETIC):
        pytest.skip("run `python datasets/prepare_synthetic.py`")
    return os.path.join(SYNTHETIC, "CUHK-SYSU"), os.path.join(SYNTHETIC, "PRW")


@pytest.fixture(params=["tiny", "synthetic"])
def roots(request):
    return _roots(request)


def test_cached_values_equal_fresh_builds(roots, private_cache, cache_warnings):
    for kind, root, split, sources, build, check in _kinds(*roots):
        fresh = build()
        stored = cache.cached(kind, root, split, sources, build, check)
        assert same(stored, fresh)
        loaded = cache.cached(kind, root, split, sources, _never, check)  # from the file
        assert loaded is not stored
        assert same(loaded, fresh), (kind, split)
        if split == "testg100":
            assert loaded[0]["bbox"].dtype == np.int32
            assert isinstance(loaded[0]["gallery"][0], tuple)
        else:
            dicts = loaded[0] if split == "train" else loaded
            assert loaded == fresh
            assert dicts[0]["annotations"][0]["bbox_mode"] is BoxMode.XYXY_ABS
    names = sorted(os.listdir(private_cache))
    assert len(names) == 5 and all(n.endswith(".json") for n in names)
    for n in names:  # plain JSON, readable by anything
        with open(private_cache / n, encoding="utf-8") as f:
            json.load(f)
    assert cache_warnings == []


def test_loaders_read_back_what_they_built(tiny_cuhk, tiny_prw):
    for load, root in ((load_cuhk_sysu, tiny_cuhk), (load_prw, tiny_prw)):
        for split in ("train", "test"):
            assert load(root, split) == load(root, split)
    first, again = load_test_galleries(tiny_cuhk, 100), load_test_galleries(tiny_cuhk, 100)
    assert same(first, again)


def _only_file(folder) -> str:
    names = os.listdir(folder)
    assert len(names) == 1, names
    return os.path.join(folder, names[0])


class _Payload:
    """Unpickling this creates ``marker`` (as a crafted cache file could run any code)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_pickle_is_not_run_but_rebuilt(tiny_prw, private_cache, tmp_path, cache_warnings):
    fresh = load_prw(tiny_prw, "test")
    path = _only_file(private_cache)
    marker = tmp_path / "marker"
    with open(path, "wb") as f:
        pickle.dump(_Payload(str(marker)), f)
    assert load_prw(tiny_prw, "test") == fresh
    assert not marker.exists()
    assert len(cache_warnings) == 1 and cache_warnings[0].startswith(
        f"Ignoring invalid dataset cache '{path}' ("
    )
    assert cache_warnings[0].endswith("); rebuilding.")
    assert load_prw(tiny_prw, "test") == fresh and len(cache_warnings) == 1  # rewritten, valid


def _edit(path, change):
    with open(path, encoding="utf-8") as f:
        value = json.load(f)
    value = change(value)
    with open(path, "w", encoding="utf-8") as f:
        f.write(value if isinstance(value, str) else json.dumps(value))


def _first_annotation(v):
    return v["__tuple__"][0][0]["annotations"][0]


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda v: [], "value: expected a tuple (image dicts, C), found []"),
        (lambda v: v["__tuple__"], "value: expected a tuple (image dicts, C)"),
        (lambda v: {"__tuple__": [[], 2]}, "value: expected a non-empty list of image dicts"),
        (
            lambda v: {"__tuple__": [v["__tuple__"][0], "2"]},
            "value[1]: expected the number of identities",
        ),
        (
            lambda v: _first_annotation(v).update(bbox_mode=0) or v,
            "image dict 0['annotations'][0]['bbox_mode']: expected BoxMode.XYXY_ABS, found 0",
        ),
        (
            lambda v: _first_annotation(v).update(bbox=[1.0, 2.0, 3.0]) or v,
            "image dict 0['annotations'][0]['bbox']: expected 4 finite floats",
        ),
        (lambda v: v["__tuple__"][0][0].pop("height") and v, "image dict 0: expected keys"),
        (
            lambda v: v["__tuple__"][0][0].update(width=-5) or v,
            "image dict 0['width']: expected a positive int, found -5",
        ),
        (lambda v: json.dumps(v)[:-10], "JSONDecodeError"),
        (lambda v: json.dumps(v).replace("10.0", "NaN", 1), "non-finite number NaN"),
    ],
)
def test_wrong_but_well_formed_cache_is_rebuilt(
    tiny_cuhk, private_cache, cache_warnings, change, reason
):
    fresh = load_cuhk_sysu(tiny_cuhk, "train")
    path = _only_file(private_cache)
    _edit(path, change)
    assert load_cuhk_sysu(tiny_cuhk, "train") == fresh
    assert len(cache_warnings) == 1 and f"'{path}'" in cache_warnings[0]
    assert reason in cache_warnings[0]


@pytest.mark.parametrize(
    "change, reason",
    [
        (
            lambda v: v[0].update(bbox=v[0]["bbox"]["__ndarray__"]["data"]) or v,
            "query 0['bbox']: expected an int32 array of shape (4,)",
        ),
        (
            lambda v: v[0]["bbox"]["__ndarray__"].update(dtype="object") or v,
            "__ndarray__ of unsupported dtype 'object'",
        ),
        (
            lambda v: v[0]["bbox"]["__ndarray__"].update(shape=[5]) or v,
            "__ndarray__ with shape [5] holds malformed data",
        ),
        (
            lambda v: v[0].update(gallery=[list(g["__tuple__"]) for g in v[0]["gallery"]]) or v,
            "query 0['gallery'][0]: expected (image name, int32[4] box or None)",
        ),
    ],
)
def test_wrong_testg_cache_is_rebuilt(tiny_cuhk, private_cache, cache_warnings, change, reason):
    fresh = load_test_galleries(tiny_cuhk, 100)
    path = _only_file(private_cache)
    _edit(path, change)
    assert same(load_test_galleries(tiny_cuhk, 100), fresh)
    assert len(cache_warnings) == 1 and f"'{path}'" in cache_warnings[0]
    assert reason in cache_warnings[0]


def test_synthetic_prw_test_empty_cache_is_not_trusted(private_cache, cache_warnings):
    # the case: a cache holding an empty list gave 0 dicts for synthetic_prw_test
    if not os.path.isdir(SYNTHETIC):
        pytest.skip("run `python datasets/prepare_synthetic.py`")
    root = os.path.join(SYNTHETIC, "PRW")
    n = len(load_prw(root, "test"))
    _edit(_only_file(private_cache), lambda v: [])
    assert len(load_prw(root, "test")) == n > 0
    assert len(cache_warnings) == 1


def test_encode_refuses_what_it_cannot_restore():
    for value in (
        np.float32(1.0),
        {1: "a"},
        {"__tuple__": []},
        float("nan"),
        {"x"},
        np.zeros(2, dtype=object),
    ):
        with pytest.raises(TypeError):
            cache.encode(value)
    value = {"a": (1, [np.arange(3, dtype=np.int32), None]), "b": BoxMode.XYWH_ABS, "c": 0.1}
    assert same(cache.decode(json.dumps(cache.encode(value))), value)
