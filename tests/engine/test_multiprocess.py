"""train_net.py on two CPU processes (gloo) through dcinet_d2.engine.launch: trains, checkpoints,
evaluates with predictions gathered from both processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from .common import REPO, quick_cfg


@pytest.mark.timeout(900)
def test_train_net_two_processes(tmp_path):
    quick_cfg("dcinet", str(tmp_path))  # generates the synthetic data if absent
    cmd = [
        sys.executable,
        os.path.join(REPO, "train_net.py"),
        "--num-gpus",
        "2",
        "--dist-url",
        "auto",
        "--config-file",
        os.path.join(REPO, "configs", "quick_schedules", "dcinet_instant_test.yaml"),
        "OUTPUT_DIR",
        str(tmp_path),
        "SOLVER.MAX_ITER",
        "4",
        "SOLVER.CHECKPOINT_PERIOD",
        "100",
    ]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=850)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "World size: 2" in log
    # evaluation ran on both processes and rank 0 gathered every test image and query
    out = os.path.join(str(tmp_path), "inference", "synthetic_cuhk_sysu_test")
    with open(os.path.join(out, "person_search_metrics.json")) as f:
        assert set(json.load(f)["search"]) == {"mAP", "top1", "top5", "top10"}
    preds = torch.load(os.path.join(out, "person_search_predictions.pth"), weights_only=True)
    from detectron2.data import DatasetCatalog

    test_dicts = DatasetCatalog.get("synthetic_cuhk_sysu_test")
    assert set(preds["gallery"]) == {d["image_id"] for d in test_dicts}
    assert len(preds["queries"]) == sum(len(d.get("queries", [])) for d in test_dicts)
    final = torch.load(os.path.join(str(tmp_path), "model_final.pth"), weights_only=True)
    assert final["iteration"] == 3
