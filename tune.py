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
(train.py's run there, and its log), trials.csv, best.json (the best trial's settings, which
`python train.py --settings=best.json` trains with) and with --plots the study's history and
the settings' importances as PNG files.
"""
import contextlib
import csv
import dataclasses
import json
import os
import shlex
import sys
import time
import warnings

from common import UserError, as_record, atomic_path, configure, quiet_native_stderr, run, \
    write_text_atomic
import augment
import model
import run_lock
import run_state
import search_space
import train

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
# train.py's settings that do not change what a trial computes: left out of best.json
_NOT_RECIPE = ("SETTINGS", "OUT_DIR", "PREPARED_DIR", "VERBOSE", "FRESH", "SET_ASIDE",
               "DISTRIBUTE", "TENSORBOARD")
_RANGES = {"TRIALS": "[1, inf)", "PRUNE_AFTER_TRIALS": "[0, inf)",
           "PRUNE_AFTER_EPOCHS": "[0, inf)", "LOST_AFTER": "[1, inf)"}
TRIAL_LOCK = ".trial.lock"  # held by the process running a trial in the trial's folder
_FIXED = ("TRIAL_LOCK",)


def settings_and_space(argv):
    """(the study's settings, the trials' train.py settings without the searched ones, the
    search space {name: (kind, values, log)}), every mistake refused before anything loads."""
    settings = configure(globals(), vars(train), vars(model), vars(augment), argv=argv)
    trial_base = train.defaults(**{name: value for name, value in
                                   dataclasses.asdict(settings).items()
                                   if name in dataclasses.asdict(train.defaults())})
    space = {}
    for name, spec in dataclasses.asdict(settings).items():
        if name.startswith("search_") and spec.strip():
            space[name[len("search_"):]] = search_space.parse_range(name, spec, trial_base)
    return settings, trial_base, space


# ---------------------------------------------------------------------------- the study

def open_study(settings, trial_base, space):
    """The Optuna study, new or as an earlier run of this command left it; refused if that one
    was started with other settings or space (its trials would not compare)."""
    import optuna  # here, not at the top: --help and mistakes answer at once
    import sqlalchemy
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")  # system_attrs
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial: our one line
    os.makedirs(settings.out_dir, exist_ok=True)
    url = settings.storage or f"sqlite:///{os.path.abspath(settings.out_dir)}/study.db"
    try:
        shown_url = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        raise UserError(f"--storage={url}: not a database URL, such as "
                        f"postgresql://user:password@host/db or sqlite:///path") from None
    # one study per folder: its trials' folders and results are named by the number alone
    marker = os.path.join(settings.out_dir, "study.json")
    holds = run_state.read_json(marker) if os.path.exists(marker) else None
    if holds and holds != {"study": settings.study, "storage": shown_url}:
        raise UserError(f"{settings.out_dir} holds study {holds.get('study')!r} of "
                        f"{holds.get('storage')}: give study {settings.study!r} another --out_dir")
    pruner = (optuna.pruners.MedianPruner(settings.prune_after_trials,
                                          settings.prune_after_epochs)
              if settings.prune else optuna.pruners.NopPruner())
    try:
        for attempt in range(3):
            try:
                storage = optuna.storages.RDBStorage(
                    url, heartbeat_interval=max(1, settings.lost_after // 4),
                    grace_period=settings.lost_after, heartbeat_stale_trial_callback=optuna
                    .storages.RetryHeartbeatStaleTrialCallback())
                study = optuna.create_study(storage=storage, study_name=settings.study,
                                            direction="maximize", pruner=pruner,
                                            load_if_exists=True)
                break
            except sqlalchemy.exc.IntegrityError:  # another machine made the tables meanwhile
                if attempt == 2:
                    raise
                time.sleep(1 + attempt)
    except ImportError as error:
        raise UserError(f"--storage={settings.storage}: {error}: install the database's "
                        f"driver (pip install -r requirements.txt has PostgreSQL's)") from None
    except Exception as error:  # SQLAlchemy's: a bad URL, a server that does not answer
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise UserError(f"--storage={settings.storage or url}: cannot open the study there "
                        f"({reason}): check the URL and that the database is up") from None
    if not holds:
        write_text_atomic(marker, json.dumps({"study": settings.study, "storage": shown_url}))
    identity = {"recipe": recipe_of(trial_base, space), "space": {
        name: [kind, list(values), log] for name, (kind, values, log) in space.items()}}
    if not study.user_attrs.get("identity"):
        study.set_user_attr("identity", identity)
    elif study.user_attrs["identity"] != identity:
        was = study.user_attrs["identity"]
        changed = sorted({*was["recipe"], *identity["recipe"]} - {
            key for key in identity["recipe"]
            if was["recipe"].get(key) == identity["recipe"].get(key)})
        changed += [f"search_{name}" for name in sorted({*was["space"], *identity["space"]})
                    if was["space"].get(name) != identity["space"].get(name)]
        raise UserError(f"study {settings.study!r} was started with other settings "
                        f"({', '.join(name.lower() for name in changed)}): run it as it was, "
                        f"or start another with --study=NAME or --out_dir")
    return study


def recipe_of(settings, space=()):
    """The train.py settings that decide what a trial computes, {NAME: value}, without the
    searched ones."""
    return {key: value for key, value in as_record(settings).items()
            if key not in _NOT_RECIPE and key.lower() not in space}


def trial_dir(settings, trial):
    """A trial's folder: that of the trial it runs again, if it does (it resumes there)."""
    import optuna
    first = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return os.path.join(settings.out_dir, f"trial-{trial.number if first is None else first:04d}")


def mend_interrupted(study, settings):
    """Queues again, with the same settings, each trial that was interrupted and has not been
    run again yet: stopped by Ctrl-C, or left running by a process of this machine that died
    (its folder's lock is free: marked failed here, at once). Another machine's lost trial
    waits for --lost_after seconds without a sign of life (Optuna's heartbeat)."""
    import optuna
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback
    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    run_again = {number for trial in trials for number in retry.retry_history(trial)}
    for trial in trials:
        folder = trial_dir(settings, trial)
        lost = (trial.state == state.RUNNING and os.path.isdir(folder)
                and not run_lock.held(folder, TRIAL_LOCK))
        stopped = trial.state == state.FAIL and trial.user_attrs.get("interrupted")
        if (lost or stopped) and trial.number not in run_again:
            if lost:
                study._storage.set_trial_state_values(trial._trial_id, state.FAIL)
            retry()(study, trial)
            print(f"trial {trial.number} was interrupted: it runs again", flush=True)


def counted(study, before=None):
    """Trials that count towards --trials: finished, pruned, running or queued (those
    numbered below `before` only)."""
    import optuna
    state = optuna.trial.TrialState
    return [trial for trial in study.get_trials(deepcopy=False, states=(
        state.COMPLETE, state.PRUNED, state.RUNNING, state.WAITING))
        if before is None or trial.number < before]


class Surplus(Exception):
    """Raised by a trial that other machines' trials have made one too many."""


def objective(settings, trial_base, space, ran):
    """The study's objective: one trial, a train.py run in its own folder, quiet but for its
    log there; reports each epoch's validation accuracy so that the pruner can stop it. Adds
    each trial's number to the list `ran`."""
    import optuna
    with quiet_native_stderr():  # TensorFlow's C++ start-up notices
        import keras
        import tensorflow as tf
    tf.get_logger().setLevel("ERROR")  # each trial's new functions are not "retracing"

    class ReportEachEpoch(keras.callbacks.Callback):
        def __init__(self, trial):
            super().__init__()
            self.trial = trial

        def on_epoch_end(self, epoch, logs=None):
            self.trial.report(logs["val_accuracy"], epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")

    def one_trial(trial):
        ran.append(trial.number)
        if len(counted(trial.study, before=trial.number)) >= settings.trials:
            trial.set_user_attr("surplus", True)
            raise Surplus()
        values = search_space.suggest(trial, space)
        folder = trial_dir(settings, trial)
        os.makedirs(folder, exist_ok=True)
        trial_settings = dataclasses.replace(trial_base, **values, out_dir=folder, verbose=2)
        with run_lock.claim(folder, TRIAL_LOCK, "tune.py trial"), \
                open(os.path.join(folder, "train.log"), "a") as log, \
                contextlib.redirect_stdout(log):
            try:
                record = train.run_training(trial_settings, callbacks=[ReportEachEpoch(trial)])
            except KeyboardInterrupt:  # Optuna marks the trial failed: this one runs again
                trial.set_user_attr("interrupted", True)
                raise
            finally:
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
                    initial=min(settings.trials, len([
                        t for t in counted(study) if t.state in (state.COMPLETE, state.PRUNED)])))
    ran = []
    one_trial = objective(settings, trial_base, space, ran)
    while True:
        mend_interrupted(study, settings)
        if len([t for t in counted(study) if t.state != state.WAITING]) >= settings.trials:
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
    best = best_trial(study)
    return (f"trial {trial.number} ({len(finished(study))}/{settings.trials}): {result} in "
            f"{seconds:.0f} s; {shown}"
            + (f"; best so far: trial {best.number}, {best.value:.4f}" if best else ""))


def shown_value(value):
    return f"{value:.4g}" if isinstance(value, float) else value


def finished(study):
    import optuna
    state = optuna.trial.TrialState
    return study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED))


def best_trial(study):
    import optuna
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


# ---------------------------------------------------------------------------- the results

def write_results(settings, trial_base, study):
    """trials.csv, best.json and the command that trains with the best trial's settings."""
    trials = sorted(finished(study), key=lambda t: t.number)
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
    best = best_trial(study)
    if best is None:
        print("no trial has finished yet: run the same command again to go on")
        return None
    chosen, default = as_record(dataclasses.replace(trial_base, **best.params)), as_record(
        train.defaults())
    order = ["DATA", "SEED", *(name.upper() for name in best.params), *recipe_of(trial_base)]
    differs = {key: chosen[key] for key in dict.fromkeys(order)
               if key in ("DATA", "SEED") or chosen[key] != default[key]}
    command = "python train.py " + " ".join(
        f"--{key.lower()}={shlex.quote(str(value))}" for key, value in differs.items()) + " --out_dir=out/tuned"
    path = os.path.join(settings.out_dir, "best.json")
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
    study = open_study(settings, trial_base, space)
    print(f"study {settings.study!r}: {len(finished(study))} of {settings.trials} trials done; "
          f"searching {', '.join(space)} on {settings.data}'s validation split", flush=True)
    run_study(settings, trial_base, space, study)
    write_results(settings, trial_base, study)
    if settings.plots:
        draw(settings, study)


if __name__ == "__main__":
    run(main)
