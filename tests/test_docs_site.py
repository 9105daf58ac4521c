"""The API reference site: it builds with warnings as errors and names every public name."""

import importlib
import os
import pathlib
import re
import subprocess
import sys

import pytest
from helpers import REPO

griffe = pytest.importorskip("griffe")

DOCS = pathlib.Path(REPO) / "docs"


def _public_modules():
    """`lth_keras` and each of its packages; a package without `__all__`, its modules."""
    root = pathlib.Path(REPO) / "lth_keras"
    modules = ["lth_keras"]
    for init in sorted(root.glob("*/__init__.py")):
        package = f"lth_keras.{init.parent.name}"
        if init.parent.name.startswith("_"):
            continue
        if hasattr(importlib.import_module(package), "__all__"):
            modules.append(package)
        else:  # lth_keras.tensorflow: export, distribute, compile_cache
            modules += sorted(f"{package}.{path.stem}" for path in init.parent.glob("[!_]*.py"))
    return modules


#: The modules whose `__all__` the site documents.
PUBLIC = _public_modules()

#: Public names without a docstring (none: keep it so).
PENDING = set()


def _public_names():
    for module in PUBLIC:
        for name in importlib.import_module(module).__all__:
            if name != "__version__":
                yield module, name


def _canonical(module, name):
    """Where a name is defined: `lth_keras.experiments.runner.run` for `experiments.run`."""
    value = getattr(importlib.import_module(module), name)
    if hasattr(value, "__qualname__") and hasattr(value, "__module__"):
        return f"{value.__module__}.{value.__qualname__}"
    return None


@pytest.mark.slow
def test_site_builds_strictly_and_shows_every_public_name(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING" not in result.stderr
    ids = set()
    for folder, _, files in os.walk(tmp_path / "api"):
        for file in files:
            with open(os.path.join(folder, file)) as f:
                ids.update(re.findall(r'id="(lth_keras[\w.]*)"', f.read()))
    missing = [
        f"{module}.{name}"
        for module, name in _public_names()
        if f"{module}.{name}" not in ids and _canonical(module, name) not in ids
    ]
    assert missing == []
    for page in ("RESULTS", "CORRELATION", "STRUCTURED", "EFFICIENCY"):
        html = (tmp_path / page / "index.html").read_text()
        for image in re.findall(r"\]\((img/[\w.-]+\.png)\)", (DOCS / f"{page}.md").read_text()):
            assert (tmp_path / image).is_file() and f'src="../{image}"' in html


def test_public_names_without_a_docstring_are_the_pending_ones():
    package = griffe.load("lth_keras", search_paths=[REPO], resolve_aliases=True)
    undocumented = set()
    for module, name in _public_names():
        try:
            member = package[f"{module}.{name}".removeprefix("lth_keras.")]
        except KeyError:  # exported lazily (`experiments.run`): where it is defined
            member = package[_canonical(module, name).removeprefix("lth_keras.")]
        target = member.final_target if member.is_alias else member
        if not target.docstring:
            undocumented.add(target.path)
    assert undocumented == PENDING
