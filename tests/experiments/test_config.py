"""ExperimentConfig, presets and the command-line flags that build them."""

import hashlib
import json
import re

import pytest

from lth_keras import experiments
from lth_keras.experiments import cli
from lth_keras.experiments.config import _HASHED_WHEN_CHANGED, ExperimentConfig
from lth_keras.experiments.presets import PRESETS, preset


def test_presets_are_exported_by_the_package():
    assert experiments.preset is preset and experiments.PRESETS is PRESETS


def test_presets_hold_the_papers_settings():
    lenet = PRESETS["lenet"]
    assert (lenet.iterations, lenet.batch_size, lenet.optimizer, lenet.learning_rate) == (
        50000,
        60,
        "adam",
        1.2e-3,
    )
    assert (lenet.rate, lenet.output_rate, lenet.scope) == (0.2, 0.1, "layerwise")
    for name, iterations, lr, conv_rate in (
        ("conv2", 20000, 2e-4, 0.1),
        ("conv4", 25000, 3e-4, 0.1),
        ("conv6", 30000, 3e-4, 0.15),
    ):
        config = PRESETS[name]
        assert (config.dataset, config.iterations, config.learning_rate) == (
            "cifar10",
            iterations,
            lr,
        )
        assert config.layer_rates == (("Conv2D", conv_rate),)
        assert (config.rate, config.output_rate, config.batch_size) == (0.2, 0.1, 60)
    vgg, resnet = PRESETS["vgg19"], PRESETS["resnet20"]
    assert (vgg.batch_size, vgg.iterations, vgg.learning_rate) == (64, 112480, 0.1)
    assert vgg.lr_boundaries == (80 * 703, 120 * 703)  # epochs 80 and 120 of 45K images
    assert (resnet.batch_size, resnet.iterations, resnet.learning_rate) == (128, 30000, 0.03)
    assert resnet.lr_boundaries == (20000, 25000)
    for config in (vgg, resnet):
        assert (config.optimizer, config.momentum, config.scope, config.rate) == (
            "sgd",
            0.9,
            "global",
            0.2,
        )
        assert config.warmup_iterations > 0 and config.augment
        assert config.exclude == ("output",)


def test_round_trip_and_hash():
    config = preset("conv4", rounds=3, controls=["reinit"], layer_rates={"fc1": 0.3})
    again = ExperimentConfig.from_dict(config.to_dict())
    assert again == config
    assert again.hash() == config.hash()
    assert config.replace(seed=1).hash() != config.hash()
    assert len(config.hash()) == 10


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"model": "resnet50"}, "model='resnet50'"),
        ({"rounds": -1}, "rounds=-1"),
        ({"iterations": 1000, "eval_every": 300}, "a divisor of iterations=1000"),
        ({"rewind_iteration": 50000}, "below iterations=50000"),
        ({"controls": ("reinit", "bogus")}, "controls="),
        ({"rate": 1.5}, "rate=1.5"),
        ({"scope": "global"}, "with scope='global' one rate prunes"),
        ({"lr_boundaries": (200, 100)}, "strictly increasing"),
        ({"train_examples": 0}, "train_examples=0"),
        ({"reset": "finetune", "rewind_iteration": 1000}, "reset='finetune' does not use a rewind"),
        ({"rewind_iteration": 500}, "a multiple of eval_every=1000"),
        ({"rewind_iteration": 1000, "steps_per_execution": 300}, "steps_per_execution=300"),
        ({"augment": True}, "augment=True"),
        ({"rounds": "3"}, "expected an int >= 0. Received: rounds='3'"),
        ({"rounds": 10000}, "expected an int of at most 9999. Received: rounds=10000"),
        ({"iterations": 10**19}, "expected an int of at most 1000000000"),
        ({"iterations": 10**7, "eval_every": 1}, "at least iterations / 999999"),
        ({"seed": 2**32}, "expected an int of at most 4294967295"),
        ({"learning_rate": "0.1"}, "expected a finite number. Received: learning_rate='0.1'"),
        ({"learning_rate": float("nan")}, "learning_rate=nan"),
        ({"lr_factor": 0.0}, "lr_factor=0.0"),
        ({"output_rate": "half"}, "expected a number or None"),
        ({"model": ["lenet"]}, "expected a string. Received: model=['lenet']"),
        ({"augment": "yes"}, "expected True or False. Received: augment='yes'"),
        ({"controls": 5}, "expected a list. Received: controls=5"),
        ({"exclude": (1,)}, "expected a list of names"),
        ({"layer_rates": (("fc1",),)}, "(layer name or type, rate) pairs"),
        ({"lr_boundaries": ("100",)}, "a list of steps (ints)"),
        ({"pft_schedule": "cubic"}, "expected one of ['oneshot', 'polynomial']"),
        ({"pft_schedule": "polynomial"}, "'oneshot' unless 'pft' is among the controls"),
        (
            {"pft_schedule": "polynomial", "controls": ("pft",), "structure": "units"},
            "'oneshot' with structure='units'",
        ),
        ({"pft_prune_fraction": 1.5}, "a float in (0, 1]. Received: pft_prune_fraction=1.5"),
    ],
    ids=[
        "model",
        "rounds",
        "eval-every",
        "rewind",
        "controls",
        "rate",
        "global",
        "boundaries",
        "train-examples",
        "finetune-rewind",
        "rewind-period",
        "rewind-execution",
        "augment-mnist",
        "rounds-string",
        "rounds-bound",
        "iterations-bound",
        "periods-bound",
        "seed-bound",
        "rate-string",
        "rate-nan",
        "lr-factor",
        "output-rate-string",
        "model-list",
        "augment-string",
        "controls-int",
        "exclude-int",
        "layer-rates-pair",
        "boundaries-string",
        "pft-schedule",
        "pft-schedule-without-pft",
        "pft-schedule-structured",
        "pft-prune-fraction",
    ],
)
def test_invalid_configs(changes, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        preset("lenet", **changes)


def test_unknown_preset_and_keys():
    with pytest.raises(ValueError, match="preset='mlp'"):
        preset("mlp")
    with pytest.raises(ValueError, match=r"unknown config keys: \['epochs'\]"):
        ExperimentConfig.from_dict({"epochs": 3})


def test_config_from_flags_applies_only_set_flags():
    values = {name: None for name in ExperimentConfig.__dataclass_fields__}
    values.update(
        model="conv2",
        rounds=4,
        layer_rates=["Conv2D=0.05", "fc1=0.3"],
        controls=["reinit", "pft"],
        pft_schedule="polynomial",
        pft_prune_fraction=0.25,
        exclude=["output"],
        lr_boundaries=["100"],
        iterations=200,
        eval_every=100,
    )
    config = cli.config_from_flags(values)
    assert config == preset(
        "conv2",
        rounds=4,
        layer_rates=(("Conv2D", 0.05), ("fc1", 0.3)),
        controls=("reinit", "pft"),
        pft_schedule="polynomial",
        pft_prune_fraction=0.25,
        exclude=("output",),
        lr_boundaries=(100,),
        iterations=200,
        eval_every=100,
    )
    values.update(layer_rates=["Conv2D:0.1"])
    with pytest.raises(ValueError, match="expected NAME=RATE"):
        cli.config_from_flags(values)


def test_a_lone_string_is_one_name_not_its_characters():
    config = ExperimentConfig(exclude="output", controls="reinit")
    assert config.exclude == ("output",)
    assert config.controls == ("reinit",)


def test_width_default_keeps_older_hashes_and_changes_hash_when_set():
    config = preset("conv2", rounds=3)
    values = config.to_dict()
    assert values["width"] == 1.0
    for name in _HASHED_WHEN_CHANGED:  # a config stored before `width` (and later fields)
        del values[name]
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    assert config.hash() == hashlib.sha256(text.encode()).hexdigest()[:10]
    assert config.replace(width=0.25).hash() != config.hash()


@pytest.mark.parametrize("width", [0, -0.5, True], ids=["zero", "negative", "bool"])
def test_invalid_config_width(width):
    with pytest.raises(ValueError, match="width"):
        preset("conv2", width=width)


def test_train_eval_examples():
    assert preset("lenet").train_eval_examples == 10000
    assert preset("lenet", train_eval_examples=None).hash() != preset("lenet").hash()
    with pytest.raises(ValueError, match="train_eval_examples"):
        preset("lenet", train_eval_examples=0)
    flags = {"model": "lenet", "train_eval_examples": 0}
    assert cli.config_from_flags(flags).train_eval_examples is None
