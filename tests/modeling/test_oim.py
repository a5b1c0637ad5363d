"""OIM baseline loss and the in-order momentum update, against hand computations on 2-d vectors.

Expected values are written out from OIM's formulas (Xiao et al. 2017) with ``math`` on the
literal numbers of the test, never copied from the code's output.
"""

from __future__ import annotations

import math

import pytest
import torch

from dcinet_d2.modeling.losses import OIMLoss, ReIDCriterion
from dcinet_d2.modeling.losses.memory import ClassCentres, momentum_update_in_order

T = torch.tensor
R5 = math.sqrt(5.0)


def close(actual, expected, tol=1e-5):
    actual = torch.as_tensor(actual).detach().float()
    expected = torch.as_tensor(expected).float()
    assert torch.allclose(actual, expected, atol=tol), (actual, expected)


class TestMomentumUpdateInOrder:
    def test_rows_applied_one_by_one(self):
        # momentum 0.5; class 1 sees (1,0), (0,1), (0.6,0.8) in this order; class 2 sees (0,1);
        # the unlabelled row and class 0 change nothing.
        table = torch.zeros(3, 2)
        feats = T([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
        pids = T([1, 2, 1, -1, 1])
        classes = momentum_update_in_order(table, feats, pids, 0.5)
        assert classes.tolist() == [1, 2]
        # class 1: zeros -> (1,0) -> normalize(0.5, 0.5) = (s, s), s = 1/sqrt(2)
        #          -> normalize(0.5 s + 0.3, 0.5 s + 0.4)
        s = 1 / math.sqrt(2)
        x, y = 0.5 * s + 0.3, 0.5 * s + 0.4
        n = math.hypot(x, y)
        close(table, [[0.0, 0.0], [x / n, y / n], [0.0, 1.0]])

    def test_order_matters(self):
        a, b = torch.zeros(1, 2), torch.zeros(1, 2)
        momentum_update_in_order(a, T([[1.0, 0.0], [0.0, 1.0]]), T([0, 0]), 0.9)
        momentum_update_in_order(b, T([[0.0, 1.0], [1.0, 0.0]]), T([0, 0]), 0.9)
        # a: (1,0) then normalize(0.9, 0.1); b: (0,1) then normalize(0.1, 0.9)
        close(a, [[0.9 / math.hypot(0.9, 0.1), 0.1 / math.hypot(0.9, 0.1)]])
        close(b, [[0.1 / math.hypot(0.9, 0.1), 0.9 / math.hypot(0.9, 0.1)]])

    def test_out_of_range_identity(self):
        with pytest.raises(ValueError, match="identity 3"):
            momentum_update_in_order(torch.zeros(3, 2), T([[1.0, 0.0]]), T([3]), 0.5)


class TestCentresPerSample:
    def test_per_sample_differs_from_batch_mean(self):
        per, mean = ClassCentres(2, 2, 0.5, "per_sample"), ClassCentres(2, 2, 0.5, "batch_mean")
        first = (T([[1.0, 0.0], [0.0, 1.0]]), T([0, 0]))
        for c in (per, mean):
            c.update(*first, sync=False)
        s = 1 / math.sqrt(2)
        # first sight: per sample (1,0) then normalize(0.5, 0.5); batch mean normalize(0.5, 0.5)
        close(per.centres[0], [s, s])
        close(mean.centres[0], [s, s])
        second = (T([[0.0, 1.0], [1.0, 0.0]]), T([0, 0]))
        for c in (per, mean):
            c.update(*second, sync=False)
        # batch mean: normalize(0.5 (s, s) + 0.5 (0.5, 0.5)) = (s, s)
        close(mean.centres[0], [s, s])
        # per sample: u = normalize(0.5 s, 0.5 s + 0.5), then normalize(0.5 u + (0.5, 0))
        ux, uy = 0.5 * s, 0.5 * s + 0.5
        n = math.hypot(ux, uy)
        vx, vy = 0.5 * ux / n + 0.5, 0.5 * uy / n
        close(per.centres[0], [vx / math.hypot(vx, vy), vy / math.hypot(vx, vy)])
        assert per.initialized.tolist() == [True, False]

    def test_exclude_and_bad_rule(self):
        c = ClassCentres(2, 2, 0.5, "per_sample")
        changed = c.update(
            T([[1.0, 0.0], [0.0, 1.0]]), T([0, 1]), exclude=T([False, True]), sync=False
        )
        assert changed.tolist() == [True, False] and c.initialized.tolist() == [True, False]
        with pytest.raises(ValueError, match="exclude must be a \\[2\\] bool mask"):
            c.update(T([[1.0, 0.0]]), T([0]), exclude=T([1]), sync=False)
        with pytest.raises(ValueError, match="centre update"):
            ClassCentres(2, 2, 0.5, "sometimes")


class TestOIM:
    def test_two_steps_by_hand(self):
        oim = OIMLoss(num_classes=2, dim=2, queue_size=2, scale=2.0, momentum=0.5)
        # step 1: the table is all zeros and the queue empty: every logit 0 over the 2 table rows
        x = T([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], requires_grad=True)
        loss, stats = oim(x, T([0, -1, 0]), T([0, 0, 1]))
        close(loss, math.log(2.0))
        assert stats["num_labelled"] == 2 and stats["queue_fill"] == 0.5
        loss.backward()
        close(x.grad, torch.zeros(3, 2))  # the rows are zeros: no gradient yet
        # table row 0: (1,0), then normalize(0.5 (1,0) + 0.5 (0.6,0.8)) = (2, 1) / sqrt(5)
        close(oim.lut, [[2 / R5, 1 / R5], [0.0, 0.0]])
        close(oim.queue.entries()[0], [[0.0, 1.0]])
        # step 2: rows [lut0 = (2,1)/sqrt5, lut1 = 0, queue0 = (0,1)], scale 2
        #   x=(0,1) pid 1: logits (2/sqrt5, 0, 2), target 0 -> -0 + log(e^{2/sqrt5} + 1 + e^2)
        #   x=(1,0) pid 0: logits (4/sqrt5, 0, 0) -> -4/sqrt5 + log(e^{4/sqrt5} + 2)
        l1 = math.log(math.exp(2 / R5) + 1 + math.exp(2))
        l0 = -4 / R5 + math.log(math.exp(4 / R5) + 2)
        x = T([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
        loss, stats = oim(x, T([1, 0]), T([0, 1]))
        close(loss, (l1 + l0) / 2)
        assert stats["acc"] == 0.5  # (0,1) is closest to the queue row, (1,0) to its own row
        # gradient of the first row: 1/2 * scale * (sum_j p_j r_j - r_target), r_target = lut1 = 0
        z = math.exp(2 / R5) + 1 + math.exp(2)
        p = [math.exp(2 / R5) / z, 1 / z, math.exp(2) / z]
        loss.backward()
        close(x.grad[0], [(p[0] * 2 / R5) * 1.0, (p[0] * 1 / R5 + p[2] * 1.0) * 1.0])
        # updates: lut1 <- (0,1); lut0 <- normalize(0.5 (2,1)/sqrt5 + 0.5 (1,0))
        ax, ay = 1 / R5 + 0.5, 0.5 / R5
        close(oim.lut, [[ax / math.hypot(ax, ay), ay / math.hypot(ax, ay)], [0.0, 1.0]])

    def test_eval_mode_changes_nothing_and_no_labelled(self):
        oim = OIMLoss(num_classes=2, dim=2, queue_size=2, scale=2.0).eval()
        loss, stats = oim(T([[1.0, 0.0]]), T([0]), T([0]))
        assert oim.lut.abs().sum() == 0 and oim.queue.fill_ratio() == 0.0
        x = T([[1.0, 0.0]], requires_grad=True)
        loss, stats = oim(x, T([-1]), T([0]))
        assert loss.item() == 0.0 and loss.requires_grad and math.isnan(stats["acc"])

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="num_classes"):
            OIMLoss(num_classes=0, dim=2)
        oim = OIMLoss(num_classes=2, dim=2)
        with pytest.raises(ValueError, match="identity 2"):
            oim(T([[1.0, 0.0]]), T([2]), T([0]))

    def test_criterion_selects_oim(self):
        crit = ReIDCriterion(
            num_classes=2, dim=2, losses=["oim"], options={"oim": {"queue_size": 2, "scale": 2.0}}
        )
        assert crit.dictionary is None and crit.olp is None and crit.oim is not None
        losses, metrics = crit(T([[1.0, 0.0], [0.0, 1.0]]), T([0, -1]), T([0, 1]))
        assert set(losses) == {"loss_oim"}
        close(losses["loss_oim"], math.log(2.0))
        assert metrics["reid/oim_queue_fill"] == 0.5
