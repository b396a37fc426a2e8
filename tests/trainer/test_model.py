"""Model building: names, heads for every torchvision family, and where pretrained weights come from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models

from training_agent.core.errors import InvalidInputError, StepError
from training_agent.trainer.model import available_models, build_model, check_model_name, replace_head

# One architecture per family, with the path of its classification layer.
FAMILIES = {
    "resnet18": "fc",
    "mobilenet_v3_small": "classifier.3",
    "squeezenet1_1": "classifier.1",
    "efficientnet_b0": "classifier.1",
    "densenet121": "classifier",
    "convnext_tiny": "classifier.2",
    "regnet_y_400mf": "fc",
    "shufflenet_v2_x0_5": "fc",
    "mnasnet0_5": "classifier.1",
    "alexnet": "classifier.6",
    "vgg11": "classifier.6",
    "swin_t": "head",
    "vit_b_16": "heads.head",
    "maxvit_t": "classifier.5",
    "googlenet": "fc",
    "inception_v3": "fc",
}


def test_registry_lists_only_classification_models() -> None:
    names = available_models()
    assert {"resnet18", "vit_b_16", "efficientnet_b0"} <= set(names)
    assert "fasterrcnn_resnet50_fpn" not in names and "r3d_18" not in names


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(InvalidInputError, match=r"Unknown model 'resnet19'.*Did you mean resnet18"):
        check_model_name("resnet19")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_head_is_replaced_for_every_family(name: str) -> None:
    model = models.get_model(
        name, weights=None, **({"init_weights": False} if name in ("googlenet", "inception_v3") else {})
    )
    path = replace_head(model, 5)
    assert path == FAMILIES[name]
    head = model.get_submodule(path)
    assert (head.out_features if isinstance(head, nn.Linear) else head.out_channels) == 5


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("resnet18", 32),
        ("mobilenet_v3_small", 32),
        ("squeezenet1_1", 64),
        ("inception_v3", 80),
        ("googlenet", 32),
    ],
)
def test_built_model_trains_and_predicts_num_classes(name: str, size: int) -> None:
    model = build_model(name, 3, pretrained=False)
    model.train()
    out = model(torch.randn(2, 3, size, size))
    logits = out if isinstance(out, torch.Tensor) else out.logits
    assert logits.shape == (2, 3)
    logits.sum().backward()  # the new head is part of the graph


def _save_imagenet_resnet18(path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = models.resnet18(weights=None).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_pretrained_weights_come_from_the_torch_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    filename = Path(models.ResNet18_Weights.DEFAULT.url).name
    state = _save_imagenet_resnet18(tmp_path / "hub" / "checkpoints" / filename)
    model = build_model("resnet18", 4, pretrained=True)
    assert torch.equal(model.state_dict()["conv1.weight"], state["conv1.weight"])
    assert model.fc.out_features == 4  # type: ignore[union-attr]


def test_pretrained_without_cache_or_network_says_how_to_supply_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # No internet, as on the build machines: any download goes to a closed local port.
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(StepError) as info:
        build_model("resnet18", 2, pretrained=True)
    message = str(info.value)
    assert "Cannot get pretrained weights for resnet18" in message
    assert "$TORCH_HOME/hub/checkpoints/" in message and "resnet18-f37072fd.pth" in message
    assert "metadata.weights_url" in message and "metadata.pretrained to false" in message


def test_weights_file_is_used_instead_of_the_hub(tmp_path: Path) -> None:
    state = _save_imagenet_resnet18(tmp_path / "w.pth")
    model = build_model("resnet18", 2, pretrained=True, weights_file=tmp_path / "w.pth")
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])


def test_weights_file_for_another_architecture_is_refused(tmp_path: Path) -> None:
    torch.save(models.mobilenet_v3_small(weights=None).state_dict(), tmp_path / "w.pth")
    with pytest.raises(InvalidInputError, match="do not fit resnet18"):
        build_model("resnet18", 2, pretrained=True, weights_file=tmp_path / "w.pth")


def test_weights_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / "w.pth").write_text("hello")
    with pytest.raises(InvalidInputError, match="not a loadable resnet18 state_dict"):
        build_model("resnet18", 2, pretrained=True, weights_file=tmp_path / "w.pth")
