"""The `>>>` examples in docstrings run, and give what they show.

Docstring examples are of two kinds: `>>>` examples, which run here, and
plain Examples in ```python blocks, which show usage and are not run.
"""

import doctest
import importlib
import pkgutil

import pytest

import lth_keras


def _modules():
    for info in pkgutil.walk_packages(lth_keras.__path__, "lth_keras."):
        if info.name.startswith(("lth_keras.tensorflow", "lth_keras.experiments")):
            continue  # need TensorFlow; they hold no >>> examples
        yield info.name


@pytest.mark.parametrize("name", list(_modules()))
def test_doctests_pass(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_doctests_exist():
    import lth_keras.pruning.counts as counts

    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for t in finder.find(counts))
    assert examples >= 3
