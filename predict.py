"""Classifies your own images with a trained checkpoint.

    python predict.py --checkpoint=out/best.keras scan1.png photo.jpg more.npy
    python predict.py img.png --json=True          # one JSON object per line

Takes PNG/JPEG files of any size (turned into the training format: white strokes on black,
the character cropped to its ink, scaled to fill a 56x56 frame and made binary; a dark-on-light
scan is detected and inverted) and .npy or pickle arrays of N x 3136 binary pixels. Prints the
top 3 characters with their probabilities for each image.

From Python: `from predict import predict; labels = predict(images)` (images N x 3136 or
N x 56 x 56, binary); the model is loaded once and kept.
"""
import functools
import json
import os

import numpy as np

from common import UserError, configure, quiet_native_stderr, run
with quiet_native_stderr():  # TensorFlow's C++ start-up lines, shown only if it fails
    import tensorflow as tf
    tf.config.list_logical_devices()
import evaluate  # noqa: E402
import prepare_data  # noqa: E402

CHECKPOINT = "out/best.keras"  # a model written by train.py
LABELS = "auto"                # class names: auto (by the checkpoint's data), none, or a PATH
TOP = 3                        # how many best guesses to print per image
JSON = False                   # one JSON object per line instead of text
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@functools.lru_cache(maxsize=4)
def load_model(checkpoint=CHECKPOINT):
    """The model and its run record, loaded once per checkpoint."""
    return evaluate.load_checkpoint(checkpoint)


def to_training_format(gray):
    """A grayscale image (H x W, 0..255) -> 3136 binary pixels framed like the training data.
    An image already in that format (56x56, two values) is taken exactly as it is."""
    gray = np.asarray(gray, np.float64)
    if gray.shape == (prepare_data.SIDE, prepare_data.SIDE) and len(np.unique(gray)) <= 2:
        bright = gray > (gray.min() + gray.max()) / 2
        # background is the majority; strokes are the minority colour
        pixels = bright if bright.mean() <= 0.5 else ~bright
        return pixels.astype(np.uint8).ravel()
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if border.mean() > gray.mean():  # light background: a dark-on-light scan
        gray = 255 - gray
    low, high = np.percentile(gray, 1), gray.max()
    strokes = np.clip((gray - low) / max(high - low, 1), 0, 1)
    return prepare_data.frame_character(strokes).ravel()


def read_inputs(paths):
    """(names, N x 3136 uint8) from image files and array files."""
    from PIL import Image, UnidentifiedImageError
    names, rows = [], []
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(f"input not found: {path}")
        if path.lower().endswith(IMAGE_SUFFIXES):
            try:
                with Image.open(path) as image:
                    rows.append(to_training_format(np.asarray(image.convert("L"))))
            except (UnidentifiedImageError, OSError) as error:
                raise UserError(f"{path} is not a readable image ({error})") from None
            names.append(path)
            continue
        with open(path, "rb") as f:
            raw = f.read()
        if path.endswith(".npy"):
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as error:
                raise UserError(f"{path} is not a readable .npy array ({error})") from None
        else:  # a pickle: loaded with the same code-refusing unpickler as the training data
            array = prepare_data.load_pickle_object(raw, path)
            if isinstance(array, (tuple, list)) and len(array) == 2:
                array = array[0]  # a (train_x, train_y) pair: classify its images
        array = np.asarray(array)
        x, _ = prepare_data.validate(array.reshape(len(array), -1) if array.ndim == 3 else array,
                                     np.zeros(len(array), np.int64), path)
        rows.extend(x)
        names.extend(f"{path}[{i}]" for i in range(len(x)))
    if not rows:
        raise UserError("no images given: python predict.py --checkpoint=PATH IMAGE_OR_ARRAY...")
    return names, np.stack(rows).astype(np.uint8)


def predict_probabilities(images, checkpoint=CHECKPOINT):
    model, _ = load_model(checkpoint)
    images = np.asarray(images).reshape(len(images), -1)
    return evaluate.predict_probabilities(model, images)


def predict(images, checkpoint=CHECKPOINT):
    """Labels (ints 0..35) for binary images, N x 3136 or N x 56 x 56."""
    return predict_probabilities(images, checkpoint).argmax(axis=1)


def main():
    paths = configure(globals())
    names_in, images = read_inputs(paths)
    _, record = load_model(CHECKPOINT)
    class_names = prepare_data.class_names(LABELS, record["data"]["source"])
    probabilities = predict_probabilities(images, CHECKPOINT)
    for name, row in zip(names_in, probabilities):
        best = np.argsort(row)[::-1][:TOP]
        if JSON:
            print(json.dumps({"input": name, "label": int(best[0]),
                              "top": [{"label": int(label), "name": class_names[label],
                                       "probability": round(float(row[label]), 4)}
                                      for label in best]}))
        else:
            guesses = "  ".join(f"{class_names[label]} {row[label]:.3f}" for label in best)
            print(f"{name}: {guesses}")


if __name__ == "__main__":
    run(main)
