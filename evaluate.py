"""Scores a checkpoint on exactly the test split that its training run held out.

    python evaluate.py                                # out/best.keras
    python evaluate.py --checkpoint=out/best.keras --split=val
    python evaluate.py --json=metrics.json             # the metrics for machines, too

The split is rebuilt from the run record beside the checkpoint (best.json next to best.keras):
same data, same seed. Data that differs from what the model was trained on is refused. The last
line printed is `test accuracy: 0.XXXX (correct/total)`.
"""
import functools
import json
import os
import sys

import numpy as np

from common import UserError, configure, lazy_import, quiet_native_stderr, run, \
    write_text_atomic
import prepare_data
import run_state

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
JSON = ""                      # a PATH.json: also write the metrics there for machines (accuracy,
                               # top-2/3, look-alikes merged, per class, confusion matrix)
TOP_CONFUSIONS = 10            # how many of the most confused pairs to list
LOOK_ALIKES = ("0O", "1I", "2Z", "5S")  # characters that only context tells apart: also scored
                                         # as one (by the class names)
_FIXED = ("LOOK_ALIKES",)


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
    """The run record of checkpoint `path`: best.json beside best.keras, or, for a model file
    on its own, the record's data that train.py put inside it (saying so in one line). Read
    before the model, so that a missing file answers at once."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path} (train one with python train.py, "
                        f"or pass --checkpoint=PATH to a .keras file it wrote)")
    try:
        with open(record_path(path)) as f:
            record = json.load(f)
        record["data"]["source"], record["data"]["source_sha256"], record["data"]["seed"]
        return record
    except (OSError, ValueError, KeyError, TypeError):
        record = run_state.attached_to_model_file(path)
    if record is None:
        raise UserError(f"{path} has no readable run record at {record_path(path)}, nor one "
                        f"inside it: use a best.keras written by train.py")
    print(f"note: no readable {record_path(path)}: using the class names, stroke width and "
          f"data fingerprint stored inside {path}", file=sys.stderr)
    return record


def training_data(record, data="", prepared_dir=PREPARED_DIR):
    """prepare_data.prepare() of the data in the run record (or of the file `data`, which must
    be the same data: other data is refused), with the record's seed: the checkpoint's split."""
    source = data or record["data"]["source"]
    prepared = prepare_data.prepare(source, record["data"]["seed"], prepared_dir, verbose=False)
    if prepared["manifest"]["source_sha256"] != record["data"]["source_sha256"]:
        raise UserError(f"{source} is not the data this checkpoint was trained on (sha256 "
                        f"{prepared['manifest']['source_sha256'][:12]}... vs "
                        f"{record['data']['source_sha256'][:12]}...): pass the original with "
                        f"--data=PATH")
    return prepared


def load_split(record, split, data="", prepared_dir=PREPARED_DIR):
    """Images and labels of `split`, rebuilt from the data and seed in the run record (or
    from the file `data`, which must be the same data)."""
    if split not in ("val", "test"):
        raise UserError(f"--split={split}: choose val or test")
    data = training_data(record, data, prepared_dir)
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


def look_alike_groups(raw_names):
    """Each label's group: the smallest label of its look-alike pair (by the class names) or
    itself, and the pairs found ("0/O", ...)."""
    group = np.arange(len(raw_names))
    found = []
    for pair in LOOK_ALIKES:
        members = [label for label, name in enumerate(raw_names) if name in tuple(pair)]
        if len({raw_names[label] for label in members}) == 2:  # both characters are classes
            group[members] = min(members)
            found.append("/".join(pair))
    return group, found


def metrics(y, probabilities, raw_names, names):
    """What --json writes: accuracies (top-1, -2, -3, look-alikes merged), per-class
    precision, recall, F1 and support, and the confusion matrix (rows true, columns
    predicted)."""
    predicted = probabilities.argmax(axis=1)
    ranked = np.argsort(-probabilities, axis=1)
    group, pairs = look_alike_groups(raw_names)
    labels = range(len(names))
    precision, recall, f1, support = sklearn_metrics.precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0)
    return {
        "images": int(len(y)),
        "accuracy": float(np.mean(predicted == y)),
        "top2_accuracy": float(np.mean(np.any(ranked[:, :2] == y[:, None], axis=1))),
        "top3_accuracy": float(np.mean(np.any(ranked[:, :3] == y[:, None], axis=1))),
        "look_alikes_merged_accuracy": float(np.mean(group[predicted] == group[y])),
        "look_alike_pairs": pairs,
        "classes": [{"label": label, "name": names[label], "precision": float(precision[label]),
                     "recall": float(recall[label]), "f1": float(f1[label]),
                     "support": int(support[label])} for label in labels],
        "confusion_matrix": sklearn_metrics.confusion_matrix(y, predicted,
                                                             labels=labels).tolist(),
    }


def check_json_path(path):
    if path and (os.path.isdir(path) or not path.endswith(".json")):
        raise UserError(f"--json={path}: give the path of a .json file to write")


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
    check_json_path(settings.json)
    record = read_record(checkpoint)  # and the data, before the model: mistakes answer at once
    names = prepare_data.class_names(settings.labels, record["data"])
    x, y = load_split(record, split, settings.data, settings.prepared_dir)
    model = load_network(checkpoint)
    check_compatible(model, len(names))
    probabilities = predict_probabilities(model, x, settings.batch_size)
    predicted = probabilities.argmax(axis=1)
    present = sorted(set(y.tolist()) | set(predicted.tolist()))
    scores = metrics(y, probabilities, prepare_data.chosen_names(settings.labels, record["data"]),
                     names)
    matrix = np.array(scores["confusion_matrix"])
    trained = (f"epoch {record['best_epoch']}, val_accuracy {record['val_accuracy']:.4f}"
               if "best_epoch" in record else "no run record beside it")
    print(f"checkpoint {checkpoint}: {trained}; data {record['data']['source']} "
          f"(seed {record['data']['seed']})")
    print(f"\nper-class report, {split} split:")
    print(sklearn_metrics.classification_report(
        y, predicted, labels=present, digits=3, zero_division=0,
        target_names=[names[label] for label in present]))
    if scores["look_alike_pairs"]:
        print(f"{split} accuracy with the look-alikes merged "
              f"({', '.join(scores['look_alike_pairs'])}): "
              f"{scores['look_alikes_merged_accuracy']:.4f}\n")
    print(f"most confused pairs, {split} split (true -> predicted, count, share of the class):")
    print("\n".join(confused_pairs(matrix, names, settings.top_confusions)))
    if settings.plots:
        write_plots(checkpoint, split, record, x, y, probabilities, names, matrix)
    if settings.json:
        write_text_atomic(settings.json, json.dumps(
            {"checkpoint": checkpoint, "split": split, "data": record["data"]["source"],
             "seed": record["data"]["seed"], **scores}, indent=1) + "\n")
        print(f"wrote {settings.json}")
    correct = int(np.sum(predicted == y))
    print(f"{split} accuracy: {correct / len(y):.4f} ({correct}/{len(y)})")


if __name__ == "__main__":
    run(main)
