"""evaluate.py --suspects: the images whose given label is least likely, each judged by a model
that never trained on it. Validation and test images are judged by the checkpoint; the training
split by k-fold: --folds more runs of the checkpoint's recipe, each trained without one part of
it (beside the checkpoint, in suspects/<its run>-<folds>-folds/fold-K: a killed ranking
resumes them). The ranking itself is cleanlab's (confident learning): its label quality score,
and which images it flags.
"""
import dataclasses
import os

import numpy as np

from common import UserError, lazy_import
import inference
import run_state

cleanlab_filter = lazy_import("cleanlab.filter")  # loaded on first use
cleanlab_rank = lazy_import("cleanlab.rank")

SPLITS = ("train", "val", "test")


def fold_of(labels, folds, seed):
    """Each training image's fold, 0..folds-1: every class dealt out evenly, in a seeded order."""
    rng = np.random.default_rng([seed, folds])
    fold = np.empty(len(labels), np.int64)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        fold[rows] = np.arange(len(rows)) % folds
    return fold


def fold_settings(record, folder, data, prepared_dir):
    """The checkpoint's recipe for a fold's run: its settings as recorded, learning from the
    labels alone (a teacher or a starting model may have seen the fold's images), quiet."""
    import train
    known = dataclasses.asdict(train.defaults())
    recorded = {key.lower(): value for key, value in record["settings"].items()
                if key.lower() in known}
    return train.defaults(**{**recorded, "data": data or record["data"]["source"],
                             "prepared_dir": prepared_dir, "out_dir": folder, "teacher": "",
                             "init_from": "", "freeze_epochs": 0, "settings": "",
                             "distribute": "off", "verbose": 0, "tensorboard": False})


def out_of_fold(checkpoint, record, prepared, folds, data="", prepared_dir="data",
                batch_size=1024, log=print):
    """Each image's class probabilities (N x classes, in the data's order) from a model that
    never trained on it."""
    import train
    y = prepared["y"]
    model = inference.load_network(checkpoint)
    probabilities = np.zeros((len(y), model.output_shape[-1]), np.float32)
    for split in ("val", "test"):
        probabilities[prepared[f"index_{split}"]] = inference.probabilities(
            model, prepared[f"x_{split}"], batch_size)
    fold = fold_of(prepared["y_train"], folds, record["data"]["seed"])
    for k in range(folds):
        # keyed by the checkpoint's run: a model retrained there gets folds of its own recipe
        folder = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "suspects",
                              f"{record.get('run_id', 'run')}-{folds}-folds", f"fold-{k + 1}")
        log(f"fold {k + 1} of {folds}: {np.sum(fold == k)} training images, judged by a run "
            f"without them ({folder})")
        held_out = np.flatnonzero(fold == k)
        kept = run_state.read_json(os.path.join(folder, "best.json")) or {}
        finished = not os.path.exists(os.path.join(folder, "resume"))
        if not (finished and kept.get("settings", {}).get("HELD_OUT") == train.held_out_id(
                held_out)):  # (a ranking run again uses the folds it finished)
            train.run_training(fold_settings(record, folder, data, prepared_dir),
                               held_out=held_out)
            kept = run_state.read_json(os.path.join(folder, "best.json")) or {}
        if kept.get("settings", {}).get("HELD_OUT") != train.held_out_id(held_out):
            raise UserError(f"{folder} keeps a model that trained on other images than this "
                            f"fold's (an earlier ranking's): remove that folder and run again")
        fold_model = inference.load_network(os.path.join(folder, "best.keras"))
        probabilities[prepared["index_train"][held_out]] = inference.probabilities(
            fold_model, prepared["x_train"][held_out], batch_size)
    return probabilities


def ranked(labels, probabilities):
    """(rows from the least likely label up, each row's label quality score (0..1, cleanlab's
    self-confidence), whether confident learning flags the row as mislabelled)."""
    scores = cleanlab_rank.get_label_quality_scores(labels, probabilities)
    flagged = cleanlab_filter.find_label_issues(labels, probabilities)
    return np.argsort(scores, kind="stable"), scores, flagged


def split_names(prepared):
    """Each image's split, in the data's order."""
    names = np.empty(len(prepared["y"]), object)
    for split in SPLITS:
        names[prepared[f"index_{split}"]] = split
    return names
