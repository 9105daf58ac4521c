"""The paper harness: configs and presets, models, TFDS data, the runner, reports, CLI.

`ExperimentConfig`, `preset` and `PRESETS` need only Keras; `run` and
`default_run_dir` (the runner), the TFDS pipelines (`data`), TensorBoard
logs and the command line need TensorFlow installed and are imported when
first used.

Example:

```python
from lth_keras.experiments import preset, run

rows = run(preset("lenet", rounds=5, iterations=5000), "runs/lenet")
```
"""

import importlib

from lth_keras.experiments.config import ExperimentConfig
from lth_keras.experiments.presets import PRESETS, preset

__all__ = ["PRESETS", "ExperimentConfig", "default_run_dir", "preset", "run"]


def __getattr__(name):
    # The runner imports TensorFlow; load it on first use only.
    if name in ("run", "default_run_dir"):
        return getattr(importlib.import_module("lth_keras.experiments.runner"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
