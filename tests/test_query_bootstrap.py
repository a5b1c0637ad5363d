"""tools/query_bootstrap.py end to end on the synthetic CUHK-SYSU test set: its mAP is the
protocol's (computed independently by the evaluator), a run against itself differs by exactly 0."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
)
from query_bootstrap import main  # noqa: E402


@pytest.fixture(scope="module")
def gt_histogram_predictions(tmp_path_factory):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from dcinet_d2.data.synthetic import ensure_synthetic_datasets
    from dcinet_d2.evaluation.colour_baseline import ground_truth_predictions
    from dcinet_d2.evaluation.evaluator import evaluate_person_search
    from dcinet_d2.evaluation.predictions import save_predictions, validate_predictions

    ensure_synthetic_datasets(progress=False)
    name = "synthetic_cuhk_sysu_test"
    dicts = DatasetCatalog.get(name)
    preds = validate_predictions(ground_truth_predictions(dicts))
    expected = evaluate_person_search(
        dicts, preds, protocol="cuhk_sysu", root=MetadataCatalog.get(name).root, gallery_size=100
    )
    path = str(tmp_path_factory.mktemp("boot") / "gt_hist.pth")
    save_predictions(path, preds["gallery"], preds["queries"])
    return path, expected["search"]["mAP"]


def test_tool_reports_the_protocol_map_and_paired_differences(gt_histogram_predictions, capsys):
    path, expected_map = gt_histogram_predictions
    assert main([path, path, "--dataset", "synthetic_cuhk_sysu_test", "--samples", "2000"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    first, second = out["runs"]
    assert out["queries"] == 70
    assert first["mAP"] == pytest.approx(expected_map, abs=1e-9)
    low, high = first["interval95"]
    assert low < first["mAP"] < high and first["std"] > 0
    # the same file twice: every paired resample differs by 0
    assert second["diff_to_first"] == 0 and second["diff_interval95"] == [0.0, 0.0]
    assert np.isclose(second["std"], first["std"])


def test_tool_refuses_an_unknown_dataset(gt_histogram_predictions, capsys):
    assert main([gt_histogram_predictions[0], "--dataset", "no_such_set"]) == 2
    assert "unknown dataset 'no_such_set'" in capsys.readouterr().err
