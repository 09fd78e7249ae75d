"""Classifies your own images with a trained checkpoint.

    python predict.py --checkpoint=out/best.keras scan1.png photo.jpg more.npy
    python predict.py img.png --json=True          # one JSON object per line

Takes image files of any size (PNG, JPEG, ...: photos, scans, canvas exports with a
transparent background), turned into the training format by framing.py: white strokes on
black, the character cropped to its ink, scaled to fill a 56x56 frame and made binary. Also
.npy or pickle arrays of N x 3136 binary pixels. Prints the top 3 characters with their
probabilities for each image ("not sure" first where the best is below --min_confidence), or
"no character found" for an image with no ink.

The first run also writes LiteRT copies of the model and of the framing into lite/ beside the
checkpoint (the same functions, converted); later runs answer from them without starting
TensorFlow, seconds sooner (bench/speed.py times both; --lite=False: always TensorFlow).

From Python: `from predict import predict; labels = predict(images)` (images N x 3136 or
N x 56 x 56, 0/1 or 0/255; -1 for an image with no ink); the model is loaded once and kept.
"""
import contextlib
import functools
import glob
import hashlib
import io
import json
import os
import sys

import numpy as np

from common import UserError, atomic_path, configure, lazy_import, quiet_native_stderr, run
import classes
import data_format
import data_sources
import framing
import inference

tf = lazy_import("tensorflow")  # loaded on first use: --help and mistakes answer at once

CHECKPOINT = "out/best.keras"  # a model written by train.py
LABELS = "auto"                # class names: auto (by the checkpoint's data), none, or a PATH
TOP = 3                        # how many best guesses to print per image
MIN_CONFIDENCE = 0.5           # below this probability the answer is "not sure" (the guesses
                               # still follow); train.py calibrates the probabilities, so 0.5
                               # means right about half the time (evaluate.py: coverage)
JSON = False                   # True: one JSON object per line instead of text
MIN_STROKE = 0.0               # image files: strokes thinner than this many pixels at 56x56
                               # are widened first (a big photo's thin pen lines would vanish);
                               # 0: as wide as the strokes of the thinnest tenth of the
                               # checkpoint's training images (recorded in best.json)
SPECK_SHARE = 0.01             # image files: ink blobs under this share of all the ink are
                               # specks, left out of the framing
LITE = True                    # True: after the first run, answer from LiteRT copies of the model
                               # and the framing (the same functions, kept in lite/ beside the
                               # checkpoint) without starting TensorFlow: seconds sooner
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_SUFFIXES = (".npy", ".pkl", ".pickle")  # N x 3136 arrays: numpy's, or a pickle's
NO_CHARACTER = -1              # predict()'s answer for an image with no ink
_FIXED = ("NO_CHARACTER",)
_RANGES = {"TOP": "[1, inf)", "MIN_CONFIDENCE": "[0, 1]", "MIN_STROKE": "[0, 20]",
           "SPECK_SHARE": "[0, 1)"}  # check_values


@functools.lru_cache(maxsize=4)
def read_record(checkpoint=CHECKPOINT):
    """The checkpoint's run record (inference.read_record), read once per checkpoint."""
    return inference.read_record(checkpoint)


@functools.lru_cache(maxsize=4)
def load_model(checkpoint=CHECKPOINT):
    """The model and its run record, loaded once per checkpoint."""
    record = read_record(checkpoint)  # first: a missing file is named as such
    return inference.load_network(checkpoint), record


def read_inputs(paths, min_stroke=None, speck_share=SPECK_SHARE, framer=framing.frame):
    """(names, N x 3136 uint8) from image files (framed by `framer` with these settings:
    framing.py's frame, or its lite_framer) and array files."""
    names, rows = [], []
    for path in paths:
        if os.path.isdir(path):
            raise UserError(f"{path} is a folder: pass the image or array files in it")
        if not os.path.isfile(path):
            raise UserError(f"input not found: {path}")
        if not path.lower().endswith(IMAGE_SUFFIXES + ARRAY_SUFFIXES):
            raise UserError(f"{path} is neither an image ({' '.join(IMAGE_SUFFIXES)}) nor "
                            f"an array of images ({' '.join(ARRAY_SUFFIXES)}): convert it to "
                            f"one of those")
        with open(path, "rb") as f:
            raw = f.read()
        if path.lower().endswith(IMAGE_SUFFIXES):
            rows.append(framing.read_image_file(raw, path, min_stroke, speck_share,
                                                framer=framer))
            names.append(path)
            continue
        if path.lower().endswith(".npy"):
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as error:
                raise UserError(f"{path} is not a readable .npy array ({error})") from None
        else:  # a pickle: loaded with the same code-refusing unpickler as the training data
            array = data_sources.load_pickle_object(raw, path)
            if isinstance(array, (tuple, list)) and len(array) == 2:
                array = array[0]  # a (train_x, train_y) pair: classify its images
        x = as_model_input(array, path)
        rows.extend(x)
        names.extend(f"{path}[{i}]" for i in range(len(x)))
    if not rows:
        raise UserError("no images given: python predict.py --checkpoint=PATH IMAGE_OR_ARRAY...")
    return names, np.stack(rows).astype(np.uint8)


def as_model_input(images, where="images"):
    """N x 3136 or N x 56 x 56 binary images (0/1, bool or 0/255), checked like training
    data -> N x 3136 uint8 0/1. Greyscale or wrongly shaped arrays are refused clearly."""
    images = np.asarray(images)
    if images.ndim == 3 and images.shape[1:] == (data_format.SIDE, data_format.SIDE):
        images = images.reshape(len(images), -1)
    x, _ = data_sources.validate(images, np.zeros(len(images), np.int64), where)
    return x


def predict_probabilities(images, checkpoint=CHECKPOINT):
    """The model's class probabilities (N x classes) for binary images, as predict() takes
    them (an image with no ink gets them too: check with images.any(axis=1))."""
    model, _ = load_model(checkpoint)
    return inference.probabilities(model, as_model_input(images))


def predict(images, checkpoint=CHECKPOINT):
    """Labels (ints 0..classes-1) for binary images, N x 3136 or N x 56 x 56 (0/1, bool or
    0/255), and NO_CHARACTER (-1) for an image with no ink, as predict.py says "no character
    found". Raises UserError for anything else (greyscale, other shapes), naming the problem."""
    x = as_model_input(images)
    labels = predict_probabilities(x, checkpoint).argmax(axis=1)
    return np.where(x.any(axis=1), labels, NO_CHARACTER)


def lite_paths(checkpoint):
    """(model, framing) paths of the LiteRT copies for a checkpoint, in lite/ beside it, named
    by the sha256 of the checkpoint's bytes and of framing.py: a changed one is never used."""
    def sha_of(path):
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    folder = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "lite")
    return (os.path.join(folder, f"model-{sha_of(checkpoint)}.tflite"),
            os.path.join(folder, f"framing-{sha_of(framing.__file__)}.tflite"))


def write_lite_copies(checkpoint):
    """Converts the checkpoint's model and the framing to LiteRT files (lite_paths), written
    atomically, older copies removed; says so on stderr. A folder that is not writable only
    costs the speed-up."""
    model_path, framing_path = lite_paths(checkpoint)
    converter = tf.lite.TFLiteConverter.from_keras_model(load_model(checkpoint)[0])
    try:
        # (quiet: the converter prints the model's signature, which is not the user's output)
        with quiet_native_stderr(), contextlib.redirect_stdout(io.StringIO()):
            files = {model_path: converter.convert(), framing_path: framing.tflite_model()}
        for old in glob.glob(os.path.join(os.path.dirname(model_path), "*.tflite")):
            if old not in files:
                os.remove(old)
        for path, content in files.items():
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                f.write(content)
    except OSError as error:
        print(f"note: no LiteRT copies written ({error}); predict.py stays on TensorFlow",
              file=sys.stderr)
        return
    print(f"note: wrote LiteRT copies to {os.path.dirname(model_path)}: later runs answer "
          f"without starting TensorFlow", file=sys.stderr)


def main(argv=None):
    settings, paths = configure(globals(), positional="*", argv=argv)
    record = read_record(settings.checkpoint)  # the model loads once the inputs are read
    model_lite, framing_lite = lite_paths(settings.checkpoint)
    lite = settings.lite and os.path.isfile(model_lite) and os.path.isfile(framing_lite)
    names_in, images = read_inputs(paths, inference.pen_width(record, settings.min_stroke),
                                   settings.speck_share,
                                   framing.lite_framer(framing_lite) if lite else framing.frame)
    class_names = classes.class_names(settings.labels, record["data"])
    if lite:  # the copy of this very checkpoint, which was checked against its classes
        probabilities = inference.probabilities(model_lite, images)
        if probabilities.shape[1] != len(class_names):
            raise UserError(f"the checkpoint predicts {probabilities.shape[1]} classes, but "
                            f"the labels name {len(class_names)}: pass the matching --labels")
    else:
        inference.check_compatible(load_model(settings.checkpoint)[0], len(class_names))
        probabilities = predict_probabilities(images, settings.checkpoint)
    for name, row, pixels in zip(names_in, probabilities, images):
        best = np.argsort(row)[::-1][:settings.top]
        if not pixels.any():  # nothing to read: no label, as the page refuses an empty drawing
            print(json.dumps({"input": name, "found": False, "top": []}) if settings.json
                  else f"{name}: no character found")
        elif settings.json:
            print(json.dumps({"input": name, "found": True, "label": int(best[0]),
                              "sure": bool(row[best[0]] >= settings.min_confidence),
                              "top": [{"label": int(label), "name": class_names[label],
                                       "probability": round(float(row[label]), 4)}
                                      for label in best]}))
        else:
            guesses = "  ".join(f"{class_names[label]} {row[label]:.3f}" for label in best)
            sure = row[best[0]] >= settings.min_confidence
            print(f"{name}: {guesses}" if sure else f"{name}: not sure; best guesses {guesses}")
    if settings.lite and not lite:
        write_lite_copies(settings.checkpoint)


if __name__ == "__main__":
    run(main)
