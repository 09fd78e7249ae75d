"""Searches train.py's settings for your data: each trial is a real training run, scored on the
validation split (never the test split), with Optuna choosing the next settings to try and
stopping hopeless trials early.

    python tune.py --data=my.pkl --trials=30                  # a study in out/tune
    python tune.py --data=my.pkl --trials=30 --epochs=20      # any train.py setting: every trial
    python tune.py --data=my.pkl --search_dropout="0.3..0.6"  # a range of your own
    python tune.py --data=my.pkl --storage=postgresql://user:password@host/db  # on each machine

The study is kept in --out_dir/study.db (SQLite) or the database --storage names; run the same
command again and a killed study carries on: finished trials are kept, the interrupted one is
run again (resuming its training), and --trials counts them all. Several machines given the
same --storage share the study: each trial runs once. Writes into --out_dir: a folder per trial
(train.py's run there, and its log), trials.csv, best-settings.json (the best trial's settings,
which `python train.py --settings=out/tune/best-settings.json` trains with) and with --plots the
study's history and the settings' importances as PNG files.
"""
import contextlib
import csv
import dataclasses
import json
import os
import shlex
import sys
import time

from common import UserError, as_record, atomic_path, configure, quiet_native_stderr, run, \
    write_text_atomic
import augment
import data_format
import model
import prepare_data
import run_lock
import run_state
import search_space
import train
import tuning

OUT_DIR = "out/tune"      # the study's folder: its SQLite file, a folder per trial, the results
TRIALS = 30               # trials in all, finished or pruned, counting earlier runs of the study
STORAGE = ""              # "": SQLite in --out_dir/study.db; or a database URL that every machine
                          # of the study reaches, e.g. postgresql://user:password@host/db
STUDY = "tune"            # the study's name in the storage
PRUNE = True              # stop a trial whose validation accuracy after an epoch is below the
                          # median of the earlier trials' after that epoch (Optuna's MedianPruner)
PRUNE_AFTER_TRIALS = 5    # trials that finish before any is pruned
PRUNE_AFTER_EPOCHS = 3    # epochs each trial trains before it may be pruned
LOST_AFTER = 600          # seconds without a sign of life after which another machine's trial
                          # counts as lost and is run again (one on this machine: at once)
PLOTS = False             # True: also draw the study's history and the settings' importances
# The search space, one train.py setting each: a range "low..high" (" log": on a log scale;
# whole numbers for a whole-number setting) or choices "a|b|c"; "": left as it is above.
SEARCH_LEARNING_RATE = "5e-4..5e-3 log"  # Adam's initial learning rate
SEARCH_BATCH_SIZE = "32|64|128"          # images per step
SEARCH_DENSE_UNITS = "256|512|1024"      # the dense layer's units
SEARCH_FILTERS_1 = "24|32|48"            # the first convolution's filters
SEARCH_FILTERS_2 = "48|64|96"            # the second convolution's filters
SEARCH_DROPOUT = "0.25..0.55"            # dropout before the dense and output layers
SEARCH_CROP_PX = "1..5"                  # augmentation: crop-zoom, pixels a side
SEARCH_SCALE = "0.0..0.2"                # augmentation: scale by 1 +- this
SEARCH_ROTATE = "4..20"                  # augmentation: rotation, degrees either way
SEARCH_AUGMENT_EPOCHS = "-1|0|10|15|25"  # augmented epochs (0: all; -1: by the size rule)
SEARCH_LABEL_SMOOTHING = "0.0..0.15"     # share of each target spread over the other classes
SEARCH_CLASS_WEIGHT = "off|balanced"     # rare classes weighed up in the loss, or not
_RANGES = {"TRIALS": "[1, inf)", "PRUNE_AFTER_TRIALS": "[0, inf)",
           "PRUNE_AFTER_EPOCHS": "[0, inf)", "LOST_AFTER": "[1, inf)"}


def settings_and_space(argv):
    """(the study's settings, the trials' train.py settings without the searched ones, the
    search space {name: (kind, values, log)}), every mistake refused before anything loads."""
    origins = {}
    settings = configure(globals(), vars(train), vars(model), vars(augment), argv=argv,
                         origins=origins)
    trial_base = train.defaults(**{name: value for name, value in
                                   dataclasses.asdict(settings).items()
                                   if name in dataclasses.asdict(train.defaults())})
    space = {}
    for name, spec in dataclasses.asdict(settings).items():
        if name.startswith("search_") and spec.strip():
            space[name[len("search_"):]] = search_space.parse_range(name, spec, trial_base)
    for name in space:  # a setting given for every trial cannot be searched too
        if name.upper() in origins:
            raise UserError(f"--{name} is given and searched (--search_{name}): add "
                            f"--search_{name}=\"\" to hold it at {getattr(settings, name)}, "
                            f"or leave --{name} out")
    if settings.fresh or settings.set_aside:
        raise UserError("--fresh and --set_aside are train.py's, for one run: a study's trials "
                        "resume and keep their folders (start a study afresh in another "
                        "--out_dir)")
    if settings.teacher and "balanced" in str(space.get("class_weight", "")):
        raise UserError("--teacher runs cannot weigh classes: add --search_class_weight=\"\"")
    source = prepare_data.resolve_source(settings.data)
    if source != data_format.EMBEDDED and not os.path.exists(source):
        raise UserError(f"--data={settings.data}: no such file or folder: give your train.pkl, "
                        f".npz or image folder")
    return settings, trial_base, space


# ---------------------------------------------------------------------------- the study

class Surplus(Exception):
    """Raised by a trial that other machines' trials have made one too many."""


def objective(settings, trial_base, space, ran):
    """The study's objective: one trial, a train.py run in its own folder, quiet but for its
    log there; reports each epoch's validation accuracy so that the pruner can stop it. Adds
    each trial's number to the list `ran`."""
    import optuna

    def report_each_epoch(trial):  # (Keras loads here, when a trial starts, not before)
        with quiet_native_stderr():  # TensorFlow's C++ start-up notices
            import keras
            import tensorflow as tf
        tf.get_logger().setLevel("ERROR")  # each trial's new functions are not "retracing"

        class ReportEachEpoch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                trial.report(logs["val_accuracy"], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")
        return ReportEachEpoch()

    def one_trial(trial):
        ran.append(trial.number)
        trial.set_user_attr("interrupted", False)  # (a trial run again inherits the mark)
        if len(tuning.counted(trial.study, before=trial.number)) >= settings.trials:
            trial.set_user_attr("surplus", True)
            raise Surplus()
        values = search_space.suggest(trial, space)
        folder = tuning.trial_dir(settings, trial)
        os.makedirs(folder, exist_ok=True)
        trial_settings = dataclasses.replace(trial_base, **values, out_dir=folder, verbose=2)
        with run_lock.claim(folder, tuning.TRIAL_LOCK, "tune.py trial"), \
                open(os.path.join(folder, "train.log"), "a") as log, \
                contextlib.redirect_stdout(log):
            try:
                record = train.run_training(trial_settings, callbacks=[report_each_epoch(trial)])
            except KeyboardInterrupt:  # Optuna marks the trial failed: this one runs again
                trial.set_user_attr("interrupted", True)
                raise
            except run_state.Diverged as error:  # these settings are hopeless: on to others
                raise optuna.TrialPruned(str(error)) from None
            finally:
                import keras
                keras.backend.clear_session()  # the next trial starts with a clean slate
            _, best = run_state.best_epoch_of(record["history"])
            trial.set_user_attr("epochs", len(record["history"]))
            return best["val_accuracy"]

    return one_trial


def run_study(settings, trial_base, space, study):
    """Runs trials until the study has --trials, each announced on a line; a bar on a
    terminal."""
    import optuna
    import tqdm
    state = optuna.trial.TrialState
    bar = tqdm.tqdm(total=settings.trials, unit="trial", disable=not sys.stderr.isatty(),
                    initial=min(settings.trials, len(tuning.finished(study))))
    ran = []
    one_trial = objective(settings, trial_base, space, ran)
    while True:
        tuning.mend_interrupted(study, settings)
        if len([t for t in tuning.counted(study)
                if t.state != state.WAITING]) >= settings.trials:
            break
        started = time.time()
        study.optimize(one_trial, n_trials=1, catch=(Surplus,))
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == ran[-1])
        if trial.user_attrs.get("surplus"):
            break  # other machines' trials filled the study meanwhile
        bar.update(1)
        bar.write(trial_line(settings, study, trial, time.time() - started))
    bar.close()


def trial_line(settings, study, trial, seconds):
    """One line per trial: its number, settings, result and time."""
    import optuna
    shown = " ".join(f"--{name}={shown_value(value)}" for name, value in trial.params.items())
    pruned = trial.state == optuna.trial.TrialState.PRUNED
    if pruned:
        epochs = len(trial.intermediate_values)
        result = (f"pruned after epoch {max(trial.intermediate_values) + 1 if epochs else 0}, "
                  f"val_accuracy {max(trial.intermediate_values.values(), default=0):.4f}")
    else:
        result = f"val_accuracy {trial.value:.4f}"
    best = tuning.best_trial(study)
    return (f"trial {trial.number} ({len(tuning.finished(study))}/{settings.trials}): {result} "
            f"in {seconds:.0f} s; {shown}"
            + (f"; best so far: trial {best.number}, {best.value:.4f}" if best else ""))


def shown_value(value):
    return f"{value:.4g}" if isinstance(value, float) else value


# ---------------------------------------------------------------------------- the results

def write_results(settings, trial_base, study):
    """trials.csv, best-settings.json and the command that trains with the best trial's settings."""
    trials = sorted(tuning.finished(study), key=lambda t: t.number)
    names = sorted({name for trial in trials for name in trial.params})
    rows = [{"trial": t.number, "state": t.state.name.lower(),
             "val_accuracy": "" if t.value is None else f"{t.value:.4f}",
             "epochs": t.user_attrs.get("epochs", len(t.intermediate_values)),
             "seconds": f"{t.duration.total_seconds():.0f}" if t.duration else "",
             **{name: t.params.get(name, "") for name in names}} for t in trials]
    with open_atomic(os.path.join(settings.out_dir, "trials.csv")) as f:
        writer = csv.DictWriter(f, ["trial", "state", "val_accuracy", "epochs", "seconds", *names])
        writer.writeheader()
        writer.writerows(rows)
    best = tuning.best_trial(study)
    if best is None:
        print("no trial has finished yet: run the same command again to go on")
        return None
    chosen, default = as_record(dataclasses.replace(trial_base, **best.params)), as_record(
        train.defaults())
    order = ["DATA", "SEED", *(name.upper() for name in best.params),
             *tuning.recipe_of(trial_base)]
    differs = {key: chosen[key] for key in dict.fromkeys(order)
               if key in ("DATA", "SEED") or chosen[key] != default[key]}
    command = "python train.py " + " ".join(
        f"--{key.lower()}={shlex.quote(str(value))}" for key, value in differs.items())
    command += " --out_dir=out/tuned"
    path = os.path.join(settings.out_dir, "best-settings.json")
    write_text_atomic(path, json.dumps(
        {"settings": differs, "trial": best.number, "val_accuracy": best.value,
         "command": command, "study": settings.study}, indent=1) + "\n")
    print(f"{len(trials)} trials ({sum(t.state.name == 'PRUNED' for t in trials)} pruned); best: "
          f"trial {best.number}, val_accuracy {best.value:.4f}\n"
          f"its settings: {path}; trials: {os.path.join(settings.out_dir, 'trials.csv')}\n"
          f"train with them: {command}\n"
          f"       or: python train.py --settings={path} --out_dir=out/tuned")
    return best


@contextlib.contextmanager
def open_atomic(path):
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        yield f


def draw(settings, study):
    """The study's history and the settings' importances (Optuna's matplotlib plots)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots
    for name, plot in (("history", plots.plot_optimization_history),
                       ("importances", plots.plot_param_importances)):
        path = os.path.join(settings.out_dir, f"{name}.png")
        try:
            axes = plot(study)
        except (ValueError, RuntimeError) as error:  # e.g. importances of one finished trial
            print(f"no {name} plot: {error}")
            continue
        axes.figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(axes.figure)
        print(f"wrote {path}")


def main(argv=None):
    settings, trial_base, space = settings_and_space(argv)
    if not space:
        raise UserError("nothing to search: give at least one --search_NAME a range or choices")
    os.makedirs(settings.out_dir, exist_ok=True)
    # one tune.py per folder (several machines: a folder each): a trial here that is marked
    # running while no process holds the folder was interrupted
    with run_lock.claim(settings.out_dir, ".tune.lock", "tune.py study"):
        study = tuning.open_study(settings, trial_base, space)
        print(f"study {settings.study!r}: {len(tuning.finished(study))} of {settings.trials} "
              f"trials done; searching {', '.join(space)} on {settings.data}'s validation split",
              flush=True)
        run_study(settings, trial_base, space, study)
        write_results(settings, trial_base, study)
        if settings.plots:
            draw(settings, study)


if __name__ == "__main__":
    run(main)
