"""Trains the classifier and keeps the best epoch by validation accuracy.

    python train.py                                  # data/train.pkl, or the embedded default
    python train.py path/to/train.pkl --epochs=30    # a lone argument is the --data path
    python train.py --help                           # every setting, with its default

Writes into OUT_DIR: best.keras (the best model so far), best.json (its record: settings, data
fingerprint, seed, epoch, per-epoch history) and history.csv. A killed run resumes from its last
completed epoch when started again with the same OUT_DIR and settings; --fresh=True starts over.
"""
import csv
import glob
import json
import math
import os
import shutil
import sys
import time

import numpy as np

from common import (UserError, atomic_path, configure, quiet_native_stderr, run, settings_of,
                    write_text_atomic)
with quiet_native_stderr():  # TensorFlow's C++ start-up lines, shown only if it fails
    import keras
    import tensorflow as tf
import augment as augmentation  # noqa: E402  (its constants are overridable here too)
import model as model_config  # noqa: E402  (likewise: the model's sizes)
import prepare_data  # noqa: E402

DATA = "data/train.pkl"   # train.pkl (or .npz); the embedded default when data/train.pkl is absent
PREPARED_DIR = "data"     # cache of prepared splits
OUT_DIR = "out"           # checkpoints and records of this run
SEED = 1337               # split, initial weights, shuffling, augmentation and dropout
BATCH_SIZE = 64           # images per step (the global batch when training on several devices)
EPOCHS = 60               # plateau: an upper bound, early stopping usually ends sooner; cosine:
                          # the length of the decay, all trained
LEARNING_RATE = 2e-3      # Adam's initial learning rate (1e-3 and 5e-4 lost in bench/levers.py)
LR_SCHEDULE = "auto"      # auto: by SMALL_DATA (below); plateau: drops on a plateau (below);
                          # cosine: decay to zero over all EPOCHS, no early stop; constant
LR_DROP_PATIENCE = 2      # plateau: multiply the learning rate by LR_DROP_FACTOR after this many
LR_DROP_FACTOR = 0.3      #     epochs without a better validation accuracy
PATIENCE = 6              # epochs without a better validation accuracy before stopping (not
                          # with cosine: stopping would cut its decay short)
WEIGHT_DECAY = 0.0        # >0: AdamW, decoupled weight decay of this strength
LABEL_SMOOTHING = 0.0     # >0: spread this much of each target over the other classes
AUGMENT = True            # random crop, scale and rotation of training images (augment.py)
AUGMENT_EPOCHS = -1       # >0: augment only the first AUGMENT_EPOCHS epochs, then clean images;
                          # 0: augment throughout; -1: by SMALL_DATA (below)
SMALL_DATA = 10000        # the settings left at auto follow the size of the training split: below
                          # this many images, cosine decay and augmentation throughout; from it
                          # up, plateau drops and augmentation for the first 15 epochs, then clean
                          # (each won at its sizes in bench/levers.py; cosine's 60 epochs would
                          # also take too long on large sets)
FRESH = False             # True: ignore an unfinished run in OUT_DIR and start over
DETERMINISTIC = False     # True: TensorFlow op determinism (same seed, same result; slower)
DISTRIBUTE = "auto"       # auto: all GPUs (MirroredStrategy) if several, all workers if TF_CONFIG
                          # is set (MultiWorkerMirroredStrategy); mirrored: always; off: never
VERBOSE = -1              # Keras progress: 0 silent, 1 progress bar, 2 a line per epoch;
                          # -1: the bar on a terminal, a line per epoch otherwise (log files)

# Settings that may differ when a run is resumed: they do not change what is computed.
RESUMABLE_CHANGES = {"DATA", "PREPARED_DIR", "OUT_DIR", "FRESH", "VERBOSE", "DISTRIBUTE"}
IMAGE_SHAPE = (prepare_data.SIDE, prepare_data.SIDE, 1)  # the model's input, from the format
CHOICES = {"LR_SCHEDULE": ("auto", "plateau", "cosine", "constant"),
           "DISTRIBUTE": ("auto", "mirrored", "off"), "BACKEND": ("tf", "imgaug")}


# ---------------------------------------------------------------------------- input pipeline

def _augment(images, seed):
    if augmentation.BACKEND == "imgaug":  # the reference's library: Python, holds the GIL
        images = tf.numpy_function(augmentation.augment_batch, [images, seed[1]], tf.uint8,
                                   stateful=False)
        return tf.ensure_shape(images, [None, *IMAGE_SHAPE])
    return augmentation.augment_batch_tf(images, seed)


def make_dataset(x, y, batch_size):
    """Validation or test batches: (float 56x56x1 images, one-hot labels), in order."""
    dataset = tf.data.Dataset.from_tensor_slices((x.reshape(-1, *IMAGE_SHAPE), y))
    dataset = dataset.batch(batch_size).map(
        lambda images, labels: (tf.cast(images, tf.float32),
                                tf.one_hot(labels, prepare_data.NUM_CLASSES)))
    return dataset.cache().prefetch(tf.data.AUTOTUNE)


def make_training_dataset(x, y, batch_size, first_epoch, last_epoch, seed=None):
    """Batches of epochs first_epoch..last_epoch - 1 (0-based), one after the other. Each
    epoch's order and augmentation draws come from (seed, epoch) alone (seed: SEED unless
    given), so a resumed run sees exactly what the uninterrupted run would have seen; parallel
    workers cannot change them."""
    seed = SEED if seed is None else seed
    images, labels = tf.constant(x.reshape(-1, *IMAGE_SHAPE)), tf.constant(y)
    count = len(y)

    def one_epoch(epoch):
        order = tf.argsort(tf.random.stateless_uniform([count], seed=[seed, epoch]))
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        return tf.data.Dataset.zip(batches, tf.data.Dataset.range(1 << 30)).map(
            lambda indices, step: (indices, epoch, step))

    def load(indices, epoch, step):
        batch = tf.gather(images, indices)
        if AUGMENT:
            seed_pair = tf.stack([tf.cast(seed, tf.int64), epoch * (1 << 20) + step])
            if AUGMENT_EPOCHS > 0:  # a clean finish: the later epochs see the images as they are
                batch = tf.cond(epoch < AUGMENT_EPOCHS, lambda: _augment(batch, seed_pair),
                                lambda: batch)
            else:
                batch = _augment(batch, seed_pair)
        return (tf.cast(batch, tf.float32),
                tf.one_hot(tf.gather(labels, indices), prepare_data.NUM_CLASSES))

    dataset = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(one_epoch)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()  # several workers: each takes its share of every batch
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


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


def write_history(path, history):
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            columns = dict.fromkeys(key for row in history for key in row)  # ordered union
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(history)


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


def stopped_improving(history):
    """Early stopping: PATIENCE epochs without a better one (never under cosine decay)."""
    return (bool(history) and LR_SCHEDULE != "cosine"
            and len(history) - best_epoch_of(history)[0] >= PATIENCE)


def best_epoch_of(history):
    """(1-based epoch, row) of the best epoch so far; (0, None) before any."""
    if not history:
        return 0, None
    index = max(range(len(history)), key=lambda i: score(history[i]))
    return index + 1, history[index]


def plateau_learning_rate(history):
    """The learning rate after the epochs in `history` under LR_SCHEDULE="plateau": x
    LR_DROP_FACTOR after every LR_DROP_PATIENCE epochs without a better epoch. Worked out from
    the history alone, so a resumed run drops exactly when the uninterrupted one would."""
    rate, best, waited = LEARNING_RATE, None, 0
    for row in history:
        if best is None or score(row) > score(best):
            best, waited = row, 0
        else:
            waited += 1
            if waited >= LR_DROP_PATIENCE:
                rate, waited = rate * LR_DROP_FACTOR, 0
    return rate


class EpochState(keras.callbacks.Callback):
    """Before each epoch: the learning rate of a plateau schedule (from the history) and the
    dropout masks' random stream, which depends on (SEED, epoch) only. Keras does not save
    the dropout generators' state, so without this a resumed run would replay epoch 1's."""

    def __init__(self, history):
        super().__init__()
        self.history = history

    def on_epoch_begin(self, epoch, logs=None):
        if LR_SCHEDULE == "plateau":
            self.model.optimizer.learning_rate.assign(plateau_learning_rate(self.history))
        dropouts = [layer for layer in self.model.layers if isinstance(layer, keras.layers.Dropout)]
        for index, layer in enumerate(dropouts):
            state = layer.seed_generator.state
            state.assign(tf.constant([SEED * 100 + index, epoch << 20], state.dtype))


class KeepBest(keras.callbacks.Callback):
    """After every epoch: saves best.keras (atomically) only when validation accuracy beats
    the best so far, keeps best.json and history.csv up to date, saves a resume point, and
    stops after PATIENCE epochs without improvement. Stops with a clear error if the loss
    turns NaN, leaving the last good files untouched. A worker that is not the chief writes
    the same files into a scratch folder, never over the chief's."""

    def __init__(self, out_dir, run_info, history, best_record, write_dir=None):
        super().__init__()
        self.out_dir, self.run_info, self.history = out_dir, run_info, history
        self.write_dir = write_dir or out_dir
        best_record = best_record or {}
        self.best_saved = {key: best_record[key] for key in ("val_accuracy", "val_loss")
                           if key in best_record}  # an earlier run's best, if any
        self.best_epoch = best_record.get("best_epoch", 0)
        self.owns_best = best_record.get("run_id") == run_info["run_id"]

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
            self.best_saved, self.best_epoch, self.owns_best = row, epoch + 1, True
            with atomic_path(os.path.join(self.write_dir, "best.keras")) as tmp:
                self.model.save(tmp)
        if self.owns_best:
            record = {**self.run_info, "best_epoch": self.best_epoch,
                      "val_accuracy": self.best_saved["val_accuracy"],
                      "val_loss": self.best_saved["val_loss"], "history": self.history}
            write_text_atomic(os.path.join(self.write_dir, "best.json"),
                              json.dumps(record, indent=1) + "\n")
        write_history(os.path.join(self.write_dir, "history.csv"), self.history)
        self.save_resume_point(epoch + 1)
        if stopped_improving(self.history):
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


def data_fingerprint(manifest, x_train):
    # 9 in 10 training images have strokes at least this wide: predict.py widens thinner ones
    stroke = {"stroke_width": round(prepare_data.stroke_width(x_train, percentile=10), 2)}
    return {key: manifest[key] for key in ("source", "source_sha256", "seed", "counts")} | stroke


def same_data(a, b):
    return (a["source_sha256"], a["seed"]) == (b["source_sha256"], b["seed"])


def current_settings():
    return {**settings_of(vars(model_config)), **settings_of(vars(augmentation)),
            **settings_of(globals())}


def start_or_resume(out_dir, data, chief=True):
    """(run_info, resume checkpoint or None, epochs already done, history, best record).
    Only the chief clears or starts run state; the other workers read the chief's."""
    resume_dir = os.path.join(out_dir, "resume")
    if FRESH and chief:
        shutil.rmtree(resume_dir, ignore_errors=True)
    run_info = None if FRESH else read_json(os.path.join(resume_dir, "run.json"))
    epochs_done, resume_path = (0, None) if FRESH else latest_resume_point(resume_dir)
    if run_info and resume_path:
        if not same_data(run_info["data"], data):
            raise UserError(f"{out_dir} holds an unfinished run on other data or another "
                            f"seed: resume it with the same --data and --seed, discard it "
                            f"with --fresh=True, or use another --out_dir")
        changed = sorted(key for key, value in current_settings().items()
                         if key not in RESUMABLE_CHANGES
                         and run_info["settings"].get(key, value) != value)
        if changed:
            was = ", ".join(f"--{key.lower()}={run_info['settings'][key]}" for key in changed)
            raise UserError(f"{out_dir} holds an unfinished run with other settings ({was}): "
                            f"resume it with those, start over with --fresh=True, or use "
                            f"another --out_dir")
        print(f"resuming the run in {out_dir} after epoch {epochs_done} "
              f"(--fresh=True starts over)")
    else:
        run_info = {"run_id": f"{time.time():.6f}-{os.getpid()}",
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "settings": current_settings(), "data": data}
        epochs_done, resume_path = 0, None
        if chief:
            shutil.rmtree(resume_dir, ignore_errors=True)
            os.makedirs(resume_dir)
            write_text_atomic(os.path.join(resume_dir, "run.json"),
                              json.dumps(run_info, indent=1))
    history = read_history(os.path.join(out_dir, "history.csv"), epochs_done)
    best_record = None if FRESH else read_json(os.path.join(out_dir, "best.json"))
    if best_record and not same_data(best_record["data"], data):
        raise UserError(f"{out_dir}/best.keras was trained on other data or another seed: "
                        f"pass --fresh=True to replace it, or choose another --out_dir")
    return run_info, resume_path, epochs_done, history, best_record


# ---------------------------------------------------------------------------- devices

def distribution_strategy():
    """Where the model's variables live and who computes the batches (see DISTRIBUTE). Made
    before anything else starts TensorFlow's runtime: collective ops need that order."""
    if DISTRIBUTE == "auto" and os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    several_gpus = len(tf.config.list_physical_devices("GPU")) > 1
    if DISTRIBUTE == "mirrored" or (DISTRIBUTE == "auto" and several_gpus):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def worker_role(strategy):
    """(is_chief, description) of this process in a multi-worker cluster (chief alone)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, ""
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker"
                                               and resolver.task_id == 0)
    return chief, f"{resolver.task_type} {resolver.task_id}{' (chief)' if chief else ''}"


def describe_devices(strategy):
    gpus = tf.config.list_physical_devices("GPU")
    where = (f"{len(gpus)} GPU(s): {', '.join(gpu.name for gpu in gpus)}" if gpus
             else f"CPU ({os.cpu_count()} cores)")
    if strategy is not tf.distribute.get_strategy():
        name = ("MultiWorkerMirroredStrategy"
                if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                else type(strategy).__name__)
        where += f"; {strategy.num_replicas_in_sync} replica(s) with {name}"
    return where


def mend_keras_for_multiworker(model, strategy):
    """Keras 3 (3.15 and its nightly at least) cannot run fit() under MultiWorkerMirroredStrategy
    (keras-team/keras#20585), for two reasons mended here, and only when that strategy is used:
    - before training it averages a whole distributed batch across workers to build the model,
      which that strategy refuses: the model is built here from a symbolic batch instead;
    - it averages each step's scalar loss and metrics "along axis 0", which scalars lack:
      they are averaged across workers as they are."""
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer
    images = keras.KerasTensor((None, *IMAGE_SHAPE), "float32")
    labels = keras.KerasTensor((None, prepare_data.NUM_CLASSES), "float32")
    with strategy.scope():
        model._symbolic_build(data_batch=(images, labels))
    model._maybe_symbolic_build = lambda *args, **kwargs: None
    reduce_per_replica = keras_tf_trainer.reduce_per_replica

    def reduce_scalars_too(values, strategy, reduction="auto"):
        if reduction in ("auto", "mean"):
            return keras.tree.map_structure(
                lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)
    keras_tf_trainer.reduce_per_replica = reduce_scalars_too


def apply_size_rule(train_images):
    """Resolves the settings left at auto (LR_SCHEDULE, AUGMENT_EPOCHS) for a training split
    of this size, as SMALL_DATA says; returns what it chose and why, for the log ("" if
    nothing was left at auto)."""
    global LR_SCHEDULE, AUGMENT_EPOCHS
    small = train_images < SMALL_DATA
    chose = []
    if LR_SCHEDULE == "auto":
        LR_SCHEDULE = "cosine" if small else "plateau"
        chose.append(f"learning rate {LR_SCHEDULE}")
    if AUGMENT_EPOCHS < 0:
        AUGMENT_EPOCHS = 0 if small else 15
        chose.append(f"augmentation {augmentation_plan()}")
    if not chose:
        return ""
    return (f"{' and '.join(chose)}, as {train_images} training images are "
            f"{'fewer than' if small else 'at least'} --small_data={SMALL_DATA}")


def augmentation_plan():
    """How the training images are augmented, in words for the log."""
    if not AUGMENT:
        return "off"
    return (f"on for the first {AUGMENT_EPOCHS} epochs, then off" if AUGMENT_EPOCHS
            else "on throughout")


def new_model(steps_per_epoch=1):
    """The default model, compiled with the optimiser and loss of this recipe."""
    model = model_config.build_model(num_classes=prepare_data.NUM_CLASSES)
    rate = (keras.optimizers.schedules.CosineDecay(LEARNING_RATE, EPOCHS * steps_per_epoch)
            if LR_SCHEDULE == "cosine" else LEARNING_RATE)
    optimizer = (keras.optimizers.AdamW(rate, weight_decay=WEIGHT_DECAY) if WEIGHT_DECAY
                 else keras.optimizers.Adam(rate))
    model.compile(optimizer=optimizer,
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING),
                  metrics=["accuracy"])
    return model


def check_settings():
    for name, choices in CHOICES.items():
        value = globals().get(name, getattr(augmentation, name, None))
        if value not in choices:
            raise UserError(f"--{name.lower()}={value}: choose {', '.join(choices[:-1])} "
                            f"or {choices[-1]}")
    if augmentation.BACKEND == "imgaug" and augmentation.STROKE:
        raise UserError("--stroke needs --backend=tf (imgaug does not do it)")
    if BATCH_SIZE < 1 or EPOCHS < 1:
        raise UserError("--batch_size and --epochs must be at least 1")
    if SMALL_DATA < 0:
        raise UserError(f"--small_data={SMALL_DATA}: give a number of images, 0 or more")


def main():
    global VERBOSE
    configure(globals(), vars(model_config), vars(augmentation), positional="DATA")
    check_settings()
    if VERBOSE < 0:
        VERBOSE = 1 if sys.stdout.isatty() else 2
    with quiet_native_stderr():
        strategy = distribution_strategy()
    chief, role = worker_role(strategy)
    print(f"device: {describe_devices(strategy)}{'; ' + role if role else ''}", flush=True)
    if DETERMINISTIC:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(SEED)  # same seed, same initial weights
    data = prepare_data.prepare(DATA, SEED, PREPARED_DIR, verbose=chief)
    rule = apply_size_rule(len(data["y_train"]))  # before the settings are recorded
    os.makedirs(OUT_DIR, exist_ok=True)
    run_info, resume_path, epochs_done, history, best_record = start_or_resume(
        OUT_DIR, data_fingerprint(data["manifest"], data["x_train"]), chief)
    write_dir = OUT_DIR if chief else os.path.join(OUT_DIR, f".scratch-{role.replace(' ', '-')}")

    steps_per_epoch = math.ceil(len(data["y_train"]) / BATCH_SIZE)
    train = make_training_dataset(data["x_train"], data["y_train"], BATCH_SIZE, epochs_done,
                                  EPOCHS)
    # No gradients for validation: big batches are faster.
    val = make_dataset(data["x_val"], data["y_val"], max(BATCH_SIZE, 512))
    with strategy.scope():
        model = keras.saving.load_model(resume_path) if resume_path else new_model(steps_per_epoch)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        mend_keras_for_multiworker(model, strategy)
    keeper = KeepBest(OUT_DIR, run_info, history, best_record, write_dir)
    callbacks = [EpochState(history), keeper]
    print(f"training on {len(data['y_train'])} images, validating on {len(data['y_val'])}; "
          f"{model.count_params():,} parameters; augmentation {augmentation_plan()}; "
          f"learning rate {LR_SCHEDULE}", flush=True)
    if rule:
        print(f"chose {rule}", flush=True)
    started = time.time()
    if epochs_done < EPOCHS and not stopped_improving(history):
        model.fit(train, validation_data=val, epochs=EPOCHS, initial_epoch=epochs_done,
                  steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=VERBOSE,
                  shuffle=False)  # shuffled by the dataset, per epoch
    shutil.rmtree(os.path.join(write_dir, "resume"), ignore_errors=True)  # the run is complete
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
        return
    best_epoch, best = best_epoch_of(keeper.history)
    print(f"trained {len(keeper.history) - epochs_done} epochs in {time.time() - started:.0f} s")
    print(f"best epoch {best_epoch}: val_accuracy {best['val_accuracy']:.4f}")
    if keeper.owns_best:
        print(f"saved {os.path.join(OUT_DIR, 'best.keras')}; score it with: "
              f"python evaluate.py --checkpoint={os.path.join(OUT_DIR, 'best.keras')}")
    else:
        print(f"{OUT_DIR}/best.keras keeps an earlier run's better model "
              f"(val_accuracy {keeper.best_saved['val_accuracy']:.4f}); --fresh=True "
              f"replaces it")


if __name__ == "__main__":
    run(main)
