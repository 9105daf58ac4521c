"""Experiment configs and the paper's presets, as data.

`ExperimentConfig` is a frozen dataclass validated on creation, with
`to_dict`/`from_dict` and a stable `hash()` used to name and guard run
directories. `PRESETS` holds the settings of Figure 2 of Frankle & Carbin
(2019) for each network; `preset(name, **overrides)` returns one, changed.
"""

import dataclasses
import hashlib
import json
import math

from lth_keras.callbacks import RESETS as _RESET_POLICIES
from lth_keras.callbacks import get_reset
from lth_keras.experiments.arms import CONTROLS
from lth_keras.experiments.models import MODELS
from lth_keras.options import SCOPES, check_choice, check_int, check_pruning_options
from lth_keras.pruning import get_structure

__all__ = [
    "CONTROLS",
    "DATASETS",
    "MODELS",
    "OPTIMIZERS",
    "PRESETS",
    "RESETS",
    "ExperimentConfig",
    "preset",
]

#: Data sets with a TFDS pipeline in `lth_keras.experiments.data`.
DATASETS = ("mnist", "cifar10")
OPTIMIZERS = ("adam", "sgd")
#: Resets of the ticket arm: every `LotteryPruner` reset but `"reinit"`,
#: which is a control here (`controls=("reinit",)`), not a way to find tickets.
RESETS = tuple(name for name in _RESET_POLICIES.names() if name != "reinit")


def _fail(name, value, expected):
    raise ValueError(
        f"Received an invalid value for `{name}`, expected {expected}. Received: {name}={value!r}"
    )


#: Fields added after the first release, left out of `hash()` at these
#: defaults so that run directories named by the hash keep their names.
_HASHED_WHEN_CHANGED = {
    "width": 1.0,
    "control_rounds": [],
    "early_bird": False,
    "early_bird_window": 5,
    "early_bird_threshold": 0.1,
    "eval_rounds": [],
    "train_eval_examples": 10000,
}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that determines an iterative-magnitude-pruning experiment.

    Iterations count optimizer steps, the paper's unit. Each round trains for
    `iterations` steps, evaluating on the validation split every
    `eval_every` steps; round 0 trains the dense network and each later
    round first prunes and resets (see `LotteryPruner`).

    Args:
        model: One of `MODELS`. Defaults to `"lenet"`.
        width: Multiplies the model's hidden units and filters (see
            `lth_keras.experiments.models.build_model`), e.g. `0.25` for a
            Conv-2 with 16 filters that trains 10x faster on a CPU. Defaults
            to `1.0` (the paper's networks).
        dataset: `"mnist"` or `"cifar10"`. Defaults to `"mnist"`.
        rounds: Pruning rounds after round 0. Defaults to `15`.
        rate: Fraction of remaining weights pruned per round. Defaults to `0.2`.
        output_rate: Rate of the output layer (layerwise). Defaults to
            `None`, meaning `rate / 2`.
        layer_rates: Tuple of `(layer name or type, rate)` pairs. Defaults
            to `()`.
        exclude: Layer names or types never pruned. Defaults to `()`.
        scope: `"layerwise"` or `"global"`. Defaults to `"layerwise"`.
        structure: The sparsity structure, a shorthand of
            `lth_keras.pruning.get_structure`: `"unstructured"`, `"units"`,
            `"block:1x4"`, `"block:1x16"` or `"N:M"` such as `"2:4"`.
            Defaults to `"unstructured"`.
        reset: `"rewind"`, `"lr_rewind"` or `"finetune"`. Defaults to
            `"rewind"`.
        rewind_iteration: Late resetting point: rounds after the first
            rewind to this step and train from it to `iterations`; a multiple
            of `eval_every` and of `steps_per_execution`. Defaults to `0`.
        controls: Controls trained at every round with the ticket's
            sparsity: `"reinit"` (ticket mask, new random weights),
            `"random"` (random mask, the ticket's initial weights),
            `"shuffle"` (the ticket's mask shuffled within each layer),
            `"pft"` (pruning & fine-tuning: the ticket's mask on the weights
            the previous round trained, trained again from step 0) and
            `"snip"`, `"grasp"`, `"synflow"` (the ticket's initial weights
            pruned at once by that score, globally, to the ticket's number
            of remaining weights); see `lth_keras.experiments.arms`.
            Defaults to `()`.
        control_rounds: The rounds (1 to `rounds`) at which the controls
            train, strictly increasing. Defaults to `()`: every pruned round.
        early_bird: Early-bird rounds (You et al. 2020): every round whose
            only use is to find the next mask stops once that mask stops
            changing (see `lth_keras.pruning.EarlyBird`), and the next round
            prunes and resets at once. The last round, and those in
            `eval_rounds`, are trained in full. Defaults to `False`.
        early_bird_window: Masks compared by the early-bird rule, one per
            evaluation period, the newest included; an int >= 2 and at most
            the periods of a round (`iterations // eval_every`). Defaults
            to `5` (the paper's).
        early_bird_threshold: The largest normalised Hamming distance
            between those masks still counted as unchanged, in [0, 1].
            Defaults to `0.1` (the paper's).
        eval_rounds: With `early_bird`, rounds (0 to `rounds`) also trained
            in full for evaluation: the next mask is still the one drawn at
            the early-bird point (the round-end state is saved there), so
            listing a round changes no mask, only adds training. Defaults to
            `()`.
        iterations: Training steps per round. Defaults to `50000`.
        eval_every: Steps between validation evaluations. Defaults to `1000`.
        batch_size: Defaults to `60`.
        optimizer: `"adam"` or `"sgd"` (with momentum). Defaults to `"adam"`.
        learning_rate: Defaults to `1.2e-3`.
        momentum: SGD momentum. Defaults to `0.9`.
        weight_decay: Optimizer weight decay. Defaults to `0.0`. Keras
            applies it decoupled from the gradient (`w -= lr * wd * w` each
            step, as in AdamW/SGDW), not as the L2 term in the loss of the
            paper's VGG-19/ResNet-20 code; with momentum 0.9 the decoupled
            form acts about 10x weaker for the same value.
        lr_boundaries: Steps at which the learning rate is multiplied by
            `lr_factor`. Defaults to `()`.
        lr_factor: Defaults to `0.1`.
        warmup_iterations: Linear warm-up from 0 over this many steps.
            Defaults to `0`.
        validation_examples: Training images held out for validation (the
            paper holds out 5,000). Defaults to `5000`.
        train_examples: Use only this many of the remaining training images.
            Defaults to `None` (all).
        test_examples: Use only this many test images. Defaults to `None`.
        train_eval_examples: The training images `train_accuracy` is
            measured on at the end of each job: the first this many of the
            training split, a fixed sample (evaluating all 55,000 MNIST
            images took 6% of a LeNet job). `None` evaluates them all.
            Defaults to `10000`.
        augment: Random crops and flips (CIFAR-10 only). Defaults to `False`.
        seed: Seeds weights, data order and controls. Defaults to `0`.
        overlap_ps: The fractions `p` of the overlap ratio R_p (Liu et al.
            2021) recorded for every job, between the weights it starts from
            and its trained weights. Defaults to `(0.1, 0.2, 0.3, 0.4, 0.5)`.
        jit_compile: Compile train and evaluation steps with XLA, about 2x
            faster on a CPU than TensorFlow graphs. XLA gives the same numbers
            for the same seed on the same machine, and after a resume (both
            tested); without it, TensorFlow runs enable TensorFlow's op
            determinism (which Keras does not combine with XLA) for the same
            guarantee. Defaults to `None`: XLA, except under
            `MultiWorkerMirroredStrategy`, where TensorFlow 2.21 crashes with
            it (a double free while collecting garbage).
        steps_per_execution: Train steps per compiled call. Defaults to
            `None`: the largest divisor of `eval_every` (and of
            `rewind_iteration`, when set) up to 100, the fastest setting
            measured on LeNet-300-100 (see BUILD.md); 1 under
            `MultiWorkerMirroredStrategy`, whose multi-step train function
            fails in Keras 3.15.

    Raises:
        ValueError: For a value outside its allowed range or set.

    Example:

    ```python
    config = ExperimentConfig(model="lenet", rounds=3, iterations=2000)
    config.hash()  # 'a1b2c3d4e5' style, stable across runs
    ```
    """

    model: str = "lenet"
    width: float = 1.0
    dataset: str = "mnist"
    rounds: int = 15
    rate: float = 0.2
    output_rate: float | None = None
    layer_rates: tuple = ()
    exclude: tuple = ()
    scope: str = "layerwise"
    structure: str = "unstructured"
    reset: str = "rewind"
    rewind_iteration: int = 0
    controls: tuple = ()
    control_rounds: tuple = ()
    early_bird: bool = False
    early_bird_window: int = 5
    early_bird_threshold: float = 0.1
    eval_rounds: tuple = ()
    iterations: int = 50000
    eval_every: int = 1000
    batch_size: int = 60
    optimizer: str = "adam"
    learning_rate: float = 1.2e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_boundaries: tuple = ()
    lr_factor: float = 0.1
    warmup_iterations: int = 0
    validation_examples: int = 5000
    train_examples: int | None = None
    test_examples: int | None = None
    train_eval_examples: int | None = 10000
    augment: bool = False
    seed: int = 0
    overlap_ps: tuple = (0.1, 0.2, 0.3, 0.4, 0.5)
    jit_compile: bool | None = None
    steps_per_execution: int | None = None

    def __post_init__(self):
        # Lists from JSON or flags become tuples, so configs stay hashable.
        for name in (
            "layer_rates",
            "exclude",
            "controls",
            "control_rounds",
            "eval_rounds",
            "lr_boundaries",
            "overlap_ps",
        ):
            value = getattr(self, name)
            if isinstance(value, str):  # one name, not its characters
                value = (value,)
            if name == "layer_rates" and isinstance(value, dict):
                value = tuple(sorted(value.items()))
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            object.__setattr__(self, name, value)
        for name, choices in (
            ("model", MODELS),
            ("dataset", DATASETS),
            ("optimizer", OPTIMIZERS),
            ("reset", RESETS),
            ("scope", SCOPES),
        ):
            check_choice(getattr(self, name), name, choices)
        for control in self.controls:
            if control not in CONTROLS:
                _fail("controls", self.controls, f"a subset of {list(CONTROLS)}")
        for name, minimum in (
            ("rounds", 0),
            ("iterations", 1),
            ("eval_every", 1),
            ("batch_size", 1),
            ("rewind_iteration", 0),
            ("warmup_iterations", 0),
            ("validation_examples", 1),
            ("seed", 0),
        ):
            check_int(getattr(self, name), name, minimum)
        if not self.overlap_ps or not all(
            not isinstance(p, bool) and isinstance(p, (int, float)) and 0 < p <= 1
            for p in self.overlap_ps
        ):
            _fail("overlap_ps", self.overlap_ps, "a non-empty list of floats in (0, 1]")
        if self.jit_compile not in (None, True, False):
            _fail("jit_compile", self.jit_compile, "True, False or None (automatic)")
        for name in (
            "train_examples",
            "test_examples",
            "train_eval_examples",
            "steps_per_execution",
        ):
            check_int(getattr(self, name), name, 1, allow_none=True)
        if self.iterations % self.eval_every:
            _fail("eval_every", self.eval_every, f"a divisor of iterations={self.iterations}")
        if self.rewind_iteration >= self.iterations:
            _fail(
                "rewind_iteration",
                self.rewind_iteration,
                f"an int below iterations={self.iterations}",
            )
        for name, value in (
            ("eval_every", self.eval_every),
            ("steps_per_execution", self.execution_steps),
        ):
            if self.rewind_iteration % value:
                _fail(
                    "rewind_iteration",
                    self.rewind_iteration,
                    f"a multiple of {name}={value} (rounds restart there)",
                )
        if not isinstance(self.structure, str):
            _fail("structure", self.structure, "a structure name such as 'units' or '2:4'")
        get_structure(self.structure)
        reset = get_reset(self.reset)
        check_pruning_options(
            rate=self.rate,
            output_rate=self.output_rate,
            layer_rates=self.layer_rates,
            scope=self.scope,
            rewinds=reset.rewinds,
            reset_name=reset.name,
            rewind_iteration=self.rewind_iteration,
        )
        if isinstance(self.width, bool) or not isinstance(self.width, (int, float)):
            _fail("width", self.width, "a float > 0")
        if not self.width > 0:
            _fail("width", self.width, "a float > 0")
        if self.learning_rate <= 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            _fail(
                "learning_rate/momentum/weight_decay",
                (self.learning_rate, self.momentum, self.weight_decay),
                "learning_rate > 0, momentum in [0, 1), weight_decay >= 0",
            )
        if list(self.lr_boundaries) != sorted(set(self.lr_boundaries)):
            _fail("lr_boundaries", self.lr_boundaries, "strictly increasing steps")
        if self.augment and self.dataset != "cifar10":
            _fail("augment", self.augment, "False unless dataset='cifar10' (crops and flips)")
        self._check_rounds_and_early_bird()

    def _check_rounds_and_early_bird(self):
        for name, low in (("control_rounds", 1), ("eval_rounds", 0)):
            rounds = getattr(self, name)
            valid = all(
                not isinstance(r, bool) and isinstance(r, int) and low <= r <= self.rounds
                for r in rounds
            )
            if not valid or list(rounds) != sorted(set(rounds)):
                _fail(
                    name,
                    rounds,
                    f"strictly increasing rounds from {low} to rounds={self.rounds}",
                )
        if not isinstance(self.early_bird, bool):
            _fail("early_bird", self.early_bird, "True or False")
        periods = self.iterations // self.eval_every
        check_int(self.early_bird_window, "early_bird_window", 2)
        if self.early_bird and self.early_bird_window > periods:
            _fail(
                "early_bird_window",
                self.early_bird_window,
                f"at most the {periods} evaluation periods of a round "
                f"(iterations={self.iterations} // eval_every={self.eval_every}); "
                "evaluate more often or shorten the window",
            )
        threshold = self.early_bird_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            _fail("early_bird_threshold", threshold, "a float in [0, 1]")
        if not 0.0 <= threshold <= 1.0:
            _fail("early_bird_threshold", threshold, "a float in [0, 1]")
        if self.eval_rounds and not self.early_bird:
            _fail(
                "eval_rounds",
                self.eval_rounds,
                "() unless early_bird=True (without it every round trains in full)",
            )

    @property
    def execution_steps(self):
        """`steps_per_execution`, or the default it stands for when `None`.

        Example:

        ```python
        ExperimentConfig(eval_every=1000).execution_steps  # 100
        ExperimentConfig(iterations=112480, eval_every=2812).execution_steps  # 76
        ```
        """
        if self.steps_per_execution is not None:
            return self.steps_per_execution
        period = math.gcd(self.eval_every, self.rewind_iteration)  # gcd(n, 0) == n
        return max(d for d in range(1, min(period, 100) + 1) if period % d == 0)

    def to_dict(self):
        """Returns the config as a JSON-ready dict.

        Returns:
            A dict of plain values (tuples become lists).

        Example:

        ```python
        ExperimentConfig().to_dict()["model"]  # 'lenet'
        ```
        """
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values):
        """Builds a config from `to_dict()` output.

        Args:
            values: A dict as returned by `to_dict`.

        Returns:
            An `ExperimentConfig`.

        Raises:
            ValueError: For unknown keys or invalid values.

        Example:

        ```python
        same = ExperimentConfig.from_dict(config.to_dict())
        ```
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"Received unknown config keys: {unknown}. Known keys: {sorted(known)}"
            )
        return cls(**values)

    def hash(self):
        """A short stable hash of the config, for naming run directories.

        Returns:
            10 hexadecimal characters of the SHA-256 of the canonical JSON.

        Example:

        ```python
        ExperimentConfig().hash() == ExperimentConfig().hash()  # True
        ```
        """
        values = self.to_dict()
        for name, default in _HASHED_WHEN_CHANGED.items():
            if values[name] == default:  # fields added later keep older hashes
                del values[name]
        text = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def replace(self, **changes):
        """Returns a copy with `changes` applied (and validated).

        Example:

        ```python
        short = config.replace(iterations=1000, eval_every=100)
        ```
        """
        return dataclasses.replace(self, **changes)


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

#: The settings of Figure 2 of arXiv 1803.03635, by network.
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
}


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
        _fail("preset", name, f"one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
