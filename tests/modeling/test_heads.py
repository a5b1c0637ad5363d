"""Tests of the I-Net / DC-I-Net ROI heads: embedding head, choice of the ROIs to embed, config
glue, forward/backward of every config on a CPU, checkpoints of the memories and of the re-id
module."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from dcinet_d2.data.identities import num_train_identities
from dcinet_d2.modeling.build import build_reid_criterion, reid_dictionary_size
from dcinet_d2.modeling.roi_heads import DCINetROIHeads, EmbeddingHead, INetROIHeads
from tests.ddp import free_port, gloo_group
from tests.modeling.common import (
    PAIR_BATCH_GT,
    build_test_model,
    config_files,
    load_cfg,
    make_pair_batch,
    paper_config_files,
    reduce_for_cpu,
)

DETECTION_LOSSES = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
SMALL_INET = os.path.join("configs", "synthetic", "inet_small.yaml")
SMALL_DCINET = os.path.join("configs", "synthetic", "dcinet_small.yaml")


def _cpu_cfg(config_file):
    """Config reduced for a CPU; the ResNet-50 paper configs also get few ROIs."""
    cfg = load_cfg(config_file)
    cfg.MODEL.REID.METRICS_PERIOD = 1  # these tests read every step's re-id metrics
    if config_file in paper_config_files() or config_file.endswith("Base-DCINet-C4.yaml"):
        return reduce_for_cpu(cfg, rois_per_image=16, test_proposals=20)
    return reduce_for_cpu(cfg)


# ------------------------------------------------------------------------------ EmbeddingHead
def test_embedding_head_without_norm_is_normalised_linear_projection_of_the_mean():
    torch.manual_seed(0)
    head = EmbeddingHead(6, 4, norm="")
    x = torch.randn(5, 6, 3, 3)
    out = head(x)
    pooled = x.sum(dim=(2, 3)) / 9.0
    proj = pooled @ head.proj.weight.t() + head.proj.bias
    expected = proj / proj.pow(2).sum(dim=1, keepdim=True).sqrt()
    assert out.shape == (5, 4)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5), rtol=0, atol=1e-6)
    # pooled [N, C] input gives the same as the feature maps
    torch.testing.assert_close(head(pooled), out, rtol=1e-5, atol=1e-6)


def test_embedding_head_bn_uses_batch_statistics_in_training():
    torch.manual_seed(0)
    head = EmbeddingHead(6, 4, norm="BN").train()
    with torch.no_grad():
        head.norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5, 1.5]))
        head.norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    x = torch.randn(8, 6)
    out = head(x)
    z = x @ head.proj.weight.t() + head.proj.bias
    mean = z.mean(dim=0)
    var = ((z - mean) ** 2).mean(dim=0)  # biased variance, as BatchNorm normalises with
    y = (z - mean) / torch.sqrt(var + 1e-5) * head.norm.weight + head.norm.bias
    torch.testing.assert_close(out, F.normalize(y, dim=1), rtol=1e-4, atol=1e-5)


def test_embedding_head_bn_with_one_row_in_training_uses_running_statistics():
    torch.manual_seed(0)
    head = EmbeddingHead(6, 4, norm="BN")
    with torch.no_grad():
        head.norm.running_mean.copy_(torch.tensor([0.5, -0.5, 0.0, 1.0]))
        head.norm.running_var.copy_(torch.tensor([4.0, 1.0, 0.25, 9.0]))
    x = torch.randn(1, 6)
    head.train()
    out = head(x)
    z = x @ head.proj.weight.t() + head.proj.bias
    y = (z - head.norm.running_mean) / torch.sqrt(head.norm.running_var + 1e-5)
    torch.testing.assert_close(out, F.normalize(y, dim=1), rtol=1e-5, atol=1e-6)
    # the running statistics were not updated by that call
    torch.testing.assert_close(head.norm.running_mean, torch.tensor([0.5, -0.5, 0.0, 1.0]))
    assert head(torch.randn(0, 6)).shape == (0, 4)


def test_embedding_head_stripes_pool_each_horizontal_stripe_by_hand():
    # One channel, a 4x2 map: rows 0-1 (the upper stripe) hold 1, 3 / 5, 7 (mean 4), rows 2-3
    # hold 2, 2 / 0, 4 (mean 2). With two stripes the head projects [4, 2]; with the
    # projection [[1, 0], [1, 1]] + 0 that is [4, 6], normalised [0.5547, 0.8321].
    head = EmbeddingHead(1, 2, norm="", stripes=2)
    with torch.no_grad():
        head.proj.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        head.proj.bias.zero_()
    x = torch.tensor([[1.0, 3.0], [5.0, 7.0], [2.0, 2.0], [0.0, 4.0]]).view(1, 1, 4, 2)
    norm = math.sqrt(4.0**2 + 6.0**2)
    torch.testing.assert_close(head(x), torch.tensor([[4.0 / norm, 6.0 / norm]]))
    # upper and lower swapped: [2, 4] -> [2, 6], another embedding (the mean cannot tell them)
    swapped = torch.cat([x[:, :, 2:], x[:, :, :2]], dim=2)
    norm = math.sqrt(2.0**2 + 6.0**2)
    torch.testing.assert_close(head(swapped), torch.tensor([[2.0 / norm, 6.0 / norm]]))
    # mirror-invariant, like the mean
    torch.testing.assert_close(head(x.flip(3)), head(x))


def test_embedding_head_stripes_concatenate_channel_by_channel():
    # Two channels, two stripes: the projection's inputs are (c0 upper, c0 lower, c1 upper,
    # c1 lower), adaptive average pooling's order flattened.
    head = EmbeddingHead(2, 4, norm="", stripes=2)
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(4))
        head.proj.bias.zero_()
    x = torch.zeros(1, 2, 2, 3)
    x[0, 0, 0] = 1.0  # channel 0, upper stripe
    x[0, 1, 1] = 2.0  # channel 1, lower stripe
    expected = F.normalize(torch.tensor([[1.0, 0.0, 0.0, 2.0]]), dim=1)
    torch.testing.assert_close(head(x), expected)


def test_embedding_head_stripes_reject_bad_inputs():
    with pytest.raises(ValueError, match="EMBED_STRIPES"):
        EmbeddingHead(6, 4, stripes=0)
    head = EmbeddingHead(6, 4, norm="", stripes=4)
    with pytest.raises(ValueError, match="at least 4 cells high"):
        head(torch.randn(2, 6, 3, 3))
    with pytest.raises(ValueError, match="feature maps"):
        head(torch.randn(2, 6))


def test_embedding_head_rejects_unknown_norm():
    with pytest.raises(ValueError, match="EMBED_NORM"):
        EmbeddingHead(6, 4, norm="GN")


# ------------------------------------------------------------------------------ config glue
def test_num_train_identities_from_key_metadata_or_error():
    cfg = load_cfg(SMALL_INET)
    cfg.MODEL.REID.NUM_IDS = 7
    assert num_train_identities(cfg) == 7

    cfg.MODEL.REID.NUM_IDS = 0
    MetadataCatalog.get("dcinet_test_heads_with_ids").set(num_train_ids=12)
    cfg.DATASETS.TRAIN = ("dcinet_test_heads_with_ids",)
    assert num_train_identities(cfg) == 12

    cfg.DATASETS.TRAIN = ("dcinet_test_heads_without_ids",)
    with pytest.raises(ValueError, match="NUM_IDS"):
        num_train_identities(cfg)


def test_dictionary_size_default_rule_and_explicit_value():
    cfg = load_cfg(os.path.join("configs", "cuhk_sysu", "inet_R50_C4.yaml"))
    cfg.MODEL.REID.NUM_IDS = 10
    # 4 steps x 4 images x (128 ROIs x 0.5 foreground)
    assert reid_dictionary_size(cfg) == 1024
    assert build_reid_criterion(cfg).dictionary.size == 1024
    cfg.MODEL.REID.DICTIONARY_SIZE = 300
    assert build_reid_criterion(cfg).dictionary.size == 300


def test_criterion_gets_every_reid_key():
    cfg = load_cfg(os.path.join("configs", "prw", "dcinet_R50_C4.yaml"))
    cfg.MODEL.REID.NUM_IDS = 9
    cfg.MODEL.REID.LOSSES = ["olp", "hep", "c2hep"]
    cfg.MODEL.REID.LOSS_WEIGHTS.HEP = 0.5
    cfg.MODEL.REID.OLP_SCALE = 7.0
    cfg.MODEL.REID.HEP_NUM_HARD = 3
    cfg.MODEL.REID.C2HEP_MOMENTUM = 0.25
    crit = build_reid_criterion(cfg)
    assert crit.loss_names == ("olp", "hep", "c2hep")
    assert crit.weights == {"olp": 1.0, "hep": 0.5, "c2hep": 1.0}
    assert crit.olp.scale == 7.0
    assert crit.hep.num_hard == 3 and crit.hep.num_classes == 9
    assert crit.c2hep.pool_size == 100  # the PRW config's value
    assert crit.c2hep.centres.momentum == 0.25


# ------------------------------------------------------------------------------ ROIs to embed
def _proposals(boxes, gt_classes, gt_pids=None):
    inst = Instances((128, 96))
    inst.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(gt_classes, dtype=torch.long)
    if gt_pids is not None:
        inst.gt_pids = torch.tensor(gt_pids, dtype=torch.long)
    return inst


def _targets(boxes, pids):
    inst = Instances((128, 96))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.zeros(len(pids), dtype=torch.long)
    inst.gt_pids = torch.tensor(pids, dtype=torch.long)
    return inst


def test_training_rois_are_foreground_proposals_then_gt_boxes():
    heads = build_test_model(reduce_for_cpu(load_cfg(SMALL_INET))).roi_heads
    # one foreground class: label 0 = person, 1 = background
    props = [
        _proposals(
            [[0, 0, 10, 10], [1, 1, 9, 9], [2, 2, 8, 8], [3, 3, 7, 7]], [0, 1, 0, 1], [2, 7, -1, 3]
        ),
        _proposals([[4, 4, 6, 6], [5, 5, 7, 7]], [1, 1]),  # image without ground truth
    ]
    tgts = [_targets([[0, 0, 12, 12], [2, 2, 9, 9]], [2, -1]), _targets([], [])]

    heads.embed_gt_boxes = True
    boxes, det, reid, pids, image_ids = heads._training_rois(props, tgts)
    assert [len(b) for b in boxes] == [6, 2]
    torch.testing.assert_close(boxes[0].tensor[4:], tgts[0].gt_boxes.tensor)
    assert det.tolist() == [True] * 4 + [False] * 2 + [True] * 2
    assert reid.tolist() == [True, False, True, False, True, True, False, False]
    assert pids.tolist() == [2, -1, 2, -1]
    assert image_ids.tolist() == [0, 0, 0, 0]

    heads.embed_gt_boxes = False
    boxes, det, reid, pids, image_ids = heads._training_rois(props, tgts)
    assert [len(b) for b in boxes] == [4, 2]
    assert det.tolist() == [True] * 6
    assert reid.tolist() == [True, False, True, False, False, False]
    assert pids.tolist() == [2, -1]
    assert image_ids.tolist() == [0, 0]

    # a gt box sampled as a foreground proposal (proposal box == gt box) is embedded only once
    heads.embed_gt_boxes = True
    props[0].proposal_boxes.tensor[2] = tgts[0].gt_boxes.tensor[1]  # fg proposal, pid -1
    props[0].proposal_boxes.tensor[1] = tgts[0].gt_boxes.tensor[0]  # same box, but background
    boxes, det, reid, pids, image_ids = heads._training_rois(props, tgts)
    assert [len(b) for b in boxes] == [5, 2]
    torch.testing.assert_close(boxes[0].tensor[4], tgts[0].gt_boxes.tensor[0])
    assert reid.tolist() == [True, False, True, False, True, False, False]
    assert pids.tolist() == [2, -1, 2]

    tgts[0].remove("gt_pids")
    with pytest.raises(ValueError, match="gt_pids"):
        heads._training_rois(props, tgts)


# ------------------------------------------------------------------------------ every config
def _reid_params(model):
    heads = model.roi_heads
    params = list(heads.embed_head.parameters())
    if isinstance(heads, DCINetROIHeads):
        params += list(heads.reid_res5.parameters())
    return params


@pytest.mark.parametrize("config_file", config_files())
def test_forward_backward_of_every_config(config_file):
    cfg = _cpu_cfg(config_file)
    model = build_test_model(cfg).train()
    heads = model.roi_heads
    expected_cls = DCINetROIHeads if cfg.MODEL.ROI_HEADS.NAME == "DCINetROIHeads" else INetROIHeads
    assert type(heads) is expected_cls
    batch = make_pair_batch()
    gt_pids = sorted(p for item in PAIR_BATCH_GT for p in item["pids"])
    with EventStorage() as storage:
        # Step 1 (no gradient): fills the feature dictionary, so that OLP has negatives next.
        with torch.no_grad():
            model(batch)
        num_fg = storage.history("roi_head/num_fg_samples").latest() * len(batch)
        num_embeds = storage.history("reid/num_embeds").latest()
        # the sampled foreground proposals (Detectron2's count) and the gt boxes (9) not already
        # sampled as proposals are embedded
        assert num_fg <= num_embeds <= num_fg + len(gt_pids)
        dictionary = heads.criterion.dictionary
        assert int(dictionary.num_filled) == num_embeds
        stored = dictionary.pids[: int(dictionary.num_filled)].tolist()
        assert set(stored) == set(gt_pids)

        storage.step()
        losses = model(batch)
        assert set(losses) == DETECTION_LOSSES | {f"loss_{n}" for n in cfg.MODEL.REID.LOSSES}
        for name, value in losses.items():
            assert value.dim() == 0 and math.isfinite(float(value.detach())), name
        if "olp" in cfg.MODEL.REID.LOSSES:
            assert float(losses["loss_olp"].detach()) > 0  # the dictionary now holds negatives

        model.zero_grad()
        sum(losses.values()).backward()
        for p in _reid_params(model):
            if p.requires_grad:
                assert p.grad is not None and torch.isfinite(p.grad).all()
        assert heads.embed_head.proj.weight.grad.abs().sum() > 0
        if isinstance(heads, DCINetROIHeads):
            assert (
                sum(
                    float(p.grad.abs().sum())
                    for p in heads.reid_res5.parameters()
                    if p.requires_grad
                )
                > 0
            )

        latest = {k: v.latest() for k, v in storage.histories().items()}
        expected_keys = ["reid/dict_fill", "reid/num_embeds"]
        if "olp" in cfg.MODEL.REID.LOSSES:
            expected_keys += ["reid/olp_pos_sim", "reid/olp_neg_sim"]
        for key in expected_keys:
            assert key in latest, key
        pool_loss = "hep" if "hep" in cfg.MODEL.REID.LOSSES else "c2hep"
        assert 0.0 <= latest[f"reid/{pool_loss}_acc"] <= 1.0
        both_steps = sum(v for v, _ in storage.history("reid/num_embeds").values())
        assert latest["reid/dict_fill"] == pytest.approx(both_steps / dictionary.size)


@pytest.mark.parametrize("config_file", [SMALL_INET, SMALL_DCINET])
def test_embed_stripes_key_trains_both_heads(config_file):
    cfg = _cpu_cfg(config_file)
    cfg.MODEL.REID.EMBED_STRIPES = 2
    model = build_test_model(cfg).train()
    head = model.roi_heads.embed_head
    assert head.stripes == 2
    assert head.proj.in_features == 2 * model.roi_heads.res5[-1].out_channels
    with EventStorage():
        losses = model(make_pair_batch())
        sum(losses.values()).backward()
    assert torch.isfinite(head.proj.weight.grad).all() and head.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("config_file", [SMALL_INET, SMALL_DCINET])
def test_every_gt_box_and_sampled_foreground_proposal_is_embedded(config_file):
    cfg = _cpu_cfg(config_file)
    cfg.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = False  # no gt box among the proposals
    model = build_test_model(cfg).train()
    batch = make_pair_batch()
    gt_pids = [p for item in PAIR_BATCH_GT for p in item["pids"]]
    with EventStorage() as storage:
        model(batch)
        num_fg = storage.history("roi_head/num_fg_samples").latest() * len(batch)
        assert storage.history("reid/num_embeds").latest() == num_fg + len(gt_pids)
    dictionary = model.roi_heads.criterion.dictionary
    assert int(dictionary.num_filled) == num_fg + len(gt_pids)
    stored = dictionary.pids[: int(dictionary.num_filled)].tolist()
    for pid in set(gt_pids):
        assert stored.count(pid) >= gt_pids.count(pid)


def test_dcinet_divides_the_gradients_between_detection_and_reid_modules():
    model = build_test_model(reduce_for_cpu(load_cfg(SMALL_DCINET))).train()
    heads = model.roi_heads
    with EventStorage():
        losses = model(make_pair_batch())
    reid_loss = sum(v for k, v in losses.items() if k not in DETECTION_LOSSES)
    det_loss = sum(v for k, v in losses.items() if k in DETECTION_LOSSES)

    grads = torch.autograd.grad(
        det_loss,
        list(heads.reid_res5.parameters()) + list(heads.res5.parameters()),
        allow_unused=True,
        retain_graph=True,
    )
    n = len(list(heads.reid_res5.parameters()))
    assert all(g is None for g in grads[:n])  # detection never reaches the re-id module
    assert any(g is not None and g.abs().sum() > 0 for g in grads[n:])

    grads = torch.autograd.grad(
        reid_loss,
        list(heads.res5.parameters())
        + list(heads.box_predictor.parameters())
        + list(heads.reid_res5.parameters()),
        allow_unused=True,
    )
    n = len(list(heads.res5.parameters())) + len(list(heads.box_predictor.parameters()))
    assert all(g is None for g in grads[:n])  # re-id never reaches the detection module
    assert any(g is not None and g.abs().sum() > 0 for g in grads[n:])


def test_inet_shares_res5_between_detection_and_reid():
    model = build_test_model(reduce_for_cpu(load_cfg(SMALL_INET))).train()
    heads = model.roi_heads
    with EventStorage():
        losses = model(make_pair_batch())
    reid_loss = losses["loss_hep"]
    grads = torch.autograd.grad(reid_loss, list(heads.res5.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def _norm_types(module):
    return {
        type(m).__name__
        for m in module.modules()
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))
    }


@pytest.mark.parametrize("res5_norm, expected", [("", "BatchNorm2d"), ("GN", "GroupNorm")])
def test_res5_norm_key_sets_the_norm_of_the_roi_head_blocks_only(res5_norm, expected):
    cfg = reduce_for_cpu(load_cfg(SMALL_DCINET))
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.ROI_HEADS.RES5_NORM = res5_norm
    model = build_test_model(cfg).train()
    heads = model.roi_heads
    assert _norm_types(heads.res5) == {expected}
    assert _norm_types(heads.reid_res5) == {expected}
    assert _norm_types(model.backbone) == {"BatchNorm2d"}
    # GroupNorm(32, C): every res5 channel count of the small config is a multiple of 32.
    with EventStorage():
        losses = model(make_pair_batch())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in heads.reid_res5.parameters())


@pytest.mark.parametrize("config_file", [SMALL_INET, SMALL_DCINET])
def test_training_on_one_batch_pulls_the_pairs_together(config_file):
    """The re-id gradients train the embeddings: on a fixed batch, the embeddings of an identity
    in the two images of a pair become similar, those of other persons dissimilar."""
    model = build_test_model(_cpu_cfg(config_file)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = make_pair_batch()
    torch.manual_seed(0)  # proposal sampling and the random part of the HEP pools
    with EventStorage() as storage:
        # 24 steps: with the small DC-I-Net's C2HEP weight 0.5 the positives reached 0.46-0.51
        # after 16 steps (the threshold's edge, depending on the thread count), 0.80 after 24
        for _ in range(24):
            losses = model(batch)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
            storage.step()
        pos = [v for v, _ in storage.history("reid/olp_pos_sim").values()]
        neg = [v for v, _ in storage.history("reid/olp_neg_sim").values()]
    # the similarities are over the sampled proposals, which change from step to step: compare
    # means over several steps
    first, last = sum(pos[:3]) / 3, sum(pos[-5:]) / 5
    assert first < 0.2  # random weights: positives are not similar yet
    assert last > 0.5 and last > first + 0.5
    assert sum(neg[-5:]) / 5 < last - 0.5


@pytest.mark.parametrize("config_file", [SMALL_INET, SMALL_DCINET])
def test_batch_without_any_person_still_calls_the_criterion(config_file):
    cfg = _cpu_cfg(config_file)
    model = build_test_model(cfg).train()
    batch = make_pair_batch([{"boxes": [], "pids": []}, {"boxes": [], "pids": []}])
    with EventStorage() as storage:
        losses = model(batch)
        assert storage.history("reid/num_embeds").latest() == 0
    for name in cfg.MODEL.REID.LOSSES:
        assert float(losses[f"loss_{name}"]) == 0.0
    sum(losses.values()).backward()  # the graph stays connected
    for p in _reid_params(model):
        assert p.grad is not None and torch.isfinite(p.grad).all()
    for _, buf in model.roi_heads.named_buffers():
        if buf.is_floating_point():
            assert torch.isfinite(buf).all()  # no statistics computed over nothing


def test_reid_metrics_are_averaged_over_the_period_and_written_once():
    """MODEL.REID.METRICS_PERIOD 2: nothing is written at step 0; at step 1 each metric is the
    mean of the two steps' values (read from the dictionary after each step), written once."""
    cfg = reduce_for_cpu(load_cfg(SMALL_DCINET))
    cfg.MODEL.REID.METRICS_PERIOD = 2
    model = build_test_model(cfg).train()
    dictionary = model.roi_heads.criterion.dictionary
    filled = []
    with EventStorage() as storage, torch.no_grad():
        model(make_pair_batch())
        filled.append(int(dictionary.num_filled))
        assert not [k for k in storage.histories() if k.startswith("reid/")]
        storage.step()
        model(make_pair_batch())
        filled.append(int(dictionary.num_filled))
        assert filled[1] < dictionary.size  # no wrap-around: the fill counts every embedding
        histories = storage.histories()
        assert len(histories["reid/dict_fill"].values()) == 1
        assert histories["reid/dict_fill"].latest() == pytest.approx(
            (filled[0] + filled[1]) / 2 / dictionary.size
        )
        assert histories["reid/num_embeds"].latest() == pytest.approx(filled[1] / 2)
        assert storage.smoothing_hints()["reid/dict_fill"] is False  # already a mean


def test_metrics_period_must_be_positive():
    cfg = reduce_for_cpu(load_cfg(SMALL_INET))
    cfg.MODEL.REID.METRICS_PERIOD = 0
    with pytest.raises(ValueError, match="MODEL.REID.METRICS_PERIOD must be >= 1, got 0"):
        build_test_model(cfg)


# ------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("config_file", [SMALL_INET, SMALL_DCINET])
def test_memories_round_trip_through_detection_checkpointer(config_file, tmp_path):
    cfg = reduce_for_cpu(load_cfg(config_file))
    model = build_test_model(cfg, seed=0).train()
    with EventStorage() as storage:
        for _ in range(2):
            model(make_pair_batch())
            storage.step()
    crit = model.roi_heads.criterion
    buffers = dict(crit.named_buffers())
    assert int(crit.dictionary.num_filled) > 0
    if crit.c2hep is not None:
        assert int(crit.c2hep.centres.initialized.sum()) == 4  # identities 0..3 of the batch
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_final")

    fresh = build_test_model(cfg, seed=1)
    fresh_buffers = dict(fresh.roi_heads.criterion.named_buffers())
    assert not torch.equal(fresh_buffers["dictionary.feats"], buffers["dictionary.feats"])
    DetectionCheckpointer(fresh).load(str(tmp_path / "model_final.pth"))
    fresh_buffers = dict(fresh.roi_heads.criterion.named_buffers())
    assert set(fresh_buffers) == set(buffers)
    for name, value in buffers.items():
        assert torch.equal(fresh_buffers[name], value), name


def test_dcinet_reid_module_starts_from_res5_of_a_checkpoint_without_it(tmp_path):
    cfg = reduce_for_cpu(load_cfg(SMALL_DCINET))
    source = build_test_model(cfg, seed=0)
    res5 = {k: v.clone() for k, v in source.roi_heads.res5.state_dict().items()}
    reid_res5 = {k: v.clone() for k, v in source.roi_heads.reid_res5.state_dict().items()}
    assert not torch.equal(res5["0.conv1.weight"], reid_res5["0.conv1.weight"])

    without = {k: v for k, v in source.state_dict().items() if ".reid_res5." not in k}
    torch.save({"model": without}, str(tmp_path / "without_reid.pth"))
    target = build_test_model(cfg, seed=1)
    DetectionCheckpointer(target).load(str(tmp_path / "without_reid.pth"))
    for k, v in target.roi_heads.reid_res5.state_dict().items():
        assert torch.equal(v, res5[k]), k
    for k, v in target.roi_heads.res5.state_dict().items():
        assert torch.equal(v, res5[k]), k

    # a checkpoint with its own re-id module keeps it
    torch.save({"model": source.state_dict()}, str(tmp_path / "with_reid.pth"))
    target = build_test_model(cfg, seed=2)
    DetectionCheckpointer(target).load(str(tmp_path / "with_reid.pth"))
    for k, v in target.roi_heads.reid_res5.state_dict().items():
        assert torch.equal(v, reid_res5[k]), k


# ------------------------------------------------------------------------------ DDP
def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    with gloo_group(rank, world, port, timeout_s=120):
        cfg = reduce_for_cpu(load_cfg(SMALL_DCINET))
        cfg.MODEL.REID.LOSSES = ["olp", "hep", "c2hep"]  # every memory and the HEP classifier
        model = build_test_model(cfg, seed=0).train()  # same initial weights on both ranks
        # as Detectron2's DefaultTrainer: buffers are not broadcast, each rank keeps its own
        ddp = DistributedDataParallel(model, broadcast_buffers=False)
        opt = torch.optim.SGD(ddp.parameters(), lr=1e-3)
        empty_pair = [{"boxes": [], "pids": []}, {"boxes": [], "pids": []}]
        batches = [  # different data on each rank; rank 1 starts with a pair without persons
            [PAIR_BATCH_GT[:2], PAIR_BATCH_GT[2:], PAIR_BATCH_GT[:2]],
            [empty_pair, PAIR_BATCH_GT[2:], PAIR_BATCH_GT[:2][::-1]],
        ][rank]
        with EventStorage() as storage:
            for step, gt in enumerate(batches):
                losses = ddp(make_pair_batch(gt, seed=10 * rank + step))
                opt.zero_grad()
                sum(losses.values()).backward()
                opt.step()
                storage.step()
        state = {
            "buffers": {k: v.clone() for k, v in model.roi_heads.criterion.named_buffers()},
            "params": {k: v.detach().clone() for k, v in model.named_parameters()},
        }
        torch.save(state, os.path.join(out_dir, f"rank{rank}.pth"))


@pytest.mark.timeout(300)
def test_two_ddp_processes_hold_identical_memories(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(str(tmp_path / "rank0.pth"))
    r1 = torch.load(str(tmp_path / "rank1.pth"))
    assert set(r0["buffers"]) == set(r1["buffers"])
    assert int(r0["buffers"]["dictionary.num_filled"]) > 0
    assert int(r0["buffers"]["c2hep.centres.initialized"].sum()) == 4  # identities 0..3
    for name, value in r0["buffers"].items():
        assert torch.equal(value, r1["buffers"][name]), name
    for name, value in r0["params"].items():
        torch.testing.assert_close(value, r1["params"][name], rtol=0, atol=1e-6, msg=name)
