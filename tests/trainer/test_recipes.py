"""Recipes: the seed contract by default, per-family choices under `auto`, the project's options winning."""

from __future__ import annotations

import pytest
import torch

from training_agent.core.errors import InvalidInputError
from training_agent.trainer.config import TrainingConfig
from training_agent.trainer.model import available_models, build_model
from training_agent.trainer.recipes import (
    DEFAULT_FAMILY,
    FAMILIES,
    DataStats,
    auto_batch_size,
    family_of,
    resolve,
)

DIGITS = DataStats(train_images=1265, median_side=8, class_counts=(127,) * 10)
PHOTOS = DataStats(train_images=5000, median_side=480, class_counts=(1000,) * 5)
# One model per family the issue names, and the size `auto` gives it on 8x8 scans from scratch.
REPRESENTATIVES = {
    "resnet": "resnet18",
    "resnext": "resnext50_32x4d",
    "wide_resnet": "wide_resnet50_2",
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3": "mobilenet_v3_small",
    "efficientnet": "efficientnet_b0",
    "efficientnet_v2": "efficientnet_v2_s",
    "regnet": "regnet_y_400mf",
    "convnext": "convnext_tiny",
    "densenet": "densenet121",
    "shufflenet": "shufflenet_v2_x1_0",
    "squeezenet": "squeezenet1_1",
    "mnasnet": "mnasnet0_5",
    "vit": "vit_b_16",
    "swin": "swin_t",
    "maxvit": "maxvit_t",
}


def config(**metadata: object) -> TrainingConfig:
    return TrainingConfig.from_metadata(metadata)


def test_every_torchvision_classifier_has_a_family() -> None:
    unmatched = [name for name in available_models() if family_of(name) is DEFAULT_FAMILY]
    assert unmatched == []
    assert {family_of(model).name for model in REPRESENTATIVES.values()} == set(REPRESENTATIVES)
    assert family_of("efficientnet_v2_m").name == "efficientnet_v2"  # the longest prefix wins
    assert family_of("resnext101_64x4d").name == "resnext"


def test_families_are_data_with_sane_values() -> None:
    names = [family.name for family in FAMILIES]
    assert len(names) == len(set(names))
    for family in FAMILIES:
        assert 0 < family.lr_pretrained <= family.lr_scratch <= 0.01, family.name
        assert family.scratch_min_size <= family.pretrained_min_size or family.fixed_size


def test_seed_recipe_keeps_the_contract_and_fills_the_open_space() -> None:
    resolved = resolve(config(), DIGITS, cpu=True)
    chosen = resolved.config
    assert (chosen.optimizer, chosen.learning_rate, chosen.batch_size, chosen.image_size, chosen.epochs) == (
        "adam",
        0.001,
        32,
        224,
        10,
    )
    assert chosen.weight_decay == 0.0
    assert chosen.lr_schedule == "cosine" and chosen.lr_warmup_epochs == 1.0
    assert chosen.label_smoothing == 0.1
    assert chosen.early_stopping_patience is None
    assert resolved.grad_clip_norm == 5.0 and resolved.class_weighted is False
    assert resolved.record()["name"] == "seed"
    assert set(resolved.chosen) == {"lr_warmup_epochs", "grad_clip_norm", "class_weighted_loss"}


def test_seed_recipe_epochs_come_from_the_metadata() -> None:
    assert resolve(config(epochs=3), DIGITS, cpu=True).config.lr_warmup_epochs == pytest.approx(0.3)


def test_auto_sizes_small_scans_small_and_batches_them_big() -> None:
    resolved = resolve(config(recipe="auto", pretrained=False, epochs=5), DIGITS, cpu=True)
    chosen = resolved.config
    assert chosen.image_size == 32  # 8 px scans, rounded up to the family's smallest sensible size
    assert chosen.batch_size == 64  # small images: big batches, but still 16+ steps per epoch
    assert chosen.optimizer == "adamw" and chosen.weight_decay == 0.05
    assert chosen.learning_rate == pytest.approx(3e-3, rel=1e-5)
    assert chosen.epochs == 5 and chosen.early_stopping_patience == 3
    assert resolved.build_kwargs == {}
    assert resolved.record()["set_by_project"] == ["epochs", "pretrained", "recipe"]


def test_auto_uses_the_family_range_and_the_device() -> None:
    def size(model: str, stats: DataStats, *, pretrained: bool = False, cpu: bool = True) -> int:
        metadata = {"recipe": "auto", "preferred_model": model, "pretrained": pretrained}
        return resolve(config(**metadata), stats, cpu=cpu).config.image_size

    assert size("mobilenet_v3_small", DIGITS) == 64  # downsamples 32x: 32 px would leave 1x1 maps early
    assert size("squeezenet1_1", DIGITS) == 64
    assert size("resnet18", DIGITS, pretrained=True) == 96  # ImageNet features want more than 32 px
    assert size("resnet18", PHOTOS) == 224  # phone photos do not need 480 px on a CPU...
    assert size("resnet18", PHOTOS, cpu=False) == 224  # ...nor above the weights' own resolution
    assert size("efficientnet_v2_s", PHOTOS, cpu=False) == 320  # native 384, capped
    assert size("vit_b_16", DIGITS, pretrained=True) == 224  # position embeddings fix the size
    assert size("vit_b_16", DIGITS) == 64  # from scratch it is built for the size (a multiple of 16)
    assert size("maxvit_t", DIGITS) == 224  # its partitions need 224
    assert size("inception_v3", DIGITS) == 96  # needs at least 75 px


def test_auto_with_an_unknown_median_uses_the_native_size() -> None:
    stats = DataStats(train_images=100, median_side=None, class_counts=(50, 50))
    assert resolve(config(recipe="auto"), stats, cpu=True).config.image_size == 224


def test_project_options_win_over_the_recipe() -> None:
    metadata = {
        "recipe": "auto",
        "learning_rate": 0.01,
        "batch_size": 8,
        "image_size": 48,
        "epochs": 2,
        "optimizer": "sgd",
        "early_stopping_patience": 7,
        "grad_clip_norm": 0.5,
        "class_weighted_loss": False,
        "lr_warmup_epochs": 0,
    }
    imbalanced = DataStats(train_images=400, median_side=8, class_counts=(300, 100))
    resolved = resolve(config(**metadata), imbalanced, cpu=True)
    chosen = resolved.config
    assert (chosen.learning_rate, chosen.batch_size, chosen.image_size, chosen.epochs) == (0.01, 8, 48, 2)
    assert chosen.optimizer == "sgd" and chosen.early_stopping_patience == 7
    assert chosen.lr_warmup_epochs == 0
    assert resolved.grad_clip_norm == 0.5 and resolved.class_weighted is False
    assert "learning_rate" not in resolved.chosen and "image_size" not in resolved.chosen


def test_auto_learning_rate_follows_the_batch_and_the_weights() -> None:
    scratch = resolve(config(recipe="auto", pretrained=False, batch_size=64), DIGITS, cpu=True)
    tuned = resolve(config(recipe="auto", pretrained=True, batch_size=64), DIGITS, cpu=True)
    sgd = resolve(config(recipe="auto", optimizer="sgd", batch_size=128), DIGITS, cpu=True)
    assert scratch.config.learning_rate == pytest.approx(3e-3)
    assert tuned.config.learning_rate == pytest.approx(5e-4)
    assert sgd.config.learning_rate == pytest.approx(5e-4 * 2)  # linear scaling for SGD


def test_batch_size_keeps_enough_steps_per_epoch() -> None:
    assert auto_batch_size(32, DataStats(300, 8, (150, 150)), cpu=True) == 16
    assert auto_batch_size(32, DataStats(50_000, 8, (25_000, 25_000)), cpu=True) == 256
    assert auto_batch_size(224, PHOTOS, cpu=True) == 32
    assert auto_batch_size(224, PHOTOS, cpu=False) == 64
    assert auto_batch_size(32, DataStats(10, 8, (5, 5)), cpu=True) == 10
    assert auto_batch_size(64, DIGITS, cpu=True, max_batch=32) == 32  # the mobile families' cap


def test_imbalanced_classes_get_a_weighted_loss_unless_the_project_says_no() -> None:
    imbalanced = DataStats(train_images=400, median_side=8, class_counts=(300, 100))
    slight = DataStats(train_images=400, median_side=8, class_counts=(220, 180))
    assert resolve(config(), imbalanced, cpu=True).class_weighted is True
    assert resolve(config(), slight, cpu=True).class_weighted is False
    assert resolve(config(class_weighted_loss=False), imbalanced, cpu=True).class_weighted is False
    assert resolve(config(class_weighted_loss=True), slight, cpu=True).class_weighted is True


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"preferred_model": "inception_v3", "image_size": 32}, "at least 75 px"),
        ({"preferred_model": "vit_b_16", "image_size": 64}, "must be 224 for vit_b_16"),
        ({"preferred_model": "vit_b_16", "image_size": 72, "pretrained": False}, "multiple of"),
        ({"preferred_model": "maxvit_t", "image_size": 256, "pretrained": False}, "must be 224"),
    ],
)
def test_sizes_a_model_cannot_take_are_refused_before_training(
    metadata: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message) as raised:
        resolve(config(**metadata), DIGITS, cpu=True)
    assert raised.value.step == "validate_config"


@pytest.mark.parametrize("model", sorted(REPRESENTATIVES.values()))
def test_every_family_builds_and_trains_a_step_at_its_auto_size(model: str) -> None:
    resolved = resolve(config(recipe="auto", preferred_model=model, pretrained=False), DIGITS, cpu=True)
    size = resolved.config.image_size
    torch.manual_seed(0)
    network = build_model(model, 10, pretrained=False, kwargs=resolved.build_kwargs)
    network.train()
    logits = network(torch.randn(2, 3, size, size))
    logits = logits if isinstance(logits, torch.Tensor) else logits.logits
    assert logits.shape == (2, 10)
    logits.sum().backward()
    rebuilt = build_model(model, 10, pretrained=False, kwargs=resolved.shape_kwargs)
    rebuilt.load_state_dict(network.state_dict())  # what the evaluation agent does with the metadata


def test_a_vit_from_scratch_takes_small_steps_at_a_low_rate() -> None:
    # No convolutional prior: many small steps at a low rate (ViT-B/16 on digits, 3 epochs: 0.27 test
    # accuracy at batch 64 and 5e-4, 0.75 at batch 16 and 1e-4).
    vit = resolve(config(recipe="auto", preferred_model="vit_b_16", pretrained=False), DIGITS, cpu=False)
    assert (vit.config.image_size, vit.config.batch_size) == (64, 16)
    assert vit.config.learning_rate == pytest.approx(1e-4)


def test_a_maxvit_from_scratch_learns_like_a_vit_at_its_fixed_size() -> None:
    # Digits, 3 epochs from scratch: chance after 2 at batch 32 and 7e-4; 0.76 accuracy at batch 16, 1e-4.
    maxvit = resolve(config(recipe="auto", preferred_model="maxvit_t", pretrained=False), DIGITS, cpu=True)
    assert (maxvit.config.image_size, maxvit.config.batch_size) == (224, 16)
    assert maxvit.config.learning_rate == pytest.approx(1e-4)
