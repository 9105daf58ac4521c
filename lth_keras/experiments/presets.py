"""The paper's presets: the settings of Figure 2 of Frankle & Carbin (2019), as configs.

`PRESETS` holds an `ExperimentConfig` per network; `preset(name,
**overrides)` returns one, changed (and validated). The `vit` preset is not
the paper's: it is the small ViT study of docs/VIT.md.
"""

from lth_keras.experiments.checks import fail
from lth_keras.experiments.config import ExperimentConfig

__all__ = ["PRESETS", "preset"]

_CONV_SHARED = dict(dataset="cifar10", batch_size=60, rate=0.2, output_rate=0.1, eval_every=1000)
# VGG-19 and ResNet-20: SGD with momentum and weight decay, global pruning of
# every layer but the output, data augmentation.
_DEEP_SHARED = dict(
    dataset="cifar10",
    optimizer="sgd",
    momentum=0.9,
    weight_decay=1e-4,
    scope="global",
    rate=0.2,
    exclude=("output",),
    augment=True,
    rounds=20,
)

PRESETS = {
    "lenet": ExperimentConfig(
        model="lenet",
        dataset="mnist",
        iterations=50000,
        batch_size=60,
        optimizer="adam",
        learning_rate=1.2e-3,
        rate=0.2,
        output_rate=0.1,
        rounds=15,
    ),
    "conv2": ExperimentConfig(
        model="conv2",
        iterations=20000,
        learning_rate=2e-4,
        layer_rates=(("Conv2D", 0.1),),
        rounds=20,
        **_CONV_SHARED,
    ),
    "conv4": ExperimentConfig(
        model="conv4",
        iterations=25000,
        learning_rate=3e-4,
        layer_rates=(("Conv2D", 0.1),),
        rounds=20,
        **_CONV_SHARED,
    ),
    "conv6": ExperimentConfig(
        model="conv6",
        iterations=30000,
        learning_rate=3e-4,
        layer_rates=(("Conv2D", 0.15),),
        rounds=20,
        **_CONV_SHARED,
    ),
    # 160 epochs of 45,000 images at batch 64 = 112,480 steps; the learning
    # rate drops 10x at epochs 80 and 120; warm-up over 10K steps.
    "vgg19": ExperimentConfig(
        model="vgg19",
        iterations=112480,
        eval_every=2812,
        batch_size=64,
        learning_rate=0.1,
        lr_boundaries=(56240, 84360),
        warmup_iterations=10000,
        **_DEEP_SHARED,
    ),
    "resnet20": ExperimentConfig(
        model="resnet20",
        iterations=30000,
        eval_every=1000,
        batch_size=128,
        learning_rate=0.03,
        lr_boundaries=(20000, 25000),
        warmup_iterations=20000,
        **_DEEP_SHARED,
    ),
    # Not in the paper: a small ViT on MNIST trained from scratch (docs/VIT.md).
    # ViTs are trained from scratch with Adam(W), a warm-up and a decay: here
    # Adam 1e-3, a linear warm-up over the first 100 steps (10% of the round)
    # and the decay as one 10x drop at 75% (the runner's schedules are
    # piecewise), 1,000 steps of 128 images (2.3 epochs) a round to fit a CPU; no
    # weight decay (AdamW's usual 0.05 would shrink weights by under 5% in
    # 1,000 steps at this rate: too short a run for it to regularise).
    # 8 rounds at 0.2 leave 16.8% of every attention, MLP and patch kernel.
    "vit": ExperimentConfig(
        model="vit",
        dataset="mnist",
        iterations=1000,
        eval_every=100,
        batch_size=128,
        optimizer="adam",
        learning_rate=1e-3,
        warmup_iterations=100,
        lr_boundaries=(750,),
        rate=0.2,
        output_rate=0.1,
        rounds=8,
    ),
}
"""The settings of Figure 2 of arXiv 1803.03635 by network, and a small ViT: `ExperimentConfig`s."""


def preset(name, **overrides):
    """The paper's config for a network, with overrides.

    Args:
        name: A key of `PRESETS`.
        **overrides: Config fields to change.

    Returns:
        An `ExperimentConfig`.

    Raises:
        ValueError: If `name` is not a preset or an override is invalid.

    Example:

    ```python
    config = preset("lenet", iterations=10000, rounds=5)
    ```
    """
    if name not in PRESETS:
        fail("preset", name, f"one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
