"""Online instance matching (OIM) loss: the baseline of every person-search paper.

Xiao et al., "Joint Detection and Identification Feature Learning for Person Search" (CVPR 2017),
as used by NAE, SeqNet and COAT. Not part of I-Net / DC-I-Net: it is here so that both models can
be compared with the field's standard in the same pipeline (``MODEL.REID.LOSSES: ["oim"]``).

* A look-up table ``lut`` ``[C, D]`` holds one feature per labelled identity and a circular queue
  ``queue`` ``[Q, D]`` the features of recent unlabelled persons. Both are buffers (no gradient).
* Logits of an embedding x: ``scale * x . [lut; queue]``; each *labelled* embedding contributes
  the cross-entropy of its identity over the C + Q rows; unlabelled embeddings give no loss. The
  loss is the mean over the labelled embeddings.
* After the loss, per labelled sample in order: ``lut[y] <- normalize(m lut[y] + (1 - m) x)``;
  the unlabelled samples are pushed into the queue (oldest overwritten first).

References use ``scale`` 30 (SeqNet, NAE) or 10 (OIM) and ``m`` 0.5. One departure, ours: the
softmax covers the queue slots that hold a feature, not the empty (all-zero) slots of a queue that
is still filling; the references keep those in the denominator with logit 0.

Only torch is used (no Detectron2). Under ``torch.distributed`` the update all-gathers the
features of all processes first (rank order), so the buffers stay identical everywhere; every
process must call ``forward`` at every training step, also with no embedding.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ...utils.distributed import all_gather_rows
from .checks import check_reid_inputs
from .memory import FeatureDictionary, WholeStateMemory, momentum_update_in_order

logger = logging.getLogger(__name__)

__all__ = ["OIMLoss"]


class OIMLoss(WholeStateMemory):
    """OIM loss; owns the look-up table (``lut``) and the unlabelled queue (``queue``).

    Args:
        num_classes: number of labelled training identities C.
        dim: embedding dimension D.
        queue_size: Q, unlabelled features kept (SeqNet: 5,000 on CUHK-SYSU, 500 on PRW).
        scale: logit scale (1 / temperature; SeqNet / NAE: 30).
        momentum: weight of the old table row in the update (OIM: 0.5).
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        queue_size: int = 5000,
        scale: float = 30.0,
        momentum: float = 0.5,
    ):
        super().__init__()
        if num_classes <= 0 or dim <= 0 or queue_size <= 0 or scale <= 0:
            raise ValueError(
                f"OIMLoss: bad arguments num_classes={num_classes} dim={dim} "
                f"queue_size={queue_size} scale={scale}"
            )
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"OIMLoss: momentum must be in [0, 1], got {momentum}")
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.scale = float(scale)
        self.momentum = float(momentum)
        self.register_buffer("lut", torch.zeros(self.num_classes, self.dim))
        # The queue: a ring buffer of unlabelled features (their pids are all -1).
        self.queue = FeatureDictionary(queue_size, dim)

    @torch.no_grad()
    def reset(self) -> None:
        """Forget the look-up table (the queue is a memory of its own, loaded or reset alone)."""
        self.lut.zero_()

    def forward(self, embeds: Tensor, pids: Tensor, image_ids: Tensor) -> tuple[Tensor, dict]:
        """OIM loss of a batch, then (training) the table and queue update.

        Args:
            embeds: ``[N, D]`` L2-normalised embeddings.
            pids: ``[N]`` long, 0..C-1 or -1 (unlabelled).
            image_ids: ``[N]`` long (not used by OIM; checked for shape like the other losses).

        Returns:
            loss: 0-dim float32 tensor (zero, connected to the graph, without a labelled
                embedding).
            stats: ``acc`` (labelled embeddings whose arg-max row is their own table row; NaN
                without any) and ``queue_fill``, 0-dim tensors left on the device;
                ``num_labelled``, a Python float.
        """
        check_reid_inputs(embeds, pids, image_ids)
        if embeds.shape[1] != self.dim:
            raise ValueError(f"embeds must be [N, {self.dim}], got {tuple(embeds.shape)}")
        pids = pids.long()
        if pids.numel() and int(pids.max()) >= self.num_classes:
            raise ValueError(f"identity {int(pids.max())} >= num_classes {self.num_classes}")
        x = embeds.float()
        labelled = pids >= 0
        target = pids[labelled]
        num_labelled = target.numel()  # a shape, known to the host after the indexing
        queue_feats, _ = self.queue.entries()
        if num_labelled:
            rows = torch.cat([self.lut, queue_feats.to(self.lut.device)]).to(x.device)
            logits = self.scale * x[labelled] @ rows.t()  # [L, C + Q']
            loss = F.cross_entropy(logits, target)
            acc = (logits.detach().argmax(dim=1) == target).float().mean()
        else:
            loss = embeds.sum() * 0.0
            acc = x.new_full((), math.nan)
        if self.training:
            feats_all, pids_all = all_gather_rows(x.detach(), pids)
            momentum_update_in_order(self.lut, feats_all, pids_all, self.momentum)
            unlabelled = pids_all < 0
            self.queue.enqueue(feats_all[unlabelled], pids_all[unlabelled], sync=False)
        stats = {
            "acc": acc,
            "num_labelled": float(num_labelled),
            "queue_fill": self.queue.fill_ratio(),
        }
        return loss, stats

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, queue_size={self.queue.size}, "
            f"scale={self.scale}, momentum={self.momentum}"
        )
