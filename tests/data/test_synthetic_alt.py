"""The alternative synthetic CUHK-SYSU (``dcinet_d2.data.synthetic.alt``).

It must be a valid CUHK-SYSU for the official reader (splits, identities, queries, boxes), be
deterministic by seed, and be rendered by code of its own (none of the drawing of
``dcinet_d2.data.synthetic.looks`` / ``.painting``).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import os

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat

from dcinet_d2.data.datasets.cuhk_sysu import (
    load_cuhk_sysu,
    load_test_galleries,
    num_train_identities,
)
from dcinet_d2.data.synthetic import STATS_FILE
from dcinet_d2.data.synthetic import alt as A

W, H = 320, 240  # the default image size of the alternative dataset
SMALL = dict(
    num_images=80,
    pool_size=52,
    num_train_ids=10,
    num_test_ids=6,
    gallery_sizes=[50],
    progress=False,
)  # pool_size >= 51: the reader's test split needs TestG50.mat
TINY = dict(
    num_images=12, pool_size=5, num_train_ids=3, num_test_ids=2, gallery_sizes=[4], progress=False
)


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("alt") / "CUHK-SYSU")
    return root, A.generate_cuhk_sysu_alt(root, seed=3, **SMALL)


def _ann(root, *parts):
    return os.path.join(root, "annotation", *parts)


def _images_mat(root):
    """{image name: [(x, y, w, h, ishard)]} straight from Images.mat."""
    out = {}
    for rec in loadmat(_ann(root, "Images.mat"))["Img"][0]:
        out[str(rec["imname"][0])] = [
            tuple(float(v) for v in b["idlocate"].reshape(-1)) + (float(b["ishard"][0, 0]),)
            for b in rec["box"][0]
        ]
    return out


def _pool(root):
    return {str(c[0]) for c in loadmat(_ann(root, "pool.mat"))["pool"][:, 0]}


def _testg(root, n):
    return loadmat(_ann(root, "test", "train_test", f"TestG{n}.mat"))[f"TestG{n}"][0]


def _file_hashes(root):
    out = {}
    for dp, _, fs in os.walk(root):
        for f in fs:
            if f != STATS_FILE:  # holds the root path and the run time
                path = os.path.join(dp, f)
                with open(path, "rb") as fh:
                    out[os.path.relpath(path, root)] = hashlib.md5(fh.read()).digest()
    return out


def test_official_reader_reads_it(small):
    root, stats = small
    train, test = load_cuhk_sysu(root, "train"), load_cuhk_sysu(root, "test")
    assert len(train) == stats["train_images"] == SMALL["num_images"] - SMALL["pool_size"]
    assert len(test) == stats["pool_images"] == SMALL["pool_size"]
    assert num_train_identities(root) == SMALL["num_train_ids"]
    assert sum(len(d["annotations"]) for d in train + test) == stats["boxes"]
    assert (
        sum(a["person_id"] >= 0 for d in train + test for a in d["annotations"])
        == stats["labelled_boxes"]
    )
    assert {a["person_id"] for d in train for a in d["annotations"]} == set(
        range(-1, SMALL["num_train_ids"])
    )
    assert sum(len(d.get("queries", [])) for d in test) == SMALL["num_test_ids"]
    for d in train + test:
        assert (d["width"], d["height"]) == (W, H)
        with Image.open(d["file_name"]) as im:
            assert im.size == (W, H) and im.format == "JPEG"


def test_splits_are_disjoint(small):
    root, _ = small
    pool = _pool(root)
    images = set(_images_mat(root))
    assert pool < images
    train_mat = loadmat(_ann(root, "test", "train_test", "Train.mat"))["Train"][:, 0]
    train_names, train_images = set(), set()
    for cell in train_mat:
        train_names.add(str(cell[0, 0]["idname"][0]))
        train_images |= {str(s["imname"][0]) for s in cell[0, 0]["scene"][0]}
    assert train_images and not train_images & pool
    test_names, test_images = set(), set()
    for item in _testg(root, 50):
        q = item["Query"][0, 0]
        test_names.add(str(q["idname"][0]))
        test_images.add(str(q["imname"][0]))
        test_images |= {str(g["imname"][0]) for g in item["Gallery"][0]}
    assert test_images <= pool
    assert len(train_names) == SMALL["num_train_ids"] and len(test_names) == SMALL["num_test_ids"]
    assert not train_names & test_names


def test_every_query_person_is_in_its_gallery_at_the_recorded_box(small):
    root, _ = small
    boxes = _images_mat(root)
    by_name = {d["image_id"]: d for d in load_cuhk_sysu(root, "test")}
    galleries = load_test_galleries(root, 50)
    for k, item in enumerate(_testg(root, 50)):
        q = item["Query"][0, 0]
        q_name, q_box = str(q["imname"][0]), tuple(q["idlocate"].reshape(-1))
        assert q_box in [b[:4] for b in boxes[q_name]]
        entries = [(str(g["imname"][0]), g["idlocate"]) for g in item["Gallery"][0]]
        names = [n for n, _ in entries]
        assert len(set(names)) == len(names) == 50 and q_name not in names
        targets = [(n, tuple(b.reshape(-1))) for n, b in entries if b.size]
        assert targets  # every identity appears in >= 2 images
        for name, box in targets:
            assert box in [b[:4] for b in boxes[name]]
            x, y, w, h = (int(v) for v in box)
            pids = [
                a["person_id"]
                for a in by_name[name]["annotations"]
                if a["bbox"] == [x, y, x + w, y + h]
            ]
            assert pids == [k]
        assert [n for n, b in galleries[k]["gallery"] if b is not None] == [n for n, _ in targets]


def test_boxes_lie_inside_the_images(small):
    root, stats = small
    n_hard = n_degenerate = 0
    for name, bs in _images_mat(root).items():
        with Image.open(os.path.join(root, "Image", "SSM", name)) as im:
            assert im.size == (W, H)
        for x, y, w, h, hard in bs:
            assert hard in (0.0, 1.0) and x == int(x) and y == int(y)
            assert 0 <= x and 0 <= y and x + w <= W and y + h <= H
            n_degenerate += w == 0 or h == 0
            n_hard += hard == 1.0
    assert n_hard == stats["hard_boxes"] > 0
    assert n_degenerate == stats["degenerate_boxes"]


def test_same_seed_same_files_other_seed_other_images(tmp_path):
    runs = {}
    for tag, seed in (("a", 11), ("b", 11), ("c", 12)):
        A.generate_cuhk_sysu_alt(str(tmp_path / tag / "CUHK-SYSU"), seed=seed, **TINY)
        runs[tag] = _file_hashes(str(tmp_path / tag / "CUHK-SYSU"))
    assert runs["a"] == runs["b"]
    jpgs = [f for f in runs["a"] if f.endswith(".jpg")]
    assert len(jpgs) == TINY["num_images"] and set(runs["c"]) == set(runs["a"])
    assert all(runs["a"][f] != runs["c"][f] for f in jpgs)


def test_rendering_shares_no_code_with_synthetic():
    path = A.__file__
    with open(path) as f:
        tree = ast.parse(f.read())
    from_synthetic = {}  # sibling module -> names imported from it
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: a module of the synthetic package
                from_synthetic.setdefault(module, set()).update(a.name for a in node.names)
            else:
                assert not module.startswith("dcinet_d2.data.synthetic"), module
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("dcinet_d2.data.synthetic") for a in node.names)
    # only the layout, file writing and job running helpers, nothing that draws
    assert set(from_synthetic) == {"cuhk_sysu", "jobs"}
    assert from_synthetic["cuhk_sysu"] <= {"_plan_cuhk_sysu", "_render_cuhk_sysu"}
    assert from_synthetic["jobs"] <= {
        "_check_range",
        "_draw_identities",
        "_Job",
        "_rng",
        "_scene_people",
    }
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    drawing = {
        "render_person",
        "_render_scene",
        "_render_background",
        "random_appearance",
        "similar_appearance",
        "random_pose",
        "_random_background_style",
        "_random_lighting",
        "make_identity_appearances",
        "_run_job",
        "PersonSprite",
        "Appearance",
    }
    assert not names & drawing


def test_person_renderer_box_and_mirror():
    rng = np.random.default_rng(0)
    ident = A.random_alt_identity(rng)
    pose = dataclasses.replace(A.random_alt_pose(rng), lean=0.0, mirror=False)
    prem, alpha, (x1, y1, x2, y2), _ = A.render_alt_person(ident, pose, 150.0)
    assert alpha.min() >= 0 and alpha.max() <= 1 and alpha.max() > 0.99
    inside = alpha > 0.05
    assert inside[y1:y2, x1:x2].sum() == inside.sum()  # the box holds the whole silhouette
    assert inside[y1].any() and inside[y2 - 1].any()  # ... and is tight
    assert inside[:, x1].any() and inside[:, x2 - 1].any()
    assert 0.95 * 150 < y2 - y1 < 1.07 * 150  # head to shoes = the requested height
    # mirroring happens in body coordinates: the whole patch, textures included, is flipped
    mirrored = dataclasses.replace(pose, mirror=True)
    prem_m, alpha_m, _, _ = A.render_alt_person(ident, mirrored, 150.0)
    np.testing.assert_allclose(alpha_m, alpha[:, ::-1], atol=1e-4)
    np.testing.assert_allclose(prem_m, prem[:, ::-1], atol=1e-4)
    assert not np.allclose(alpha_m, alpha, atol=1e-2)


def test_confusable_identities_share_the_palette_but_not_the_look():
    rng = np.random.default_rng(1)
    pose = dataclasses.replace(A.random_alt_pose(rng), lean=0.0, gains=(1.0, 1.0, 1.0))
    palette = ("skin", "hair", "upper", "upper2", "lower", "lower2", "shoes")
    for _ in range(20):
        base = A.random_alt_identity(rng)
        twin = A.confusable_alt_identity(base, rng)
        assert all(getattr(twin, f) == getattr(base, f) for f in palette)
        assert twin != base
        a = A.render_alt_person(base, pose, 120.0)
        b = A.render_alt_person(twin, pose, 120.0)
        assert a[0].shape != b[0].shape or np.abs(a[0] - b[0]).mean() > 1e-3


def test_existing_output_needs_force(tmp_path):
    (tmp_path / "CUHK-SYSU").mkdir()
    with pytest.raises(FileExistsError):
        A.main(["--out", str(tmp_path), "--quiet"])
