"""The re-id criterion of I-Net / DC-I-Net: selected losses plus the shared feature dictionary.

I-Net = OLP + HEP, DC-I-Net = OLP + C2HEP (Zhang et al., TPAMI 2020); any subset can be chosen
for ablations, and OIM (the field's baseline, :mod:`.oim`) can replace them for comparisons.
Only torch is used (no Detectron2): the ROI heads call it and report its metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .c2hep import C2HEPLoss
from .checks import check_pid_range, check_reid_inputs
from .hep import HEPLoss
from .memory import FeatureDictionary
from .oim import OIMLoss
from .olp import OLPLoss

logger = logging.getLogger(__name__)

__all__ = ["ReIDCriterion", "REID_LOSS_NAMES", "REID_LOSS_CLASSES"]

REID_LOSS_NAMES = ("olp", "hep", "c2hep", "oim")
#: The module class of each loss; ``ReIDCriterion``'s ``options[name]`` are its keyword arguments.
REID_LOSS_CLASSES = {"olp": OLPLoss, "hep": HEPLoss, "c2hep": C2HEPLoss, "oim": OIMLoss}


class ReIDCriterion(nn.Module):
    """Computes the selected re-id losses of a batch of Siamese pairs and maintains the memories.

    Sub-modules: ``dictionary`` (a :class:`FeatureDictionary`, shared by OLP and HEP; None when
    neither is selected), ``olp``, ``hep``, ``c2hep``, ``oim`` (None when not selected). The
    memories are buffers of these sub-modules, hence part of the owner's ``state_dict``.

    One call of :meth:`forward` in training mode:

    1. reads the dictionary as it was before this step;
    2. computes the selected losses (C2HEP initialises and updates its centres, see
       :class:`C2HEPLoss`; OIM updates its table and queue, see :class:`OIMLoss`);
    3. enqueues *all* given embeddings (labelled and unlabelled, detached) into the dictionary,
       all-gathered over the processes, so a step never sees its own embeddings as negatives.

    In eval mode no memory changes. Under ``torch.distributed`` steps 2 (C2HEP) and 3 are
    collective: every process must call ``forward`` at every training step, also with N = 0.
    The losses are computed in float32 with autocast disabled.

    Args:
        num_classes: number of labelled training identities C.
        dim: embedding dimension D.
        losses: the losses to compute, a subset of ``("olp", "hep", "c2hep", "oim")``.
        weights: loss name -> weight; a missing name weighs 1.0.
        dictionary_size: entries of the feature dictionary (paper: 4 x batch size; ours: a
            config key).
        options: loss name -> keyword arguments of its module (``REID_LOSS_CLASSES``), e.g.
            ``{"hep": {"pool_size": 500, "num_hard": 20}, "olp": {"scale": 10.0}}``; C and D
            come from ``num_classes`` and ``dim``. Options of a loss that is not selected are
            ignored; a missing option takes the module's default, a placeholder for direct use
            (the Detectron2 heads pass every value of the config:
            :func:`~dcinet_d2.modeling.build.build_reid_criterion`).
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        losses: Sequence[str] = ("olp", "hep"),
        weights: dict[str, float] | None = None,
        dictionary_size: int = 2048,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        super().__init__()
        losses = tuple(str(name).lower() for name in losses)
        unknown = set(losses) - set(REID_LOSS_NAMES)
        if unknown:
            raise ValueError(f"unknown re-id losses {sorted(unknown)}; known: {REID_LOSS_NAMES}")
        weights = {str(k).lower(): float(v) for k, v in (weights or {}).items()}
        unknown = set(weights) - set(REID_LOSS_NAMES)
        if unknown:
            raise ValueError(f"weights for unknown re-id losses {sorted(unknown)}")
        options = {str(k).lower(): dict(v) for k, v in (options or {}).items()}
        unknown = set(options) - set(REID_LOSS_NAMES)
        if unknown:
            raise ValueError(f"options for unknown re-id losses {sorted(unknown)}")
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.loss_names = tuple(name for name in REID_LOSS_NAMES if name in losses)
        self.weights = {name: weights.get(name, 1.0) for name in self.loss_names}

        uses_dict = "olp" in self.loss_names or "hep" in self.loss_names
        self.dictionary = FeatureDictionary(dictionary_size, dim) if uses_dict else None
        for name in REID_LOSS_NAMES:
            selected = name in self.loss_names
            setattr(self, name, self._build_loss(name, options.get(name, {})) if selected else None)
        logger.info(
            "ReIDCriterion: losses %s, weights %s, %d classes, dim %d",
            self.loss_names,
            self.weights,
            self.num_classes,
            self.dim,
        )

    def _build_loss(self, name: str, options: dict[str, Any]) -> nn.Module:
        """The module of loss ``name`` built with ``options`` (and C, D except for OLP)."""
        cls = REID_LOSS_CLASSES[name]
        shared = {} if name == "olp" else {"num_classes": self.num_classes, "dim": self.dim}
        clash = sorted(set(options) & {"num_classes", "dim"})
        if clash:
            raise ValueError(f"{name} options {clash}: set by the criterion's own arguments")
        try:
            return cls(**shared, **options)
        except TypeError as e:  # an option that is not an argument of the module
            raise ValueError(f"bad {name} options {sorted(options)} for {cls.__name__}: {e}") from e

    def forward(
        self,
        embeds: Tensor,
        pids: Tensor,
        image_ids: Tensor,
        num_images: int | None = None,
        check_pids: bool = True,
    ) -> tuple[dict[str, Tensor], dict[str, float | Tensor]]:
        """Re-id losses of one batch.

        Given ``num_images`` and ``check_pids=False`` (as the ROI heads call it), nothing here
        waits for the device on a single GPU: every shape is fixed by N, the dictionary size and
        C (dense masks), and the statistics stay on the device. Under ``torch.distributed`` the
        all-gathers of rows of varying count first exchange their sizes.

        Args:
            embeds: ``[N, D]`` L2-normalised embeddings of the batch's foreground proposals.
            pids: ``[N]`` long, identity 0..C-1, or -1 for an unlabelled person.
            image_ids: ``[N]`` long, index in the batch of each embedding's image; images
                ``2k`` and ``2k+1`` form a pair.
            num_images: images in the batch (None: read from ``image_ids``, a host read).
            check_pids: check the identities' range first (:func:`check_pid_range`, a host
                read, collective under ``torch.distributed``). The ROI heads pass False:
                :class:`~dcinet_d2.modeling.meta_arch.PersonSearchRCNN` checks the batch's
                identities on the host before the step.

        Returns:
            loss_dict: ``loss_olp`` / ``loss_hep`` / ``loss_c2hep`` / ``loss_oim`` (the selected),
                0-dim float32 tensors already multiplied by their weights; zero but connected
                to the graph when undefined (e.g. no labelled person).
            metrics: for logging, 0-dim tensors left on the device (reading them every step
                would make the host wait for the device; see
                :class:`~dcinet_d2.utils.periodic_means.PeriodicMeans`) or Python floats:
                ``reid/num_labelled``, ``reid/num_unlabelled``,
                ``reid/dict_fill`` (after this step's enqueue), ``reid/olp_num_pairs``,
                ``reid/olp_pos_sim``, ``reid/olp_neg_sim``, ``reid/hep_acc``,
                ``reid/hep_pool_size``, ``reid/c2hep_acc``, ``reid/c2hep_pool_size``,
                ``reid/oim_acc``, ``reid/oim_queue_fill``,
                ``reid/pool_size`` (mean of the selected pool losses' mean pool sizes). A metric
                that is undefined at this step (a mean over nothing) is NaN.
        """
        check_reid_inputs(embeds, pids, image_ids)
        if embeds.shape[1] != self.dim:
            raise ValueError(f"embeds must be [N, {self.dim}], got {tuple(embeds.shape)}")
        pids = pids.long()
        image_ids = image_ids.long()
        if check_pids:
            check_pid_range(pids, self.num_classes, collective=self.training)
        if num_images is None:
            num_images = int(image_ids.max()) + 1 if image_ids.numel() else 0
        num_pairs = (num_images + 1) // 2

        loss_dict: dict[str, Tensor] = {}
        labelled = (pids >= 0).sum()
        metrics: dict[str, float | Tensor] = {
            "reid/num_labelled": labelled,
            "reid/num_unlabelled": pids.numel() - labelled,
        }
        pool_sizes = []
        with torch.autocast(device_type=embeds.device.type, enabled=False):
            x = embeds.float()
            if self.dictionary is not None:
                dict_feats, dict_pids = self.dictionary.slots()  # empty slots: pid -2
            if self.olp is not None:
                loss, stats = self.olp(x, pids, image_ids, dict_feats, dict_pids)
                loss_dict["loss_olp"] = self.weights["olp"] * loss
                metrics["reid/olp_num_pairs"] = stats["num_terms"]
                metrics["reid/olp_pos_sim"] = stats["pos_sim"]
                metrics["reid/olp_neg_sim"] = stats["neg_sim"]
            if self.hep is not None:
                loss, stats = self.hep(x, pids, image_ids, dict_feats, dict_pids, num_pairs)
                loss_dict["loss_hep"] = self.weights["hep"] * loss
                metrics["reid/hep_acc"] = stats["acc"]
                metrics["reid/hep_pool_size"] = stats["pool_size"]
                pool_sizes.append(stats["pool_size"])
            if self.c2hep is not None:
                loss, stats = self.c2hep(x, pids, image_ids, num_pairs)
                loss_dict["loss_c2hep"] = self.weights["c2hep"] * loss
                metrics["reid/c2hep_acc"] = stats["acc"]
                metrics["reid/c2hep_pool_size"] = stats["pool_size"]
                pool_sizes.append(stats["pool_size"])
            if self.oim is not None:
                loss, stats = self.oim(x, pids, image_ids)
                loss_dict["loss_oim"] = self.weights["oim"] * loss
                metrics["reid/oim_acc"] = stats["acc"]
                metrics["reid/oim_queue_fill"] = stats["queue_fill"]
            if self.dictionary is not None:
                if self.training:
                    self.dictionary.enqueue(x.detach(), pids)
                metrics["reid/dict_fill"] = self.dictionary.fill_ratio()
        if pool_sizes:
            metrics["reid/pool_size"] = sum(pool_sizes) / len(pool_sizes)
        return loss_dict, metrics

    def extra_repr(self) -> str:
        return f"losses={self.loss_names}, weights={self.weights}"
