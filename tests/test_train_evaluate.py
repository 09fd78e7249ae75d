"""End to end: train.py writes a checkpoint that evaluate.py scores; clear refusals."""
import json
import re

from conftest import assert_user_error, make_dataset, run_script, write_pickle


def test_train_then_evaluate_on_a_36_class_pickle(trained_tiny):
    tmp_path, _, printed = trained_tiny
    assert "Epoch 2/2" in printed
    assert re.search(r"best epoch \d+: val_accuracy \d\.\d{4}", printed)
    record = json.loads((tmp_path / "out" / "best.json").read_text())
    assert record["settings"]["EPOCHS"] == 2 and record["data"]["seed"] == 1337
    assert len(record["history"]) == 2 and 1 <= record["best_epoch"] <= 2
    assert (tmp_path / "out" / "history.csv").read_text().count("\n") == 3
    assert not (tmp_path / "out" / "resume").exists()  # a finished run leaves no resume state

    scored = run_script("evaluate.py", cwd=tmp_path)
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
    assert_user_error(clobber, "other data", "--fresh=True")


def test_evaluate_refuses_missing_and_foreign_checkpoints(tmp_path):
    assert_user_error(run_script("evaluate.py", "--checkpoint=none.keras", cwd=tmp_path),
                      "not found", "none.keras")
    (tmp_path / "fake.keras").write_text("not a model")
    (tmp_path / "fake.json").write_text(json.dumps({"data": {"source_sha256": "0"}}))
    assert_user_error(run_script("evaluate.py", "--checkpoint=fake.keras", cwd=tmp_path),
                      "not a loadable keras model")
    (tmp_path / "lonely.keras").write_text("x")
    assert_user_error(run_script("evaluate.py", "--checkpoint=lonely.keras", cwd=tmp_path),
                      "no readable run record")


def test_bad_overrides(tmp_path):
    assert_user_error(run_script("train.py", "--epochz=3", cwd=tmp_path), "unknown option",
                      "--epochs")
    assert_user_error(run_script("train.py", "--epochs=three", cwd=tmp_path), "whole number")
    assert_user_error(run_script("train.py", "--augment=maybe", cwd=tmp_path), "true or false")
    assert_user_error(run_script("train.py", "--data=missing.pkl", cwd=tmp_path), "not found")
    assert not (tmp_path / "out" / "best.keras").exists()
