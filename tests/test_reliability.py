"""Never lose a run: kill and resume, atomic writes, best-only checkpoints, NaN guard,
determinism, and the distribution-strategy path on one CPU replica."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import pytest

import train
from common import atomic_path
from conftest import ROOT, assert_user_error, make_dataset, run_script, write_pickle


def history_rows(out_dir):
    path = os.path.join(out_dir, "history.csv")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return max(0, sum(1 for _ in f) - 1)


def test_killed_run_resumes_from_its_last_epoch(tmp_path):
    data = write_pickle(tmp_path / "train.pkl", make_dataset(per_class=40))
    args = [sys.executable, os.path.join(ROOT, "train.py"), f"--data={data}", "--epochs=8",
            "--patience=100", "--batch_size=8", "--verbose=2"]
    victim = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while history_rows(tmp_path / "out") < 2 and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # into the next epoch, or into the writes that end this one
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    points = os.listdir(tmp_path / "out" / "resume")
    saved = max(int(name[6:10]) for name in points if name.startswith("epoch-")
                and name.endswith(".keras"))  # a half-written point has a temporary name
    assert 1 <= saved < 8, points

    resumed = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming the run in out after epoch {saved}" in resumed.stdout
    assert f"Epoch {saved + 1}/8" in resumed.stdout and "Epoch 1/8" not in resumed.stdout
    record = json.loads((tmp_path / "out" / "best.json").read_text())
    assert [row["epoch"] for row in record["history"]] == list(range(1, 9))
    assert history_rows(tmp_path / "out") == 8
    assert not (tmp_path / "out" / "resume").exists()
    assert not [name for name in os.listdir(tmp_path / "out") if ".tmp" in name]

    fresh = run_script("train.py", f"--data={data}", "--epochs=1", "--fresh=True", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "resuming" not in fresh.stdout
    assert history_rows(tmp_path / "out") == 1


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
    keeper = train.KeepBest(str(tmp_path), {"run_id": "r", "data": {}}, [], None)
    keeper.set_model(model)
    best = tmp_path / "best.keras"

    def epoch(number, score):
        keeper.on_epoch_end(number, {"val_accuracy": score, "loss": 1.0})
        return best.read_bytes(), json.loads((tmp_path / "best.json").read_text())

    first, record = epoch(0, 0.5)
    assert record["best_epoch"] == 1 and record["val_accuracy"] == 0.5
    model.layers[0].kernel.assign(model.layers[0].kernel + 1)
    same, record = epoch(1, 0.4)
    assert same == first and record["best_epoch"] == 1 and len(record["history"]) == 2
    better, record = epoch(2, 0.6)
    assert better != first and record["best_epoch"] == 3

    def broken_save(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(model, "save", broken_save)
    with pytest.raises(OSError):
        keeper.on_epoch_end(3, {"val_accuracy": 0.9, "loss": 1.0})
    assert best.read_bytes() == better
    assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_good_model(trained_tiny, tmp_path):
    work, data, _ = trained_tiny
    shutil.copytree(work / "out", tmp_path / "out")
    good = (tmp_path / "out" / "best.keras").read_bytes()
    result = run_script("train.py", f"--data={data}", "--learning_rate=inf",
                        "--epochs=2", cwd=tmp_path)
    assert_user_error(result, "diverged", "--learning_rate")
    assert (tmp_path / "out" / "best.keras").read_bytes() == good


def test_deterministic_runs_are_identical(tmp_path, tiny_pickle):
    scores = []
    for name in ("a", "b"):
        trained = run_script("train.py", f"--data={tiny_pickle}", "--deterministic=True",
                             "--epochs=2", f"--out_dir={name}", cwd=tmp_path)
        assert trained.returncode == 0, trained.stderr[-3000:]
        scored = run_script("evaluate.py", f"--checkpoint={name}/best.keras", cwd=tmp_path)
        assert scored.returncode == 0, scored.stderr[-3000:]
        history = json.loads((tmp_path / name / "best.json").read_text())["history"]
        scores.append((scored.stdout.strip().splitlines()[-1],
                       [(row["loss"], row["val_loss"]) for row in history]))
    assert scores[0] == scores[1]


def test_mirrored_strategy_path_runs_on_one_cpu_replica(tmp_path, tiny_pickle):
    # with the optional levers switched on, so that their code paths run under a strategy too
    trained = run_script("train.py", f"--data={tiny_pickle}", "--distribute=mirrored",
                         "--epochs=2", "--batch_norm=True", "--ema_momentum=0.9",
                         "--lr_drop_patience=1", "--backend=imgaug", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "1 replica(s) with MirroredStrategy" in trained.stdout
    assert (tmp_path / "out" / "best.keras").exists()
    assert_user_error(run_script("train.py", "--distribute=some", cwd=tmp_path),
                      "auto, mirrored or off")
