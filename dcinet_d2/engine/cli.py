"""What ``train_net.py`` does, as functions (so the demo and tests run the same code in-process)."""
from __future__ import annotations

import argparse
import logging

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_argument_parser, default_setup

from ..config import add_dcinet_config
from .launch import launch
from .trainer import PersonSearchTrainer

__all__ = ["argument_parser", "setup_cfg", "main", "run"]
logger = logging.getLogger(__name__)


def argument_parser() -> argparse.ArgumentParser:
    """Detectron2's standard arguments (``--config-file --eval-only --resume --num-gpus --num-machines
    --machine-rank --dist-url`` and trailing ``KEY VALUE`` overrides). Without CUDA, ``--num-gpus N``
    starts N CPU processes (gloo)."""
    return default_argument_parser(epilog="dcinet_d2: I-Net / DC-I-Net person search training and evaluation")


def setup_cfg(args) -> CfgNode:
    """Config from ``args.config_file`` + ``args.opts`` with dcinet_d2's keys; frozen.

    ``MODEL.DEVICE`` "cuda" falls back to "cpu" when CUDA is unavailable (logged), so the same
    config files run on GPU machines and on this project's CPU machines.
    """
    cfg = get_cfg()
    add_dcinet_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def main(args):
    """One process's work: train (optionally resuming) or evaluate. Returns the evaluation results."""
    cfg = setup_cfg(args)
    default_setup(cfg, args)
    if cfg.MODEL.DEVICE == "cpu":
        logger.info("CUDA is not available: running on the CPU")
    if args.eval_only:
        model = PersonSearchTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return PersonSearchTrainer.test(cfg, model)
    trainer = PersonSearchTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(argv: list[str] | None = None):
    """Parse ``argv`` and launch :func:`main` on one or several processes."""
    args = argument_parser().parse_args(argv)
    logger.info("Command line arguments: %s", args)
    return launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                  dist_url=args.dist_url, args=(args,))
