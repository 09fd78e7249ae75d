"""End to end: train.py writes a checkpoint that evaluate.py scores; clear refusals; every
script explains its settings, and every setting it accepts takes effect."""
import glob
import hashlib
import json
import os
import re
import shutil

import numpy as np
import pytest

import prepare_data
from conftest import (ROOT, assert_user_error, make_dataset, refusal, run_in_process,
                      run_script, write_pickle)

SCRIPTS = ["prepare_data.py", "model.py", "augment.py", "train.py", "evaluate.py", "predict.py",
           "serve.py", "export.py", "bench/accuracy.py", "bench/speed.py", "bench/levers.py",
           "bench/ceiling.py", "bench/deeper.py", "bench/profile.py", "bench/speed_levers.py",
           "bench/starting_points.py", "tune.py"]


def test_train_then_evaluate_on_a_36_class_pickle(trained_tiny):
    tmp_path, _, printed = trained_tiny
    assert "Epoch 2/2" in printed
    # a log file gets one plain line per epoch (no progress bar), and the device that trains
    assert re.search(r"^device: CPU \(\d+ cores\)$", printed, re.M)
    assert "\x08" not in printed and "\r" not in printed and "━" not in printed
    assert len(re.findall(r"^\d+/\d+ - \d+s", printed, re.M)) == 2
    assert "9/9 - " in printed  # 288 training images in batches of --batch_size=32
    assert re.search(r"best epoch \d+: val_accuracy \d\.\d{4}", printed)
    # the log says what the rule for a small training split chose, and why
    assert ("chose learning rate cosine and augmentation on throughout, as 288 training images "
            "are fewer than --small_data=10000") in printed
    record = json.loads((tmp_path / "out" / "best.json").read_text())
    assert record["settings"]["LR_SCHEDULE"] == "cosine"  # recorded as chosen
    assert record["settings"]["AUGMENT_EPOCHS"] == 0
    assert record["settings"]["EPOCHS"] == 2 and record["data"]["seed"] == 1337
    assert record["data"]["stroke_width"] > 1  # predict.py widens image files' pens to it
    assert len(record["history"]) == 2 and 1 <= record["best_epoch"] <= 2
    assert (tmp_path / "out" / "history.csv").read_text().count("\n") == 3
    assert not (tmp_path / "out" / "resume").exists()  # a finished run leaves no resume state

    scored = run_in_process("evaluate.py", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    last = scored.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"test accuracy: (\d\.\d{4}) \((\d+)/(\d+)\)", last)
    assert match, last
    assert int(match.group(3)) == 72  # 20% of each of the 36 classes of 12 images
    assert abs(float(match.group(1)) - int(match.group(2)) / 72) < 1e-4

    # the same checkpoint on other data is refused, naming the problem
    other = write_pickle(tmp_path / "other.pkl", make_dataset(seed=1))
    refused = run_script("evaluate.py", f"--data={other}", cwd=tmp_path)
    assert_user_error(refused, "not the data this checkpoint was trained on")

    # a new run in the same out dir on other data would clobber the model: refused
    clobber = run_script("train.py", f"--data={other}", "--epochs=1", cwd=tmp_path)
    assert_user_error(clobber, "other data", "--set_aside=True")


def test_evaluate_and_export_refuse_a_split_that_changed(trained_tiny, tmp_path):
    work, _, _ = trained_tiny
    for folder in ("out", "data"):
        shutil.copytree(work / folder, tmp_path / folder)
    # the cached split as another numpy or a changed cache might rebuild it: one training
    # image now in the test split
    sha = json.loads((tmp_path / "out" / "best.json").read_text())["data"]["source_sha256"]
    (cache,) = glob.glob(str(tmp_path / "data" / f"prepared-{sha[:16]}-*.npz"))
    with np.load(cache) as npz:
        arrays = dict(npz)
    arrays["split"][np.flatnonzero(arrays["split"] == 0)[0]] = 2
    np.savez(cache, **arrays)
    # (the refusal from the shell: after TensorFlow has started, one line all the same)
    scored = run_script("evaluate.py", cwd=tmp_path)
    exported = run_in_process("export.py", "--export_dir=exp", "--tflite=False", cwd=tmp_path)
    assert_user_error(scored, "not the one this checkpoint was trained on",
                      "could be training images")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "no test accuracies: the split of" in exported.stdout


def test_evaluate_refuses_missing_and_foreign_checkpoints(tmp_path, monkeypatch):
    import evaluate
    assert_user_error(run_script("evaluate.py", "--checkpoint=none.keras", cwd=tmp_path),
                      "not found", "none.keras")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fake.keras").write_text("not a model")
    data = write_pickle(tmp_path / "train.pkl", make_dataset())  # the record's data is fine
    sha = hashlib.sha256((tmp_path / "train.pkl").read_bytes()).hexdigest()
    split = prepare_data.prepare(data, 0, "data", verbose=False)["manifest"]["split_sha256"]
    (tmp_path / "fake.json").write_text(json.dumps(
        {"data": {"source": data, "source_sha256": sha, "seed": 0, "split_sha256": split}}))
    assert "not a loadable Keras model" in refusal(evaluate.main, "--checkpoint=fake.keras")
    (tmp_path / "lonely.keras").write_text("x")
    assert "no readable run record" in refusal(evaluate.main, "--checkpoint=lonely.keras")


def test_bad_overrides(tmp_path, monkeypatch):
    import train
    assert_user_error(run_script("train.py", "--epochz=3", cwd=tmp_path), "unknown option",
                      "--epochs")
    monkeypatch.chdir(tmp_path)
    assert "whole number" in refusal(train.main, "--epochs=three")
    assert "True or False" in refusal(train.main, "--augment=maybe")
    assert "not found" in refusal(train.main, "--data=missing.pkl")
    assert "unknown option '-s=7'" in refusal(train.main, "-s=7")  # not a data path
    assert not (tmp_path / "out" / "best.keras").exists()


def help_of(script, monkeypatch, capsys):
    """What `python <script> --help` prints, run in this process (importing TensorFlow once
    instead of once per script): the script's main() with that argument."""
    import importlib
    module = importlib.import_module(script[:-3].replace("/", "."))
    monkeypatch.setattr("sys.argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_from_the_shell(tmp_path):
    for script, flag in (("train.py", "-h"), ("prepare_data.py", "--help")):
        result = run_script(script, flag, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "Settings (override any with --name=value or --name value):" in result.stdout
        assert not list(tmp_path.iterdir())  # it explains and does nothing else


def test_help_into_a_closed_pipe_is_quiet():
    # `python prepare_data.py --help | head -1`: the reader is gone before the help is written
    import subprocess
    import sys
    process = subprocess.Popen([sys.executable, "prepare_data.py", "--help"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    errors = process.stderr.read().decode()
    process.wait()
    assert errors == "" and process.returncode == 1


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_explains_its_settings(script, monkeypatch, capsys):
    listed = help_of(script, monkeypatch, capsys)
    assert "Settings (override any with --name=value or --name value):" in listed
    settings = re.findall(r"^  --(\w+)=(\S*) +(.*)$", listed, re.M)
    assert settings and all(comment for _, _, comment in settings), settings
    # each line explains itself in the words a user types: --small_data, not SMALL_DATA
    constants = {name.upper() for name, _, _ in settings} - {"JSON"}  # the format, too
    for name, _, comment in settings:
        assert not constants & set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", comment)), (name, comment)
        assert not re.search(r"\((below|above)\)", comment), (name, comment)
    if script == "train.py":  # the model's and augmentation's settings are train.py's too
        names = {name for name, _, _ in settings}
        assert {"epochs", "dense_units", "rotate", "lr_schedule"} <= names
        assert not names & {"preview", "side", "num_classes"}


def test_a_lone_argument_is_the_data_path_where_that_is_obvious(tmp_path, tiny_pickle,
                                                                 monkeypatch):
    import augment
    import evaluate
    import model
    import train
    result = run_in_process("prepare_data.py", tiny_pickle, cwd=tmp_path)
    assert result.returncode == 0 and tiny_pickle in result.stdout, result.stderr[-2000:]
    monkeypatch.chdir(tmp_path)
    message = refusal(train.main, "missing.pkl")
    assert "not found" in message and "missing.pkl" in message
    assert "none.keras" in refusal(evaluate.main, "none.keras")
    for main, args in ((train.main, ("a.pkl", "b.pkl")), (model.main, ("x",)),
                       (augment.main, ("x",))):
        assert "unexpected argument" in refusal(main, *args)


def test_settings_of_train_take_effect(tmp_path, tiny_pickle):
    # as a user types them: --name value as well as --name=value
    trained = run_script("train.py", tiny_pickle, "--epochs", "1", "--batch_size=100",
                         "--dense_units", "32", "--filters_1=8", "--seed", "5", "--out_dir=o",
                         "--prepared_dir=p", "--verbose=0", "--augment", "False",
                         "--precision=mixed_bfloat16", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "Epoch" not in trained.stdout  # --verbose=0
    assert "augmentation off" in trained.stdout
    record = json.loads((tmp_path / "o" / "best.json").read_text())
    assert record["data"]["seed"] == 5 and glob.glob(str(tmp_path / "p" / "*seed5-*.npz"))
    import keras
    net = keras.saving.load_model(tmp_path / "o" / "best.keras")
    assert net.layers[1].filters == 8 and net.get_layer("logits").input.shape[-1] == 32
    assert record["settings"]["BATCH_SIZE"] == 100 and net.optimizer.iterations.numpy() == 3
    # --precision: the saved model computes in bfloat16, keeps float32 weights and answers
    assert net.layers[1].compute_dtype == "bfloat16" and net.layers[1].kernel.dtype == "float32"
    probabilities = net(np.ones((2, 56, 56, 1), np.float32))
    assert probabilities.dtype == "float32"
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1, rtol=1e-5)


def test_settings_of_the_optimiser():
    import keras
    import train
    import training
    settings, _ = train.resolve(train.defaults(), 20000)
    assert type(training.new_model(settings).optimizer) is keras.optimizers.Adam
    model = training.new_model(train.resolve(train.defaults(
        weight_decay=0.05, label_smoothing=0.2, learning_rate=0.01), 20000)[0])
    assert type(model.optimizer) is keras.optimizers.AdamW
    assert model.optimizer.weight_decay == 0.05
    assert abs(float(model.optimizer.learning_rate) - 0.01) < 1e-9
    assert model.loss.label_smoothing == 0.2


def test_augment_settings_reach_the_pipeline():
    import train
    x, y = make_dataset(per_class=1)
    originals = {image.tobytes() for image in x.reshape(-1, 56, 56, 1).astype(np.float32)}

    def unchanged(**overrides):
        settings, _ = train.resolve(train.defaults(batch_size=16, **overrides), len(y))
        images = np.concatenate([b.numpy() for b, _ in
                                 train.make_training_dataset(x, y, settings, 0, 1)])
        return np.mean([image.tobytes() in originals for image in images])
    assert unchanged() < 0.5  # augmented by default
    assert unchanged(augment=False) == 1
    assert unchanged(crop_px=0, scale=0.0, rotate=0) == 1  # augment.py's ranges, from train.py
    assert unchanged(share=0.0) == 1
    assert unchanged(crop_px=0, scale=0.0, rotate=0, stroke=1.0) == 0  # every stroke width


def test_settings_of_evaluate_take_effect(trained_tiny, tmp_path, monkeypatch, capsys):
    import evaluate
    import inference
    work, data, _ = trained_tiny
    few = run_in_process("evaluate.py", "--top_confusions=1", "--labels=none", "--split=val",
                         cwd=work)
    assert few.returncode == 0, few.stderr[-2000:]
    pairs = few.stdout.split("most confused pairs")[1].split("\n\n")[0].strip().splitlines()[1:]
    assert len(pairs) <= 1 and "val accuracy" in few.stdout
    assert not re.search(r"\d+:[A-Z0-9] ", few.stdout)  # --labels=none: numbers only
    # --batch_size, --data and --prepared_dir, in this process: main() with those arguments
    sizes = []
    model, _ = inference.load_checkpoint(str(work / "out" / "best.keras"))
    forward = inference.keras_forward(model)
    monkeypatch.setattr(inference, "keras_forward", lambda m: lambda batch: (
        sizes.append(len(batch)), forward(batch))[1])
    monkeypatch.setattr("sys.argv", ["evaluate.py", str(work / "out" / "best.keras"),
                                     "--batch_size", "30", f"--data={data}",
                                     f"--prepared_dir={tmp_path / 'elsewhere'}"])
    evaluate.main()
    assert sizes == [30, 30, 12]  # the 72 test images
    assert list((tmp_path / "elsewhere").glob("prepared-*.npz"))
    assert capsys.readouterr().out.strip().endswith("/72)")


def test_every_setting_has_a_test_that_shows_its_effect(monkeypatch, capsys):
    """Each setting that a script's --help lists is in tests/settings_proofs.py, with the
    tests that fail if it stops taking effect (or why none can), and those tests exist."""
    from settings_proofs import NOT_SHOWN, PROOFS
    tests = "".join(open(path).read() for path in glob.glob(os.path.join(ROOT, "tests", "*.py")))
    missing, unknown = [], []
    for script in SCRIPTS:
        for name in re.findall(r"^  --(\w+)=", help_of(script, monkeypatch, capsys), re.M):
            key = f"{script} --{name}"
            if key not in PROOFS and key not in NOT_SHOWN:
                missing.append(key)
            unknown += [test for test in PROOFS.get(key, ()) if f"def {test}(" not in tests]
    assert not missing, "settings with no test named in settings_proofs.py: " + " ".join(missing)
    assert not unknown, "named tests that do not exist: " + " ".join(sorted(set(unknown)))
