"""--help and the expected mistakes answer before TensorFlow (or scikit-learn, imgaug,
matplotlib) is imported: each case below runs with those packages made unimportable, so a
script that reached for one before answering would fail with an ImportError instead."""
import json
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, assert_user_error, make_dataset, write_pickle

BLOCKED = ("tensorflow", "keras", "sklearn", "imgaug", "matplotlib")
SCRIPTS = ("train.py", "evaluate.py", "predict.py", "export.py", "serve.py", "prepare_data.py",
           "model.py", "augment.py", *(f"bench/{name}.py" for name in (
               "accuracy", "ceiling", "deeper", "levers", "profile", "speed", "speed_levers",
               "starting_points")))
GENEROUS_SECONDS = 5  # what a slow, busy CI machine needs; bench/speed.py measures the real time


class Hostile:
    def __reduce__(self):
        return (os.system, ("touch ran",))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder of stand-ins for TensorFlow's packages that refuse to load, and of the inputs
    that each mistake needs."""
    work = tmp_path_factory.mktemp("answers")
    for name in BLOCKED:
        package = work / "blocked" / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(
            f"raise ImportError('{name} was imported before the answer')\n")
    x, y = make_dataset(per_class=5)
    write_pickle(work / "good.pkl", (x, y))
    write_pickle(work / "shapes.pkl", (x[:, :100], y))
    write_pickle(work / "labels.pkl", (x, np.where(y == 0, 36, y)))
    (work / "hostile.pkl").write_bytes(pickle.dumps(Hostile()))
    (work / "corrupt.pkl").write_bytes(b"\x80\x04not really a pickle")
    (work / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (work / "flat").mkdir()  # an image folder with no class subfolders
    (work / "flat" / "a.png").write_bytes(b"")
    for name in ("A", "B"):  # and one with an empty class folder
        (work / "hollow" / name).mkdir(parents=True)
    (work / "hollow" / "A" / "a.png").write_bytes(b"")
    # a checkpoint whose record names data that has gone, and one beside a readable record
    for name, source in (("gone", str(work / "gone.pkl")), ("here", str(work / "good.pkl"))):
        (work / name).mkdir()
        (work / name / "best.keras").write_bytes(b"not opened before the inputs are checked")
        (work / name / "best.json").write_text(json.dumps(
            {"data": {"source": source, "source_sha256": "0" * 64, "seed": 0,
                      "stroke_width": 3.0}}))
    # an output folder whose best model was trained on other data, one that is a file
    (work / "other").mkdir()
    (work / "other" / "best.keras").write_bytes(b"not opened: its record says enough")
    (work / "other" / "best.json").write_text(json.dumps(
        {"run_id": "earlier", "val_accuracy": 0.9, "data": {"source_sha256": "1" * 64,
                                                             "seed": 42}}))
    (work / "a-file").write_text("not a folder")
    # 86 KB that would unpickle to 20,000 x 3136 numbers: one row referred to 20,000 times
    write_pickle(work / "bomb.pkl", ([[0] * 3136] * 20000, [0] * 20000))
    (work / "notes.txt").write_text("not an image")
    write_pickle(work / "pairs.pkl", make_dataset(per_class=2))  # too few to validate on
    return work


CASES = [(script, ["--help"], 0, "Settings") for script in SCRIPTS] + [  # script, args, code, words
    ("train.py", ["--bogus=1"], 2, "unknown option"),
    ("train.py", ["--epochs=many"], 2, "whole number"),
    ("train.py", ["--lr_schedule=fast"], 2, "choose"),
    ("train.py", ["--data=missing.pkl"], 2, "not found"),
    ("train.py", ["--data=corrupt.pkl"], 2, "pickle"),
    ("train.py", ["--data=hostile.pkl", "--backend=imgaug"], 2, "refused"),
    ("train.py", ["--data=shapes.pkl"], 2, "3136"),
    ("train.py", ["--data=labels.pkl"], 2, "0..35"),
    ("train.py", ["--data=good.pkl", "--out_dir=other"], 2, "other data", "--set_aside=True"),
    ("train.py", ["--data=good.pkl", "--out_dir=a-file"], 2, "is a file"),
    ("train.py", ["--data=good.pkl", "--out_dir=a-file/out"], 2, "a-file/out", "not a directory"),
    ("prepare_data.py", ["--seed=-1"], 2, "[0, 4294967295]"),
    ("predict.py", ["--checkpoint=here/best.keras", "flat"], 2, "is a folder"),
    ("train.py", ["--learning_rate=-0.1"], 2, "[0, inf)"),
    ("train.py", ["--learning_rate=nan"], 2, "finite number"),
    ("train.py", ["--dropout=1"], 2, "[0, 1)"),
    ("train.py", ["--lr_drop_factor=2"], 2, "(0, 1]"),
    ("train.py", ["--rotate=400"], 2, "[0, 180]"),
    ("train.py", ["--data=bomb.pkl"], 2, "refused to load", "references"),
    ("prepare_data.py", ["bomb.pkl"], 2, "refused to load", "references"),
    ("predict.py", ["--checkpoint=here/best.keras", "bomb.pkl"], 2, "refused to load"),
    ("predict.py", ["--checkpoint=here/best.keras", "notes.txt"], 2, "neither an image"),
    ("predict.py", ["--top=0"], 2, "[1, inf)"),
    ("serve.py", ["--port=70000"], 2, "[0, 65535]"),
    ("export.py", ["--calibration_images=0"], 2, "[1, inf)"),
    ("prepare_data.py", ["missing.pkl"], 2, "not found"),
    ("prepare_data.py", ["shapes.pkl"], 2, "3136"),
    ("prepare_data.py", ["flat"], 2, "no class subfolders"),
    ("train.py", ["--data=hollow"], 2, "holds no files"),
    ("evaluate.py", ["--checkpoint=here/best.keras", "--json=out.txt"], 2, "True or False"),
    ("train.py", ["--tensorboard=maybe"], 2, "True or False"),
    ("evaluate.py", ["--checkpoint=missing.keras"], 2, "not found"),
    ("evaluate.py", ["--checkpoint=gone/best.keras"], 2, "not found"),
    ("evaluate.py", ["--checkpoint=here/best.keras"], 2, "not the data"),
    ("evaluate.py", ["--checkpoint=here/best.keras", "--split=train"], 2, "val or test"),
    ("evaluate.py", ["--checkpoint=here/best.keras", "--batch_size=0"], 2, "[1, inf)"),
    ("predict.py", ["--checkpoint=missing.keras", "good.pkl"], 2, "not found"),
    ("predict.py", ["--checkpoint=here/best.keras", "missing.png"], 2, "not found"),
    ("predict.py", ["--checkpoint=here/best.keras", "broken.png"], 2, "not a readable image"),
    ("predict.py", ["--checkpoint=here/best.keras", "shapes.pkl"], 2, "3136"),
    ("predict.py", ["--checkpoint=here/best.keras", "hostile.pkl"], 2, "refused"),
    ("export.py", ["--checkpoint=missing.keras"], 2, "not found"),
    ("serve.py", ["--checkpoint=missing.keras"], 2, "not found"),
    ("model.py", ["--dense_units=wide"], 2, "whole number"),
    ("augment.py", ["--backend=imgaug", "--elastic=2"], 2, "backend=tf"),
]


def run_blocked(work, script, *args):
    """Runs a script in `work` with the stand-ins that refuse to load in place of TensorFlow's
    packages; returns (the CompletedProcess, its seconds)."""
    environment = {**os.environ, "PYTHONPATH": str(work / "blocked")}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=work,
                            env=environment, capture_output=True, text=True, timeout=60)
    return result, time.perf_counter() - started


@pytest.mark.parametrize("script, args, code, words", [(s, a, c, w) for s, a, c, *w in CASES],
                         ids=[" ".join([script, *args]) for script, args, *_ in CASES])
def test_answers_before_tensorflow_loads(work, script, args, code, words):
    result, seconds = run_blocked(work, script, *args)
    if code == 0:
        assert result.returncode == 0 and words[0] in result.stdout, result.stderr[-2000:]
    else:
        assert_user_error(result, *words)
    assert seconds < GENEROUS_SECONDS
    assert not (work / "ran").exists()  # the hostile pickle's code never ran


def test_data_too_small_to_validate_on_is_refused_after_one_warning(work):
    result, seconds = run_blocked(work, "train.py", "--data=pairs.pkl")
    warning, refusal = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert warning.startswith("warning: 36 classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...) have")
    assert refusal.startswith("error: ") and "no image for validation" in refusal
    assert seconds < GENEROUS_SECONDS


def test_the_blocked_packages_are_really_blocked(work):
    """The check above proves something: with the stand-ins in place, work that needs
    TensorFlow fails to import it (here: training on good data)."""
    result, _ = run_blocked(work, "train.py", "--data=good.pkl", "--out_dir=fresh", "--epochs=1")
    assert result.returncode != 0 and "imported before the answer" in result.stderr
