"""tune.py: a search over train.py's settings that prunes, resumes after kill -9, shares a study
between workers through a real PostgreSQL server, never reads the test split, and gives the best
trial as settings that train.py reproduces; train.py --settings and --class_weight."""
import csv
import glob
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from conftest import (ROOT, assert_user_error, make_dataset, refusal, run_in_process, run_script,
                      write_pickle)

SEARCHED = ("learning_rate", "batch_size", "dense_units", "filters_1", "filters_2", "dropout",
            "crop_px", "scale", "rotate", "augment_epochs", "label_smoothing", "class_weight")


def only(**space):
    """tune.py options that search these settings alone (the others stay as train.py has them)."""
    return [f"--search_{name}={space.get(name, '')}" for name in SEARCHED]


def study_of(out_dir, url=None):
    import optuna
    return optuna.load_study(study_name="tune", storage=url or f"sqlite:///{out_dir}/study.db")


def digest(folder):
    return {os.path.basename(path): hashlib.sha256(open(path, "rb").read()).hexdigest()
            for path in sorted(glob.glob(os.path.join(folder, "*"))) if os.path.isfile(path)}


class NoTestSplit(dict):
    """The prepared data with its test split out of reach: reading it fails the test."""

    def __getitem__(self, key):
        assert "test" not in key, f"tune.py read {key}"
        return super().__getitem__(key)


def test_tune_prunes_never_reads_test_and_its_best_trains_again_the_same(tmp_path, monkeypatch,
                                                                           capsys):
    import optuna
    import prepare_data
    import train
    import tune
    data = write_pickle(tmp_path / "train.pkl", make_dataset())
    out = tmp_path / "study"
    os.makedirs(out)
    # the first trials' settings fixed in advance, so that one is sure to be hopeless
    queued = optuna.create_study(study_name="tune", storage=f"sqlite:///{out}/study.db",
                                 direction="maximize")
    queued.enqueue_trial({"learning_rate": 3e-3})
    queued.enqueue_trial({"learning_rate": 1e-9})
    prepare = prepare_data.prepare
    monkeypatch.setattr(prepare_data, "prepare", lambda *a, **k: NoTestSplit(prepare(*a, **k)))
    monkeypatch.chdir(tmp_path)
    tune.main([f"--data={data}", f"--out_dir={out}", "--trials=3", "--epochs=2",
               "--prune_after_trials=1", "--prune_after_epochs=0", "--plots",
               *only(learning_rate="1e-9|3e-3")])
    printed = capsys.readouterr().out
    study = study_of(out)
    states = [trial.state.name for trial in study.trials]
    assert states[:2] == ["COMPLETE", "PRUNED"] and len(states) == 3, states
    assert "trial 1 (2/3): pruned after epoch 1" in printed
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert [row["state"] for row in rows] == [state.lower() for state in states]
    assert os.path.getsize(out / "history.png") > 0
    best = json.load(open(out / "best-settings.json"))
    assert best["trial"] == study.best_trial.number and best["settings"]["LEARNING_RATE"] == 3e-3
    # the printed command, and best-settings.json, train exactly the best trial's run again
    command = next(line for line in printed.splitlines() if "train with them:" in line)
    argv = shlex.split(command.split("train with them: ")[1])[2:]
    assert argv[-1] == "--out_dir=out/tuned"
    train.main(argv)
    train.main([f"--settings={out}/best-settings.json", "--out_dir=from-file", "--epochs=2"])
    history = (out / f"trial-{best['trial']:04d}" / "history.csv").read_text()
    assert (tmp_path / "out/tuned/history.csv").read_text() == history
    assert (tmp_path / "from-file/history.csv").read_text() == history
    record = json.load(open(tmp_path / "from-file/best.json"))
    assert record["settings"]["SETTINGS_FROM"]["LEARNING_RATE"] == f"{out}/best-settings.json"
    assert record["settings"]["SETTINGS_FROM"]["EPOCHS"] == "command line"


def test_a_study_killed_mid_trial_finishes_without_redoing_finished_trials(tmp_path,
                                                                            monkeypatch, capsys):
    import tune
    data = write_pickle(tmp_path / "train.pkl", make_dataset())
    args = [f"--data={data}", "--out_dir=study", "--trials=3", "--epochs=2", "--prune=False",
            *only(learning_rate="1e-3..5e-3 log", dropout="0.3..0.5")]
    worker = subprocess.Popen([sys.executable, os.path.join(ROOT, "tune.py"), *args],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_epoch = tmp_path / "study/trial-0001/history.csv"
    deadline = time.time() + 300
    while not first_epoch.exists() and worker.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)  # in trial 1, after its first epoch
    worker.wait()
    finished = digest(tmp_path / "study/trial-0000")
    before = first_epoch.read_text().splitlines()
    assert len(before) == 2, before  # (the header and epoch 1)
    monkeypatch.chdir(tmp_path)
    tune.main(args)  # the same command (here, in this process: TensorFlow is loaded already)
    assert "trial 1 was interrupted: it runs again" in capsys.readouterr().out
    assert digest(tmp_path / "study/trial-0000") == finished  # kept, not trained again
    study = study_of(tmp_path / "study")
    done = [trial for trial in study.trials if trial.state.name == "COMPLETE"]
    assert len(done) == 3 and [t.state.name for t in study.trials].count("FAIL") == 1
    rerun = next(t for t in done if t.system_attrs.get("failed_trial") == 1)
    assert rerun.params == study.trials[1].params
    after = first_epoch.read_text().splitlines()
    assert len(after) == 3 and after[1] == before[1]  # resumed after its first epoch


def test_refusals_come_before_tensorflow_in_one_line(tmp_path, monkeypatch):
    import tune
    data = write_pickle(tmp_path / "train.pkl", make_dataset(per_class=3))
    monkeypatch.chdir(tmp_path)
    for argv, words in [(["--search_dropout=0.5..0.2"], "low < high"),
                        (["--search_dropout=0.2..1.5"], "dropout"),
                        (["--search_batch_size=32|many"], "like 64"),
                        (["--search_learning_rate=0..1e-2 log"], "low > 0"),
                        (["--search_class_weight=off..balanced"], "choices a|b|c"),
                        (["--storage=nosuch://somewhere"], "cannot open the study"),
                        (["--storage=not a url"], "not a database URL"),
                        ([*only()], "nothing to search")]:
        assert words in refusal(tune.main, f"--data={data}", "--out_dir=study", *argv)
    # from the shell: one line, exit code 2, before TensorFlow
    for argv, words in [(["--search_dropout=0.2..1.5"], "dropout"),
                        ([f"--storage=postgresql://user@127.0.0.1:{free_port()}/db"],
                         "database is up")]:
        started = time.time()
        result = run_script("tune.py", f"--data={data}", "--out_dir=study", *argv, cwd=tmp_path)
        assert_user_error(result, words)
        assert "tensorflow" not in result.stderr.lower() and time.time() - started < 30
    tune = [f"--data={data}", "--out_dir=study", "--trials=1", "--epochs=1",
            *only(dropout="0.3..0.5")]
    assert run_in_process("tune.py", *tune, cwd=tmp_path).returncode == 0
    assert_user_error(run_script("tune.py", *tune, "--epochs=2", cwd=tmp_path), "epochs",
                      "--study")
    # a folder holds one study (its trials' folders are named by number)
    assert_user_error(run_script("tune.py", *tune, "--study=longer", cwd=tmp_path),
                      "holds study 'tune'", "another --out_dir")


def test_ctrl_c_and_a_surplus_trial_and_what_tune_refuses(tmp_path, monkeypatch, capsys):
    import optuna
    import train
    import tune
    data = write_pickle(tmp_path / "train.pkl", make_dataset())
    monkeypatch.chdir(tmp_path)
    args = [f"--data={data}", "--out_dir=study", "--trials=1", "--epochs=1",
            *only(dropout="0.3..0.5")]
    run_training = train.run_training

    def stopped(*a, **k):  # Ctrl-C in the middle of the first trial
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "run_training", stopped)
    with pytest.raises(KeyboardInterrupt):
        tune.main(args)
    monkeypatch.setattr(train, "run_training", run_training)
    tune.main(args)  # the same command: the interrupted trial runs again, with its settings
    assert "trial 0 was interrupted: it runs again" in capsys.readouterr().out
    study = study_of(tmp_path / "study")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert study.trials[1].params == study.trials[0].params
    # a trial that finds --trials others numbered below it gives way before it trains
    ran = []
    one_trial = tune.objective(tune.settings_and_space(args)[0], None, {}, ran)
    study.optimize(one_trial, n_trials=1, catch=(tune.Surplus,))
    assert study.trials[-1].state.name == "FAIL" and study.trials[-1].user_attrs["surplus"]
    assert not (tmp_path / f"study/trial-{ran[-1]:04d}").exists()
    # refused: a setting both given and searched, --fresh, data that is not there, another
    # study's folder, a database's password shown
    for argv, words in [([f"--data={data}", "--dropout=0.3", *only(dropout="0.3..0.5")],
                         "given and searched"),
                        ([f"--data={data}", "--fresh", *only(dropout="0.3..0.5")], "--fresh"),
                        (["--data=absent.pkl", *only(dropout="0.3..0.5")], "no such file"),
                        ([*args[:-len(SEARCHED)], "--study=other", *only(dropout="0.3..0.5")],
                         "holds study 'tune'"),
                        ([f"--data={data}", "--out_dir=pg", *only(dropout="0.3..0.5"),
                          f"--storage=postgresql://me:secret@127.0.0.1:{free_port()}/db"],
                         "me:***@")]:
        message = refusal(tune.main, *argv)
        assert words in message and "secret" not in message, message
    optuna.delete_study(study_name="tune", storage=f"sqlite:///{tmp_path}/study/study.db")
    assert "earlier study" in refusal(tune.main, *args)  # its trials' folders are still there


def test_the_search_space_at_the_top_of_tune_py_is_valid():
    import optuna
    import search_space
    import tune
    settings, base, space = tune.settings_and_space([])
    assert sorted(space) == sorted(SEARCHED)
    assert space["learning_rate"] == ("range", [5e-4, 5e-3], True)
    assert space["class_weight"] == ("choices", ["off", "balanced"], False)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        values = search_space.suggest(study.ask(), space)
        for name, value in values.items():
            kind, allowed, _ = space[name]
            assert (value in allowed if kind == "choices" else
                    allowed[0] <= value <= allowed[1] and type(value) is type(allowed[0]))
        tune.train.check_settings(tune.dataclasses.replace(base, **values))


def test_another_machines_lost_trial_runs_again_after_lost_after(tmp_path, monkeypatch):
    import tune
    data = write_pickle(tmp_path / "train.pkl", make_dataset())
    args = [f"--data={data}", f"--storage=sqlite:///{tmp_path}/shared.db", "--trials=2",
            "--epochs=3", "--lost_after=2", "--prune=False", *only(dropout="0.3..0.5")]
    lost = subprocess.Popen([sys.executable, os.path.join(ROOT, "tune.py"), *args,
                             "--out_dir=machine-a"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first_epoch = tmp_path / "machine-a/trial-0000/history.csv"
    deadline = time.time() + 300
    while not first_epoch.exists() and lost.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    lost.send_signal(signal.SIGKILL)  # machine a is gone, in the middle of trial 0
    lost.wait()
    time.sleep(3)  # longer than --lost_after
    monkeypatch.chdir(tmp_path)
    tune.main([*args, "--out_dir=machine-b"])  # machine b (this process)
    study = study_of(None, f"sqlite:///{tmp_path}/shared.db")
    assert [t.state.name for t in study.trials].count("COMPLETE") == 2
    rerun = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 0)
    assert rerun.state.name == "COMPLETE" and rerun.params == study.trials[0].params
    assert (tmp_path / "machine-b/trial-0000/best.keras").exists()  # run again on machine b


def test_settings_file_is_read_first_and_refused_when_wrong(tmp_path):
    import augment
    import model
    import train
    namespaces = vars(train), vars(model), vars(augment)
    (tmp_path / "good.json").write_text(json.dumps({"settings": {"EPOCHS": 7, "dropout": 0.25,
                                                                 "AUGMENT": False}}))
    settings = train.configure(*namespaces, argv=[f"--settings={tmp_path}/good.json",
                                                  "--epochs=3"])
    assert (settings.epochs, settings.augment) == (3, False)  # the shell overrides the file
    origins = {}
    train.configure(*namespaces, argv=[
        f"--settings={tmp_path}/good.json"], origins=origins)
    assert origins == {"EPOCHS": f"{tmp_path}/good.json", "DROPOUT": f"{tmp_path}/good.json",
                       "AUGMENT": f"{tmp_path}/good.json", "SETTINGS": "command line"}
    for content, words in (('{"epochs": 2.5}', "should be like 60"),
                           ('{"nonsense": 1}', "not a setting"),
                           ('{"augment": "yes"}', "should be like true"),
                           ('{"learning_rate": 1e400}', "should be like 0.002"),
                           ('{"out_dir": "/etc"}', "command line only"),
                           ('{"run_id": "x", "settings": {}}', "run's record"),
                           ("[" * 100000, "not a json file"),
                           ("[1, 2]", "json object"), ("{not json", "not a json file")):
        (tmp_path / "bad.json").write_text(content)
        assert_user_error(run_script("train.py", f"--settings={tmp_path}/bad.json",
                                     cwd=tmp_path), *words.split(), "bad.json")
    assert_user_error(run_script("train.py", "--settings=absent.json", cwd=tmp_path),
                      "no such file")


def test_balanced_class_weights_reach_the_loss(tmp_path):
    import train
    x, y = make_dataset(per_class=12, num_classes=4)
    keep = np.concatenate([np.flatnonzero(y == label)[:count] for label, count in
                           zip(range(4), (12, 12, 12, 4))])
    data = write_pickle(tmp_path / "train.pkl", (x[keep], y[keep]))
    weights = train.class_weights(np.array([0, 0, 0, 1]), "balanced")
    assert weights == pytest.approx({0: 4 / 6, 1: 2.0})
    assert train.class_weights(np.array([0, 1]), "off") is None
    losses = {}
    for how in ("off", "balanced"):
        train.main([f"--data={data}", f"--out_dir={tmp_path}/{how}", "--epochs=1",
                    f"--class_weight={how}", f"--prepared_dir={tmp_path}", "--verbose=0"])
        losses[how] = json.load(open(tmp_path / how / "best.json"))["history"][0]["loss"]
    assert losses["off"] != pytest.approx(losses["balanced"], rel=1e-4)
    assert "--class_weight" in refusal(train.main, f"--data={data}", "--class_weight=balanced",
                                       "--teacher=some/best.keras", f"--out_dir={tmp_path}/t")


# ---------------------------------------------------------------------------- PostgreSQL

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A PostgreSQL server on 127.0.0.1, started here from Debian's postgresql package (which
    .ci/run installs), in a folder of its own, stopped and removed afterwards: its URL."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if not found[-1]:
        pytest.skip("no PostgreSQL server here (Debian: apt-get install postgresql)")
    bin_dir = os.path.dirname(found[-1])
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root: as the package's user
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"],
                                                             capture_output=True).returncode:
            pytest.skip("running as root without the postgres user to start the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    folder = tempfile.mkdtemp(prefix="tune-pg-")
    os.chmod(folder, 0o777)
    port = free_port()
    try:
        subprocess.run([*as_user, f"{bin_dir}/initdb", "-D", f"{folder}/data", "-A", "trust",
                        "-U", "postgres", "--no-sync"], check=True, capture_output=True)
        subprocess.run([*as_user, f"{bin_dir}/pg_ctl", "-D", f"{folder}/data", "-w", "-l",
                        f"{folder}/log", "-o", f"-c listen_addresses=127.0.0.1 -p {port} "
                        f"-k {folder} -c fsync=off", "start"], check=True, capture_output=True)
    except (subprocess.CalledProcessError, OSError) as error:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"the PostgreSQL server did not start: {error}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, f"{bin_dir}/pg_ctl", "-D", f"{folder}/data", "-m",
                        "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_one_study_in_postgresql(tmp_path, postgres):
    data = write_pickle(tmp_path / "train.pkl", make_dataset())
    args = [f"--data={data}", f"--storage={postgres}", "--trials=4", "--epochs=1",
            *only(learning_rate="1e-3..5e-3 log", dropout="0.3..0.5")]
    workers = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tune.py"), *args,
                                 f"--out_dir=machine-{name}"], cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name in "ab"]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    study = study_of(None, postgres)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4
    folders = [os.path.basename(path) for name in "ab"
               for path in glob.glob(str(tmp_path / f"machine-{name}/trial-*"))]
    assert sorted(folders) == sorted(f"trial-{t.number:04d}" for t in finished)  # each once
    assert len({json.dumps(t.params, sort_keys=True) for t in finished}) == 4
    assert all(len(glob.glob(str(tmp_path / f"machine-{name}/trial-*"))) for name in "ab")
    # the study's best, as any worker reports it once the study is done
    result = run_script("tune.py", *args, "--out_dir=machine-c", cwd=tmp_path)
    assert result.returncode == 0 and not glob.glob(str(tmp_path / "machine-c/trial-*"))
    assert json.load(open(tmp_path / "machine-c/best-settings.json"))["trial"] == study.best_trial.number
