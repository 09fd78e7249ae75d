"""A trained model, found and run: one way in for evaluate.py, predict.py, serve.py and
export.py. A checkpoint's run record (best.json beside it, or the record inside it), the Keras
model, and class probabilities from it or from an export of it (a SavedModel, a TFLite file).
"""
import functools
import json
import os
import sys

import numpy as np

from common import UserError, lazy_import, quiet_native_stderr
import data_format
import framing
import run_state

keras = lazy_import("keras")  # loaded on first use: reading a record needs none
tf = lazy_import("tensorflow")

BATCH_SIZE = 1024  # images per inference batch


def record_path(checkpoint):
    return os.path.splitext(checkpoint)[0] + ".json"


def read_record(path):
    """The run record of checkpoint `path`: best.json beside best.keras, or, for a model file
    on its own, the record that train.py put inside it (saying so in one line). Read before
    the model, so that a missing file answers at once."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path} (train one with python train.py, "
                        f"or pass --checkpoint=PATH to a .keras file it wrote)")
    inside = run_state.attached_to_model_file(path)
    try:
        with open(record_path(path)) as f:
            record = json.load(f)
        record["data"]["source"], record["data"]["source_sha256"], record["data"]["seed"]
        if inside and "best_epoch" in inside and run_state.describes(record)[:2] == \
                run_state.describes(inside)[:2]:
            return {**record, "calibration": inside.get("calibration")}  # the model's own
        if inside and "best_epoch" in inside and run_state.describes(record) != \
                run_state.describes(inside):
            print(f"note: {record_path(path)} describes another epoch than {path} (a run "
                  f"stopped between their writes): using the record inside the model",
                  file=sys.stderr)
            return inside
        return record
    except (OSError, ValueError, KeyError, TypeError):
        record = inside
    if record is None:
        raise UserError(f"{path} has no readable run record at {record_path(path)}, nor one "
                        f"inside it: use a best.keras written by train.py")
    print(f"note: no readable {record_path(path)}: using the class names, stroke width and "
          f"data fingerprint stored inside {path}", file=sys.stderr)
    return record


def load_checkpoint(path):
    """(Keras model, run record) of a checkpoint, with clear errors for a missing, foreign or
    damaged one."""
    record = read_record(path)
    return load_network(path), record


def load_network(path):
    """The Keras model in checkpoint `path`, or a clear error if the file is not one."""
    try:
        with quiet_native_stderr():  # the first TensorFlow work starts its runtime: C++ notices
            return keras.saving.load_model(path, compile=False)  # no optimiser: inference
    except Exception as error:  # Keras raises many types for a file that is not a model
        raise UserError(f"{path} is not a loadable Keras model ({type(error).__name__}): pass "
                        f"the best.keras that train.py wrote") from None


def pen_width(record=None, min_stroke=0.0):
    """How wide (pixels at 56x56) strokes of image files are made at least, for a checkpoint
    with this run record: `min_stroke`, or when 0 how thin the strokes of its training images
    get (the 10th percentile of their widths, which train.py records)."""
    recorded = record["data"].get("stroke_width") if record else None
    return min_stroke or recorded or framing.MIN_STROKE


def check_compatible(model, num_classes):
    """A clear error for a Keras model that does not take the data format's images or does
    not predict `num_classes` classes."""
    expected = (None, *data_format.IMAGE_SHAPE)
    if tuple(model.input_shape) != expected or model.output_shape[-1] != num_classes:
        raise UserError(f"the checkpoint takes {model.input_shape} and predicts "
                        f"{model.output_shape[-1]} classes, but the data has {expected} images "
                        f"and {num_classes} classes: it belongs to another project or dataset")


def probabilities(model, x, batch_size=BATCH_SIZE):
    """Class probabilities (N x classes, float32) for N x 3136 (or N x 56 x 56) binary images,
    in batches of `batch_size`, from `model`: a Keras model, a loaded SavedModel (its serve
    function, as export.py writes it), or the path of a TFLite file (LiteRT's interpreter)."""
    images = np.asarray(x).reshape(-1, *data_format.IMAGE_SHAPE)
    if isinstance(model, str):
        forward = tflite_forward(model)
    elif isinstance(model, keras.Model):
        forward = keras_forward(model)
    else:
        forward = lambda batch: model.serve(batch).numpy()  # noqa: E731
    return np.concatenate([forward(images[i:i + batch_size].astype(np.float32))
                           for i in range(0, max(len(images), 1), batch_size)])


@functools.lru_cache(maxsize=8)
def keras_forward(model):
    """A Keras model's forward pass as one traced graph for batches of any size: about a third
    faster than model.predict, which adds a data pipeline and callbacks per call."""
    traced = tf.function(lambda images: model(images, training=False),
                         input_signature=[tf.TensorSpec([None, *data_format.IMAGE_SHAPE],
                                                        tf.float32)])
    return lambda batch: traced(batch).numpy()


def tflite_forward(path):
    """The forward pass of a TFLite file, by LiteRT's interpreter (TensorFlow's own,
    tf.lite.Interpreter, is deprecated)."""
    from ai_edge_litert.interpreter import Interpreter
    with quiet_native_stderr():  # (LiteRT's C++ notice of its CPU delegate)
        interpreter = Interpreter(model_path=path)
    source = interpreter.get_input_details()[0]["index"]
    result = interpreter.get_output_details()[0]["index"]

    def forward(batch):
        interpreter.resize_tensor_input(source, batch.shape)
        with quiet_native_stderr():
            interpreter.allocate_tensors()
        interpreter.set_tensor(source, batch)
        interpreter.invoke()
        return interpreter.get_tensor(result)
    return forward
