"""Bad inputs are refused before the first iteration, with the key / file named (issue 12, items
1, 4, 7 and 8)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from dcinet_d2.data import PairedDataset, PersonSearchDatasetMapper, UnreadableImageError
from dcinet_d2.data.build import training_dataset_dicts
from dcinet_d2.data.identities import check_identities, load_training_sets, num_train_identities
from dcinet_d2.data.image_check import find_unreadable_images, image_problem
from dcinet_d2.engine import PersonSearchTrainer
from dcinet_d2.engine.cli import argument_parser, load_for_evaluation, main, setup_logging

from ..engine.common import REPO, quick_cfg
from .common import captured_log

_registered = set()


def _register(name, dicts, **metadata):
    """(Re-)register a dataset for one test (the catalog is process-wide)."""
    if name in _registered:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    _registered.add(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(
        evaluator_type="person_search", thing_classes=["person"], **metadata
    )


def _copied_subset(split, tmp_path, count):
    """The first ``count`` images of the synthetic CUHK-SYSU split, copied under tmp_path."""
    quick_cfg("dcinet", str(tmp_path))  # makes sure the synthetic datasets exist
    dicts = []
    for d in DatasetCatalog.get(f"synthetic_cuhk_sysu_{split}")[:count]:
        d = dict(d)
        dst = tmp_path / f"{split}_{os.path.basename(d['file_name'])}"
        shutil.copy(d["file_name"], dst)
        d["file_name"] = str(dst)
        dicts.append(d)
    return dicts


def _truncate(path, keep=600):
    with open(path, "r+b") as f:
        f.truncate(keep)


# ----------------------------------------------------------------------------- item 1: NUM_IDS
def test_num_ids_too_small_fails_before_training_naming_the_key(tmp_path):
    cfg = quick_cfg("dcinet", str(tmp_path), "MODEL.REID.NUM_IDS", "50")
    with pytest.raises(
        ValueError,
        match=r"MODEL.REID.NUM_IDS: the model has 50 identity classes.*"
        r"need 120 classes",
    ):
        PersonSearchTrainer(cfg)


def _two_sets(tmp_path):
    # set A: identities 0..2 (3 identities), set B: identities 0..1 (2 identities)
    img = tmp_path / "img.jpg"
    Image.new("RGB", (64, 48), (90, 120, 30)).save(img)

    def dicts(pids):
        return [
            {
                "file_name": str(img),
                "image_id": f"{i}",
                "height": 48,
                "width": 64,
                "annotations": [
                    {
                        "bbox": [1.0, 1.0, 20.0, 40.0],
                        "bbox_mode": 0,
                        "category_id": 0,
                        "person_id": p,
                    }
                ],
            }
            for i, p in enumerate(pids)
        ]

    _register("reliability_set_a", dicts([0, 2, -1, 1]), num_train_ids=3)
    _register("reliability_set_b", dicts([1, -1, 0]), num_train_ids=2)


def test_several_training_sets_get_distinct_identities(tmp_path):
    _two_sets(tmp_path)
    dicts, ranges = load_training_sets(["reliability_set_a", "reliability_set_b"])
    pids = [a["person_id"] for d in dicts for a in d["annotations"]]
    assert pids == [0, 2, -1, 1, 1 + 3, -1, 0 + 3]  # B shifted by A's 3 identities, -1 kept
    assert ranges == [
        {"dataset": "reliability_set_a", "offset": 0, "count": 3},
        {"dataset": "reliability_set_b", "offset": 3, "count": 2},
    ]
    # the registered dicts are not modified
    assert [
        a["person_id"] for d in DatasetCatalog.get("reliability_set_b") for a in d["annotations"]
    ] == [1, -1, 0]
    cfg = quick_cfg(
        "dcinet", str(tmp_path), "DATASETS.TRAIN", "('reliability_set_a','reliability_set_b')"
    )
    assert num_train_identities(cfg) == 5
    with pytest.raises(
        ValueError,
        match=r"holds identity 4 .* need 5 classes \(reliability_set_a: 3 "
        r"identities from 0, reliability_set_b: 2 identities from 3\)",
    ):
        check_identities(dicts, 4, ranges)
    check_identities(dicts, 5, ranges)


def test_trainer_records_the_identity_ranges(tmp_path):
    _two_sets(tmp_path)
    cfg = quick_cfg(
        "dcinet",
        str(tmp_path / "out"),
        "DATASETS.TRAIN",
        "('reliability_set_a','reliability_set_b')",
        "DATASETS.TEST",
        "()",
    )
    PersonSearchTrainer.build_train_loader(cfg)
    with open(tmp_path / "out" / "train_identities.json") as f:
        assert json.load(f) == [
            {"dataset": "reliability_set_a", "offset": 0, "count": 3},
            {"dataset": "reliability_set_b", "offset": 3, "count": 2},
        ]


# ------------------------------------------------------------------- item 4: unreadable images
def test_fast_image_check_finds_truncated_and_missing_files(tmp_path):
    good, png = tmp_path / "good.jpg", tmp_path / "cut.png"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(good, quality=90)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
        png
    )
    cut = tmp_path / "cut.jpg"
    shutil.copy(good, cut)
    _truncate(cut, keep=cut.stat().st_size - 10)
    _truncate(png, keep=png.stat().st_size // 2)
    (tmp_path / "text.jpg").write_text("not an image")
    assert image_problem(str(good)) == ""
    assert image_problem(str(cut)) == "truncated JPEG (no end-of-image marker)"
    assert image_problem(str(png)) == "truncated PNG (no IEND chunk)"
    assert image_problem(str(tmp_path / "text.jpg")).startswith("not a readable image")
    assert image_problem(str(tmp_path / "absent.jpg")) == "no such file"
    names = [str(good), str(cut), str(good), str(tmp_path / "absent.jpg")]
    assert find_unreadable_images(names) == [
        (str(cut), "truncated JPEG (no end-of-image marker)"),
        (str(tmp_path / "absent.jpg"), "no such file"),
    ]


def test_truncated_training_image_is_named_before_training_or_skipped(tmp_path):
    dicts = _copied_subset("train", tmp_path, 12)
    _truncate(dicts[3]["file_name"])
    _register("reliability_truncated_train", dicts, num_train_ids=120)
    cfg = quick_cfg(
        "dcinet",
        str(tmp_path / "out"),
        "DATASETS.TRAIN",
        "('reliability_truncated_train',)",
        "DATASETS.TEST",
        "()",
    )
    with pytest.raises(
        UnreadableImageError,
        match="(?s)1 training images cannot be read.*" + os.path.basename(dicts[3]["file_name"]),
    ):
        PersonSearchTrainer(cfg)
    cfg.defrost()
    cfg.DATALOADER.SKIP_UNREADABLE_IMAGES = True
    with captured_log() as log:
        kept, _ = training_dataset_dicts(cfg)
    assert [d["file_name"] for d in kept] == [d["file_name"] for d in dicts if d is not dicts[3]]
    assert "Leaving out 1 unreadable training images" in log.text()


def test_mapper_names_an_image_that_fails_to_decode_or_skips_it(tmp_path):
    dicts = _copied_subset("train", tmp_path, 4)
    _truncate(dicts[0]["file_name"])  # the mapper decodes: the fast check is not involved here
    cfg = quick_cfg("dcinet", str(tmp_path))
    mapper = PersonSearchDatasetMapper(cfg, is_train=True)
    with pytest.raises(
        UnreadableImageError,
        match=os.path.basename(dicts[0]["file_name"]) + ".*SKIP_UNREADABLE_IMAGES",
    ):
        mapper(dicts[0])
    cfg.defrost()
    cfg.DATALOADER.SKIP_UNREADABLE_IMAGES = True
    skipping = PersonSearchDatasetMapper(cfg, is_train=True)
    assert skipping(dicts[0]) is None and skipping.skipped == {dicts[0]["file_name"]}
    assert skipping(dicts[1])["image"].shape[0] == 3
    # a paired loader draws another pair instead of the one holding the unreadable image
    paired = PairedDataset(dicts, skipping, fallback="self")
    for k in range(len(paired)):
        pair = paired[k]
        assert all(p is not None and p["file_name"] != dicts[0]["file_name"] for p in pair)


def test_corrupt_test_image_is_found_before_training(tmp_path):
    dicts = _copied_subset("test", tmp_path, 6)
    _truncate(dicts[2]["file_name"])
    _register("reliability_truncated_test", dicts)
    cfg = quick_cfg(
        "dcinet", str(tmp_path / "out"), "DATASETS.TEST", "('reliability_truncated_test',)"
    )
    with pytest.raises(
        UnreadableImageError,
        match="(?s)test set .reliability_truncated_test.*"
        + os.path.basename(dicts[2]["file_name"]),
    ):
        PersonSearchTrainer(cfg)


# --------------------------------------------------------------- item 7: --eval-only, weights
def _eval_only_args(tmp_path, weights):
    config = os.path.join(REPO, "configs", "quick_schedules", "dcinet_instant_test.yaml")
    return argument_parser().parse_args(
        [
            "--config-file",
            config,
            "--eval-only",
            "MODEL.WEIGHTS",
            weights,
            "OUTPUT_DIR",
            str(tmp_path),
        ]
    )


def test_eval_only_without_weights_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--eval-only needs the trained model: set MODEL.WEIGHTS"):
        main(_eval_only_args(tmp_path, ""))


def test_eval_only_with_backbone_only_weights_is_refused(tmp_path):
    # the small configs' shipped ResNet holds no RPN, box predictor or embedding head
    with pytest.raises(ValueError, match=r"holds no value for \d+ of the model's parameters"):
        main(_eval_only_args(tmp_path, "dcinet_d2://synthetic_r50q_c4.pth"))


def test_eval_only_loads_a_complete_checkpoint(tmp_path):
    cfg = quick_cfg("dcinet", str(tmp_path))
    model = PersonSearchTrainer.build_model(cfg)
    from dcinet_d2.engine.checkpoint import PersonSearchCheckpointer

    PersonSearchCheckpointer(model, str(tmp_path), save_to_disk=True).save("complete")
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(tmp_path / "complete.pth")
    load_for_evaluation(PersonSearchTrainer.build_model(cfg), cfg, resume=False)  # no error


def test_eval_only_with_weights_of_another_config_names_the_shapes(tmp_path):
    # trained with the spatial mean (EMBED_STRIPES 1), evaluated with two stripes: Detectron2
    # would skip the projection with a warning and evaluate a random one
    cfg = quick_cfg("dcinet", str(tmp_path))
    cfg.defrost()
    cfg.MODEL.REID.EMBED_STRIPES = 1
    model = PersonSearchTrainer.build_model(cfg)
    from dcinet_d2.engine.checkpoint import PersonSearchCheckpointer

    PersonSearchCheckpointer(model, str(tmp_path), save_to_disk=True).save("stripes1")
    dim, channels = model.roi_heads.embed_head.proj.weight.shape
    cfg.MODEL.REID.EMBED_STRIPES = 2
    cfg.MODEL.WEIGHTS = str(tmp_path / "stripes1.pth")
    expected = (
        rf"holds 1 of the model's parameters with another shape \(e.g. "
        rf"roi_heads.embed_head.proj.weight: \({dim}, {channels}\) in the file, "
        rf"\({dim}, {2 * channels}\) in the model\).*MODEL.REID.EMBED_STRIPES"
    )
    with pytest.raises(ValueError, match=expected):
        load_for_evaluation(PersonSearchTrainer.build_model(cfg), cfg, resume=False)


# ------------------------------------------------------------------------- item 8: one log
def test_dcinet_log_lines_reach_log_txt(tmp_path):
    cfg = quick_cfg("dcinet", str(tmp_path))
    setup_logging(cfg)
    dicts = _copied_subset("train", tmp_path, 4)
    PairedDataset(dicts, lambda d: d)  # logs "Paired loading: ..." on dcinet_d2.data.build
    with open(tmp_path / "log.txt") as f:
        assert "Paired loading: 4 images" in f.read()


def test_jpeg_with_a_long_trailer_is_not_truncated(tmp_path):
    path = tmp_path / "motion.jpg"
    Image.new("RGB", (64, 48), (1, 2, 3)).save(path)
    with open(path, "ab") as f:
        f.write(b"\x00" * 10000)  # appended data after the end marker, as phones write
    assert image_problem(str(path)) == ""


def test_a_set_whose_identities_exceed_its_metadata_is_refused(tmp_path):
    _two_sets(tmp_path)
    MetadataCatalog.get("reliability_set_a").num_train_ids  # noqa: B018  (3)
    _register("reliability_set_a_small", DatasetCatalog.get("reliability_set_a"), num_train_ids=2)
    with pytest.raises(
        ValueError,
        match="'reliability_set_a_small' holds identity 2, but its metadata num_train_ids is 2",
    ):
        load_training_sets(["reliability_set_a_small", "reliability_set_b"])
