"""An interrupted training resumes from its last checkpoint with identical weights, memories
(feature dictionary, class centres) and iteration."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from detectron2.engine import HookBase

from dcinet_d2.engine import PersonSearchTrainer

from .common import quick_cfg


class _KillAfter(HookBase):
    """Snapshots the model right after the checkpoint of ``snapshot_iter`` and dies at
    ``kill_iter``."""

    def __init__(self, snapshot_iter, kill_iter):
        self.snapshot_iter, self.kill_iter, self.snapshot = snapshot_iter, kill_iter, None

    def after_step(self):
        if self.trainer.iter == self.snapshot_iter:
            self.snapshot = copy.deepcopy(self.trainer.model.state_dict())
        if self.trainer.iter == self.kill_iter:
            raise RuntimeError("simulated kill")


def test_resume_restores_memories_and_iteration(tmp_path):
    # CHECKPOINT_PERIOD 4: model_0000003.pth is written after iteration 3 (the 4th); killed at 5
    cfg = quick_cfg("dcinet", str(tmp_path), "TEST.EVAL_PERIOD", "0")
    trainer = PersonSearchTrainer(cfg)
    trainer.resume_or_load(resume=False)
    kill = _KillAfter(snapshot_iter=3, kill_iter=5)
    trainer.register_hooks([kill])  # runs after the checkpointer hook
    with pytest.raises(RuntimeError, match="simulated kill"):
        trainer.train()
    saved = kill.snapshot
    centres = [k for k in saved if k.endswith("centres.centres")]
    dictionary = [k for k in saved if k.endswith("dictionary.feats")]
    assert centres and dictionary, "the memories must be part of the model's state_dict"
    assert int(saved[dictionary[0].replace("feats", "num_filled")]) > 0  # 4 steps filled it
    assert bool(saved[centres[0].replace("centres.centres", "centres.initialized")].any())
    # the memories kept changing after the checkpoint: resuming must go back to the checkpoint's
    live = trainer.model.state_dict()
    assert not torch.equal(live[dictionary[0]], saved[dictionary[0]])

    resumed = PersonSearchTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4
    restored = resumed.model.state_dict()
    assert restored.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(restored[key], value), key
    resumed.train()  # and it finishes (Detectron2's loop leaves iter one past the last iteration)
    assert resumed.iter == cfg.SOLVER.MAX_ITER
    assert os.path.isfile(os.path.join(str(tmp_path), "model_final.pth"))
