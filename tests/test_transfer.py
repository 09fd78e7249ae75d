"""Learning from other models and honest confidence: a teacher distilled into the classifier
(refused when it could have seen this run's held-out images), a run started from a trained
model, and the temperature that calibrates the probabilities."""
import json
import os

import keras
import numpy as np
import pytest

from conftest import (Killed, assert_user_error, killed_after, make_dataset, refusal,
                      run_in_process, run_script, write_pickle)
import calibration
import inference
import model
import prepare_data
import run_state
import train

TINY = ["--epochs=2", "--batch_size=16", "--dense_units=32", "--verbose=0",
        "--lr_schedule=plateau", "--patience=10"]
TEACHER = ["--network=teacher", "--teacher_widths=8p,16p"]


def weights_of(path):
    return keras.saving.load_model(path, compile=False).get_weights()


def assert_resumes_exactly(args, out_dir, monkeypatch, look=None):
    """Kills the run of `args` just after it saved its first resume point (which `look` may
    look at), runs the same command again, and checks that it ends as the run that was never
    stopped (`args` with out_dir "whole", already trained)."""
    killed_after(0, out_dir, monkeypatch, named="epoch-0001.keras")
    with pytest.raises(Killed):
        train.main([*args, f"--out_dir={out_dir}"])
    monkeypatch.undo()
    assert sorted(os.listdir(out_dir / "resume")) == ["epoch-0001.keras", "run.json"]
    if look:
        look(out_dir / "resume" / "epoch-0001.keras")
    train.main([*args, f"--out_dir={out_dir}"])
    whole = out_dir.parent / "whole"
    record, expected = (json.loads((folder / "best.json").read_text()) for folder in (out_dir, whole))
    assert record["history"] == expected["history"]
    assert record.get("calibration") == expected.get("calibration")
    for a, b in zip(weights_of(out_dir / "best.keras"), weights_of(whole / "best.keras")):
        np.testing.assert_array_equal(a, b)


def test_the_teacher_trains_by_the_same_recipe_and_resumes_exactly(tmp_path, monkeypatch):
    data = write_pickle(tmp_path / "train.pkl", make_dataset(per_class=6))
    args = [data, *TINY, *TEACHER, f"--prepared_dir={tmp_path / 'cache'}"]
    train.main([*args, f"--out_dir={tmp_path / 'whole'}"])
    teacher = keras.saving.load_model(tmp_path / "whole" / "best.keras", compile=False)
    assert teacher.name == "teacher"
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in teacher.layers) == 3
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in teacher.layers) == 3
    assert teacher.count_params() == model.build_teacher(36, "8p,16p", 32).count_params()
    assert_resumes_exactly(args, tmp_path / "killed", monkeypatch)


def test_a_student_learns_from_its_teacher_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    data = write_pickle(tmp_path / "train.pkl", make_dataset(per_class=6))
    cache = f"--prepared_dir={tmp_path / 'cache'}"
    train.main([data, *TINY, *TEACHER, cache, f"--out_dir={tmp_path / 'teacher'}"])
    teacher = json.loads((tmp_path / "teacher" / "best.json").read_text())
    args = [data, *TINY, cache, f"--teacher={tmp_path / 'teacher' / 'best.keras'}",
            "--distill_temperature=3", "--label_weight=0.4"]
    train.main([*args, f"--out_dir={tmp_path / 'whole'}"])
    assert f"learning from {tmp_path / 'teacher' / 'best.keras'} too" in capsys.readouterr().out
    record = json.loads((tmp_path / "whole" / "best.json").read_text())
    assert record["settings"]["TEACHER_RUN"]["run_id"] == teacher["run_id"]
    assert record["settings"]["DISTILL_TEMPERATURE"] == 3.0
    assert all(row["distillation_loss"] > 0 for row in record["history"])  # the teacher's share
    # the loss that ranks epochs is the labels' alone, as in runs without a teacher
    assert all(row["val_loss"] == row["val_student_loss"] != row["val_total_loss"]
               for row in record["history"])
    # best.keras is the student alone: the default network, layer for layer
    student = keras.saving.load_model(tmp_path / "whole" / "best.keras", compile=False)
    default = model.build_model(36, dense_units=32)
    assert [type(layer) for layer in student.layers] == [type(layer) for layer in default.layers]
    assert student.count_params() == default.count_params()
    assert_resumes_exactly(args, tmp_path / "killed", monkeypatch)


def test_a_teacher_of_other_data_or_another_split_is_refused(tmp_path):
    data = write_pickle(tmp_path / "train.pkl", make_dataset(per_class=6))
    other = write_pickle(tmp_path / "other.pkl", make_dataset(per_class=6, seed=4))
    trained = run_in_process("train.py", data, *TINY, *TEACHER, "--epochs=1", "--out_dir=teacher",
                             cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    for refused, why in (([other], "was trained on other data, another seed or another split"),
                         ([data, "--seed=7"], "split with another seed")):
        result = run_script("train.py", *refused, "--teacher=teacher/best.keras", "--out_dir=s",
                            cwd=tmp_path)
        assert_user_error(result, "--teacher=teacher/best.keras", why,
                          "validation and test images")
        assert not os.path.exists(tmp_path / "s" / "best.keras")
    assert_user_error(run_script("train.py", data, "--teacher=nowhere.keras", cwd=tmp_path),
                      "--teacher=nowhere.keras: no such file")
    # nor can a run learn from the best.keras it writes
    assert_user_error(run_script("train.py", data, "--teacher=teacher/best.keras",
                                 "--out_dir=teacher", cwd=tmp_path), "is the best.keras this run writes")


def test_a_run_starts_from_a_trained_model_with_a_new_head_where_classes_differ(tmp_path,
                                                                                 capsys):
    data = write_pickle(tmp_path / "train.pkl", make_dataset(per_class=6))
    digits = write_pickle(tmp_path / "digits.pkl", make_dataset(per_class=8, num_classes=10,
                                                                seed=2))
    (tmp_path / "digits-labels.txt").write_text("".join(f"{d} {d}\n" for d in range(10)))
    cache = f"--prepared_dir={tmp_path / 'cache'}"
    frozen = ["--learning_rate=0", "--epochs=1", "--calibrate=False"]  # the weights as started
    train.main([data, *TINY, cache, "--calibrate=False", f"--out_dir={tmp_path / 'source'}"])
    source = tmp_path / "source" / "best.keras"
    # other classes: every layer but the head starts from the source, the head is new
    train.main([digits, *TINY, *frozen, cache, f"--init_from={source}",
                f"--out_dir={tmp_path / 'digits'}"])
    assert "3 layers' weights, a new head for these classes" in capsys.readouterr().out
    given, started = weights_of(source), weights_of(tmp_path / "digits" / "best.keras")
    for a, b in zip(given[:-2], started[:-2]):  # the convolutions and the hidden dense layer
        np.testing.assert_array_equal(a, b)
    assert started[-2].shape == (32, 10) and given[-2].shape == (32, 36)
    record = json.loads((tmp_path / "digits" / "best.json").read_text())
    assert record["settings"]["INIT_RUN"]["head_kept"] is False
    # the same data: the head is kept too
    train.main([data, *TINY, *frozen, cache, f"--init_from={source}",
                f"--out_dir={tmp_path / 'again'}"])
    for a, b in zip(given, weights_of(tmp_path / "again" / "best.keras")):
        np.testing.assert_array_equal(a, b)
    # another network's weights cannot start this one
    result = run_script("train.py", data, *TINY, "--dense_units=64", f"--init_from={source}",
                        "--out_dir=wide", cwd=tmp_path)
    assert_user_error(result, f"--init_from={source} is another network or has other sizes")
    # a model of this data split with another seed has seen this split's held-out images;
    # a model that started from one has too
    train.main([data, *TINY, cache, "--seed=5", "--epochs=1", f"--out_dir={tmp_path / 'seed5'}"])
    other_split = tmp_path / "seed5" / "best.keras"
    assert "split with another seed" in refusal(train.main, data, *TINY, cache,
                                                f"--init_from={other_split}")
    train.main([digits, *TINY, *frozen, cache, f"--init_from={other_split}",
                f"--out_dir={tmp_path / 'via'}"])
    assert "split with another seed" in refusal(
        train.main, data, *TINY, cache, f"--init_from={tmp_path / 'via' / 'best.keras'}")
    assert "pass --init_from=PATH too" in refusal(train.main, data, "--freeze_epochs=2")


def test_frozen_convolutions_stay_as_given_then_learn_and_resume_exactly(tmp_path, monkeypatch):
    data = write_pickle(tmp_path / "train.pkl", make_dataset(per_class=6))
    cache = f"--prepared_dir={tmp_path / 'cache'}"
    train.main([data, *TINY, cache, "--epochs=1", f"--out_dir={tmp_path / 'source'}"])
    source = weights_of(tmp_path / "source" / "best.keras")
    args = [data, *TINY, cache, f"--init_from={tmp_path / 'source' / 'best.keras'}",
            "--freeze_epochs=1", "--lr_schedule=cosine", "--learning_rate=0.01"]
    train.main([*args, f"--out_dir={tmp_path / 'whole'}"])

    def frozen_in_epoch_1(path):  # the convolutions as given, the dense layers learnt
        point = keras.saving.load_model(path).get_weights()
        for a, b in zip(point[:4], source[:4]):
            np.testing.assert_array_equal(a, b)
        assert not np.array_equal(point[4], source[4])
    assert_resumes_exactly(args, tmp_path / "killed", monkeypatch, frozen_in_epoch_1)
    # and in epoch 2 the convolutions learn too
    killed_after(0, tmp_path / "two", monkeypatch, named="epoch-0002.keras")
    with pytest.raises(Killed):
        train.main([*args, f"--out_dir={tmp_path / 'two'}"])
    monkeypatch.undo()
    assert not np.array_equal(keras.saving.load_model(
        tmp_path / "two" / "resume" / "epoch-0002.keras").get_weights()[0], source[0])
    # resumed without --init_from it would be another run: refused, naming the model it had
    message = refusal(train.main, data, *TINY, cache, f"--out_dir={tmp_path / 'two'}",
                      "--lr_schedule=cosine", "--learning_rate=0.01")
    assert "holds an unfinished run with other settings" in message
    assert "init_run: the model of run" in message and "--init_from=" in message


def test_the_temperature_fitted_on_validation_is_inside_the_model(tmp_path, capsys):
    data = write_pickle(tmp_path / "train.pkl", make_dataset(per_class=8))
    cache = f"--prepared_dir={tmp_path / 'cache'}"
    for calibrate in (True, False):
        train.main([data, *TINY, cache, f"--calibrate={calibrate}",
                    f"--out_dir={tmp_path / str(calibrate)}"])
    fitted = json.loads((tmp_path / "True" / "best.json").read_text())["calibration"]
    assert "calibration" not in json.loads((tmp_path / "False" / "best.json").read_text())
    split = prepare_data.prepare(data, 1337, str(tmp_path / "cache"), verbose=False)
    raw, calibrated = (inference.probabilities(inference.load_network(
        str(tmp_path / folder / "best.keras")), split["x_test"]) for folder in ("False", "True"))
    assert abs(np.log(fitted["temperature"])) > 0.1  # far enough from 1 to tell apart
    np.testing.assert_allclose(calibrated, calibration.rescale(raw, fitted["temperature"]),
                               atol=1e-4)
    np.testing.assert_array_equal(calibrated.argmax(1), raw.argmax(1))  # the same answers
    assert fitted["nll_after"] <= fitted["nll_before"]
    # the fitted temperature is the one that fits the validation split best
    val_raw = inference.probabilities(inference.load_network(
        str(tmp_path / "False" / "best.keras")), split["x_val"])
    nll = [calibration.negative_log_likelihood(calibration.rescale(val_raw, t), split["y_val"])
           for t in fitted["temperature"] * np.array([0.9, 1.0, 1.1])]
    assert nll[1] <= min(nll[0], nll[2]) + 1e-6
    # killed between the model's write and best.json's: best.json gets the calibration back,
    # with its whole history
    on_disk = json.loads((tmp_path / "True" / "best.json").read_text())
    (tmp_path / "True" / "best.json").write_text(json.dumps(
        {key: value for key, value in on_disk.items() if key != "calibration"}))
    assert inference.read_record(str(tmp_path / "True" / "best.keras")) == on_disk
    run_state.match_records(str(tmp_path / "True"), run_state.best_record(str(tmp_path / "True")))
    assert json.loads((tmp_path / "True" / "best.json").read_text()) == on_disk
    # a handful of validation errors cannot tell a temperature: the model stays as it is
    pair = write_pickle(tmp_path / "pair.pkl", make_dataset(per_class=10, num_classes=2))
    (tmp_path / "pair-labels.txt").write_text("0 a\n1 b\n")
    train.main([pair, *TINY, cache, f"--out_dir={tmp_path / 'pair'}"])
    assert "are too few to fit a temperature to (at least 10)" in capsys.readouterr().out
    assert "calibration" not in json.loads((tmp_path / "pair" / "best.json").read_text())


def test_calibration_measures():
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 4, (4000, 5))
    truth = calibration.softmax(scores / 2.5)  # labels drawn as if the temperature were 2.5
    labels = np.array([rng.choice(5, p=row) for row in truth])
    temperature = calibration.fit_temperature(scores, labels)
    assert 2.2 < temperature < 2.8
    before, after = calibration.softmax(scores), calibration.softmax(scores / temperature)
    assert calibration.expected_calibration_error(after, labels) < 0.03 \
        < calibration.expected_calibration_error(before, labels)
    np.testing.assert_allclose(calibration.rescale(after, 1 / temperature), before, atol=1e-9)
    rows = calibration.reliability(after, labels)
    assert sum(row[2] for row in rows) == 4000 and all(0 <= row[3] <= 1 for row in rows)
    sure = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    assert calibration.coverage(sure, np.array([0, 1, 1]), [0.5, 0.7, 0.95]) == [
        (0.5, 1.0, 2 / 3), (0.7, 2 / 3, 1.0), (0.95, 0.0, pytest.approx(float("nan"),
                                                                          nan_ok=True))]


def test_model_py_shows_the_teacher_and_refuses_bad_widths(tmp_path):
    result = run_in_process("model.py", "--network=teacher", "--teacher_widths=8p,16",
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    count = model.build_teacher(36, "8p,16").count_params()
    assert f"parameters: {count:,}" in result.stdout and '"teacher"' in result.stdout
    for script in ("model.py", "train.py"):
        assert_user_error(run_script(script, "--teacher_widths=8,x", cwd=tmp_path),
                          "--teacher_widths=8,x: expected filter counts")
