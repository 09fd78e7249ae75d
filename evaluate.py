"""Scores a checkpoint on exactly the test split that its training run held out.

    python evaluate.py                                # out/best.keras
    python evaluate.py --checkpoint=out/best.keras --split=val

The split is rebuilt from the run record beside the checkpoint (best.json next to best.keras):
same data, same seed. Data that differs from what the model was trained on is refused. The last
line printed is `test accuracy: 0.XXXX (correct/total)`.
"""
import functools
import json
import os

import numpy as np

from common import UserError, configure, lazy_import, quiet_native_stderr, run
import prepare_data

keras = lazy_import("keras")  # loaded on first use: --help and mistakes answer at once
tf = lazy_import("tensorflow")
sklearn_metrics = lazy_import("sklearn.metrics")  # likewise: a second to import

CHECKPOINT = "out/best.keras"  # a model written by train.py
DATA = ""                      # the data file, if it has moved ("": where the run record says)
PREPARED_DIR = "data"          # where prepared splits are cached
SPLIT = "test"                 # the split to score: test, or val
BATCH_SIZE = 1024              # images per inference batch
LABELS = "auto"                # class names: auto (by the data), none (numbers), or a file PATH
PLOTS = False                  # True: also write the confusion matrix, errors and curves as PNGs
TOP_CONFUSIONS = 10            # how many of the most confused pairs to list


def record_path(checkpoint):
    return os.path.splitext(checkpoint)[0] + ".json"


def load_checkpoint(path):
    """(model, run record) with clear errors for a missing, foreign or damaged checkpoint."""
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


def read_record(path):
    """The run record of checkpoint `path` (best.json beside best.keras), read before the
    model so that a missing file answers at once."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path} (train one with python train.py, "
                        f"or pass --checkpoint=PATH to a .keras file it wrote)")
    try:
        with open(record_path(path)) as f:
            record = json.load(f)
        record["data"]["source"], record["data"]["source_sha256"], record["data"]["seed"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} has no readable run record at {record_path(path)}: evaluate "
                        f"a best.keras written by train.py, with its best.json beside it") from None
    return record


def load_split(record, split, data="", prepared_dir=PREPARED_DIR):
    """Images and labels of `split`, rebuilt from the data and seed in the run record (or
    from the file `data`, which must be the same data)."""
    if split not in ("val", "test"):
        raise UserError(f"--split={split}: choose val or test")
    source = data or record["data"]["source"]
    data = prepare_data.prepare(source, record["data"]["seed"], prepared_dir, verbose=False)
    if data["manifest"]["source_sha256"] != record["data"]["source_sha256"]:
        raise UserError(f"{source} is not the data this checkpoint was trained on (sha256 "
                        f"{data['manifest']['source_sha256'][:12]}... vs "
                        f"{record['data']['source_sha256'][:12]}...): pass the original with "
                        f"--data=PATH")
    x, y = data[f"x_{split}"], data[f"y_{split}"]
    if len(y) == 0:
        raise UserError(f"the {split} split is empty: the dataset is too small to hold one out")
    return x, y


def check_compatible(model, num_classes):
    expected = (None, prepare_data.SIDE, prepare_data.SIDE, 1)
    if tuple(model.input_shape) != expected or model.output_shape[-1] != num_classes:
        raise UserError(f"the checkpoint takes {model.input_shape} and predicts "
                        f"{model.output_shape[-1]} classes, but the data has {expected} images "
                        f"and {num_classes} classes: it belongs to another project or dataset")


@functools.lru_cache(maxsize=8)
def _inference(model):
    """The model's forward pass as one traced graph taking uint8 batches of any size: about a
    third faster than model.predict, which adds a data pipeline and callbacks per call."""
    side = prepare_data.SIDE
    return tf.function(lambda images: model(tf.cast(images, tf.float32), training=False),
                       input_signature=[tf.TensorSpec([None, side, side, 1], tf.uint8)])


def check_batch_size(batch_size):
    if batch_size < 1:
        raise UserError(f"--batch_size={batch_size}: it must be at least 1")


def predict_probabilities(model, x, batch_size=BATCH_SIZE):
    """Class probabilities for N x 3136 binary images (uint8), in batches of `batch_size`."""
    check_batch_size(batch_size)
    images = np.asarray(x, np.uint8).reshape(-1, prepare_data.SIDE, prepare_data.SIDE, 1)
    forward = _inference(model)
    return np.concatenate([forward(images[i:i + batch_size]).numpy()
                           for i in range(0, max(len(images), 1), batch_size)])


def confused_pairs(matrix, names, top):
    """Lines for the `top` largest off-diagonal cells: true -> predicted, count, share."""
    off_diagonal = matrix * (1 - np.eye(len(matrix), dtype=matrix.dtype))
    order = np.argsort(off_diagonal, axis=None)[::-1][:top]
    lines = []
    for true, predicted in zip(*np.unravel_index(order, matrix.shape)):
        count = off_diagonal[true, predicted]
        if count:
            lines.append(f"  {names[true]:>6} -> {names[predicted]:<6} {count:5d}   "
                         f"{count / matrix[true].sum():6.1%} of {names[true]}")
    return lines or ["  none: every image is classified correctly"]


def write_plots(checkpoint, split, record, x, y, probabilities, names, matrix):
    """The confusion matrix, the errors and the training curves, as PNGs beside the
    checkpoint."""
    import plots
    stem = os.path.splitext(checkpoint)[0]
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])]  # most confident first
    paths = [
        plots.confusion_matrix_png(matrix, names, f"{stem}-confusion-{split}.png",
                                   f"confusion on the {split} split (% of each true class)"),
        plots.misclassified_png(x[wrong], y[wrong], predicted[wrong],
                                probabilities[wrong, predicted[wrong]], names,
                                f"{stem}-errors-{split}.png"),
    ]
    if record.get("history"):
        paths.append(plots.training_curves_png(record["history"], record.get("best_epoch", 0),
                                               f"{stem}-curves.png"))
    for path in paths:
        print(f"wrote {path}")


def main(argv=None):
    settings = configure(globals(), positional="CHECKPOINT", argv=argv)
    split, checkpoint = settings.split, settings.checkpoint
    check_batch_size(settings.batch_size)
    record = read_record(checkpoint)  # and the data, before the model: mistakes answer at once
    names = prepare_data.class_names(settings.labels, record["data"]["source"])
    x, y = load_split(record, split, settings.data, settings.prepared_dir)
    model = load_network(checkpoint)
    check_compatible(model, prepare_data.NUM_CLASSES)
    probabilities = predict_probabilities(model, x, settings.batch_size)
    predicted = probabilities.argmax(axis=1)
    present = sorted(set(y.tolist()) | set(predicted.tolist()))
    matrix = sklearn_metrics.confusion_matrix(y, predicted,
                                              labels=range(prepare_data.NUM_CLASSES))
    print(f"checkpoint {checkpoint}: epoch {record.get('best_epoch')}, "
          f"val_accuracy {record.get('val_accuracy', float('nan')):.4f}; "
          f"data {record['data']['source']} (seed {record['data']['seed']})")
    print(f"\nper-class report, {split} split:")
    print(sklearn_metrics.classification_report(
        y, predicted, labels=present, digits=3, zero_division=0,
        target_names=[names[label] for label in present]))
    print(f"most confused pairs, {split} split (true -> predicted, count, share of the class):")
    print("\n".join(confused_pairs(matrix, names, settings.top_confusions)))
    if settings.plots:
        write_plots(checkpoint, split, record, x, y, probabilities, names, matrix)
    correct = int(np.sum(predicted == y))
    print(f"{split} accuracy: {correct / len(y):.4f} ({correct}/{len(y)})")


if __name__ == "__main__":
    run(main)
