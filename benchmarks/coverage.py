"""Which Keras models lth_keras prunes: every keras.applications constructor and KerasHub backbones.

Each model is built with random weights at a small input (keras.applications:
32x32, or the smallest size its constructor states; KerasHub: small configs),
run forward, made `lth_keras.prunable` (timed), listed by `lth_keras.summary`,
run forward again (the output must not change while every mask is all ones:
`forward_max_diff` in the JSON), and trained two `fit` calls of one step
with `LotteryPruner(rate=0.5)`, after which every pruned weight must be
exactly zero. Then a plain copy is built and one compiled train step of
each (Adam, mean squared error against zeros) is timed in alternating
blocks, as `benchmarks/step_overhead.py` does: the ratio is of the medians
of CPU time per step. Each model runs in its own process (`--model_timeout`), so a crash
or a hang is a row like any failure. Rows are added to `--json_out` as they
finish and the Markdown table of every row there is printed at the end:
rerunning the same command resumes; naming models measures them again.

    python benchmarks/coverage.py --models=ResNet50,ViT
    KERAS_BACKEND=jax python benchmarks/coverage.py --models=hub
"""

import collections
import functools
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
import warnings

from absl import app, flags

flags.DEFINE_list("models", ["all"], "Models to measure: names, 'applications', 'hub' or 'all'.")
flags.DEFINE_string(
    "json_out", "", "Results file; defaults to /tmp/lth_keras_coverage_<backend>.json."
)
flags.DEFINE_integer("batch_size", 2, "Examples per train step.")
flags.DEFINE_integer("sequence_length", 16, "Tokens per example for the KerasHub text backbones.")
flags.DEFINE_integer("blocks", 10, "Timed blocks per model copy.")
flags.DEFINE_float("block_seconds", 1.0, "Approximate CPU seconds of one timed block.")
flags.DEFINE_bool(
    "jit_compile", True, "XLA for the fit calls and the timed steps (JAX always compiles)."
)
flags.DEFINE_float(
    "max_step_params", 1e8, "Larger models are not step-timed (two copies with Adam)."
)
flags.DEFINE_integer("model_timeout", 3600, "Seconds before a model's process is stopped.")
flags.DEFINE_string(
    "worker", "", "Internal: measure this one model and write its row to --worker_out."
)
flags.DEFINE_string("worker_out", "", "Internal: where the worker writes its row.")
FLAGS = flags.FLAGS
# The flags a model's process gets from the main one.
_FORWARDED = ("batch_size", "sequence_length", "blocks", "block_seconds", "jit_compile")
_FORWARDED += ("max_step_params",)

_TEXT = {"vocabulary_size": 512, "num_layers": 2, "hidden_dim": 64, "intermediate_dim": 128}
_MHA = {**_TEXT, "num_heads": 2}
_GQA = {**_TEXT, "num_query_heads": 2, "num_key_value_heads": 1}
_VIT = {"image_shape": (32, 32, 3), "patch_size": 8, "num_layers": 2, "num_heads": 2}
_IMAGE = {"image_shape": (32, 32, 3)}
_SEQ = {"max_sequence_length": 32}


class Part(collections.namedtuple("Part", "cls kwargs")):
    """A KerasHub model passed to a backbone's constructor (CLIP's encoders), built first."""


# KerasHub backbones: class name -> small config (random init; never from_preset).
HUB = {
    "BertBackbone": {**_MHA, **_SEQ},
    "DistilBertBackbone": {**_MHA, **_SEQ},
    "RobertaBackbone": {**_MHA, **_SEQ},
    "AlbertBackbone": {**_MHA, **_SEQ, "embedding_dim": 32},
    "ElectraBackbone": {
        **{k: v for k, v in _MHA.items() if k != "vocabulary_size"},
        **_SEQ,
        "vocab_size": 512,
        "embedding_dim": 32,
    },
    "GPT2Backbone": {**_MHA, **_SEQ},
    "OPTBackbone": {**_MHA, **_SEQ},
    "BloomBackbone": _MHA,
    "GPTNeoXBackbone": {**_MHA, **_SEQ},
    "FalconBackbone": {**_TEXT, "num_attention_heads": 2},
    "GemmaBackbone": {**_GQA, "head_dim": 32},
    "Gemma3Backbone": {**_GQA, "head_dim": 32, "image_size": 32},
    "LlamaBackbone": _GQA,
    "Llama3Backbone": _GQA,
    "MistralBackbone": _GQA,
    "MixtralBackbone": {**_GQA, "num_experts": 2, "top_k": 1},
    "Phi3Backbone": {**_GQA, **_SEQ, "pretraining_sequence_length": 32},
    "Qwen2Backbone": _GQA,
    "T5Backbone": _MHA,
    "WhisperBackbone": {
        **_MHA,
        "num_mels": 16,
        "max_encoder_sequence_length": 32,
        "max_decoder_sequence_length": 32,
    },
    "ViTBackbone": {**_VIT, "hidden_dim": 64, "mlp_dim": 128},
    "DeiTBackbone": {**_VIT, "hidden_dim": 64, "intermediate_dim": 128},
    "DINOV2Backbone": {
        **_VIT,
        "hidden_dim": 64,
        "intermediate_dim": 128,
        "position_embedding_shape": (32, 32, 3),
    },
    "CLIPBackbone": {
        "vision_encoder": Part(
            "CLIPVisionEncoder", {**_VIT, "hidden_dim": 64, "intermediate_dim": 128}
        ),
        "text_encoder": Part(
            "CLIPTextEncoder", {**_MHA, "embedding_dim": 64, "max_sequence_length": 16}
        ),
        "projection_dim": 32,
    },
    "SwinTransformerBackbone": {
        **_IMAGE,
        "embed_dim": 32,
        "depths": [2, 2],
        "num_heads": [2, 2],
        "window_size": 4,
    },
    "ResNetBackbone": {
        **_IMAGE,
        "input_conv_filters": [64],
        "input_conv_kernel_sizes": [7],
        "stackwise_num_filters": [64, 128],
        "stackwise_num_blocks": [2, 2],
        "stackwise_num_strides": [1, 2],
        "block_type": "basic_block",
    },
    "EfficientNetBackbone": {
        "input_shape": (32, 32, 3),
        "stackwise_kernel_sizes": [3, 3, 3],
        "stackwise_num_repeats": [1, 2, 2],
        "stackwise_input_filters": [16, 16, 32],
        "stackwise_output_filters": [16, 32, 64],
        "stackwise_expansion_ratios": [1, 4, 4],
        "stackwise_squeeze_and_excite_ratios": [0.0, 0.0, 0.25],
        "stackwise_strides": [1, 2, 2],
        "stackwise_block_types": ["fused", "fused", "unfused"],
        "stackwise_width_coefficients": [1.0] * 3,
        "stackwise_depth_coefficients": [1.0] * 3,
        "num_features": 256,
    },
    "DenseNetBackbone": {**_IMAGE, "stackwise_num_repeats": [2, 2, 2], "growth_rate": 16},
    "VGGBackbone": {
        **_IMAGE,
        "stackwise_num_repeats": [2, 2, 2],
        "stackwise_num_filters": [32, 64, 128],
    },
    "XceptionBackbone": {
        **_IMAGE,
        "stackwise_conv_filters": [[32, 64], [64, 128], [128, 128]],
        "stackwise_pooling": [True, True, False],
    },
}


def applications():
    """`{name: constructor}` for every model constructor exported under keras.applications."""
    import keras

    found = {}
    modules = [keras.applications] + [
        getattr(keras.applications, n)
        for n in sorted(dir(keras.applications))
        if inspect.ismodule(getattr(keras.applications, n))
    ]
    for module in modules:
        for name in sorted(dir(module)):
            item = getattr(module, name)
            if not (callable(item) and name[:1].isupper()):
                continue
            parameters = inspect.signature(item).parameters
            if {"weights", "input_shape"} <= set(parameters) and item not in found.values():
                found[name] = item
    return found


def catalogue():
    """`{row name: source}` of every model this script knows, applications first."""
    rows = {name: "keras.applications" for name in applications()}
    import keras_hub

    rows.update({name: "keras_hub" for name in HUB if hasattr(keras_hub.models, name)})
    return rows


def build_application(name, batch_size):
    """The application built with random weights at its smallest input; and a batch."""
    import keras
    import numpy as np

    size = 32
    while True:
        keras.utils.set_random_seed(0)
        try:
            model = applications()[name](weights=None, input_shape=(size, size, 3))
            break
        except ValueError as error:  # "Input size must be at least 75x75; ..."
            words = str(error).split("at least ")
            if len(words) < 2 or size != 32:
                raise
            size = int(words[1].split("x")[0])
    x = np.random.default_rng(0).random((batch_size, size, size, 3), dtype=np.float32)
    return model, x, f"{size}x{size}x3"


def build_hub(name, batch_size, sequence_length):
    """The KerasHub backbone built from its small config; and a batch for its inputs."""
    import keras
    import keras_hub
    import numpy as np

    keras.utils.set_random_seed(0)
    kwargs = {
        k: getattr(keras_hub.models, v.cls)(**v.kwargs) if isinstance(v, Part) else v
        for k, v in HUB[name].items()
    }
    model = getattr(keras_hub.models, name)(**kwargs)
    rng = np.random.default_rng(0)

    def batch(tensor, key):
        shape = [batch_size] + [
            d if d is not None else (sequence_length if "int" in tensor.dtype else 32)
            for d in tensor.shape[1:]
        ]
        if "int" not in tensor.dtype and "bool" not in tensor.dtype:
            return rng.random(shape, dtype=np.float32)
        if "mask" in key:
            return np.ones(shape, tensor.dtype)
        if "segment" in key:
            return np.zeros(shape, tensor.dtype)
        return rng.integers(0, 50, shape).astype(tensor.dtype)

    inputs = model.input
    if isinstance(inputs, dict):
        x = {key: batch(tensor, key) for key, tensor in inputs.items()}
        described = ", ".join(f"{k} {tuple(v.shape[1:])}" for k, v in x.items())
    else:
        x = batch(inputs, "images")
        described = "x".join(str(d) for d in x.shape[1:])
    return model, x, described


def _share_phrase(rows, trainable):
    """What is left unmasked, grouped by why, with its share of the trainable entries."""
    groups, names = {}, {}
    for row in rows:
        if row["masked"]:
            continue
        reason = row["reason"]
        if reason.startswith(("bias", "not trainable")):
            group = "biases/norms"
        elif reason.startswith("positional"):
            group = "positional tables"
        elif reason.startswith("unknown layer type"):
            group = f"unknown layer {reason.split()[3]}"
            names.setdefault(group, []).append(row["key"].rsplit("/", 1)[-1])
        else:
            group = reason
        groups[group] = groups.get(group, 0) + row["size"]
    return "; ".join(
        f"{g} {size / max(trainable, 1):.1%}"
        + (f" ({', '.join(dict.fromkeys(names[g]))})" if g in names else "")
        for g, size in groups.items()
    )


class Timer:
    """One compiled train step of a compiled, built model, run `steps` times per call."""

    def __init__(self, model, x, y):
        import keras

        self.backend = keras.backend.backend()
        if self.backend == "jax":
            import jax

            self.state = tuple(
                [v.value for v in variables]
                for variables in (
                    model.trainable_variables,
                    model.non_trainable_variables,
                    model.optimizer.variables,
                    model.metrics_variables,
                )
            )
            self.step = jax.jit(model.train_step, donate_argnums=0)
            self.batch = keras.tree.map_structure(jax.numpy.asarray, (x, y))
            self.block_until_ready = jax.block_until_ready
        else:
            import tensorflow as tf

            self.batch = keras.tree.map_structure(tf.constant, (x, y))
            self.step = tf.function(
                lambda x, y: model.train_step((x, y, None)), jit_compile=FLAGS.jit_compile
            )
        self.run(1)  # compiles

    def run(self, steps):
        if self.backend == "jax":
            state = self.state
            for _ in range(steps):
                _, state = self.step(state, self.batch)
            self.block_until_ready(state)
            self.state = state
        else:
            for _ in range(steps):
                self.step(*self.batch)


def step_ratio(plain, masked, x, y):
    """Medians of CPU time per step (plain, masked), in alternating blocks."""
    timers = [Timer(plain, x, y), Timer(masked, x, y)]
    start = time.process_time()
    timers[0].run(1)
    steps = max(1, round(FLAGS.block_seconds / max(time.process_time() - start, 1e-6)))
    times = [[], []]
    for block in range(FLAGS.blocks):
        for i in (0, 1) if block % 2 == 0 else (1, 0):
            start = time.process_time()
            timers[i].run(steps)
            times[i].append((time.process_time() - start) / steps)
    return statistics.median(times[0]), statistics.median(times[1]), steps


def _compile(model, run_eagerly=False):
    import keras

    model.compile(
        keras.optimizers.Adam(1e-3),
        "mean_squared_error",
        jit_compile=FLAGS.jit_compile and not run_eagerly,
        run_eagerly=run_eagerly,
    )


def _attach(model, row):
    """Makes `model` prunable (timed) and records what its summary says is masked."""
    import numpy as np

    import lth_keras

    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lth_keras.prunable(model)
    row["prunable_s"] = time.perf_counter() - wall
    row["prunable_cpu_s"] = time.process_time() - cpu
    row["warnings"] = [str(w.message)[:300] for w in caught if "prunable" in str(w.message)]
    row["stage"] = "summary"
    rows = lth_keras.summary(model, print_fn=lambda line: None)
    masked = sum(r["size"] for r in rows if r["masked"])
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    trainable -= sum(int(np.prod(v.shape)) for v in _lth_variables(model) if v.trainable)
    row["masked_share"] = masked / row["params"]
    row["masked_share_trainable"] = masked / trainable
    row["unmasked"] = _share_phrase(rows, trainable)


def _lth_variables(model):
    """The masks and initial copies lth_keras added (not the model's own weights)."""
    from lth_keras.layers import rules
    from lth_keras.masks import model_layers

    ids = set()
    for _, layer in model_layers(model):
        ids |= rules.lth_variable_ids(layer)
    return [v for v in model.weights if id(v) in ids]


def _prune_twice(model, x, y, row):
    """Two `fit` calls of one step with `LotteryPruner(rate=0.5)`; pruned weights must be 0."""
    import keras
    import numpy as np

    import lth_keras

    _compile(model)
    pruner = lth_keras.LotteryPruner(rate=0.5)
    for _ in range(2):
        model.fit(x, y, batch_size=FLAGS.batch_size, epochs=1, callbacks=[pruner], verbose=0)
    row["stage"] = "pruned weights zero"
    sizes = pruned = 0
    for key, _, weight in lth_keras.masks.prunable_entries(model):
        mask = keras.ops.convert_to_numpy(weight.mask)
        values = keras.ops.convert_to_numpy(weight.variable)
        sizes, pruned = sizes + mask.size, pruned + int((~mask).sum())
        if np.any(values[~mask] != 0):
            count = int(np.sum(values[~mask] != 0))
            raise AssertionError(f"{key}: {count} pruned weights not zero")
    row["pruned_share"] = pruned / max(sizes, 1)
    if not pruned:
        raise AssertionError("LotteryPruner pruned nothing")


def _max_difference(a, b):
    import keras
    import numpy as np

    pairs = zip(keras.tree.flatten(a), keras.tree.flatten(b), strict=True)
    numpy = keras.ops.convert_to_numpy
    return max(float(np.max(np.abs(numpy(u) - numpy(v)))) for u, v in pairs)


def measure(name, source, row):
    """Fills `row` for one model, stage by stage; an exception names the stage it came from."""
    import keras
    import numpy as np

    row["stage"] = "build (Keras)"
    if source == "keras.applications":
        build = functools.partial(build_application, name, FLAGS.batch_size)
    else:
        build = functools.partial(build_hub, name, FLAGS.batch_size, FLAGS.sequence_length)
    model, x, row["input"] = build()
    row["params"] = sum(int(np.prod(v.shape)) for v in model.weights)
    row["stage"] = "forward (Keras)"
    expected = model(x, training=False)
    y = keras.tree.map_structure(lambda t: np.zeros(t.shape, "float32"), expected)
    row["stage"] = "prunable"
    _attach(model, row)
    row["stage"] = "forward (masked)"
    row["forward_max_diff"] = _max_difference(expected, model(x, training=False))
    row["stage"] = "fit with LotteryPruner"
    _prune_twice(model, x, y, row)
    row["works"] = True
    if row["params"] > FLAGS.max_step_params:
        row["error"] = f"not timed: over --max_step_params={FLAGS.max_step_params:.0f}"
        del row["stage"]
        return
    row["stage"] = "step timing (plain copy: Keras)"
    plain = build()[0]
    _compile(plain, run_eagerly=True)
    plain.fit(x, y, batch_size=FLAGS.batch_size, epochs=1, verbose=0)  # builds the optimizer
    row["stage"] = "step timing"
    row["plain_step_s"], row["masked_step_s"], row["steps_per_block"] = step_ratio(
        plain, model, x, y
    )
    row["step_ratio"] = row["masked_step_s"] / row["plain_step_s"]
    del row["stage"]


def worker(name, source):
    """Measures one model; writes its row (with the exception, if one) to --worker_out."""
    row = {"model": name, "source": source, "works": False}
    start = time.perf_counter()
    try:
        measure(name, source, row)
    except Exception as error:  # every failure is a row
        frames = traceback.extract_tb(error.__traceback__)
        message = str(error).strip().splitlines()
        row["error"] = f"{type(error).__name__}: {message[0][:300] if message else ''}"
        row["in_lth_keras"] = any("/lth_keras/" in f.filename for f in frames)
        row["traceback_tail"] = traceback.format_exception(error)[-6:]
    row["seconds"] = time.perf_counter() - start
    with open(FLAGS.worker_out, "w") as file:
        json.dump(row, file, indent=1)


def run_in_process(name, source, out):
    """Runs `worker` for one model in a new process; a row even if it crashes or hangs."""
    args = [sys.executable, os.path.abspath(__file__), f"--worker={name}", f"--worker_out={out}"]
    args += [f"--{k}={FLAGS[k].value}" for k in _FORWARDED]
    if os.path.exists(out):
        os.remove(out)
    start = time.perf_counter()
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=FLAGS.model_timeout)
        if os.path.exists(out):
            with open(out) as file:
                return json.load(file)
        lines = (done.stderr or "").strip().splitlines()
        error = f"process exited with status {done.returncode}: {lines[-1][:300] if lines else ''}"
    except subprocess.TimeoutExpired:
        error = f"stopped after --model_timeout={FLAGS.model_timeout} s"
    return {
        "model": name,
        "source": source,
        "works": False,
        "error": error,
        "seconds": time.perf_counter() - start,
    }


def versions():
    import keras

    found = {"keras": keras.__version__, "backend": keras.backend.backend()}
    for package in ("tensorflow", "jax", "keras_hub"):
        try:
            found[package] = __import__(package).__version__
        except ImportError:
            pass
    return found


def _count(n):
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def _works(row):
    """The works cell: yes, or where and why not (one line, shortened)."""
    error = row.get("error", "")
    error = error if len(error) <= 160 else error[:157] + "..."
    if row["works"]:
        if error.startswith("not timed"):
            return f"yes ({error})"
        return f"yes; step timing failed: {error}" if error else "yes"
    where = "lth_keras" if row.get("in_lth_keras") else "Keras"
    return f"**no** ({row.get('stage', 'process')}, in {where}): {error}"


def table(rows):
    """The Markdown table of the rows."""
    lines = [
        "| model | input | weights | works | masked: all / trainable | left unmasked "
        "(share of trainable) | `prunable()` s | step ratio | plain step ms |",
        "|---|---|---:|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        share = r.get("masked_share"), r.get("masked_share_trainable")
        name = r["model"] if r["source"] == "keras.applications" else f"keras_hub {r['model']}"
        cells = [
            name,
            r.get("input", ""),
            _count(r["params"]) if "params" in r else "",
            _works(r).replace("|", "/"),
            f"{share[0]:.1%} / {share[1]:.1%}" if share[0] is not None else "",
            r.get("unmasked", "").replace("|", "/") or ("-" if "unmasked" in r else ""),
            f"{r['prunable_s']:.2f}" if "prunable_s" in r else "",
            f"{r['step_ratio']:.3f}" if "step_ratio" in r else "",
            f"{r['plain_step_s'] * 1e3:.1f}" if "plain_step_s" in r else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selected(known):
    chosen = []
    for item in FLAGS.models:
        if item in ("all", "applications", "hub"):
            chosen += [
                n
                for n, s in known.items()
                if item == "all" or (item == "hub") == (s == "keras_hub")
            ]
            continue
        matches = [
            n for n in known if item.lower() in (n.lower(), n.lower().removesuffix("backbone"))
        ]
        if not matches:
            raise app.UsageError(f"--models: unknown model {item!r}. Known: {', '.join(known)}")
        chosen += matches
    return list(dict.fromkeys(chosen))


def main(argv):
    del argv
    import keras

    known = catalogue()
    if FLAGS.worker:
        return worker(FLAGS.worker, known[FLAGS.worker])
    path = FLAGS.json_out or f"/tmp/lth_keras_coverage_{keras.backend.backend()}.json"
    chosen = selected(known)
    named = [m for m in FLAGS.models if m not in ("all", "applications", "hub")]
    results = {"rows": {}}
    if os.path.exists(path):
        with open(path) as file:
            results = json.load(file)
    results["versions"] = versions()
    results["flags"] = {k: FLAGS[k].value for k in _FORWARDED}
    for i, name in enumerate(chosen):
        if name in results["rows"] and not named:
            continue
        print(f"[{i + 1}/{len(chosen)}] {name} ...", file=sys.stderr, flush=True)
        row = run_in_process(name, known[name], path + ".worker.json")
        row["date"] = time.strftime("%Y-%m-%d")
        results["rows"][name] = row
        print(
            f"    {'works' if row['works'] else row.get('error')} ({row['seconds']:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        with open(path + ".tmp", "w") as file:
            json.dump(results, file, indent=1)
        os.replace(path + ".tmp", path)
    order = list(known)
    rows = sorted(
        results["rows"].values(),
        key=lambda r: order.index(r["model"]) if r["model"] in order else len(order),
    )
    print(table(rows))
    print(f"\n{versions()}; results in {path}")


if __name__ == "__main__":
    app.run(main)
