"""A Detectron2 checkpointer that writes atomically and resumes from the newest intact checkpoint.

Detectron2's :class:`DetectionCheckpointer` writes ``model_XXXXXXX.pth`` and ``last_checkpoint``
in place: a process killed while writing leaves a truncated file that ``--resume`` then fails
on, although an intact earlier checkpoint sits next to it. :class:`PersonSearchCheckpointer`

- writes every file to a temporary name in the same folder, flushes it to disk and renames it
  (``os.replace``: atomic on POSIX and Windows), so a checkpoint file is either whole or absent;
- on resume, tries the file that ``last_checkpoint`` names and then the other training
  checkpoints (``*.pth`` holding an ``iteration``) of the output folder, newest first, and loads
  the first one that reads; each one skipped is named in a warning with the reason. The first
  process chooses, every process loads that file;
- remembers which model keys a load left missing (:attr:`last_missing_keys`) and which had
  another shape in the file (:attr:`last_incorrect_shapes`; Detectron2 skips those with a
  warning), so that ``--eval-only`` and the predictor can refuse weights that do not hold the
  trained model (:meth:`untrained_parameters_error`);
- given the config, stores under the key ``"dcinet_d2"`` what inference needs besides the weights
  (the config as YAML with ``MODEL.REID.NUM_IDS`` resolved, the embedding size), so that a
  checkpoint alone builds its model anywhere, without the training set
  (:func:`dcinet_d2.search.predictor.inference_config`).

Remote paths (anything ``PathManager`` handles but the local file system does not) are written
the way Detectron2 does.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.utils import comm

from ..data.identities import num_train_identities
from ..utils.files import atomic_write

__all__ = [
    "PersonSearchCheckpointer",
    "NoIntactCheckpointError",
    "checkpoint_candidates",
    "inference_metadata",
    "METADATA_KEY",
]
logger = logging.getLogger(__name__)


#: Key of a checkpoint holding :func:`inference_metadata`.
METADATA_KEY = "dcinet_d2"


def inference_metadata(cfg: CfgNode) -> dict[str, Any]:
    """What a checkpoint of a model built from ``cfg`` needs to be used for inference alone:
    ``{"config": YAML with NUM_IDS resolved, "num_ids": C, "embed_dim": D, "version": 1}``."""
    cfg = cfg.clone()
    cfg.defrost()
    num_ids = num_train_identities(cfg) if cfg.MODEL.META_ARCHITECTURE == "PersonSearchRCNN" else 0
    cfg.MODEL.REID.NUM_IDS = num_ids
    return {
        "version": 1,
        "config": cfg.dump(),
        "num_ids": num_ids,
        "embed_dim": int(cfg.MODEL.REID.EMBED_DIM),
    }


class NoIntactCheckpointError(RuntimeError):
    """``--resume`` found checkpoints, but none of them could be read."""


def checkpoint_candidates(save_dir: str, named: str) -> list[str]:
    """The ``*.pth`` files of ``save_dir`` in the order resume tries them.

    ``named`` (the file ``last_checkpoint`` names, "" when none) comes first; then the other files
    newest first by modification time (a run resumed with a larger ``MAX_ITER`` writes
    ``model_0001499.pth`` after the earlier ``model_final.pth``), then by name.
    """
    try:
        files = [os.path.join(save_dir, f) for f in os.listdir(save_dir) if f.endswith(".pth")]
    except FileNotFoundError:
        files = []
    files = [f for f in files if os.path.isfile(f)]
    ordered = sorted(files, key=lambda f: (-os.path.getmtime(f), os.path.basename(f)))
    if named:
        ordered = [named] + [f for f in ordered if os.path.abspath(f) != os.path.abspath(named)]
    return ordered


def _remove_stale_temporaries(save_dir: str) -> None:
    """Remove what a write killed half-way left (``.<name>.<random>.tmp``)."""
    for name in os.listdir(save_dir):
        if name.startswith(".") and name.endswith(".tmp"):
            try:
                os.remove(os.path.join(save_dir, name))
                logger.info("Removed %s (left by an interrupted checkpoint write)", name)
            except OSError:
                pass


class PersonSearchCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` with atomic writes and a resume that skips damaged files."""

    def __init__(self, *args, cfg: CfgNode | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.metadata = inference_metadata(cfg) if cfg is not None else None
        self.last_missing_keys: list[str] = []
        self.last_incorrect_shapes: list[tuple[str, tuple, tuple]] = []
        self.resumed_from = ""
        self.loaded_model = False
        self._preloaded: tuple[str, Any] | None = None

    # ------------------------------------------------------------------------------------ writing
    def _is_local(self) -> bool:
        return os.path.isdir(self.save_dir)

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._is_local():
            if self.metadata is not None:
                kwargs.setdefault(METADATA_KEY, self.metadata)
            super().save(name, **kwargs)
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        if self.metadata is not None:
            data[METADATA_KEY] = self.metadata
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._is_local():
            super().tag_last_checkpoint(last_filename_basename)
            return
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode()),
        )

    # ------------------------------------------------------------------------------------ reading
    def _load_file(self, filename: str) -> Any:
        if self._preloaded is not None and self._preloaded[0] == filename:
            checkpoint = self._preloaded[1]
            self._preloaded = None
            return checkpoint
        return super()._load_file(filename)

    def _load_model(self, checkpoint: Any):
        self.loaded_model = True
        incompatible = super()._load_model(checkpoint)
        self.last_missing_keys = list(incompatible.missing_keys)
        self.last_incorrect_shapes = list(incompatible.incorrect_shapes)
        return incompatible

    def untrained_parameters_error(self, source: str) -> str:
        """Why the last load left some of the model's parameters untrained, or "" if it did not.

        A parameter whose shape in the file differs from the model's (a config other than the
        one the weights were trained with, e.g. ``MODEL.REID.EMBED_STRIPES`` or ``EMBED_DIM``)
        is named first, with both shapes; then the parameters the file holds no value for.
        """
        parameters = {name for name, _ in self.model.named_parameters()}
        shapes = [x for x in self.last_incorrect_shapes if x[0] in parameters]
        if shapes:
            key, in_file, in_model = shapes[0]
            return (
                f"'{source}' holds {len(shapes)} of the model's parameters with another shape "
                f"(e.g. {key}: {tuple(in_file)} in the file, {tuple(in_model)} in the model): "
                "the config differs from the one the weights were trained with (e.g. "
                "MODEL.REID.EMBED_STRIPES, MODEL.REID.EMBED_DIM); use the run's config.yaml"
            )
        untrained = [k for k in self.last_missing_keys if k in parameters]
        if untrained:
            return (
                f"'{source}' holds no value for {len(untrained)} of the model's parameters "
                f"(e.g. {', '.join(untrained[:3])})"
            )
        return ""

    def _read_intact(self, path: str, need_iteration: bool = False) -> tuple[Any, str]:
        """``(checkpoint, "")`` when ``path`` reads as a checkpoint (of a training run, with its
        ``iteration``, when ``need_iteration``), else ``(None, reason)``."""
        if not os.path.isfile(path):
            return None, "no such file"
        try:
            checkpoint = super()._load_file(path)
        except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
            return None, f"unreadable ({type(e).__name__}: {e})".splitlines()[0]
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
            return None, "holds no 'model' state dict"
        if need_iteration and "iteration" not in checkpoint:
            return None, "not a training checkpoint (no 'iteration')"
        return checkpoint, ""

    def newest_intact_checkpoint(self) -> str:
        """The checkpoint that resume loads (see the module docstring); "" when there is none.

        Files other than the one ``last_checkpoint`` names must be training checkpoints (hold an
        ``iteration``), so that a copied backbone file is never taken for a run's state.

        Raises:
            NoIntactCheckpointError: ``*.pth`` files exist (or ``last_checkpoint`` names one), but
                none of them reads.
        """
        named = self.get_checkpoint_file() if self.has_checkpoint() else ""
        notes = []
        if named and os.path.abspath(named) == os.path.abspath(self.save_dir):
            notes.append(f"{os.path.join(self.save_dir, 'last_checkpoint')} (empty)")
            named = ""  # an empty last_checkpoint names the folder itself
        skipped = []
        for path in checkpoint_candidates(self.save_dir, named):
            checkpoint, reason = self._read_intact(path, need_iteration=path != named)
            if checkpoint is None:
                skipped.append(f"{path} ({reason})")
                continue
            if notes or skipped:
                logger.warning("Resuming from %s; skipped: %s", path, "; ".join(notes + skipped))
            self._preloaded = (path, checkpoint)
            return path
        if skipped:
            raise NoIntactCheckpointError(
                f"--resume: no intact checkpoint in {self.save_dir}; skipped: "
                f"{'; '.join(notes + skipped)}. Remove the damaged files to start over, or restore "
                "an intact checkpoint."
            )
        if notes:
            logger.warning(
                "--resume: %s and no checkpoint file; starting from MODEL.WEIGHTS", notes[0]
            )
        return ""

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        """As Detectron2's, resuming from :meth:`newest_intact_checkpoint` (chosen on the first
        process and shared, so that every process resumes from the same file); sets
        :attr:`resumed_from` (the file resumed from, "" when training starts from ``path``)."""
        self.resumed_from = ""
        if resume and not self._is_local():  # remote folders: Detectron2's own resume
            if self.has_checkpoint():
                self.resumed_from = self.get_checkpoint_file()
                return self.load(self.resumed_from)
            return self.load(path, checkpointables=[])
        if resume:
            chosen, error = "", ""
            if comm.is_main_process():
                _remove_stale_temporaries(self.save_dir)
                try:
                    chosen = self.newest_intact_checkpoint()
                except NoIntactCheckpointError as e:
                    error = str(e)
            if comm.get_world_size() > 1:
                chosen, error = comm.all_gather((chosen, error))[0]
            if error:
                raise NoIntactCheckpointError(error)
            if chosen and not self.has_checkpoint():
                logger.warning(
                    "--resume: %s has no last_checkpoint (killed before writing it?); "
                    "resuming from %s",
                    self.save_dir,
                    chosen,
                )
            self.resumed_from = chosen
            if chosen:
                return self.load(chosen)
        return self.load(path, checkpointables=[])

    def load(self, path: str, *args, **kwargs) -> dict[str, Any]:
        """As Detectron2's; :attr:`loaded_model` tells whether a model state was loaded."""
        self.loaded_model = False
        return super().load(path, *args, **kwargs)
