"""The Detectron2 trainer of dcinet_d2: paired train loader, person-search mapper and evaluator."""

from __future__ import annotations

import json
import logging
import os
import weakref

from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data.build import trivial_batch_collator
from detectron2.engine import (
    AMPTrainer,
    DefaultTrainer,
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
)
from detectron2.evaluation import DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.utils.data import DataLoader

from ..data import (
    PersonSearchDatasetMapper,
    build_paired_train_loader,
    check_test_images,
    training_dataset_dicts,
)
from ..evaluation import PersonSearchEvaluator
from ..modeling.fast_inference import inference_autocast, inference_model_from_config
from .checkpoint import PersonSearchCheckpointer

__all__ = ["PersonSearchTrainer"]
logger = logging.getLogger(__name__)


class PersonSearchTrainer(DefaultTrainer):
    """:class:`DefaultTrainer` with Siamese pair loading and the person-search evaluator.

    Everything else (optimizer, LR schedule, checkpointing with the model's buffers, i.e. the
    feature dictionary and class centres, EvalHook every ``TEST.EVAL_PERIOD``, DDP) is Detectron2's,
    with these additions:

    - before the first iteration: the training identities are numbered across the training sets
      and checked against ``MODEL.REID.NUM_IDS``, and the training and test images are checked
      (``dcinet_d2.data.build``); the identity ranges are written to
      ``OUTPUT_DIR/train_identities.json``;
    - checkpoints are written atomically, carry what inference needs (the config with
      ``NUM_IDS`` resolved), and ``--resume`` falls back to the newest intact one
      (:class:`~.checkpoint.PersonSearchCheckpointer`).
    """

    def __init__(self, cfg):
        """``DefaultTrainer.__init__`` (Detectron2 v0.6) with two hooks of ours: the model is
        wrapped by :meth:`build_ddp_model`, and the checkpointer is a
        :class:`~.checkpoint.PersonSearchCheckpointer` from the start."""
        check_test_images(cfg.DATASETS.TEST)
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        # Built in this order, as Detectron2 does.
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = self.build_ddp_model(model)
        trainer_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = PersonSearchCheckpointer(
            model, cfg.OUTPUT_DIR, cfg=cfg, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_ddp_model(cls, model):
        """Wrap the model in DDP when there are several processes (Detectron2's
        ``create_ddp_model``, ``broadcast_buffers=False``). A CPU model (gloo processes, see
        ``launch.py``) is wrapped with ``device_ids=None``: torch refuses device ids for a CPU
        module, which Detectron2's function passes unless given some."""
        on_cpu = next(model.parameters()).device.type == "cpu"
        return create_ddp_model(
            model, broadcast_buffers=False, **({"device_ids": None} if on_cpu else {})
        )

    def resume_or_load(self, resume: bool = True):
        """As Detectron2's; the iteration continues only when a checkpoint was actually resumed."""
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.resumed_from:
            self.start_iter = self.iter + 1

    @classmethod
    def build_train_loader(cls, cfg):
        dicts, ranges = training_dataset_dicts(cfg)
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            with open(os.path.join(cfg.OUTPUT_DIR, "train_identities.json"), "w") as f:
                json.dump(ranges, f, indent=1)
        if cfg.DATALOADER.PAIRING.ENABLED:
            return build_paired_train_loader(cfg, dataset_dicts=dicts)
        return build_detection_train_loader(
            cfg, mapper=PersonSearchDatasetMapper(cfg, is_train=True), dataset=dicts
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """Detectron2's test loader (InferenceSampler: each image once, sharded across processes)
        with ``TEST.IMS_PER_BATCH`` images per forward."""
        loader = build_detection_test_loader(
            cfg, dataset_name, mapper=PersonSearchDatasetMapper(cfg, is_train=False)
        )
        batch = int(cfg.TEST.IMS_PER_BATCH)
        if batch < 1:
            raise ValueError(f"TEST.IMS_PER_BATCH must be >= 1, got {batch}")
        if batch == 1:
            return loader
        return DataLoader(
            loader.dataset,
            batch_size=batch,
            sampler=loader.sampler,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
            collate_fn=trivial_batch_collator,
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
        if evaluator_type != "person_search":
            raise ValueError(
                f"dataset '{dataset_name}' has evaluator_type {evaluator_type!r}; "
                "dcinet_d2 evaluates person-search datasets only"
            )
        return DatasetEvaluators(
            [PersonSearchEvaluator.from_config(cfg, dataset_name, output_folder)]
        )

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """``DefaultTrainer.test`` on an inference copy of the model (``TEST.FOLD_NORMS``,
        ``TEST.CHANNELS_LAST``: :func:`~dcinet_d2.modeling.fast_inference.inference_model`) under
        ``TEST.AMP``'s autocast; the training model is left as it is."""
        eval_model = inference_model_from_config(cfg, model)
        with inference_autocast(cfg, next(eval_model.parameters()).device):
            return super().test(cfg, eval_model, evaluators)
