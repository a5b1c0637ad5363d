"""Label pools and the pooled softmax shared by HEP and C2HEP (Zhang et al., TPAMI 2020).

The softmax of each labelled embedding runs only over the *label pool* of its Siamese pair:

1. the labelled identities present in the pair (both images);
2. the ``num_hard`` hardest negative *classes* of each labelled anchor of the pair (paper: top
   20 hard categories): classes ranked by their most similar candidate (HEP: the entries of the
   dynamic feature dictionary, :func:`class_hardness`; C2HEP: the class centres), then the top
   ``num_hard`` per row (:func:`hard_negative_mask`);
3. random other identities, until the pool holds ``pool_size`` (paper: a preset size M; ours:
   a config key). Groups 1 and 2 are never truncated, so a pool may exceed ``pool_size``.

:func:`build_label_pools` builds the pools and :func:`pooled_cross_entropy` the loss, pure
functions; :class:`PooledSoftmaxLoss` holds the arguments both losses share. Everything is dense
over the C classes (masks, not index lists), so no shape depends on the data: on a GPU the host
never waits for the device here.

Only torch is used (no Detectron2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .checks import check_pids_below, check_reid_inputs
from .olp import masked_logsumexp

__all__ = [
    "class_hardness",
    "hard_negative_mask",
    "build_label_pools",
    "pooled_cross_entropy",
    "PooledSoftmaxLoss",
]


def class_hardness(
    anchor_feats: Tensor, cand_feats: Tensor, cand_pids: Tensor, num_classes: int
) -> Tensor:
    """How hard each class is for each anchor: the similarity of its *most similar* candidate.

    Ranking classes by their best candidate (paper: hard *categories*), rather than taking the
    top candidates, keeps the many dictionary entries of one person from filling the hard part
    of a pool alone (they often span 1-3 identities).

    Args:
        anchor_feats: ``[N, D]`` anchor embeddings (detached here).
        cand_feats: ``[K, D]`` candidate embeddings (dictionary entries or class centres).
        cand_pids: ``[K]`` long, their identities in ``[-2, C-1]``; candidates with a pid < 0
            (unlabelled, empty slot) belong to no class.
        num_classes: C.

    Returns:
        ``[N, C]`` float32, ``hardness[i, c] = max_k anchor_i . cand_k`` over the candidates of
        class ``c``; ``-inf`` for a class without candidate.
    """
    sims = anchor_feats.detach().float() @ cand_feats.detach().float().to(anchor_feats.device).t()
    cand_pids = cand_pids.to(anchor_feats.device)
    sims = sims.masked_fill(cand_pids[None, :] < 0, float("-inf"))  # [N, K]
    hardness = sims.new_full((sims.shape[0], num_classes), float("-inf"))
    index = cand_pids.clamp(min=0)[None, :].expand_as(sims)
    return hardness.scatter_reduce(1, index, sims, reduce="amax", include_self=True)


def hard_negative_mask(hardness: Tensor, pids: Tensor, num_hard: int) -> Tensor:
    """The ``num_hard`` hardest negative classes of each labelled row, as a mask.

    Per row with pid >= 0 the ``min(num_hard, #classes with a candidate)`` classes of highest
    :func:`class_hardness`, its own class excluded; nothing for an unlabelled row.

    Args:
        hardness: ``[N, C]`` (``-inf``: the class has no candidate).
        pids: ``[N]`` long, 0..C-1 or -1.
        num_hard: hardest classes per row (>= 0).

    Returns:
        ``[N, C]`` bool.
    """
    n, num_classes = hardness.shape
    mask = torch.zeros(n, num_classes, dtype=torch.bool, device=hardness.device)
    k = min(int(num_hard), num_classes)
    if k <= 0 or n == 0:
        return mask
    own = pids[:, None] == torch.arange(num_classes, device=pids.device)[None, :]
    top, top_idx = hardness.masked_fill(own, float("-inf")).topk(k, dim=1)  # [N, k]
    valid = torch.isfinite(top) & (pids >= 0)[:, None]
    return mask.scatter_(1, top_idx, valid)


def build_label_pools(
    pids: Tensor,
    pair_ids: Tensor,
    num_pairs: int,
    hard_mask: Tensor,
    pool_size: int,
    fill_allowed: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The label pool of every Siamese pair of the batch, as a ``[P, C]`` mask.

    pool of pair k = (identities of the pair's labelled rows)
    ∪ (the hard negative classes of those rows, ``hard_mask``)
    ∪ classes drawn uniformly without replacement among ``fill_allowed`` (all classes if None)
    minus the above, until the pool holds ``pool_size`` classes or the allowed ones run out.
    The first two groups are never truncated, so a pool may exceed ``pool_size``. A pair
    without labelled rows has an empty pool.

    The random draw ranks i.i.d. uniform keys per (pair, class): fixed shapes, so nothing here
    waits for the device.

    Args:
        pids: ``[N]`` long, 0..C-1 or -1 (unlabelled rows add nothing).
        pair_ids: ``[N]`` long, the pair of each row (``image_id // 2``), in ``[0, num_pairs)``.
        num_pairs: P.
        hard_mask: ``[N, C]`` bool, :func:`hard_negative_mask`.
        pool_size: preset pool size M.
        fill_allowed: optional ``[C]`` bool, the classes the random filling may draw (C2HEP:
            the initialised classes).
        generator: optional ``torch.Generator`` of the random keys (on the CPU or the device).

    Returns:
        ``[P, C]`` bool.
    """
    device = pids.device
    num_classes = hard_mask.shape[1]
    classes = torch.arange(num_classes, device=device)
    own = pids[:, None] == classes[None, :]  # [N, C]; nothing for an unlabelled row
    pairs = torch.arange(num_pairs, device=device)
    rows_of_pair = (pids >= 0)[None, :] & (pair_ids[None, :] == pairs[:, None])  # [P, N]
    # [P, N] @ [N, C]: counts of small integers, exact in float32.
    core = (rows_of_pair.float() @ (own | hard_mask).float()) > 0  # [P, C]
    # A pair with a labelled row holds at least that row's class; an empty pair gets no filling.
    need = torch.where(core.any(dim=1), (pool_size - core.sum(dim=1)).clamp(min=0), 0)  # [P]
    eligible = ~core if fill_allowed is None else ~core & fill_allowed.to(device)[None, :]
    key_device = generator.device if generator is not None else device
    keys = torch.rand(num_pairs, num_classes, generator=generator, device=key_device).to(device)
    order = keys.masked_fill(~eligible, -1.0).argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(1, order, classes.expand(num_pairs, -1).contiguous())
    return core | (eligible & (rank < need[:, None]))


def pooled_cross_entropy(
    embeds: Tensor,
    pids: Tensor,
    image_ids: Tensor,
    class_vectors: Tensor,
    hardness: Tensor,
    pool_size: int,
    num_hard: int,
    scale: float,
    fill_allowed: Tensor | None = None,
    generator: torch.Generator | None = None,
    num_pairs: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Softmax cross-entropy of each labelled embedding over the label pool of its pair.

    For pair ``k`` (images ``2k``, ``2k+1``) the pool P_k is :func:`build_label_pools` of the
    pair's labelled rows, their hard classes taken from ``hardness``
    (:func:`hard_negative_mask`); each labelled embedding x of identity y in the pair contributes
    ``-log softmax_{c in P_k}(scale * x.w_c)[y]`` with ``w_c = class_vectors[c]``. The loss is the
    mean over the labelled embeddings of the batch; zero but connected to the graph (of the
    embeddings and the class vectors) when there is none.

    Dense: the logits of every row over all C classes, masked to its pair's pool, so no shape
    depends on the data and nothing waits for the device (given ``num_pairs``).

    Args:
        embeds: ``[N, D]`` L2-normalised embeddings.
        pids: ``[N]`` long, 0..C-1 or -1 (unlabelled, ignored here).
        image_ids: ``[N]`` long, image index in the batch.
        class_vectors: ``[C, D]`` unit class vectors (normalised classifier weights or centres).
        hardness: ``[N, C]`` :func:`class_hardness` of the rows (``-inf``: no candidate).
        pool_size: preset pool size M.
        num_hard: hardest negative classes per labelled row.
        scale: logit scale s > 0.
        fill_allowed: ``[C]`` bool, the classes the random filling may draw (None: all).
        generator: optional generator of the random filling.
        num_pairs: pairs in the batch (``ceil(images / 2)``); None reads it from ``image_ids``
            (the host then waits for the device).

    Returns:
        loss: 0-dim float32 tensor.
        stats: 0-dim float32 tensors left on the device: ``acc`` (fraction of labelled
            embeddings whose pool argmax is their identity), ``pool_size`` (mean pool size over
            the pairs with a labelled embedding) and ``num_labelled``; the means are NaN when
            there is no labelled embedding.
    """
    check_reid_inputs(embeds, pids, image_ids)
    check_pids_below(pids, class_vectors.shape[0])
    x = embeds.float()
    labelled = pids >= 0
    pair_ids = image_ids // 2
    if num_pairs is None:
        num_pairs = int(pair_ids.max()) + 1 if pair_ids.numel() else 0
    hard = hard_negative_mask(hardness, pids, num_hard)
    pools = build_label_pools(pids, pair_ids, num_pairs, hard, pool_size, fill_allowed, generator)
    row_pool = pools[pair_ids]  # [N, C]
    logits = scale * x @ class_vectors.float().t()  # [N, C]
    target = pids.clamp(min=0)
    lse = masked_logsumexp(logits, row_pool)  # a labelled row's pool holds its own class
    per_row = torch.where(labelled, lse - logits.gather(1, target[:, None])[:, 0], 0.0)
    num_labelled = labelled.sum().float()
    loss = per_row.sum() / num_labelled.clamp(min=1.0)
    with torch.no_grad():
        predicted = logits.masked_fill(~row_pool, float("-inf")).argmax(dim=1)
        stats = {
            "acc": ((predicted == pids) & labelled).sum().float() / num_labelled,
            # the pairs with a labelled row are those with a pool
            "pool_size": pools.sum().float() / pools.any(dim=1).sum(),
            "num_labelled": num_labelled,
        }
    return loss, stats


class PooledSoftmaxLoss(nn.Module):
    """The arguments that :class:`~.hep.HEPLoss` and :class:`~.c2hep.C2HEPLoss` share, checked.

    Args:
        num_classes: number of labelled training identities C.
        dim: embedding dimension D.
        pool_size: preset pool size M (ours: config key; 500 is a placeholder for direct use,
            the Detectron2 heads pass the config's value).
        num_hard: hardest negative classes per anchor (paper: 20).
        scale: logit scale s (ours: config key, default 10, temperature 0.1 as in OIM).
        generator: optional CPU generator of the random pool filling (default: global RNG).
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        pool_size: int = 500,
        num_hard: int = 20,
        scale: float = 10.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if num_classes <= 0 or dim <= 0 or pool_size < 0 or num_hard < 0 or scale <= 0:
            raise ValueError(
                f"{type(self).__name__}: bad arguments num_classes={num_classes} dim={dim} "
                f"pool_size={pool_size} num_hard={num_hard} scale={scale}"
            )
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.pool_size = int(pool_size)
        self.num_hard = int(num_hard)
        self.scale = float(scale)
        self.generator = generator

    def pooled_loss(
        self,
        embeds: Tensor,
        pids: Tensor,
        image_ids: Tensor,
        class_vectors: Tensor,
        hardness: Tensor,
        fill_allowed: Tensor | None,
        num_pairs: int | None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """:func:`pooled_cross_entropy` with this loss's pool size, hard classes, scale and
        generator."""
        return pooled_cross_entropy(
            embeds,
            pids,
            image_ids,
            class_vectors,
            hardness,
            self.pool_size,
            self.num_hard,
            self.scale,
            fill_allowed=fill_allowed,
            generator=self.generator,
            num_pairs=num_pairs,
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, pool_size={self.pool_size}, "
            f"num_hard={self.num_hard}, scale={self.scale}"
        )
