"""The Detectron2 trainer of dcinet_d2: paired train loader, person-search mapper and evaluator."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import weakref

from detectron2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.data.build import trivial_batch_collator
from detectron2.engine import DefaultTrainer
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import DatasetEvaluators
from detectron2.utils import comm
from torch.utils.data import DataLoader

from ..data import (
    PersonSearchDatasetMapper,
    build_paired_train_loader,
    check_test_images,
    training_dataset_dicts,
)
from ..evaluation import PersonSearchEvaluator
from .checkpoint import PersonSearchCheckpointer

__all__ = ["PersonSearchTrainer"]
logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _cpu_ddp_support():
    """Let ``DefaultTrainer.__init__`` wrap a CPU model in DDP.

    Detectron2's ``create_ddp_model`` passes ``device_ids=[local_rank]``, which torch refuses for a
    CPU module; for CPU models (gloo processes, see ``launch.py``) it must be ``None``. Patched only
    for the duration of ``__init__``; GPU models are wrapped exactly as Detectron2 does.
    """
    original = d2_defaults.create_ddp_model

    def create_ddp_model(model, **kwargs):
        if next(model.parameters()).device.type == "cpu":
            kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    d2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = original


class PersonSearchTrainer(DefaultTrainer):
    """:class:`DefaultTrainer` with Siamese pair loading and the person-search evaluator.

    Everything else (optimizer, LR schedule, checkpointing with the model's buffers, i.e. the
    feature dictionary and class centres, EvalHook every ``TEST.EVAL_PERIOD``, DDP) is Detectron2's,
    with these additions:

    - before the first iteration: the training identities are numbered across the training sets
      and checked against ``MODEL.REID.NUM_IDS``, and the training and test images are checked
      (``dcinet_d2.data.build``); the identity ranges are written to ``OUTPUT_DIR/train_identities.json``;
    - checkpoints are written atomically, carry what inference needs (the config with
      ``NUM_IDS`` resolved), and ``--resume`` falls back to the newest intact one
      (:class:`~.checkpoint.PersonSearchCheckpointer`).
    """

    def __init__(self, cfg):
        check_test_images(cfg.DATASETS.TEST)
        with _cpu_ddp_support():
            super().__init__(cfg)

    def build_hooks(self):
        # DefaultTrainer.__init__ builds a DetectionCheckpointer just before calling build_hooks;
        # the periodic checkpointer hook must be given ours.
        self.checkpointer = PersonSearchCheckpointer(
            self.checkpointer.model, self.cfg.OUTPUT_DIR, cfg=self.cfg, trainer=weakref.proxy(self))
        return super().build_hooks()

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
        return build_detection_train_loader(cfg, mapper=PersonSearchDatasetMapper(cfg, is_train=True),
                                            dataset=dicts)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """Detectron2's test loader (InferenceSampler: each image once, sharded across processes)
        with ``TEST.IMS_PER_BATCH`` images per forward."""
        loader = build_detection_test_loader(cfg, dataset_name,
                                             mapper=PersonSearchDatasetMapper(cfg, is_train=False))
        batch = int(cfg.TEST.IMS_PER_BATCH)
        if batch < 1:
            raise ValueError(f"TEST.IMS_PER_BATCH must be >= 1, got {batch}")
        if batch == 1:
            return loader
        return DataLoader(loader.dataset, batch_size=batch, sampler=loader.sampler,
                                           num_workers=cfg.DATALOADER.NUM_WORKERS,
                                           collate_fn=trivial_batch_collator)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
        if evaluator_type != "person_search":
            raise ValueError(f"dataset '{dataset_name}' has evaluator_type {evaluator_type!r}; "
                             "dcinet_d2 evaluates person-search datasets only")
        return DatasetEvaluators([PersonSearchEvaluator.from_config(cfg, dataset_name, output_folder)])
