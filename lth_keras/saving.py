"""`load_model`: a `.keras` file of a model with masks, whatever kind of model it is."""

import json
import zipfile

import keras

from lth_keras.convert import prunable
from lth_keras.layers import masked

__all__ = ["load_model"]


def _make_twins(config, custom_objects):
    """Makes the twins a config names (`"lth_keras>Masked[...]"`), so Keras finds them."""
    if isinstance(config, dict):
        masked.resolve_twin(config.get("registered_name"), custom_objects)
        for value in config.values():
            _make_twins(value, custom_objects)
    elif isinstance(config, list):
        for value in config:
            _make_twins(value, custom_objects)


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Loads a `.keras` file saved from a model with masks, masks and initial weights included.

    `keras.saving.load_model` loads Sequential and functional models of
    Keras layers with masks by itself (their config names the masked
    classes). A model whose constructor or layers create its layers (a
    subclassed model, a KerasHub backbone, a `MultiHeadAttention` holding
    `EinsumDense` layers) is rebuilt with plain layers, so this function
    attaches masks to every weight that could hold one, loads the file, and
    keeps on each layer exactly the masks the file recorded (none on a
    layer saved without masks).

    Args:
        filepath: Path to a `.keras` file.
        custom_objects: As for `keras.saving.load_model`. Defaults to `None`.
        compile: Whether to compile the model as it was saved. Defaults to
            `True`.
        safe_mode: As for `keras.saving.load_model`: refuses configs that
            would run arbitrary code (lambdas). Defaults to `True`.

    Returns:
        The model, with its masks, initial weights, weights and (if
        compiled) optimizer state.

    Raises:
        ValueError: If the file is not a `.keras` archive, or its weights do
            not fit the model its config builds.

    Example:

    ```python
    model.save("pruned.keras")
    model = lth_keras.load_model("pruned.keras")
    ```
    """
    filepath = str(filepath)
    if not zipfile.is_zipfile(filepath):
        raise ValueError(
            "lth_keras.load_model() reads .keras files (zip archives written by model.save). "
            f"Received: filepath={filepath!r}"
        )
    with zipfile.ZipFile(filepath) as archive:
        config = json.loads(archive.read("config.json"))
    if not compile:
        config["compile_config"] = None
    _make_twins(config, custom_objects)
    with keras.saving.custom_object_scope(custom_objects or {}):
        model = keras.saving.deserialize_keras_object(config, safe_mode=safe_mode)
    prunable(model, unknown=True, positional=True)  # every candidate; loading keeps the file's
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built and model.trainable_variables:
        optimizer.build(model.trainable_variables)
    with masked.reconciling():
        model.load_weights(filepath)
    return model
