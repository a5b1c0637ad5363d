"""PeriodicMeans (means over a logging period, read once) and HostSyncCounter (host-device
synchronisations counted on any device), against hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dcinet_d2.modeling.losses import ReIDCriterion, olp_loss
from dcinet_d2.utils.host_sync import SYNC_KINDS, HostSyncCounter
from dcinet_d2.utils.periodic_means import PeriodicMeans

T = torch.tensor


# ------------------------------------------------------------------------------ PeriodicMeans
def test_means_skip_undefined_steps_and_mix_tensors_with_numbers():
    means = PeriodicMeans()
    means.add({"acc": T(0.5), "sim": T(float("nan")), "n": 3})
    means.add({"acc": T(1.0), "sim": T(0.25), "n": 5.0})
    means.add({"acc": T(0.0), "sim": T(0.75), "n": math.nan})
    out = means.pop_means()
    assert out == {"acc": pytest.approx(0.5), "sim": pytest.approx(0.5), "n": pytest.approx(4.0)}
    assert means.pop_means() == {}  # reset after the read


def test_a_value_never_defined_is_left_out_and_key_sets_may_change():
    means = PeriodicMeans()
    means.add({"a": T(2.0), "b": T(float("nan"))})
    means.add({"a": T(4.0)})
    assert means.pop_means() == {"a": pytest.approx(3.0)}


def test_non_scalar_value_is_refused():
    with pytest.raises(ValueError, match="v: expected a scalar, got shape \\(2,\\)"):
        PeriodicMeans().add({"v": T([1.0, 2.0])})


def test_adding_does_not_synchronise_and_reading_does_once():
    means = PeriodicMeans()
    with HostSyncCounter() as adding:
        for step in range(3):
            means.add({"a": T(float(step)), "b": T(1.0), "n": 2.0})
    assert adding.total == 0
    with HostSyncCounter() as reading:
        assert means.pop_means() == {"a": 1.0, "b": 1.0, "n": 2.0}
    assert reading.as_dict() == {**{k: 0 for k in SYNC_KINDS}, "tolist": 1}


# ------------------------------------------------------------------------------ HostSyncCounter
def test_counter_sees_each_kind_of_synchronising_call():
    x = T([1.0, -2.0, 3.0])
    mask = x > 0
    with HostSyncCounter() as counter:
        float(x.sum())  # item
        bool(mask.any())  # item
        mask.nonzero()  # nonzero
        x[mask]  # bool_index
        y = x.clone()
        y[mask] = 0.0  # bool_index (index_put_)
        torch.unique(x)  # unique
        x.masked_select(mask)  # masked_select
        torch.repeat_interleave(T([1, 2]))  # repeat_interleave
        x.tolist()  # tolist
        # not counted: shapes, integer indexing, masked arithmetic, bounded repeat_interleave
        x[T([0, 2, 1])] + torch.where(mask, x, torch.zeros_like(x)) * x.numel()
        torch.repeat_interleave(T([1, 2]), output_size=3)
    assert counter.as_dict() == {
        "item": 2,
        "nonzero": 1,
        "bool_index": 2,
        "unique": 1,
        "masked_select": 1,
        "repeat_interleave": 1,
        "tolist": 1,
    }
    assert counter.total == 9
    assert torch.Tensor.tolist(T([1])) == [1]  # the method is restored on exit


def test_olp_loss_never_synchronises():
    """The OLP loss and its statistics: dense masks, so no shape depends on the data and the
    statistics stay on the device."""
    embeds = F.normalize(T([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8]]), dim=1)
    pids, image_ids = T([0, 1, 0, 1]), T([0, 0, 1, 1])
    dict_feats, dict_pids = F.normalize(T([[1.0, 1.0], [1.0, -1.0]]), dim=1), T([2, -1])
    with HostSyncCounter() as counter:
        loss, stats = olp_loss(embeds, pids, image_ids, dict_feats, dict_pids, scale=1.0)
    assert counter.total == 0, counter.counts
    # every pair: 0.8
    assert stats["num_terms"] == 4 and stats["pos_sim"].item() == pytest.approx(0.8)


@pytest.mark.parametrize("losses", [["olp", "hep"], ["olp", "c2hep"]], ids=["I-Net", "DC-I-Net"])
def test_criterion_of_both_heads_never_synchronises(losses):
    """Issue 13: the re-id losses and memory updates of I-Net and DC-I-Net, called as the ROI
    heads call them (number of images given, identities checked upstream), make no
    host-synchronising call; three training steps, so the dictionary holds entries, the centres
    are initialised and updated, and the random pool filling runs. Backward included."""
    torch.manual_seed(0)
    crit = ReIDCriterion(
        6,
        4,
        losses=losses,
        dictionary_size=16,
        options={"hep": {"pool_size": 4, "num_hard": 2}, "c2hep": {"pool_size": 4, "num_hard": 2}},
    )
    pids, image_ids = T([0, 1, -1, 0, 2, 3, -1, 3]), T([0, 0, 0, 1, 2, 2, 3, 3])
    for _ in range(3):
        embeds = F.normalize(torch.randn(8, 4), dim=1).requires_grad_()
        with HostSyncCounter() as counter:
            loss_dict, metrics = crit(embeds, pids, image_ids, num_images=4, check_pids=False)
            sum(loss_dict.values()).backward()
        assert counter.total == 0, counter.counts
        assert all(torch.isfinite(v) for v in loss_dict.values())
        assert embeds.grad.abs().sum() > 0
    # the default call checks the identities on the host: the counter sees those reads
    with HostSyncCounter() as counter:
        crit(F.normalize(torch.randn(8, 4), dim=1), pids, image_ids)
    assert counter.counts["item"] >= 2


def test_criterion_metrics_are_read_by_nobody_but_the_logger():
    """Reading the criterion's metrics is left to the logger: the tensors among them are 0-dim,
    on the embeddings' device, and undefined ones are NaN rather than left out."""
    crit = ReIDCriterion(
        4,
        2,
        losses=["olp", "c2hep"],
        dictionary_size=8,
        options={"c2hep": {"pool_size": 4, "num_hard": 1}},
    )
    embeds = F.normalize(T([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]]), dim=1)
    _, metrics = crit(embeds, T([0, -1, 0]), T([0, 0, 1]))
    tensors = {k: v for k, v in metrics.items() if isinstance(v, torch.Tensor)}
    assert {"reid/olp_pos_sim", "reid/olp_neg_sim", "reid/c2hep_acc", "reid/dict_fill"} <= set(
        tensors
    )
    assert all(v.dim() == 0 for v in tensors.values())
    assert math.isnan(metrics["reid/olp_neg_sim"])  # the dictionary was empty
    assert metrics["reid/olp_pos_sim"] == pytest.approx(0.8)
    assert metrics["reid/dict_fill"] == pytest.approx(3 / 8)


@pytest.mark.parametrize(
    "config_file", ["configs/synthetic/inet_small.yaml", "configs/synthetic/dcinet_small.yaml"]
)
def test_training_step_of_both_heads_has_no_sync_in_the_reid_path(config_file):
    """Issue 13, item 1, through the model: a training step of each small config, with the heads'
    re-id part (``_reid_losses``: criterion, memory updates, metric averaging) counted; the
    second step, once the dictionary holds entries and the centres exist. Neither step writes
    the metrics: their means are read once per ``MODEL.REID.METRICS_PERIOD`` steps, by design."""
    from detectron2.utils.events import EventStorage

    from tests.modeling.common import build_test_model, load_cfg, make_pair_batch, reduce_for_cpu

    model = build_test_model(reduce_for_cpu(load_cfg(config_file), rois_per_image=16)).train()
    heads, counts = model.roi_heads, []
    original = heads._reid_losses

    def counted(*args, **kwargs):
        with HostSyncCounter() as counter:
            out = original(*args, **kwargs)
        counts.append(counter.total)
        return out

    heads._reid_losses = counted
    assert heads.metrics_period > 2
    with EventStorage() as storage:
        for _ in range(2):
            sum(model(make_pair_batch()).values()).backward()
            storage.iter += 1
    assert counts == [0, 0]
    assert heads.criterion.dictionary is None or heads.criterion.dictionary.num_filled.item() > 0
