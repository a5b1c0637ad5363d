"""Hard example priority (HEP) softmax loss of I-Net (Zhang et al., TPAMI 2020).

Re-id as classification over the C labelled training identities with a learned classifier, where
the softmax of each labelled embedding runs only over the *label pool* of its Siamese pair: the
pair's identities, the ``num_hard`` hardest negative classes of each anchor (ranked by their most
similar entry of the dynamic feature dictionary), random other identities up to ``pool_size``
(:mod:`.pools`, shared with C2HEP).

Only torch is used (no Detectron2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pools import PooledSoftmaxLoss, class_hardness

__all__ = ["HEPLoss"]


class HEPLoss(PooledSoftmaxLoss):
    """HEP loss with a learned classifier (I-Net).

    The classifier weight ``weight`` ``[C, D]`` is a Parameter. Ours: the weights are
    L2-normalised in the logits, ``logits = scale * cos(x, w_c)``, the same form as OLP and
    C2HEP; initialised from N(0, 0.01^2) (only the direction matters). Hard negatives come from
    the feature dictionary (the same one as OLP).

    Args:
        num_classes: number of labelled training identities C.
        dim: embedding dimension D.
        pool_size, num_hard, scale, generator: see :class:`~.pools.PooledSoftmaxLoss`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.dim))
        nn.init.normal_(self.weight, std=0.01)

    def forward(
        self,
        embeds: Tensor,
        pids: Tensor,
        image_ids: Tensor,
        dict_feats: Tensor,
        dict_pids: Tensor,
        num_pairs: int | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """HEP loss of a batch of pairs.

        Args:
            embeds: ``[N, D]`` L2-normalised embeddings.
            pids: ``[N]`` long, 0..C-1 or -1 (unlabelled).
            image_ids: ``[N]`` long, image index in the batch (pairs ``2k``, ``2k+1``).
            dict_feats: ``[K, D]`` feature dictionary slots.
            dict_pids: ``[K]`` long, their identities (-2: an empty slot, ignored).
            num_pairs: pairs in the batch (None: read from ``image_ids``, a host read).

        Returns:
            loss (0-dim) and stats (``acc``, ``pool_size``, ``num_labelled``), see
            :func:`pooled_cross_entropy`.
        """
        weight = F.normalize(self.weight, dim=1)
        hardness = class_hardness(embeds, dict_feats, dict_pids, self.num_classes)
        return self.pooled_loss(embeds, pids, image_ids, weight, hardness, None, num_pairs)
