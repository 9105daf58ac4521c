"""Every code block of README.md and docs/*.md runs, offline, as a user runs it.

Each file's blocks run in a scratch folder laid out like a checkout (the
repository's `examples/`, `benchmarks/` and `tests/` linked in, `../shared`
holding the shared MNIST), so nothing is written into the repository:

- `python` blocks: all of a file's, in order, as one script (they share
  names, as a reader reading on does);
- `bash` blocks: each with `bash -euo pipefail`, except two kinds of line CI
  runs itself: `pip install` (each extra named must exist in setup.cfg, each
  pinned package must be pinned the same in .ci/run) and the test commands
  (each must be a line of .ci/run);
- `text` blocks are output shown to the reader, not run.

Long runs are shortened by the substitutions in `SHORTER` (fewer rounds,
iterations and examples; a smaller training set), each of which must find
its text in the file, so the blocks themselves stay as a user runs them.
The test then checks that the files the blocks promise exist.
"""

import configparser
import glob
import os
import re
import socket
import subprocess
import sys

import pytest
from helpers import MNIST_DIR, REPO, pythonpath

#: Dated measurement logs: their commands record what was run on that day,
#: against the code of that day (BUILD.md holds today's commands).
LOGS = "docs/measurements-*.md"
FILES = ["README.md"] + sorted(
    os.path.relpath(path, REPO)
    for path in set(glob.glob(os.path.join(REPO, "docs", "*.md")))
    - set(glob.glob(os.path.join(REPO, LOGS)))
)

_TINY = (
    "--iterations=20 --eval_every=10 --validation_examples=100 --train_examples=600 "
    "--test_examples=100 --train_eval_examples=100"
)
_TINY_CONFIG = (
    "iterations=20, eval_every=10, validation_examples=100, train_examples=600, "
    "test_examples=100, train_eval_examples=100,"
)
_SMALLER_MNIST = (
    'x = x.reshape(-1, 784).astype("float32") / 255',
    'x = x.reshape(-1, 784).astype("float32") / 255\nx, y = x[:3000], y[:3000]',
)

#: Per file, `(text, shorter text)`: what the test runs instead, and why.
SHORTER = {
    "README.md": [
        # The main job: 1 round of 20 iterations on 600 images, not 7 of 5,000.
        ("--rounds=7 --iterations=5000", f"--rounds=1 {_TINY}"),
        # The training set: 3,000 images, not 60,000.
        _SMALLER_MNIST,
        # The runner from Python: 1 round of 20 iterations.
        ("rounds=3, iterations=2000,", f"rounds=1, {_TINY_CONFIG}"),
        # JAX and two workers: 1 round of 20 iterations each.
        ("--rounds=2 --iterations=2000", f"--rounds=1 {_TINY}"),
        ("--rounds=3 --iterations=2000", f"--rounds=1 {_TINY}"),
    ],
    "docs/CORRELATION.md": [
        # LeNet only (CIFAR-10 is not on the CI machines), 1 seed, 1 round of 20 iterations.
        (
            "--models=lenet --seeds=0,1 --adam --pft_schedules=oneshot,polynomial",
            "--models=lenet --seeds=0 --noadam --pft_schedules=oneshot,polynomial --rounds=1 "
            "--lenet_iterations=20 --eval_every=10",
        ),
        (
            "--models=conv2 --seeds=0,1",
            "--models=conv2 --seeds=0 --noadam --conv_rounds=1 --conv_iterations=20 "
            "--conv_eval_every=10",
        ),
    ],
    "docs/EFFICIENCY.md": [
        # 1 seed, round 1 only, 40 iterations, an early-bird window that fits them.
        (
            "python benchmarks/compare_methods.py",
            "python benchmarks/compare_methods.py --seeds=0 --levels=1 --iterations=40 "
            "--eval_every=10 --window=2",
        ),
    ],
    "docs/RESULTS.md": [
        # 1 seed, 1 round of 20 iterations.
        (
            "--output_dir=runs/reproduce_lenet",
            "--output_dir=runs/reproduce_lenet --seeds=0 --rounds=1 --iterations=20 "
            "--eval_every=10",
        ),
    ],
    "docs/STRUCTURED.md": [
        # 1 seed, 1 round of 20 iterations, two of the four structures (N:M has its rounds).
        (
            "python benchmarks/reproduce_structured.py",
            "python benchmarks/reproduce_structured.py --seeds=0 --rounds=1 --nm_rounds=1 "
            "--iterations=20 --eval_every=10 --structures=units,2:4",
        ),
        # Latency: 5 calls, not 300 or 1,000, no fine-tuning, one level and structure first.
        (
            "--json_out=/tmp/latency.json",
            "--json_out=latency.json --rounds=7 --structures=units --finetune_epochs=0 --calls=5",
        ),
        (
            "--rounds=12,15 --structures=units,block:1x4",
            "--rounds=12 --structures=block:1x4",
        ),
        ("--calls=1000", "--calls=5"),
        # The export example: 2 rounds on 3,000 images, not 15 on 60,000.
        _SMALLER_MNIST,
        ('model = imp("units")', 'model = imp("units", rounds=2)'),
        ('model = imp("block:1x4")', 'model = imp("block:1x4", rounds=2)'),
    ],
}

#: Per file, the files its blocks leave in the scratch folder.
LEAVES = {
    "README.md": [
        "runs/lenet/metrics.csv",
        "runs/lenet-jax/metrics.csv",
        "runs/lenet2w/metrics.csv",
        "runs/lenet3/metrics.csv",
        "exports/lenet/1/saved_model.pb",
        "exports/lenet/2/saved_model.pb",
        "lenet.tflite",
        "lenet.ticket.npz",
        "lenet_small.tflite",
    ],
    "docs/CORRELATION.md": ["runs/reproduce_correlation/summary.md"],
    "docs/EFFICIENCY.md": ["runs/compare_methods/summary.md", "docs/img/efficiency_accuracy.png"],
    "docs/RESULTS.md": ["runs/reproduce_lenet/summary.md"],
    "docs/STRUCTURED.md": [
        "runs/reproduce_structured/summary.md",
        "latency.json",
        "exports/lenet/1/saved_model.pb",
        "lenet.tflite",
        "lenet_blocks.tflite",
    ],
}

_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.S | re.M)


def code_blocks(name):
    """`[(language, text)]` of a Markdown file's fenced blocks."""
    with open(os.path.join(REPO, name)) as f:
        return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(f.read())]


def _extras():
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    return set(config["options.extras_require"])


def _ci_lines():
    with open(os.path.join(REPO, ".ci", "run")) as f:
        return {line.strip() for line in f}


def _left_to_ci(line):
    """Checks a line CI runs itself (`pip install`, the tests); returns whether it was one."""
    command = line.split("#")[0].strip()
    if command.startswith("pip install "):
        for extra in re.findall(r'-e "\.\[(\w+)\]"', command):
            assert extra in _extras(), f"README installs an unknown extra: {line}"
        for pinned in re.findall(r"\S+==\S+", command):
            assert any(pinned in ci for ci in _ci_lines()), f"{pinned} is not pinned in .ci/run"
        return True
    if "python -m pytest" in command:
        assert command in _ci_lines(), f"not a test command of .ci/run: {line}"
        return True
    return False


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _checkout(tmp_path):
    """A scratch folder laid out like a checkout beside `../shared`."""
    root = tmp_path / "main"
    root.mkdir()
    for name in ("examples", "benchmarks", "tests"):
        (root / name).symlink_to(os.path.join(REPO, name))
    (root / "docs" / "img").mkdir(parents=True)
    data = tmp_path / "shared" / "data"
    data.mkdir(parents=True)
    (data / "tensorflow_datasets").symlink_to(os.path.abspath(MNIST_DIR))
    return root


def _shortened(name, blocks):
    text = "".join(code for _, code in blocks)
    shorter = list(SHORTER.get(name, []))
    # Two workers on loopback: ports the OS gives, not fixed ones that may be taken.
    shorter += [(f"localhost:{port}", f"localhost:{_free_port()}") for port in (12345, 12346)]
    out = []
    for language, code in blocks:
        for old, new in shorter:
            code = code.replace(old, new)
        out.append((language, code))
    missing = [old for old, _ in SHORTER.get(name, []) if old not in text]
    assert missing == [], f"{name} no longer holds these texts the test shortens: {missing}"
    return out


def _run(args, cwd):
    env = dict(os.environ, TFDS_DATA_DIR=MNIST_DIR, PYTHONPATH=pythonpath())
    env.pop("KERAS_BACKEND", None)
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    return result


def test_every_markdown_file_is_covered():
    assert set(FILES) >= set(LEAVES) and "docs/index.md" in FILES
    assert [name for name in FILES if not code_blocks(name) and name in LEAVES] == []


@pytest.mark.slow
@pytest.mark.parametrize("name", FILES)
def test_code_blocks_run(name, tmp_path):
    blocks = _shortened(name, code_blocks(name))
    languages = {language for language, _ in blocks}
    assert languages <= {"python", "bash", "text"}, languages
    root = _checkout(tmp_path)
    python = "\n\n".join(code for language, code in blocks if language == "python")
    if python:
        (root / "blocks.py").write_text(python)
        _run([sys.executable, "blocks.py"], root)
    for language, code in blocks:
        if language == "bash":
            lines = [line for line in code.splitlines() if not _left_to_ci(line)]
            if "".join(lines).strip():
                _run(["bash", "-euo", "pipefail", "-c", "\n".join(lines)], root)
    for path in LEAVES.get(name, []):
        assert (root / path).is_file(), path
