"""Trains the classifier and keeps the best epoch by validation accuracy.

    python train.py                                  # data/train.pkl, or the embedded default
    python train.py --data=path/to/train.pkl --epochs=30 --augment=False

Writes into OUT_DIR: best.keras (the best model so far), best.json (its record: settings, data
fingerprint, seed, epoch, per-epoch history) and history.csv. A killed run resumes from its last
completed epoch when started again with the same OUT_DIR; --fresh=True starts over.
"""
import csv
import glob
import json
import math
import os
import shutil
import time

import numpy as np

from common import (UserError, atomic_path, configure, quiet_native_stderr, run, settings_of,
                    write_text_atomic)
with quiet_native_stderr():  # TensorFlow's C++ start-up lines, shown only if it fails
    import keras
    import tensorflow as tf
    tf.config.list_logical_devices()
import augment as augmentation  # noqa: E402  (its constants are overridable here too)
import model as model_config  # noqa: E402  (likewise: the model's sizes)
import prepare_data  # noqa: E402

DATA = "data/train.pkl"   # train.pkl (or .npz); the embedded default when data/train.pkl is absent
PREPARED_DIR = "data"     # cache of prepared splits
OUT_DIR = "out"           # checkpoints and records of this run
SEED = 1337               # split, initial weights, shuffling and augmentation
BATCH_SIZE = 64
EPOCHS = 60               # upper bound; early stopping usually ends sooner
LEARNING_RATE = 1e-3      # Adam
PATIENCE = 6              # epochs without a better validation accuracy before stopping
LR_DROP_PATIENCE = 2      # >0: multiply the learning rate by LR_DROP_FACTOR after this many
LR_DROP_FACTOR = 0.3      #     epochs without a better validation accuracy (0: constant rate)
EMA_MOMENTUM = 0.0        # >0: validate and keep an exponential moving average of the weights
AUGMENT = True            # random crop, scale and rotation of training batches (augment.py)
FRESH = False             # True: ignore an unfinished run in OUT_DIR and start over
DETERMINISTIC = False     # True: TensorFlow op determinism (same seed, same result; slower)
DISTRIBUTE = "auto"       # auto: all GPUs (MirroredStrategy) if several, all workers if TF_CONFIG
                          # is set (MultiWorkerMirroredStrategy); mirrored: always; off: never
VERBOSE = 1               # Keras progress output: 0 silent, 1 progress bar, 2 a line per epoch

IMAGE_SHAPE = (prepare_data.SIDE, prepare_data.SIDE, 1)  # the model's input, from the format


# ---------------------------------------------------------------------------- input pipeline

def _augment(batch, seed):
    images, labels = batch
    if augmentation.BACKEND == "imgaug":  # the reference's library: Python, holds the GIL
        images = tf.numpy_function(augmentation.augment_batch, [images, seed[0]], tf.uint8,
                                   stateful=False)
        images = tf.ensure_shape(images, [None, *IMAGE_SHAPE])
    else:
        images = augmentation.augment_batch_tf(images, seed)
    return images, labels


def _to_float(images, labels):
    return tf.cast(images, tf.float32), labels


def make_dataset(x, y, batch_size, training=False, augment=False, seed=SEED):
    """uint8 images (N x 3136) and labels -> batches of float 56x56x1 images. Training data is
    reshuffled every epoch and, with `augment`, transformed by parallel workers ahead of use."""
    dataset = tf.data.Dataset.from_tensor_slices((x.reshape(-1, *IMAGE_SHAPE), y))
    if training:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augment:
        # One seed pair per batch from a seeded stream: reproducible with parallel workers.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            _augment, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if not training:
        dataset = dataset.cache()  # validation batches are the same every epoch
    return dataset.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------- run state

def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_history(path, epochs):
    """The first `epochs` rows of history.csv as dicts of floats (the epochs a resumed run
    keeps; rows written after its last saved epoch are dropped)."""
    try:
        with open(path) as f:
            rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]
    except (OSError, ValueError):
        return []
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return rows[:epochs]


def latest_resume_point(resume_dir):
    """(epoch, path) of the newest complete resume checkpoint, or (0, None)."""
    found = sorted(glob.glob(os.path.join(resume_dir, "epoch-*.keras")))
    if not found:
        return 0, None
    return int(os.path.basename(found[-1])[6:-6]), found[-1]


class KeepBest(keras.callbacks.Callback):
    """After every epoch: saves best.keras (atomically) only when validation accuracy beats
    the best so far, keeps best.json and history.csv up to date, saves a resume point, and
    stops after PATIENCE epochs without improvement. Stops with a clear error if the loss
    turns NaN, leaving the last good files untouched."""

    def __init__(self, out_dir, run_info, history, best_record):
        super().__init__()
        self.out_dir, self.run_info, self.history = out_dir, run_info, history
        self.resume_dir = os.path.join(out_dir, "resume")
        scores = [row["val_accuracy"] for row in history]
        self.run_best_epoch = 1 + int(np.argmax(scores)) if scores else 0
        self.run_best = max(scores, default=-1.0)
        best_record = best_record or {}
        self.best_saved = best_record.get("val_accuracy", -1.0)
        self.best_epoch = best_record.get("best_epoch", 0)
        self.owns_best = best_record.get("run_id") == run_info["run_id"]

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise UserError(f"the loss became {float(loss)} (training diverged) and was "
                            f"stopped; {self.out_dir} keeps the last good model: lower "
                            f"--learning_rate and start again with --fresh=True")

    def on_epoch_end(self, epoch, logs=None):
        score = float(logs["val_accuracy"])
        self.history.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}})
        if score > self.run_best:
            self.run_best, self.run_best_epoch = score, epoch + 1
        if score > self.best_saved:
            self.best_saved, self.best_epoch, self.owns_best = score, epoch + 1, True
            with atomic_path(os.path.join(self.out_dir, "best.keras")) as tmp:
                self.model.save(tmp)
        if self.owns_best:
            record = {**self.run_info, "best_epoch": self.best_epoch,
                      "val_accuracy": self.best_saved, "history": self.history}
            write_text_atomic(os.path.join(self.out_dir, "best.json"),
                              json.dumps(record, indent=1) + "\n")
        write_history(os.path.join(self.out_dir, "history.csv"), self.history)
        self.save_resume_point(epoch + 1)
        if epoch + 1 - self.run_best_epoch >= PATIENCE:
            self.model.stop_training = True

    def save_resume_point(self, epochs_done):
        """One complete file per point, named by its epoch: a kill mid-write leaves only a
        temporary file, and the previous point is removed once the new one is in place."""
        name = f"epoch-{epochs_done:04d}.keras"
        with atomic_path(os.path.join(self.resume_dir, name)) as tmp:
            self.model.save(tmp)
        for old in glob.glob(os.path.join(self.resume_dir, "epoch-*.keras")):
            if os.path.basename(old) != name:
                os.remove(old)


def write_history(path, history):
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            columns = dict.fromkeys(key for row in history for key in row)  # ordered union
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(history)


def data_fingerprint(manifest):
    return {key: manifest[key] for key in ("source", "source_sha256", "seed", "counts")}


def same_data(a, b):
    return (a["source_sha256"], a["seed"]) == (b["source_sha256"], b["seed"])


def start_or_resume(out_dir, data):
    """(run_info, resume checkpoint or None, epochs already done, history, best record)."""
    resume_dir = os.path.join(out_dir, "resume")
    if FRESH:
        shutil.rmtree(resume_dir, ignore_errors=True)
    run_info = read_json(os.path.join(resume_dir, "run.json"))
    epochs_done, resume_path = latest_resume_point(resume_dir)
    if run_info and resume_path:
        if not same_data(run_info["data"], data):
            raise UserError(f"{out_dir} holds an unfinished run on other data or another "
                            f"seed: resume it with the same --data and --seed, discard it "
                            f"with --fresh=True, or use another --out_dir")
        print(f"resuming the run in {out_dir} after epoch {epochs_done} "
              f"(--fresh=True starts over)")
    else:
        shutil.rmtree(resume_dir, ignore_errors=True)
        run_info = {"run_id": f"{time.time():.6f}-{os.getpid()}",
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "settings": {**settings_of(vars(model_config)),
                                 **settings_of(vars(augmentation)), **settings_of(globals())},
                    "data": data}
        os.makedirs(resume_dir)
        write_text_atomic(os.path.join(resume_dir, "run.json"), json.dumps(run_info, indent=1))
        epochs_done, resume_path = 0, None
    history = read_history(os.path.join(out_dir, "history.csv"), epochs_done)
    best_record = None if FRESH else read_json(os.path.join(out_dir, "best.json"))
    if best_record and not same_data(best_record["data"], data):
        raise UserError(f"{out_dir}/best.keras was trained on other data or another seed: "
                        f"pass --fresh=True to replace it, or choose another --out_dir")
    return run_info, resume_path, epochs_done, history, best_record


def distribution_strategy():
    """Where the model's variables live and who computes the batches (see DISTRIBUTE)."""
    if DISTRIBUTE == "auto" and os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    several_gpus = len(tf.config.list_logical_devices("GPU")) > 1
    if DISTRIBUTE == "mirrored" or (DISTRIBUTE == "auto" and several_gpus):
        strategy = tf.distribute.MirroredStrategy()
        print(f"training on {strategy.num_replicas_in_sync} replica(s) with MirroredStrategy")
        return strategy
    return tf.distribute.get_strategy()


def new_model():
    """The default model, compiled with the optimiser and loss of this recipe."""
    model = model_config.build_model(num_classes=prepare_data.NUM_CLASSES)
    optimizer = keras.optimizers.Adam(LEARNING_RATE, use_ema=EMA_MOMENTUM > 0,
                                      ema_momentum=EMA_MOMENTUM or 0.99)
    model.compile(optimizer=optimizer,
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main():
    configure(globals(), vars(model_config), vars(augmentation))
    for name, value, choices in (("backend", augmentation.BACKEND, ("tf", "imgaug")),
                                 ("distribute", DISTRIBUTE, ("auto", "mirrored", "off"))):
        if value not in choices:
            raise UserError(f"--{name}={value}: choose {', '.join(choices[:-1])} or {choices[-1]}")
    if DETERMINISTIC:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(SEED)  # same seed, same initial weights and shuffles
    data = prepare_data.prepare(DATA, SEED, PREPARED_DIR)
    os.makedirs(OUT_DIR, exist_ok=True)
    run_info, resume_path, epochs_done, history, best_record = start_or_resume(
        OUT_DIR, data_fingerprint(data["manifest"]))

    train = make_dataset(data["x_train"], data["y_train"], BATCH_SIZE, training=True,
                         augment=AUGMENT, seed=SEED)
    # No gradients for validation: big batches are faster.
    val = make_dataset(data["x_val"], data["y_val"], max(BATCH_SIZE, 512))
    with distribution_strategy().scope():
        model = keras.saving.load_model(resume_path) if resume_path else new_model()
    keeper = KeepBest(OUT_DIR, run_info, history, best_record)
    callbacks = [keeper]
    if EMA_MOMENTUM:  # the averaged weights are the ones validated and saved
        callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if LR_DROP_PATIENCE:
        callbacks.insert(0, keras.callbacks.ReduceLROnPlateau(
            "val_accuracy", factor=LR_DROP_FACTOR, patience=LR_DROP_PATIENCE, verbose=VERBOSE))
    print(f"training on {len(data['y_train'])} images, validating on {len(data['y_val'])}; "
          f"{model.count_params():,} parameters; augmentation {'on' if AUGMENT else 'off'}")
    started = time.time()
    model.fit(train, validation_data=val, epochs=EPOCHS, initial_epoch=epochs_done,
              callbacks=callbacks, verbose=VERBOSE, shuffle=False)  # shuffled by tf.data
    shutil.rmtree(os.path.join(OUT_DIR, "resume"), ignore_errors=True)  # the run is complete
    print(f"trained {len(keeper.history) - epochs_done} epochs in {time.time() - started:.0f} s")
    print(f"best epoch {keeper.run_best_epoch}: val_accuracy {keeper.run_best:.4f}")
    if keeper.owns_best:
        print(f"saved {os.path.join(OUT_DIR, 'best.keras')}; score it with: "
              f"python evaluate.py --checkpoint={os.path.join(OUT_DIR, 'best.keras')}")
    else:
        print(f"{OUT_DIR}/best.keras keeps an earlier run's better model "
              f"(val_accuracy {keeper.best_saved:.4f}); --fresh=True replaces it")


if __name__ == "__main__":
    run(main)
