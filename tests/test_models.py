"""Model registry, pretrained weights (offline), EfficientNet-Lite0 correctness on real photos."""
import numpy as np
import pytest
import torch

from edgeft.errors import RunError, UnknownNameError
from edgeft.models import create_model, get_spec, list_models


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large",
                                  "efficientnet_b0", "efficientnet_lite0", "test_cnn", "test_resnet"])
def test_create_with_new_head(name):
    m = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 7)
    assert m.get_submodule(get_spec(name).head).out_features == 7


def test_unknown_model_did_you_mean():
    with pytest.raises(UnknownNameError, match=r"unknown model 'resnet81'.*Did you mean: 'resnet18'"):
        create_model("resnet81", 10)
    assert "mobilenet_v3_small" in list_models("mobilenet*")


def test_torchvision_pretrained_from_local_cache_and_clear_offline_error(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(RunError, match=r"resnet18 are not in the local cache .*EDGEFT_OFFLINE=1.*put resnet18-"):
        create_model("resnet18", 10, pretrained=True)
    # a real torchvision state_dict placed where torch.hub keeps it is used, offline
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    ref = torchvision.models.resnet18(weights=None)
    ckpt = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    ckpt.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), ckpt)
    m = create_model("resnet18", 10, pretrained=True)
    assert torch.equal(m.conv1.weight, ref.conv1.weight)
    assert m.fc.out_features == 10


def test_weights_file_safe_loading(tmp_path):
    src = create_model("test_cnn", 10)
    p = tmp_path / "w.pt"
    torch.save({"state_dict": src.state_dict()}, p)
    m = create_model("test_cnn", 4, weights=p)          # head of another size: re-initialised
    assert torch.equal(m.features[0].weight, src.features[0].weight)
    evil = tmp_path / "evil.pt"
    torch.save(torch.nn.Linear(2, 2), evil)             # a pickled module, not a state_dict: refused
    with pytest.raises(RunError, match="cannot load weights"):
        create_model("test_cnn", 4, weights=evil)
    with pytest.raises(RunError, match="do not fit model 'test_resnet'"):
        create_model("test_resnet", 4, weights=p)


def test_efficientnet_lite0_wheel_naming():
    from edgeft.models.vision import _lite0_pretrained

    sd = _lite0_pretrained()
    assert "_conv_stem.weight" in sd and "_blocks.15._depthwise_conv.weight" in sd and sd["_fc.weight"].shape == (1000, 1280)
    m = create_model("efficientnet_lite0", 1000)
    assert set(m.state_dict()) == set(sd)
    assert m._bn0.eps == 1e-3 and isinstance(m.act, torch.nn.ReLU6)


def test_efficientnet_lite0_calls_chelsea_a_cat_and_coffee_espresso():
    from skimage import data
    from torchvision.models._meta import _IMAGENET_CATEGORIES as names

    from edgeft.data.images import Preprocess, preprocess_images

    m = create_model("efficientnet_lite0", 1000, pretrained=True).eval()
    p = Preprocess(size=224, resize=256, resize_mode="shorter", mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
    x = torch.from_numpy(preprocess_images([data.chelsea(), data.coffee()], p))
    with torch.no_grad():
        top = m(x).argmax(1).tolist()
    assert names[top[0]] in {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
    assert names[top[1]] == "espresso"
    # TF-style scaling is exactly (x - 127) / 128
    raw = np.asarray(data.coffee(), np.float32)
    assert abs(float(x[1].max()) - (min(raw.max(), 255) - 127) / 128) < 0.02



def test_bn_momentum_override_for_short_schedules():
    """torchvision's MobileNetV3 ships BN momentum 0.01, tuned for ImageNet-length epochs; on a 3-epoch run its
    running statistics lagged the weights and eval collapsed to one class (val top-1 0.10, recalibrating the
    statistics gave 0.76). The trainer applies train.bn_momentum (default 0.1; null keeps the model's)."""
    from edgeft.recipe import TrainCfg
    from edgeft.stages.trainer import set_bn_momentum

    m = create_model("mobilenet_v3_small", num_classes=10)
    bns = [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]
    assert bns and {b.momentum for b in bns} == {0.01}
    assert set_bn_momentum(m, None) == 0 and {b.momentum for b in bns} == {0.01}
    assert set_bn_momentum(m, TrainCfg().bn_momentum) == len(bns) and {b.momentum for b in bns} == {0.1}


def test_models_command_lists_and_refuses_what_matches_nothing(cli):
    r = cli("models", "mobilenet*")
    assert r.code == 0 and "mobilenet_v3_small" in r.out and "\nresnet18 " not in r.out
    r = cli("models", "resnet81")
    assert r.code == 2 and "no registered model matches 'resnet81'" in r.err and "resnet18" in r.err
    assert r.err.count("\n") == 1
    r = cli("models", "--task", "speech")
    assert r.code == 2 and "valid are detection, image_cls, kws" in r.err
