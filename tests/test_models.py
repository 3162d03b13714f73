"""Architecture parity with the reference: keys, parameter counts, raw outputs."""
import pytest
import torch

import rtmdet
from rtmdet.checkpoint import atomic_save
from helpers import DET_FIX, load_fixture, need

# Reference parameter counts (shared head convs counted once), from the original configs.
PARAMS_M = {"tiny": 4.896, "s": 8.887, "m": 24.709, "l": 52.316, "x": 94.856}


@pytest.fixture(scope="module")
def tiny():
    return rtmdet.load(need(DET_FIX / "weights.pth"))


def test_fixture_keys_and_shapes_match_exactly(tiny):
    lines = (DET_FIX / "keys.txt").read_text().splitlines()
    ref = {}
    for line in lines:
        name, shape = line.split(" ", 1)
        ref[name] = tuple(int(s) for s in shape.strip("()").replace(" ", "").split(",") if s)
    own = {k: tuple(v.shape) for k, v in tiny.state_dict().items()}
    assert own == ref
    assert list(own) == list(ref), "state_dict order differs from the reference"


def test_fixture_loads_strict_into_fresh_model():
    ck = load_fixture(DET_FIX / "weights.pth")
    model = rtmdet.create("rtmdet-tiny")
    res = model.load_state_dict(ck["state_dict"], strict=True)
    assert not res.missing_keys and not res.unexpected_keys


def test_shared_head_convs_are_one_tensor(tiny):
    h = tiny.bbox_head
    assert h.cls_convs[1][0].conv.weight is h.cls_convs[0][0].conv.weight
    assert h.reg_convs[2][1].conv.weight is h.reg_convs[0][1].conv.weight
    assert h.cls_convs[1][0].bn is not h.cls_convs[0][0].bn


@pytest.mark.parametrize("case", ["square", "rect"])
def test_forward_matches_reference(tiny, case):
    ref = load_fixture(DET_FIX / "forward.pth")[case]
    with torch.no_grad():
        x = ref["input"]
        if "backbone" in ref:
            feats = tiny.backbone(x)
            for a, b in zip(feats, ref["backbone"]):
                torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
            neck = tiny.neck(feats)
            for a, b in zip(neck, ref["neck"]):
                torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
        cls_scores, bbox_preds = tiny(x)
    assert len(cls_scores) == len(bbox_preds) == 3
    for a, b in zip(cls_scores, ref["head"][0]):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
    for a, b in zip(bbox_preds, ref["head"][1]):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("size", list(PARAMS_M))
def test_param_count_and_state_dict_round_trip(size, tmp_path):
    model = rtmdet.create(f"rtmdet-{size}")
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 3) == PARAMS_M[size]
    # exp_on_reg is what differs between small and large models
    assert model.bbox_head.exp_on_reg == (size in ("m", "l", "x"))
    # An official-layout checkpoint of this size loads back, architecture inferred from shapes.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / f"{size}.pth"
    atomic_save({"meta": {}, "state_dict": model.state_dict()}, path)
    loaded = rtmdet.load(path)
    assert loaded.cfg == model.cfg
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert not loaded.training


def test_init_follows_reference():
    model = rtmdet.create("rtmdet-tiny")
    bias = model.bbox_head.rtm_cls[0].bias
    torch.testing.assert_close(torch.sigmoid(bias), torch.full_like(bias, 0.01))
    assert model.bbox_head.rtm_reg[0].weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert model.bbox_head.rtm_reg[0].bias.abs().max().item() == 0
    att = model.backbone.stage1[1].attention.fc
    assert att.bias.abs().max().item() == 0  # mmcv's Kaiming init zeroes conv biases
    fan_in = att.weight[0].numel()  # kaiming_uniform(a=sqrt(5)): U(+-sqrt(6 / ((1 + 5) * fan_in)))
    assert att.weight.abs().max().item() <= (1 / fan_in) ** 0.5 + 1e-6


def test_fuse_keeps_outputs(tiny):
    import copy
    x = load_fixture(DET_FIX / "forward.pth")["rect"]["input"]
    fused = copy.deepcopy(tiny).fuse()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        a, b = tiny(x), fused(x)
    for u, v in zip(a[0] + a[1], b[0] + b[1]):
        torch.testing.assert_close(u, v, atol=1e-3, rtol=1e-3)


def test_num_classes_changes_classifier_only():
    model = rtmdet.create("rtmdet-tiny", num_classes=3)
    assert model.bbox_head.rtm_cls[0].weight.shape[0] == 3
    assert len(model.class_names) == 3
    cls, reg = model.eval()(torch.zeros(1, 3, 64, 64))
    assert cls[0].shape == (1, 3, 8, 8) and reg[2].shape == (1, 4, 2, 2)
