"""dcinet_d2.modeling.fast_inference: folded norms give the outputs of the unfolded model, on
one layer (worked by hand) and on a whole person-search model; the model given is untouched."""

from __future__ import annotations

import contextlib
import math
import warnings

import pytest
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling import build_model
from torch import nn

from dcinet_d2.engine import PersonSearchTrainer
from dcinet_d2.modeling.fast_inference import fold_batchnorm, inference_autocast, inference_model

from ..engine.common import quick_cfg


def test_fold_one_frozen_batchnorm_by_hand():
    # 1x1 conv, weight 2, no bias; FrozenBN weight 3, bias 1, mean 0.5, var 3, eps 0:
    # y = 3 * (2x - 0.5) / sqrt(3) + 1 = 2 sqrt(3) x + 1 - sqrt(3) / 2
    norm = FrozenBatchNorm2d(1, eps=0.0)
    norm.weight.fill_(3.0)
    norm.bias.fill_(1.0)
    norm.running_mean.fill_(0.5)
    norm.running_var.fill_(3.0)
    conv = Conv2d(1, 1, kernel_size=1, bias=False, norm=norm)
    with torch.no_grad():
        conv.weight.fill_(2.0)
    x = torch.tensor([[[[1.0, -2.0]]]])
    expected = 2 * math.sqrt(3) * x + 1 - math.sqrt(3) / 2
    with torch.no_grad():
        assert torch.allclose(conv(x), expected, atol=1e-6)
        assert fold_batchnorm(conv) == 1
        assert conv.norm is None
        assert conv.weight.item() == pytest.approx(2 * math.sqrt(3), abs=1e-6)
        assert conv.bias.item() == pytest.approx(1 - math.sqrt(3) / 2, abs=1e-6)
        assert torch.allclose(conv(x), expected, atol=1e-6)


def _random_norm_stats(norm, seed=1, spread=1.0):
    """Random weight, bias and statistics; ``spread`` < 1 keeps them nearer a new norm's."""
    g = torch.Generator().manual_seed(seed)
    c = norm.running_mean.numel()
    with torch.no_grad():
        norm.weight.copy_(1 + spread * (torch.rand(c, generator=g) - 0.5))
        norm.bias.copy_(spread * torch.randn(c, generator=g))
        norm.running_mean.copy_(spread * torch.randn(c, generator=g))
        norm.running_var.copy_(1 + spread * (torch.rand(c, generator=g) - 0.9))


@pytest.mark.parametrize("kind", ["FrozenBN", "BN", "SyncBN"])
def test_fold_matches_conv_then_norm(kind):
    norm = {"FrozenBN": FrozenBatchNorm2d, "BN": nn.BatchNorm2d, "SyncBN": nn.SyncBatchNorm}[kind](
        6
    )
    _random_norm_stats(norm)
    conv = Conv2d(4, 6, kernel_size=3, padding=1, bias=True, norm=norm, activation=torch.relu)
    conv.eval()
    x = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = conv(x)
        assert fold_batchnorm(conv) == 1
        assert torch.allclose(conv(x), before, atol=1e-5)


def test_norms_that_depend_on_the_input_are_not_folded():
    group = Conv2d(4, 8, kernel_size=1, norm=nn.GroupNorm(2, 8))
    training_bn = Conv2d(4, 8, kernel_size=1, norm=nn.BatchNorm2d(8))  # training mode
    plain = nn.Conv2d(4, 8, kernel_size=1)
    assert fold_batchnorm(nn.Sequential(group, training_bn, plain)) == 0
    assert isinstance(group.norm, nn.GroupNorm) and isinstance(training_bn.norm, nn.BatchNorm2d)


def test_inference_copy_gives_the_models_outputs_and_leaves_it_untouched(tmp_path):
    cfg = quick_cfg("dcinet", str(tmp_path))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    # statistics of a trained model: with a new model's (mean 0, variance 1, weight 1, bias 0)
    # folding is nearly the identity, and a fold that ignored one of them would pass
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for i, bn in enumerate(bns):
        _random_norm_stats(bn, seed=i, spread=0.2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_model(model)
    assert fast is not model and model.training and not fast.training
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # every conv that carried a BatchNorm now has none and a bias; GroupNorm convs (res5) keep GN
    copied = dict(fast.named_modules())
    with_bn = [
        n
        for n, m in model.named_modules()
        if isinstance(m, Conv2d) and isinstance(m.norm, nn.BatchNorm2d)
    ]
    with_gn = [
        n
        for n, m in model.named_modules()
        if isinstance(m, Conv2d) and isinstance(m.norm, nn.GroupNorm)
    ]
    assert with_bn and with_gn
    assert all(copied[n].norm is None and copied[n].bias is not None for n in with_bn)
    assert all(isinstance(copied[n].norm, nn.GroupNorm) for n in with_gn)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.backbone.modules())

    batch = next(iter(PersonSearchTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])))
    model.eval()
    with torch.no_grad():
        reference, outputs = model(batch), fast(batch)
    for a, b in zip(reference, outputs):
        a, b = a["instances"], b["instances"]
        assert len(a) == len(b) > 0
        assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-2)
        assert torch.allclose(a.scores, b.scores, atol=1e-4)
        assert torch.allclose(a.pred_embeds, b.pred_embeds, atol=1e-4)


def test_without_options_the_model_itself_runs(tmp_path):
    cfg = quick_cfg("dcinet", str(tmp_path))
    model = build_model(cfg).train()
    assert inference_model(model, fold_norms=False, channels_last=True) is model  # CPU
    assert model.training


def test_evaluation_during_training_runs_a_folded_copy(tmp_path, monkeypatch):
    """PersonSearchTrainer.test hands Detectron2's test the inference copy (its outputs are the
    model's: test above), and the training model stays in training mode, unchanged."""
    from detectron2.engine import DefaultTrainer

    seen = []

    def fake_test(cls, cfg, model, evaluators=None):
        seen.append((model, model.training))
        return {"search": {"mAP": 1.0}}

    monkeypatch.setattr(DefaultTrainer, "test", classmethod(fake_test))
    cfg = quick_cfg("dcinet", str(tmp_path))
    model = build_model(cfg).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert PersonSearchTrainer.test(cfg, model) == {"search": {"mAP": 1.0}}
    ((evaluated, training),) = seen
    assert evaluated is not model and not training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in evaluated.backbone.modules())
    assert model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    plain_cfg = quick_cfg("dcinet", str(tmp_path), "TEST.FOLD_NORMS", "False")
    PersonSearchTrainer.test(plain_cfg, model)
    assert seen[-1][0] is model  # nothing to change: the model itself, in its own mode


def test_autocast_only_on_cuda_and_only_with_test_amp(tmp_path):
    amp = quick_cfg("dcinet", str(tmp_path), "TEST.AMP", "True")
    assert isinstance(inference_autocast(amp, "cpu"), contextlib.nullcontext)
    assert isinstance(
        inference_autocast(quick_cfg("dcinet", str(tmp_path)), "cuda:0"), contextlib.nullcontext
    )
    with warnings.catch_warnings():  # without CUDA, torch warns that this autocast is disabled
        warnings.simplefilter("ignore")
        on_cuda = inference_autocast(amp, "cuda:0")
    assert isinstance(on_cuda, torch.autocast)
    assert on_cuda.device == "cuda" and on_cuda.fast_dtype == torch.float16


def test_outputs_stay_fp32_under_autocast(tmp_path):
    """TEST.AMP runs inference under fp16 autocast on CUDA; the model returns fp32 boxes, scores
    and embeddings whatever autocast computes in, so the evaluator ranks in fp32. CPU's bfloat16
    autocast stands in for it here (CUDA's is in tests/gpu)."""
    cfg = quick_cfg("dcinet", str(tmp_path))
    model = build_model(cfg).eval()
    batch = next(iter(PersonSearchTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        (out,) = model(batch[:1])
        boxes = out["instances"].pred_boxes.tensor[:3]
        (query_embeds,) = model.embed_boxes(batch[:1], [boxes])
    instances = out["instances"]
    assert len(instances) > 0 and len(query_embeds) == len(boxes)
    assert instances.pred_embeds.dtype == torch.float32
    assert instances.scores.dtype == torch.float32
    assert instances.pred_boxes.tensor.dtype == torch.float32
    assert query_embeds.dtype == torch.float32
