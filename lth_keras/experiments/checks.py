"""Validation of `ExperimentConfig`: the allowed values and the rules between fields.

`normalize(config)` turns the lists that JSON and flags give into tuples, so
configs stay hashable; `validate(config)` raises a `ValueError` in Keras'
wording for the first invalid value. `ExperimentConfig.__post_init__` calls
both, in that order.
"""

from lth_keras.callbacks import RESETS as _RESET_POLICIES
from lth_keras.callbacks import get_reset
from lth_keras.experiments.arms import CONTROLS
from lth_keras.experiments.models import MODELS
from lth_keras.options import SCOPES, check_choice, check_int, check_pruning_options
from lth_keras.pruning import get_structure

__all__ = ["DATASETS", "OPTIMIZERS", "RESETS", "fail", "normalize", "validate"]

#: Data sets with a TFDS pipeline in `lth_keras.experiments.data`.
DATASETS = ("mnist", "cifar10")
OPTIMIZERS = ("adam", "sgd")
#: Resets of the ticket arm: every `LotteryPruner` reset but `"reinit"`,
#: which is a control here (`controls=("reinit",)`), not a way to find tickets.
RESETS = tuple(name for name in _RESET_POLICIES.names() if name != "reinit")

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
            value = tuple(sorted(value.items()))
        value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        object.__setattr__(config, name, value)


def validate(config):
    """Checks every field of `config` and the rules between them.

    Raises:
        ValueError: For the first value outside its allowed range or set.
    """
    _check_choices(config)
    _check_numbers(config)
    _check_steps(config)
    _check_pruning(config)
    _check_training(config)
    _check_rounds(config)
    _check_early_bird(config)


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
    ):
        check_int(getattr(config, name), name, minimum)
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
    if isinstance(config.width, bool) or not isinstance(config.width, (int, float)):
        fail("width", config.width, "a float > 0")
    if not config.width > 0:
        fail("width", config.width, "a float > 0")
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
    if not isinstance(config.early_bird, bool):
        fail("early_bird", config.early_bird, "True or False")
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
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        fail("early_bird_threshold", threshold, "a float in [0, 1]")
    if not 0.0 <= threshold <= 1.0:
        fail("early_bird_threshold", threshold, "a float in [0, 1]")
    if config.eval_rounds and not config.early_bird:
        fail(
            "eval_rounds",
            config.eval_rounds,
            "() unless early_bird=True (without it every round trains in full)",
        )
