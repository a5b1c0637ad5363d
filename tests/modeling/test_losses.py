"""Re-id losses (OLP, HEP, C2HEP, criterion) against hand computations on tiny 2-d vectors.

Every expected value below is written out from the paper's formulas with ``math.exp`` /
``math.log`` on the literal numbers of the test, never copied from the code's output.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dcinet_d2.modeling.losses import (
    C2HEPLoss,
    HEPLoss,
    OLPLoss,
    ReIDCriterion,
    build_label_pools,
    class_hardness,
    hard_negative_mask,
    olp_loss,
)

T = torch.tensor


def leaves(*vectors):
    """One leaf tensor (requires_grad) per vector, and their stack [N, D]."""
    parts = [T(v, dtype=torch.float32, requires_grad=True) for v in vectors]
    return parts, torch.stack(parts)


def nll(logit_target: float, logits_all) -> float:
    """-log(e^t / sum_j e^{l_j}) by hand."""
    return -math.log(math.exp(logit_target) / sum(math.exp(v) for v in logits_all))


def assert_vec(actual: torch.Tensor, expected, tol: float = 1e-5) -> None:
    assert actual is not None
    assert torch.allclose(actual, T(expected, dtype=torch.float32), atol=tol), (actual, expected)


# --------------------------------------------------------------------------------------- OLP
class TestOLP:
    # Pair of images 0 and 1.
    # image 0: a0=(1,0) pid 0, u0=(0,1) unlabelled, b0=(0.6,0.8) pid 1 (no positive in image 1)
    # image 1: a1=(0.8,0.6) pid 0, c1=(-0.6,0.8) pid 2 (no positive in image 0)
    # dictionary: d0=(0,1) pid -1, d1=(0.6,-0.8) pid 0 (positive of the anchors: excluded),
    #             d2=(-1,0) pid 3
    S = 2.0

    def setup_method(self):
        self.parts, self.embeds = leaves([1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6], [-0.6, 0.8])
        self.pids = T([0, -1, 1, 0, 2])
        self.image_ids = T([0, 0, 0, 1, 1])
        self.dict_feats = T([[0.0, 1.0], [0.6, -0.8], [-1.0, 0.0]], requires_grad=True)
        self.dict_pids = T([-1, 0, 3])

    def test_value_and_stats(self):
        loss, stats = olp_loss(
            self.embeds, self.pids, self.image_ids, self.dict_feats, self.dict_pids, self.S
        )
        s = self.S
        # anchor a0, positive a1: a0.a1 = 0.8; negatives d0 (a0.d0 = 0), d2 (a0.d2 = -1)
        term0 = nll(s * 0.8, [s * 0.8, s * 0.0, s * -1.0])
        # anchor a1, positive a0: 0.8; negatives d0 (0.6), d2 (-0.8)
        term1 = nll(s * 0.8, [s * 0.8, s * 0.6, s * -0.8])
        assert loss.item() == pytest.approx((term0 + term1) / 2, rel=1e-6)
        assert stats["num_terms"] == 2
        assert stats["num_anchors"] == 2
        assert stats["pos_sim"] == pytest.approx(0.8)
        assert stats["neg_sim"] == pytest.approx((0.0 - 1.0 + 0.6 - 0.8) / 4)

    def test_gradient_into_anchors_only(self):
        loss, _ = olp_loss(
            self.embeds, self.pids, self.image_ids, self.dict_feats, self.dict_pids, self.S
        )
        loss.backward()
        s = self.S
        a0, u0, b0, a1, c1 = self.parts

        # d/da [-log(e^{s a.p} / Z)] = s * ((q_p - 1) p + sum_n q_n n), q = softmax of the logits;
        # the loss is the mean of 2 terms, hence the factor 1/2. Positives are detached, so a0
        # gets nothing from the term where it is the positive of a1 (and vice versa).
        def grad(p, p_logit, negs):
            z = math.exp(s * p_logit) + sum(math.exp(s * sim) for sim, _ in negs)
            g = [(math.exp(s * p_logit) / z - 1.0) * p[0], (math.exp(s * p_logit) / z - 1.0) * p[1]]
            for sim, n in negs:
                q = math.exp(s * sim) / z
                g = [g[0] + q * n[0], g[1] + q * n[1]]
            return [s * g[0] / 2, s * g[1] / 2]

        assert_vec(a0.grad, grad([0.8, 0.6], 0.8, [(0.0, [0, 1]), (-1.0, [-1, 0])]))
        assert_vec(a1.grad, grad([1.0, 0.0], 0.8, [(0.6, [0, 1]), (-0.8, [-1, 0])]))
        # unlabelled, labelled without positive: zero gradient; dictionary: no gradient at all
        for t in (u0, b0, c1):
            assert_vec(t.grad, [0.0, 0.0], tol=0)
        assert self.dict_feats.grad is None

    def test_module_matches_function(self):
        loss_f, _ = olp_loss(
            self.embeds, self.pids, self.image_ids, self.dict_feats, self.dict_pids, self.S
        )
        loss_m, _ = OLPLoss(self.S)(
            self.embeds, self.pids, self.image_ids, self.dict_feats, self.dict_pids
        )
        assert loss_m.item() == loss_f.item()

    def test_several_positives_and_other_pairs(self):
        # image 0: x=(1,0) pid 0, y=(0,1) pid 5;  image 1: p1=(0.8,0.6) pid 0, p2=(0.6,0.8) pid 0
        # image 2: z=(0,1) pid 0 (pair 1: not a positive of pair 0);  image 3: w=(0.6,0.8) pid 5
        # (pid 5 lives in images 0 and 3, which are not partners: no term)
        # dictionary: n=(0,1) pid -1;  s = 1
        _, embeds = leaves([1, 0], [0, 1], [0.8, 0.6], [0.6, 0.8], [0, 1], [0.6, 0.8])
        pids = T([0, 5, 0, 0, 0, 5])
        image_ids = T([0, 0, 1, 1, 2, 3])
        loss, stats = olp_loss(embeds, pids, image_ids, T([[0.0, 1.0]]), T([-1]), 1.0)
        terms = [
            nll(0.8, [0.8, 0.0]),  # x with p1 (x.n = 0)
            nll(0.6, [0.6, 0.0]),  # x with p2
            nll(0.8, [0.8, 0.6]),  # p1 with x (p1.n = 0.6)
            nll(0.6, [0.6, 0.8]),  # p2 with x (p2.n = 0.8)
        ]
        assert stats["num_terms"] == 4
        assert stats["num_anchors"] == 3
        assert loss.item() == pytest.approx(sum(terms) / 4, rel=1e-6)

    def test_own_identity_never_a_negative(self):
        # Only entries of the anchor's identity in the dictionary: no negative, term = -log 1 = 0
        _, embeds = leaves([1, 0], [0.8, 0.6])
        dict_feats = T([[1.0, 0.0], [0.0, 1.0]])
        loss, stats = olp_loss(embeds, T([4, 4]), T([0, 1]), dict_feats, T([4, 4]), 10.0)
        assert loss.item() == 0.0
        assert math.isnan(stats["neg_sim"])
        # one unlabelled entry added -> term = -log(e^{s 0.8} / (e^{s 0.8} + e^{s a.n}))
        loss, _ = olp_loss(
            embeds, T([4, 4]), T([0, 1]), T([[1.0, 0.0], [0.0, 1.0]]), T([4, -1]), 1.0
        )
        expected = (nll(0.8, [0.8, 0.0]) + nll(0.8, [0.8, 0.6])) / 2
        assert loss.item() == pytest.approx(expected, rel=1e-6)

    def test_empty_dictionary_zero_loss_and_finite_zero_gradient(self):
        parts, embeds = leaves([1, 0], [0.8, 0.6])
        loss, stats = olp_loss(embeds, T([4, 4]), T([0, 1]), torch.zeros(0, 2), T([]).long(), 10.0)
        assert loss.item() == 0.0 and stats["num_terms"] == 2
        loss.backward()
        for p in parts:
            assert_vec(p.grad, [0.0, 0.0], tol=0)

    def test_no_anchor_zero_but_connected(self):
        # identity 1 only in image 0, identity 2 only in image 1, one unlabelled person
        parts, embeds = leaves([1, 0], [0, 1], [0.6, 0.8])
        loss, stats = olp_loss(embeds, T([1, 2, -1]), T([0, 1, 1]), T([[1.0, 0.0]]), T([-1]), 10.0)
        assert loss.item() == 0.0 and loss.requires_grad
        assert stats["num_terms"] == 0 and math.isnan(stats["pos_sim"])
        loss.backward()
        for p in parts:
            assert_vec(p.grad, [0.0, 0.0], tol=0)


# ------------------------------------------------------------------------------ label pool
class TestLabelPool:
    # anchors of one pair: a=(1,0) pid 0, b=(0,1) pid 2
    # candidates:        sim to a   sim to b
    #   k0 (0.8,0.6)  pid 3   0.8        0.6
    #   k1 (0.6,-0.8) pid 4   0.6       -0.8
    #   k2 (1,0)      pid 0   (own)      0.0
    #   k3 (0,1)      pid -1  never a labelled negative
    #   k4 (-0.6,0.8) pid 5  -0.6        0.8
    #   k5 (0.28,0.96) pid 2  0.28      (own)
    # top-2 of a: k0 (3), k1 (4);  top-2 of b: k4 (5), k0 (3)  ->  hard = {3, 4, 5}
    # top-1 of a: k0 (3);          top-1 of b: k4 (5)          ->  hard = {3, 5}
    anchor_feats = T([[1.0, 0.0], [0.0, 1.0]])
    anchor_pids = T([0, 2])
    cand_feats = T([[0.8, 0.6], [0.6, -0.8], [1.0, 0.0], [0.0, 1.0], [-0.6, 0.8], [0.28, 0.96]])
    cand_pids = T([3, 4, 0, -1, 5, 2])

    def hard(
        self,
        num_hard,
        anchor_feats=None,
        anchor_pids=None,
        cand_pids=None,
        cand_feats=None,
        num_classes=10,
    ):
        """Per row, the sorted hard classes; and their union."""
        a = self.anchor_feats if anchor_feats is None else anchor_feats
        ya = self.anchor_pids if anchor_pids is None else anchor_pids
        k = self.cand_feats if cand_feats is None else cand_feats
        yk = self.cand_pids if cand_pids is None else cand_pids
        mask = hard_negative_mask(class_hardness(a, k, yk, num_classes), ya, num_hard)
        assert mask.shape == (len(ya), num_classes) and mask.dtype == torch.bool
        rows = [row.nonzero().flatten().tolist() for row in mask]
        return rows, mask.any(dim=0).nonzero().flatten().tolist()

    def pool(self, pool_size, num_hard, num_classes=10, fill_allowed=None, generator=None):
        hardness = class_hardness(self.anchor_feats, self.cand_feats, self.cand_pids, num_classes)
        hard = hard_negative_mask(hardness, self.anchor_pids, num_hard)
        pools = build_label_pools(
            self.anchor_pids,
            T([0, 0]),
            1,
            hard,
            pool_size,
            fill_allowed=fill_allowed,
            generator=generator,
        )
        assert pools.shape == (1, num_classes)
        return pools[0].nonzero().flatten().tolist()

    def test_class_hardness(self):
        # best candidate per class; -inf for classes without a labelled candidate (1, 6..9; pid -1)
        h = class_hardness(self.anchor_feats, self.cand_feats, self.cand_pids, 10)
        inf = float("-inf")
        assert h[0].tolist() == pytest.approx([1.0, inf, 0.28, 0.8, 0.6, -0.6, inf, inf, inf, inf])
        assert h[1].tolist() == pytest.approx([0.0, inf, 0.96, 0.6, -0.8, 0.8, inf, inf, inf, inf])

    def test_hard_negatives(self):
        assert self.hard(2) == ([[3, 4], [3, 5]], [3, 4, 5])
        assert self.hard(1) == ([[3], [5]], [3, 5])
        assert self.hard(0) == ([[], []], [])
        # more than available: all labelled negatives of a (3, 4, 5, 2) and b (3, 4, 0, 5)
        assert self.hard(50) == ([[2, 3, 4, 5], [0, 3, 4, 5]], [0, 2, 3, 4, 5])
        # an unlabelled row has no hard class
        assert self.hard(2, anchor_pids=T([0, -1])) == ([[3, 4], []], [3, 4])

    def test_pair_and_hard_never_truncated(self):
        assert self.pool(pool_size=0, num_hard=2) == [0, 2, 3, 4, 5]
        assert self.pool(pool_size=3, num_hard=1) == [0, 2, 3, 5]
        assert self.pool(pool_size=0, num_hard=0) == [0, 2]

    def test_pools_per_pair(self):
        # a (pid 0) in pair 0; b (pid 2) and an unlabelled row in pair 1; pair 2 holds nothing
        feats = torch.cat([self.anchor_feats, T([[0.6, -0.8]])])
        pids = T([0, 2, -1])
        hardness = class_hardness(feats, self.cand_feats, self.cand_pids, 10)
        hard = hard_negative_mask(hardness, pids, 1)
        pools = build_label_pools(pids, T([0, 1, 1]), 3, hard, pool_size=0)
        assert [p.nonzero().flatten().tolist() for p in pools] == [[0, 3], [2, 5], []]
        # with random filling up to 4: the two pairs get 2 random classes each, the empty one none
        pools = build_label_pools(pids, T([0, 1, 1]), 3, hard, pool_size=4)
        assert pools.sum(dim=1).tolist() == [4, 4, 0]
        assert pools[0, [0, 3]].all() and pools[1, [2, 5]].all()

    def test_random_filling(self):
        g = torch.Generator().manual_seed(0)
        drawn = {c: 0 for c in range(10)}
        for _ in range(1000):
            pool = self.pool(pool_size=7, num_hard=2, generator=g)
            assert len(pool) == 7 and {0, 2, 3, 4, 5} <= set(pool) <= set(range(10))
            for c in set(pool) - {0, 2, 3, 4, 5}:
                drawn[c] += 1
        # the 2 random identities are drawn uniformly among the 5 others: each 2/5 of the time
        # (400 of 1,000; binomial std 15.5)
        assert {c for c, n in drawn.items() if n} == {1, 6, 7, 8, 9}
        assert all(abs(drawn[c] - 400) < 80 for c in (1, 6, 7, 8, 9)), drawn
        assert self.pool(pool_size=10, num_hard=2) == list(range(10))
        assert self.pool(pool_size=50, num_hard=2) == list(range(10))
        # filling restricted to given identities (C2HEP: the initialised classes)
        allowed = torch.zeros(10, dtype=torch.bool)
        allowed[[1, 7, 2]] = True
        assert self.pool(pool_size=50, num_hard=1, fill_allowed=allowed) == [0, 1, 2, 3, 5, 7]

    def test_hard_classes_not_entries(self):
        # Entries of a=(1,0) pid 0, by similarity: k0 pid 3 (1.0), k1 pid 3 (0.8), k2 pid 7 (0.6),
        # k3 pid 9 (0.0), k4 pid 0 (own, 0.8 ignored). Classes by their best entry: 3 (1.0),
        # 7 (0.6), 9 (0.0). The top-2 *classes* are {3, 7}; the top-2 entries would give {3}.
        cand = dict(
            cand_feats=T([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [0.8, -0.6]]),
            cand_pids=T([3, 3, 7, 9, 0]),
        )
        a = dict(anchor_feats=T([[1.0, 0.0]]), anchor_pids=T([0]))
        assert self.hard(2, **a, **cand)[1] == [3, 7]
        assert self.hard(1, **a, **cand)[1] == [3]
        assert self.hard(3, **a, **cand)[1] == [3, 7, 9]
        # a class is ranked by its best entry, not by its number of entries: b=(0,1) pid 5 sees
        # 9 (1.0), 7 (0.8), 3 (0.6; its other entry 0.0), 0 (-0.6)
        b = dict(anchor_feats=T([[0.0, 1.0]]), anchor_pids=T([5]))
        assert self.hard(2, **b, **cand)[1] == [7, 9]
        assert self.hard(3, **b, **cand)[1] == [3, 7, 9]
        # only unlabelled candidates (and empty dictionary slots, pid -2): no hard class
        unlabelled = T([-1, -2, -1, -2, -1])
        assert self.hard(2, **a, cand_feats=cand["cand_feats"], cand_pids=unlabelled)[1] == []


# ----------------------------------------------------------------------------------- HEP
class TestHEP:
    # C = 5, D = 2, scale 2, num_hard 1, pool_size 0 (no random filling).
    # weights (normalised in the logits): w0=(1,0), w1=(0,1), w2=(-3,0)->(-1,0), w3=(0,-2)->(0,-1),
    #   w4=(1,1) (in no pool)
    # pair 0: image 0: e0=(1,0) pid 0, e1=(0,1) unlabelled;  image 1: e2=(0.6,0.8) pid 1
    # pair 1: image 2: e3=(0.6,-0.8) pid 0;                   image 3: e4=(0,1) unlabelled
    # dictionary: (0.6,0.8) pid 2, (0,-1) pid 3, (1,0) pid -1
    # hard (top 1): e0 -> pid 2 (0.6 > 0), e2 -> pid 2 (1.0 > -0.8), e3 -> pid 3 (0.8 > -0.28)
    # pools: pair 0 {0,1,2}, pair 1 {0,3}
    def make(self):
        hep = HEPLoss(num_classes=5, dim=2, pool_size=0, num_hard=1, scale=2.0)
        with torch.no_grad():
            hep.weight.copy_(T([[1.0, 0.0], [0.0, 1.0], [-3.0, 0.0], [0.0, -2.0], [1.0, 1.0]]))
        parts, embeds = leaves([1, 0], [0, 1], [0.6, 0.8], [0.6, -0.8], [0, 1])
        pids = T([0, -1, 1, 0, -1])
        image_ids = T([0, 0, 1, 2, 3])
        dict_feats = T([[0.6, 0.8], [0.0, -1.0], [1.0, 0.0]])
        dict_pids = T([2, 3, -1])
        return hep, parts, (embeds, pids, image_ids, dict_feats, dict_pids)

    def test_value_stats_gradients(self):
        hep, parts, args = self.make()
        loss, stats = hep(*args)
        # e0 over {0,1,2}: logits 2*(1, 0, -1), target 0
        t0 = nll(2.0, [2.0, 0.0, -2.0])
        # e2 over {0,1,2}: logits 2*(0.6, 0.8, -0.6), target 1
        t2 = nll(1.6, [1.2, 1.6, -1.2])
        # e3 over {0,3}: logits 2*(0.6, 0.8), target 0 (argmax is 3: wrong)
        t3 = nll(1.2, [1.2, 1.6])
        assert loss.item() == pytest.approx((t0 + t2 + t3) / 3, rel=1e-6)
        assert stats["acc"] == pytest.approx(2 / 3)
        assert stats["pool_size"] == pytest.approx(2.5)
        assert stats["num_labelled"] == 3

        loss.backward()
        e0, e1, e2, e3, e4 = parts
        # d/dx CE = s * (sum_c q_c w_c - w_y) / 3;  e3: q0 = e^1.2/(e^1.2+e^1.6), q3 = 1 - q0
        q0 = math.exp(1.2) / (math.exp(1.2) + math.exp(1.6))
        assert_vec(e3.grad, [2 * (q0 * 1 - 1) / 3, 2 * ((1 - q0) * -1) / 3])
        assert_vec(e1.grad, [0.0, 0.0], tol=0)
        assert_vec(e4.grad, [0.0, 0.0], tol=0)
        # class 4 is in no pool: zero gradient; classes in a pool get one
        g = hep.weight.grad
        assert torch.equal(g[4], torch.zeros(2))
        assert all(g[c].abs().sum() > 0 for c in range(4))

    def test_full_softmax_when_pool_is_everything(self):
        # pool_size = C: plain cosine softmax over all 5 classes for e3 = (0.6,-0.8), pid 0:
        # cos with w0..w4 = 0.6, -0.8, -0.6, 0.8, (0.6-0.8)/sqrt(2)
        hep = HEPLoss(num_classes=5, dim=2, pool_size=5, num_hard=1, scale=2.0)
        with torch.no_grad():
            hep.weight.copy_(T([[1.0, 0.0], [0.0, 1.0], [-3.0, 0.0], [0.0, -2.0], [1.0, 1.0]]))
        loss, stats = hep(T([[0.6, -0.8]]), T([0]), T([0]), torch.zeros(0, 2), T([]).long())
        cos = [0.6, -0.8, -0.6, 0.8, -0.2 / math.sqrt(2)]
        assert loss.item() == pytest.approx(nll(1.2, [2 * c for c in cos]), rel=1e-6)
        assert stats["pool_size"] == 5 and stats["acc"] == 0.0

    def test_no_labelled_person(self):
        hep, parts, (embeds, _, image_ids, dict_feats, dict_pids) = self.make()
        loss, stats = hep(embeds, torch.full((5,), -1), image_ids, dict_feats, dict_pids)
        assert loss.item() == 0.0 and loss.requires_grad and math.isnan(stats["acc"])
        loss.backward()
        assert torch.equal(hep.weight.grad, torch.zeros(5, 2))  # connected: a gradient, zero
        assert_vec(parts[0].grad, [0.0, 0.0], tol=0)


# --------------------------------------------------------------------------------- C2HEP
class TestC2HEP:
    # C = 4, D = 2, scale 2, num_hard 1, pool_size 0, momentum 0.5.
    # centres before: c0=(1,0), c1=(0,1), c3=(0,-1) initialised; class 2 never seen.
    # batch: image 0: e0=(0,1) pid 0, e1=(0.8,0.6) pid 2;  image 1: e2=(1,0) pid 2, e3=(0,1) unl.
    # 1) fresh class 2: m2 = ((0.8+1)/2, (0.6+0)/2) = (0.9, 0.3) -> c2 = (0.9, 0.3)/sqrt(0.9)
    # 2) hard (top 1, own class excluded, initialised centres only):
    #    e0 (pid 0): c1 1.0, c2 0.3/sqrt(.9)=0.316, c3 -1 -> 1;  e1, e2 (pid 2): c0 best -> 0
    #    pool {0,1,2}; the loss uses c0 = (1,0), i.e. the centre BEFORE the momentum update
    # 3) class 0 (seen): c0 = normalize(0.5*(1,0) + 0.5*(0,1)) = (1,1)/sqrt(2);
    #    class 2 (fresh) stays (0.9,0.3)/sqrt(0.9); c1, c3 unchanged
    def make(self, momentum=0.5):
        loss = C2HEPLoss(
            num_classes=4, dim=2, pool_size=0, num_hard=1, scale=2.0, momentum=momentum
        )
        with torch.no_grad():
            loss.centres.centres.copy_(T([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, -1.0]]))
            loss.centres.initialized.copy_(T([True, True, False, True]))
        parts, embeds = leaves([0, 1], [0.8, 0.6], [1, 0], [0, 1])
        return loss, parts, (embeds, T([0, 2, 2, -1]), T([0, 0, 1, 1]))

    def test_value_and_centre_update(self):
        c2hep, parts, args = self.make()
        loss, stats = c2hep(*args)
        r = math.sqrt(0.9)
        c2 = (0.9 / r, 0.3 / r)
        # e0=(0,1) over {0,1,2}: cos (0, 1, c2[1]), target 0
        t0 = nll(0.0, [0.0, 2.0, 2 * c2[1]])
        # e1=(0.8,0.6): cos (0.8, 0.6, 0.8*c2[0]+0.6*c2[1]), target 2
        s1 = 0.8 * c2[0] + 0.6 * c2[1]
        t1 = nll(2 * s1, [1.6, 1.2, 2 * s1])
        # e2=(1,0): cos (1, 0, c2[0]), target 2
        t2 = nll(2 * c2[0], [2.0, 0.0, 2 * c2[0]])
        assert loss.item() == pytest.approx((t0 + t1 + t2) / 3, rel=1e-6)
        # argmax: e0 -> 1 (wrong), e1 -> 2 (right, 0.949 > 0.8), e2 -> 0 (wrong, 1 > 0.949)
        assert stats["acc"] == pytest.approx(1 / 3)
        assert stats["pool_size"] == 3 and stats["num_fresh"] == 1

        s = 1 / math.sqrt(2)
        expected = T([[s, s], [0.0, 1.0], [c2[0], c2[1]], [0.0, -1.0]])
        assert torch.allclose(c2hep.centres.centres, expected, atol=1e-6)
        assert c2hep.centres.initialized.tolist() == [True, True, True, True]

        loss.backward()  # the in-place centre update must not break the backward pass
        assert_vec(parts[3].grad, [0.0, 0.0], tol=0)  # unlabelled
        assert parts[0].grad.abs().sum() > 0
        assert not c2hep.centres.centres.requires_grad

    def test_second_step_uses_momentum_for_all_seen(self):
        # momentum 0.25; step 2 feeds e=(0,1) pid 2 and e=(0.6,0.8) pid 1 (pair of images 0, 1).
        c2hep, _, args = self.make(momentum=0.25)
        c2hep(*args)
        r = math.sqrt(0.9)
        c2_old = (0.9 / r, 0.3 / r)
        c2hep(T([[0.0, 1.0], [0.6, 0.8]]), T([2, 1]), T([0, 1]))
        # c2 = normalize(0.25*c2_old + 0.75*(0,1));  c1 = normalize(0.25*(0,1) + 0.75*(0.6,0.8))
        v2 = (0.25 * c2_old[0], 0.25 * c2_old[1] + 0.75)
        v1 = (0.75 * 0.6, 0.25 + 0.75 * 0.8)
        n2, n1 = math.hypot(*v2), math.hypot(*v1)
        assert_vec(c2hep.centres.centres[2], [v2[0] / n2, v2[1] / n2], tol=1e-6)
        assert_vec(c2hep.centres.centres[1], [v1[0] / n1, v1[1] / n1], tol=1e-6)

    def test_random_filling_only_from_initialised_classes(self):
        c2hep = C2HEPLoss(num_classes=6, dim=2, pool_size=10, num_hard=1, scale=2.0)
        with torch.no_grad():
            c2hep.centres.centres[:2] = T([[1.0, 0.0], [0.0, 1.0]])
            c2hep.centres.initialized[:2] = True
        # class 3 fresh this step; classes 2, 4, 5 never seen: the pool is {0, 1, 3}
        _, stats = c2hep(T([[0.6, 0.8]]), T([3]), T([0]))
        assert stats["pool_size"] == 3

    def test_eval_mode_changes_no_buffer(self):
        c2hep, _, args = self.make()
        before = {k: v.clone() for k, v in c2hep.state_dict().items()}
        c2hep.eval()
        loss_eval, _ = c2hep(*args)
        for k, v in c2hep.state_dict().items():
            assert torch.equal(v, before[k])
        c2hep.train()
        loss_train, _ = c2hep(*args)
        assert loss_eval.item() == pytest.approx(loss_train.item(), rel=1e-6)

    def test_no_labelled_person(self):
        c2hep, parts, (embeds, _, image_ids) = self.make()
        before = c2hep.centres.centres.clone()
        loss, stats = c2hep(embeds, torch.full((4,), -1), image_ids)
        assert loss.item() == 0.0 and loss.requires_grad and stats["num_fresh"] == 0
        loss.backward()
        assert_vec(parts[0].grad, [0.0, 0.0], tol=0)
        assert torch.equal(c2hep.centres.centres, before)


# ----------------------------------------------------------------------------- criterion
def all_three(num_classes: int, dim: int, dictionary_size: int, pool_size: int | None = None):
    """A criterion with OLP, HEP and C2HEP; ``pool_size``, when given, for both HEP and C2HEP."""
    options = None
    if pool_size is not None:
        options = {"hep": {"pool_size": pool_size}, "c2hep": {"pool_size": pool_size}}
    return ReIDCriterion(
        num_classes=num_classes,
        dim=dim,
        losses=["olp", "hep", "c2hep"],
        dictionary_size=dictionary_size,
        options=options,
    )


class TestCriterion:
    def test_first_step_sees_empty_dictionary_then_enqueues_all(self):
        crit = ReIDCriterion(
            num_classes=3,
            dim=2,
            losses=["olp"],
            weights={"olp": 0.5},
            dictionary_size=8,
            options={"olp": {"scale": 1.0}},
        )
        # image 0: (1,0) pid 0, (0,1) unlabelled;  image 1: (0.8,0.6) pid 0
        embeds = T([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]], requires_grad=True)
        pids, image_ids = T([0, -1, 0]), T([0, 0, 1])
        losses, metrics = crit(embeds, pids, image_ids)
        # the dictionary was empty: each term is -log(1) = 0 (own embeddings are not negatives)
        assert set(losses) == {"loss_olp"} and losses["loss_olp"].item() == 0.0
        assert metrics["reid/dict_fill"] == pytest.approx(3 / 8)
        assert math.isnan(metrics["reid/olp_neg_sim"])  # undefined: NaN, skipped by the logger
        feats, dpids = crit.dictionary.entries()
        assert torch.equal(feats, embeds.detach()) and dpids.tolist() == [0, -1, 0]

        # step 2, same batch: negatives = the unlabelled entry (0,1); the two pid-0 entries are not
        losses, metrics = crit(embeds, pids, image_ids)
        expected = (nll(0.8, [0.8, 0.0]) + nll(0.8, [0.8, 0.6])) / 2
        assert losses["loss_olp"].item() == pytest.approx(0.5 * expected, rel=1e-6)
        assert metrics["reid/olp_neg_sim"] == pytest.approx(0.3)
        assert metrics["reid/dict_fill"] == pytest.approx(6 / 8)

    def test_weights_and_selection(self):
        torch.manual_seed(0)
        crit = ReIDCriterion(
            num_classes=4,
            dim=2,
            losses=["c2hep", "hep"],
            weights={"hep": 2.0, "c2hep": 3.0},
            dictionary_size=8,
            options={"hep": {"pool_size": 4}, "c2hep": {"pool_size": 4}},
        )
        assert crit.olp is None and crit.dictionary is not None
        embeds = F.normalize(torch.randn(4, 2), dim=1)
        pids, image_ids = T([0, 1, 1, 2]), T([0, 0, 1, 1])
        # pool_size = C = 4: HEP's pool is all classes, deterministic; compare with the module
        ref_hep, _ = crit.hep(embeds, pids, image_ids, torch.zeros(0, 2), T([]).long())
        losses, metrics = crit(embeds, pids, image_ids)
        assert set(losses) == {"loss_hep", "loss_c2hep"}
        assert losses["loss_hep"].item() == pytest.approx(2.0 * ref_hep.item(), rel=1e-6)
        assert metrics["reid/hep_pool_size"] == 4
        # c2hep: all 3 classes fresh, pool = the 3 initialised classes
        assert metrics["reid/c2hep_pool_size"] == 3
        assert metrics["reid/pool_size"] == pytest.approx(3.5)

        only_c2hep = ReIDCriterion(num_classes=4, dim=2, losses=["c2hep"])
        assert only_c2hep.dictionary is None and only_c2hep.hep is None
        with pytest.raises(ValueError):
            ReIDCriterion(num_classes=4, dim=2, losses=["triplet"])
        with pytest.raises(ValueError):
            crit(embeds, T([0, 1, 4, 2]), image_ids)

    def test_options_reach_the_loss_modules_and_bad_ones_are_named(self):
        crit = ReIDCriterion(
            num_classes=4,
            dim=2,
            losses=["olp", "c2hep"],
            options={
                "olp": {"scale": 3.0, "term_weight": "identity"},
                "c2hep": {"pool_size": 2, "num_hard": 1, "momentum": 0.25, "update": "per_sample"},
                "oim": {"queue_size": 7},
            },  # not selected: ignored
        )
        assert (crit.olp.scale, crit.olp.term_weight) == (3.0, "identity")
        c2hep = crit.c2hep
        assert (c2hep.num_classes, c2hep.dim, c2hep.pool_size, c2hep.num_hard) == (4, 2, 2, 1)
        assert (c2hep.centres.momentum, c2hep.centres.update_rule) == (0.25, "per_sample")
        assert crit.oim is None
        with pytest.raises(ValueError, match="c2hep options.*pool"):
            ReIDCriterion(num_classes=4, dim=2, losses=["c2hep"], options={"c2hep": {"pool": 2}})
        with pytest.raises(ValueError, match="dim"):
            ReIDCriterion(num_classes=4, dim=2, losses=["hep"], options={"hep": {"dim": 3}})
        with pytest.raises(ValueError, match="triplet"):
            ReIDCriterion(num_classes=4, dim=2, losses=["olp"], options={"triplet": {}})

    def test_no_labelled_person_all_zero_and_connected(self):
        crit = all_three(num_classes=3, dim=2, dictionary_size=4, pool_size=3)
        crit.dictionary.enqueue(T([[1.0, 0.0]]), T([1]))
        embeds = T([[0.6, 0.8], [0.8, 0.6]], requires_grad=True)
        losses, metrics = crit(embeds, T([-1, -1]), T([0, 1]))
        assert set(losses) == {"loss_olp", "loss_hep", "loss_c2hep"}
        total = sum(losses.values())
        assert total.item() == 0.0
        total.backward()
        assert torch.equal(embeds.grad, torch.zeros(2, 2))
        assert torch.equal(crit.hep.weight.grad, torch.zeros(3, 2))
        assert metrics["reid/num_labelled"] == 0 and math.isnan(metrics["reid/hep_acc"])
        # the unlabelled embeddings are still enqueued, after the one entry already there
        assert crit.dictionary.pids.tolist() == [1, -1, -1, -2]

    def test_empty_batch(self):
        crit = all_three(num_classes=3, dim=2, dictionary_size=4)
        embeds = torch.zeros(0, 2, requires_grad=True)
        losses, metrics = crit(embeds, T([]).long(), T([]).long())
        assert all(v.item() == 0.0 for v in losses.values())
        assert metrics["reid/dict_fill"] == 0.0

    def test_eval_mode_leaves_memories(self):
        crit = all_three(num_classes=3, dim=2, dictionary_size=4)
        crit.eval()
        crit(T([[1.0, 0.0], [0.0, 1.0]]), T([0, 0]), T([0, 1]))
        assert crit.dictionary.num_filled.item() == 0
        assert not crit.c2hep.centres.initialized.any()

    def test_state_dict_round_trip(self):
        torch.manual_seed(1)
        crit = all_three(num_classes=5, dim=3, dictionary_size=6, pool_size=3)
        for _ in range(3):
            crit(F.normalize(torch.randn(4, 3), dim=1), T([0, 3, -1, 0]), T([0, 0, 1, 1]))
        fresh = all_three(num_classes=5, dim=3, dictionary_size=6, pool_size=3)
        fresh.load_state_dict(crit.state_dict())
        keys = {
            "dictionary.feats",
            "dictionary.pids",
            "dictionary.ptr",
            "dictionary.num_filled",
            "hep.weight",
            "c2hep.centres.centres",
            "c2hep.centres.initialized",
        }
        assert set(crit.state_dict()) == keys
        for k, v in crit.state_dict().items():
            assert torch.equal(fresh.state_dict()[k], v), k
        # both continue identically: ptr 12 % 6 = 0, the next write goes to slot 0
        x = F.normalize(torch.randn(2, 3), dim=1)
        for c in (crit, fresh):
            c(x, T([4, 4]), T([0, 1]))
        assert torch.equal(fresh.dictionary.feats, crit.dictionary.feats)
        assert torch.equal(fresh.dictionary.feats[:2], x)
        assert torch.equal(fresh.c2hep.centres.centres, crit.c2hep.centres.centres)


# ------------------------------------------------------------------------ OLP term weighting
class TestOLPTermWeight:
    # Pair (images 0, 1), scale 1, one dictionary entry n=(0,1) (unlabelled, a negative of all).
    # identity 0: a1=(1,0), a2=(0,1) in image 0; b1=(1,0) in image 1
    # identity 1: c=(0,1) in image 0; d=(0,1) in image 1
    # term(anchor, positive) = log(1 + e^{a.n - a.p}):
    #   a1->b1: log(1+e^-1)   a2->b1: log(1+e)   b1->a1: log(1+e^-1)   b1->a2: log 2
    #   c->d: log 2           d->c: log 2
    L1, L2, LOG2 = math.log(1 + math.exp(-1)), math.log(1 + math.e), math.log(2)

    def loss(self, term_weight):
        embeds = T([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        pids, image_ids = T([0, 0, 0, 1, 1]), T([0, 0, 1, 0, 1])
        loss, stats = olp_loss(embeds, pids, image_ids, T([[0.0, 1.0]]), T([-1]), 1.0, term_weight)
        assert stats["num_terms"] == 6
        return loss.item()

    def test_weightings(self):
        L1, L2, LOG2 = self.L1, self.L2, self.LOG2
        assert self.loss("pair") == pytest.approx((2 * L1 + L2 + 3 * LOG2) / 6, abs=1e-6)
        # each anchor weighs 1: b1's two terms weigh 1/2 each; 5 anchors
        assert self.loss("anchor") == pytest.approx(
            (L1 + L2 + 0.5 * (L1 + LOG2) + 2 * LOG2) / 5, abs=1e-6
        )
        # each identity of the pair weighs 1: identity 0's 4 terms 1/4 each, identity 1's 2 terms
        # 1/2
        assert self.loss("identity") == pytest.approx(
            (0.25 * (2 * L1 + L2 + LOG2) + 0.5 * 2 * LOG2) / 2, abs=1e-6
        )
        with pytest.raises(ValueError, match="term_weight"):
            self.loss("image")
