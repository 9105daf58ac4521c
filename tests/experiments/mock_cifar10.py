"""Runs an example script with CIFAR-10 replaced by tfds.testing.mock_data.

Usage: python tests/experiments/mock_cifar10.py EXAMPLE.py [FLAGS...]
(CIFAR-10 cannot be downloaded on the machines the tests run on.)
"""

import os
import runpy
import sys

import tensorflow_datasets as tfds

if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python script.py` does
    with tfds.testing.mock_data(num_examples=96):
        runpy.run_path(script, run_name="__main__")
