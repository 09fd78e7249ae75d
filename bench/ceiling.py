"""How much accuracy is left on a dataset: several trained models of one split, compared.

    python bench/ceiling.py out-a out-b out-c       # run directories (or best.keras) from train.py
    python bench/ceiling.py 'bench/runs/levers/runs/*' --data=../shared/data/letters26-dev.npz
           --data_seed=1 --prepared_dir=bench/runs/levers/data     # (one line) the lever runs

Give it models trained on the same data with the same seed (so the same split), e.g. one run
per setting from bench/levers.py. On the validation split it reports, per model, its accuracy
and its accuracy when each image's prediction is averaged over the image and its copies
shifted by SHIFT pixels in four directions (test-time shifts); then the accuracy of all the
models averaged (an ensemble), the errors that every model makes (no average of these models
can fix them) and the most confused pairs among those. Over the whole dataset it counts images
that are pixel for pixel identical to an image of another class: whichever label a classifier
gives such an image, one of them is wrong, so no classifier can reach 100%.

If the ensemble barely beats its best member and most errors are shared, more of the same
recipe will not move the accuracy: the remaining errors lie in the data (ambiguous images),
or need a different kind of model.
"""
import collections
import glob
import hashlib
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
_FIXED = ("ROOT",)  # not a setting: where the repo is
from common import UserError, configure, lazy_import, run, write_text_atomic  # noqa: E402
import classes  # noqa: E402
import data_format  # noqa: E402
import evaluate  # noqa: E402  (rebuilds checkpoints' splits)
import inference  # noqa: E402  (loads checkpoints)
import prepare_data  # noqa: E402

sklearn_metrics = lazy_import("sklearn.metrics")  # loaded on first use: --help answers at once

DATA = ""                   # a .pkl/.npz: use only the runs trained on this data; "": all
DATA_SEED = 0               # >0: use only the runs trained with this seed (split); 0: all
SPLIT = "val"               # val to study; test only for a final check
SHIFT = 1                   # test-time shifts: this many pixels left, right, up and down
LABELS = "auto"             # class names: auto, none (numbers) or a PATH (as evaluate.py)
TOP_CONFUSIONS = 10         # how many of the shared errors' most confused pairs to list
PREPARED_DIR = "data"       # cache of prepared splits
OUTPUT = ""                 # also write the Markdown report here


def checkpoints(paths):
    """best.keras paths from run directories or checkpoint files (shell globs allowed)."""
    found = []
    for pattern in paths:
        for path in sorted(glob.glob(pattern)) or [pattern]:
            checkpoint = os.path.join(path, "best.keras") if os.path.isdir(path) else path
            if not os.path.exists(path):
                raise UserError(f"{path}: no such run directory or checkpoint (pass the "
                                f"--out_dir of train.py runs, or their best.keras files)")
            if os.path.isdir(path) and not os.path.isfile(checkpoint):
                continue  # a directory that holds no run (e.g. a cache beside the runs)
            found.append(checkpoint)
    if not found:
        raise UserError("no checkpoints given: pass run directories (or best.keras files) "
                        "written by train.py, e.g. python bench/ceiling.py out-a out-b")
    return found


def shifted(images, rows, cols):
    """N x H x W images moved by (rows, cols) pixels, with empty (0) pixels shifted in."""
    out = np.zeros_like(images)
    height, width = images.shape[1:3]
    out[:, max(rows, 0):height + min(rows, 0), max(cols, 0):width + min(cols, 0)] = \
        images[:, max(-rows, 0):height + min(-rows, 0), max(-cols, 0):width + min(-cols, 0)]
    return out


def shift_averaged(model, x, shift):
    """Class probabilities averaged over each image and its four copies shifted by `shift`."""
    squares = x.reshape(-1, data_format.SIDE, data_format.SIDE)
    moves = [(0, 0), (shift, 0), (-shift, 0), (0, shift), (0, -shift)]
    return np.mean([inference.probabilities(model, shifted(squares, r, c))
                    for r, c in moves], axis=0)


def identical_conflicts(x, y):
    """Images whose exact pixels also occur with another label: the fewest errors any
    classifier must make on them (each group of identical images counted as its majority)."""
    groups = collections.defaultdict(collections.Counter)
    for pixels, label in zip(map(bytes, np.packbits(x, axis=1)), y.tolist()):
        groups[pixels][label] += 1
    return sum(sum(labels.values()) - max(labels.values()) for labels in groups.values())


def load_models(paths, data="", data_seed=0):
    """[(checkpoint, model, run record)] of one split, of the runs trained on `data` (a file;
    "": any) with `data_seed` (0: any); refuses models of different splits (by their records,
    before any model is loaded)."""
    chosen, wanted = [], None
    if data:
        try:
            with open(data, "rb") as f:
                wanted = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            raise UserError(f"--data={data}: file not found (pass the data the runs trained "
                            f"on, or leave --data empty)") from None
    for path in paths:
        record = inference.read_record(path)
        if (data_seed and record["data"]["seed"] != data_seed) or \
                (wanted and record["data"]["source_sha256"] != wanted):
            continue
        first = chosen[0][1]["data"] if chosen else record["data"]
        if (record["data"]["source_sha256"], record["data"]["seed"]) != \
                (first["source_sha256"], first["seed"]):
            raise UserError(f"{path} was trained on other data or another seed than "
                            f"{chosen[0][0]}: compare runs of one split (--data=PATH and "
                            f"--data_seed=N pick them)")
        chosen.append((path, record))
    if len(chosen) < 2:
        raise UserError(f"{len(chosen)} checkpoint(s) of one split: an ensemble needs at least 2")
    return [(path, inference.load_network(path), record) for path, record in chosen]


def differing_settings(records):
    """For each run, its values of the settings that differ between the runs."""
    import train  # only for the names of settings that do not change what is computed
    ignored = train.RESUMABLE_CHANGES | {"SEED"}
    keys = sorted({key for record in records for key in record["settings"]} - ignored)
    varying = [key for key in keys
               if len({repr(r["settings"].get(key)) for r in records}) > 1]
    return [" ".join(f"--{key.lower()}={r['settings'].get(key)}" for key in varying) or "-"
            for r in records]


def confusions(y, predicted, among, num_classes=data_format.NUM_CLASSES):
    """A confusion matrix whose off-diagonal cells count only the images in `among` (the
    others count as correct, so that each row still sums to the class's size)."""
    return sklearn_metrics.confusion_matrix(y, np.where(among, predicted, y),
                                            labels=range(num_classes))


def report(paths, settings):
    models = load_models(paths, settings.data, settings.data_seed)
    record = models[0][2]
    split, shift = settings.split, settings.shift
    names = classes.class_names(settings.labels, record["data"])
    x, y = evaluate.load_split(record, split, prepared_dir=settings.prepared_dir)
    rows, probabilities, wrong_in_all = [], [], np.ones(len(y), bool)
    for (path, model, _), differing in zip(models, differing_settings([m[2] for m in models])):
        inference.check_compatible(model, len(names))
        plain = inference.probabilities(model, x)
        shifts = shift_averaged(model, x, shift)
        probabilities.append(plain)
        wrong_in_all &= plain.argmax(1) != y
        rows.append(f"| {path} | {differing} | {np.mean(plain.argmax(1) == y):.4f} | "
                    f"{np.mean(shifts.argmax(1) == y):.4f} |")
    ensemble = np.mean(probabilities, axis=0).argmax(1)
    data = prepare_data.prepare(record["data"]["source"], record["data"]["seed"],
                                settings.prepared_dir, verbose=False)
    all_y = np.concatenate([data[f"y_{split}"] for split in prepare_data.SPLITS])
    forced = identical_conflicts(
        np.concatenate([data[f"x_{split}"] for split in prepare_data.SPLITS]), all_y)
    best = max(np.mean(p.argmax(1) == y) for p in probabilities)
    command = "python bench/ceiling.py " + " ".join(sys.argv[1:])
    return "\n".join([
        f"### How much is left: {len(models)} models of one split, {split} split", "",
        f"`{command}`  ",
        f"{time.strftime('%Y-%m-%d')}, data {record['data']['source']} (seed "
        f"{record['data']['seed']}, {len(y)} {split} images)", "",
        f"| run | settings that differ between the runs | {split} acc | "
        f"with test-time shifts of {shift} px |", "|---|---|---|---|", *rows, "",
        f"- Ensemble (the {len(models)} models' probabilities averaged): "
        f"**{np.mean(ensemble == y):.4f}** (best single model {best:.4f}).",
        f"- Errors every model makes: {int(wrong_in_all.sum())} "
        f"({wrong_in_all.mean():.2%} of the split); the ensemble makes "
        f"{int(np.sum(ensemble != y))}.",
        f"- Images identical, pixel for pixel, to an image of another class: at least "
        f"{forced} of {len(all_y)} ({forced / len(all_y):.2%}) are wrong under any classifier.",
        "", "Most confused pairs among the errors every model makes (true -> the ensemble's "
        "answer, count, share of the class in the split):", "", "```",
        *evaluate.confused_pairs(confusions(y, ensemble, wrong_in_all, len(names)), names,
                                 settings.top_confusions),
        "```"])


def main(argv=None):
    settings, paths = configure(globals(), positional="*", argv=argv)
    markdown = report(checkpoints(paths), settings)
    print(markdown)
    if settings.output:
        write_text_atomic(settings.output, markdown + "\n")
        print(f"\nwrote {settings.output}")


if __name__ == "__main__":
    run(main)
