"""Class-centre guided HEP (C2HEP) loss of DC-I-Net (Zhang et al., TPAMI 2020).

Like HEP (:mod:`.hep`), but stored class centres (a
:class:`~dcinet_d2.modeling.losses.memory.ClassCentres` buffer, updated with a momentum from the
labelled embeddings of each step) replace the learned classifier weights, and the hardest
classes of an anchor are the centres most similar to it.

Only torch is used (no Detectron2).
"""

from __future__ import annotations

from torch import Tensor

from ...utils.distributed import all_gather_rows
from .checks import check_reid_inputs
from .memory import ClassCentres
from .pools import PooledSoftmaxLoss

__all__ = ["C2HEPLoss"]


class C2HEPLoss(PooledSoftmaxLoss):
    """C2HEP loss; owns the class centres (``self.centres``, a :class:`ClassCentres`).

    One training step (``self.training``), with ``(F, Y)`` the detached labelled embeddings and
    identities of this step, all-gathered over the processes in rank order:

    1. *Initialise*: every class of ``Y`` never seen before gets ``centre = normalize(m_c)``,
       ``m_c`` the mean of its rows of ``F``; call these classes "fresh".
    2. *Loss*: per pair, pool = identities of the pair ∪ the ``num_hard`` classes whose
       initialised centres are most similar to each labelled anchor of the pair (its own class
       excluded) ∪ random initialised classes up to ``pool_size`` (the first two groups are
       never truncated);
       ``loss = mean over labelled embeddings of -log softmax_pool(scale * x.centre)[y]``.
       The centres are buffers: the gradient flows into the embeddings only.
    3. *Update*: every class of ``Y`` that is *not fresh* gets
       ``centre = normalize(momentum * centre + (1 - momentum) * m_c)``. Fresh classes are not
       updated a second time in the same step (their centre stays ``normalize(m_c)``; a momentum
       step with the same ``m_c`` would not change its direction anyway).

    Every class of the pair is thus initialised when the loss is computed. The embeddings have not
    changed between steps 1 and 3, so ``m_c`` is the same in both. In eval mode no buffer changes:
    the loss uses a copy of the centres with the fresh classes initialised as in step 1.

    Steps 1 and 3 are collective under ``torch.distributed`` (one all-gather per step): every
    process must call ``forward`` at every step, even with no labelled embedding.

    Args:
        num_classes, dim, pool_size, num_hard, scale, generator: see
            :class:`~.pools.PooledSoftmaxLoss` (``num_hard``: ours, 20 as HEP).
        momentum: weight of the old centre in the update (ours: config key, default 0.5 as the
            OIM lookup table).
        update: the centre update rule of step 3, ``"batch_mean"`` (as written above) or
            ``"per_sample"`` (one momentum step per sample in batch order, as the OIM table);
            see :class:`ClassCentres` (ours: config key).
    """

    def __init__(self, *args, momentum: float = 0.5, update: str = "batch_mean", **kwargs):
        super().__init__(*args, **kwargs)
        self.centres = ClassCentres(self.num_classes, self.dim, momentum, update)

    def forward(
        self, embeds: Tensor, pids: Tensor, image_ids: Tensor, num_pairs: int | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """C2HEP loss of a batch of pairs, with the centre initialisation and update of the step.

        Args:
            embeds: ``[N, D]`` L2-normalised embeddings.
            pids: ``[N]`` long, 0..C-1 or -1 (unlabelled, ignored).
            image_ids: ``[N]`` long, image index in the batch (pairs ``2k``, ``2k+1``).
            num_pairs: pairs in the batch (None: read from ``image_ids``, a host read).

        Returns:
            loss (0-dim float32) and stats (``acc``, ``pool_size``, ``num_labelled``, and
            ``num_fresh``: classes initialised at this step), 0-dim tensors, see
            :func:`~.pools.pooled_cross_entropy`.
        """
        check_reid_inputs(embeds, pids, image_ids)
        # All rows are gathered (the unlabelled ones are ignored by the centres): a fixed shape.
        feats_all, pids_all = all_gather_rows(embeds.detach().float(), pids)

        if self.training:
            fresh = self.centres.initialize_unseen(feats_all, pids_all, sync=False)
            centres, initialized = self.centres.centres, self.centres.initialized
        else:
            centres, initialized, fresh = self.centres.preview_unseen(feats_all, pids_all)
        # Copies: the buffers are updated in place below, before the backward pass.
        centres, initialized = centres.clone(), initialized.clone()
        # Hard classes: the initialised centres most similar to each row.
        hardness = (embeds.detach().float() @ centres.t()).masked_fill(
            ~initialized[None, :], float("-inf")
        )
        loss, stats = self.pooled_loss(
            embeds, pids, image_ids, centres, hardness, initialized, num_pairs
        )
        if self.training:
            self.centres.update(feats_all, pids_all, exclude=fresh, sync=False)
        stats["num_fresh"] = fresh.sum().float()
        return loss, stats
