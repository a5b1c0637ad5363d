"""Partner choice and the paired train loader: invariants over many draws, checked independently."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from detectron2.config import get_cfg
from detectron2.structures import BoxMode

from dcinet_d2 import add_dcinet_config
from dcinet_d2.data import (
    PairedDataset,
    PersonSearchDatasetMapper,
    build_paired_train_loader,
    flatten_pairs,
)
from dcinet_d2.data.build import PairsGroupedByAspectRatio
from dcinet_d2.data.pairing import anchor_indices, build_partner_index, choose_partner, labelled_ids

from .official_files import write_image


def _dict(pids, cam=None, name="x"):
    d = {"image_id": name, "annotations": [{"person_id": p} for p in pids]}
    if cam is not None:
        d["camera_id"] = cam
    return d


# image: labelled ids / camera
#   0: {1, 2} c1   1: {1} c2   2: {2} c1   3: {3} c1 (3 only here)   4: {} c2   5: {1} c1
DICTS = [
    _dict([1, 2, -1], 1),
    _dict([1], 2),
    _dict([2, -1], 1),
    _dict([3], 1),
    _dict([-1], 2),
    _dict([1], 1),
]


def test_partner_index_by_hand():
    # sharing: 0-1 (id 1), 0-2 (id 2), 0-5 (id 1), 1-5 (id 1); 3 and 4 share nothing
    no_pref = build_partner_index(DICTS, prefer_other_camera=False)
    assert [p.tolist() for p in no_pref] == [[1, 2, 5], [0, 5], [0], [], [], [0, 1]]
    pref = build_partner_index(DICTS, prefer_other_camera=True)
    # 0 (c1): other camera among {1,2,5} -> {1}; 1 (c2): {0,5} are both c1 -> kept;
    # 2 (c1): {0} only c1 -> kept; 5 (c1): {0 (c1), 1 (c2)} -> {1}
    assert [p.tolist() for p in pref] == [[1], [0, 5], [0], [], [], [1]]
    assert labelled_ids(DICTS[0]) == {1, 2}


def test_fallbacks():
    partners = build_partner_index(DICTS, prefer_other_camera=False)
    assert anchor_indices(partners, "self").tolist() == [0, 1, 2, 3, 4, 5]
    assert anchor_indices(partners, "drop").tolist() == [0, 1, 2, 5]
    with pytest.raises(ValueError, match="FALLBACK must be one of"):
        anchor_indices(partners, "nearest")
    rng = random.Random(0)
    assert choose_partner(3, partners, "self", rng) == 3
    draws = Counter(choose_partner(3, partners, "random", rng) for _ in range(5000))
    assert set(draws) == {0, 1, 2, 4, 5}  # never itself
    assert all(abs(c / 5000 - 0.2) < 0.03 for c in draws.values())  # uniform: 1/5 each
    with pytest.raises(ValueError, match="no partner"):
        choose_partner(3, partners, "drop", rng)


def test_partner_drawn_uniformly():
    partners = build_partner_index(DICTS, prefer_other_camera=False)
    rng = random.Random(1)
    draws = Counter(choose_partner(0, partners, "self", rng) for _ in range(6000))
    assert set(draws) == {1, 2, 5}
    assert all(abs(c / 6000 - 1 / 3) < 0.03 for c in draws.values())


def test_paired_dataset_pairs_share_identity():
    dataset = PairedDataset(DICTS, lambda d: d, fallback="self", prefer_other_camera=True)
    random.seed(0)
    for k in range(len(dataset)):
        for _ in range(20):
            a, b = dataset[k]
            shared = labelled_ids(a) & labelled_ids(b)
            if k in (3, 4):  # nobody shares their identities: paired with themselves
                assert a == b
            else:
                assert shared, (k, a, b)
    batch = flatten_pairs([dataset[0], dataset[1]])
    assert len(batch) == 4 and labelled_ids(batch[0]) & labelled_ids(batch[1])


# --------------------------------------------------------------------------- real mapper and loader
def _cfg(**over):
    cfg = get_cfg()
    add_dcinet_config(cfg)
    cfg.INPUT.MIN_SIZE_TRAIN = (32,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.DATALOADER.NUM_WORKERS = 0
    for k, v in over.items():
        cfg.merge_from_list([k, v])
    return cfg


def _image_dicts(tmp_path, n=8):
    """n images 64x32 (w x h); image i holds identity i // 2 (so i pairs with i ^ 1) and an
    unlabelled box."""
    dicts = []
    for i in range(n):
        path = str(tmp_path / f"im{i}.jpg")
        write_image(path, 64, 32)
        dicts.append(
            {
                "file_name": path,
                "image_id": f"im{i}.jpg",
                "height": 32,
                "width": 64,
                "annotations": [
                    {
                        "bbox": [4.0 + i, 2.0, 20.0 + i, 30.0],
                        "bbox_mode": BoxMode.XYXY_ABS,
                        "category_id": 0,
                        "person_id": i // 2,
                    },
                    {
                        "bbox": [40.0, 1.0, 60.0, 31.0],
                        "bbox_mode": BoxMode.XYXY_ABS,
                        "category_id": 0,
                        "person_id": -1,
                    },
                    {
                        "bbox": [10.0, 5.0, 10.0, 20.0],
                        "bbox_mode": BoxMode.XYXY_ABS,
                        "category_id": 0,
                        "person_id": 100 + i,
                    },  # unique: shared with nobody
                ],
            }
        )
    return dicts


def test_mapper_keeps_pids_aligned_through_flip_and_filter(tmp_path):
    cfg = _cfg()
    d = _image_dicts(tmp_path, 1)[0]
    mapper = PersonSearchDatasetMapper(cfg, is_train=True)
    seen = set()
    for _ in range(30):
        out = mapper(d)
        inst = out["instances"]
        # the 3rd box has zero width and is filtered; the pids of the two kept boxes follow them
        assert inst.gt_pids.tolist() == [0, -1]
        assert out["image"].shape == (3, 32, 64)  # shortest edge 32 already
        boxes = inst.gt_boxes.tensor.tolist()
        # no flip: boxes unchanged; horizontal flip on width 64: x -> 64 - x
        if boxes[0] == [4.0, 2.0, 20.0, 30.0]:
            assert boxes[1] == [40.0, 1.0, 60.0, 31.0]
            seen.add("plain")
        else:
            assert boxes == [[44.0, 2.0, 60.0, 30.0], [4.0, 1.0, 24.0, 31.0]]
            seen.add("flip")
    assert seen == {"plain", "flip"}


@pytest.mark.parametrize("grouping", [False, True])
@pytest.mark.parametrize("workers", [0, 2])
def test_loader_yields_pairs(tmp_path, workers, grouping):
    cfg = _cfg(
        **{
            "DATALOADER.NUM_WORKERS": workers,
            "SEED": 3,
            "DATALOADER.ASPECT_RATIO_GROUPING": grouping,
        }
    )
    loader = build_paired_train_loader(cfg, dataset_dicts=_image_dicts(tmp_path))
    it = iter(loader)
    for _ in range(6):
        batch = next(it)
        assert len(batch) == 4
        for k in range(2):
            a, b = batch[2 * k], batch[2 * k + 1]
            assert a["image_id"] != b["image_id"]
            ia, ib = int(a["image_id"][2:-4]), int(b["image_id"][2:-4])
            assert ia ^ 1 == ib  # the only image sharing identity ia // 2
            assert (set(a["instances"].gt_pids.tolist()) & set(b["instances"].gt_pids.tolist())) - {
                -1
            }


def test_loader_checks_batch_size(tmp_path):
    with pytest.raises(ValueError, match="multiple of 2"):
        build_paired_train_loader(
            _cfg(**{"SOLVER.IMS_PER_BATCH": 3}), dataset_dicts=_image_dicts(tmp_path)
        )


def test_pairs_grouped_by_the_orientation_of_their_first_image():
    def img(name, w, h):
        return {"image_id": name, "width": w, "height": h}

    # L = landscape first image, P = portrait (a pair's second image may differ)
    pairs = [
        [img("L0", 64, 32), img("x", 32, 64)],
        [img("P0", 32, 64), img("y", 64, 32)],
        [img("P1", 30, 30), img("z", 30, 30)],  # square counts as "not landscape"
        [img("L1", 64, 32), img("w", 64, 32)],
        [img("L2", 64, 32), img("v", 64, 32)],
        [img("P2", 32, 64), img("u", 32, 64)],
    ]
    batches = list(PairsGroupedByAspectRatio(pairs, 2))
    # a batch leaves when its group is full: the portrait one (at P1) before the landscape one (L1)
    assert [[d["image_id"] for d in b] for b in batches] == [
        ["P0", "y", "P1", "z"],
        ["L0", "x", "L1", "w"],
        # L2 and P2 wait for a partner pair in their group: an infinite stream completes them
    ]
