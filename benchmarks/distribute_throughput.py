"""Training throughput under tf.distribute, masked vs plain Keras layers.

LeNet-300-100 on MNIST, Adam 1.2e-3, global batch 120 (60 per replica on two
replicas). For each setting, in its own processes, epochs of plain Keras
layers and of lth_keras masked layers with a LotteryPruner attached are
interleaved and timed; reported are images per second (median epoch) and
the masked/plain ratio of epoch times under the same strategy:

- default: one device;
- mirrored: MirroredStrategy over two logical CPU devices of one process;
- multi_worker: MultiWorkerMirroredStrategy, two worker processes on loopback
  (times from worker 0).

On a 2-core machine the devices and workers share the same two cores, so more
replicas do not mean more throughput here; the ratios show the cost of the
masks under each strategy.

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python benchmarks/distribute_throughput.py
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

flags.DEFINE_integer("repeats", 5, "Timed epochs per model (after one warm-up epoch).")
flags.DEFINE_integer("train_examples", 30000, "Training images per epoch.")
flags.DEFINE_string("setting", "", "Internal: run one setting and print its times as JSON.")
FLAGS = flags.FLAGS

GLOBAL_BATCH = 120
SETTINGS = ("default", "mirrored", "multi_worker")


def measure(setting):
    """Runs in a child process: times plain and masked epochs under `setting`."""
    import tensorflow as tf

    if setting == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
    from lth_keras.tensorflow import distribute

    strategy = distribute.get_strategy(setting)
    import keras
    import tensorflow_datasets as tfds

    import lth_keras
    from lth_keras.experiments.models import build_model

    images, labels = tfds.as_numpy(
        tfds.load(
            "mnist", split=f"train[:{FLAGS.train_examples}]", batch_size=-1, as_supervised=True
        )
    )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = (
        tf.data.Dataset.from_tensor_slices((images.astype("float32") / 255.0, labels))
        .batch(GLOBAL_BATCH, drop_remainder=True)
        .cache()
        .with_options(options)
    )

    def build(masked):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = build_model("lenet", (28, 28, 1))
            model = lth_keras.prunable(model) if masked else model
            model.compile(
                keras.optimizers.Adam(1.2e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        return model

    runs = {
        "keras": (build(False), []),
        "lth_keras": (build(True), [lth_keras.LotteryPruner(epochs_per_round=10**6)]),
    }
    times = {name: [] for name in runs}
    for rep in range(FLAGS.repeats + 1):
        for name in list(runs) if rep % 2 == 0 else list(runs)[::-1]:
            model, callbacks = runs[name]
            start = time.perf_counter()
            with distribute.fit_scope(model, strategy):
                model.fit(data, epochs=1, verbose=0, callbacks=callbacks)
            if rep:  # the first epoch traces and compiles
                times[name].append(time.perf_counter() - start)
    return {"replicas": strategy.num_replicas_in_sync, "images": len(images), "times": times}


def run_setting(setting):
    command = [
        sys.executable,
        __file__,
        f"--setting={setting}",
        f"--repeats={FLAGS.repeats}",
        f"--train_examples={FLAGS.train_examples}",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if setting != "multi_worker":
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    from lth_keras.tensorflow import distribute

    procs = [
        subprocess.Popen(
            command,
            env=dict(env, TF_CONFIG=tf_config),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tf_config in distribute.local_cluster(2)
    ]
    outputs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        if p.returncode:
            raise RuntimeError(err[-2000:])
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def main(argv):
    del argv
    if FLAGS.setting:
        print(json.dumps(measure(FLAGS.setting)))
        return
    results = {setting: run_setting(setting) for setting in SETTINGS}
    print(
        f"\nLeNet-300-100, MNIST, global batch {GLOBAL_BATCH}, {FLAGS.train_examples} images per "
        f"epoch; medians of {FLAGS.repeats} epochs"
    )
    print(f"{'setting':<14}{'replicas':>9}{'keras img/s':>13}{'lth img/s':>11}{'time ratio':>12}")
    for setting, result in results.items():
        plain = statistics.median(result["times"]["keras"])
        masked = statistics.median(result["times"]["lth_keras"])
        print(
            f"{setting:<14}{result['replicas']:>9}{result['images'] / plain:>13.0f}"
            f"{result['images'] / masked:>11.0f}{masked / plain:>12.3f}"
        )


if __name__ == "__main__":
    app.run(main)
