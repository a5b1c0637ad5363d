"""tools/reid_probe.py: retrieval metrics over given boxes, checked against a hand-worked
example."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
)
from reid_probe import retrieval_metrics  # noqa: E402


def test_retrieval_metrics_match_a_hand_worked_example():
    # img0: a (pid 0), u (unlabelled); img1: b (pid 0), c (pid 1); img2: d (pid 1)
    embeds = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, -0.6], [0.96, 0.28], [0.28, 0.96]])
    pids = torch.tensor([0, -1, 0, 1, 1])
    image_ids = torch.tensor([0, 0, 1, 1, 2])
    m = retrieval_metrics(embeds, pids, image_ids)
    # query a: c .96, b .80, d .28 -> first hit at rank 1, AP 1/2
    # query b: a .80, u .00, d -.352 -> hit first, AP 1
    # query c: a .96, u .80, d .5376 -> first hit at rank 2, AP 1/3; labelled only: a, d -> miss
    # query d: u .936, c .5376, a .28, b -.352 -> first hit at rank 1, AP 1/2; labelled only: hit
    assert m["queries"] == 4
    assert m["rank1"] == pytest.approx(25.0)
    assert m["rank1_labelled_only"] == pytest.approx(50.0)
    assert m["mAP"] == pytest.approx(100.0 * (0.5 + 1.0 + 1.0 / 3.0 + 0.5) / 4.0)
    assert m["median_first_hit"] == 1.0
    assert m["cos_same_id"] == pytest.approx((0.8 + 0.5376) / 2.0)
    assert m["cos_diff_id"] == pytest.approx((0.96 + 0.28 - 0.352) / 3.0)


def test_retrieval_metrics_without_a_query_are_nan():
    embeds = torch.eye(3)
    m = retrieval_metrics(embeds, torch.tensor([0, 1, -1]), torch.tensor([0, 1, 2]))
    assert m["queries"] == 0
    assert math.isnan(m["rank1"]) and math.isnan(m["mAP"]) and math.isnan(m["cos_same_id"])
    assert m["cos_diff_id"] == pytest.approx(0.0)
