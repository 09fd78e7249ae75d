"""tune.py's study in its database: opened (or refused, when it was started with other
settings), its interrupted trials queued again, its trials counted. Optuna does the storing;
this is what a study of train.py runs needs around it.
"""
import json
import os
import random
import secrets
import time
import warnings

from common import UserError, as_record, write_text_atomic
import run_lock
import run_state

# train.py's settings that do not change what a trial computes: not part of a study's recipe
NOT_RECIPE = ("SETTINGS", "OUT_DIR", "PREPARED_DIR", "VERBOSE", "FRESH", "SET_ASIDE",
              "DISTRIBUTE", "TENSORBOARD")
ALREADY_EXISTS = ("42710", "42P07", "23505")  # PostgreSQL: duplicate object, table or key
TRIAL_LOCK = ".trial.lock"  # held by the process running a trial in the trial's folder


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
    # one study per folder: its trials' folders are named by their numbers alone
    marker = os.path.join(settings.out_dir, "study.json")
    holds = run_state.read_json(marker) if os.path.exists(marker) else None
    if holds and (holds.get("study"), holds.get("storage")) != (settings.study, shown_url):
        raise UserError(f"{settings.out_dir} holds study {holds.get('study')!r} of "
                        f"{holds.get('storage')}: give study {settings.study!r} another --out_dir")
    pruner = (optuna.pruners.MedianPruner(settings.prune_after_trials,
                                          settings.prune_after_epochs)
              if settings.prune else optuna.pruners.NopPruner())
    try:
        for attempt in range(5):
            try:
                storage = optuna.storages.RDBStorage(
                    url, heartbeat_interval=max(1, settings.lost_after // 4),
                    grace_period=settings.lost_after, heartbeat_stale_trial_callback=optuna
                    .storages.RetryHeartbeatStaleTrialCallback())
                study = optuna.create_study(storage=storage, study_name=settings.study,
                                            direction="maximize", pruner=pruner,
                                            load_if_exists=True)
                break
            # another machine made the tables, their types or the study meanwhile (PostgreSQL:
            # "type studydirection already exists"): it is there now
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as error:
                made_meanwhile = isinstance(error, sqlalchemy.exc.IntegrityError) or getattr(
                    error.orig, "sqlstate", None) in ALREADY_EXISTS
                if attempt == 4 or not made_meanwhile:
                    raise
                time.sleep(0.5 + random.random() * (1 + attempt))
    except ImportError as error:
        raise UserError(f"--storage={shown_url}: {error}: install the database's driver (pip "
                        f"install -r requirements.txt has PostgreSQL's)") from None
    except Exception as error:  # SQLAlchemy's: a bad URL, a server that does not answer
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise UserError(f"--storage={shown_url}: cannot open the study there ({reason}): check "
                        f"the URL and that the database is up") from None
    identity = {"recipe": recipe_of(trial_base, space), "space": {
        name: [kind, list(values), log] for name, (kind, values, log) in space.items()}}
    was = study.user_attrs.get("identity")
    if not was:
        if holds:  # (its database was replaced: the new trial 0 would land in the old one's)
            raise UserError(f"{settings.out_dir} holds the trials of an earlier study "
                            f"{settings.study!r}, not of the one in {shown_url}: give this "
                            f"one another --out_dir")
        was = {**identity, "token": secrets.token_hex(8)}
        study.set_user_attr("identity", was)
    if not holds and not url.startswith("sqlite"):
        # machines that start a study together may each write an identity: the last one
        # written stands, and each reads it back once all have written (one SQLite file has
        # one tune.py at a time: its folder's lock)
        time.sleep(1)
        was = study.user_attrs["identity"]
    if holds and holds.get("token") != was["token"]:
        raise UserError(f"{settings.out_dir} holds the trials of another study "
                        f"{settings.study!r}: give this one another --out_dir")
    if not holds:
        write_text_atomic(marker, json.dumps({"study": settings.study, "storage": shown_url,
                                              "token": was["token"]}))
    if (was["recipe"], was["space"]) != (identity["recipe"], identity["space"]):
        changed = sorted({*was["recipe"], *identity["recipe"]} - {
            key for key in identity["recipe"]
            if was["recipe"].get(key) == identity["recipe"].get(key)})
        changed += [f"search_{name}" for name in sorted({*was["space"], *identity["space"]})
                    if was["space"].get(name) != identity["space"].get(name)]
        raise UserError(f"study {settings.study!r} was started with other settings "
                        f"({', '.join(name.lower() for name in changed)}): run it as it was, "
                        f"or start another in another --out_dir (and --study=NAME, if its "
                        f"--storage is shared)")
    return study


def recipe_of(settings, space=()):
    """The train.py settings that decide what a trial computes, {NAME: value}, without the
    searched ones."""
    return {key: value for key, value in as_record(settings).items()
            if key not in NOT_RECIPE and key.lower() not in space}


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
    optuna.storages.fail_stale_trials(study)  # lost elsewhere: failed and queued by Optuna
    trials = study.get_trials(deepcopy=False)
    run_again = {number for trial in trials for number in retry.retry_history(trial)}
    for trial in trials:
        folder = trial_dir(settings, trial)
        lost = (trial.state == state.RUNNING and os.path.isdir(folder)
                and not run_lock.held(folder, TRIAL_LOCK))
        stopped = trial.state == state.FAIL and trial.user_attrs.get("interrupted")
        if (lost or stopped) and trial.number not in run_again:
            if lost:
                study.tell(trial.number, state=state.FAIL, skip_if_finished=True)
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


def finished(study):
    import optuna
    state = optuna.trial.TrialState
    return study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED))


def best_trial(study):
    import optuna
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None
