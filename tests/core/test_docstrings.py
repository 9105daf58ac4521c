"""Every dotted `lth_keras.` name in a docstring (and in README.md) names something that exists."""

import importlib
import inspect
import os
import pkgutil
import re

import keras
import pytest
from helpers import REPO

import lth_keras

NAME = re.compile(r"(?<![/\w.])lth_keras(?:\.[A-Za-z_][A-Za-z0-9_]*)+")  # not a file name


# lth_keras.tensorflow refuses to import on another backend; the TensorFlow
# run of this test checks its names.
SKIP = set() if keras.backend.backend() == "tensorflow" else {"lth_keras.tensorflow"}


def _skipped(name):
    return any(name == s or name.startswith(s + ".") for s in SKIP)


def _modules():
    skip = SKIP
    for info in pkgutil.walk_packages(lth_keras.__path__, "lth_keras."):
        if not any(info.name == s or info.name.startswith(s + ".") for s in skip):
            yield importlib.import_module(info.name)


def _docstrings(module):
    yield module.__name__, module.__doc__ or ""
    for name, value in vars(module).items():
        if getattr(value, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(value) or inspect.isfunction(value):
            yield f"{module.__name__}.{name}", value.__doc__ or ""
        if inspect.isclass(value):
            for attr, member in vars(value).items():
                doc = getattr(member, "__doc__", None)
                if callable(member) or isinstance(member, property):
                    yield f"{module.__name__}.{name}.{attr}", doc or ""


def _resolves(dotted):
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for part in parts[split:]:
                value = getattr(value, part)
        except AttributeError:
            return False
        return True
    return False


def _names():
    found = {}
    for module in _modules():
        for where, doc in _docstrings(module):
            for name in NAME.findall(doc):
                found.setdefault(name.rstrip("."), where)
    with open(os.path.join(REPO, "README.md")) as f:
        for name in NAME.findall(f.read()):
            found.setdefault(name.rstrip("."), "README.md")
    return found


def test_every_dotted_name_resolves():
    found = _names()
    assert len(found) > 50  # the docstrings do name things
    missing = {
        name: where for name, where in found.items() if not _skipped(name) and not _resolves(name)
    }
    assert missing == {}


@pytest.mark.parametrize("dotted", ["lth_keras.nope", "lth_keras.masks.nope", "lth_keras.x.y"])
def test_a_missing_name_is_caught(dotted):
    assert not _resolves(dotted)
