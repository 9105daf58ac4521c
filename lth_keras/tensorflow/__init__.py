"""The parts of lth_keras that need the TensorFlow backend.

- `export`: SavedModels for TF Serving, and TFLite;
- `distribute`: tf.distribute strategies (several devices, several workers).

Importing this package on another Keras backend raises an `ImportError` that
says so: these modules build TensorFlow graphs from the model's variables.
"""

import keras

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "lth_keras.tensorflow (SavedModel/TFLite export, tf.distribute) needs the TensorFlow "
        f"backend of Keras. Received: KERAS_BACKEND={keras.backend.backend()!r}. Set "
        "KERAS_BACKEND=tensorflow, or save a portable ticket with lth_keras.save_ticket() "
        "and export it from a TensorFlow process."
    )
