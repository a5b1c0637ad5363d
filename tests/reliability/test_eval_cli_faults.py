"""``python -m dcinet_d2.evaluation`` refuses what would give silent nonsense (hardening issue,
item 6): scores that are not probabilities, a threshold outside [0, 1], a ``--json`` target it
cannot write, a training split, and it lists only person-search sets for an unknown name."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest
import torch

from dcinet_d2.data.datasets.builtin import register_cuhk_sysu
from dcinet_d2.evaluation import __main__ as cli
from dcinet_d2.evaluation.predictions import PredictionsFormatError, validate_predictions

from ..data.official_files import write_cuhk_sysu

E1 = [1.0, 0.0, 0.0]


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture
def cuhk(tmp_path):
    """A registered CUHK-SYSU copy (pool s1, s2; training image t1); returns the name prefix."""
    root = str(tmp_path / "CUHK-SYSU")
    images = {"s1.jpg": [(0, 0, 20, 40)], "s2.jpg": [(10, 10, 20, 40)], "t1.jpg": [(0, 0, 20, 40)]}
    write_cuhk_sysu(
        root,
        images,
        ["s1.jpg", "s2.jpg"],
        [("a", [("t1.jpg", (0, 0, 20, 40))])],
        [("p", "s1.jpg", (0, 0, 20, 40), [("s2.jpg", (10, 10, 20, 40))])],
        {n: (100, 100) for n in images},
    )
    prefix = f"cli_faults_{uuid.uuid4().hex[:8]}"
    register_cuhk_sysu(prefix, root)
    return prefix


def write_predictions(path, scores) -> str:
    """A predictions file written with torch.save directly (save_predictions would refuse it)."""
    n = len(scores)
    entry = {
        "boxes": torch.tensor([[0.0, 0.0, 20.0, 40.0]] * n).reshape(n, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "embeds": torch.tensor([E1] * n).reshape(n, 3),
    }
    torch.save(
        {
            "gallery": {"s1.jpg": entry, "s2.jpg": dict(entry)},
            "queries": {0: {"embed": torch.tensor(E1)}},
        },
        path,
    )
    return path


@pytest.fixture
def no_evaluation(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("evaluated although the command line was refused")

    monkeypatch.setattr(cli, "evaluate_person_search", fail)


@pytest.mark.parametrize(
    "scores, detection, value, count",
    [
        ([2.3, -1.2], 0, "2.3", 2),  # logits
        ([0.9, 1.5], 1, "1.5", 1),
        ([-0.0001, 0.5], 0, "-0.0001", 1),
    ],
)
def test_scores_outside_unit_interval_are_refused(
    cuhk, tmp_path, capsys, scores, detection, value, count
):
    preds = write_predictions(str(tmp_path / "logits.pth"), scores)
    assert cli.main(["--dataset", cuhk + "_test", "--predictions", preds]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        f"error: {preds}: gallery['s1.jpg']['scores']: scores must be detection probabilities "
        f"in [0, 1]; detection {detection} scores {value} ({count} such detections; logits?)"
    ) in err


def test_non_finite_scores_name_the_detection(cuhk, tmp_path, capsys):
    preds = write_predictions(str(tmp_path / "inf.pth"), [0.5, math.inf])
    assert cli.main(["--dataset", cuhk + "_test", "--predictions", preds]) == 2
    assert (
        f"error: {preds}: gallery['s1.jpg']['scores']: non-finite values (detection 1; "
        "1 such detections)"
    ) in capsys.readouterr().err


def test_probabilities_at_both_ends_are_accepted(cuhk, tmp_path, capsys):
    preds = write_predictions(str(tmp_path / "ok.pth"), [1.0, 0.0])
    argv = ["--dataset", cuhk + "_test", "--predictions", preds, "--gallery-size", "50"]
    assert cli.main(argv) == 0
    assert "Person-search results on" in capsys.readouterr().out
    entry = {
        "boxes": np.zeros((1, 4), np.float32),
        "scores": np.array([np.float32(1.0000001)]),
        "embeds": np.array([E1], np.float32),
    }
    with pytest.raises(PredictionsFormatError, match=r"detection 0 scores 1.0000001 \(1 such"):
        validate_predictions({"gallery": {"a.jpg": entry}, "queries": {}})


@pytest.mark.parametrize("text", ["2", "nan", "inf", "-0.1", "1.0001", "half"])
def test_det_thresh_outside_unit_interval_is_an_argparse_error(text, capsys):
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(
            ["--dataset", "x", "--predictions", "y", "--det-thresh", text]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --det-thresh: " in err and repr(text) in err and "[0, 1]" in err


@pytest.mark.parametrize("text, value", [("0", 0.0), ("1", 1.0), ("0.25", 0.25)])
def test_det_thresh_in_unit_interval_is_accepted(text, value):
    argv = ["--dataset", "x", "--predictions", "y", "--det-thresh", text]
    args = cli.build_parser().parse_args(argv)
    assert args.det_thresh == value


@pytest.mark.parametrize(
    "target, problem",
    [
        ("a_file/metrics.json", "'{tmp}/a_file' is not a folder"),
        ("a_file/deeper/metrics.json", "'{tmp}/a_file' is not a folder"),
        ("a_folder", "is a folder"),
    ],
)
def test_unwritable_json_is_refused_before_evaluating(
    cuhk, tmp_path, capsys, no_evaluation, target, problem
):
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "a_folder").mkdir()
    preds = write_predictions(str(tmp_path / "ok.pth"), [0.9])
    out_json = str(tmp_path / target)
    assert cli.main(["--dataset", cuhk + "_test", "--predictions", preds, "--json", out_json]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"error: --json {out_json}: " + problem.format(tmp=tmp_path)]


def test_json_write_failure_after_evaluating_prints_no_results(cuhk, tmp_path, capsys, monkeypatch):
    preds = write_predictions(str(tmp_path / "ok.pth"), [0.9])
    out_json = str(tmp_path / "metrics.json")
    real_open = open

    def failing_open(path, *args, **kwargs):  # the disk fills up between the check and the write
        if path == out_json:
            raise OSError(28, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing_open)
    argv = ["--dataset", cuhk + "_test", "--predictions", preds, "--gallery-size", "50"]
    assert cli.main(argv + ["--json", out_json]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines()[-1] == (
        f"error: --json {out_json}: cannot write the results "
        "(OSError: [Errno 28] No space left on device)"
    )


def test_training_split_is_refused_naming_the_test_split(cuhk, tmp_path, capsys, no_evaluation):
    preds = write_predictions(str(tmp_path / "ok.pth"), [0.9])
    assert cli.main(["--dataset", cuhk + "_train", "--predictions", preds]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: '{cuhk}_train' is a training split; the protocol evaluates test splits only: "
        f"use its test split '{cuhk}_test'"
    ]
    assert cli.main(["--dataset", "synthetic_cuhk_sysu_train", "--predictions", preds]) == 2
    assert "use its test split 'synthetic_cuhk_sysu_test'" in capsys.readouterr().err


def test_unknown_dataset_lists_person_search_test_sets_only(cuhk, capsys, no_evaluation):
    assert cli.main(["--dataset", "no_such_set", "--predictions", "p.pth"]) == 2
    err = capsys.readouterr().err
    head = "error: unknown dataset 'no_such_set'; registered person-search test sets: "
    assert err.startswith(head)
    listed = err.strip()[len(head) :].split(", ")
    assert {"synthetic_prw_test", "cuhk_sysu_test", cuhk + "_test"} <= set(listed)
    assert cuhk + "_train" not in listed
    for name in listed:
        assert cli.MetadataCatalog.get(name).evaluator_type == "person_search"
    for other in ("coco", "lvis", "voc", "cityscapes"):
        assert other not in err
