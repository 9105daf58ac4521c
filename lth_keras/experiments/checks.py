"""Validation of `ExperimentConfig`: the allowed values and the rules between fields.

`normalize(config)` turns the lists that JSON and flags give into tuples, so
configs stay hashable; `validate(config)` raises a `ValueError` in Keras'
wording for the first invalid value: a value of the wrong type (a string
where a number belongs, a list where a name belongs: configs are read back
from `config.json`, which may have been edited), out of its range, or
against another field. `ExperimentConfig.__post_init__` calls both, in that
order. The upper bounds (`MAX_ROUNDS`, `MAX_ITERATIONS`, `MAX_PERIODS`,
`MAX_SEED`) are those the run directory's file names and the random number
generators can hold.
"""

import math
import os

from lth_keras.callbacks import RESETS as _RESET_POLICIES
from lth_keras.callbacks import get_reset
from lth_keras.experiments.arms import CONTROLS, PFT_SCHEDULES
from lth_keras.experiments.models import MODELS
from lth_keras.options import SCOPES, check_choice, check_int, check_pruning_options
from lth_keras.pruning import get_structure
from lth_keras.targets import Targets

__all__ = [
    "DATASETS",
    "FUSE_CHOICES",
    "MAX_ITERATIONS",
    "MAX_PERIODS",
    "MAX_ROUNDS",
    "MAX_SEED",
    "MAX_TRIALS",
    "OPTIMIZERS",
    "RESETS",
    "check_fit",
    "fail",
    "normalize",
    "validate",
]

#: Data sets with a TFDS pipeline in `lth_keras.experiments.data`.
DATASETS = ("mnist", "cifar10")
OPTIMIZERS = ("adam", "sgd")
#: How `lth_keras.experiments.run(fuse=...)` trains a run's trials: together
#: where measured faster, together, or one after another.
FUSE_CHOICES = ("auto", "on", "off")
#: Resets of the ticket arm: every `LotteryPruner` reset but `"reinit"`,
#: which is a control here (`controls=("reinit",)`), not a way to find tickets.
RESETS = tuple(name for name in _RESET_POLICIES.names() if name != "reinit")

#: Rounds after round 0: run files are named `round_XX` with at most 4 digits.
MAX_ROUNDS = 9999
#: Training steps per round: a billion steps is weeks on any device, and
#: step counts stay far from int64's end whatever the batch size.
MAX_ITERATIONS = 10**9
#: Evaluation periods per round (`iterations // eval_every`): checkpoints
#: are named `-pXXXX` with at most 6 digits.
MAX_PERIODS = 999999
#: Trials of a run: their folders are named `trial_<t>`.
MAX_TRIALS = 999
#: Seeds NumPy's legacy generator (which `keras.utils.set_random_seed` seeds) accepts.
MAX_SEED = 2**32 - 1

_STR = ("model", "dataset", "scope", "structure", "reset", "optimizer", "pft_schedule")
_FLOAT = (
    "width",
    "rate",
    "early_bird_threshold",
    "learning_rate",
    "momentum",
    "weight_decay",
    "lr_factor",
    "pft_prune_fraction",
)
_BOOL = ("early_bird", "augment")

#: The fields given as tuples, which may arrive as lists (or one string).
_TUPLES = (
    "layer_rates",
    "exclude",
    "controls",
    "control_rounds",
    "eval_rounds",
    "lr_boundaries",
    "overlap_ps",
)


def fail(name, value, expected):
    """Raises the `ValueError` of an invalid `name=value` (Keras wording)."""
    raise ValueError(
        f"Received an invalid value for `{name}`, expected {expected}. Received: {name}={value!r}"
    )


def normalize(config):
    """Turns the list fields of a (frozen) `config` into tuples, in place.

    A string becomes a one-name tuple (not its characters), a `layer_rates`
    dict its sorted items, and nested lists tuples.
    """
    for name in _TUPLES:
        value = getattr(config, name)
        if isinstance(value, str):  # one name, not its characters
            value = (value,)
        if name == "layer_rates" and isinstance(value, dict):
            value = tuple(sorted(value.items(), key=lambda item: str(item[0])))
        if isinstance(value, (list, tuple)):  # anything else fails in `validate`
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        object.__setattr__(config, name, value)


def validate(config):
    """Checks every field of `config` and the rules between them.

    Raises:
        ValueError: For the first value of the wrong type, outside its
            allowed range or set.
    """
    _check_types(config)
    _check_choices(config)
    _check_numbers(config)
    _check_steps(config)
    _check_pruning(config)
    _check_training(config)
    _check_rounds(config)
    _check_early_bird(config)
    _check_pft(config)


def _number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _check_types(config):
    """Every field's type first, so the rules below compare numbers with numbers."""
    for name in _STR:
        if not isinstance(getattr(config, name), str):
            fail(name, getattr(config, name), "a string")
    for name in _FLOAT:
        value = getattr(config, name)
        if not (_number(value) and math.isfinite(value)):
            fail(name, value, "a finite number")
    if config.output_rate is not None and not _number(config.output_rate):
        fail("output_rate", config.output_rate, "a number or None")
    for name in _BOOL:
        if not isinstance(getattr(config, name), bool):
            fail(name, getattr(config, name), "True or False")
    for name in _TUPLES:
        if not isinstance(getattr(config, name), tuple):
            fail(name, getattr(config, name), "a list")
    pairs = config.layer_rates
    if not all(len(p) == 2 and isinstance(p[0], str) and _number(p[1]) for p in pairs):
        fail("layer_rates", pairs, "(layer name or type, rate) pairs")
    for name in ("exclude", "controls"):
        if not all(isinstance(v, str) for v in getattr(config, name)):
            fail(name, getattr(config, name), "a list of names")
    if not all(not isinstance(v, bool) and isinstance(v, int) for v in config.lr_boundaries):
        fail("lr_boundaries", config.lr_boundaries, "a list of steps (ints)")


def _check_choices(config):
    for name, choices in (
        ("model", MODELS),
        ("dataset", DATASETS),
        ("optimizer", OPTIMIZERS),
        ("reset", RESETS),
        ("scope", SCOPES),
    ):
        check_choice(getattr(config, name), name, choices)
    for control in config.controls:
        if control not in CONTROLS:
            fail("controls", config.controls, f"a subset of {list(CONTROLS)}")


def _check_numbers(config):
    for name, minimum in (
        ("rounds", 0),
        ("iterations", 1),
        ("eval_every", 1),
        ("batch_size", 1),
        ("rewind_iteration", 0),
        ("warmup_iterations", 0),
        ("validation_examples", 1),
        ("seed", 0),
        ("trials", 1),
    ):
        check_int(getattr(config, name), name, minimum)
    for name, maximum in (
        ("rounds", MAX_ROUNDS),
        ("iterations", MAX_ITERATIONS),
        ("seed", MAX_SEED),
        ("trials", MAX_TRIALS),
    ):
        if getattr(config, name) > maximum:
            fail(name, getattr(config, name), f"an int of at most {maximum}")
    if config.seed + config.trials - 1 > MAX_SEED:
        fail(
            "trials",
            config.trials,
            f"at most {MAX_SEED - config.seed + 1} with seed={config.seed} (trial t has seed "
            f"seed + t, at most {MAX_SEED})",
        )
    if not config.overlap_ps or not all(
        not isinstance(p, bool) and isinstance(p, (int, float)) and 0 < p <= 1
        for p in config.overlap_ps
    ):
        fail("overlap_ps", config.overlap_ps, "a non-empty list of floats in (0, 1]")
    if config.jit_compile not in (None, True, False):
        fail("jit_compile", config.jit_compile, "True, False or None (automatic)")
    for name in (
        "train_examples",
        "test_examples",
        "train_eval_examples",
        "steps_per_execution",
    ):
        check_int(getattr(config, name), name, 1, allow_none=True)


def _check_steps(config):
    if config.iterations % config.eval_every:
        fail("eval_every", config.eval_every, f"a divisor of iterations={config.iterations}")
    if config.iterations // config.eval_every > MAX_PERIODS:
        fail(
            "eval_every",
            config.eval_every,
            f"at least iterations / {MAX_PERIODS} (at most {MAX_PERIODS} evaluations a round)",
        )
    if config.rewind_iteration >= config.iterations:
        fail(
            "rewind_iteration",
            config.rewind_iteration,
            f"an int below iterations={config.iterations}",
        )
    for name, value in (
        ("eval_every", config.eval_every),
        ("steps_per_execution", config.execution_steps),
    ):
        if config.rewind_iteration % value:
            fail(
                "rewind_iteration",
                config.rewind_iteration,
                f"a multiple of {name}={value} (rounds restart there)",
            )


def _check_pruning(config):
    if not isinstance(config.structure, str):
        fail("structure", config.structure, "a structure name such as 'units' or '2:4'")
    get_structure(config.structure)
    reset = get_reset(config.reset)
    check_pruning_options(
        rate=config.rate,
        output_rate=config.output_rate,
        layer_rates=config.layer_rates,
        scope=config.scope,
        rewinds=reset.rewinds,
        reset_name=reset.name,
        rewind_iteration=config.rewind_iteration,
    )


def _check_training(config):
    if not config.width > 0:
        fail("width", config.width, "a float > 0")
    if not config.lr_factor > 0:
        fail("lr_factor", config.lr_factor, "a float > 0")
    if config.learning_rate <= 0 or not 0 <= config.momentum < 1 or config.weight_decay < 0:
        fail(
            "learning_rate/momentum/weight_decay",
            (config.learning_rate, config.momentum, config.weight_decay),
            "learning_rate > 0, momentum in [0, 1), weight_decay >= 0",
        )
    if list(config.lr_boundaries) != sorted(set(config.lr_boundaries)):
        fail("lr_boundaries", config.lr_boundaries, "strictly increasing steps")
    if config.augment and config.dataset != "cifar10":
        fail("augment", config.augment, "False unless dataset='cifar10' (crops and flips)")


def _check_rounds(config):
    for name, low in (("control_rounds", 1), ("eval_rounds", 0)):
        rounds = getattr(config, name)
        valid = all(
            not isinstance(r, bool) and isinstance(r, int) and low <= r <= config.rounds
            for r in rounds
        )
        if not valid or list(rounds) != sorted(set(rounds)):
            fail(
                name,
                rounds,
                f"strictly increasing rounds from {low} to rounds={config.rounds}",
            )


def _check_early_bird(config):
    periods = config.iterations // config.eval_every
    check_int(config.early_bird_window, "early_bird_window", 2)
    if config.early_bird and config.early_bird_window > periods:
        fail(
            "early_bird_window",
            config.early_bird_window,
            f"at most the {periods} evaluation periods of a round "
            f"(iterations={config.iterations} // eval_every={config.eval_every}); "
            "evaluate more often or shorten the window",
        )
    threshold = config.early_bird_threshold
    if not 0.0 <= threshold <= 1.0:
        fail("early_bird_threshold", threshold, "a float in [0, 1]")
    if config.eval_rounds and not config.early_bird:
        fail(
            "eval_rounds",
            config.eval_rounds,
            "() unless early_bird=True (without it every round trains in full)",
        )


def _check_pft(config):
    check_choice(config.pft_schedule, "pft_schedule", PFT_SCHEDULES)
    if not 0.0 < config.pft_prune_fraction <= 1.0:
        fail("pft_prune_fraction", config.pft_prune_fraction, "a float in (0, 1]")
    if config.pft_schedule == "oneshot":
        return
    if "pft" not in config.controls:
        fail(
            "pft_schedule",
            config.pft_schedule,
            f"'oneshot' unless 'pft' is among the controls (received controls={config.controls})",
        )
    if config.structure != "unstructured":
        fail(
            "pft_schedule",
            config.pft_schedule,
            f"'oneshot' with structure={config.structure!r} (gradual pruning & fine-tuning "
            "matches the ticket's counts of single weights: unstructured only)",
        )


def check_fit(config, splits, model, memory=None):
    """The checks that need the data and the model, made before a run writes anything.

    The batch must fit in the training split and, for its activations alone,
    in memory; every name of `layer_rates` and `exclude` must match a masked
    layer.

    Args:
        config: The `ExperimentConfig`.
        splits: Its data (`lth_keras.experiments.data.Splits`).
        model: Its prunable model, built.
        memory: Bytes of memory available. Defaults to `None`, meaning this
            machine's physical memory (not checked on an accelerator).

    Raises:
        ValueError: Naming the field, its value and what fits.

    Example:

    ```python
    check_fit(config, splits, model)
    ```
    """
    if config.batch_size > splits.train_size:
        fail(
            "batch_size",
            config.batch_size,
            f"at most the {splits.train_size} training images of {config.dataset} "
            f"(validation_examples={config.validation_examples} held out)",
        )
    needed = config.batch_size * _activation_bytes(model)
    memory = _physical_memory() if memory is None else memory
    if memory and needed > memory:
        fail(
            "batch_size",
            config.batch_size,
            f"a batch whose activations fit in memory: one batch of {config.batch_size} needs "
            f"at least {_size(needed)} for its activations, this machine has {_size(memory)}",
        )
    global_scope = config.scope == "global"
    Targets(
        config.rate,
        output_rate=None if global_scope else config.output_rate,
        layer_rates=None if global_scope else config.layer_rates,
        exclude=config.exclude,
        scope=config.scope,
    ).resolve(model)


def _activation_bytes(model):
    """Bytes of the outputs of the model's layers for one example: what a batch keeps."""
    total = 0
    for layer in model.layers:
        try:
            shape, dtype = layer.output.shape, layer.output.dtype
        except (AttributeError, ValueError):  # a layer with several outputs, or none
            continue
        count = math.prod(d or 1 for d in shape[1:])
        total += count * (2 if "16" in str(dtype) else 4)
    return total


def _size(count):
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def _physical_memory():
    """This machine's memory in bytes; `None` where an accelerator holds the activations."""
    import keras

    if any(not d.lower().startswith("cpu") for d in keras.distribution.list_devices()):
        return None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
