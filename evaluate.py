"""Scores a checkpoint on exactly the test split that its training run held out.

    python evaluate.py                                # out/best.keras
    python evaluate.py --checkpoint=out/best.keras --split=val
    python evaluate.py --json > metrics.json          # the metrics for machines instead
    python evaluate.py --errors=errors.csv            # and every error: which file, what label
    python evaluate.py --suspects                     # the images likeliest labelled wrongly

The split is rebuilt from the run record beside the checkpoint (best.json next to best.keras):
same data, same seed, and checked against the record's fingerprint of it. Data or a split that
differs from what the model was trained on is refused. The last line printed is
`test accuracy: 0.XXXX (correct/total)`.
"""
import csv
import json
import os
import sys

import numpy as np

from common import UserError, atomic_path, configure, lazy_import, run
import calibration
import classes
import inference
import prepare_data

sklearn_metrics = lazy_import("sklearn.metrics")  # loaded on first use: a second to import

CHECKPOINT = "out/best.keras"  # a model written by train.py
DATA = ""                      # the data file, if it has moved ("": where the run record says)
PREPARED_DIR = "data"          # where prepared splits are cached
SPLIT = "test"                 # the split to score: test, or val
BATCH_SIZE = 1024              # images per inference batch
LABELS = "auto"                # class names: auto (by the data), none (numbers), or a file PATH
PLOTS = False                  # True: also write the confusion matrix, errors and curves as PNGs
JSON = False                   # True: print the metrics as one JSON object instead of the report
                               # (accuracy, top-2/3, look-alikes merged, per class, confusion matrix)
ERRORS = ""                    # a PATH.csv: also list there every error of the split, most
                               # confident first: its image (a folder's file, or the pickle's
                               # row), label, prediction and their probabilities
SUSPECTS = False               # True: instead, rank every image of the data (all splits) by how
                               # likely its label is, each judged by a model that never trained
                               # on it (cleanlab), into <checkpoint>-suspects.csv
FOLDS = 5                      # (--suspects) the training split is judged in this many parts,
                               # each by a run of the checkpoint's recipe without it
TOP_SUSPECTS = 20              # (--suspects) how many to print (--plots: to draw)
TOP_CONFUSIONS = 10            # how many of the most confused pairs to list
CONFIDENCES = "0.5,0.7,0.9,0.95"  # accuracy against coverage: the answers at or above each of
                                  # these confidences (predict.py's --min_confidence: "not sure")
LOOK_ALIKES = ("0O", "1I", "2Z", "5S")  # characters that only context tells apart: also scored
                                         # as one (by the class names)
_FIXED = ("LOOK_ALIKES",)
_RANGES = {"SPLIT": ("val", "test"), "BATCH_SIZE": "[1, inf)", "TOP_CONFUSIONS": "[0, inf)",
           "FOLDS": "[2, 20]", "TOP_SUSPECTS": "[0, inf)"}


def training_data(record, data="", prepared_dir=PREPARED_DIR):
    """prepare_data.prepare() of the data in the run record (or of the file `data`, which must
    be the same data: other data is refused), with the record's seed: the checkpoint's split,
    refused if it is not the one the checkpoint was trained on (its fingerprint in the record
    differs), as its test images could then be training images."""
    source = data or record["data"]["source"]
    prepared = prepare_data.prepare(source, record["data"]["seed"], prepared_dir, verbose=False)
    manifest = prepared["manifest"]
    if manifest["source_sha256"] != record["data"]["source_sha256"]:
        raise UserError(f"{source} is not the data this checkpoint was trained on (sha256 "
                        f"{manifest['source_sha256'][:12]}... vs "
                        f"{record['data']['source_sha256'][:12]}...): pass the original with "
                        f"--data=PATH")
    if manifest["split_sha256"] != record["data"].get("split_sha256"):
        why = ("its record predates split fingerprints" if "split_sha256" not in record["data"]
               else f"this split's sha256 is {manifest['split_sha256'][:12]}..., its record's "
                    f"{record['data']['split_sha256'][:12]}...")
        raise UserError(f"the split of {source} made now (seed {record['data']['seed']}) is not "
                        f"the one this checkpoint was trained on ({why}), so its test images "
                        f"could be training images: train it again with this version")
    return prepared


def load_split(record, split, data="", prepared_dir=PREPARED_DIR):
    """Images and labels of `split`, rebuilt from the data and seed in the run record (or
    from the file `data`, which must be the same data) and checked against it."""
    return split_of(training_data(record, data, prepared_dir), split)


def split_of(prepared, split):
    x, y = prepared[f"x_{split}"], prepared[f"y_{split}"]
    if len(y) == 0:
        raise UserError(f"the {split} split is empty: the dataset is too small to hold one out")
    return x, y


def image_names(prepared, split=None):
    """Where each image of the split (None: of all the data, in its order) is in the data: a
    folder's file (its path under the folder), or the row of a pickle or .npz (from 0)."""
    files = prepared["manifest"].get("files")
    rows = prepared[f"index_{split}"] if split else range(len(prepared["y"]))
    return [files[i] if files else f"row {i}" for i in rows]


def report_suspects(settings, record, prepared, names):
    """Ranks every image by how likely its given label is, judged by a model that never
    trained on it (suspects.py); writes them all as CSV, prints the first --top_suspects."""
    import suspects
    checkpoint = settings.checkpoint
    print(f"judging each image by a model that never trained on it: {checkpoint} the "
          f"validation and test images, {settings.folds} runs of its recipe the training split "
          f"(in {os.path.join(os.path.dirname(os.path.abspath(checkpoint)), 'suspects')}; "
          f"a stopped ranking resumes them)", flush=True)
    if record.get("settings", {}).get("INIT_RUN"):
        print(f"note: {checkpoint} started from {record['settings'].get('INIT_FROM')}: if that "
              f"model learnt from some of these images, it judges them less freely")
    probabilities = suspects.out_of_fold(checkpoint, record, prepared, settings.folds,
                                         settings.data, settings.prepared_dir,
                                         settings.batch_size)
    y = prepared["y"]
    order, scores, flagged = suspects.ranked(y, probabilities)
    preferred = probabilities.argmax(axis=1)
    images, splits = image_names(prepared), suspects.split_names(prepared)
    path = f"{os.path.splitext(checkpoint)[0]}-suspects.csv"
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "split", "label", "label_probability", "preferred",
                         "preferred_probability", "label_quality", "flagged"])
        for i in order:
            writer.writerow([images[i], splits[i], names[y[i]], f"{probabilities[i, y[i]]:.4f}",
                             names[preferred[i]], f"{probabilities[i, preferred[i]]:.4f}",
                             f"{scores[i]:.4f}", bool(flagged[i])])
    top = order[:settings.top_suspects]
    print(f"\nthe {len(top)} images whose labels are least likely (all {len(y)}, ranked: {path}; "
          f"cleanlab flags {int(flagged.sum())} as probably mislabelled):")
    for i in top:
        print(f"  {images[i]} ({splits[i]}): labelled {names[y[i]]} "
              f"({probabilities[i, y[i]]:.3f}), the models prefer {names[preferred[i]]} "
              f"({probabilities[i, preferred[i]]:.3f})")
    if settings.plots:
        import plots
        print("wrote " + plots.misclassified_png(
            prepared["x"][top], y[top], preferred[top], probabilities[top, preferred[top]],
            names, f"{os.path.splitext(checkpoint)[0]}-suspects.png"))


def write_errors(path, names, y, probabilities, class_names):
    """Every image the model gets wrong, as CSV, the most confident errors first (the likeliest
    to be labelled wrongly); returns how many."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label", "predicted", "confidence", "label_probability"])
        for i in wrong:
            writer.writerow([names[i], class_names[y[i]], class_names[predicted[i]],
                             f"{probabilities[i, predicted[i]]:.4f}",
                             f"{probabilities[i, y[i]]:.4f}"])
    return len(wrong)


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


def parse_confidences(text):
    try:
        values = [float(word) for word in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(0 <= value <= 1 for value in values):
        raise UserError(f"--confidences={text}: expected probabilities such as 0.5,0.9")
    return values


def confidence_report(y, probabilities, record, thresholds):
    """What --json keeps of the probabilities' honesty: the calibration error now and, for a
    model that train.py calibrated, before (its probabilities with the temperature undone),
    and the accuracy against coverage at each threshold."""
    fitted = record.get("calibration")
    report = {"ece": calibration.expected_calibration_error(probabilities, y),
              "temperature": fitted["temperature"] if fitted else None,
              "coverage": [{"min_confidence": threshold, "answered": answered,
                            "accuracy": accuracy}
                           for threshold, answered, accuracy in
                           calibration.coverage(probabilities, y, thresholds)]}
    if fitted:
        report["ece_before_calibration"] = calibration.expected_calibration_error(
            calibration.rescale(probabilities, 1 / fitted["temperature"]), y)
    return report


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


def confidence_lines(report, split):
    """The report's lines on how far the probabilities can be trusted."""
    if report["temperature"]:
        lines = [f"\ncalibration error, {split} split: {report['ece']:.2%} (before the "
                 f"temperature {report['temperature']:.3f} that train.py fitted on the "
                 f"validation split: {report['ece_before_calibration']:.2%})"]
    else:
        lines = [f"\ncalibration error, {split} split: {report['ece']:.2%} (not calibrated: "
                 f"train.py --calibrate=True fits a temperature)"]
    lines.append("answers at or above a confidence (below it: \"not sure\"):")
    for row in report["coverage"]:
        accuracy = "-" if row["answered"] == 0 else f"{row['accuracy']:.4f}"
        lines.append(f"  {row['min_confidence']:>5g}: {row['answered']:6.1%} answered, "
                     f"accuracy {accuracy}")
    return lines


def write_plots(checkpoint, split, record, x, y, probabilities, names, matrix, log=sys.stdout):
    """The confusion matrix, the errors and the training curves, as PNGs beside the
    checkpoint; their paths printed to `log`."""
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
    paths.append(plots.reliability_png(calibration.reliability(probabilities, y),
                                       f"{stem}-reliability-{split}.png",
                                       f"reliability on the {split} split"))
    if record.get("history"):
        paths.append(plots.training_curves_png(record["history"], record.get("best_epoch", 0),
                                               f"{stem}-curves.png"))
    for path in paths:
        print(f"wrote {path}", file=log)


def main(argv=None):
    settings = configure(globals(), positional="CHECKPOINT", argv=argv)
    thresholds = parse_confidences(settings.confidences)
    if settings.errors and (not settings.errors.endswith(".csv")
                            or os.path.isdir(settings.errors)):
        raise UserError(f"--errors={settings.errors}: give the name of a .csv file to write, "
                        f"such as errors.csv")
    if settings.suspects and (settings.errors or settings.json or settings.split != "test"):
        raise UserError("--suspects ranks the images of every split on its own: leave out "
                        "--errors, --json and --split")
    split, checkpoint = settings.split, settings.checkpoint
    record = inference.read_record(checkpoint)  # and the data before the model: at once
    names = classes.class_names(settings.labels, record["data"])
    prepared = training_data(record, settings.data, settings.prepared_dir)
    if settings.suspects:
        return report_suspects(settings, record, prepared, names)
    x, y = split_of(prepared, split)
    model = inference.load_network(checkpoint)
    inference.check_compatible(model, len(names))
    probabilities = inference.probabilities(model, x, settings.batch_size)
    scores = metrics(y, probabilities, classes.chosen_names(settings.labels, record["data"]),
                     names)
    scores["confidence"] = confidence_report(y, probabilities, record, thresholds)
    matrix = np.array(scores["confusion_matrix"])
    if settings.plots:  # (with --json, the paths go to stderr: stdout is the JSON alone)
        write_plots(checkpoint, split, record, x, y, probabilities, names, matrix,
                    sys.stderr if settings.json else sys.stdout)
    if settings.errors:  # (with --json, the line goes to stderr, as the plots' do)
        count = write_errors(settings.errors, image_names(prepared, split), y, probabilities,
                             names)
        print(f"wrote the {count} errors of the {split} split to {settings.errors}",
              file=sys.stderr if settings.json else sys.stdout)
    if settings.json:
        print(json.dumps({"checkpoint": checkpoint, "split": split,
                          "data": record["data"]["source"], "seed": record["data"]["seed"],
                          **scores}, indent=1))
        return
    predicted = probabilities.argmax(axis=1)
    present = sorted(set(y.tolist()) | set(predicted.tolist()))
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
    print("\n".join(confidence_lines(scores["confidence"], split)))
    correct = int(np.sum(predicted == y))
    print(f"{split} accuracy: {correct / len(y):.4f} ({correct}/{len(y)})")


if __name__ == "__main__":
    run(main)
