"""Instability analysis of a run's tickets (Frankle et al., ICML 2020, linear mode connectivity).

For each trial of a run, each round asked for (round 0: the dense network) and
each rewind iteration k: the trial's dense network trained to iteration k,
round r's mask applied, two copies trained to the run's iterations on two
other data orders (all copies of one k trained together, fused), and the test
error along the straight line between the two trained copies (30 points) with
its barrier (the instability; stable below 0.02). Results and a plot of error
against alpha, a panel per round and a line per k, go to
<run_dir>/instability/, with the flag values as flags.json.

    python examples/instability.py --run_dir=runs/lenet5 --rounds=0,7,15 --rewind_iterations=0,1000

A run killed during the analysis starts the unfinished k again when run again.
Set TFDS_DATA_DIR to a TensorFlow Datasets folder holding the run's data set.
"""

import json
import os
import sys

import _quiet  # noqa: F401  (before TensorFlow: hides its C++ start-up lines)
from absl import app, flags

flags.DEFINE_string("run_dir", None, "The run directory to analyse.", required=True)
flags.DEFINE_list("rounds", ["0"], "Rounds whose masks are analysed (0: the dense network).")
flags.DEFINE_list("rewind_iterations", ["0"], "Iterations k the copies start from.")
flags.DEFINE_list("trials", None, "Trials to analyse (default: all).")
flags.DEFINE_integer("alphas", 30, "Points on each line, its ends included.", lower_bound=2)
flags.DEFINE_string("output_dir", None, "Where results go (default: <run_dir>/instability).")
FLAGS = flags.FLAGS
_OWN = ("run_dir", "rounds", "rewind_iterations", "trials", "alphas", "output_dir")


def main(argv):
    del argv
    from lth_keras.experiments.instability import run_instability
    from lth_keras.experiments.rundir import CorruptRunError

    output_dir = FLAGS.output_dir or os.path.join(FLAGS.run_dir, "instability")
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "flags.json"), "w") as f:
        json.dump({name: FLAGS[name].value for name in _OWN}, f, indent=1)
    try:
        entries = run_instability(
            FLAGS.run_dir,
            rounds=[int(r) for r in FLAGS.rounds],
            rewind_iterations=[int(k) for k in FLAGS.rewind_iterations],
            trials=None if FLAGS.trials is None else [int(t) for t in FLAGS.trials],
            alphas=FLAGS.alphas,
            output_dir=output_dir,
        )
    except (CorruptRunError, OSError, ValueError) as error:
        sys.exit(f"error: {error}")
    for key in sorted({(e["round"], e["k"]) for e in entries}):
        barriers = [e["barrier"] for e in entries if (e["round"], e["k"]) == key]
        print(
            f"round {key[0]:2d} k={key[1]:>6}: barrier mean {sum(barriers) / len(barriers):+.4f}, "
            f"max {max(barriers):+.4f} over {len(barriers)} trials"
        )


if __name__ == "__main__":
    app.run(main)
