"""Feature dictionary (FIFO ring buffer) and class centres (momentum update), single process."""

from __future__ import annotations

import math

import pytest
import torch

from dcinet_d2.modeling.losses.memory import EMPTY_PID, ClassCentres, FeatureDictionary
from dcinet_d2.utils import all_gather_rows, get_rank, get_world_size, is_distributed

T = torch.tensor


def rows(*values):
    """Entries whose 2-d embedding is (v, -v): easy to recognise in the buffer."""
    return T([[float(v), -float(v)] for v in values])


class TestFeatureDictionary:
    def test_buffers_start_empty(self):
        d = FeatureDictionary(size=4, dim=2)
        assert set(dict(d.named_buffers())) == {"feats", "pids", "ptr", "num_filled"}
        assert d.pids.tolist() == [EMPTY_PID] * 4 == [-2] * 4
        assert d.ptr.item() == 0 and d.num_filled.item() == 0 and d.fill_ratio() == 0.0
        feats, pids = d.entries()
        assert feats.shape == (0, 2) and pids.shape == (0,)

    def test_fifo_order_and_wrap_around(self):
        d = FeatureDictionary(size=4, dim=2)
        d.enqueue(rows(1, 2, 3), T([10, -1, 11]))
        # slots 0..2 filled in order, slot 3 still empty
        assert d.pids.tolist() == [10, -1, 11, -2]
        assert torch.equal(d.feats[:3], rows(1, 2, 3))
        assert d.ptr.item() == 3 and d.num_filled.item() == 3
        assert d.fill_ratio() == pytest.approx(0.75)
        feats, pids = d.entries()
        assert torch.equal(feats, rows(1, 2, 3)) and pids.tolist() == [10, -1, 11]
        # every slot, the empty one as pid -2 and a zero row: shapes that do not depend on the fill
        feats, pids = d.slots()
        assert torch.equal(feats[:3], rows(1, 2, 3)) and not feats[3].any()
        assert pids.tolist() == [10, -1, 11, -2]
        feats[0] += 1.0
        assert torch.equal(d.feats[:3], rows(1, 2, 3))  # a copy

        # 2 more: slot 3, then wrap to slot 0 (the oldest entry, 1, is dropped)
        d.enqueue(rows(4, 5), T([12, 13]))
        assert d.pids.tolist() == [13, -1, 11, 12]
        assert torch.equal(d.feats, rows(5, 2, 3, 4))
        assert d.ptr.item() == 1 and d.num_filled.item() == 4 and d.fill_ratio() == 1.0

        # 2 more: slots 1 and 2 (the two oldest: 2 and 3)
        d.enqueue(rows(6, 7), T([14, -1]))
        assert torch.equal(d.feats, rows(5, 6, 7, 4))
        assert d.pids.tolist() == [13, 14, -1, 12]
        assert d.ptr.item() == 3

    def test_burst_larger_than_size_keeps_newest(self):
        d = FeatureDictionary(size=4, dim=2)
        d.enqueue(rows(1), T([0]))  # ptr 1
        d.enqueue(rows(2, 3, 4, 5, 6, 7), T([2, 3, 4, 5, 6, 7]))
        # only the newest 4 (4, 5, 6, 7) are kept, written from slot 1 on: slots 1, 2, 3, 0
        assert torch.equal(d.feats, rows(7, 4, 5, 6))
        assert d.pids.tolist() == [7, 4, 5, 6]
        assert d.ptr.item() == 1 and d.num_filled.item() == 4
        # the next entry overwrites slot 1, the oldest (4)
        d.enqueue(rows(8), T([8]))
        assert d.pids.tolist() == [7, 8, 5, 6]

    def test_empty_enqueue_and_detach(self):
        d = FeatureDictionary(size=3, dim=2)
        d.enqueue(torch.zeros(0, 2), T([]).long())
        assert d.num_filled.item() == 0 and d.ptr.item() == 0
        x = rows(1, 2).requires_grad_()
        d.enqueue(x * 1.0, T([0, 1]))
        assert not d.feats.requires_grad and d.feats.grad_fn is None
        # entries are copies: writing into them leaves the buffer alone
        feats, pids = d.entries()
        feats.zero_()
        pids.fill_(5)
        assert torch.equal(d.feats[:2], rows(1, 2)) and d.pids.tolist() == [0, 1, -2]
        with pytest.raises(ValueError):
            d.enqueue(torch.zeros(2, 3), T([0, 1]))
        with pytest.raises(ValueError):
            d.enqueue(torch.zeros(2, 2), T([0]))

    def test_half_precision_input_stored_as_float32(self):
        d = FeatureDictionary(size=2, dim=2)
        d.enqueue(T([[0.5, -0.25]], dtype=torch.float16), T([3]))
        assert d.feats.dtype == torch.float32
        assert d.feats[0].tolist() == [0.5, -0.25]

    def test_state_dict_round_trip(self):
        d = FeatureDictionary(size=4, dim=2)
        d.enqueue(rows(1, 2, 3, 4, 5), T([1, -1, 3, 4, 5]))  # burst: keeps 2..5 from slot 0
        state = d.state_dict()
        assert set(state) == {"feats", "pids", "ptr", "num_filled"}
        fresh = FeatureDictionary(size=4, dim=2)
        fresh.load_state_dict(state)
        for name, value in d.state_dict().items():
            assert torch.equal(fresh.state_dict()[name], value), name
        # the restored queue continues where the saved one stopped (slot 0 = oldest = entry 2)
        fresh.enqueue(rows(6), T([6]))
        assert torch.equal(fresh.feats, rows(6, 3, 4, 5))


class TestClassCentres:
    def test_first_seen_then_momentum(self):
        # momentum 0.75, C = 3, D = 2
        c = ClassCentres(num_classes=3, dim=2, momentum=0.75)
        assert set(dict(c.named_buffers())) == {"centres", "initialized"}
        # step 1: class 0 rows (1,0) and (0,1): m0 = (0.5, 0.5) -> centre (1,1)/sqrt(2);
        #         class 2 row (0,-3): m2 = (0,-3) -> (0,-1); the unlabelled row is ignored
        updated = c.update(T([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [0.0, -3.0]]), T([0, 0, -1, 2]))
        assert updated.tolist() == [True, False, True]  # a [C] mask of the changed classes
        s = 1 / math.sqrt(2)
        assert torch.allclose(c.centres, T([[s, s], [0.0, 0.0], [0.0, -1.0]]), atol=1e-7)
        assert c.initialized.tolist() == [True, False, True]
        # step 2: class 0 row (1,0): centre = normalize(0.75*(s,s) + 0.25*(1,0));
        #         class 1 first seen with (0.6,0.8) -> itself; class 2 absent -> unchanged
        c.update(T([[1.0, 0.0], [0.6, 0.8]]), T([0, 1]))
        v = (0.75 * s + 0.25, 0.75 * s)
        n = math.hypot(*v)
        assert torch.allclose(c.centres[0], T([v[0] / n, v[1] / n]), atol=1e-7)
        assert torch.allclose(c.centres[1], T([0.6, 0.8]), atol=1e-7)
        assert torch.equal(c.centres[2], T([0.0, -1.0]))
        assert c.initialized.tolist() == [True, True, True]

    def test_initialize_unseen_and_exclude(self):
        c = ClassCentres(num_classes=3, dim=2, momentum=0.5)
        c.update(T([[1.0, 0.0]]), T([0]))
        feats, pids = T([[0.0, 2.0], [0.0, 1.0], [0.0, 1.0]]), T([0, 1, 1])
        fresh = c.initialize_unseen(feats, pids)
        # only class 1 is new (m1 = (0,1)); class 0 untouched by the initialisation
        assert fresh.tolist() == [False, True, False]
        assert torch.equal(c.centres[:2], T([[1.0, 0.0], [0.0, 1.0]]))
        updated = c.update(feats, pids, exclude=fresh)
        assert updated.tolist() == [True, False, False]
        # class 0: normalize(0.5*(1,0) + 0.5*(0,2)) = (1,2)/sqrt(5)
        assert torch.allclose(c.centres[0], T([1.0, 2.0]) / math.sqrt(5), atol=1e-7)
        assert torch.equal(c.centres[1], T([0.0, 1.0]))

    def test_preview_does_not_change_buffers(self):
        c = ClassCentres(num_classes=2, dim=2, momentum=0.5)
        centres, initialized, fresh = c.preview_unseen(T([[3.0, 4.0]]), T([1]))
        assert fresh.tolist() == [False, True] and initialized.tolist() == [False, True]
        assert torch.allclose(centres[1], T([0.6, 0.8]))
        assert not c.initialized.any() and not c.centres.any()

    def test_state_dict_round_trip_and_checks(self):
        c = ClassCentres(num_classes=3, dim=2, momentum=0.5)
        c.update(T([[0.6, 0.8], [1.0, 0.0]]), T([2, 0]))
        fresh = ClassCentres(num_classes=3, dim=2, momentum=0.5)
        fresh.load_state_dict(c.state_dict())
        assert torch.equal(fresh.centres, c.centres)
        assert torch.equal(fresh.initialized, c.initialized)
        # an identity >= C: an assert that does not wait for the device (RuntimeError on the CPU)
        with pytest.raises(RuntimeError, match="num_classes = 3"):
            c.update(T([[1.0, 0.0]]), T([3]))
        assert torch.equal(fresh.centres, c.centres)  # nothing changed
        with pytest.raises(ValueError):
            ClassCentres(num_classes=3, dim=2, momentum=1.5)


def test_all_gather_rows_without_process_group():
    assert not is_distributed() and get_world_size() == 1 and get_rank() == 0
    x = torch.ones(2, 3, requires_grad=True)
    y = T([4, 5])
    gx, gy = all_gather_rows(x, y)
    assert torch.equal(gx, x.detach()) and not gx.requires_grad and torch.equal(gy, y)
    assert all_gather_rows() == ()
    with pytest.raises(ValueError):
        all_gather_rows(x, T([1]))
