"""Memories of the re-id losses: the dynamic feature dictionary and the class centres.

Both are ``nn.Module`` objects whose whole state lives in registered buffers, so they are saved
in checkpoints, restored on resume and moved with ``.to(device)``. Under ``torch.distributed``
every update first all-gathers the inputs of all processes in rank order
(:func:`dcinet_d2.utils.all_gather_rows`), so every process applies the same update and the
buffers stay identical across processes. The updates are collective operations: every process
must call them at the same step, even one without any embedding to add.

Only torch is used (no Detectron2).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...utils.distributed import all_gather_rows
from .checks import check_pids_below, check_rows

logger = logging.getLogger(__name__)

__all__ = [
    "FeatureDictionary",
    "ClassCentres",
    "EMPTY_PID",
    "momentum_update_in_order",
    "CENTRE_UPDATES",
    "WholeStateMemory",
]

#: Update rules of :class:`ClassCentres`: one momentum step per class towards the batch mean of
#: the class, or one step per sample in batch order (as the OIM look-up table).
CENTRE_UPDATES = ("batch_mean", "per_sample")

# Identity stored in a slot of the feature dictionary that was never written.
EMPTY_PID = -2


@torch.no_grad()
def momentum_update_in_order(table: Tensor, feats: Tensor, pids: Tensor, momentum: float) -> Tensor:
    """Per-sample momentum update of a table of unit rows, in place, in the order of the rows.

    For every row ``i`` of ``feats`` with ``pids[i] >= 0``, in order::

        table[y] <- normalize(momentum * table[y] + (1 - momentum) * feats[i]),  y = pids[i]

    (the OIM look-up table update; a row of ``table`` that is all zeros becomes
    ``normalize(feats[i])``). Updates of different classes do not interact, so the loop runs
    over *rounds* instead of rows: round ``r`` applies the ``r``-th sample of every class at once,
    which gives exactly the row-by-row result with as many steps as the most frequent class has
    samples.

    Args:
        table: ``[C, D]`` float buffer, updated in place.
        feats: ``[N, D]`` embeddings.
        pids: ``[N]`` long; rows with pid < 0 are skipped.
        momentum: weight of the old row, in [0, 1].

    Returns:
        ``[K]`` long, the sorted classes that were updated.
    """
    keep = pids >= 0
    feats = feats.detach().to(device=table.device, dtype=table.dtype)[keep.to(feats.device)]
    pids = pids.to(device=table.device, dtype=torch.long)[keep.to(pids.device)]
    if pids.numel() == 0:
        return pids
    if int(pids.max()) >= table.shape[0]:
        raise ValueError(f"identity {int(pids.max())} >= table rows {table.shape[0]}")
    classes, inverse, counts = torch.unique(
        pids, sorted=True, return_inverse=True, return_counts=True
    )
    # rank[i]: how many earlier rows share row i's class (the round in which row i is applied).
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(inverse)
    rank[order] = torch.arange(inverse.numel(), device=inverse.device) - starts[inverse[order]]
    for r in range(int(counts.max())):
        rows = rank == r
        ys = pids[rows]
        mixed = momentum * table[ys] + (1.0 - momentum) * feats[rows]
        table[ys] = F.normalize(mixed, dim=1)
    return classes


class WholeStateMemory(nn.Module):
    """A memory that loads its buffers from a checkpoint all together or not at all.

    A checkpoint written with another ``SOLVER.IMS_PER_BATCH``, ``DICTIONARY_SIZE`` or number of
    identities holds some of a memory's buffers in another shape; Detectron2's checkpointer skips
    those and loads the rest, which would leave e.g. a dictionary's write pointer and fill count
    pointing into features it never loaded. Here, when a checkpoint holds only some of the
    buffers, or some in another shape, none is loaded: the memory is reset (:meth:`reset`) with a
    warning and fills again during training. A checkpoint holding none of them (a backbone) loads
    nothing here, silently.
    """

    def reset(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        own = {
            name: buf
            for name, buf in self._buffers.items()
            if buf is not None and name not in self._non_persistent_buffers_set
        }
        present = [name for name in own if prefix + name in state_dict]
        reshaped = [
            f"{name}: checkpoint {tuple(state_dict[prefix + name].shape)}, "
            f"model {tuple(own[name].shape)}"
            for name in present
            if tuple(state_dict[prefix + name].shape) != tuple(own[name].shape)
        ]
        if present and (len(present) < len(own) or reshaped):
            absent = [name for name in own if name not in present]
            for name in present:
                state_dict.pop(prefix + name)
            self.reset()
            logger.warning(
                "%s: the checkpoint holds %s of this memory (missing: %s; other shape: %s); "
                "none is loaded, the memory starts empty and fills again during training",
                prefix.rstrip(".") or type(self).__name__,
                present,
                absent or "none",
                reshaped or "none",
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class FeatureDictionary(WholeStateMemory):
    """Dynamic feature dictionary of OLP (and HEP): a FIFO queue of recent person embeddings.

    Each entry is an L2-normalised embedding with its identity (``0..C-1`` for a labelled person,
    ``-1`` for an unlabelled one). New entries overwrite the oldest ones (a ring buffer). Paper:
    length 4 x batch size, oldest dropped first; ours: the length is a constructor argument (a
    config key).

    Buffers (saved in ``state_dict``):
        feats: ``[size, D]`` float32, the stored embeddings (zeros in empty slots).
        pids: ``[size]`` long, their identities; ``EMPTY_PID`` (-2) marks an empty slot.
        ptr: ``[]`` long, the slot the next entry is written to.
        num_filled: ``[]`` long, the number of filled slots (``<= size``).

    While the queue is not full the filled slots are exactly ``0 .. num_filled-1``.

    Args:
        size: number of entries kept (> 0).
        dim: embedding dimension D (> 0).
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"FeatureDictionary needs size > 0 and dim > 0, got {size}, {dim}")
        self.size = int(size)
        self.dim = int(dim)
        self.register_buffer("feats", torch.zeros(self.size, self.dim))
        self.register_buffer("pids", torch.full((self.size,), EMPTY_PID, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def reset(self) -> None:
        """Empty the dictionary (every slot free, pointer at slot 0)."""
        self.feats.zero_()
        self.pids.fill_(EMPTY_PID)
        self.ptr.zero_()
        self.num_filled.zero_()

    @torch.no_grad()
    def enqueue(self, feats: Tensor, pids: Tensor, sync: bool = True) -> None:
        """Append embeddings (detached), overwriting the oldest entries once the queue is full.

        With ``sync`` (default) and ``torch.distributed`` initialised, the ``(feats, pids)`` of all
        processes are first gathered in rank order, so every process writes the same entries in the
        same order. Collective in that case: every process must call it (possibly with N = 0).
        If more entries than ``size`` arrive at once, only the newest ``size`` are kept (the last
        rows of the gathered batch).

        Args:
            feats: ``[N, D]`` embeddings (any float dtype; stored as float32).
            pids: ``[N]`` long, identities (-1 for unlabelled persons).
            sync: gather across processes first; pass False when the inputs already are the
                gathered batch of all processes.
        """
        self._check(feats, pids)
        if sync:
            feats, pids = all_gather_rows(feats, pids)
        feats = feats.detach().to(device=self.feats.device, dtype=self.feats.dtype)
        pids = pids.detach().to(device=self.pids.device, dtype=torch.long)
        n = feats.shape[0]
        if n == 0:
            return
        if n > self.size:
            feats, pids = feats[-self.size :], pids[-self.size :]
            n = self.size
        slots = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.size
        self.feats[slots] = feats
        self.pids[slots] = pids
        self.ptr.copy_((self.ptr + n) % self.size)
        self.num_filled.copy_(torch.clamp(self.num_filled + n, max=self.size))

    def entries(self) -> tuple[Tensor, Tensor]:
        """The filled entries, in slot order (not oldest-first once the queue has wrapped).

        Returns copies, so that a loss may keep them for its backward pass while the queue is
        updated in place afterwards.

        Returns:
            feats: ``[num_filled, D]`` float32 embeddings.
            pids: ``[num_filled]`` long identities (-1 = unlabelled).
        """
        n = int(self.num_filled.item())
        return self.feats[:n].clone(), self.pids[:n].clone()

    def slots(self) -> tuple[Tensor, Tensor]:
        """Every slot, filled or not: ``[size, D]`` embeddings and ``[size]`` identities, where an
        empty slot has identity ``EMPTY_PID`` (-2) and a zero embedding.

        Unlike :meth:`entries`, the shapes do not depend on the fill, so nothing waits for the
        device; the losses read this and ignore identities ``<= -2``. Copies, as :meth:`entries`.
        """
        return self.feats.clone(), self.pids.clone()

    def fill_ratio(self) -> Tensor:
        """Fraction of the slots that hold an entry, in [0, 1]: a 0-dim float tensor on the
        buffers' device (reading it as a number is left to the caller, e.g. a periodic logger)."""
        return self.num_filled.float() / self.size

    def _check(self, feats: Tensor, pids: Tensor) -> None:
        check_rows(feats, pids, self.dim)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


class ClassCentres(WholeStateMemory):
    """One L2-normalised centre per labelled identity, updated with a momentum (C2HEP).

    Update rule for every class ``c`` with labelled embeddings in the (gathered) batch, ``m_c``
    being the plain mean of those embeddings:

    * first time the class is seen: ``centre_c = normalize(m_c)``;
    * otherwise: ``centre_c = normalize(momentum * centre_c + (1 - momentum) * m_c)``.

    With ``update="per_sample"`` a class already seen takes one momentum step per sample instead,
    in batch order (:func:`momentum_update_in_order`, the OIM look-up table rule). Classes absent
    from the batch are left unchanged. Ours: the momentum and the rule are constructor arguments
    (config keys); the paper gives neither.

    Buffers (saved in ``state_dict``):
        centres: ``[C, D]`` float32 (zeros for a class never seen).
        initialized: ``[C]`` bool, whether the class has been seen.

    Args:
        num_classes: number of labelled identities C (> 0).
        dim: embedding dimension D (> 0).
        momentum: weight of the old centre, in [0, 1].
        update: ``"batch_mean"`` or ``"per_sample"`` (see above).
    """

    def __init__(self, num_classes: int, dim: int, momentum: float, update: str = "batch_mean"):
        super().__init__()
        if num_classes <= 0 or dim <= 0:
            raise ValueError(f"ClassCentres needs num_classes, dim > 0, got {num_classes}, {dim}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if update not in CENTRE_UPDATES:
            raise ValueError(f"centre update must be one of {CENTRE_UPDATES}, got {update!r}")
        self.update_rule = update
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.momentum = float(momentum)
        self.register_buffer("centres", torch.zeros(self.num_classes, self.dim))
        self.register_buffer("initialized", torch.zeros(self.num_classes, dtype=torch.bool))

    @torch.no_grad()
    def reset(self) -> None:
        """Forget every centre (no class seen)."""
        self.centres.zero_()
        self.initialized.zero_()

    @torch.no_grad()
    def class_means(self, feats: Tensor, pids: Tensor) -> tuple[Tensor, Tensor]:
        """Per-class means of the labelled rows (pid >= 0); no gathering, no state change.

        Dense over the C classes (a one-hot matmul, no ``unique``), so nothing here waits for
        the device: on a GPU the host never reads which classes are present.

        Args:
            feats: ``[N, D]`` embeddings.
            pids: ``[N]`` long identities in ``[-1, C-1]``; rows with pid < 0 are ignored.

        Returns:
            present: ``[C]`` bool, the classes with at least one row.
            means: ``[C, D]`` float32, ``means[c]`` = mean of the rows of class ``c`` (zeros for
            an absent class).
        """
        self._check(feats, pids)
        feats = feats.detach().to(device=self.centres.device, dtype=self.centres.dtype)
        pids = pids.to(device=self.centres.device, dtype=torch.long)
        check_pids_below(pids, self.num_classes)
        # A one-hot matmul rather than index_add_: index_add_ uses atomic adds on CUDA, whose
        # summation order (hence rounding) may differ between processes; the buffers must not.
        classes = torch.arange(self.num_classes, device=pids.device)
        one_hot = (pids[None, :] == classes[:, None]).to(feats.dtype)  # [C, N]
        counts = one_hot.sum(dim=1)
        return counts > 0, (one_hot @ feats) / counts.clamp(min=1)[:, None]

    @torch.no_grad()
    def preview_unseen(self, feats: Tensor, pids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """What :meth:`initialize_unseen` would produce, without changing any buffer.

        No gathering: pass the gathered batch. Returns copies ``(centres [C, D],
        initialized [C], fresh [C] bool)`` where the ``fresh`` classes (present in the batch,
        never seen before) hold ``normalize(m_c)``.
        """
        present, means = self.class_means(feats, pids)
        fresh = present & ~self.initialized
        centres = torch.where(fresh[:, None], F.normalize(means, dim=1), self.centres)
        return centres, self.initialized | fresh, fresh

    @torch.no_grad()
    def initialize_unseen(self, feats: Tensor, pids: Tensor, sync: bool = True) -> Tensor:
        """Initialise the classes of the batch that were never seen: ``centre = normalize(m_c)``.

        Classes already initialised are not touched (no momentum step here).

        Args:
            feats: ``[N, D]`` embeddings of this process (or of all processes if not ``sync``).
            pids: ``[N]`` long identities (-1 rows ignored).
            sync: gather across processes first (collective when distributed).

        Returns:
            ``[C]`` bool, the classes initialised by this call.
        """
        if sync:
            feats, pids = all_gather_rows(feats, pids)
        centres, initialized, fresh = self.preview_unseen(feats, pids)
        self.centres.copy_(centres)
        self.initialized.copy_(initialized)
        return fresh

    @torch.no_grad()
    def update(
        self, feats: Tensor, pids: Tensor, exclude: Tensor | None = None, sync: bool = True
    ) -> Tensor:
        """Apply the update rule of the class docstring for the classes of the batch.

        Args:
            feats: ``[N, D]`` embeddings of this process (or of all processes if not ``sync``).
            pids: ``[N]`` long identities (-1 rows ignored).
            exclude: optional ``[C]`` bool, classes to leave unchanged at this call (C2HEP passes
                the classes it initialised earlier in the same step).
            sync: gather across processes first (collective when distributed).

        Returns:
            ``[C]`` bool, the classes whose centre changed.
        """
        if sync:
            feats, pids = all_gather_rows(feats, pids)
        if exclude is not None and exclude.shape != (self.num_classes,):
            raise ValueError(
                f"exclude must be a [{self.num_classes}] bool mask, got {tuple(exclude.shape)}"
            )
        if self.update_rule == "per_sample":
            return self._update_per_sample(feats, pids, exclude)
        present, means = self.class_means(feats, pids)
        if exclude is not None:
            present = present & ~exclude.to(present.device)
        mixed = self.momentum * self.centres + (1.0 - self.momentum) * means
        new = torch.where(self.initialized[:, None], mixed, means)
        self.centres.copy_(torch.where(present[:, None], F.normalize(new, dim=1), self.centres))
        self.initialized.logical_or_(present)
        return present

    def _update_per_sample(self, feats: Tensor, pids: Tensor, exclude: Tensor | None) -> Tensor:
        # One momentum step per sample in batch order: rounds of data-dependent count (host reads;
        # the batch-mean rule of the default configs has none).
        self._check(feats, pids)
        pids = pids.to(device=self.centres.device, dtype=torch.long)
        check_pids_below(pids, self.num_classes)
        if exclude is not None:
            pids = torch.where(exclude.to(pids.device)[pids.clamp(min=0)], -1, pids)
        # A class never seen starts from zeros, so its first sample sets it (as the OIM table).
        unseen = (pids >= 0) & ~self.initialized[pids.clamp(min=0)]
        self.centres[pids[unseen]] = 0.0
        classes = momentum_update_in_order(self.centres, feats, pids, self.momentum)
        changed = torch.zeros_like(self.initialized)
        changed[classes] = True
        self.initialized.logical_or_(changed)
        return changed

    def _check(self, feats: Tensor, pids: Tensor) -> None:
        check_rows(feats, pids, self.dim)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, momentum={self.momentum}, "
            f"update={self.update_rule}"
        )
