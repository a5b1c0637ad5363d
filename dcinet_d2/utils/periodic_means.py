"""Means of per-step scalars over a logging period, kept on the device until they are read.

A training step that reads its statistics (``float(tensor)``) makes the host wait for the
device at every step. :class:`PeriodicMeans` instead adds each step's values to running sums
where they live (one ``stack`` and two in-place adds per step for all tensor values together)
and reads them once, when a logger asks (:meth:`pop_means`: one device-to-host copy).

A value that is not finite (NaN: a mean over nothing at that step) is skipped, so each mean is
over the steps where the value was defined. Python numbers are summed on the host.

Only torch is used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["PeriodicMeans"]

Scalar = float | int | Tensor


class PeriodicMeans:
    """Running sums and counts of named scalars; :meth:`pop_means` returns the means and resets.

    Example::

        means = PeriodicMeans()
        means.add({"acc": torch.tensor(0.5), "n": 3.0})
        means.add({"acc": torch.tensor(float("nan")), "n": 5.0})
        means.pop_means()   # {"acc": 0.5, "n": 4.0}
    """

    def __init__(self):
        # names of the tensor values of a step, in order -> (sums [M], counts [M]) on their device
        self._device_sums: dict[tuple[str, ...], tuple[Tensor, Tensor]] = {}
        self._host_sums: dict[str, tuple[float, int]] = {}

    def add(self, values: Mapping[str, Scalar]) -> None:
        """Add one step's values: 0-dim tensors (any device, no synchronisation) or numbers."""
        names = []
        tensors = []
        for name, value in values.items():
            if isinstance(value, Tensor):
                if value.numel() != 1:
                    raise ValueError(f"{name}: expected a scalar, got shape {tuple(value.shape)}")
                names.append(name)
                tensors.append(value.detach().reshape(()))
            else:
                value = float(value)
                if math.isfinite(value):
                    total, count = self._host_sums.get(name, (0.0, 0))
                    self._host_sums[name] = (total + value, count + 1)
        if not tensors:
            return
        key = tuple(names)
        stacked = torch.stack(
            [t.to(device=tensors[0].device, dtype=torch.float32) for t in tensors]
        )
        finite = torch.isfinite(stacked)
        if key not in self._device_sums:
            self._device_sums[key] = (torch.zeros_like(stacked), torch.zeros_like(stacked))
        sums, counts = self._device_sums[key]
        sums.add_(torch.where(finite, stacked, torch.zeros_like(stacked)))
        counts.add_(finite.to(counts.dtype))

    def pop_means(self) -> dict[str, float]:
        """The mean of every value over the steps where it was finite (values never finite are
        left out), then forget everything. One device-to-host copy per set of names."""
        totals: dict[str, tuple[float, float]] = {}
        for names, (sums, counts) in self._device_sums.items():
            for name, (s, c) in zip(names, torch.stack([sums, counts], dim=1).tolist()):
                old_s, old_c = totals.get(name, (0.0, 0.0))
                totals[name] = (old_s + s, old_c + c)
        for name, (s, c) in self._host_sums.items():
            old_s, old_c = totals.get(name, (0.0, 0.0))
            totals[name] = (old_s + s, old_c + c)
        self._device_sums.clear()
        self._host_sums.clear()
        return {name: s / c for name, (s, c) in totals.items() if c > 0}
