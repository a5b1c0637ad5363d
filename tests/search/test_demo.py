"""demo/demo.py (Detectron2-style): draws detections on images with Detectron2's Visualizer and,
given a query, labels each detection with its similarity to it."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
from PIL import Image

DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "demo", "demo.py")


def _demo_module():
    spec = importlib.util.spec_from_file_location("dcinet_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_draws_images_with_and_without_query(complete_checkpoint, tmp_path):
    demo = _demo_module()
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(
            tmp_path / f"i{k}.png"
        )
    out = tmp_path / "out"
    assert (
        demo.main(
            [
                "--weights",
                complete_checkpoint,
                "--input",
                str(tmp_path / "*.png"),
                "--output",
                str(out),
                "--confidence-threshold",
                "0",
            ]
        )
        == 0
    )
    drawn = Image.open(out / "i0.png")
    assert drawn.size == (128, 96)
    assert not np.array_equal(np.asarray(drawn), np.asarray(Image.open(tmp_path / "i0.png")))
    out_q = tmp_path / "out_q"
    assert (
        demo.main(
            [
                "--weights",
                complete_checkpoint,
                "--input",
                str(tmp_path / "i1.png"),
                "--output",
                str(out_q),
                "--confidence-threshold",
                "0",
                "--query",
                str(tmp_path / "i0.png"),
                "--query-box",
                "10,10,60,80",
            ]
        )
        == 0
    )
    assert Image.open(out_q / "i1.png").size == (128, 96)
