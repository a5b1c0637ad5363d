"""The synthetic datasets, checked literally against the official CUHK-SYSU and PRW file formats.

Every check reads the files with ``scipy.io.loadmat`` (default options) or as raw bytes, i.e. the
way code written for the real datasets does; no reader logic of the package is used.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re

import numpy as np
import pytest
import scipy.io
from PIL import Image

from dcinet_d2.data import synthetic as S
from dcinet_d2.data.synthetic import cuhk_sysu

W, H = 96, 72  # CUHK image size used here
PW, PH = 96, 64  # PRW frame size used here
CUHK_KW = dict(
    num_images=100,
    pool_size=56,
    num_train_ids=12,
    num_test_ids=14,
    image_size=(W, H),
    gallery_sizes=(10, 50),
    progress=False,
)
PRW_KW = dict(
    num_cameras=3,
    num_train_frames=24,
    num_test_frames=30,
    num_train_ids=6,
    num_test_ids=6,
    image_size=(PW, PH),
    progress=False,
)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _keys(d):
    return [k for k in d if not k.startswith("__")]


def _fields(arr):
    return tuple(arr.dtype.names)


def _all_files(root):
    out = {}
    for dp, _, fs in os.walk(root):
        for f in fs:
            if f == S.STATS_FILE:  # holds the root path and the run time, nothing else
                continue
            p = os.path.join(dp, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


@pytest.fixture(scope="module")
def cuhk(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("syn") / "CUHK-SYSU")
    stats = S.generate_cuhk_sysu(root, seed=7, **CUHK_KW)
    return root, stats


@pytest.fixture(scope="module")
def prw(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("syn") / "PRW")
    stats = S.generate_prw(root, seed=7, **PRW_KW)
    return root, stats


@pytest.fixture(scope="module")
def cuhk_tables(cuhk):
    """Literal loadmat reads of Images.mat / pool.mat / Train.mat."""
    root, _ = cuhk
    ann = os.path.join(root, "annotation")
    images = scipy.io.loadmat(os.path.join(ann, "Images.mat"))
    pool = scipy.io.loadmat(os.path.join(ann, "pool.mat"))
    train = scipy.io.loadmat(os.path.join(ann, "test", "train_test", "Train.mat"))
    boxes = {}  # image name -> list of (x, y, w, h) as in Images.mat
    for imname, nappear, box in images["Img"].squeeze():
        boxes[str(imname[0])] = [tuple(b[0][0]) for b in box[0]]
    pool_names = [str(a[0]) for a in pool["pool"].squeeze()]
    return images, pool, train, boxes, pool_names


# ------------------------------------------------------------------------------------- CUHK-SYSU
def test_cuhk_images_mat(cuhk, cuhk_tables):
    root, stats = cuhk
    images, _, _, boxes, _ = cuhk_tables
    assert _keys(images) == ["Img"]
    img = images["Img"]
    assert img.shape == (1, 100)
    assert _fields(img) == ("imname", "nAppear", "box")
    n_degenerate = 0
    for k, (imname, nappear, box) in enumerate(img.squeeze(), 1):
        name = str(imname[0])
        assert name == f"s{k}.jpg"
        with Image.open(os.path.join(root, "Image", "SSM", name)) as im:
            assert im.format == "JPEG" and im.size == (W, H)
        assert nappear.shape == (1, 1) and nappear.dtype == np.float64
        assert box.shape == (1, int(nappear[0, 0])) and _fields(box) == ("idlocate", "ishard")
        for b in box[0]:
            loc, hard = b[0], b[1]
            assert loc.shape == (1, 4) and loc.dtype == np.float64
            assert np.array_equal(loc, np.round(loc))  # integer pixels, like the real file
            assert hard.shape == (1, 1) and hard[0, 0] in (0.0, 1.0)
            x, y, w, h = loc[0]
            if w == 0 or h == 0:
                n_degenerate += 1
                continue
            assert 0 <= x and 0 <= y and x + w <= W and y + h <= H
    # 3 % of 100 images, but at least one is forced
    assert n_degenerate >= 1 and n_degenerate == stats["degenerate_boxes"]


def test_cuhk_pool_and_train(cuhk_tables):
    _, pool, train, boxes, pool_names = cuhk_tables
    assert _keys(pool) == ["pool"]
    assert pool["pool"].shape == (56, 1) and pool["pool"].dtype == object
    assert len(set(pool_names)) == 56 and set(pool_names) <= set(boxes)
    train_images = set(boxes) - set(pool_names)
    assert len(train_images) == 100 - 56

    assert _keys(train) == ["Train"]
    cells = train["Train"]
    assert cells.shape == (12, 1) and cells.dtype == object
    idnames = []
    for item in cells.squeeze():
        assert item.shape == (1, 1)
        assert _fields(item) == ("idname", "nAppear", "scene")
        idnames.append(str(item[0, 0]["idname"][0]))
        n = int(item[0, 0]["nAppear"][0, 0])
        scenes = item[0, 0]["scene"]
        assert scenes.shape == (1, n) and n >= 2
        assert _fields(scenes) == ("imname", "idlocate", "ishard")
        seen = set()
        for imname, idlocate, ishard in item[0, 0][2].squeeze():  # positional access, as readers do
            name = str(imname[0])
            assert name in train_images and name not in seen  # once per image, training only
            seen.add(name)
            assert idlocate.shape == (1, 4)
            assert tuple(idlocate[0]) in boxes[name]  # exactly one Images.mat box
            assert ishard.shape == (1, 1)
    assert all(re.fullmatch(r"p\d+", n) for n in idnames) and len(set(idnames)) == 12


def _testg(root, n):
    path = os.path.join(root, "annotation", "test", "train_test", f"TestG{n}.mat")
    d = scipy.io.loadmat(path)
    assert _keys(d) == [f"TestG{n}"]
    return d[f"TestG{n}"]


def test_cuhk_testg_invariants(cuhk, cuhk_tables):
    root, stats = cuhk
    _, _, train, boxes, pool_names = cuhk_tables
    pool = set(pool_names)
    train_ids = {str(item[0, 0]["idname"][0]) for item in train["Train"].squeeze()}
    assert stats["gallery_sizes"] == [10, 50]
    protocol_dir = os.path.join(root, "annotation", "test", "train_test")
    assert not os.path.exists(os.path.join(protocol_dir, "TestG100.mat"))
    queries = {}
    galleries = {}
    for n in (10, 50):
        raw = _testg(root, n)
        assert raw.shape == (1, 14) and _fields(raw) == ("Query", "Gallery")
        protoc = raw.squeeze()
        qs, gs = [], []
        for i in range(len(protoc)):
            q = protoc["Query"][i]
            assert q.shape == (1, 1) and _fields(q) == ("imname", "idlocate", "ishard", "idname")
            qname = str(q["imname"][0, 0][0])
            qbox = tuple(q["idlocate"][0, 0][0])
            qid = str(q["idname"][0, 0][0])
            assert qname in pool and qbox in boxes[qname] and qid not in train_ids
            g = protoc["Gallery"][i]
            assert g.shape == (1, n) and _fields(g) == ("imname", "idlocate", "ishard")
            names, sizes = [], []
            for item in g.squeeze():  # the reference evaluation's access pattern
                gname = str(item[0][0])
                gt = item[1][0]
                names.append(gname)
                sizes.append(gt.size)
                if gt.size > 0:
                    assert tuple(gt) in boxes[gname]
                else:
                    assert item[1].shape == (1, 0)
                assert item[2].shape == (1, 1)
            assert len(set(names)) == n and qname not in names and set(names) <= pool
            n_targets = sum(s > 0 for s in sizes)
            assert n_targets >= 1  # the person is in >= 2 pool images
            assert sizes == [4] * n_targets + [0] * (n - n_targets)  # targets first
            qs.append((qname, qbox, qid))
            gs.append(names)
        queries[n], galleries[n] = qs, gs
        assert len({q[2] for q in qs}) == 14
    assert queries[10] == queries[50]  # same queries, same order
    assert all(g50[:10] == g10 for g10, g50 in zip(galleries[10], galleries[50]))  # ours: nested
    # unlabelled persons: boxes that neither Train.mat nor a TestG query/target refers to
    referenced = set()
    for item in train["Train"].squeeze():
        for imname, idlocate, _ in item[0, 0][2].squeeze():
            referenced.add((str(imname[0]), tuple(idlocate[0])))
    protoc = _testg(root, 50).squeeze()
    for i in range(len(protoc)):
        q = protoc["Query"][i]
        referenced.add((str(q["imname"][0, 0][0]), tuple(q["idlocate"][0, 0][0])))
        for item in protoc["Gallery"][i].squeeze():
            if item[1].size:
                referenced.add((str(item[0][0]), tuple(item[1][0])))
    valid = {(n, b) for n, bs in boxes.items() for b in bs if b[2] > 0 and b[3] > 0}
    assert referenced <= valid
    assert len(referenced) == stats["labelled_boxes"]
    assert len(valid - referenced) == stats["unlabelled_boxes"] > 0


def test_testg_encoder_matches_savemat(cuhk):
    """Our streaming TestG writer must produce exactly what scipy.io.savemat writes."""
    root, _ = cuhk
    for n in (10, 50):
        path = os.path.join(root, "annotation", "test", "train_test", f"TestG{n}.mat")
        with open(path, "rb") as f:
            raw = f.read()
        buf = io.BytesIO()
        scipy.io.savemat(buf, {f"TestG{n}": _testg(root, n)}, do_compression=True)
        assert raw[128:] == buf.getvalue()[128:]
        assert raw[:116].startswith(b"MATLAB 5.0 MAT-file") and b"Created on" not in raw[:116]


def test_cuhk_deterministic(cuhk, tmp_path):
    root, _ = cuhk
    again = str(tmp_path / "CUHK-SYSU")
    S.generate_cuhk_sysu(again, seed=7, **CUHK_KW)
    a, b = _all_files(root), _all_files(again)
    assert sorted(a) == sorted(b)
    assert all(a[k] == b[k] for k in a)  # .mat files and JPEGs byte-identical
    other = str(tmp_path / "other")
    S.generate_cuhk_sysu(other, seed=8, **CUHK_KW)
    c = _all_files(other)
    assert c["annotation/Images.mat"] != a["annotation/Images.mat"]
    assert c["Image/SSM/s1.jpg"] != a["Image/SSM/s1.jpg"]


def test_cuhk_bad_arguments_and_atomic_write(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="pool_size"):
        S.generate_cuhk_sysu(str(tmp_path / "a"), num_images=10, pool_size=10, progress=False)
    with pytest.raises(ValueError, match="gallery_sizes"):
        S.generate_cuhk_sysu(str(tmp_path / "a"), **{**CUHK_KW, "gallery_sizes": (56,)})
    with pytest.raises(ValueError, match="num_test_ids"):
        S.generate_cuhk_sysu(str(tmp_path / "a"), **{**CUHK_KW, "num_test_ids": 500})
    with pytest.raises(ValueError, match="image_size"):
        S.generate_cuhk_sysu(str(tmp_path / "a"), **{**CUHK_KW, "image_size": (10, 10)})

    def boom(*args, **kwargs):
        raise RuntimeError("interrupted")

    # fail after images and Images.mat are written
    monkeypatch.setattr(cuhk_sysu, "_write_testg", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        S.generate_cuhk_sysu(str(tmp_path / "b"), **CUHK_KW)
    assert os.listdir(tmp_path) == []  # neither a dataset folder nor a leftover temporary one
    os.makedirs(tmp_path / "c")
    with pytest.raises(FileExistsError, match="overwrite"):
        S.generate_cuhk_sysu(str(tmp_path / "c"), **CUHK_KW)


# ------------------------------------------------------------------------------------------ PRW
def _prw_annotations(root):
    """frame name -> (key, N x 5 matrix), by literal loadmat."""
    out = {}
    for f in sorted(os.listdir(os.path.join(root, "frames"))):
        d = scipy.io.loadmat(os.path.join(root, "annotations", f + ".mat"))
        keys = _keys(d)
        assert len(keys) == 1 and keys[0] in ("box_new", "anno_file", "anno_previous"), f
        out[f[: -len(".jpg")]] = (keys[0], d[keys[0]])
    return out


def test_prw_frames_and_annotations(prw):
    root, stats = prw
    ann = _prw_annotations(root)
    assert len(ann) == 24 + 30
    keys = {k for k, _ in ann.values()}
    assert keys == {"box_new", "anno_file", "anno_previous"}
    cams = set()
    has_unlabelled = has_negative = False
    for name, (_, m) in ann.items():
        mt = re.fullmatch(r"c(\d+)s(\d+)_(\d{6})", name)
        assert mt, name
        cams.add(int(mt.group(1)))
        with Image.open(os.path.join(root, "frames", name + ".jpg")) as im:
            assert im.format == "JPEG" and im.size == (PW, PH)
        assert m.dtype == np.float64 and m.ndim == 2 and m.shape[1] == 5 and m.shape[0] >= 1
        ids, x, y, w, h = m.T
        assert np.all((ids == -2) | (ids >= 1)) and np.array_equal(ids, np.round(ids))
        assert np.all(w > 0) and np.all(h > 0)
        assert np.all(x + w <= PW) and np.all(y + h <= PH)  # only left/top may be cut
        has_unlabelled |= bool((ids == -2).any())
        has_negative |= bool(((x < 0) | (y < 0)).any())
    assert cams == {1, 2, 3}
    assert has_unlabelled and has_negative
    assert stats["negative_coordinate_boxes"] >= 1


def test_prw_splits_ids_and_queries(prw):
    root, stats = prw
    ann = _prw_annotations(root)
    tr = scipy.io.loadmat(os.path.join(root, "frame_train.mat"))
    te = scipy.io.loadmat(os.path.join(root, "frame_test.mat"))
    idt = scipy.io.loadmat(os.path.join(root, "ID_train.mat"))
    assert _keys(tr) == ["img_index_train"] and _keys(te) == ["img_index_test"]
    assert _keys(idt) == ["ID_train"]
    assert tr["img_index_train"].shape == (24, 1) and te["img_index_test"].shape == (30, 1)
    train_frames = {str(a[0]) for a in tr["img_index_train"].squeeze()}
    test_frames = {str(a[0]) for a in te["img_index_test"].squeeze()}
    assert not any(n.endswith(".jpg") for n in train_frames | test_frames)
    assert train_frames.isdisjoint(test_frames) and train_frames | test_frames == set(ann)
    id_train = idt["ID_train"]
    assert id_train.shape == (1, 6) and id_train.dtype == np.float64
    ids_in = {
        split: {int(i) for f in frames for i in ann[f][1][:, 0] if i > 0}
        for split, frames in (("train", train_frames), ("test", test_frames))
    }
    assert ids_in["train"] == {int(i) for i in id_train[0]}
    assert ids_in["train"].isdisjoint(ids_in["test"]) and len(ids_in["test"]) == 6

    with open(os.path.join(root, "query_info.txt"), "rb") as f:
        raw = f.read()
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"" and all(b"\n" not in ln and b"\r" not in ln for ln in lines[:-1])
    lines = lines[:-1]
    assert len(lines) == stats["queries"] >= 12  # one per (identity, camera), >= 2 cameras each
    cams_of = {}  # pid -> cameras of the test frames it appears in
    for f in test_frames:
        for i in ann[f][1][:, 0]:
            if i > 0:
                cams_of.setdefault(int(i), set()).add(f.split("s")[0])
    for ln in lines:
        pid, x, y, w, h, frame = ln.decode("ascii").split(" ")
        assert re.fullmatch(r"-?\d+\.\d", x) and re.fullmatch(r"\d+\.\d", w)
        pid = int(pid)
        assert frame in test_frames and pid in ids_in["test"]
        rows = ann[frame][1]
        row = rows[rows[:, 0] == pid]
        assert row.shape[0] == 1
        assert np.array_equal(row[0, 1:], [float(x), float(y), float(w), float(h)])
        assert len(cams_of[pid]) >= 2
        assert cams_of[pid] - {frame.split("s")[0]}  # a target in another camera exists
    assert {int(ln.split(b" ")[0]) for ln in lines} == ids_in["test"]


def test_prw_pixels_inside_boxes_differ_from_background(prw):
    """Each camera has a fixed background, so the per-pixel median over its frames estimates it;
    drawn people must stand out from it inside their boxes far more than the rest of the frame
    (which differs only by lighting jitter, JPEG and noise)."""
    root, _ = prw
    ann = _prw_annotations(root)
    by_cam = {}
    for name in ann:
        by_cam.setdefault(name.split("s")[0], []).append(name)
    ratios = []
    for names in by_cam.values():
        frames = {}
        for n in names:
            with Image.open(os.path.join(root, "frames", n + ".jpg")) as im:
                frames[n] = np.asarray(im, dtype=np.float64)
        bg = np.median(np.stack(list(frames.values())), axis=0)
        for n, img in frames.items():
            diff = np.abs(img - bg).mean(axis=2)
            inside = np.zeros(diff.shape, dtype=bool)
            for pid, x, y, w, h in ann[n][1]:
                inside[max(0, int(y)) : int(y + h), max(0, int(x)) : int(x + w)] = True
            ratios.append(diff[inside].mean() / max(diff[~inside].mean(), 1e-6))
    # a person replaces the background colour by clothing colours: mean difference several times
    # the lighting/noise difference of the empty background
    assert np.median(ratios) > 3.0


def test_prw_deterministic_and_bad_arguments(prw, tmp_path):
    root, _ = prw
    again = str(tmp_path / "PRW")
    S.generate_prw(again, seed=7, **PRW_KW)
    a, b = _all_files(root), _all_files(again)
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a)
    with pytest.raises(ValueError, match="num_cameras"):
        S.generate_prw(str(tmp_path / "x"), **{**PRW_KW, "num_cameras": 1})
    with pytest.raises(ValueError, match="num_test_ids"):
        S.generate_prw(str(tmp_path / "x"), **{**PRW_KW, "num_test_ids": 100})


# ------------------------------------------------------------------------------ rendering, CLI
def test_render_person_box_is_tight():
    """The box bounds exactly the pixels with non-zero coverage (half-pixel precise box)."""
    rng = np.random.default_rng(0)
    for _ in range(30):
        app, pose = S.random_appearance(rng), S.random_pose(rng)
        sp = S.render_person(app, pose, float(rng.uniform(12, 90)), rng)
        ys, xs = np.nonzero(sp.alpha > 0)
        x1, y1, x2, y2 = sp.box
        assert all(2 * v == int(2 * v) for v in sp.box)  # multiples of 0.5
        assert (xs.min(), xs.max() + 1) == (np.floor(x1), np.ceil(x2))
        assert (ys.min(), ys.max() + 1) == (np.floor(y1), np.ceil(y2))
        # a pixel only half covered at a border has coverage <= 0.5 there, a fully covered one 1
        assert sp.alpha.max() == 1.0 and 0.0 <= sp.alpha.min()


def test_similar_appearance_differs_in_one_attribute():
    rng = np.random.default_rng(1)
    for _ in range(50):
        base = S.random_appearance(rng)
        sim = S.similar_appearance(base, rng)
        changed = [k for k in base.__dict__ if getattr(base, k) != getattr(sim, k)]
        assert len(changed) == 1 and changed[0] in S.SIMILARITY_ATTRIBUTES


def test_cli_generates_then_leaves_existing(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "prepare_synthetic", os.path.join(REPO, "datasets", "prepare_synthetic.py")
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    argv = [
        "--out",
        str(tmp_path),
        "--quiet",
        "--which",
        "both",
        "--cuhk-images",
        "60",
        "--cuhk-pool",
        "25",
        "--cuhk-train-ids",
        "8",
        "--cuhk-test-ids",
        "6",
        "--cuhk-image-size",
        "64",
        "48",
        "--gallery-sizes",
        "10",
        "20",
        "--prw-cameras",
        "2",
        "--prw-train-frames",
        "8",
        "--prw-test-frames",
        "8",
        "--prw-train-ids",
        "3",
        "--prw-test-ids",
        "3",
        "--prw-image-size",
        "64",
        "48",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "queries" in out and "TestG sizes written" in out and "cameras" in out
    protocol_dir = tmp_path / "CUHK-SYSU" / "annotation" / "test" / "train_test"
    assert os.path.isfile(protocol_dir / "TestG20.mat")
    assert os.path.isfile(tmp_path / "PRW" / "query_info.txt")
    mtime = os.path.getmtime(tmp_path / "PRW" / "query_info.txt")
    stats = S.ensure_synthetic_datasets(str(tmp_path), progress=False)  # present: nothing done
    assert stats["prw"]["generated"] is False and stats["cuhk_sysu"]["queries"] == 6
    assert os.path.getmtime(tmp_path / "PRW" / "query_info.txt") == mtime
    assert cli.main(argv[:2] + ["--cuhk-pool", "60"]) == 0  # exists: bad sizes are not even used
    bad = ["--out", str(tmp_path / "n"), "--which", "cuhk_sysu", "--cuhk-images", "5"]
    assert cli.main(bad) == 2
    assert "pool_size" in capsys.readouterr().err


def test_worker_processes_do_not_change_output(prw, tmp_path):
    """Every image draws from its own random stream, so rendering in 2 processes gives the same
    files as rendering in this one."""
    root, _ = prw
    par = str(tmp_path / "PRW")
    S.generate_prw(par, seed=7, num_workers=2, **PRW_KW)
    a, b = _all_files(root), _all_files(par)
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a)
