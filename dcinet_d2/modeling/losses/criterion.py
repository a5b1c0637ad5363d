"""The re-id criterion of I-Net / DC-I-Net: selected losses plus the shared feature dictionary.

I-Net = OLP + HEP, DC-I-Net = OLP + C2HEP (Zhang et al., TPAMI 2020); any subset can be chosen
for ablations, and OIM (the field's baseline, :mod:`.oim`) can replace them for comparisons.
Only torch is used (no Detectron2): the ROI heads call it and report its metrics.
"""
import logging
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ...utils.distributed import get_rank, is_distributed
from ..memory import FeatureDictionary
from .c2hep import C2HEPLoss
from .hep import HEPLoss
from .oim import OIMLoss
from .olp import OLPLoss, check_reid_inputs

logger = logging.getLogger(__name__)

__all__ = ["ReIDCriterion", "REID_LOSS_NAMES", "check_pid_range"]

REID_LOSS_NAMES = ("olp", "hep", "c2hep", "oim")


def check_pid_range(pids: Tensor, num_classes: int, collective: bool = True) -> None:
    """Raise when an identity lies outside ``[-1, num_classes - 1]``, on every process at once.

    Under ``torch.distributed`` (and ``collective``) the processes first agree on the global range
    with one all-reduce of two numbers, so a bad identity on one process makes every process raise
    here, instead of one raising and the others waiting in the memories' all-gather until the
    process group's timeout. Every process must then call it, as it calls the memories' updates.
    ``pids`` may live on the CPU (PersonSearchRCNN checks a batch's ``gt_pids`` before moving
    them to the device: no wait for the device without ``torch.distributed``).
    """
    if pids.numel():
        low_high = torch.stack([-pids.min(), pids.max()]).long()
    else:
        low_high = torch.tensor([1, -1], dtype=torch.long, device=pids.device)
    distributed = collective and is_distributed()
    if distributed:
        if dist.get_backend() == "nccl":  # NCCL reduces CUDA tensors only
            low_high = low_high.to(torch.device("cuda", torch.cuda.current_device()))
        local = low_high.clone()
        dist.all_reduce(low_high, op=dist.ReduceOp.MAX)
    low, high = -int(low_high[0]), int(low_high[1])
    if low < -1 or high >= num_classes:
        where = ""
        if distributed:
            here = (-int(local[0]) < -1) or int(local[1]) >= num_classes
            where = f" (on {'this' if here else 'another'} process; rank {get_rank()})"
        raise ValueError(
            f"identities (pids) must be in [-1, {num_classes - 1}], got [{low}, {high}]{where}; "
            f"C = {num_classes} is MODEL.REID.NUM_IDS, or the training sets' num_train_ids when "
            "NUM_IDS is 0"
        )


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
        olp_scale: OLP scale s (paper: 1, none written; ours: config key).
        hep_pool_size: HEP label pool size M (ours: config key).
        hep_num_hard: hardest labelled negatives per anchor in HEP (paper: 20).
        hep_scale: HEP logit scale (ours: config key).
        c2hep_pool_size: C2HEP pool size (ours: config key).
        c2hep_num_hard: hardest classes per anchor in C2HEP (ours: config key).
        c2hep_scale: C2HEP logit scale (ours: config key).
        c2hep_momentum: momentum of the class centres (ours: config key).
        olp_term_weight: weighting of the OLP terms (``"pair"``, ``"anchor"``, ``"identity"``;
            ours: config key, see :func:`~.olp.olp_loss`).
        c2hep_update: class-centre update rule (``"batch_mean"`` or ``"per_sample"``; ours).
        oim_queue_size: OIM's queue of unlabelled features.
        oim_scale: OIM's logit scale.
        oim_momentum: OIM's look-up table momentum.

    The defaults of the "ours" values are placeholders for direct use of this module; the
    Detectron2 heads pass the values of the config.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        losses: Sequence[str] = ("olp", "hep"),
        weights: Optional[Dict[str, float]] = None,
        dictionary_size: int = 2048,
        olp_scale: float = 10.0,
        hep_pool_size: int = 500,
        hep_num_hard: int = 20,
        hep_scale: float = 10.0,
        c2hep_pool_size: int = 500,
        c2hep_num_hard: int = 20,
        c2hep_scale: float = 10.0,
        c2hep_momentum: float = 0.5,
        olp_term_weight: str = "pair",
        c2hep_update: str = "batch_mean",
        oim_queue_size: int = 5000,
        oim_scale: float = 30.0,
        oim_momentum: float = 0.5,
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
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.loss_names = tuple(name for name in REID_LOSS_NAMES if name in losses)
        self.weights = {name: weights.get(name, 1.0) for name in self.loss_names}

        uses_dict = "olp" in self.loss_names or "hep" in self.loss_names
        self.dictionary = FeatureDictionary(dictionary_size, dim) if uses_dict else None
        self.olp = OLPLoss(olp_scale, olp_term_weight) if "olp" in self.loss_names else None
        self.hep = (
            HEPLoss(num_classes, dim, hep_pool_size, hep_num_hard, hep_scale)
            if "hep" in self.loss_names
            else None
        )
        self.c2hep = (
            C2HEPLoss(
                num_classes,
                dim,
                c2hep_pool_size,
                c2hep_num_hard,
                c2hep_scale,
                c2hep_momentum,
                update=c2hep_update,
            )
            if "c2hep" in self.loss_names
            else None
        )
        self.oim = (
            OIMLoss(num_classes, dim, oim_queue_size, oim_scale, oim_momentum)
            if "oim" in self.loss_names
            else None
        )
        logger.info(
            "ReIDCriterion: losses %s, weights %s, %d classes, dim %d",
            self.loss_names,
            self.weights,
            self.num_classes,
            self.dim,
        )

    def forward(
        self,
        embeds: Tensor,
        pids: Tensor,
        image_ids: Tensor,
        num_images: Optional[int] = None,
        check_pids: bool = True,
    ) -> Tuple[Dict[str, Tensor], Dict[str, Union[float, Tensor]]]:
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

        loss_dict: Dict[str, Tensor] = {}
        labelled = (pids >= 0).sum()
        metrics: Dict[str, Union[float, Tensor]] = {
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
