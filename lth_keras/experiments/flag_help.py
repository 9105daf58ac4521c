"""The `--help` of the example scripts: their own flags, grouped by concern, with defaults.

absl's `--help` lists only the flags the script's own module defines (none:
they live in `lth_keras.experiments.cli`), and `--helpfull` mixes them with
absl's and TensorFlow's. `help_text` lists exactly the experiment flags, in
the groups of `GROUPS`, each with what it accepts and its default: the value
of the script's preset (per model when the script has several).
"""

import dataclasses
import textwrap

from absl import flags

from lth_keras.experiments.config import ExperimentConfig
from lth_keras.experiments.presets import preset

__all__ = ["GROUPS", "help_text"]

#: The flags of each concern, in the order `--help` shows them.
GROUPS = (
    ("model", ("model", "width", "seed", "trials")),
    (
        "data",
        (
            "dataset",
            "validation_examples",
            "train_examples",
            "test_examples",
            "train_eval_examples",
            "augment",
        ),
    ),
    (
        "pruning",
        (
            "rounds",
            "rate",
            "output_rate",
            "layer_rates",
            "exclude",
            "scope",
            "structure",
            "reset",
            "rewind_iteration",
            "controls",
            "control_rounds",
            "pft_schedule",
            "pft_prune_fraction",
            "early_bird",
            "early_bird_window",
            "early_bird_threshold",
            "eval_rounds",
        ),
    ),
    (
        "training",
        (
            "iterations",
            "eval_every",
            "batch_size",
            "optimizer",
            "learning_rate",
            "momentum",
            "weight_decay",
            "lr_boundaries",
            "lr_factor",
            "warmup_iterations",
            "overlap_ps",
            "jit_compile",
            "steps_per_execution",
        ),
    ),
    (
        "run",
        (
            "output_dir",
            "fuse",
            "strategy",
            "tpu",
            "checkpoint_every",
            "verbose",
            "compile_cache",
            "debug",
            "tf_logs",
        ),
    ),
)

#: What an unset (`None`) or empty value of a field means, where "none" would mislead.
_UNSET = {
    "output_rate": "rate / 2",
    "control_rounds": "every pruned round",
    "train_examples": "all",
    "test_examples": "all",
    "train_eval_examples": "0 (all)",
    "jit_compile": "true (XLA), false under multi_worker",
    "output_dir": "runs/<model>-<config hash>",
    "checkpoint_every": "after each minute of training",
}
_WIDTH = 100
_FIELDS = {field.name for field in dataclasses.fields(ExperimentConfig)}


def _shown(name, value, config=None):
    if name == "steps_per_execution" and value is None and config is not None:
        return f"{config.execution_steps} (the largest divisor of eval_every up to 100)"
    if value is None or value == ():
        return _UNSET.get(name, "none")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(f"{v[0]}={v[1]!r}" if isinstance(v, tuple) else repr(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def _default(name, flag, configs):
    if name == "model" or name not in _FIELDS:
        return _shown(name, flag.default)
    shown = {model: _shown(name, getattr(c, name), c) for model, c in configs.items()}
    if len(set(shown.values())) == 1:
        return next(iter(shown.values()))
    return ", ".join(f"{value} ({model})" for model, value in shown.items())


def _accepts(flag):
    """What a flag accepts: `""` (a switch), its choices, or its type and range."""
    if isinstance(flag, flags.BooleanFlag):
        return ""
    if isinstance(flag, flags.EnumFlag):
        return "|".join(flag.parser.enum_values)
    if isinstance(flag.parser, flags.ListParser):
        return "list"
    low = getattr(flag.parser, "lower_bound", None)
    high = getattr(flag.parser, "upper_bound", None)
    if low is not None and high is not None:
        return f"{flag.flag_type()} in [{low}, {high}]"
    return flag.flag_type()


def _description(flag):
    """The flag's own help string (absl prefixes an enum's with `<a|b>: `)."""
    if isinstance(flag, flags.EnumFlag):
        return flag.help.removeprefix(f"<{'|'.join(flag.parser.enum_values)}>: ")
    return flag.help


def help_text(program, doc, models, values=None):
    """The help of an example script: its docstring, then its flags by concern.

    Args:
        program: The script's name, e.g. `"lenet_mnist.py"`.
        doc: The script's docstring (or `None`).
        models: The models the script accepts (`define_flags(models)`).
        values: The `FlagValues` holding the flags. Defaults to `None`,
            meaning `absl.flags.FLAGS`.

    Returns:
        The text, ending in a newline.

    Example:

    ```python
    print(help_text("lenet_mnist.py", __doc__, ["lenet"]))
    ```
    """
    values = values or flags.FLAGS
    configs = {model: preset(model) for model in models}
    lines = [doc.strip(), ""] if doc else []
    lines += textwrap.wrap(
        f"usage: python {program} [--flag=value ...]. A flag left out keeps the value of the "
        "preset of --model, shown as its default; lists are comma-separated.",
        width=_WIDTH,
    )
    for group, names in GROUPS:
        lines += ["", f"{group}:"]
        for name in names:
            flag = values[name]
            switch = f"--[no]{name}" if isinstance(flag, flags.BooleanFlag) else f"--{name}"
            accepts = _accepts(flag)
            head = f"  {switch}" + (f" ({accepts})" if accepts else "")
            lines.append(f"{head}  default: {_default(name, flag, configs)}")
            lines += textwrap.wrap(
                _description(flag), width=_WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6
            )
    lines += ["", "--helpfull also lists absl's and TensorFlow's flags."]
    return "\n".join(lines) + "\n"
