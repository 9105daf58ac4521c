"""The persistent XLA compile cache: flags set right, and the same numbers from it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import pythonpath

from lth_keras.tensorflow import compile_cache


@pytest.fixture
def environ(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_XLA_FLAGS", raising=False)
    monkeypatch.setenv("LTH_KERAS_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_default_folder_is_keyed_by_version_and_cpu(environ):
    folder = compile_cache.enable_compile_cache()
    assert folder.startswith(str(environ / "cache" / "xla" / "tf"))
    assert os.path.isdir(folder)
    assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_persistent_cache_directory={folder}"


def test_other_flags_are_kept_and_a_users_folder_wins(environ, monkeypatch):
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=2")
    folder = compile_cache.enable_compile_cache(str(environ / "mine"))
    assert os.environ["TF_XLA_FLAGS"] == (
        f"--tf_xla_auto_jit=2 --tf_xla_persistent_cache_directory={folder}"
    )
    assert compile_cache.enable_compile_cache(str(environ / "other")) == folder


@pytest.mark.parametrize("folder", ["", "a b", 3], ids=["empty", "space", "int"])
def test_invalid_folder(environ, folder):
    with pytest.raises(ValueError, match="folder"):
        compile_cache.enable_compile_cache(folder)
    assert "TF_XLA_FLAGS" not in os.environ


TRAIN = """
import json, sys
import numpy as np
import keras
from lth_keras.tensorflow.compile_cache import enable_compile_cache
enable_compile_cache(sys.argv[1])
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(3)])
model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(
    from_logits=True), jit_compile=True, steps_per_execution=4)
rng = np.random.default_rng(0)
x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, 64)
model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
print(json.dumps([w.tolist() for w in model.get_weights()]))
"""


@pytest.mark.slow
def test_a_cached_program_gives_the_same_weights(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=pythonpath())
    env.pop("TF_XLA_FLAGS", None)
    folder = tmp_path / "xla"
    results = []
    for _ in range(2):  # the first run compiles and stores, the second loads
        out = subprocess.run(
            [sys.executable, "-c", TRAIN, str(folder)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        assert any(name.endswith(".pb") for name in os.listdir(folder))
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(np.array(a), np.array(b))
