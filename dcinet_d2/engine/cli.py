"""What ``train_net.py`` does, as functions (so the demo and tests run the same code in-process)."""

from __future__ import annotations

import argparse
import logging

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import add_dcinet_config
from .checkpoint import PersonSearchCheckpointer
from .launch import launch
from .trainer import PersonSearchTrainer

__all__ = ["argument_parser", "setup_cfg", "setup_logging", "load_for_evaluation", "main", "run"]
logger = logging.getLogger(__name__)


def argument_parser() -> argparse.ArgumentParser:
    """Detectron2's standard arguments (``--config-file --eval-only --resume --num-gpus
    --num-machines --machine-rank --dist-url`` and trailing ``KEY VALUE`` overrides). Without
    CUDA, ``--num-gpus N`` starts N CPU processes (gloo)."""
    return default_argument_parser(
        epilog="dcinet_d2: I-Net / DC-I-Net person search training and evaluation"
    )


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


def setup_logging(cfg: CfgNode) -> None:
    """Send dcinet_d2's own log lines where Detectron2's go: the console (rank 0) and
    ``OUTPUT_DIR/log.txt`` (``log.txt.rank{N}`` for the other ranks). Call after
    ``default_setup``."""
    setup_logger(
        cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="dcinet_d2", abbrev_name="dcinet"
    )


def load_for_evaluation(model, cfg: CfgNode, resume: bool) -> None:
    """Load the weights to evaluate; refuse to evaluate a model that they leave untrained.

    Raises:
        ValueError: ``MODEL.WEIGHTS`` is empty (and nothing is resumed), or the weights lack some
            of the model's parameters (e.g. a backbone-only file such as the small configs'
            pre-trained ResNet) or hold some with another shape (weights of another config,
            e.g. another ``MODEL.REID.EMBED_STRIPES``): the model would be partly random.
    """
    checkpointer = PersonSearchCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    if not cfg.MODEL.WEIGHTS and not (resume and checkpointer.has_checkpoint()):
        raise ValueError(
            "--eval-only needs the trained model: set MODEL.WEIGHTS to its checkpoint "
            "(e.g. OUTPUT_DIR/model_final.pth), or pass --resume with OUTPUT_DIR"
        )
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    if not checkpointer.loaded_model:
        raise ValueError(
            f"--eval-only: nothing was loaded (no checkpoint to resume in "
            f"{cfg.OUTPUT_DIR} and MODEL.WEIGHTS is empty): set MODEL.WEIGHTS"
        )
    problem = checkpointer.untrained_parameters_error(
        checkpointer.resumed_from or cfg.MODEL.WEIGHTS
    )
    if problem:
        raise ValueError(
            f"--eval-only: {problem}; evaluating would use random weights. Set MODEL.WEIGHTS "
            "to a checkpoint of the trained model (OUTPUT_DIR/model_final.pth)."
        )


def main(args):
    """One process's work: train (optionally resuming) or evaluate. Returns the evaluation
    results."""
    cfg = setup_cfg(args)
    default_setup(cfg, args)
    setup_logging(cfg)
    if cfg.MODEL.DEVICE == "cpu":
        logger.info("CUDA is not available: running on the CPU")
    if args.eval_only:
        model = PersonSearchTrainer.build_model(cfg)
        load_for_evaluation(model, cfg, resume=args.resume)
        return PersonSearchTrainer.test(cfg, model)
    trainer = PersonSearchTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(argv: list[str] | None = None):
    """Parse ``argv`` and launch :func:`main` on one or several processes."""
    args = argument_parser().parse_args(argv)
    logger.info("Command line arguments: %s", args)
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
