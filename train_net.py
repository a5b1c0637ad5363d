#!/usr/bin/env python
"""Train or evaluate I-Net / DC-I-Net person search with Detectron2.

    python train_net.py --config-file configs/cuhk_sysu/dcinet_R50_C4.yaml --num-gpus 8
    python train_net.py --config-file configs/cuhk_sysu/dcinet_R50_C4.yaml --eval-only \\
        MODEL.WEIGHTS model.pth
    python train_net.py --config-file configs/synthetic/dcinet_small.yaml --resume

All logic lives in dcinet_d2.engine (PersonSearchTrainer, a DefaultTrainer subclass).
"""

from __future__ import annotations

from dcinet_d2.engine.cli import run

if __name__ == "__main__":
    run()
