"""Find a winning ticket for LeNet-300-100 on MNIST, as in Frankle & Carbin (2019).

Iterative magnitude pruning with the paper's settings (Adam 1.2e-3, batch 60,
50K iterations per round, 20% of each hidden layer and 10% of the output layer
pruned per round, rewinding to the initial weights), evaluating every 1,000
iterations on 5,000 held-out training images. Every flag overrides the preset
(--help lists them); a run killed at any moment resumes when run again.

    python examples/lenet_mnist.py --rounds=5 --iterations=5000 --controls=reinit

Cheaper tickets and other ways to draw them: `--early_bird` stops every round
that only finds the next mask once that mask settles (`--eval_rounds=3` also
trains round 3 in full), and `--controls=snip,grasp,synflow,shuffle
--control_rounds=3,5` trains masks found at initialisation and the shuffled
ticket beside the ticket at rounds 3 and 5.

Set TFDS_DATA_DIR to a TensorFlow Datasets folder holding MNIST (or let TFDS
download it).
"""

import _quiet  # noqa: F401  (first: hides TensorFlow's C++ start-up lines)
from absl import app, flags

from lth_keras.experiments import cli

cli.define_flags(["lenet"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    cli.run_from_flags(FLAGS)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
