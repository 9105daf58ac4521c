"""absl flags shared by the example scripts, and the config they describe.

Every `ExperimentConfig` field has a flag of the same name whose default
(unset) keeps the preset's value, so `--model=conv4 --rounds=5` is the
Conv-4 preset with 5 rounds. List values are comma-separated
(`--controls=reinit,random`, `--layer_rates=Conv2D=0.1,fc1=0.2`). A script
defines the flags (`define_flags`), parses its command line with
`parse_flags` (grouped `--help`, one-line errors with exit status 2) and
hands the values to `run_from_flags`.
"""

import dataclasses
import os
import sys
import warnings

from absl import app, flags, logging

from lth_keras.experiments import config as config_lib
from lth_keras.experiments.arms import PFT_SCHEDULES
from lth_keras.experiments.checks import FUSE_CHOICES
from lth_keras.experiments.config import ExperimentConfig
from lth_keras.experiments.presets import preset
from lth_keras.options import SCOPES, STRATEGIES

__all__ = ["config_from_flags", "define_flags", "parse_flags", "run_from_flags"]

#: The models of the script that called `define_flags`, its default first.
_MODELS = []


def define_flags(models):
    """Defines the experiment flags; the first of `models` is the default model.

    Args:
        models: Preset names this script accepts, e.g. `["conv2", "conv4"]`.

    Example:

    ```python
    cli.define_flags(["lenet"])
    ```
    """
    flags.DEFINE_enum("model", models[0], models, "Network: a preset of the paper's Figure 2.")
    flags.DEFINE_float("width", None, "Multiplier of hidden units and filters (1: the paper's).")
    flags.DEFINE_enum("dataset", None, config_lib.DATASETS, "Data set.")
    flags.DEFINE_integer("rounds", None, "Pruning rounds after the dense round 0.")
    flags.DEFINE_float("rate", None, "Fraction of remaining weights pruned per round.")
    flags.DEFINE_float("output_rate", None, "Pruning rate of the output layer (layerwise).")
    flags.DEFINE_list("layer_rates", None, "Per-layer or per-type rates, as NAME=RATE pairs.")
    flags.DEFINE_list("exclude", None, "Layer names or types never pruned.")
    flags.DEFINE_enum("scope", None, SCOPES, "Layerwise or global pruning.")
    flags.DEFINE_string(
        "structure", None, "Sparsity structure: unstructured, units, block:1x4, block:1x16, N:M."
    )
    flags.DEFINE_enum(
        "reset",
        None,
        config_lib.RESETS,
        "What follows pruning: rewind weights, rewind the learning rate, or fine-tune.",
    )
    flags.DEFINE_integer(
        "rewind_iteration", None, "Late resetting: rewind to this step of round 0."
    )
    flags.DEFINE_list(
        "controls", None, f"Controls per round: {', '.join(config_lib.CONTROLS)} (or none)."
    )
    flags.DEFINE_list("control_rounds", None, "Rounds at which the controls train.")
    flags.DEFINE_enum(
        "pft_schedule",
        None,
        PFT_SCHEDULES,
        "How the pft control prunes: the ticket's mask at once, or gradually (tfmot's "
        "PolynomialDecay from the trained dense network).",
    )
    flags.DEFINE_float(
        "pft_prune_fraction",
        None,
        "With --pft_schedule=polynomial, the fraction of iterations over which sparsity rises.",
    )
    flags.DEFINE_bool(
        "early_bird",
        None,
        "Early-bird rounds: a round that only finds the next mask stops once the mask settles.",
    )
    flags.DEFINE_integer("early_bird_window", None, "Early-bird masks compared.")
    flags.DEFINE_float(
        "early_bird_threshold", None, "Largest early-bird mask distance still counted as settled."
    )
    flags.DEFINE_list(
        "eval_rounds", None, "With --early_bird, rounds also trained in full for evaluation."
    )
    flags.DEFINE_integer("iterations", None, "Training steps per round.")
    flags.DEFINE_integer("eval_every", None, "Steps between evaluations; divides iterations.")
    flags.DEFINE_integer("batch_size", None, "Minibatch size.")
    flags.DEFINE_enum("optimizer", None, config_lib.OPTIMIZERS, "Adam, or SGD with momentum.")
    flags.DEFINE_float("learning_rate", None, "Peak learning rate.")
    flags.DEFINE_float("momentum", None, "SGD momentum.")
    flags.DEFINE_float("weight_decay", None, "Optimizer weight decay.")
    flags.DEFINE_list("lr_boundaries", None, "Steps where the learning rate drops by lr_factor.")
    flags.DEFINE_float("lr_factor", None, "Learning-rate multiplier at each boundary.")
    flags.DEFINE_integer("warmup_iterations", None, "Linear learning-rate warm-up steps.")
    flags.DEFINE_integer("validation_examples", None, "Training images held out for validation.")
    flags.DEFINE_integer("train_examples", None, "Use only this many training images.")
    flags.DEFINE_integer("test_examples", None, "Use only this many test images.")
    flags.DEFINE_integer(
        "train_eval_examples", None, "Training images the train accuracy uses (0: all)."
    )
    flags.DEFINE_bool("augment", None, "Random crops and flips (CIFAR-10).")
    flags.DEFINE_integer("seed", None, "Seed for weights, data order and controls.")
    flags.DEFINE_integer("trials", None, "Independent trials; trial t has seed seed + t.")
    flags.DEFINE_list("overlap_ps", None, "Fractions p of the overlap ratio R_p, e.g. 0.1,0.2.")
    flags.DEFINE_bool("jit_compile", None, "Compile with XLA (--nojit_compile: TensorFlow graphs).")
    flags.DEFINE_integer("steps_per_execution", None, "Train steps per compiled call.")
    flags.DEFINE_enum(
        "strategy",
        "default",
        STRATEGIES,
        "tf.distribute strategy; multi_worker reads TF_CONFIG.",
    )
    flags.DEFINE_string("tpu", None, "TPU address or name for --strategy=tpu.")
    flags.DEFINE_string("output_dir", None, "Run directory; the same command resumes it.")
    flags.DEFINE_enum(
        "fuse",
        "auto",
        FUSE_CHOICES,
        "Train trials, and the controls of a round, together in one compiled step: auto "
        "(where measured faster), on, off.",
    )
    flags.DEFINE_integer("checkpoint_every", None, "Evaluation periods between checkpoints.")
    flags.DEFINE_integer(
        "verbose",
        1,
        "0 silent; 1 live progress, a line per job and the final table; 2 also a line per "
        "evaluation on a terminal and one per pruning round.",
        lower_bound=0,
        upper_bound=2,
    )
    flags.DEFINE_bool(
        "compile_cache", True, "Keep XLA-compiled steps on disk for later runs (TensorFlow)."
    )
    flags.DEFINE_bool("debug", False, "Show tracebacks of errors, not just their one-line message.")
    flags.DEFINE_bool(
        "tf_logs",
        False,
        "Show TensorFlow's C++ log lines and TFDS's INFO logs (hidden by default).",
    )
    _MODELS[:] = models


def parse_flags(argv):
    """Parses the command line of an example script: the `flags_parser` of `app.run`.

    `--help` (`--helpshort`, `-h`, `-?`) prints the script's docstring and
    its flags grouped by concern, with defaults
    (`lth_keras.experiments.flag_help`), and exits with status 0;
    `--helpfull` adds absl's and TensorFlow's flags. A flag that does not
    parse, or a value the config refuses, prints one line, `error: ...`,
    naming the flag, the value and what is allowed, and exits with status 2
    before anything is written.

    Args:
        argv: The command line, program name first.

    Returns:
        The arguments left after the flags, program name first.

    Example:

    ```python
    app.run(main, flags_parser=cli.parse_flags)
    ```
    """
    asked = _help_asked(argv)
    if asked == "full":
        app.usage(writeto_stdout=True, exitcode=0)
    if asked:
        from lth_keras.experiments.flag_help import help_text

        doc = sys.modules["__main__"].__doc__
        print(help_text(os.path.basename(argv[0]), doc, _MODELS), end="", flush=True)
        sys.exit(0)
    try:
        rest = flags.FLAGS(argv)
        config_from_flags(flags.FLAGS)
    except (flags.Error, ValueError) as error:
        _fail(" ".join(str(error).split()), 2)
    return rest


def _help_asked(argv):
    """`"short"`, `"full"` or `None`: which help the command line asks for."""
    for arg in argv[1:]:
        if arg == "--":
            break
        name, _, value = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or value.lower() in ("false", "0"):
            continue
        if name in ("help", "helpshort", "h", "?"):
            return "short"
        if name == "helpfull":
            return "full"
    return None


def _pairs(values):
    pairs = []
    for item in values:
        name, sep, rate = item.partition("=")
        if not sep:
            raise ValueError(
                "Received an invalid value in `layer_rates`, expected NAME=RATE. "
                f"Received: {item!r}"
            )
        try:
            pairs.append((name, float(rate)))
        except ValueError:
            raise ValueError(
                "Received an invalid value in `layer_rates`, expected NAME=RATE with a number "
                f"RATE. Received: {item!r}"
            ) from None
    return tuple(pairs)


def _numbers(name, cast, expected):
    """A parser of a list flag's values into a tuple of `cast` values."""

    def parse(values):
        try:
            return tuple(cast(v) for v in values)
        except ValueError:
            raise ValueError(
                f"Received an invalid value for `{name}`, expected {expected}. "
                f"Received: {name}={','.join(values)}"
            ) from None

    return parse


def config_from_flags(values):
    """The preset named by `--model`, changed by every flag that is set.

    Args:
        values: `absl.flags.FLAGS` (parsed), or a dict of flag values.

    Returns:
        An `ExperimentConfig`.

    Raises:
        ValueError: If a flag value is invalid for the config.

    Example:

    ```python
    config = cli.config_from_flags(flags.FLAGS)
    ```
    """
    values = values if isinstance(values, dict) else values.flag_values_dict()
    parsers = {
        "layer_rates": _pairs,
        "exclude": tuple,
        "controls": lambda names: tuple(c for c in names if c != "none"),
        "lr_boundaries": _numbers("lr_boundaries", int, "steps"),
        "control_rounds": _numbers("control_rounds", int, "round numbers"),
        "eval_rounds": _numbers("eval_rounds", int, "round numbers"),
        "overlap_ps": _numbers("overlap_ps", float, "numbers"),
        "train_eval_examples": lambda count: None if count == 0 else count,
    }
    overrides = {}
    for field in dataclasses.fields(ExperimentConfig):
        value = values.get(field.name)
        if field.name != "model" and value is not None:
            overrides[field.name] = parsers.get(field.name, lambda v: v)(value)
    return preset(values["model"], **overrides)


def run_from_flags(values):
    """Runs (or resumes) the experiment the flags describe; errors as one line.

    The flag values are saved as `flags.json` in the run directory. An
    error a user can act on (a full disk, a run directory in use, missing
    data, a damaged file, a value refused at run time) is printed as one
    line, `error: ...`, and the process exits with status 1 (130 when
    interrupted); `--debug` shows the traceback instead. Any other
    exception is printed as one line too, naming its type. Bad flag values
    are refused earlier, by `parse_flags` (status 2). Warnings (a run
    resumed on other versions, damaged files made again, a cache that
    cannot be written) are one line each, `warning: ...`.

    Args:
        values: `absl.flags.FLAGS` (parsed).

    Returns:
        The result rows (see `lth_keras.experiments.report`).

    Example:

    ```python
    def main(argv):
        cli.run_from_flags(flags.FLAGS)
    ```
    """
    flag_values = values.flag_values_dict()
    if not flag_values["tf_logs"]:
        # TFDS logs through absl at INFO and WARNING level ("Load dataset info
        # from ..."); TensorFlow and TFDS raise deprecation warnings.
        logging.set_verbosity(logging.ERROR)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.showwarning = _show_warning
    if flag_values["debug"]:
        return _run(values, flag_values)
    from lth_keras.experiments.rundir import CorruptRunError, RunDirInUseError

    try:
        return _run(values, flag_values)
    except KeyboardInterrupt:
        _fail("interrupted. Run the same command again to resume where it stopped.", 130)
    except (OSError, ValueError, CorruptRunError, RunDirInUseError) as error:
        message = str(error) or repr(error)
        if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
            message += (
                ". Fix this (free space, permissions) and run the same command again: "
                "the run resumes from its last complete checkpoint."
            )
        _fail(message, 1)
    except Exception as error:  # noqa: BLE001 - one line, not a traceback; --debug has it
        first = (str(error).strip().splitlines() or [""])[0]
        _fail(f"{type(error).__name__}: {first} (--debug shows the traceback)", 1)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line on stderr, like errors."""
    print(f"warning: {' '.join(str(message).split())}", file=file or sys.stderr, flush=True)


def _fail(message, status):
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def _enable_compile_cache():
    """The XLA compile cache, or a warning and none if its folder cannot be written."""
    from lth_keras.tensorflow.compile_cache import enable_compile_cache

    before = os.environ.get("TF_XLA_FLAGS")
    try:
        folder = enable_compile_cache()
        problem = None if os.access(folder, os.W_OK | os.X_OK) else "Permission denied"
    except OSError as error:
        folder, problem = error.filename or "the cache folder", error.strerror or str(error)
    if problem is None:
        return
    if before is None:
        os.environ.pop("TF_XLA_FLAGS", None)
    else:
        os.environ["TF_XLA_FLAGS"] = before
    warnings.warn(
        f"The compile cache {folder} cannot be written ({problem}); running without it "
        "(set LTH_KERAS_CACHE to a writable folder, or pass --nocompile_cache).",
        stacklevel=2,
    )


def _run(values, flag_values):
    import keras

    from lth_keras.experiments import runner

    strategy = None
    if keras.backend.backend() == "tensorflow":
        from lth_keras.tensorflow import distribute

        # A multi-worker strategy must exist before other TensorFlow work.
        strategy = distribute.get_strategy(flag_values["strategy"], flag_values["tpu"])
        if flag_values["compile_cache"]:
            _enable_compile_cache()  # before the first XLA compilation of this process
    elif flag_values["strategy"] != "default":
        raise ValueError(
            "--strategy picks a tf.distribute strategy and needs the TensorFlow backend. "
            f"Received: --strategy={flag_values['strategy']} with "
            f"KERAS_BACKEND={keras.backend.backend()}."
        )
    config = config_from_flags(values)
    run_dir = flag_values["output_dir"] or runner.default_run_dir(config)
    return runner.run(
        config,
        run_dir,
        strategy=strategy,
        verbose=flag_values["verbose"],
        checkpoint_every=flag_values["checkpoint_every"],
        flag_values=flag_values,
        fuse=flag_values["fuse"],
    )
