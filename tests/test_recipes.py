"""training_recipe: SPEC §4's table, the offline rows, validation, and RunConfig overrides."""

from __future__ import annotations

import dataclasses

import pytest

from masc_fast.pipeline.runs.config import RunConfig
from masc_fast.pipeline.runs.recipes import RECIPES, TrainingRecipe, training_recipe

# SPEC §4, typed in from the table: (optimizer, lr, momentum, batch, target, cap).
SPEC_TABLE = {
    ("mlp", "mnist"): ("sgd", 1e-3, 0.9, 32, 1.0, 500),
    ("mlp", "cifar10"): ("sgd", 1e-3, 0.9, 32, 1.0, 500),
    ("cnn", "mnist"): ("adam", 2e-4, None, 128, 0.999, 500),
    ("cnn", "fashion-mnist"): ("adam", 2e-4, None, 128, 0.991, 500),
    ("cnn", "cifar10"): ("adam", 2e-4, None, 32, 1.0, 500),
    ("alexnet", "cifar100"): ("adam", 1e-4, None, 128, 0.991, 500),
    ("alexnet", "tiny-imagenet"): ("adam", 1e-4, None, 500, 0.999, 500),
    ("resnet18", "cifar10"): ("sgd", 1e-3, 0.9, 32, 1.0, 500),
}


@pytest.mark.parametrize(("model", "dataset"), list(SPEC_TABLE), ids="-".join)
def test_training_recipe_matches_spec_table(model, dataset):
    optimizer, lr, momentum, batch, target, cap = SPEC_TABLE[(model, dataset)]
    recipe = training_recipe(model, dataset)
    assert recipe == TrainingRecipe(optimizer, lr, momentum, batch, target, cap)
    assert recipe.target_accuracy <= 1.0  # a fraction, not a percentage


@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
def test_training_recipe_offline_sets_use_adam_to_memorise_on_a_cpu(dataset):
    recipe = training_recipe("mlp", dataset)
    assert recipe == TrainingRecipe("adam", 1e-3, None, 32, 1.0, 100)


def test_training_recipe_small_mlp_on_digits_uses_fused_adam_at_twice_the_rate():
    recipe = training_recipe("mlp-small", "digits")
    assert recipe == TrainingRecipe("adam-fused", 2e-3, None, 32, 1.0, 100)


ZHANG_NETS = ("mlp-1x512", "mlp-3x512", "alexnet-small", "inception-small")
ZHANG_SETS = ("mnist", "fashion-mnist", "cifar10")


def test_training_recipe_table_has_nothing_else():
    offline = {("mlp", "digits"), ("mlp", "mnist1d"), ("mlp-small", "digits")}
    zhang = {(model, dataset) for model in ZHANG_NETS for dataset in ZHANG_SETS}
    zhang |= {(model, data) for model in ZHANG_NETS[:2] for data in ("digits", "mnist1d")}
    assert set(RECIPES) == set(SPEC_TABLE) | offline | zhang


@pytest.mark.parametrize("model", ZHANG_NETS)
def test_zhang_networks_train_with_their_schedule(model):
    """SGD momentum 0.9, batch 128, lr 0.1 (Inception) or 0.01, x0.95 per epoch."""
    for dataset in ZHANG_SETS:
        recipe = training_recipe(model, dataset)
        lr = 0.1 if model == "inception-small" else 0.01
        assert recipe == TrainingRecipe("sgd", lr, 0.9, 128, 1.0, 200, lr_decay=0.95)
        assert recipe.lr_at(1) == lr and recipe.lr_at(3) == pytest.approx(lr * 0.95**2)
        assert TrainingRecipe.from_dict(recipe.to_dict()) == recipe


def test_zhang_mlps_on_the_offline_sets_are_cpu_sized():
    for model in ("mlp-1x512", "mlp-3x512"):
        for dataset in ("digits", "mnist1d"):
            recipe = training_recipe(model, dataset)
            assert recipe == TrainingRecipe("adam-fused", 2e-3, None, 32, 1.0, 200)


def test_constant_rate_recipes_keep_their_old_dict():
    """recipe.json of runs made before lr_decay existed still matches (resume checks it)."""
    recipe = training_recipe("mlp", "digits")
    assert "lr_decay" not in recipe.to_dict() and recipe.lr_at(50) == recipe.lr
    with pytest.raises(ValueError, match="lr_decay must be a factor in"):
        TrainingRecipe("sgd", 0.1, 0.9, 128, 1.0, 10, lr_decay=1.5)


def test_training_recipe_every_model_and_dataset_name_exists():
    from masc_fast.data import DATASET_NAMES
    from masc_fast.models import MODEL_NAMES

    for model, dataset in RECIPES:
        assert model in MODEL_NAMES and dataset in DATASET_NAMES


@pytest.mark.parametrize(("model", "dataset"), [("cnn", "digits"), ("mlp", "cifar100"), (1, 2)])
def test_training_recipe_unknown_combination_lists_known_ones(model, dataset):
    with pytest.raises(ValueError, match="no training recipe") as error:
        training_recipe(model, dataset)
    assert "cnn/fashion-mnist" in str(error.value) and "mlp/digits" in str(error.value)


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"optimizer": "rmsprop"}, ValueError, "unknown optimizer 'rmsprop'"),
        ({"lr": 0.0}, ValueError, "lr must be a positive number"),
        ({"momentum": 1.0}, ValueError, r"momentum must be in \[0, 1\)"),
        ({"momentum": None}, ValueError, r"momentum must be in \[0, 1\)"),
        ({"optimizer": "adam"}, ValueError, "momentum applies to SGD only"),
        ({"optimizer": "adam-fused"}, ValueError, "momentum applies to SGD only"),
        ({"batch_size": 0}, ValueError, "batch_size must be at least 1"),
        ({"batch_size": 2.0}, TypeError, "batch_size must be an integer"),
        ({"max_epochs": True}, TypeError, "max_epochs must be an integer"),
        ({"target_accuracy": 99.9}, ValueError, r"fraction in \(0, 1\]"),
        ({"target_accuracy": 0}, ValueError, r"fraction in \(0, 1\]"),
    ],
)
def test_training_recipe_rejects_bad_fields(fields, error, match):
    base = {
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "batch_size": 8,
        "target_accuracy": 1.0,
        "max_epochs": 3,
    }
    with pytest.raises(error, match=match):
        TrainingRecipe(**{**base, **fields})


def test_training_recipe_round_trips_through_dict_and_is_frozen():
    recipe = training_recipe("alexnet", "tiny-imagenet")
    assert TrainingRecipe.from_dict(recipe.to_dict()) == recipe
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.lr = 1.0
    with pytest.raises(ValueError, match=r"unknown TrainingRecipe field\(s\) \['beta'\]"):
        TrainingRecipe.from_dict({**recipe.to_dict(), "beta": 0.5})


def test_run_config_recipe_applies_overrides():
    config = RunConfig("cnn", "mnist", lr=1e-3, max_epochs=7, target_accuracy=0.5)
    assert config.recipe() == TrainingRecipe("adam", 1e-3, None, 128, 0.5, 7)


def test_run_config_recipe_switching_optimizer_sets_momentum():
    assert RunConfig("cnn", "mnist", optimizer="sgd").recipe().momentum == 0.9
    assert RunConfig("mlp", "mnist", optimizer="adam").recipe().momentum is None
    assert RunConfig("mlp", "mnist", optimizer="adam-fused").recipe().momentum is None
    assert RunConfig("mlp", "mnist", momentum=0.5).recipe().momentum == 0.5
    with pytest.raises(ValueError, match="momentum applies to SGD only"):
        RunConfig("cnn", "mnist", momentum=0.5).recipe()


def test_run_config_recipe_unknown_pair_needs_every_override():
    with pytest.raises(ValueError, match="no training recipe for model 'mlp' on dataset"):
        RunConfig("mlp", "fashion-mnist", lr=0.1).recipe()
    full = RunConfig(
        "mlp",
        "fashion-mnist",
        optimizer="sgd",
        lr=0.1,
        batch_size=16,
        target_accuracy=0.9,
        max_epochs=2,
    )
    assert full.recipe() == TrainingRecipe("sgd", 0.1, 0.9, 16, 0.9, 2)
