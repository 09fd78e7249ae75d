"""Image folders as data, a head that fits the data's classes, a model file that works on its
own, "no character found", evaluate.py --json and train.py --tensorboard."""
import csv
import glob
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageDraw

import classes
import framing
import image_folders
import prepare_data
from conftest import (ROOT, assert_user_error, refusal, run_each_in_process, run_in_process,
                      run_script)

SHAPES = ("bar", "circle", "cross")  # the class folders, in sorted order: labels 0, 1, 2


def draw(shape, size, pen, dark_on_light=True):
    """One hand-made character: a shape drawn with a pen `pen` pixels wide."""
    paper, ink = (255, 0) if dark_on_light else (0, 255)
    image = Image.new("L", (size, size), paper)
    canvas, margin = ImageDraw.Draw(image), size // 5
    if shape == "bar":
        canvas.line([size // 2, margin, size // 2, size - margin], fill=ink, width=pen)
    elif shape == "circle":
        canvas.ellipse([margin, margin, size - margin, size - margin], outline=ink, width=pen)
    else:
        canvas.line([margin, margin, size - margin, size - margin], fill=ink, width=pen)
        canvas.line([margin, size - margin, size - margin, margin], fill=ink, width=pen)
    return image


def make_image_folder(root, per_class=24, seed=0):
    """Class subfolders of PNGs and JPEGs of mixed sizes, dark on light and light on dark,
    one transparent PNG per class (a canvas export), plus a broken file and a hidden one."""
    rng = np.random.default_rng(seed)
    for shape in SHAPES:
        os.makedirs(os.path.join(root, shape))
        for i in range(per_class):
            size = int(rng.integers(40, 240))
            image = draw(shape, size, max(2, size // 14), dark_on_light=i % 3 != 2)
            if i == 0:  # strokes on a transparent background
                rgba = Image.new("RGBA", image.size, (0, 0, 0, 0))
                rgba.putalpha(Image.eval(image, lambda value: 255 - value))
                image = rgba
            image.save(os.path.join(root, shape, f"{i}.{'jpg' if i % 2 else 'png'}"))
    with open(os.path.join(root, "bar", "broken.png"), "wb") as f:
        f.write(b"\x89PNG but not really")
    with open(os.path.join(root, "cross", ".DS_Store"), "wb") as f:
        f.write(b"hidden: never read")
    return str(root)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """One short training run on an image folder, with TensorBoard logs: (work dir, folder,
    what train.py printed on stdout and stderr)."""
    work = tmp_path_factory.mktemp("folder")
    folder = make_image_folder(work / "shapes")
    result = run_in_process("train.py", f"--data={folder}", "--epochs=2", "--batch_size=16",
                            "--tensorboard=True", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, folder, result


def test_a_folder_of_class_subfolders_trains_with_its_names(folder_run):
    work, folder, result = folder_run
    # 14 of the 24 circles and crosses; the bars, framed alike whatever their size, are
    # mostly copies of each other: kept together, 21 of them in training
    assert "training on 49 images in 3 classes" in result.stdout
    assert re.search(r"skipped 1 file.*not a readable image: bar.broken\.png", result.stderr)
    record = json.load(open(work / "out" / "best.json"))
    assert record["data"]["num_classes"] == 3 and record["data"]["class_names"] == list(SHAPES)
    assert record["data"]["source"] == os.path.abspath(folder)
    import keras
    model = keras.saving.load_model(str(work / "out" / "best.keras"), compile=False)
    assert model.output_shape == (None, 3)  # the head fits the data


def test_evaluate_and_predict_show_the_folder_names(folder_run, tmp_path):
    work, folder, _ = folder_run
    checkpoint = f"--checkpoint={work / 'out' / 'best.keras'}"
    draw("circle", 150, 10).save(tmp_path / "mine.png")
    Image.new("RGB", (120, 90), "white").save(tmp_path / "blank.png")  # paper, no ink
    scored, result, text = run_each_in_process(
        ("evaluate.py", checkpoint, f"--prepared_dir={work / 'data'}", "--errors=errors.csv"),
        ("predict.py", "--lite=False", checkpoint, "--json=True", "--top=3", "mine.png",
         "blank.png"),
        ("predict.py", "--lite=False", checkpoint, "blank.png"), cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert re.search(r"^\s+1:circle\s+\d\.\d{3}", scored.stdout, re.M)
    assert re.search(r"test accuracy: \d\.\d{4} \(\d+/11\)$", scored.stdout.strip())  # 1 bar
    wrong = 11 - int(re.search(r"\((\d+)/11\)", scored.stdout).group(1))
    assert f"wrote the {wrong} errors of the test split to errors.csv" in scored.stdout
    assert len(open(tmp_path / "errors.csv").read().splitlines()) == 1 + wrong
    assert result.returncode == 0, result.stderr[-3000:]
    mine, blank = (json.loads(line) for line in result.stdout.strip().splitlines())
    assert sorted(guess["name"] for guess in mine["top"]) == ["0:bar", "1:circle", "2:cross"]
    assert mine["found"] is True and blank == {"input": "blank.png", "found": False, "top": []}
    assert text.stdout.strip() == "blank.png: no character found", text.stdout


def test_errors_name_the_file_of_a_folder_and_the_row_of_a_pickle(folder_run, tmp_path):
    import evaluate
    work, folder, _ = folder_run
    prepared = prepare_data.prepare(folder, 1337, work / "data", verbose=False)
    names = evaluate.image_names(prepared, "test")
    x, y = evaluate.split_of(prepared, "test")
    for name, pixels, label in zip(names, x, y):  # each image is its file's, in its class
        assert name.split("/")[0] == SHAPES[label]
        raw = open(os.path.join(folder, name), "rb").read()
        assert (framing.read_image_file(raw, name) == pixels).all()
    # the model errs on the first two images, surely on the second
    probabilities = np.full((len(y), 3), 0.1)
    probabilities[np.arange(len(y)), y] = 0.8
    probabilities[0] = np.roll([0.6, 0.3, 0.1], y[0] + 1)
    probabilities[1] = np.roll([0.9, 0.05, 0.05], y[1] + 2)
    count = evaluate.write_errors(tmp_path / "e.csv", names, y, probabilities, list(SHAPES))
    rows = list(csv.DictReader(open(tmp_path / "e.csv")))
    assert count == 2 and [row["image"] for row in rows] == [names[1], names[0]]
    assert rows[0]["label"] == SHAPES[y[1]] and rows[0]["confidence"] == "0.9000"
    assert rows[0]["predicted"] == SHAPES[(y[1] + 2) % 3] and rows[0]["label_probability"] == \
        "0.0500"
    # a pickle's images are named by their row in it
    data = np.random.default_rng(0).integers(0, 2, (60, 3136), dtype=np.uint8)
    labels = np.arange(60) % 3
    with open(tmp_path / "train.pkl", "wb") as f:
        pickle.dump((data, labels), f)
    prepared = prepare_data.prepare(str(tmp_path / "train.pkl"), 7, tmp_path, verbose=False)
    for name, pixels in zip(evaluate.image_names(prepared, "val"), prepared["x_val"]):
        assert (data[int(name.split()[1])] == pixels).all()


def test_predict_from_python_answers_no_character_for_a_blank_image(folder_run):
    import predict
    work, _, _ = folder_run
    checkpoint = str(work / "out" / "best.keras")
    x = np.zeros((3, 3136), np.uint8)
    x[1].reshape(56, 56)[5:50, 25:30] = 1  # a bar
    x[2].reshape(56, 56)[10:12, 10:12] = 1  # a speck is still ink: the model is asked
    labels = predict.predict(x, checkpoint)
    assert labels[0] == predict.NO_CHARACTER == -1
    assert 0 <= labels[1] < 3 and 0 <= labels[2] < 3


def test_a_model_file_on_its_own_predicts_evaluates_and_exports(folder_run, tmp_path):
    work, _, _ = folder_run
    lone = tmp_path / "my-model.keras"
    shutil.copy(work / "out" / "best.keras", lone)  # without its best.json
    draw("cross", 100, 8).save(tmp_path / "x.png")
    predicted, exported, scored = run_each_in_process(
        ("predict.py", f"--checkpoint={lone}", "x.png"),
        ("export.py", f"--checkpoint={lone}", "--export_dir=exp", "--tflite=False"),
        ("evaluate.py", str(lone), f"--prepared_dir={work / 'data'}"), cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert re.match(r"x\.png: \d:(bar|circle|cross) ", predicted.stdout)
    notes = [line for line in predicted.stderr.splitlines() if "stored inside" in line]
    assert len(notes) == 1 and notes[0].startswith("note:"), predicted.stderr  # said once
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (tmp_path / "exp" / "labels.txt").read_text() == "0 bar\n1 circle\n2 cross\n"
    assert scored.returncode == 0 and "1:circle" in scored.stdout, scored.stderr[-3000:]
    # the note is what makes it work: a model file without it, and no record, is refused
    stripped = tmp_path / "stripped.keras"
    with zipfile.ZipFile(lone) as source, zipfile.ZipFile(stripped, "w") as target:
        for name in source.namelist():
            if name != "image_classifier.json":
                target.writestr(name, source.read(name))
    assert_user_error(run_script("predict.py", f"--checkpoint={stripped}", "x.png",
                                 cwd=tmp_path), "no readable run record")


def test_tensorboard_logs_loss_accuracy_and_learning_rate_per_epoch(folder_run):
    from tensorflow.python.summary.summary_iterator import summary_iterator
    work, _, result = folder_run
    assert "tensorboard --logdir" in result.stdout
    seen = {}
    for part in ("train", "validation"):
        for path in glob.glob(str(work / "out" / "tensorboard" / part / "events.*")):
            for event in summary_iterator(path):
                for value in event.summary.value:
                    seen.setdefault((part, value.tag), set()).add(event.step)
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate"):
        assert seen.get(("train", tag)) == {0, 1}, sorted(seen)
    assert seen.get(("validation", "epoch_accuracy")) == {0, 1}, sorted(seen)


def test_a_folder_is_fingerprinted_by_its_files(tmp_path):
    folder = make_image_folder(tmp_path / "shapes", per_class=4)
    cache = str(tmp_path / "cache")
    first = prepare_data.prepare(folder, prepared_dir=cache, verbose=False)["manifest"]
    assert first == prepare_data.prepare(folder, prepared_dir=cache, verbose=False)["manifest"]
    draw("bar", 80, 6).save(os.path.join(folder, "bar", "new.png"))  # an added image
    added = prepare_data.prepare(folder, prepared_dir=cache, verbose=False)["manifest"]
    draw("bar", 80, 9).save(os.path.join(folder, "bar", "new.png"))  # the same name, changed
    changed = prepare_data.prepare(folder, prepared_dir=cache, verbose=False)["manifest"]
    shas = {manifest["source_sha256"] for manifest in (first, added, changed)}
    assert len(shas) == 3
    assert sum(added["counts"].values()) == sum(first["counts"].values()) + 1
    assert first["class_names"] == list(SHAPES) and first["num_classes"] == 3


def test_every_image_is_framed_as_predict_frames_a_photo(tmp_path):
    import framing
    folder = make_image_folder(tmp_path / "shapes", per_class=3)
    data = prepare_data.prepare(folder, prepared_dir=str(tmp_path / "cache"), verbose=False)
    path = os.path.join(folder, "circle", "1.jpg")
    with open(path, "rb") as f:
        framed = framing.read_image_file(f.read(), path)
    row = list(sorted(glob.glob(os.path.join(folder, "*", "[0-9]*")))).index(path)
    np.testing.assert_array_equal(data["x"][row], framed)
    assert data["y"][row] == 1 and data["x"].shape == (9, 3136)  # the broken file is left out


def framed_one_by_one(folder):
    """What framing.py makes of each readable image of the folder, in the folder's order."""
    rows = []
    for _, path in image_folders.folder_classes(folder)[1]:
        with open(path, "rb") as f:
            raw = f.read()
        try:
            rows.append(framing.read_image_file(raw, path))
        except prepare_data.UserError:
            pass  # the broken file
    return np.stack(rows)


def test_a_killed_framing_frames_only_the_rest(tmp_path, capsys, monkeypatch):
    folder = make_image_folder(tmp_path / "shapes", per_class=4)
    names, files = image_folders.folder_classes(folder)
    work_dir = str(tmp_path / "framing")
    framed, frame_files = [], image_folders.frame_files

    def killed_at_the_third_chunk(paths):
        if len(framed) == 2:
            raise KeyboardInterrupt
        framed.append(paths)
        return frame_files(paths)

    monkeypatch.setattr(image_folders, "frame_files", killed_at_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        image_folders.read_image_folder(folder, names, files, work_dir, True, 1, chunk_files=3)
    torn = os.path.join(work_dir, "chunk-00001.npz")
    with open(torn, "rb") as f:
        whole = f.read()
    with open(torn, "wb") as f:
        f.write(whole[:len(whole) // 2])  # a chunk cut short: framed again
    framed.clear()
    monkeypatch.setattr(image_folders, "frame_files",
                        lambda paths: framed.append(paths) or frame_files(paths))
    x, _, _ = image_folders.read_image_folder(folder, names, files, work_dir, True, 1,
                                              chunk_files=3)
    np.testing.assert_array_equal(x, framed_one_by_one(folder))
    assert sum(map(len, framed)) == 9  # the torn chunk and the two never framed
    assert "framing " + folder + ": 3 of 12 images framed before" in capsys.readouterr().out
    # prepare_data keeps the framed images, so that a split with another seed reuses them
    cache = str(tmp_path / "cache")
    data = prepare_data.prepare(folder, prepared_dir=cache, verbose=False)
    np.testing.assert_array_equal(data["x"], x)
    framed.clear()
    again = prepare_data.prepare(folder, seed=7, prepared_dir=cache, verbose=False)
    assert framed == [] and sorted(again["index_train"]) != sorted(data["index_train"])
    np.testing.assert_array_equal(again["x"], x)


def children_of(pid):
    """The pids of a process's children (Linux: from /proc)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return found


def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_folder_framed_by_a_process_a_core_killed_with_9_frames_only_the_rest(
        tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    for i in range(80):  # 40 chunks of 2: a second or two of work for two processes
        shape = SHAPES[i % 3]
        os.makedirs(tmp_path / "big" / shape, exist_ok=True)
        draw(shape, int(rng.integers(300, 600)), 30).save(tmp_path / "big" / shape / f"{i}.png")
    folder, work_dir = str(tmp_path / "big"), str(tmp_path / "framed")
    frame = ("import sys, image_folders as f; names, files = f.folder_classes(sys.argv[1]); "
             "f.read_image_folder(sys.argv[1], names, files, sys.argv[2], True, 2, chunk_files=2)")
    first = subprocess.Popen([sys.executable, "-c", frame, folder, work_dir], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not glob.glob(os.path.join(work_dir, "chunk-*.npz")):
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.02)
    workers = children_of(first.pid)
    first.kill()
    first.wait()
    assert len(workers) >= 2, workers  # (and the resource tracker of multiprocessing)
    deadline = time.time() + 30
    while any(map(running, workers)) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(map(running, workers)), "framing processes outlived their killed parent"

    # the same framing again, in two processes: what the killed one kept, then the rest
    monkeypatch.setattr(image_folders, "LOG_EVERY", 20)
    names, files = image_folders.folder_classes(folder)
    x, y, kept = image_folders.read_image_folder(folder, names, files, work_dir, True, 2,
                                                 chunk_files=2)
    out = capsys.readouterr().out
    before = int(re.search(r"(\d+) of 80 images framed before", out).group(1))
    assert 0 < before < 80, out
    counts = [int(n) for n in re.findall(r"framed (\d+) of 80 images", out)]
    assert len(counts) >= 2 and counts == sorted(counts) and counts[-1] == 80, counts
    np.testing.assert_array_equal(x, framed_one_by_one(folder))  # as framed one by one
    assert kept == [image_folders.relative(path, folder) for _, path in files]
    assert y.tolist() == [names.index(name.split("/")[0]) for name in kept]


def test_a_folder_becomes_the_users_pickle(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "shapes", per_class=4)
    output = str(tmp_path / "mine.pkl")
    prepare_data.main([f"--input={folder}", f"--output={output}",
                       f"--prepared_dir={tmp_path / 'data'}"])
    printed = capsys.readouterr().out
    assert re.search(r"^\s+1\s+\d+\s+\d+\s+\d+\s+4  circle$", printed, re.M)
    assert f"wrote {output}" in printed
    with open(output, "rb") as f:
        x, y = pickle.load(f)
    assert x.shape == (12, 3136) and x.dtype == np.uint8 and set(np.unique(x)) == {0, 1}
    assert np.bincount(y).tolist() == [4, 4, 4]
    assert (tmp_path / "mine-labels.txt").read_text() == "0 bar\n1 circle\n2 cross\n"
    assert "--output" in refusal(prepare_data.main, f"--input={folder}", "--output=mine.txt")

    # the names travel with the pickle: trained and scored with no --labels, 3 classes named
    import evaluate
    import train
    common = [f"--prepared_dir={tmp_path / 'data'}"]
    train.main([output, "--epochs=1", f"--out_dir={tmp_path / 'out'}", "--verbose=0", *common])
    record = json.load(open(tmp_path / "out" / "best.json"))
    assert record["data"]["num_classes"] == 3 and record["data"]["class_names"] == list(SHAPES)
    capsys.readouterr()
    evaluate.main([str(tmp_path / "out" / "best.keras"), "--json", *common])
    scores = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in scores["classes"]] == ["0:bar", "1:circle", "2:cross"]
    # a label beyond the classes that the names file names is refused, naming that file
    with open(output, "wb") as f:
        pickle.dump((x, np.where(y == 2, 3, y)), f)
    assert "mine-labels.txt" in refusal(prepare_data.main, output, *common)


def odd_folders(root):
    """Folders laid out wrongly, each with the words its one-line refusal must contain."""
    cases = {}
    flat = root / "flat"  # images, but no class subfolders
    flat.mkdir()
    draw("bar", 60, 5).save(flat / "a.png")
    cases["flat"] = (flat, ("no class subfolders", "A"))
    single = root / "single"
    (single / "A").mkdir(parents=True)
    draw("bar", 60, 5).save(single / "A" / "a.png")
    cases["single"] = (single, ("1 class subfolder", "at least 2"))
    empty = root / "empty"
    (empty / "A").mkdir(parents=True)
    (empty / "B").mkdir()
    draw("bar", 60, 5).save(empty / "A" / "a.png")
    cases["empty"] = (empty, ("holds no files", "B"))
    unreadable = root / "unreadable"
    (unreadable / "A").mkdir(parents=True)
    (unreadable / "B").mkdir()
    draw("bar", 60, 5).save(unreadable / "A" / "a.png")
    (unreadable / "B" / "notes.txt").write_text("not an image")
    cases["unreadable"] = (unreadable, ("no readable image", "B"))
    return cases


@pytest.mark.parametrize("case", ["flat", "single", "empty", "unreadable"])
def test_an_odd_folder_gets_one_clear_line(tmp_path, case):
    folder, words = odd_folders(tmp_path)[case]
    assert_user_error(run_script("prepare_data.py", f"--input={folder}", cwd=tmp_path), *words)
    assert not glob.glob(str(tmp_path / "data" / "prepared-*"))  # nothing cached


def test_evaluate_json_has_the_metrics_for_machines(trained_tiny, capsys):
    import evaluate
    work, _, _ = trained_tiny
    checkpoint = f"--checkpoint={work / 'out' / 'best.keras'}"
    evaluate.main([checkpoint, f"--prepared_dir={work / 'data'}"])
    correct, total = map(int, re.search(r"test accuracy: [\d.]+ \((\d+)/(\d+)\)",
                                        capsys.readouterr().out).groups())
    evaluate.main([checkpoint, f"--prepared_dir={work / 'data'}", "--json"])
    metrics = json.loads(capsys.readouterr().out)  # stdout holds the JSON alone
    assert metrics["accuracy"] == pytest.approx(correct / total) and metrics["images"] == total
    assert metrics["accuracy"] <= metrics["top2_accuracy"] <= metrics["top3_accuracy"]
    assert metrics["look_alikes_merged_accuracy"] >= metrics["accuracy"]
    assert metrics["look_alike_pairs"] == ["0/O", "1/I", "2/Z", "5/S"]  # labels-36.txt has all
    assert len(metrics["classes"]) == 36 and sum(c["support"] for c in metrics["classes"]) == total
    assert metrics["classes"][14]["name"] == "14:N"
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (36, 36) and np.trace(matrix) == correct
    assert metrics["split"] == "test" and metrics["seed"] == 1337


def test_the_metrics_merge_look_alikes_and_rank_guesses():
    import evaluate
    raw = ["O", "0", "S", "A"]  # label 0 reads O, label 1 the digit 0, ...
    y = np.array([0, 1, 2, 3])
    probabilities = np.array([[0.2, 0.7, 0.0, 0.1],   # O read as 0: wrong, right when merged
                              [0.1, 0.8, 0.0, 0.1],   # right
                              [0.0, 0.35, 0.25, 0.4],  # S third: top-3 only
                              [0.5, 0.0, 0.0, 0.5]])  # A second (ties: the lower label first)
    scores = evaluate.metrics(y, probabilities, raw, [f"{i}:{n}" for i, n in enumerate(raw)])
    assert scores["accuracy"] == 0.25 and scores["look_alikes_merged_accuracy"] == 0.5
    assert scores["top2_accuracy"] == 0.75 and scores["top3_accuracy"] == 1.0
    assert scores["look_alike_pairs"] == ["0/O"]  # S has no 5 here
    assert scores["classes"][1]["precision"] == 0.5 and scores["classes"][0]["recall"] == 0.0
    assert scores["confusion_matrix"][0] == [0, 1, 0, 0]


# Runs in a separate Python, outside the repository: TensorFlow decodes the files and the
# exported model's classify_image frames and classifies them.
CLASSIFY_FILES = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    model = tf.saved_model.load("export/saved_model")
    answers = {}
    for path in sys.argv[1:]:
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
        out = model.classify_image(image)
        answers[path] = [int(tf.argmax(out["probabilities"])), bool(out["found"])]
    assert not {"framing", "predict", "prepare_data", "export"} & set(sys.modules)
    print(json.dumps(answers))
""")


def test_the_exported_model_reads_image_files_as_predict_does(folder_run, tmp_path):
    work, folder, _ = folder_run
    checkpoint = str(work / "out" / "best.keras")
    files = sorted(glob.glob(os.path.join(folder, "*", "[0-9].*")))  # 30: PNG, JPEG, see-through
    photo = np.full((600, 800, 3), (200, 190, 170), np.uint8)  # a colour photo of paper
    photo[150:450, 395:401] = (40, 40, 60)  # a thin bar in dark ink
    photo[20:22, 760:762] = (40, 40, 60)  # and a speck
    Image.fromarray(photo).save(tmp_path / "photo.png")
    Image.new("LA", (90, 70), (255, 255)).save(tmp_path / "blank.png")  # grey + alpha: 2 channels
    files += [str(tmp_path / "photo.png"), str(tmp_path / "blank.png")]
    exported, predicted = run_each_in_process(
        ("export.py", checkpoint, "--tflite=False"),
        ("predict.py", "--lite=False", f"--checkpoint={checkpoint}", "--json=True", *files),
        cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    expected = {}
    for line in predicted.stdout.strip().splitlines():
        answer = json.loads(line)
        expected[answer["input"]] = [answer.get("label", 0), answer["found"]]
    assert len(expected) == 32 and expected[str(tmp_path / "blank.png")][1] is False
    reloaded = subprocess.run([sys.executable, "-c", CLASSIFY_FILES, *files], cwd=tmp_path,
                              capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert reloaded.returncode == 0, reloaded.stderr[-3000:]
    got = json.loads(reloaded.stdout)
    for path in files:  # the same answer, file by file (a blank one: found False on both)
        assert got[path][1] == expected[path][1], path
        if expected[path][1]:
            assert got[path][0] == expected[path][0], path


def test_a_pickles_model_file_carries_the_names_its_record_reads(trained_tiny):
    import run_state
    work, _, _ = trained_tiny
    note = run_state.attached_to_model_file(str(work / "out" / "best.keras"))
    record = json.load(open(work / "out" / "best.json"))
    assert record["data"]["class_names"] is None  # best.json reads data/labels-36.txt each time
    names = note["data"]["class_names"]  # the model file alone has them as they read then
    assert len(names) == 36 and names[14] == "N" and names[10] == "0"
    assert classes.class_names("auto", note["data"]) == classes.class_names(
        "auto", record["data"])
    assert {key: value for key, value in note["data"].items() if key != "class_names"} == {
        key: value for key, value in record["data"].items() if key != "class_names"}
