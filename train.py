"""Trains the classifier and keeps the best epoch by validation accuracy.

    python train.py                                  # data/train.pkl, or the embedded default
    python train.py path/to/train.pkl --epochs 30    # a lone argument is the --data path
    python train.py --help                           # every setting, with its default

Writes into --out_dir: best.keras (the best model so far), best.json (its record: settings, data
fingerprint, seed, epoch, per-epoch history) and history.csv (run_state.py says more). A killed
run resumes from its last completed epoch when started again with the same --out_dir and
settings; --fresh starts over. From Python: `train.main(["--epochs=5"])`, or
`train.run_training(train.defaults(epochs=5))`.
"""
import contextlib
import dataclasses
import hashlib
import importlib.util
import math
import os
import shutil
import sys
import time

import numpy as np

from common import UserError, as_record, check_values, configure, defaults as defaults_of, \
    lazy_import, quiet_native_stderr, run
import augment  # its settings are train.py's too
import calibration
import classes
import data_format
import devices
import model  # likewise: the model's sizes
from pipeline import make_dataset, make_training_dataset  # noqa: F401  (also train.make_...)
import prepare_data
import training
import run_lock
import run_state
import transfer

keras = lazy_import("keras")  # loaded on first use, once the settings and data are checked
tf = lazy_import("tensorflow")
sklearn_class_weight = lazy_import("sklearn.utils.class_weight")
tf_config = lazy_import("tensorflow.python.framework.config")  # the public half lacks the query

SETTINGS = ""             # a JSON file of settings to start from (tune.py's best-settings.json);
                          # the options given with it override the file's
DATA = "data/train.pkl"   # your train.pkl (or .npz), or a folder of class subfolders of images;
                          # the embedded digits while data/train.pkl is absent
PREPARED_DIR = "data"     # where prepared splits are cached
OUT_DIR = "out"           # where this run's checkpoints and records go
SEED = 1337               # seeds the split, initial weights, shuffling, augmentation and dropout
BATCH_SIZE = 64           # images per step (the global batch when training on several devices)
EPOCHS = 60               # epochs at most (early stopping usually ends sooner; under cosine
                          # decay, the length of the decay, all trained)
LEARNING_RATE = 2e-3      # Adam's initial learning rate
LR_SCHEDULE = "auto"      # plateau: drop the rate when validation stops improving; cosine: decay
                          # it to zero over --epochs, no early stop; constant; auto: by --small_data
LR_DROP_PATIENCE = 2      # plateau: epochs without a better validation accuracy before a drop
LR_DROP_FACTOR = 0.3      # plateau: each drop multiplies the learning rate by this
PATIENCE = 6              # epochs without a better validation accuracy before training stops
                          # (never under cosine decay: stopping would cut it short)
WEIGHT_DECAY = 0.0        # >0: AdamW, with decoupled weight decay of this strength
LABEL_SMOOTHING = 0.0     # >0: spread this much of each target over the other classes
CLASS_WEIGHT = "off"      # balanced: weigh each training image by 1 / its class's share, so
                          # that rare classes count as much as common ones in the loss; off
TEACHER = ""              # a best.keras of `python train.py --network=teacher` on the same --data
                          # and --seed: the network learns from its softened outputs too
DISTILL_TEMPERATURE = 2.0 # (with --teacher) divides both networks' class scores before they are
                          # compared: higher shows more of the teacher's second guesses (2 led
                          # 4 by 0.3 points on letters26: bench/README.md)
LABEL_WEIGHT = 0.5        # (with --teacher) the labels' share of the loss; the teacher's: the rest
INIT_FROM = ""            # a best.keras to start from: its weights, layer by layer, its head only
                          # where the classes agree (else a new head)
FREEZE_EPOCHS = 0         # (with --init_from) the convolutions stay as given for this many
                          # epochs, while the layers after them learn
CALIBRATE = True          # at the end, fit a temperature on the validation split and keep it
                          # inside best.keras: honest probabilities, the same accuracy
AUGMENT = True            # random crop, scale and rotation of training images (their ranges:
                          # --crop_px, --scale, --rotate and augment.py's other settings)
AUGMENT_EPOCHS = -1       # >0: augment only the first this many epochs, then clean images;
                          # 0: augment throughout; -1: by --small_data
SMALL_DATA = 10000        # training splits of fewer images than this get cosine decay and
                          # augmentation throughout, larger ones plateau drops and 15 augmented
                          # epochs (for --lr_schedule=auto and --augment_epochs=-1)
FRESH = False             # True: discard an unfinished run in --out_dir and start over (its
                          # best.keras stays, replaced only by a better model)
SET_ASIDE = False         # True: a best.keras of other data in --out_dir is moved, with its
                          # records, into earlier/<its run id>/ there (else the run is refused)
DETERMINISTIC = False     # True: TensorFlow's op determinism (the same result on GPUs; slower)
DISTRIBUTE = "auto"       # auto: all GPUs if several, all workers if TF_CONFIG is set; mirrored:
                          # MirroredStrategy even on one device; off: one device
VERBOSE = -1              # Keras progress: 0 silent, 1 progress bar, 2 a line per epoch; -1: the
                          # bar on a terminal, a line per epoch in a log file
TENSORBOARD = False       # True: also write TensorBoard logs (loss, accuracy, learning rate per
                          # epoch) into the tensorboard folder of --out_dir, to watch with
                          # tensorboard --logdir out/tensorboard

# Settings that may differ when a run is resumed: they do not change what is computed.
RESUMABLE_CHANGES = {"SETTINGS", "SETTINGS_FROM", "DATA", "PREPARED_DIR", "OUT_DIR", "FRESH",
                     "SET_ASIDE", "VERBOSE", "DISTRIBUTE", "TENSORBOARD", "CALIBRATE"}
# What a run does to its folder is the command line's alone, never a --settings file's.
_SHELL_ONLY = ("OUT_DIR", "FRESH", "SET_ASIDE")
# What each setting may be: an interval, or the choices (common.check_values).
_RANGES = {"SEED": "[0, 4294967295]", "BATCH_SIZE": "[1, inf)", "EPOCHS": "[1, inf)",
           "LEARNING_RATE": "[0, inf)", "LR_SCHEDULE": ("auto", "plateau", "cosine", "constant"),
           "LR_DROP_PATIENCE": "[1, inf)", "LR_DROP_FACTOR": "(0, 1]", "PATIENCE": "[1, inf)",
           "WEIGHT_DECAY": "[0, inf)", "LABEL_SMOOTHING": "[0, 1)",
           "CLASS_WEIGHT": ("off", "balanced"), "AUGMENT_EPOCHS": "[-1, inf)",
           "DISTILL_TEMPERATURE": "(0, inf)", "LABEL_WEIGHT": "[0, 1]",
           "FREEZE_EPOCHS": "[0, inf)",
           "SMALL_DATA": "[0, inf)", "DISTRIBUTE": ("auto", "mirrored", "off"),
           "VERBOSE": "[-1, 2]"}


# ---------------------------------------------------------------------------- settings

def defaults(**overrides):
    """The settings of train.py, model.py and augment.py as they stand at the top of those
    files, with these overrides (lower-case names): for notebooks and the bench scripts."""
    return dataclasses.replace(defaults_of(globals(), vars(model), vars(augment)), **overrides)


def check_settings(settings, model_settings=True):
    """A clear error for a setting out of range (configure() checks the shell's; this also
    those given from Python); `model_settings`: the settings include model.py's (not when
    another network replaces it, as in bench/deeper.py)."""
    check_values(settings, globals(), vars(augment), *([vars(model)] if model_settings else []))
    if model_settings:
        model.parse_widths(settings.teacher_widths)
    augment.check_backend(settings.backend, settings.elastic, settings.stroke)


def resolve(settings, train_images):
    """(settings, why): the settings with those left at auto (--lr_schedule, --augment_epochs)
    resolved for a training split of this size, as --small_data says, and what was chosen
    and why, for the log ("" if nothing was left at auto)."""
    small = train_images < settings.small_data
    chose = []
    if settings.lr_schedule == "auto":
        settings = dataclasses.replace(settings, lr_schedule="cosine" if small else "plateau")
        chose.append(f"learning rate {settings.lr_schedule}")
    if settings.augment_epochs < 0:
        settings = dataclasses.replace(settings, augment_epochs=0 if small else 15)
        chose.append(f"augmentation {augmentation_plan(settings)}")
    if not chose:
        return settings, ""
    return settings, (f"{' and '.join(chose)}, as {train_images} training images are "
                      f"{'fewer than' if small else 'at least'} "
                      f"--small_data={settings.small_data}")


def augmentation_plan(settings):
    """How the training images are augmented, in words for the log."""
    if not settings.augment:
        return "off"
    return (f"on for the first {settings.augment_epochs} epochs, then off"
            if settings.augment_epochs else "on throughout")


def patience_of(settings):
    """Epochs without improvement before stopping: None (never) under cosine decay."""
    return None if settings.lr_schedule == "cosine" else settings.patience


# ---------------------------------------------------------------------------- the run

def run_training(settings, build_network=None, origins=None, callbacks=(), held_out=None):
    """One training run of `settings` (unresolved: the size rule is applied here), as
    `python train.py` does it; `build_network` as in training.new_model; `origins`: where the
    settings came from (configure's), kept in the record; `callbacks`: more Keras callbacks
    for fit() (tune.py's pruning); `held_out`: rows of the training split not to train on
    (evaluate.py --suspects judges them). Returns the run's record."""
    check_settings(settings, model_settings=build_network is None)
    if settings.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("--tensorboard=True needs the tensorboard package: pip install -r "
                        "requirements.txt")
    out_dir = settings.out_dir
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out_dir={out_dir} is a file: choose a folder")
    os.makedirs(out_dir, exist_ok=True)
    chief, role = devices.worker_role(settings.distribute)
    # One run per folder: the chief holds it for the whole run (the other workers write
    # scratch files only), so a second run there is refused before it reads anything.
    with run_lock.claim(out_dir) if chief else contextlib.nullcontext():
        return train_in_folder(settings, build_network, chief, role, origins, callbacks,
                               held_out)


def held_out_id(rows):
    """What names a set of held-out training rows in a run record (their sha256)."""
    return hashlib.sha256(np.asarray(rows, np.int64).tobytes()).hexdigest()


def class_weights(labels, how):
    """{class: weight} for fit(), or None with --class_weight=off. balanced: scikit-learn's
    n / (classes * count of the class), over the classes the training split has."""
    if how == "off":
        return None
    present = np.unique(labels)
    weights = sklearn_class_weight.compute_class_weight("balanced", classes=present, y=labels)
    return {int(label): float(weight) for label, weight in zip(present, weights)}


def train_in_folder(settings, build_network, chief, role, origins=None, extra_callbacks=(),
                    held_out=None):
    """run_training's work, once it holds --out_dir: the data and the run's records first,
    TensorFlow after, so that a mistake answers at once."""
    verbose = settings.verbose if settings.verbose >= 0 else 1 if sys.stdout.isatty() else 2
    data = prepare_data.prepare(settings.data, settings.seed, settings.prepared_dir,
                                verbose=chief)
    if not len(data["y_val"]):
        raise UserError(f"{settings.data} leaves no image for validation: every class has fewer "
                        f"than 3 distinct images; add images")
    if held_out is not None:
        kept = np.setdiff1d(np.arange(len(data["y_train"])), held_out)
        data = {**data, "x_train": data["x_train"][kept], "y_train": data["y_train"][kept]}
    settings, rule = resolve(settings, len(data["y_train"]))  # before the settings are recorded
    if settings.class_weight != "off" and settings.teacher:
        raise UserError("--class_weight does not reach the loss of a --teacher run (Keras's "
                        "Distiller ignores weights): leave --class_weight=off")
    if settings.freeze_epochs and not settings.init_from:
        raise UserError("--freeze_epochs freezes the convolutions that --init_from gives: pass "
                        "--init_from=PATH too, or leave --freeze_epochs=0")
    num_classes = classes.num_classes_of(data["manifest"])  # the head fits the data
    out_dir = settings.out_dir
    fingerprint = run_state.data_fingerprint(data["manifest"], data["x_train"])
    # kept with the settings: what --teacher and --init_from name (a resume must find the
    # same), and where the settings came from
    learnt_from, starting_point = {"TEACHER_RUN": None, "INIT_RUN": None,
                                   "SETTINGS_FROM": origins or None}, None
    if held_out is not None:  # a resume must hold out the same rows
        learnt_from["HELD_OUT"] = held_out_id(held_out)
    if settings.teacher:
        learnt_from["TEACHER_RUN"] = transfer.source_summary(
            transfer.teacher_record(settings.teacher, fingerprint, settings.out_dir))
    if settings.init_from:
        start, starting_point = transfer.start_record(settings.init_from, fingerprint,
                                                      settings.out_dir)
        learnt_from["INIT_RUN"] = {**transfer.source_summary(start), "head_kept": starting_point}
    run_info, resume_path, epochs_done, history, best = run_state.start_or_resume(
        out_dir, fingerprint, {**as_record(settings), **learnt_from}, settings.fresh,
        RESUMABLE_CHANGES, chief, settings.set_aside)
    write_dir = out_dir if chief else os.path.join(out_dir, f".scratch-{role.replace(' ', '-')}")

    with quiet_native_stderr():  # TensorFlow starts here, with its C++ notices
        strategy = devices.distribution_strategy(settings.distribute)
    print(f"device: {devices.describe_devices(strategy)}{'; ' + role if role else ''}",
          flush=True)
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    if tf_config.is_op_determinism_enabled():  # what TensorFlow now does, not what was asked
        print("op determinism: on", flush=True)
    keras.utils.set_random_seed(settings.seed)  # same seed, same initial weights

    steps_per_epoch = math.ceil(len(data["y_train"]) / settings.batch_size)
    train = make_training_dataset(data["x_train"], data["y_train"], settings, epochs_done,
                                  settings.epochs, num_classes)
    # No gradients for validation: big batches are faster.
    val = make_dataset(data["x_val"], data["y_val"], max(settings.batch_size, 512), num_classes)
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if multiworker and (settings.teacher or training.frozen_until(settings)):
        raise UserError("--teacher and --freeze_epochs are not supported on several workers: "
                        "train on one machine")
    with strategy.scope():
        network, trainer = training.network_and_trainer(
            settings, resume_path, epochs_done, steps_per_epoch, num_classes, build_network,
            starting_point, data["x_val"][:1].reshape(-1, *data_format.IMAGE_SHAPE)
            .astype("float32"))
    if multiworker:
        devices.mend_keras_for_multiworker(network, strategy, data_format.IMAGE_SHAPE, num_classes)
    keeper = run_state.keep_best(out_dir, run_info, history, best, patience_of(settings),
                                 write_dir, network)
    print(f"training on {len(data['y_train'])} images in {num_classes} classes, validating on "
          f"{len(data['y_val'])}; "
          f"{network.count_params():,} parameters; augmentation {augmentation_plan(settings)}; "
          f"learning rate {settings.lr_schedule}"
          f"{f'; learning from {settings.teacher} too' if settings.teacher else ''}", flush=True)
    if rule:
        print(f"chose {rule}", flush=True)
    callbacks = [training.epoch_state(history, settings, network), keeper, *extra_callbacks]
    if settings.tensorboard:  # per epoch, continued by a resumed run; the graph is not needed
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(write_dir, "tensorboard"),
                                                     write_graph=False))
        print(f"TensorBoard logs in {os.path.join(write_dir, 'tensorboard')}: tensorboard "
              f"--logdir {os.path.join(write_dir, 'tensorboard')}", flush=True)
    started = time.time()

    def fit(first, last):  # epochs first..last - 1 (0-based), unless early stopping ended it
        if first < last and not run_state.stopped_improving(history, patience_of(settings)):
            trainer.fit(train if first == epochs_done else make_training_dataset(
                            data["x_train"], data["y_train"], settings, first, settings.epochs,
                            num_classes),
                        validation_data=val, epochs=last, initial_epoch=first,
                        steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose,
                        class_weight=class_weights(data["y_train"], settings.class_weight),
                        shuffle=False)  # shuffled by the dataset, per epoch
    fit(epochs_done, training.frozen_until(settings))  # (none, without --freeze_epochs)
    if transfer.set_frozen(network, False):  # the whole network learns from here, with an
        with strategy.scope():               # optimiser of its own (Adam's moments from 0)
            optimizer = training.optimizer_of(settings, steps_per_epoch,
                                              training.frozen_until(settings))
            if settings.teacher:
                transfer.compile_distiller(trainer, settings.label_smoothing, optimizer)
            else:
                training.compile_network(network, settings, optimizer)
    fit(max(epochs_done, training.frozen_until(settings)), settings.epochs)
    if chief and keeper.owns_best and settings.calibrate:  # before the run counts as complete
        fitted = calibration.calibrate_best(out_dir, data["x_val"], data["y_val"])
        print(f"not calibrated: {fitted}" if isinstance(fitted, str) else
              f"calibrated: temperature {fitted['temperature']:.3f}; expected calibration error "
              f"on validation {fitted['ece_before']:.2%} -> {fitted['ece_after']:.2%}",
              flush=True)
    shutil.rmtree(os.path.join(write_dir, "resume"), ignore_errors=True)  # the run is complete
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
        return run_info
    best_epoch, best_row = run_state.best_epoch_of(keeper.history)
    print(f"trained {len(keeper.history) - epochs_done} epochs in {time.time() - started:.0f} s")
    print(f"best epoch {best_epoch}: val_accuracy {best_row['val_accuracy']:.4f}")
    checkpoint = os.path.join(out_dir, "best.keras")
    if keeper.owns_best:
        print(f"saved {checkpoint}; score it with: python evaluate.py --checkpoint={checkpoint}")
    else:
        print(f"{checkpoint} keeps an earlier run's better model (val_accuracy "
              f"{keeper.best['val_accuracy']:.4f}), with its best.json and history.csv; "
              f"this run's history is in {keeper.history_path}")
    return {**run_info, "best_epoch": best_epoch, "history": keeper.history}


def main(argv=None):
    origins = {}
    settings = configure(globals(), vars(model), vars(augment), argv=argv, positional="DATA",
                         origins=origins)
    run_training(settings, origins=origins)


if __name__ == "__main__":
    run(main)
