"""Count the operations that make the host wait for the device, on any device (CPU included).

On CUDA, ``torch.cuda.set_sync_debug_mode("error")`` raises at the first synchronising call, and
only on a GPU. This module counts the same kinds of calls with a ``TorchDispatchMode``, so a CPU
run (CI, this project's machines) can tell how many host-device synchronisations a code path
would make on a GPU, and which ones:

- ``item``: a tensor read as a Python number (``.item()``, ``int()``, ``float()``, ``bool()``,
  ``if tensor:``), dispatched as ``aten._local_scalar_dense``;
- ``nonzero``: ``nonzero`` / ``torch.where(mask)`` / ``argwhere``;
- ``bool_index``: indexing with a boolean mask (``x[mask]``, ``x[mask] = v``): the output shape
  is the number of ``True`` entries;
- ``unique``: ``torch.unique`` in any form (its output shape depends on the data);
- ``masked_select`` and ``repeat_interleave`` (without ``output_size``): data-dependent shapes;
- ``tolist``: ``Tensor.tolist()`` (does not dispatch; counted by wrapping the method).

Ops whose *output shape* depends on the data are counted because on a GPU the host must learn
that shape before it can go on. Transfers to the device (``.to("cuda")`` of a CPU tensor) are not
counted: they do not wait for the device's queue.

    with HostSyncCounter() as syncs:
        loss_dict, metrics = criterion(embeds, pids, image_ids)
    print(syncs.total, syncs.counts)   # e.g. 12, {"item": 5, "unique": 4, ...}

Only torch is used.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncCounter", "SYNC_KINDS"]

SYNC_KINDS = (
    "item",
    "nonzero",
    "bool_index",
    "unique",
    "masked_select",
    "repeat_interleave",
    "tolist",
)

_aten = torch.ops.aten
_BY_OVERLOAD_PACKET = {
    _aten._local_scalar_dense: "item",
    _aten.nonzero: "nonzero",
    _aten.nonzero_static: None,  # bounded output: no synchronisation
    _aten.argwhere: "nonzero",
    _aten._unique: "unique",
    _aten._unique2: "unique",
    _aten.unique_dim: "unique",
    _aten.unique_consecutive: "unique",
    _aten.masked_select: "masked_select",
}
_INDEXING = {_aten.index, _aten.index_put, _aten.index_put_, _aten._index_put_impl_}


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
        for i in (indices or ())
    )


class HostSyncCounter(TorchDispatchMode):
    """Context manager counting host-synchronising calls by kind (see the module docstring).

    Attributes:
        counts: ``Counter`` kind -> number of calls.
        total: the number of counted calls.
    """

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()
        self._tolist = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        """Every kind of :data:`SYNC_KINDS` with its count (0 included)."""
        return {kind: self.counts.get(kind, 0) for kind in SYNC_KINDS}

    def __enter__(self):
        counts, original = self.counts, torch.Tensor.tolist

        def counted_tolist(tensor, *args, **kwargs):
            counts["tolist"] += 1
            return original(tensor, *args, **kwargs)

        self._tolist = original
        torch.Tensor.tolist = counted_tolist
        try:
            return super().__enter__()
        except BaseException:
            torch.Tensor.tolist = original
            raise

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kind = _BY_OVERLOAD_PACKET.get(func.overloadpacket)
        if kind is not None:
            self.counts[kind] += 1
        elif func.overloadpacket in _INDEXING and _has_bool_index(args):
            self.counts["bool_index"] += 1
        elif (
            func.overloadpacket is _aten.repeat_interleave
            and (kwargs or {}).get("output_size") is None
        ):
            self.counts["repeat_interleave"] += 1
        return func(*args, **(kwargs or {}))
