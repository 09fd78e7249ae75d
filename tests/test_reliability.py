"""Never lose a run: kill and resume exactly, refused resumes, atomic writes, best-only
checkpoints, early stopping, learning-rate drops, NaN guard, repeatability, and training on
several devices and workers."""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile

import keras
import numpy as np
import pytest

import devices
import prepare_data
import run_lock
import run_state
import training
import train
from common import UserError, as_record, atomic_path
from conftest import (ROOT, Killed, assert_user_error, killed_after, make_dataset, refusal,
                      run_each_in_process, run_in_process, run_script, write_pickle)


def history_rows(out_dir):
    path = os.path.join(out_dir, "history.csv")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return max(0, sum(1 for _ in f) - 1)


def weights_of(path):
    return [np.asarray(w) for w in keras.saving.load_model(path, compile=False).get_weights()]


def test_killed_run_resumes_exactly_like_an_uninterrupted_one(tmp_path):
    """A real kill -9 in the middle of a run (plateau: its rate comes from the history; the
    cosine schedule's comes from the step, resumed in the next test)."""
    data = write_pickle(tmp_path / "train.pkl", make_dataset(per_class=20))
    args = [sys.executable, os.path.join(ROOT, "train.py"), f"--data={data}", "--epochs=5",
            "--patience=100", "--batch_size=16", "--deterministic=True", "--verbose=2",
            "--lr_schedule=plateau"]
    # the uninterrupted run beside the one that is killed (deterministic: the same either way)
    whole_errors = open(tmp_path / "whole.err", "w+")
    whole = subprocess.Popen([*args, "--out_dir=whole"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=whole_errors)
    victim = subprocess.Popen([*args, "--out_dir=out"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while history_rows(tmp_path / "out") < 2 and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # into the next epoch, or into the writes that end this one
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert (tmp_path / "out" / ".lock").exists()  # left by the kill, but its lock died with it
    points = os.listdir(tmp_path / "out" / "resume")
    saved = max(int(name[6:10]) for name in points if name.startswith("epoch-")
                and name.endswith(".keras"))  # a half-written point has a temporary name
    assert 1 <= saved < 5, points

    with whole_errors:
        assert whole.wait(timeout=600) == 0, (tmp_path / "whole.err").read_text()[-3000:]
    resumed = subprocess.run([*args, "--out_dir=out"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming the run in out after epoch {saved}" in resumed.stdout
    assert f"Epoch {saved + 1}/5" in resumed.stdout and "Epoch 1/5" not in resumed.stdout
    # the same epochs, losses, accuracies and learning rates, and the same weights
    expected = json.loads((tmp_path / "whole" / "best.json").read_text())
    record = json.loads((tmp_path / "out" / "best.json").read_text())
    assert record["history"] == expected["history"]
    assert record["best_epoch"] == expected["best_epoch"] > saved  # weights after the resume
    for a, b in zip(weights_of(tmp_path / "out" / "best.keras"),
                    weights_of(tmp_path / "whole" / "best.keras")):
        np.testing.assert_array_equal(a, b)
    assert history_rows(tmp_path / "out") == 5
    assert not (tmp_path / "out" / "resume").exists()
    assert sorted(os.listdir(tmp_path / "out")) == ["best.json", "best.keras", "history.csv"]

    # --fresh starts over, and a worse epoch never replaces the better model of the same data
    kept = {name: (tmp_path / "out" / name).read_bytes()
            for name in ("best.keras", "best.json", "history.csv")}
    fresh = run_in_process("train.py", f"--data={data}", "--epochs=1", "--fresh=True",
                           "--learning_rate=0", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "resuming" not in fresh.stdout
    assert "out/best.keras (val_accuracy" in fresh.stdout and "replaced only if this run beats it" \
        in fresh.stdout
    for name, content in kept.items():
        assert (tmp_path / "out" / name).read_bytes() == content, name
    own = glob.glob(str(tmp_path / "out" / "history-*.csv"))
    assert len(own) == 1 and sum(1 for _ in open(own[0])) == 2  # its one epoch, beside


def test_a_cosine_run_killed_after_a_resume_point_resumes_at_its_step(tmp_path, monkeypatch,
                                                                      capsys):
    """The cosine schedule's rate is a function of the step: a run killed right after its
    second epoch's resume point goes on with the rates, losses and weights of a run never
    stopped (in this process: the real kill -9 is the test above)."""
    data = write_pickle(tmp_path / "train.pkl", make_dataset(per_class=6))
    args = [data, "--epochs=4", "--patience=100", "--batch_size=16", "--lr_schedule=cosine",
            "--dense_units=32", "--verbose=0", f"--prepared_dir={tmp_path / 'cache'}"]
    train.main([*args, f"--out_dir={tmp_path / 'whole'}"])
    killed_after(0, tmp_path / "out", monkeypatch, named="epoch-0002.keras")
    with pytest.raises(Killed):
        train.main([*args, f"--out_dir={tmp_path / 'out'}"])
    monkeypatch.undo()
    capsys.readouterr()
    train.main([*args, f"--out_dir={tmp_path / 'out'}"])
    resumed = capsys.readouterr().out
    assert "resuming the run in" in resumed and "after epoch 2" in resumed
    expected, record = (json.loads((tmp_path / name / "best.json").read_text())
                        for name in ("whole", "out"))
    rates = [row["learning_rate"] for row in record["history"]]
    assert len(rates) == 4 and rates == sorted(rates, reverse=True) and rates[0] > rates[-1]
    assert record["history"] == expected["history"]
    for a, b in zip(weights_of(tmp_path / "out" / "best.keras"),
                    weights_of(tmp_path / "whole" / "best.keras")):
        np.testing.assert_array_equal(a, b)


def test_killed_at_every_write_a_run_resumes_to_the_uninterrupted_history(tmp_path,
                                                                          monkeypatch):
    """A kill between any two of the epoch-end writes (the best model, its record, the
    histories, the resume point, the removal of the one before): the same command resumes
    and ends with exactly the history of a run that was never stopped."""
    data = write_pickle(tmp_path / "train.pkl", make_dataset(per_class=6))
    args = [data, "--epochs=2", "--batch_size=16", "--lr_schedule=plateau", "--patience=10",
            "--lr_drop_patience=1", "--dense_units=32", "--verbose=0",
            f"--prepared_dir={tmp_path / 'cache'}"]
    operations = killed_after(0, tmp_path / "whole", monkeypatch)  # count them, kill none
    train.main([*args, f"--out_dir={tmp_path / 'whole'}"])
    monkeypatch.undo()
    whole = json.loads((tmp_path / "whole" / "best.json").read_text())
    assert len(operations) >= 8, operations  # run.json, then 4 or more an epoch
    for moment in range(1, len(operations) + 1):
        out_dir = tmp_path / f"killed-{moment}"
        killed_after(moment, out_dir, monkeypatch)
        with pytest.raises(Killed):
            train.main([*args, f"--out_dir={out_dir}"])
        monkeypatch.undo()
        train.main([*args, f"--out_dir={out_dir}"])  # the same command again
        record = json.loads((out_dir / "best.json").read_text())
        assert record["history"] == whole["history"], moment
        assert record["best_epoch"] == whole["best_epoch"], moment
        with open(out_dir / "history.csv") as f:
            assert sum(1 for _ in f) == 3, moment
        assert sorted(os.listdir(out_dir)) == ["best.json", "best.keras", "history.csv"], moment


def test_a_run_killed_before_its_first_resume_point_starts_again_as_itself(tmp_path,
                                                                          monkeypatch, capsys):
    """Killed after epoch 1 wrote best.keras, before any resume point: the same command starts
    that run again from epoch 1, as the same run, so the model it wrote is its own, and with a
    rate of 0 (no epoch beats the first) everything ends in history.csv, not beside it."""
    data = write_pickle(tmp_path / "train.pkl", make_dataset(per_class=6))
    args = [data, "--epochs=2", "--learning_rate=0", "--dense_units=32", "--verbose=0",
            f"--prepared_dir={tmp_path / 'cache'}", f"--out_dir={tmp_path / 'out'}"]
    killed_after(2, tmp_path / "out", monkeypatch)  # run.json, then best.keras of epoch 1
    with pytest.raises(Killed):
        train.main(args)
    monkeypatch.undo()
    capsys.readouterr()
    train.main(args)
    assert "saved" in capsys.readouterr().out
    record = json.loads((tmp_path / "out" / "best.json").read_text())
    assert len(record["history"]) == 2 and record["best_epoch"] == 1
    assert history_rows(tmp_path / "out") == 2 and not glob.glob(str(tmp_path / "out" / "history-*"))


def test_a_second_run_in_a_busy_folder_is_refused_and_the_first_runs_as_if_alone(tmp_path):
    data = write_pickle(tmp_path / "train.pkl", make_dataset(per_class=20))
    args = [sys.executable, os.path.join(ROOT, "train.py"), f"--data={data}", "--epochs=3",
            "--batch_size=16", "--verbose=2"]
    first = subprocess.Popen([*args, "--out_dir=out"], cwd=tmp_path, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (tmp_path / "out" / "resume" / "run.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = run_script("train.py", f"--data={data}", "--epochs=1", "--fresh=True", cwd=tmp_path)
    assert_user_error(second, "out is in use by another training run", f"pid {first.pid}")
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    alone = run_in_process("train.py", *args[2:], "--out_dir=alone", cwd=tmp_path)  # alone
    assert alone.returncode == 0, alone.stderr[-3000:]
    ran, expected = (json.loads((tmp_path / name / "best.json").read_text())
                     for name in ("out", "alone"))
    assert ran["history"] == expected["history"] and len(ran["history"]) == 3
    assert not (tmp_path / "out" / ".lock").exists()  # free again: a run there starts
    again = run_in_process("train.py", f"--data={data}", "--epochs=1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]


def test_the_folder_lock_is_exclusive_and_released(tmp_path):
    with run_lock.claim(str(tmp_path)):
        holder = (tmp_path / ".lock").read_text()
        assert f"pid {os.getpid()}" in holder
        with pytest.raises(UserError, match=f"in use by another training run \\(pid {os.getpid()}"):
            with run_lock.claim(str(tmp_path)):
                pass
    assert not (tmp_path / ".lock").exists()
    (tmp_path / ".lock").write_text("pid 1: a run killed long ago")  # its lock died with it
    with run_lock.claim(str(tmp_path)):
        assert f"pid {os.getpid()}" in (tmp_path / ".lock").read_text()


def test_a_best_model_of_other_data_is_set_aside_never_deleted(trained_tiny, tmp_path):
    work, _, _ = trained_tiny
    shutil.copytree(work / "out", tmp_path / "out")
    earlier = json.loads((tmp_path / "out" / "best.json").read_text())
    kept = {name: (tmp_path / "out" / name).read_bytes()
            for name in ("best.keras", "best.json", "history.csv")}
    other = write_pickle(tmp_path / "other.pkl", make_dataset(seed=1))
    refused = run_script("train.py", f"--data={other}", "--epochs=1", "--fresh=True",
                         cwd=tmp_path)
    assert_user_error(refused, "other data", "--set_aside=True")
    moved = run_in_process("train.py", f"--data={other}", "--epochs=1", "--set_aside=True",
                           cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr[-3000:]
    aside = tmp_path / "out" / "earlier" / earlier["run_id"]
    assert f"aside into out/earlier/{earlier['run_id']}" in moved.stdout
    for name, content in kept.items():
        assert (aside / name).read_bytes() == content, name
    record = json.loads((tmp_path / "out" / "best.json").read_text())
    assert record["data"]["source"] == other and record["run_id"] != earlier["run_id"]


def test_records_cut_short_by_a_kill_are_rewritten_from_the_model(tmp_path, capsys):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    run_info = {"run_id": "r", "data": {"source": "d.pkl", "source_sha256": "s", "seed": 1,
                                        "split_sha256": "t"}}
    keeper = run_state.keep_best(str(tmp_path), run_info, [], None, None)
    keeper.set_model(model)
    keeper.on_epoch_end(0, {"val_accuracy": 0.5, "val_loss": 1.0, "loss": 1.0})
    stale = (tmp_path / "best.json").read_text()
    keeper.on_epoch_end(1, {"val_accuracy": 0.7, "val_loss": 1.0, "loss": 1.0})
    (tmp_path / "best.json").write_text(stale)  # as if killed between best.keras and best.json
    best = run_state.best_record(str(tmp_path))  # the record inside the model: epoch 2
    assert best["best_epoch"] == 2 and best["val_accuracy"] == 0.7
    # evaluate, predict, serve and export believe the model's own record too
    import inference
    assert inference.read_record(str(tmp_path / "best.keras"))["best_epoch"] == 2
    assert "using the record inside the model" in capsys.readouterr().err
    run_state.start_or_resume(str(tmp_path), run_info["data"], {}, True, set())
    assert "rewrote it and history.csv" in capsys.readouterr().err
    record = json.loads((tmp_path / "best.json").read_text())
    assert record["best_epoch"] == 2 and len(record["history"]) == 2


def recipe(train_images=20000, **overrides):
    """train.py's settings with these overrides, resolved for a split of this size."""
    return train.resolve(train.defaults(**overrides), train_images)[0]


@pytest.fixture
def unfinished_run(tmp_path, tiny_pickle):
    """An OUT_DIR holding an unfinished run (its record and a resume point) with the default
    settings; returns (out dir, data fingerprint)."""
    data = prepare_data.prepare(tiny_pickle, train.SEED, str(tmp_path / "cache"), verbose=False)
    fingerprint = run_state.data_fingerprint(data["manifest"], data["x_train"])
    resume = tmp_path / "out" / "resume"
    resume.mkdir(parents=True)
    (resume / "run.json").write_text(json.dumps(
        {"run_id": "r1", "settings": as_record(recipe()), "data": fingerprint}))
    write_resume_point(resume / "epoch-0002.keras", "r1", 2)
    return str(tmp_path / "out"), fingerprint


def write_resume_point(path, run_id, epochs):
    """A stand-in resume point: a zip holding the note that train.py writes into its own."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(run_state.RESUME_NOTE, json.dumps(
            {"run_id": run_id, "history": [{"epoch": e + 1, "val_accuracy": 0.5}
                                           for e in range(epochs)]}))


def test_resume_with_other_settings_is_refused(unfinished_run):
    out_dir, fingerprint = unfinished_run

    def start(fresh=False, **overrides):
        return run_state.start_or_resume(out_dir, fingerprint, as_record(recipe(**overrides)),
                                         fresh, train.RESUMABLE_CHANGES)
    run_info, resume_path, epochs_done, history, _ = start(verbose=0)  # changes nothing computed
    assert run_info["run_id"] == "r1" and epochs_done == 2 and resume_path.endswith("0002.keras")
    assert [row["epoch"] for row in history] == [1, 2]  # from the resume point itself
    with pytest.raises(UserError, match=r"--learning_rate=0.002.*--rotate=12.*--fresh=True"):
        start(learning_rate=0.01, rotate=30)
    # the way out: start over with the new settings
    assert start(fresh=True, learning_rate=0.01, rotate=30)[2] == 0


def test_a_resume_whose_records_disagree_is_refused(unfinished_run):
    out_dir, fingerprint = unfinished_run
    point = os.path.join(out_dir, "resume", "epoch-0002.keras")
    for run_id, epochs in (("another run", 2), ("r1", 1)):  # not this run's, or one epoch short
        write_resume_point(point, run_id, epochs)
        with pytest.raises(UserError, match="cannot resume exactly: start over with --fresh"):
            run_state.start_or_resume(out_dir, fingerprint, as_record(recipe()), False,
                                      train.RESUMABLE_CHANGES)
    write_resume_point(point, "r1", 2)  # a names file beside the data that changes its classes
    with pytest.raises(UserError, match="other classes"):
        run_state.start_or_resume(out_dir, {**fingerprint, "num_classes": 6},
                                  as_record(recipe()), False, train.RESUMABLE_CHANGES)
    with open(point, "w") as f:
        f.write("not a zip: a point from before resume points held their history")
    with pytest.raises(UserError, match="cannot resume exactly"):
        run_state.start_or_resume(out_dir, fingerprint, as_record(recipe()), False,
                                  train.RESUMABLE_CHANGES)


def test_atomic_path_keeps_the_old_file_when_a_write_fails(tmp_path):
    target = tmp_path / "best.keras"
    target.write_text("good model")
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half a mod")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "good model"
    assert os.listdir(tmp_path) == ["best.keras"]


def test_best_checkpoint_is_only_replaced_by_a_better_one(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    keeper = run_state.keep_best(str(tmp_path), {"run_id": "r", "data": {}}, [], None, None)
    keeper.set_model(model)
    best = tmp_path / "best.keras"

    def epoch(number, accuracy, loss=1.0):
        keeper.on_epoch_end(number, {"val_accuracy": accuracy, "val_loss": loss, "loss": 1.0})
        return best.read_bytes(), json.loads((tmp_path / "best.json").read_text())

    first, record = epoch(0, 0.5)
    assert record["best_epoch"] == 1 and record["val_accuracy"] == 0.5
    model.layers[0].kernel.assign(model.layers[0].kernel + 1)
    same, record = epoch(1, 0.4)
    assert same == first and record["best_epoch"] == 1 and len(record["history"]) == 2
    better, record = epoch(2, 0.6)
    assert better != first and record["best_epoch"] == 3
    model.layers[0].kernel.assign(model.layers[0].kernel + 1)
    tie, record = epoch(3, 0.6, loss=0.5)  # as accurate, more confident: better
    assert tie != better and record["best_epoch"] == 4
    better = tie

    def broken_save(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(model, "save", broken_save)
    with pytest.raises(OSError):
        keeper.on_epoch_end(4, {"val_accuracy": 0.9, "val_loss": 0.1, "loss": 1.0})
    assert best.read_bytes() == better
    assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]


def test_a_run_that_does_not_beat_the_earlier_best_leaves_its_records(trained_tiny, tmp_path):
    work, data, _ = trained_tiny
    shutil.copytree(work / "out", tmp_path / "out")
    kept = {name: (tmp_path / "out" / name).read_bytes()
            for name in ("best.keras", "best.json", "history.csv")}
    # a learning rate of 0 never gets past its random start
    result = run_in_process("train.py", f"--data={data}", "--learning_rate=0", "--epochs=2",
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "keeps an earlier run's better model" in result.stdout
    for name, content in kept.items():
        assert (tmp_path / "out" / name).read_bytes() == content, name
    own = glob.glob(str(tmp_path / "out" / "history-*.csv"))
    assert len(own) == 1 and f"this run's history is in {os.path.relpath(own[0], tmp_path)}" \
        in result.stdout
    assert history_rows(tmp_path / "out") == 2 and sum(1 for _ in open(own[0])) == 3


def test_a_later_run_keeps_its_history_beside_until_it_wins(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    (tmp_path / "history.csv").write_text("epoch,val_accuracy\n1,0.5\n")  # the earlier run's
    earlier = {"run_id": "earlier", "val_accuracy": 0.5, "val_loss": 1.0, "best_epoch": 1}
    keeper = run_state.keep_best(str(tmp_path), {"run_id": "later", "data": {}}, [], earlier,
                                None)
    keeper.set_model(model)
    keeper.on_epoch_end(0, {"val_accuracy": 0.4, "val_loss": 1.0, "loss": 1.0})
    assert (tmp_path / "history.csv").read_text() == "epoch,val_accuracy\n1,0.5\n"
    assert history_rows(tmp_path) == 1 and not (tmp_path / "best.keras").exists()
    assert (tmp_path / "history-later.csv").read_text().count("\n") == 2
    keeper.on_epoch_end(1, {"val_accuracy": 0.6, "val_loss": 1.0, "loss": 1.0})
    assert (tmp_path / "best.keras").exists() and not (tmp_path / "history-later.csv").exists()
    assert history_rows(tmp_path) == 2  # both epochs of the run that now owns best.keras
    assert json.loads((tmp_path / "best.json").read_text())["run_id"] == "later"


def test_a_run_that_beats_the_earlier_best_takes_its_history_along(tmp_path, tiny_pickle,
                                                                   monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    train.main([tiny_pickle, "--learning_rate=0", "--epochs=1", "--verbose=0"])  # a weak best
    weak = (tmp_path / "out" / "best.keras").read_bytes()
    train.main([tiny_pickle, "--epochs=3", "--verbose=0"])  # its first epoch may not beat it
    assert (tmp_path / "out" / "best.keras").read_bytes() != weak
    record = json.loads((tmp_path / "out" / "best.json").read_text())
    assert len(record["history"]) == history_rows(tmp_path / "out") == 3
    assert not glob.glob(str(tmp_path / "out" / "history-*.csv"))  # moved into history.csv
    assert "saved out/best.keras" in capsys.readouterr().out


def test_early_stopping_ends_a_run_that_stopped_improving(tmp_path, tiny_pickle):
    # with a learning rate of 0 nothing changes after the first epoch: stop after PATIENCE more
    result = run_in_process("train.py", f"--data={tiny_pickle}", "--learning_rate=0",
                            "--patience=2", "--epochs=20", "--verbose=2", "--lr_schedule=plateau",
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "best.json").read_text())
    assert len(record["history"]) == 3 and record["best_epoch"] == 1
    assert "Epoch 4/20" not in result.stdout


def test_the_size_rule_chooses_cosine_for_a_small_split_and_plateau_for_a_large_one(
        tmp_path, tiny_pickle):
    # cosine decays over every epoch, so it never stops early; plateau stops after PATIENCE
    cases = ((5000, "cosine", "on throughout", 4),
             (100, "plateau", "on for the first 15 epochs, then off", 2))
    results = run_each_in_process(*[
        ("train.py", f"--data={tiny_pickle}", "--learning_rate=0", "--patience=1", "--epochs=4",
         f"--small_data={small_data}", f"--out_dir={schedule}") for small_data, schedule, _, _
        in cases], cwd=tmp_path)
    for (small_data, schedule, augmentation, epochs), result in zip(cases, results):
        assert result.returncode == 0, result.stderr[-3000:]
        images = int(re.search(r"training on (\d+) images", result.stdout).group(1))
        assert 100 < images < 5000
        relation = "fewer than" if schedule == "cosine" else "at least"
        assert (f"chose learning rate {schedule} and augmentation {augmentation}, as {images} "
                f"training images are {relation} --small_data={small_data}") in result.stdout
        record = json.loads((tmp_path / schedule / "best.json").read_text())
        assert record["settings"]["LR_SCHEDULE"] == schedule and len(record["history"]) == epochs
        assert record["settings"]["AUGMENT_EPOCHS"] == (0 if schedule == "cosine" else 15)


def test_settings_out_of_range_are_refused():
    for overrides, words in (({"small_data": -1}, "--small_data=-1"),
                             ({"batch_size": 0}, "--batch_size"), ({"epochs": 0}, "--epochs"),
                             ({"lr_schedule": "cyclic"}, "auto, plateau, cosine or constant"),
                             ({"backend": "cv2"}, "tf or imgaug"),
                             ({"backend": "imgaug", "elastic": 2.0}, "--elastic needs --backend=tf"),
                             ({"backend": "imgaug", "stroke": 0.5}, "--stroke needs --backend=tf"),
                             ({"precision": "float16"}, "float32 or mixed_bfloat16")):
        with pytest.raises(UserError, match=words):
            train.check_settings(train.defaults(**overrides))
    train.check_settings(train.defaults())  # the defaults pass
    # another network (bench/deeper.py's) has no model.py settings to check
    train.check_settings(train.defaults(precision="float16"), model_settings=False)


def test_settings_that_are_set_are_kept_by_the_size_rule():
    kept, why = train.resolve(train.defaults(lr_schedule="plateau", augment_epochs=3), 10)
    assert why == "" and (kept.lr_schedule, kept.augment_epochs) == ("plateau", 3)
    chosen, why = train.resolve(train.defaults(lr_schedule="plateau"), 10)
    assert "augmentation on throughout" in why
    assert (chosen.lr_schedule, chosen.augment_epochs) == ("plateau", 0)
    chosen, why = train.resolve(train.defaults(), 10 ** 6)
    assert why.startswith("learning rate plateau and augmentation on for the first 15 epochs")
    assert train.LR_SCHEDULE == "auto" and train.AUGMENT_EPOCHS == -1  # the defaults stay
    with pytest.raises(ValueError, match="resolve"):  # no recipe with "auto" left in it
        training.new_model(train.defaults())


def test_learning_rate_drops_on_a_plateau_and_cosine_decays():
    settings = recipe(learning_rate=1.0, lr_drop_patience=2, lr_drop_factor=0.5,
                      lr_schedule="plateau")
    scores = [0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7]
    history = [{"val_accuracy": s, "val_loss": 1.0} for s in scores]
    rates = [training.plateau_learning_rate(history[:n], settings) for n in range(len(history) + 1)]
    assert rates == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125]
    other = recipe(learning_rate=1.0, lr_drop_patience=3, lr_drop_factor=0.1)
    assert training.plateau_learning_rate(history, other) == pytest.approx(0.1)  # one drop

    model = training.new_model(settings)
    state = training.epoch_state(history, settings, model)
    state.set_model(model)
    state.on_epoch_begin(len(history))
    assert float(model.optimizer.learning_rate) == 0.125  # what the next epoch trains with

    model = training.new_model(recipe(learning_rate=1.0, lr_schedule="cosine", epochs=4),
                            steps_per_epoch=10)
    for step, expected in ((0, 1.0), (20, 0.5), (40, 0.0)):  # 4 epochs of 10 steps
        model.optimizer.iterations.assign(step)
        assert abs(float(model.optimizer.learning_rate) - expected) < 1e-6, step


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_good_model(trained_tiny, tmp_path,
                                                                    monkeypatch):
    work, data, _ = trained_tiny
    shutil.copytree(work / "out", tmp_path / "out")
    good = (tmp_path / "out" / "best.keras").read_bytes()
    build = training.new_model

    def diverged(*args, **kwargs):  # a network whose weights have blown up
        network = build(*args, **kwargs)
        logits = network.get_layer("logits")
        logits.bias.assign(np.full(logits.bias.shape, np.nan))
        return network
    monkeypatch.setattr(training, "new_model", diverged)
    monkeypatch.chdir(tmp_path)
    # the run stops at the first batch whose loss is not finite, saying what to do
    message = refusal(train.main, data, "--fresh=True", "--epochs=2", "--verbose=0")
    assert "diverged" in message and "--learning_rate" in message
    assert (tmp_path / "out" / "best.keras").read_bytes() == good


def test_same_seed_same_run_and_the_determinism_switch(tmp_path, tiny_pickle):
    runs, logs = [], []
    switches = (("a", "--deterministic=False"), ("b", "--deterministic=True"))
    # (the switch cannot be turned off again: its run is a process of its own)
    from tensorflow.python.framework import config  # (the public half lacks the query)
    assert not config.is_op_determinism_enabled()  # no other test here turned it on
    results = [run_in_process("train.py", f"--data={tiny_pickle}", "--epochs=2", "--out_dir=a",
                              switches[0][1], cwd=tmp_path),
               run_script("train.py", f"--data={tiny_pickle}", "--epochs=2", "--out_dir=b",
                          switches[1][1], cwd=tmp_path)]
    for (name, _), trained in zip(switches, results):
        assert trained.returncode == 0, trained.stderr[-3000:]
        runs.append(json.loads((tmp_path / name / "best.json").read_text())["history"])
        logs.append(trained.stdout)
    assert runs[0] == runs[1]  # on a CPU, repeatable without any switch
    # --deterministic=True turns TensorFlow's op determinism on (GPU kernels need it): the
    # log line comes from TensorFlow's own report of its state after the switch
    assert "op determinism: on" not in logs[0] and "op determinism: on" in logs[1]


def test_multiworker_training_refuses_a_keras_the_mend_does_not_know():
    devices.check_keras_for_multiworker("3.15.1")  # the version the two-worker test passed on
    with pytest.raises(UserError, match=r"tested only with Keras 3.15 \(this is 3.16.0\)"):
        devices.check_keras_for_multiworker("3.16.0")


def test_mirrored_strategy_path_runs_on_one_cpu_replica(tmp_path, tiny_pickle):
    # with the optional levers switched on, so that their code paths run under a strategy too
    trained = run_in_process("train.py", f"--data={tiny_pickle}", "--distribute=mirrored",
                         "--epochs=2",
                         "--lr_schedule=cosine", "--weight_decay=0.01",
                         "--label_smoothing=0.1", "--backend=imgaug", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "1 replica(s) with MirroredStrategy" in trained.stdout
    assert (tmp_path / "out" / "best.keras").exists()
    assert_user_error(run_script("train.py", "--distribute=some", cwd=tmp_path),
                      "auto, mirrored or off")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def collective_ops_available():
    """MultiWorkerMirroredStrategy needs TensorFlow's gRPC collectives: Linux and macOS."""
    import tensorflow as tf
    return sys.platform != "win32" and hasattr(tf.distribute, "MultiWorkerMirroredStrategy")


def start_workers(tmp_path, data, *args):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "train.py"), f"--data={data}", "--verbose=2",
             *args], cwd=tmp_path, text=True, env={**os.environ, "TF_CONFIG": json.dumps(config)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return processes


@pytest.mark.multiworker
@pytest.mark.skipif(not collective_ops_available(),
                    reason="TensorFlow's collective ops are not available on this platform")
def test_two_workers_train_resume_and_only_the_chief_writes(tmp_path, tiny_pickle):
    # a run of two workers, both killed after the first epoch, then started again
    killed = start_workers(tmp_path, tiny_pickle, "--epochs=3", "--patience=100")
    deadline = time.time() + 300
    while not glob.glob(str(tmp_path / "out" / "resume" / "epoch-*.keras")) and \
            time.time() < deadline:
        time.sleep(0.02)
    for process in killed:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    processes = start_workers(tmp_path, tiny_pickle, "--epochs=3", "--patience=100")
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
        assert "resuming the run in out after epoch" in out
    assert "2 replica(s) with MultiWorkerMirroredStrategy; worker 0 (chief)" in outputs[0][0]
    assert "saved out/best.keras" in outputs[0][0] and "saved" not in outputs[1][0]
    # the worker's scratch files are gone: what is left is the chief's
    assert sorted(os.listdir(tmp_path / "out")) == ["best.json", "best.keras", "history.csv"]
    history = json.loads((tmp_path / "out" / "best.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    scored = run_in_process("evaluate.py", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "test accuracy: " in scored.stdout
