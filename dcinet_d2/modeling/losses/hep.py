"""Hard example priority (HEP) softmax loss of I-Net (Zhang et al., TPAMI 2020).

Re-id as classification over the C labelled training identities, where the softmax of each
labelled embedding runs only over the *label pool* of its Siamese pair:

1. the labelled identities present in the pair (both images);
2. the ``num_hard`` hardest negative *classes* of each labelled anchor of the pair (paper: top
   20 hard categories): classes ranked by their most similar entry of the dynamic feature
   dictionary (:func:`hard_negative_identities`);
3. random other identities, until the pool holds ``pool_size`` (paper: a preset size M; ours:
   a config key). Groups 1 and 2 are never truncated, so a pool may exceed ``pool_size``.

The pool construction (:func:`build_label_pool`) and the pooled cross-entropy
(:func:`pooled_cross_entropy`) are pure functions, shared with C2HEP.

Only torch is used (no Detectron2).
"""
import logging
import math
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .olp import check_reid_inputs

logger = logging.getLogger(__name__)

__all__ = ["build_label_pool", "hard_negative_identities", "pooled_cross_entropy", "HEPLoss"]


def hard_negative_identities(
    anchor_feats: Tensor,
    anchor_pids: Tensor,
    cand_feats: Tensor,
    cand_pids: Tensor,
    num_hard: int,
) -> Tensor:
    """The ``num_hard`` hardest negative *classes* of each anchor (paper: hard categories).

    A class is a labelled negative of an anchor when some candidate has that pid (>= 0) and the
    pid differs from the anchor's. The hardness of a class for an anchor is the dot product of
    its *most similar* candidate; per anchor the ``min(num_hard, #negative classes)`` classes of
    highest hardness are taken. Ranking entries instead would let the many dictionary entries of
    one person fill the top ``num_hard`` alone (they often span 1-3 identities).

    Args:
        anchor_feats: ``[A, D]`` anchor embeddings.
        anchor_pids: ``[A]`` long, their identities (>= 0).
        cand_feats: ``[K, D]`` candidate embeddings (dictionary entries or class centres).
        cand_pids: ``[K]`` long, their identities (-1 / -2 never count as negatives).
        num_hard: number of hardest negative classes per anchor (>= 0).

    Returns:
        ``[H]`` long, the sorted distinct identities of the union over the anchors.
    """
    empty = anchor_pids.new_zeros(0)
    if num_hard <= 0 or anchor_feats.shape[0] == 0 or cand_feats.shape[0] == 0:
        return empty
    cand_pids = cand_pids.to(anchor_pids.device)
    labelled = cand_pids >= 0  # none labelled: no class, an empty top-0 below (no host read)
    classes, cand_class = torch.unique(cand_pids[labelled], sorted=True, return_inverse=True)
    cands = cand_feats.detach().float().to(anchor_feats.device)[labelled]
    sims = anchor_feats.detach().float() @ cands.t()  # [A, K']
    # Hardness of each class for each anchor: the similarity of its most similar candidate.
    hardness = sims.new_full((sims.shape[0], classes.numel()), float("-inf"))
    hardness = hardness.scatter_reduce(
        1, cand_class[None, :].expand_as(sims), sims, reduce="amax", include_self=True
    )  # [A, U]
    hardness = hardness.masked_fill(classes[None, :] == anchor_pids[:, None], float("-inf"))
    top, top_idx = hardness.topk(min(num_hard, classes.numel()), dim=1)  # [A, k]
    return torch.unique(classes[top_idx][torch.isfinite(top)], sorted=True)


def build_label_pool(
    anchor_feats: Tensor,
    anchor_pids: Tensor,
    cand_feats: Tensor,
    cand_pids: Tensor,
    num_classes: int,
    pool_size: int,
    num_hard: int,
    fill_from: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Label pool of one Siamese pair.

    pool = (identities of the pair's labelled embeddings)
    ∪ :func:`hard_negative_identities` of those embeddings among the candidates
    ∪ identities drawn uniformly without replacement from ``fill_from`` (all classes
    ``0..num_classes-1`` if None) minus the above, until the pool holds ``pool_size``
    identities or the source is exhausted. The first two groups are never truncated.

    Args:
        anchor_feats: ``[A, D]`` the labelled embeddings of the pair.
        anchor_pids: ``[A]`` long, their identities (0..C-1).
        cand_feats: ``[K, D]`` candidates for the hard negatives (HEP: the feature dictionary;
            C2HEP: the initialised class centres).
        cand_pids: ``[K]`` long, the candidates' identities.
        num_classes: C.
        pool_size: preset pool size M.
        num_hard: hardest negatives per anchor.
        fill_from: optional ``[F]`` long, the identities the random filling may draw.
        generator: optional CPU ``torch.Generator`` for the random filling.

    Returns:
        ``[P]`` long, the sorted distinct identities of the pool, on ``anchor_pids.device``.
    """
    device = anchor_pids.device
    hard = hard_negative_identities(anchor_feats, anchor_pids, cand_feats, cand_pids, num_hard)
    pool = torch.unique(torch.cat([anchor_pids.long(), hard.long()]), sorted=True)
    num_fill = pool_size - pool.numel()
    if num_fill > 0:
        source = (
            torch.arange(num_classes, device=device)
            if fill_from is None
            else torch.unique(fill_from.to(device=device, dtype=torch.long))
        )
        source = source[~torch.isin(source, pool)]
        if source.numel() > 0:
            pick = torch.randperm(source.numel(), generator=generator)[:num_fill].to(device)
            pool = torch.unique(torch.cat([pool, source[pick]]), sorted=True)
    return pool


def check_pool_loss_args(name: str, num_classes: int, dim: int, pool_size: int, num_hard: int,
                         scale: float) -> None:
    """Constructor checks shared by :class:`HEPLoss` and ``C2HEPLoss``."""
    if num_classes <= 0 or dim <= 0 or pool_size < 0 or num_hard < 0 or scale <= 0:
        raise ValueError(
            f"{name}: bad arguments num_classes={num_classes} dim={dim} "
            f"pool_size={pool_size} num_hard={num_hard} scale={scale}"
        )


def pooled_cross_entropy(
    embeds: Tensor,
    pids: Tensor,
    image_ids: Tensor,
    class_vectors: Tensor,
    cand_feats: Tensor,
    cand_pids: Tensor,
    pool_size: int,
    num_hard: int,
    scale: float,
    fill_from: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Tensor, Dict[str, Union[float, Tensor]]]:
    """Softmax cross-entropy of each labelled embedding over the label pool of its pair.

    For pair ``k`` (images ``2k``, ``2k+1``) the pool P_k is :func:`build_label_pool` of the
    pair's labelled embeddings; each labelled embedding x of identity y in the pair contributes
    ``-log softmax_{c in P_k}(scale * x.w_c)[y]`` with ``w_c = class_vectors[c]``. The loss is the
    mean over the labelled embeddings of the batch; ``embeds.sum() * 0`` (plus
    ``class_vectors.sum() * 0``) when there is none, so that the graph stays connected.

    Args:
        embeds: ``[N, D]`` L2-normalised embeddings.
        pids: ``[N]`` long, 0..C-1 or -1 (unlabelled, ignored here).
        image_ids: ``[N]`` long, image index in the batch.
        class_vectors: ``[C, D]`` unit class vectors (normalised classifier weights or centres).
        cand_feats: ``[K, D]`` hard-negative candidates, see :func:`build_label_pool`.
        cand_pids: ``[K]`` long.
        pool_size: preset pool size M.
        num_hard: hardest negatives per anchor.
        scale: logit scale s > 0.
        fill_from: identities the random filling may draw (None: all classes).
        generator: optional CPU generator of the random filling.

    Returns:
        loss: 0-dim float32 tensor.
        stats: ``acc`` (fraction of labelled embeddings whose pool argmax is their identity; a
            0-dim tensor left on the device), ``pool_size`` (mean pool size over the pairs with
            a labelled embedding) and ``num_labelled`` (Python floats); the means are NaN when
            there is no labelled embedding.
    """
    check_reid_inputs(embeds, pids, image_ids)
    num_classes = class_vectors.shape[0]
    labelled = pids >= 0
    labelled_pids = pids[labelled]
    num_labelled = labelled_pids.numel()  # a shape, known to the host after the indexing
    if num_labelled == 0:
        loss = embeds.sum() * 0.0 + class_vectors.sum() * 0.0
        nan = embeds.new_full((), math.nan, dtype=torch.float32)
        return loss, {"acc": nan, "pool_size": math.nan, "num_labelled": 0.0}
    if int(labelled_pids.max()) >= num_classes:
        raise ValueError(f"identity {int(labelled_pids.max())} >= num_classes {num_classes}")

    x = embeds.float()
    pair_ids = image_ids // 2
    total = x.new_zeros(())
    correct = x.new_zeros((), dtype=torch.long)
    pool_sizes = []
    for pair in torch.unique(pair_ids[labelled]).tolist():
        rows = labelled & (pair_ids == pair)
        xa, ya = x[rows], pids[rows]
        pool = build_label_pool(
            xa, ya, cand_feats, cand_pids, num_classes, pool_size, num_hard, fill_from, generator
        )
        logits = scale * xa @ class_vectors[pool].float().t()  # [A, P]
        target = torch.searchsorted(pool, ya)
        total = total + F.cross_entropy(logits, target, reduction="sum")
        correct = correct + (logits.detach().argmax(dim=1) == target).sum()
        pool_sizes.append(pool.numel())
    loss = total / num_labelled
    stats = {
        "acc": correct / num_labelled,  # a 0-dim tensor: no host synchronisation
        "pool_size": float(sum(pool_sizes)) / len(pool_sizes),
        "num_labelled": float(num_labelled),
    }
    return loss, stats


class HEPLoss(nn.Module):
    """HEP loss with a learned classifier (I-Net).

    The classifier weight ``weight`` ``[C, D]`` is a Parameter. Ours: the weights are
    L2-normalised in the logits, ``logits = scale * cos(x, w_c)``, the same form as OLP and
    C2HEP; initialised from N(0, 0.01^2) (only the direction matters). Hard negatives come from
    the feature dictionary (the same one as OLP).

    Args:
        num_classes: number of labelled training identities C.
        dim: embedding dimension D.
        pool_size: preset pool size M (ours: config key).
        num_hard: hardest labelled negatives per anchor (paper: 20).
        scale: logit scale s (ours: config key, default 10, temperature 0.1 as in OIM).
        generator: optional CPU generator of the random pool filling (default: global RNG).
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        pool_size: int,
        num_hard: int = 20,
        scale: float = 10.0,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        check_pool_loss_args("HEPLoss", num_classes, dim, pool_size, num_hard, scale)
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.pool_size = int(pool_size)
        self.num_hard = int(num_hard)
        self.scale = float(scale)
        self.generator = generator
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.dim))
        nn.init.normal_(self.weight, std=0.01)

    def forward(
        self,
        embeds: Tensor,
        pids: Tensor,
        image_ids: Tensor,
        dict_feats: Tensor,
        dict_pids: Tensor,
    ) -> Tuple[Tensor, Dict[str, Union[float, Tensor]]]:
        """HEP loss of a batch of pairs.

        Args:
            embeds: ``[N, D]`` L2-normalised embeddings.
            pids: ``[N]`` long, 0..C-1 or -1 (unlabelled).
            image_ids: ``[N]`` long, image index in the batch (pairs ``2k``, ``2k+1``).
            dict_feats: ``[K, D]`` feature dictionary entries.
            dict_pids: ``[K]`` long, their identities.

        Returns:
            loss (0-dim) and stats (``acc``, ``pool_size``, ``num_labelled``), see
            :func:`pooled_cross_entropy`.
        """
        weight = F.normalize(self.weight, dim=1)
        return pooled_cross_entropy(
            embeds,
            pids,
            image_ids,
            weight,
            dict_feats,
            dict_pids,
            self.pool_size,
            self.num_hard,
            self.scale,
            fill_from=None,
            generator=self.generator,
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, pool_size={self.pool_size}, "
            f"num_hard={self.num_hard}, scale={self.scale}"
        )
