"""Resume from damage (issue 12, items 2 and 3), with real checkpoint files on disk.

One short training run (the quick DC-I-Net schedule: 8 iterations, a checkpoint every 4) is made
once; every test copies its output folder and damages the copy.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from torch import nn

from dcinet_d2.engine import PersonSearchTrainer
from dcinet_d2.engine.checkpoint import (
    NoIntactCheckpointError,
    PersonSearchCheckpointer,
    checkpoint_candidates,
)

from ..engine.common import quick_cfg
from .common import captured_log


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("trained"))
    cfg = quick_cfg("dcinet", out, "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()")
    trainer = PersonSearchTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return out


def _copy(trained_dir, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(trained_dir, out)
    return out


def _resume(out, *overrides):
    cfg = quick_cfg("dcinet", out, "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()", *overrides)
    trainer = PersonSearchTrainer(cfg)
    trainer.resume_or_load(resume=True)
    return trainer


def _truncate(path, keep=1000):
    with open(path, "r+b") as f:
        f.truncate(keep)


def test_the_run_wrote_what_the_tests_damage(trained_dir):
    files = sorted(f for f in os.listdir(trained_dir) if f.endswith(".pth"))
    assert files == ["model_0000003.pth", "model_0000007.pth", "model_final.pth"]
    with open(os.path.join(trained_dir, "last_checkpoint")) as f:
        assert f.read() == "model_final.pth"
    # atomic writes leave no temporary file behind
    assert not [f for f in os.listdir(trained_dir) if f.endswith(".tmp")]


def test_truncated_last_checkpoint_falls_back_to_the_newest_intact_one(trained_dir, tmp_path):
    out = _copy(trained_dir, tmp_path)
    _truncate(os.path.join(out, "model_final.pth"))
    _truncate(os.path.join(out, "model_0000007.pth"))
    expected = torch.load(os.path.join(out, "model_0000003.pth"), map_location="cpu")["model"]
    with captured_log() as log:
        trainer = _resume(out)
    assert trainer.checkpointer.resumed_from == os.path.join(out, "model_0000003.pth")
    assert trainer.start_iter == 4  # model_0000003 holds iteration 3
    state = trainer.model.state_dict()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    message = log.text()
    assert "model_final.pth (unreadable" in message and "model_0000007.pth (unreadable" in message


@pytest.mark.parametrize("content", ["", "model_0001234.pth"], ids=["empty", "missing-file"])
def test_last_checkpoint_empty_or_naming_a_missing_file(trained_dir, tmp_path, content):
    out = _copy(trained_dir, tmp_path)
    with open(os.path.join(out, "last_checkpoint"), "w") as f:
        f.write(content)
    with captured_log() as log:
        trainer = _resume(out)
    # the newest intact file is model_final.pth (iteration 7)
    assert trainer.checkpointer.resumed_from == os.path.join(out, "model_final.pth")
    assert trainer.start_iter == 8
    message = log.text()
    assert ("(empty)" if content == "" else "model_0001234.pth (no such file)") in message


def test_no_intact_checkpoint_is_a_clear_error(trained_dir, tmp_path):
    out = _copy(trained_dir, tmp_path)
    for f in os.listdir(out):
        if f.endswith(".pth"):
            _truncate(os.path.join(out, f), keep=10)
    with pytest.raises(NoIntactCheckpointError, match="no intact checkpoint.*model_0000003.pth"):
        _resume(out)


def test_half_loaded_dictionary_is_reset_whole(trained_dir, tmp_path):
    """Resuming with another DICTIONARY_SIZE: the saved feats/pids do not fit; before, ptr and
    num_filled were loaded anyway (fill_ratio could exceed 1)."""
    out = _copy(trained_dir, tmp_path)
    saved = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu")["model"]
    prefix = next(k for k in saved if k.endswith("dictionary.num_filled"))[: -len("num_filled")]
    assert int(saved[prefix + "num_filled"]) > 16  # the saved dictionary was filled beyond 16
    with captured_log() as log:
        trainer = _resume(out, "MODEL.REID.DICTIONARY_SIZE", "16")
    dictionary = trainer.model.get_submodule(prefix.rstrip("."))
    assert dictionary.size == 16
    assert int(dictionary.num_filled) == 0 and int(dictionary.ptr) == 0
    assert dictionary.fill_ratio() == 0.0
    assert bool((dictionary.pids == -2).all())
    # the class centres have the same shape: they are restored as saved
    centres = next(k for k in saved if k.endswith("centres.centres"))
    assert torch.equal(trainer.model.state_dict()[centres], saved[centres])
    assert "none is loaded" in log.text()


def test_checkpoint_candidates_order(tmp_path):
    # written in this order (a run resumed with a larger MAX_ITER writes model_0001499 last)
    for age, name in enumerate(
        ["model_0001499.pth", "model_final.pth", "model_0000999.pth", "other.pth", "x.txt"]
    ):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (1_000_000 - age, 1_000_000 - age))
    order = [os.path.basename(p) for p in checkpoint_candidates(str(tmp_path), "")]
    assert order == ["model_0001499.pth", "model_final.pth", "model_0000999.pth", "other.pth"]
    named = str(tmp_path / "model_0000999.pth")
    order = [os.path.basename(p) for p in checkpoint_candidates(str(tmp_path), named)]
    assert order == ["model_0000999.pth", "model_0001499.pth", "model_final.pth", "other.pth"]


def test_backbone_file_is_not_resumed_and_stale_temporaries_are_removed(trained_dir, tmp_path):
    out = _copy(trained_dir, tmp_path)
    for f in os.listdir(out):
        if f.endswith(".pth"):
            _truncate(os.path.join(out, f))
    torch.save(
        {"model": {}}, os.path.join(out, "backbone.pth")
    )  # no 'iteration': not a run's state
    with open(os.path.join(out, ".model_0000011.pth.abc.tmp"), "wb") as f:
        f.write(b"half a checkpoint")
    with pytest.raises(NoIntactCheckpointError, match=r"backbone.pth \(not a training checkpoint"):
        _resume(out)
    assert not os.path.exists(os.path.join(out, ".model_0000011.pth.abc.tmp"))


def test_files_are_readable_as_plain_writes_would_be(trained_dir):
    umask = os.umask(0)
    os.umask(umask)
    for f in ("model_final.pth", "last_checkpoint"):
        assert os.stat(os.path.join(trained_dir, f)).st_mode & 0o777 == 0o666 & ~umask


def test_save_replaces_atomically(tmp_path, monkeypatch):
    """A save that dies while writing leaves the previous file intact and no temporary file."""
    model = nn.Linear(2, 2)
    ckpt = PersonSearchCheckpointer(model, str(tmp_path), save_to_disk=True)
    ckpt.save("model_0000000")
    before = (tmp_path / "model_0000000.pth").read_bytes()

    def dying_save(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000000")
    assert (tmp_path / "model_0000000.pth").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000000.pth"]
