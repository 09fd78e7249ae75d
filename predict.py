"""Classifies your own images with a trained checkpoint.

    python predict.py --checkpoint=out/best.keras scan1.png photo.jpg more.npy
    python predict.py img.png --json=True          # one JSON object per line

Takes image files of any size (PNG, JPEG, ...: photos, scans, canvas exports with a
transparent background), turned into the training format: white strokes on black, the character
cropped to its ink, scaled to fill a 56x56 frame and made binary. Also .npy or pickle arrays of
N x 3136 binary pixels. Prints the top 3 characters with their probabilities for each image.

From Python: `from predict import predict; labels = predict(images)` (images N x 3136 or
N x 56 x 56, 0/1 or 0/255); the model is loaded once and kept.
"""
import functools
import json
import math
import os

import numpy as np

from common import UserError, configure, lazy_import, run
import evaluate
import prepare_data

tf = lazy_import("tensorflow")  # loaded on first use: --help and mistakes answer at once

CHECKPOINT = "out/best.keras"  # a model written by train.py
LABELS = "auto"                # class names: auto (by the checkpoint's data), none, or a PATH
TOP = 3                        # how many best guesses to print per image
JSON = False                   # True: one JSON object per line instead of text
MIN_STROKE = 0.0               # image files: strokes thinner than this many pixels at 56x56
                               # are widened first (a big photo's thin pen lines would vanish);
                               # 0: as wide as the strokes of the thinnest tenth of the
                               # checkpoint's training images (recorded in best.json)
SPECK_SHARE = 0.01             # image files: ink blobs under this share of all the ink are
                               # specks, left out of the framing
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
STROKE_IF_UNKNOWN = 3.0        # --min_stroke=0 for a checkpoint that recorded no stroke width
_FIXED = ("STROKE_IF_UNKNOWN",)  # a fallback for older checkpoints, not a choice


@functools.lru_cache(maxsize=4)
def load_model(checkpoint=CHECKPOINT):
    """The model and its run record, loaded once per checkpoint."""
    return evaluate.load_checkpoint(checkpoint)


def ink_of(image):
    """A PIL image -> (H x W floats 0..1, strokes bright). Handles what people have: EXIF-
    rotated phone photos, dark-on-light scans and photos, and transparent PNGs (a canvas
    export: strokes of any colour on a transparent background, where the alpha is the ink)."""
    from PIL import ImageOps
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"))[..., 3].astype(np.float64)
        if alpha.min() < 128 <= alpha.max():  # see-through background, opaque strokes
            return alpha / 255
    gray = np.asarray(image.convert("L"), np.float64)
    if np.median(gray) > (gray.min() + gray.max()) / 2:
        gray = 255 - gray  # most pixels are light: a light background, dark strokes
    background, high = np.median(gray), gray.max()
    return np.clip((gray - background) / max(high - background, 1), 0, 1)


def pen_width(record=None, min_stroke=MIN_STROKE):
    """How wide (pixels at 56x56) strokes of image files are made at least, for a checkpoint
    with this run record: `min_stroke`, or when 0 how thin the strokes of its training images
    get (the 10th percentile of their widths, which train.py records)."""
    recorded = record["data"].get("stroke_width") if record else None
    return min_stroke or recorded or STROKE_IF_UNKNOWN


def to_training_format(ink, min_stroke=None, speck_share=SPECK_SHARE):
    """Ink (H x W, 0..1, strokes bright) -> 3136 binary pixels framed like the training data:
    specks (blobs under `speck_share` of the ink) dropped, strokes that would come out thinner
    than `min_stroke` pixels (default: pen_width() with no checkpoint) widened, the character
    cropped to its ink, scaled to fill the 56x56 frame and binarised (the same framing as the
    embedded default). A 56x56 two-valued image is taken exactly as it is."""
    from scipy import ndimage
    ink = np.asarray(ink, np.float64)
    side = prepare_data.SIDE
    if ink.shape == (side, side) and len(np.unique(ink)) <= 2:
        bright = ink > (ink.min() + ink.max()) / 2
        # background is the majority; strokes are the minority colour
        return (bright if bright.mean() <= 0.5 else ~bright).astype(np.uint8).ravel()
    mask = ink > 0.5
    blobs, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count:
        sizes = np.bincount(blobs.ravel())[1:]
        mask = np.isin(blobs, 1 + np.flatnonzero(sizes >= speck_share * sizes.sum()))
    if not mask.any():
        return np.zeros(side * side, np.uint8)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    scale = (side - 1) / max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    width = prepare_data.stroke_width_of(mask)
    grow = math.ceil(((min_stroke or pen_width()) / scale - width) / 2)  # pixels on each side
    if grow > 0:
        mask = ndimage.binary_dilation(mask, np.ones((3, 3)), iterations=grow)
    return prepare_data.frame_character(mask.astype(np.float64)).ravel()


def read_inputs(paths, min_stroke=None, speck_share=SPECK_SHARE):
    """(names, N x 3136 uint8) from image files (framed by to_training_format with these
    settings) and array files."""
    from PIL import Image, UnidentifiedImageError
    names, rows = [], []
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(f"input not found: {path}")
        if path.lower().endswith(IMAGE_SUFFIXES):
            try:
                with Image.open(path) as image:
                    rows.append(to_training_format(ink_of(image), min_stroke, speck_share))
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
    if images.ndim == 3 and images.shape[1:] == (prepare_data.SIDE, prepare_data.SIDE):
        images = images.reshape(len(images), -1)
    x, _ = prepare_data.validate(images, np.zeros(len(images), np.int64), where)
    return x


def predict_probabilities(images, checkpoint=CHECKPOINT):
    model, _ = load_model(checkpoint)
    return evaluate.predict_probabilities(model, as_model_input(images))


def predict(images, checkpoint=CHECKPOINT):
    """Labels (ints 0..35) for binary images, N x 3136 or N x 56 x 56 (0/1, bool or 0/255).
    Raises UserError for anything else (greyscale, other shapes), naming the problem."""
    return predict_probabilities(images, checkpoint).argmax(axis=1)


def main(argv=None):
    settings, paths = configure(globals(), positional="*", argv=argv)
    record = evaluate.read_record(settings.checkpoint)  # the model loads once inputs are read
    names_in, images = read_inputs(paths, pen_width(record, settings.min_stroke),
                                   settings.speck_share)
    class_names = prepare_data.class_names(settings.labels, record["data"]["source"])
    probabilities = predict_probabilities(images, settings.checkpoint)
    for name, row in zip(names_in, probabilities):
        best = np.argsort(row)[::-1][:settings.top]
        if settings.json:
            print(json.dumps({"input": name, "label": int(best[0]),
                              "top": [{"label": int(label), "name": class_names[label],
                                       "probability": round(float(row[label]), 4)}
                                      for label in best]}))
        else:
            guesses = "  ".join(f"{class_names[label]} {row[label]:.3f}" for label in best)
            print(f"{name}: {guesses}")


if __name__ == "__main__":
    run(main)
