"""Find a winning ticket for LeNet-300-100 on MNIST with model.fit + LotteryPruner.

Iterative magnitude pruning as in Frankle & Carbin (2019): train, prune 20% of
each hidden layer's remaining weights (10% of the output layer's), rewind the
survivors to their initial values, repeat.

    python examples/lenet_mnist.py --rounds=5 --epochs=2

Set TFDS_DATA_DIR to a folder holding MNIST for TensorFlow Datasets.
"""

import json
import os

from absl import app, flags

flags.DEFINE_integer("rounds", 5, "Pruning rounds after the dense round 0.")
flags.DEFINE_integer("epochs", 2, "Training epochs per round.")
flags.DEFINE_float("rate", 0.2, "Fraction of remaining hidden-layer weights pruned per round.")
flags.DEFINE_float("learning_rate", 1.2e-3, "Adam learning rate (the paper's 1.2e-3).")
flags.DEFINE_integer("batch_size", 60, "Minibatch size (the paper's 60).")
flags.DEFINE_integer("train_examples", 60000, "Use only the first N training images.")
flags.DEFINE_integer("seed", 0, "Random seed for weights and data order.")
flags.DEFINE_string("output_dir", "runs/lenet_mnist", "Folder for flags.json and the ticket.")
FLAGS = flags.FLAGS


def load_mnist(split, limit=None):
    import tensorflow_datasets as tfds

    images, labels = tfds.as_numpy(
        tfds.load("mnist", split=split, batch_size=-1, as_supervised=True)
    )
    images = images.reshape(len(images), -1).astype("float32") / 255.0
    return images[:limit], labels[:limit]


def lenet_300_100():
    import keras

    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(300, activation="relu", name="fc1"),
            keras.layers.Dense(100, activation="relu", name="fc2"),
            keras.layers.Dense(10, name="output"),
        ]
    )


def main(argv):
    del argv
    import keras

    import lth_keras

    os.makedirs(FLAGS.output_dir, exist_ok=True)
    with open(os.path.join(FLAGS.output_dir, "flags.json"), "w") as f:
        json.dump(FLAGS.flag_values_dict(), f, indent=2, default=str)
    keras.utils.set_random_seed(FLAGS.seed)
    x_train, y_train = load_mnist("train", FLAGS.train_examples)
    x_test, y_test = load_mnist("test")

    model = lth_keras.prunable(lenet_300_100())
    model.compile(
        keras.optimizers.Adam(FLAGS.learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    pruner = lth_keras.LotteryPruner(rate=FLAGS.rate, verbose=1)
    print(f"{'round':>5} {'remaining':>10} {'test acc':>9}")
    for _ in range(FLAGS.rounds + 1):
        model.fit(
            x_train,
            y_train,
            batch_size=FLAGS.batch_size,
            epochs=FLAGS.epochs,
            callbacks=[pruner],
            verbose=0,
        )
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        entry = pruner.history[-1]
        print(f"{entry['round']:>5} {entry['weights_remaining']:>10.1%} {accuracy:>9.4f}")
    model.save(os.path.join(FLAGS.output_dir, "ticket.keras"))


if __name__ == "__main__":
    app.run(main)
