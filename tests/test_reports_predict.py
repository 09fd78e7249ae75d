"""Reports, plots, class names and predict.py, on a generated 36-class set and on the
embedded digits."""
import io
import json
import os
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

import classes
import inference
import data_format
import prepare_data
from conftest import assert_user_error, run_in_process, run_script


def test_class_names_from_files_and_fallbacks(tmp_path):
    pickle = {"source": "/some/train.pkl"}  # a record of the users' data, as older ones read
    real = classes.class_names("auto", pickle)
    assert real[14] == "14:N" and real[30] == "30:N" and real[10] == "10:0" and real[2] == "2:O"
    assert len(real) == 36
    digits = classes.class_names("auto", {"source": data_format.EMBEDDED, "num_classes": 10})
    assert digits[:3] == ["0:0", "1:1", "2:2"] and len(digits) == 10
    folder = {"source": "/my/images", "num_classes": 3, "class_names": ["cat", "dog", "owl"]}
    assert classes.class_names("auto", folder) == ["0:cat", "1:dog", "2:owl"]
    assert classes.class_names("none", pickle)[35] == "35"
    assert classes.class_names("none", folder) == ["0", "1", "2"]
    mapping = tmp_path / "names.txt"
    mapping.write_text("# partial mapping\n0 a\n5 b b\n")
    names = classes.class_names(str(mapping), pickle)
    assert names[0] == "0:a" and names[5] == "5:b b" and names[1] == "1"
    mapping.write_text("zero a\n")
    with pytest.raises(prepare_data.UserError):
        classes.class_names(str(mapping), pickle)


def test_evaluate_reports_and_plots(trained_tiny):
    work, _, _ = trained_tiny
    result = run_in_process("evaluate.py", "--plots=True", "--split=val", "--confidences=0.3,0.6",
                            cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    # how far the calibrated probabilities can be trusted, and what "not sure" costs
    record = json.loads((work / "out" / "best.json").read_text())["calibration"]
    assert (f"calibration error, val split: {record['ece_after']:.2%} (before the temperature "
            f"{record['temperature']:.3f} that train.py fitted on the validation split: "
            f"{record['ece_before']:.2%})") in out
    shares = re.findall(r"^\s+(0\.[36]): +([\d.]+)% answered, accuracy (\S+)$", out, re.M)
    assert [share[0] for share in shares] == ["0.3", "0.6"], out
    assert float(shares[0][1]) >= float(shares[1][1])  # a higher bar answers fewer
    assert_user_error(run_script("evaluate.py", "--confidences=0.5,2", cwd=work),
                      "--confidences=0.5,2")
    assert "precision" in out and "recall" in out and "f1-score" in out
    assert re.search(r"^\s+14:N\s+\d\.\d{3}\s+\d\.\d{3}\s+\d\.\d{3}\s+2$", out, re.M)
    assert "most confused pairs" in out
    assert out.strip().splitlines()[-1].startswith("val accuracy: ")
    for name, min_size in (("confusion-val", (900, 900)), ("curves", (800, 300)),
                           ("reliability-val", (500, 600))):
        path = work / "out" / f"best-{name}.png"
        assert path.stat().st_size > 5000, path
        with Image.open(path) as image:
            assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1], image.size
    # the errors grid: one row of 8 per started 8 errors (at most 48), one row when none
    correct, total = map(int, re.search(r"val accuracy: \S+ \((\d+)/(\d+)\)", out).groups())
    rows = max(1, -(-min(48, total - correct) // 8))
    with Image.open(work / "out" / "best-errors-val.png") as image:
        assert image.size == (1200, rows * 175), image.size


def test_errors_grid_shows_each_error(tmp_path):
    import plots
    images = np.random.default_rng(0).integers(0, 2, (10, 3136))
    names = [str(i) for i in range(36)]
    plots.misclassified_png(images, np.arange(10), np.arange(10) + 1, np.full(10, 0.9), names,
                            str(tmp_path / "ten.png"))
    with Image.open(tmp_path / "ten.png") as image:
        assert image.size == (1200, 350)  # two rows of 8 for 10 errors
        assert np.asarray(image.convert("L")).std() > 20  # the noise images are drawn
    plots.misclassified_png(images[:0], [], [], [], names, str(tmp_path / "none.png"))
    with Image.open(tmp_path / "none.png") as image:
        assert image.size == (1200, 175)


def test_evaluate_rejects_a_bad_split(trained_tiny):
    work, _, _ = trained_tiny
    assert_user_error(run_script("evaluate.py", "--split=train", cwd=work), "val or test")


def test_predict_reads_back_pngs_with_evaluates_labels(trained_tiny, tmp_path):
    work, data, _ = trained_tiny
    model, record = inference.load_checkpoint(str(work / "out" / "best.keras"))
    split = prepare_data.prepare(data, record["data"]["seed"], str(tmp_path / "cache"),
                                 verbose=False)
    x = split["x_test"][:12]
    expected = inference.probabilities(model, x).argmax(1)
    paths = []
    for i, image in enumerate(x):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(image.reshape(56, 56) * 255).save(paths[-1])
    np.save(tmp_path / "batch.npy", x[:3])
    checkpoint = f"--checkpoint={work / 'out' / 'best.keras'}"
    result = run_in_process("predict.py", "--lite=False", checkpoint, "--json=True", *paths,
                            str(tmp_path / "batch.npy"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [row["label"] for row in rows[:12]] == expected.tolist()
    assert [row["label"] for row in rows[12:]] == expected[:3].tolist()
    assert all(len(row["top"]) == 3 for row in rows)
    assert rows[0]["top"][0]["probability"] >= rows[0]["top"][1]["probability"]
    assert [row["sure"] for row in rows] == [row["top"][0]["probability"] >= 0.5 for row in rows]
    for min_confidence, says in (("1", True), ("0", False)):  # "not sure", and its guesses
        text = run_in_process("predict.py", "--lite=False", f"--min_confidence={min_confidence}",
                              f"--checkpoint={work / 'out' / 'best.keras'}", paths[0], cwd=tmp_path)
        assert ("not sure; best guesses" in text.stdout) is says, text.stdout
        assert len(re.findall(r"\d+:\S+ \d\.\d{3}", text.stdout)) == 3
    text = run_in_process("predict.py", "--lite=False",
                          f"--checkpoint={work / 'out' / 'best.keras'}", "--top=2",
                          paths[0], cwd=tmp_path)
    assert text.returncode == 0 and len(re.findall(r"\d+:\S+ \d\.\d{3}", text.stdout)) == 2
    numbers = run_in_process("predict.py", "--lite=False", "--min_confidence=0",
                             f"--checkpoint={work / 'out' / 'best.keras'}",
                             "--labels", "none", paths[0], cwd=tmp_path)
    assert numbers.returncode == 0 and re.fullmatch(r"\S+: (\d+ \d\.\d{3}  ){2}\d+ \d\.\d{3}\n",
                                                    numbers.stdout), numbers.stdout


def test_predict_function_checks_its_input_and_gets_true_labels(trained_tiny, tmp_path):
    import predict
    work, data, _ = trained_tiny
    checkpoint = str(work / "out" / "best.keras")
    split = prepare_data.prepare(data, 1337, str(tmp_path / "cache"), verbose=False)
    x, y = split["x_test"], split["y_test"]
    labels = predict.predict(x.reshape(-1, 56, 56), checkpoint)
    assert np.mean(labels == y) > 0.5  # 36 classes: chance is under 0.03
    np.testing.assert_array_equal(predict.predict(x * 255, checkpoint), labels)  # 0/255 too
    assert predict.load_model(checkpoint) is predict.load_model(checkpoint)  # loaded once
    for bad, words in ((x * 0.7, "binary"), (x[:, :100], "3136"), (x.reshape(-1, 8, 392), "shape")):
        with pytest.raises(prepare_data.UserError, match=words):
            predict.predict(bad, checkpoint)
    (tmp_path / "junk.png").write_text("not an image")
    assert_user_error(run_script("predict.py", f"--checkpoint={checkpoint}", "junk.png",
                                 cwd=tmp_path), "not a readable image")


def test_embedded_default_end_to_end_with_digit_names(trained_digits, tmp_path):
    """The newcomer's path: no train.pkl, train, evaluate, predict a scanned-looking JPEG."""
    work, x, y = trained_digits
    scored = run_script("evaluate.py", cwd=work)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert re.search(r"^\s+7:7\s+\d\.\d{3}", scored.stdout, re.M)
    accuracy = float(re.search(r"test accuracy: (\d\.\d+)", scored.stdout).group(1))
    assert accuracy > 0.8  # one epoch on 3,000 real digits; chance is 0.1
    # a dark-on-light, off-centre, larger scan of a digit is still recognised
    paths = []
    for i, image in enumerate(x[y == 7][:5]):
        scan = np.full((180, 140), 235, np.uint8)
        scan[30:142, 20:132] = 235 - 200 * np.kron(image.reshape(56, 56), np.ones((2, 2), np.uint8))
        paths.append(str(tmp_path / f"scan{i}.jpg"))
        Image.fromarray(scan).save(paths[-1], quality=90)
    result = run_in_process("predict.py", "--lite=False",
                            f"--checkpoint={work / 'out' / 'best.keras'}", "--json=True", *paths,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    labels = [json.loads(line)["label"] for line in result.stdout.strip().splitlines()]
    assert labels.count(7) >= 4, labels


def transparent_png(image):
    """Black strokes on a transparent background, as a drawing canvas exports them."""
    rgba = np.zeros((56, 56, 4), np.uint8)
    rgba[..., 3] = image * 255
    return Image.fromarray(rgba, "RGBA")


def exif_rotated_jpeg(image):
    """A phone photo stored sideways, with the EXIF tag that says how to turn it upright."""
    stored = Image.fromarray(np.rot90(255 - 255 * image).astype(np.uint8)).resize((224, 224))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to view
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif, quality=92)
    return Image.open(io.BytesIO(buffer.getvalue()))


def thin_pen_photo(image, seed):
    """1008x1008 grey paper with an uneven light and a thin (3 px) dark pen line."""
    from skimage.morphology import skeletonize
    from scipy import ndimage
    big = np.kron(image, np.ones((18, 18), np.uint8)).astype(bool)
    line = ndimage.binary_dilation(skeletonize(big), np.ones((3, 3)))
    rng = np.random.default_rng(seed)
    paper = 190 + 30 * np.linspace(0, 1, 1008)[None, :] + rng.normal(0, 6, (1008, 1008))
    photo = np.where(line, 50 + rng.normal(0, 6, line.shape), paper)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=85)
    return Image.open(io.BytesIO(buffer.getvalue()))


def with_stray_pixel(image):
    """The character on a larger black canvas, plus one bright pixel far from it."""
    canvas = np.zeros((120, 120), np.uint8)
    canvas[40:96, 30:86] = image * 255
    canvas[2, 117] = 255
    return Image.fromarray(canvas)


def test_framing_settings_for_image_files(trained_tiny, tmp_path, monkeypatch, capsys):
    import framing
    import predict
    ink = np.zeros((300, 300), np.uint8)
    ink[40:260, 140:143] = 255  # a thin vertical stroke, 3 px in 300
    ink[10:12, 10:12] = 255  # and a speck (under 1% of the ink)
    framed = framing.frame(ink).reshape(56, 56)
    width = framed.sum(axis=1).max()
    assert framed[:, :20].sum() == 0 and width >= 3  # speck left out, stroke widened
    assert framing.frame(ink, 6.0).reshape(56, 56).sum(axis=1).max() >= 6 > width - 1
    assert inference.pen_width({"data": {"stroke_width": 7.5}}, 6.0) == 6.0  # a set width wins
    # every blob counts with a speck share of 0: the speck too,
    columns = np.flatnonzero(framing.frame(ink, speck_share=0.0).reshape(56, 56).any(0))
    assert columns.max() > 35  # which widens the crop: the stroke is pushed to the right
    # by default (0) the pen width is the one the checkpoint's training images have
    assert inference.pen_width({"data": {"stroke_width": 7.5}}) == 7.5
    assert inference.pen_width({"data": {}}) == framing.MIN_STROKE  # older checkpoints
    assert framing.frame(ink, 9.0, 0.0).reshape(56, 56).sum(axis=1).max() >= 9
    # --min_stroke and --speck_share reach the framing of the files python predict.py reads
    Image.fromarray(ink).save(tmp_path / "thin.png")
    work, _, _ = trained_tiny
    seen = []
    frame = framing.frame
    monkeypatch.setattr(framing, "frame", lambda image, *args: (
        seen.append(frame(image, *args)), seen[-1])[1])
    for options in ([], ["--min_stroke", "9"], ["--speck_share=0"]):
        monkeypatch.setattr("sys.argv", ["predict.py", str(tmp_path / "thin.png"), "--lite=False",
                                         f"--checkpoint={work / 'out' / 'best.keras'}", *options])
        predict.main()
    assert capsys.readouterr().out.count("thin.png: ") == 3
    plain, wide, with_speck = (image.reshape(56, 56) for image in seen)
    assert wide.sum(axis=1).max() >= 8 > plain.sum(axis=1).max()  # 9, give or take rounding
    assert with_speck[:, :20].any() and not plain[:, :20].any()


def test_stroke_width_of_images():
    measured = []
    for width in (3, 7):
        images = np.zeros((4, 56, 56), np.uint8)
        images[:, 5:50, 20:20 + width] = 1  # a bar 45 px long: the ends make it read a bit thinner
        measured.append(prepare_data.stroke_width(images.reshape(4, -1)))
        assert width - 1 < measured[-1] <= width
    assert measured[1] - measured[0] > 3
    images[:2, :, 20:23] = 0  # two of the four now 4 px wide: the 10th percentile sees them
    assert prepare_data.stroke_width(images.reshape(4, -1), percentile=10) < measured[1] - 2
    assert prepare_data.stroke_width(np.zeros((2, 3136), np.uint8)) == 0.0  # no ink, no width


@pytest.mark.parametrize("make", [transparent_png, exif_rotated_jpeg, thin_pen_photo,
                                  with_stray_pixel])
def test_images_from_the_wild_read_like_their_originals(trained_digits, make):
    import framing
    import predict
    work, x, y = trained_digits
    checkpoint = str(work / "out" / "best.keras")
    pen = inference.pen_width(predict.load_model(checkpoint)[1])  # the digits' thin pen, 5-6 px
    assert 4.5 < pen < 7, pen
    originals = x[:12].reshape(-1, 56, 56)
    inputs = []
    for i, image in enumerate(originals):
        wild = make(image, i) if make is thin_pen_photo else make(image)
        inputs.append(framing.frame(framing.pixels_of(wild), pen))
    inputs = np.stack(inputs)
    if make is not thin_pen_photo:  # the same character, framed as the original would be
        # (the 56x56 canvas export is taken as it is; a bigger image is framed, which may
        # widen thin strokes: compare with the original framed as a 112x112 image file)
        framed = x[:12] if make is transparent_png else [
            framing.frame(np.kron(image, np.ones((2, 2), np.uint8)) * 255, pen) for image in originals]
        overlap = [np.sum(a & b) / np.sum(a | b) for a, b in zip(inputs, framed)]
        assert min(overlap) > 0.7, overlap
    else:  # thinner strokes, still all there: the ink spans the frame
        assert all(np.ptp(np.nonzero(image.reshape(56, 56))[0]) >= 50 or
                   np.ptp(np.nonzero(image.reshape(56, 56))[1]) >= 50 for image in inputs)
    same = predict.predict(inputs, checkpoint) == predict.predict(x[:12], checkpoint)
    assert same.mean() >= 10 / 12, same


def test_predict_answers_from_litert_copies_without_tensorflow(trained_digits, tmp_path):
    """The first predict.py run writes LiteRT copies of the model and of the framing beside
    the checkpoint; the next answers the same from them with TensorFlow made unimportable. A
    changed checkpoint or --lite=False goes back to TensorFlow."""
    import shutil
    import subprocess
    import sys
    from conftest import ROOT
    work, _, _ = trained_digits
    for name in ("best.keras", "best.json"):  # a copy: the shared run stays as it was
        shutil.copy(work / "out" / name, tmp_path / name)
    rng = np.random.default_rng(3)
    inputs = []
    for i, (width, height) in enumerate([(90, 60), (300, 420), (56, 56), (640, 480)]):
        pixels = np.full((height, width), 255, np.uint8)
        pixels[height // 4:3 * height // 4, width // 3:width // 3 + max(width // 8, 3)] = 0
        pixels[height // 4:height // 4 + max(height // 10, 3), width // 4:3 * width // 4] = 0
        pixels[rng.integers(0, height), rng.integers(0, width)] = 0  # a speck
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        inputs.append(f"{i}.png")
    see_through = np.zeros((120, 200, 4), np.uint8)
    see_through[30:90, 90:110, 3] = 255
    Image.fromarray(see_through).save(tmp_path / "canvas.png")
    Image.new("L", (70, 70), 128).save(tmp_path / "blank.png")
    np.save(tmp_path / "arrays.npy", (rng.random((3, 3136)) < 0.2).astype(np.uint8))
    command = ["predict.py", f"--checkpoint={tmp_path / 'best.keras'}", "--json=True", *inputs,
               "canvas.png", "blank.png", "arrays.npy"]
    # (TensorFlow's runs in this process; the blocked ones are processes of their own)
    first = run_in_process(*command, cwd=tmp_path)
    assert first.returncode == 0 and "wrote LiteRT copies" in first.stderr, first.stderr[-2000:]
    assert len(list((tmp_path / "lite").glob("*.tflite"))) == 2
    blocked = tmp_path / "blocked"
    for name in ("tensorflow", "keras"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} imported')\n")
    second = subprocess.run([sys.executable, os.path.join(ROOT, command[0]), *command[1:]],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(blocked)})
    assert second.returncode == 0, second.stderr[-2000:]
    before = [json.loads(line) for line in first.stdout.splitlines()]
    after = [json.loads(line) for line in second.stdout.splitlines()]
    assert len(before) == len(after) == 9 and [a["found"] for a in after].count(False) == 1
    for old, new in zip(before, after):
        assert old["input"] == new["input"] and old.get("label") == new.get("label")
        for guess, again in zip(old["top"], new["top"]):
            assert guess["label"] == again["label"]
            assert abs(guess["probability"] - again["probability"]) <= 2e-4
    # a changed checkpoint (here: the same files, zipped anew) is not answered from the copies
    with zipfile.ZipFile(tmp_path / "best.keras") as model_file:
        contents = {name: model_file.read(name) for name in model_file.namelist()}
    with zipfile.ZipFile(tmp_path / "best.keras", "w", zipfile.ZIP_DEFLATED) as model_file:
        for name, content in contents.items():
            model_file.writestr(name, content)
    changed = subprocess.run([sys.executable, os.path.join(ROOT, command[0]), *command[1:]],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(blocked)})
    assert changed.returncode != 0 and "imported" in changed.stderr
    import predict  # (a new process would read the changed file: so does this one)
    predict.read_record.cache_clear()
    predict.load_model.cache_clear()
    plain = run_in_process(*command, "--lite=False", cwd=tmp_path)
    assert plain.returncode == 0 and "LiteRT" not in plain.stderr, plain.stderr[-2000:]
    assert plain.stdout == first.stdout
