"""Find winning tickets for Conv-2, Conv-4 or Conv-6 on CIFAR-10.

The paper's settings (Figure 2 of arXiv 1803.03635): Adam 2e-4 (Conv-2) or
3e-4, batch 60, 20K/25K/30K iterations per round, conv layers pruned 10%
(Conv-6: 15%) per round, fully connected layers 20%, the output layer 10%.
Every flag overrides the preset (--help lists them).

    python examples/conv_cifar10.py --model=conv4 --rounds=10 --controls=reinit,random

CIFAR-10 is read with TensorFlow Datasets (TFDS_DATA_DIR is honoured).
"""

import _quiet  # noqa: F401  (first: hides TensorFlow's C++ start-up lines)
from absl import app, flags

from lth_keras.experiments import cli

cli.define_flags(["conv2", "conv4", "conv6"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    cli.run_from_flags(FLAGS)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
