"""What train.py keeps in --out_dir, and how an interrupted run resumes exactly.

- best.keras, the model of the best epoch so far, and best.json, its record (settings, data
  fingerprint, best epoch, per-epoch history), replaced only by a better epoch, atomically.
  best.keras carries what inference needs of that record too (the data's fingerprint, class
  names and stroke width, in an extra `image_classifier.json` inside its zip), so a copy of it
  alone still predicts, serves and exports;
- history.csv, the per-epoch history of the run that wrote best.keras. A later run in the same
  folder that does not beat it writes its own history beside it, as history-<run id>.csv;
- resume/: run.json (the unfinished run's settings and data) and one checkpoint of its last
  completed epoch, removed when the run completes.
"""
import csv
import datetime
import glob
import json
import math
import os
import shutil
import zipfile

from common import UserError, atomic_path, lazy_import, write_text_atomic
import prepare_data

keras = lazy_import("keras")  # loaded on first use: checking a run's records needs none


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_history(path, epochs):
    """The first `epochs` rows of a history CSV as dicts of floats (the epochs a resumed run
    keeps; rows written after its last saved epoch are dropped)."""
    try:
        with open(path) as f:
            rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]
    except (OSError, ValueError):
        return []
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return rows[:epochs]


def write_history(path, history):
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            columns = dict.fromkeys(key for row in history for key in row)  # ordered union
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(history)


def history_path(folder, run_id, owns_best):
    """Where a run's history goes: history.csv beside the best.keras it wrote, or its own
    history-<run id>.csv while best.keras belongs to an earlier, better run."""
    return os.path.join(folder, "history.csv" if owns_best else f"history-{run_id}.csv")


def latest_resume_point(resume_dir):
    """(epoch, path) of the newest complete resume checkpoint, or (0, None)."""
    found = sorted(glob.glob(os.path.join(resume_dir, "epoch-*.keras")))
    if not found:
        return 0, None
    return int(os.path.basename(found[-1])[6:-6]), found[-1]


def score(row):
    """How good an epoch is: validation accuracy first, then the lower validation loss (so
    that an epoch that ties on accuracy but is more confident counts as better)."""
    return row.get("val_accuracy", -1.0), -row.get("val_loss", math.inf)


def best_epoch_of(history):
    """(1-based epoch, row) of the best epoch so far; (0, None) before any."""
    if not history:
        return 0, None
    index = max(range(len(history)), key=lambda i: score(history[i]))
    return index + 1, history[index]


def stopped_improving(history, patience):
    """Early stopping: `patience` epochs without a better one (patience None: never)."""
    return (patience is not None and bool(history)
            and len(history) - best_epoch_of(history)[0] >= patience)


MODEL_NOTE = "image_classifier.json"  # the record's data, inside a .keras file's zip


def data_fingerprint(manifest, x_train):
    """The run record's "data": what was trained on, its classes and how wide its strokes are
    (9 in 10 training images have strokes at least `stroke_width` wide: predict.py widens
    thinner ones)."""
    return {**{key: manifest[key] for key in ("source", "source_sha256", "seed", "counts")},
            "num_classes": prepare_data.num_classes_of(manifest),
            "class_names": manifest.get("class_names"),  # a folder's; else by the label files
            "stroke_width": round(prepare_data.stroke_width(x_train, percentile=10), 2)}


def attach_to_model_file(path, data):
    """Adds the record's data to a saved .keras file (a zip: Keras reads only its own
    entries), with the class names as they read now, so that the model file alone names its
    classes."""
    note = {"data": {**data, "class_names": prepare_data.names_of_classes(data)}}
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(MODEL_NOTE, json.dumps(note, indent=1))


def attached_to_model_file(path):
    """The {"data": ...} that attach_to_model_file put into a .keras file, or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            note = json.loads(archive.read(MODEL_NOTE))
        note["data"]["source"], note["data"]["source_sha256"], note["data"]["seed"]
        return note
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return None


def same_data(a, b):
    return (a["source_sha256"], a["seed"]) == (b["source_sha256"], b["seed"])


def start_or_resume(out_dir, data, settings, fresh, resumable, chief=True):
    """(run_info, resume checkpoint or None, epochs already done, history, best record) for a
    run of `settings` (the UPPER_CASE record of them) on `data` (its fingerprint). An
    unfinished run in `out_dir` is resumed if its data and settings match, apart from the
    `resumable` ones that do not change what is computed; `fresh` discards it. Only the chief
    clears or starts run state; the other workers read the chief's."""
    resume_dir = os.path.join(out_dir, "resume")
    if fresh and chief:
        shutil.rmtree(resume_dir, ignore_errors=True)
    run_info = None if fresh else read_json(os.path.join(resume_dir, "run.json"))
    epochs_done, resume_path = (0, None) if fresh else latest_resume_point(resume_dir)
    if run_info and resume_path:
        if not same_data(run_info["data"], data):
            raise UserError(f"{out_dir} holds an unfinished run on other data or another "
                            f"seed: resume it with the same --data and --seed, discard it "
                            f"with --fresh=True, or use another --out_dir")
        changed = sorted(key for key, value in settings.items()
                         if key not in resumable and run_info["settings"].get(key, value) != value)
        if changed:
            was = ", ".join(f"--{key.lower()}={run_info['settings'][key]}" for key in changed)
            raise UserError(f"{out_dir} holds an unfinished run with other settings ({was}): "
                            f"resume it with those, start over with --fresh=True, or use "
                            f"another --out_dir")
        print(f"resuming the run in {out_dir} after epoch {epochs_done} "
              f"(--fresh=True starts over)")
    else:
        now = datetime.datetime.now()
        run_info = {"run_id": now.strftime("%Y%m%d-%H%M%S-%f"),
                    "started": now.strftime("%Y-%m-%d %H:%M:%S"),
                    "settings": settings, "data": data}
        epochs_done, resume_path = 0, None
        if chief:
            shutil.rmtree(resume_dir, ignore_errors=True)
            os.makedirs(resume_dir)
            write_text_atomic(os.path.join(resume_dir, "run.json"),
                              json.dumps(run_info, indent=1))
    best_record = None if fresh else read_json(os.path.join(out_dir, "best.json"))
    if best_record and not same_data(best_record["data"], data):
        raise UserError(f"{out_dir}/best.keras was trained on other data or another seed: "
                        f"pass --fresh=True to replace it, or choose another --out_dir")
    owns_best = bool(best_record) and best_record.get("run_id") == run_info["run_id"]
    history = read_history(history_path(out_dir, run_info["run_id"], owns_best), epochs_done)
    return run_info, resume_path, epochs_done, history, best_record


def keep_best(out_dir, run_info, history, best_record, patience, write_dir=None):
    """A Keras callback that after every epoch saves best.keras (atomically) only when
    validation accuracy beats the best so far, keeps best.json and the run's history up to
    date, saves a resume point, and stops after `patience` epochs without improvement (None:
    never). Stops with a clear error if the loss turns NaN, leaving the last good files
    untouched. A worker that is not the chief writes the same files into a scratch folder,
    never over the chief's. (The class is made here, when training starts: its base is
    Keras's, and importing run_state.py must not load TensorFlow.)"""

    class KeepBest(keras.callbacks.Callback):
        def __init__(self, out_dir, run_info, history, best_record, patience, write_dir=None):
            super().__init__()
            self.out_dir, self.run_info, self.history = out_dir, run_info, history
            self.patience = patience
            self.write_dir = write_dir or out_dir
            best_record = best_record or {}
            self.best_saved = {key: best_record[key] for key in ("val_accuracy", "val_loss")
                               if key in best_record}  # an earlier run's best, if any
            self.best_epoch = best_record.get("best_epoch", 0)
            self.owns_best = best_record.get("run_id") == run_info["run_id"]

        @property
        def history_path(self):
            return history_path(self.write_dir, self.run_info["run_id"], self.owns_best)

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise UserError(f"the loss became {float(loss)} (training diverged) and was "
                                f"stopped; {self.out_dir} keeps the last good model: lower "
                                f"--learning_rate and start again with --fresh=True")

        def on_epoch_end(self, epoch, logs=None):
            rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)  # schedules too
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()},
                   "learning_rate": float(rate)}
            self.history.append(row)
            if score(row) > score(self.best_saved):
                with atomic_path(os.path.join(self.write_dir, "best.keras")) as tmp:
                    self.model.save(tmp)
                    attach_to_model_file(tmp, self.run_info["data"])
                if not self.owns_best and os.path.exists(self.history_path):
                    os.remove(self.history_path)  # from now on in history.csv, beside its model
                self.best_saved, self.best_epoch, self.owns_best = row, epoch + 1, True
            if self.owns_best:
                record = {**self.run_info, "best_epoch": self.best_epoch,
                          "val_accuracy": self.best_saved["val_accuracy"],
                          "val_loss": self.best_saved["val_loss"], "history": self.history}
                write_text_atomic(os.path.join(self.write_dir, "best.json"),
                                  json.dumps(record, indent=1) + "\n")
            write_history(self.history_path, self.history)
            self.save_resume_point(epoch + 1)
            if stopped_improving(self.history, self.patience):
                self.model.stop_training = True

        def save_resume_point(self, epochs_done):
            """One complete file per point, named by its epoch: a kill mid-write leaves only a
            temporary file, and the previous point is removed once the new one is in place."""
            resume_dir = os.path.join(self.write_dir, "resume")
            name = f"epoch-{epochs_done:04d}.keras"
            with atomic_path(os.path.join(resume_dir, name)) as tmp:
                self.model.save(tmp)
            for old in glob.glob(os.path.join(resume_dir, "epoch-*.keras")):
                if os.path.basename(old) != name:
                    os.remove(old)

    return KeepBest(out_dir, run_info, history, best_record, patience, write_dir)
