"""Exports a trained checkpoint for use outside these scripts.

    python export.py                                   # out/best.keras -> export/
    python export.py --checkpoint=runs/a/best.keras --export_dir=my-model

Writes into --export_dir:
- saved_model/: a TensorFlow SavedModel with two functions. `serve` takes float32 images
  N x 56 x 56 x 1, already framed (0 = background, 1 = stroke), and returns N x K class
  probabilities (K: the data's classes). `classify_image` takes one decoded image of any size
  (uint8 H x W x 1, 2, 3 or 4 channels, as tf.io.decode_image gives it; EXIF orientation is the
  caller's), frames it as predict.py does (framing.py, with the checkpoint's stroke width) and
  returns {"probabilities": K, "found": whether it holds ink, "framed": the 56x56 it saw};
- model.tflite: the same model for TensorFlow Lite (LiteRT), float32;
- model-int8.tflite: the same with int8 weights and activations (about a quarter of the size),
  its ranges calibrated on training images; it takes and returns float32 like model.tflite;
- labels.txt: one line per class, `label name`, as evaluate.py names them.
It prints each file's size and its accuracy on the checkpoint's test split. Loading the files
needs TensorFlow (or a LiteRT runtime, ai_edge_litert) only, not this repository: see README.
"""
import os
import shutil

import numpy as np

from common import UserError, atomic_path, configure, lazy_import, quiet_native_stderr, run, \
    write_text_atomic
import classes
import data_format
import evaluate
import framing
import inference

keras = lazy_import("keras")  # loaded on first use: --help and mistakes answer at once
tf = lazy_import("tensorflow")

CHECKPOINT = "out/best.keras"  # a model written by train.py
EXPORT_DIR = "export"          # where the SavedModel, the TFLite file and labels.txt go
LABELS = "auto"                # class names: auto (by the checkpoint's data), none, or a PATH
TFLITE = True                  # True: also write model.tflite; False: the SavedModel only
INT8 = True                    # True (with --tflite): also write model-int8.tflite
CALIBRATION_IMAGES = 500       # training images that set the int8 file's value ranges
DATA = ""                      # the training data, if it has moved ("": where the record says)
PREPARED_DIR = "data"          # where prepared splits are cached
_RANGES = {"CALIBRATION_IMAGES": "[1, inf)"}  # common.check_values


def export_saved_model(model, path, min_stroke):
    """Writes the SavedModel, with its two functions, under a temporary name, then swaps it in:
    an interrupted export never leaves a half-written model under the final name."""
    side = data_format.SIDE

    def classify_image(image):  # framing.py's framing, then the model: what predict.py does
        framed = framing.frame_graph(image, min_stroke, framing.SPECK_SHARE)
        probabilities = model(tf.cast(framed, tf.float32)[None, :, :, None], training=False)
        return {"probabilities": probabilities[0], "found": tf.reduce_any(framed > 0),
                "framed": framed}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda images: model(images, training=False),
                         input_signature=[tf.TensorSpec([None, side, side, 1], tf.float32)])
    archive.add_endpoint("classify_image", classify_image,
                         input_signature=[tf.TensorSpec([None, None, None], tf.uint8)])
    temporary = path + ".tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    archive.write_out(temporary, verbose=False)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(temporary, path)


def export_tflite(saved_model, path, calibration=None):
    """A TFLite file from the SavedModel (int8 when given `calibration` images, N x 3136, to
    set its value ranges), or the reason why this TensorFlow could not convert it."""
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, ["serve"])
        if calibration is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = lambda: (
                [image.reshape(1, data_format.SIDE, data_format.SIDE, 1).astype(np.float32)]
                for image in calibration)
        flatbuffer = converter.convert()
    except Exception as error:  # a converter that is absent or fails: the SavedModel stands
        return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(flatbuffer)
    return None


def test_data(record, data, prepared_dir, calibration_images):
    """(test images, their labels, calibration images from the training split), or a
    UserError's message if the checkpoint's data is not there."""
    try:
        prepared = evaluate.training_data(record, data, prepared_dir)
    except UserError as error:
        return None, None, None, str(error)
    if len(prepared["y_test"]) == 0:
        return None, None, None, "the test split is empty: the dataset is too small"
    train = prepared["x_train"]
    chosen = np.random.default_rng(0).permutation(len(train))[:calibration_images]
    return prepared["x_test"], prepared["y_test"], train[np.sort(chosen)], None


def size_and_accuracy(path, probabilities, y):
    size = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path)
               for name in names) if os.path.isdir(path) else os.path.getsize(path)
    accuracy = "" if y is None else (f", test accuracy {np.mean(probabilities.argmax(1) == y):.4f}"
                                     f" ({len(y)} images)")
    return f"{size / 2 ** 20:.1f} MB{accuracy}"


def main(argv=None):
    settings = configure(globals(), positional="CHECKPOINT", argv=argv)
    export_dir = settings.export_dir
    record = inference.read_record(settings.checkpoint)
    names = classes.class_names(settings.labels, record["data"])
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise UserError(f"--export_dir={export_dir} is a file: choose a folder")
    x, y, calibration, missing = test_data(record, settings.data, settings.prepared_dir,
                                           settings.calibration_images)
    model = inference.load_network(settings.checkpoint)
    inference.check_compatible(model, len(names))
    os.makedirs(export_dir, exist_ok=True)
    saved_model = os.path.join(export_dir, "saved_model")
    float_lite, int8_lite = (os.path.join(export_dir, name)
                             for name in ("model.tflite", "model-int8.tflite"))
    failures = {}  # path: why it was not written
    with quiet_native_stderr():  # the exporter's and converter's C++ notices
        export_saved_model(model, saved_model, inference.pen_width(record))
        if settings.tflite:
            failures[float_lite] = export_tflite(saved_model, float_lite)
            if settings.int8:
                failures[int8_lite] = (f"no training images to calibrate it ({missing})"
                                       if missing else
                                       export_tflite(saved_model, int8_lite, calibration))
    write_text_atomic(os.path.join(export_dir, "labels.txt"), "".join(
        f"{label} {name or label}\n"
        for label, name in enumerate(classes.chosen_names(settings.labels, record["data"]))))
    print(f"each takes images N x 56 x 56 x 1 (float32, 0/1) and returns N x {len(names)} "
          f"probabilities (the SavedModel by its serve function)")
    int8_kind = f"int8 TFLite, calibrated on {0 if missing else len(calibration)} training images"
    for path, kind in ((saved_model, "SavedModel"), (float_lite, "float32 TFLite"),
                       (int8_lite, int8_kind)):
        if (path not in failures or failures[path]) and path != saved_model:
            if failures.get(path):
                print(f"no {os.path.basename(path)}: {failures[path]}")
            if os.path.exists(path):  # an earlier export's, of another model maybe
                os.remove(path)
                print(f"removed the earlier {path}: it was not written this time")
            continue
        with quiet_native_stderr():  # TensorFlow's and LiteRT's notices
            # each file as written, read back: the SavedModel's serve function, or LiteRT
            exported = tf.saved_model.load(path) if path == saved_model else path
            probabilities = None if x is None else inference.probabilities(exported, x)
        print(f"wrote {path} ({kind}): {size_and_accuracy(path, probabilities, y)}")
    if missing:
        print(f"no test accuracies: {missing}")
    print(f"wrote {os.path.join(export_dir, 'labels.txt')}: one 'label name' line per class")


if __name__ == "__main__":
    run(main)
