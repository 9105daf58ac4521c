"""Experiment configs as data: `ExperimentConfig`.

`ExperimentConfig` is a frozen dataclass validated on creation (by
`lth_keras.experiments.checks`), with `to_dict`/`from_dict` and a stable
`hash()` used to name and guard run directories. The paper's presets,
`PRESETS` and `preset(name, **overrides)`, live in
`lth_keras.experiments.presets` (and `lth_keras.experiments`).
"""

import dataclasses
import hashlib
import json
import math

from lth_keras.experiments import checks
from lth_keras.experiments.arms import CONTROLS
from lth_keras.experiments.checks import DATASETS, OPTIMIZERS, RESETS
from lth_keras.experiments.models import MODELS

__all__ = [
    "CONTROLS",
    "DATASETS",
    "MODELS",
    "OPTIMIZERS",
    "RESETS",
    "ExperimentConfig",
]


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
    "trials": 1,
    "pft_schedule": "oneshot",
    "pft_prune_fraction": 0.5,
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
        pft_schedule: How the `"pft"` control prunes: `"oneshot"` (the
            ticket's mask at once, on the weights the previous round
            trained) or `"polynomial"` (tfmot's gradual pruning: the dense
            network round 0 trained, pruned during the job along
            `PolynomialDecay` to the ticket's per-kernel counts, then
            fine-tuned; see `lth_keras.experiments.arms.PruneFineTune`).
            Only with `"pft"` in `controls` and unstructured sparsity.
            Defaults to `"oneshot"`.
        pft_prune_fraction: With `pft_schedule="polynomial"`, the fraction of
            `iterations` over which the sparsity rises (rounded down to a
            multiple of `eval_every`, at least `eval_every`); the rest
            fine-tunes. A float in (0, 1]. Defaults to `0.5`.
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
        trials: Independent repetitions of the whole run: trial `t` is the
            run with seed `seed + t`, in its own run directory
            `<run_dir>/trial_<t>` (see `lth_keras.experiments.run`, which
            trains the trials together, fused, where that is faster).
            Defaults to `1`.
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
    pft_schedule: str = "oneshot"
    pft_prune_fraction: float = 0.5
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
    trials: int = 1
    overlap_ps: tuple = (0.1, 0.2, 0.3, 0.4, 0.5)
    jit_compile: bool | None = None
    steps_per_execution: int | None = None

    def __post_init__(self):
        checks.normalize(self)  # lists from JSON or flags become tuples: configs stay hashable
        checks.validate(self)

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
