"""Find winning tickets for VGG-19 or ResNet-20 on CIFAR-10, with global pruning.

The paper's settings for the deep networks: SGD with momentum 0.9, learning
rate warm-up, 20% of all convolution weights pruned globally per round (the
output layer is excluded), data augmentation. VGG-19: batch 64, 160 epochs
(112,480 iterations), learning rate 0.1 divided by 10 at epochs 80 and 120.
ResNet-20: batch 128, 30K iterations, learning rate 0.03 divided by 10 at 20K
and 25K. Every flag overrides the preset (--help lists them).

    python examples/vgg_resnet_cifar10.py --model=resnet20 --rounds=10 --controls=reinit

CIFAR-10 is read with TensorFlow Datasets (TFDS_DATA_DIR is honoured).
"""

import _quiet  # noqa: F401  (first: hides TensorFlow's C++ start-up lines)
from absl import app, flags

from lth_keras.experiments import cli

cli.define_flags(["vgg19", "resnet20"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    cli.run_from_flags(FLAGS)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
