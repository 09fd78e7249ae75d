"""What train.py keeps in --out_dir, and how an interrupted run resumes exactly.

- best.keras, the model of the best epoch so far, replaced only by a better model of the same
  data (whatever the flags), atomically. Inside its zip (an extra `image_classifier.json`,
  written with the model in one file) it carries its record: the run, the data's fingerprint,
  class names and stroke width, the epoch and its scores, the history up to it. So a copy of
  it alone still predicts, serves, exports and evaluates, and the best model's own record is
  what a later run compares itself against;
- best.json, the record of the run that wrote best.keras, brought up to date after every epoch
  of that run, and history.csv, its per-epoch history. A run that does not beat best.keras
  writes its history beside them as history-<run id>.csv;
- resume/: run.json (the unfinished run's settings and data) and one resume point, the
  checkpoint of its last completed epoch with the history up to it inside (one file, so the
  two can never disagree), removed when the run completes;
- .lock while a run is training there: one run per folder (run_lock.py).

Every file is written under a temporary name and renamed. After a kill at any instant the
resume point is the truth: the epoch after it is trained again, exactly as before, and writes
what the kill cut short.
"""
import contextlib
import csv
import datetime
import glob
import json
import math
import os
import shutil
import sys
import zipfile

from common import UserError, atomic_path, lazy_import, write_text_atomic
import classes
import prepare_data

keras = lazy_import("keras")  # loaded on first use: checking a run's records needs none

MODEL_NOTE = "image_classifier.json"  # a best.keras's record, inside its zip
RESUME_NOTE = "image_classifier_resume.json"  # a resume point's run id and history, likewise
EARLIER = "earlier"                   # --set_aside moves another data's best model in here


class Diverged(UserError):
    """The loss turned NaN or infinite: the run stopped (tune.py prunes such a trial)."""


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


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


# ---------------------------------------------------------------------------- the records

def data_fingerprint(manifest, x_train):
    """The run record's "data": what was trained on, its split, its classes and how wide its
    strokes are (9 in 10 training images have strokes at least `stroke_width` wide:
    predict.py widens thinner ones)."""
    keys = ("source", "source_sha256", "seed", "split_sha256", "counts")
    return {**{key: manifest[key] for key in keys},
            "num_classes": classes.num_classes_of(manifest),
            "class_names": manifest.get("class_names"),  # a folder's; else by the label files
            "stroke_width": round(prepare_data.stroke_width(x_train, percentile=10), 2)}


def same_data(a, b):
    """Whether two records' data are the same images in the same split and classes (a record
    from before splits were fingerprinted counts as another split)."""
    return (all(a.get(key) == b.get(key) for key in ("source_sha256", "seed", "split_sha256"))
            and classes.num_classes_of(a) == classes.num_classes_of(b))


def read_note(path, name=MODEL_NOTE):
    """The JSON that train.py put inside a .keras file (a zip: Keras reads only its own
    entries), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(name))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def attached_to_model_file(path):
    """The record inside a best.keras (at least its "data", with the class names as they read
    when it was saved), or None."""
    note = read_note(path)
    try:
        note["data"]["source"], note["data"]["source_sha256"], note["data"]["seed"]
        return note
    except (KeyError, TypeError):
        return None


def save_with_note(model, path, note, name=MODEL_NOTE):
    """Saves a Keras model with `note` inside its zip, both in one atomic write."""
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(name, json.dumps(note, indent=1))


def best_record(out_dir):
    """The record of the best.keras in out_dir (the one inside it; best.json for a file saved
    before records went inside), None if there is none, or a clear error if there is a model
    whose scores cannot be read: it is never replaced blindly."""
    path = os.path.join(out_dir, "best.keras")
    if not os.path.exists(path):
        return None
    for record in (read_note(path), read_json(os.path.join(out_dir, "best.json"))):
        if isinstance(record, dict) and "val_accuracy" in record and "data" in record:
            return record
    raise UserError(f"{path} has no readable record of how good it is, so no run can tell "
                    f"whether it beats it: move it away, or choose another --out_dir")


def match_records(out_dir, best):
    """best.json and history.csv describe best.keras again if a run was stopped between their
    writes (by a kill or a full disk) and did not resume: they are rewritten from the record
    inside best.keras, the truth (only the calibration, if that is all that differs: best.json
    has the longer history)."""
    on_disk = read_json(os.path.join(out_dir, "best.json")) or {}
    if describes(on_disk) == describes(best):
        return
    if describes(on_disk)[:2] == describes(best)[:2]:
        write_text_atomic(os.path.join(out_dir, "best.json"), json.dumps(
            {**on_disk, "calibration": best.get("calibration")}, indent=1) + "\n")
        return
    write_text_atomic(os.path.join(out_dir, "best.json"), json.dumps(best, indent=1) + "\n")
    write_history(os.path.join(out_dir, "history.csv"), best["history"])
    print(f"note: {out_dir}/best.json did not describe {out_dir}/best.keras (a run stopped "
          f"between their writes): rewrote it and history.csv from the record inside the model",
          file=sys.stderr)


def describes(record):
    """Which model a record describes: its run, epoch and calibration."""
    return record.get("run_id"), record.get("best_epoch"), record.get("calibration")


def set_aside(out_dir, best):
    """Moves the best model of other data, its records and every run history beside it into
    out_dir/earlier/<its run id>/; returns that folder."""
    folder = os.path.join(out_dir, EARLIER, best.get("run_id", "unknown"))
    os.makedirs(folder, exist_ok=True)
    names = ["best.keras", "best.json", "history.csv"] + [
        os.path.basename(path) for path in glob.glob(os.path.join(out_dir, "history-*.csv"))]
    for name in names:
        if os.path.exists(os.path.join(out_dir, name)):
            os.replace(os.path.join(out_dir, name), os.path.join(folder, name))
    return folder


# ---------------------------------------------------------------------------- start or resume

def latest_resume_point(resume_dir):
    """(epoch, path) of the newest complete resume point, or (0, None)."""
    found = sorted(glob.glob(os.path.join(resume_dir, "epoch-*.keras")))
    if not found:
        return 0, None
    return int(os.path.basename(found[-1])[6:-6]), found[-1]


def start_or_resume(out_dir, data, settings, fresh, resumable, chief=True, aside=False):
    """(run_info, resume point or None, epochs already done, history, best record) for a run
    of `settings` (the UPPER_CASE record of them) on `data` (its fingerprint).

    An unfinished run in `out_dir` is resumed if its data and settings match, apart from the
    `resumable` ones that do not change what is computed (one killed before its first resume
    point starts again from epoch 1, as the same run); `fresh` discards it. The best model
    there stays the one to beat, whatever the flags; one of other data is refused, or with
    `aside` moved into earlier/<run id>/. Only the chief changes files; other workers read the
    chief's."""
    if chief:
        remove_leftovers(out_dir)
    resume_dir = os.path.join(out_dir, "resume")
    run_info = None if fresh else read_json(os.path.join(resume_dir, "run.json"))
    epochs_done, resume_path = (0, None) if fresh else latest_resume_point(resume_dir)
    if run_info and resume_path:
        history = check_resumable(out_dir, run_info, data, settings, resumable, resume_path,
                                  epochs_done)
        print(f"resuming the run in {out_dir} after epoch {epochs_done} "
              f"(--fresh=True starts over)")
    else:
        discarded, _ = latest_resume_point(resume_dir)
        if fresh and chief and discarded:
            print(f"--fresh: discarded the unfinished run in {out_dir} (after epoch "
                  f"{discarded})")
        if not run_info or differences(out_dir, run_info, data, settings, resumable):
            now = datetime.datetime.now()
            run_info = {"run_id": now.strftime("%Y%m%d-%H%M%S-%f"),
                        "started": now.strftime("%Y-%m-%d %H:%M:%S"),
                        "settings": settings, "data": data}
        epochs_done, resume_path, history = 0, None, []
        if chief:
            shutil.rmtree(resume_dir, ignore_errors=True)
            os.makedirs(resume_dir)
            write_text_atomic(os.path.join(resume_dir, "run.json"),
                              json.dumps(run_info, indent=1))
    best = best_record(out_dir)
    if best and not same_data(best["data"], data):
        if not aside:
            raise UserError(f"{out_dir}/best.keras was trained on other data, another seed, "
                            f"another split or other classes: pass --set_aside=True to move it "
                            f"into {os.path.join(out_dir, EARLIER, best.get('run_id', '...'))}/, "
                            f"or choose another --out_dir")
        if chief:
            print(f"moved {out_dir}/best.keras, of other data (val_accuracy "
                  f"{best['val_accuracy']:.4f}), and its records aside into "
                  f"{set_aside(out_dir, best)}")
        best = None
    if best and chief:
        match_records(out_dir, best)
    if best and best.get("run_id") != run_info["run_id"]:
        print(f"{out_dir}/best.keras (val_accuracy {best['val_accuracy']:.4f}, run "
              f"{best['run_id']}) is replaced only if this run beats it", flush=True)
    return run_info, resume_path, epochs_done, history, best


def differences(out_dir, run_info, data, settings, resumable):
    """Why the unfinished run `run_info` is not a run of `settings` on `data` (a message
    naming the fix), or "" if it is one."""
    if not same_data(run_info["data"], data):
        return (f"{out_dir} holds an unfinished run on other data, another seed, another split "
                f"or other classes: resume it with the same --data and --seed, discard it with "
                f"--fresh=True, or use another --out_dir")
    changed = sorted(key for key, value in settings.items()
                     if key not in resumable and run_info["settings"].get(key, value) != value)
    if changed:
        was = ", ".join(shown_setting(key, run_info["settings"][key]) for key in changed)
        return (f"{out_dir} holds an unfinished run with other settings ({was}): resume it "
                f"with those, start over with --fresh=True, or use another --out_dir")
    return ""


def shown_setting(key, value):
    if isinstance(value, dict) and "run_id" in value:  # a model it learnt from, by its run
        return f"{key.lower()}: the model of run {value['run_id']}"
    return f"--{key.lower()}={value}"


def remove_leftovers(out_dir):
    """The temporary files of writes that a kill cut short (common.atomic_path's hidden
    .NAME.PID-XXXX.tmp files), removed by the run that now holds the folder."""
    for folder in (out_dir, os.path.join(out_dir, "resume")):
        for path in glob.glob(os.path.join(folder, ".*.tmp*")):
            with contextlib.suppress(OSError):
                os.remove(path)


def check_resumable(out_dir, run_info, data, settings, resumable, resume_path, epochs_done):
    """The history up to the resume point of the unfinished run `run_info`, or a clear error
    if it cannot be resumed as it is: other data or settings, or records that disagree."""
    refused = differences(out_dir, run_info, data, settings, resumable)
    if refused:
        raise UserError(refused)
    point = read_note(resume_path, RESUME_NOTE) or {}
    history = point.get("history")
    if point.get("run_id") != run_info["run_id"] or not isinstance(history, list) \
            or [row.get("epoch") for row in history] != list(range(1, epochs_done + 1)):
        raise UserError(f"{resume_path} does not hold the history of the run in "
                        f"{os.path.join(out_dir, 'resume', 'run.json')} up to its epoch, so it "
                        f"cannot resume exactly: start over with --fresh=True")
    return history


# ---------------------------------------------------------------------------- after each epoch

def keep_best(out_dir, run_info, history, best, patience, write_dir=None, network=None):
    """A Keras callback that after every epoch saves best.keras (atomically) only when the
    epoch beats `best` (the record of best.keras so far, None if there is none), keeps
    best.json and the run's history up to date, saves a resume point, and stops after
    `patience` epochs without improvement (None: never). Stops with a clear error if the loss
    turns NaN, leaving the last good files untouched. A worker that is not the chief writes
    the same files into a scratch folder, never over the chief's. best.keras holds `network`
    (default: the model trained; a Distiller's student is saved alone). (The class is made here,
    when training starts: its base is Keras's, and importing run_state.py must not load
    TensorFlow.)"""

    class KeepBest(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.out_dir, self.run_info, self.history = out_dir, run_info, history
            self.patience = patience
            self.write_dir = write_dir or out_dir
            self.best = best  # the record of best.keras: an earlier run's, or this one's
            self.owns_best = bool(best) and best.get("run_id") == run_info["run_id"]

        @property
        def history_path(self):
            return history_path(self.write_dir, self.run_info["run_id"], self.owns_best)

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise Diverged(f"the loss became {float(loss)} (training diverged) and was "
                                f"stopped; {self.out_dir} keeps the last good model: lower "
                                f"--learning_rate and start again with --fresh=True")

        def on_epoch_end(self, epoch, logs=None):
            rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)  # schedules too
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()},
                   "learning_rate": float(rate)}
            if "val_student_loss" in row:  # a Distiller's val_loss adds the teacher's term
                row["val_loss"] = row["val_student_loss"]  # compared with plain runs': not it
            self.history.append(row)
            # The writes, in an order that a kill may cut anywhere: the resume point, last,
            # is the truth; a resumed run trains the epoch after it again and rewrites the rest.
            if score(row) > score(self.best or {}):
                self.best = {**self.run_info, "best_epoch": epoch + 1,
                             "val_accuracy": row["val_accuracy"], "val_loss": row["val_loss"],
                             "history": list(self.history)}
                model_note = {**self.best, "data": {
                    **self.run_info["data"],
                    "class_names": classes.names_of_classes(self.run_info["data"])}}
                save_with_note(network or self.model,
                               os.path.join(self.write_dir, "best.keras"), model_note)
                self.owns_best = True
            if self.owns_best:
                write_text_atomic(os.path.join(self.write_dir, "best.json"), json.dumps(
                    {**self.best, "history": self.history}, indent=1) + "\n")
            write_history(self.history_path, self.history)
            other = history_path(self.write_dir, self.run_info["run_id"], False)
            if self.owns_best and os.path.exists(other):
                os.remove(other)  # from now on in history.csv, beside its model
            self.save_resume_point(epoch + 1)
            if stopped_improving(self.history, self.patience):
                self.model.stop_training = True

        def save_resume_point(self, epochs_done):
            """One complete file per point, named by its epoch, holding the model, the
            optimiser and the history: a kill mid-write leaves only a temporary file, and the
            previous point is removed once the new one is in place."""
            resume_dir = os.path.join(self.write_dir, "resume")
            name = f"epoch-{epochs_done:04d}.keras"
            save_with_note(self.model, os.path.join(resume_dir, name),
                           {"run_id": self.run_info["run_id"], "history": self.history},
                           RESUME_NOTE)
            for old in glob.glob(os.path.join(resume_dir, "epoch-*.keras")):
                if os.path.basename(old) != name:
                    os.remove(old)

    return KeepBest()
